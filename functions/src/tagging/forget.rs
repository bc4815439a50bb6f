//! Forgetting profiles in what the full recompute wrote: their tag values (`tags/v1/values.json.gz`), their
//! membership in audience snapshots and their ids in audience diffs. An erasure calls [`forget`]; the next
//! recompute would not bring them back, since their state and events are gone by then.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::audiences::{Diff, Snapshot};
use shared::storage::keys;

use super::gz;
use crate::Error;
use crate::storage::{ObjectStore, PutOptions};

/// `tags/v1/values.json.gz` as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Values {
    computed_at: i64,
    profiles: BTreeMap<String, BTreeMap<String, Value>>,
}

/// `audiences/v1/<id>/diffs/<computedAt>.json` as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredDiff {
    pub(super) computed_at: i64,
    #[serde(flatten)]
    pub(super) diff: Diff,
}

/// Removes `profiles` from every tag value, audience snapshot and diff; returns the objects rewritten.
pub async fn forget<S: ObjectStore>(store: &S, profiles: &BTreeSet<String>) -> Result<usize, Error> {
    let mut rewritten = 0;
    if let Some(object) = store.get(keys::TAG_VALUES).await? {
        let mut values: Values = decode(keys::TAG_VALUES, &shared::storage::gunzip(&object.body).unwrap_or_default())?;
        let before = values.profiles.len();
        values.profiles.retain(|id, _| !profiles.contains(id));
        if values.profiles.len() != before {
            let body = serde_json::to_vec(&values).map_err(Error::encoding)?;
            store.put(keys::TAG_VALUES, shared::storage::gzip(&body), gz()).await?;
            rewritten += 1;
        }
    }
    for meta in store.list("audiences/v1/").await? {
        let key = meta.key;
        if key.ends_with("/snapshot.json.gz") {
            let Some(object) = store.get(&key).await? else { continue };
            let mut snapshot: Snapshot = decode(&key, &shared::storage::gunzip(&object.body).unwrap_or_default())?;
            let before = snapshot.members.len();
            snapshot.members.retain(|id| !profiles.contains(id));
            if snapshot.members.len() != before {
                let body = serde_json::to_vec(&snapshot).map_err(Error::encoding)?;
                store.put(&key, shared::storage::gzip(&body), gz()).await?;
                rewritten += 1;
            }
        } else if key.contains("/diffs/") && key.ends_with(".json") {
            let Some(object) = store.get(&key).await? else { continue };
            let mut stored: StoredDiff = decode(&key, &object.body)?;
            let before = stored.diff.entered.len() + stored.diff.exited.len();
            stored.diff.entered.retain(|id| !profiles.contains(id));
            stored.diff.exited.retain(|id| !profiles.contains(id));
            if stored.diff.entered.len() + stored.diff.exited.len() != before {
                let body = serde_json::to_vec(&stored).map_err(Error::encoding)?;
                store.put(&key, body, PutOptions::json()).await?;
                rewritten += 1;
            }
        }
    }
    Ok(rewritten)
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, json: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(json).map_err(|e| Error::Corrupt(format!("{key}: {e}")))
}
