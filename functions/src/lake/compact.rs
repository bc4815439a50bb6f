//! Compaction: raw objects after the watermark into one Parquet part per day of receipt.

use std::collections::BTreeMap;

use shared::identity::IdentityRules;
use shared::storage::keys;
use shared::time::UtcTime;

use super::{
    Compacted, EVENTS, MANIFEST, MAX_EVENTS, MAX_OBJECTS, MAX_TEXT_BYTES, Row, day_and_name, encode, manifest,
    part_options, raw_tail,
};
use crate::Error;
use crate::raw::read_object;
use crate::storage::{Condition, ObjectStore, PutOptions, StoreError};

/// Compacts raw objects named at least `settle_ms` before `now` into the lake; at most one bounded batch per
/// call (`more` says whether another would find work).
pub async fn compact<S: ObjectStore>(store: &S, settle_ms: i64, now: UtcTime) -> Result<Compacted, Error> {
    compact_within(store, settle_ms, now, MAX_EVENTS, MAX_TEXT_BYTES).await
}

/// [`compact`], stopping after the raw object that brings the run to `max_events` events or `max_bytes` of
/// event text.
pub(super) async fn compact_within<S: ObjectStore>(
    store: &S,
    settle_ms: i64,
    now: UtcTime,
    max_events: usize,
    max_bytes: usize,
) -> Result<Compacted, Error> {
    let (mut manifest, etag) = manifest(store).await?;
    let settled = now.unix_millis() - settle_ms;
    let mut keys: Vec<String> = raw_tail(store, &manifest)
        .await?
        .into_iter()
        .filter(|k| shared::storage::object_named_at(k).is_some_and(|t| t <= settled))
        .collect();
    let mut out = Compacted { more: keys.len() > MAX_OBJECTS, ..Compacted::default() };
    keys.truncate(MAX_OBJECTS);
    if keys.is_empty() {
        return Ok(out);
    }
    let mut last = String::new();
    let mut kept = 0;
    let rules: IdentityRules = crate::config::read(store, keys::CONFIG_IDENTITY).await?.unwrap_or_default();
    // Only the people being erased are held here (suppressed people's events are dropped before storage).
    let mut held = crate::suppression::load_suppression(store).await?;
    held.suppressed.clear();
    let held = match held.is_empty() {
        true => None,
        false => {
            Some(crate::suppression::SuppressionCheck { key: crate::suppression::hash_key(store).await?, list: held })
        }
    };
    // Per day of receipt: the first raw object's name, and the rows.
    let mut days: BTreeMap<String, (String, Vec<Row>)> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut text_bytes = 0;
    for key in &keys {
        if kept >= max_events || text_bytes >= max_bytes {
            out.more = true;
            break;
        }
        last.clone_from(key);
        let Some((day, name)) = day_and_name(key) else {
            tracing::warn!(%key, "not a raw object name; left out of the lake");
            continue;
        };
        let Some(object) = read_object(store, key).await? else { continue };
        text_bytes += object.text_bytes;
        for event in object.events {
            let keys = rules.every_key(&event);
            if held.as_ref().is_some_and(|h| h.list.drops(&h.key, keys.iter())) {
                out.held += 1;
                continue;
            }
            if !seen.insert(event.dedup_key()) {
                continue;
            }
            days.entry(day.to_string()).or_insert_with(|| (name.to_string(), Vec::new())).1.push((event, keys));
            kept += 1;
        }
        out.objects += 1;
    }
    for (day, (first, rows)) in &days {
        let key = format!("{EVENTS}{day}/part-{first}.parquet");
        store.put(&key, encode(rows)?, part_options()).await?;
        out.events += rows.len();
        out.parts.push(key);
    }
    manifest.watermark = Some(last);
    manifest.compacted_at = now.unix_millis();
    manifest.events += out.events as u64;
    let condition = match etag {
        Some(etag) => Condition::IfMatch(etag),
        None => Condition::IfNoneMatch,
    };
    let body = serde_json::to_vec_pretty(&manifest).map_err(Error::encoding)?;
    match store.put(MANIFEST, body, PutOptions { condition, ..PutOptions::json() }).await {
        Ok(_) => Ok(out),
        Err(StoreError::PreconditionFailed) => Err(Error::Store(StoreError::Unavailable(
            "another compaction moved the lake's watermark meanwhile; this run's parts are rewritten by the next"
                .into(),
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Compacts until no raw object old enough remains, at most `rounds` runs; the events written.
pub async fn compact_all<S: ObjectStore>(
    store: &S,
    settle_ms: i64,
    now: UtcTime,
    rounds: usize,
) -> Result<usize, Error> {
    let mut events = 0;
    for _ in 0..rounds {
        let run = compact(store, settle_ms, now).await?;
        events += run.events;
        if !run.more {
            break;
        }
    }
    Ok(events)
}
