//! The data dictionary in the bucket. Ingest writes what it observed of each raw object as a pending part
//! (`catalog/v1/pending/`, named by the raw object, so a retried ingest rewrites the same part); a fold adds
//! the pending parts to the dictionary (`catalog/v1/dictionary.json.gz`) under compare-and-swap and deletes
//! them. The dictionary remembers the parts it folded for six hours, so a part written again by a late retry
//! after its fold is not counted twice. Readers see the dictionary with the parts not folded yet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared::catalog::Dictionary;
use shared::event::CanonicalEvent;
use shared::profile::ProfileRules;
use shared::storage::keys;
use shared::time::UtcTime;

use crate::Error;
use crate::storage::{Condition, ObjectStore, PutOptions, StoreError};

/// How long a folded part's name is remembered.
pub const FOLDED_KEPT_MS: i64 = 6 * 60 * 60 * 1000;
/// Parts folded per run at most (the rest wait for the next).
pub const MAX_PARTS: usize = 2000;
/// Pending parts a reader merges at most (the oldest; a fold takes the rest in soon).
pub const MAX_READ_PARTS: usize = 500;
/// Attempts of a fold that another fold raced.
const ATTEMPTS: usize = 5;

/// The stored dictionary and the parts folded into it lately.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    /// The dictionary.
    #[serde(default)]
    pub dictionary: Dictionary,
    /// Pending parts folded in the last [`FOLDED_KEPT_MS`], with when.
    #[serde(default)]
    pub folded: BTreeMap<String, i64>,
}

/// What a fold did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Parts added to the dictionary.
    pub parts: usize,
    /// Whether parts are left for another run.
    pub more: bool,
}

/// Writes what `events` (the raw object at `raw_key`'s, as ingest keeps them) show of the data.
pub async fn record<'e, S: ObjectStore>(
    store: &S,
    raw_key: &str,
    events: impl IntoIterator<Item = &'e CanonicalEvent>,
    rules: &ProfileRules,
) -> Result<(), Error> {
    let mut observed = Dictionary::default();
    let mut any = false;
    for event in events {
        observed.observe(event, rules);
        any = true;
    }
    if !any {
        return Ok(());
    }
    let body = serde_json::to_vec(&observed).map_err(Error::encoding)?;
    store.put(&keys::catalog_pending(raw_key), body, PutOptions::json()).await?;
    Ok(())
}

/// The dictionary with every part not folded yet.
pub async fn load<S: ObjectStore>(store: &S) -> Result<Dictionary, Error> {
    let (stored, _) = read(store).await?;
    let mut keys = pending(store, &stored).await?;
    keys.truncate(MAX_READ_PARTS);
    let mut dictionary = stored.dictionary;
    for key in keys {
        if let Some(part) = part(store, &key).await? {
            dictionary.merge(part);
        }
    }
    Ok(dictionary)
}

/// Folds the pending parts (at most [`MAX_PARTS`]) into the dictionary, then deletes them.
pub async fn fold<S: ObjectStore>(store: &S, now: UtcTime) -> Result<Folded, Error> {
    for _ in 0..ATTEMPTS {
        let (mut stored, etag) = read(store).await?;
        let mut listed = pending(store, &stored).await?;
        // Parts folded before but not deleted (a fold stopped between its write and its deletes).
        let leftovers: Vec<String> = store
            .list(keys::CATALOG_PENDING)
            .await?
            .into_iter()
            .map(|meta| meta.key)
            .filter(|key| stored.folded.contains_key(key))
            .collect();
        let more = listed.len() > MAX_PARTS;
        listed.truncate(MAX_PARTS);
        if listed.is_empty() {
            delete(store, &leftovers).await;
            return Ok(Folded::default());
        }
        let at = now.unix_millis();
        let mut parts = 0;
        for key in &listed {
            if let Some(part) = part(store, key).await? {
                stored.dictionary.merge(part);
                parts += 1;
            }
            stored.folded.insert(key.clone(), at);
        }
        stored.folded.retain(|key, when| at - *when <= FOLDED_KEPT_MS || leftovers.contains(key));
        if let Some(cutoff) = now.add_millis(-(shared::catalog::DAYS_KEPT as i64) * 86_400_000) {
            stored.dictionary.forget_before(cutoff);
        }
        let body = shared::storage::gzip(&serde_json::to_vec(&stored).map_err(Error::encoding)?);
        let condition = match etag {
            Some(etag) => Condition::IfMatch(etag),
            None => Condition::IfNoneMatch,
        };
        let options = PutOptions { content_type: Some("application/gzip"), condition };
        match store.put(keys::CATALOG, body, options).await {
            Ok(_) => {
                listed.extend(leftovers);
                delete(store, &listed).await;
                return Ok(Folded { parts, more });
            }
            Err(StoreError::PreconditionFailed) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(Error::Store(StoreError::Unavailable(
        "other folds of the data dictionary kept winning; the next run folds".into(),
    )))
}

/// Folds until no pending part is left, at most `rounds` runs; the parts folded.
pub async fn fold_all<S: ObjectStore>(store: &S, now: UtcTime, rounds: usize) -> Result<usize, Error> {
    let mut parts = 0;
    for _ in 0..rounds {
        let run = fold(store, now).await?;
        parts += run.parts;
        if !run.more {
            break;
        }
    }
    Ok(parts)
}

/// The stored dictionary and its version (none before the first fold).
async fn read<S: ObjectStore>(store: &S) -> Result<(Stored, Option<String>), Error> {
    let Some(object) = store.get(keys::CATALOG).await? else { return Ok((Stored::default(), None)) };
    let json = shared::storage::gunzip(&object.body).map_err(|e| Error::Corrupt(format!("{}: {e}", keys::CATALOG)))?;
    let stored = serde_json::from_slice(&json).map_err(|e| Error::Corrupt(format!("{}: {e}", keys::CATALOG)))?;
    Ok((stored, Some(object.etag)))
}

/// The pending parts not folded yet, oldest raw object first.
async fn pending<S: ObjectStore>(store: &S, stored: &Stored) -> Result<Vec<String>, Error> {
    let mut keys: Vec<String> = store
        .list(keys::CATALOG_PENDING)
        .await?
        .into_iter()
        .map(|meta| meta.key)
        .filter(|key| !stored.folded.contains_key(key))
        .collect();
    keys.sort_unstable();
    Ok(keys)
}

/// A pending part; none when it is gone (folded meanwhile) or does not decode (logged, skipped).
async fn part<S: ObjectStore>(store: &S, key: &str) -> Result<Option<Dictionary>, Error> {
    let Some(object) = store.get(key).await? else { return Ok(None) };
    match serde_json::from_slice(&object.body) {
        Ok(part) => Ok(Some(part)),
        Err(error) => {
            tracing::warn!(%key, %error, "a pending part of the data dictionary does not decode; left out");
            Ok(None)
        }
    }
}

/// Deletes folded parts; one that stays is skipped by the next fold (its name is remembered).
async fn delete<S: ObjectStore>(store: &S, keys: &[String]) {
    for key in keys {
        if let Err(error) = store.delete(key).await {
            tracing::warn!(%key, %error, "a folded part of the data dictionary was not deleted; the next fold skips it");
        }
    }
}

#[cfg(test)]
mod tests;
