//! Backfilling tag versions. Ingest keeps each statistical tag's incremental state per version (`id@version`);
//! a new tag or a new version starts with no history, so its incremental values would be wrong until every
//! profile's state is rebuilt from all of its events. Until then the previous values keep serving
//! ([`TagSet::waiting`]): ingest writes the new state but not the new values. The full recompute then
//! backfills: in one state transaction it rebuilds the pending versions' state for every profile from the
//! events ingest has applied, drops older versions' state, and stores the recompute's values on each profile;
//! when that commits, the versions are recorded as ready (`tags/v1/ready.json`) and ingest serves them.
//!
//! Racing ingest is safe: the transaction begins before the events are read, so any ingest commit in between
//! fences it and the backfill starts over; events not yet applied (not remembered for dedup, received within
//! the dedup window) are left out, and ingest adds them to the new state when it applies them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use shared::tags::{Catalog, ProfileTagState, TagDefinition, TagKind, TagSet};
use shared::time::UtcTime;

use crate::Error;
use crate::ingest::IngestConfig;
use crate::state::{Transaction, scan_as};
use crate::storage::{ObjectStore, PutOptions, StoreError};

/// Which version of each statistical tag has complete incremental state.
pub const READY_KEY: &str = "tags/v1/ready.json";

/// The ready versions by tag id (none before the first backfill).
pub async fn ready<S: ObjectStore>(store: &S) -> Result<BTreeMap<String, u32>, Error> {
    Ok(crate::config::read(store, READY_KEY).await?.unwrap_or_default())
}

/// The statistical tags of `tags` whose version is not ready: what [`backfill`] will rebuild.
pub(crate) async fn pending<S: ObjectStore>(store: &S, tags: &TagSet) -> Result<Vec<TagDefinition>, Error> {
    Ok(pending_in(tags, &ready(store).await?))
}

fn pending_in(tags: &TagSet, ready: &BTreeMap<String, u32>) -> Vec<TagDefinition> {
    let statistical = |t: &&TagDefinition| matches!(t.kind, TagKind::Statistical { .. });
    tags.tags().iter().filter(statistical).filter(|t| ready.get(&t.id) != Some(&t.version)).cloned().collect()
}

/// Rebuilds the state of every statistical tag of `tags` whose version is not ready, for every profile, and
/// stores `values` (the full recompute's, by profile id) on the profiles; returns the tag ids backfilled.
pub async fn backfill<S: ObjectStore + Clone>(
    store: &S,
    tags: &TagSet,
    values: &BTreeMap<String, BTreeMap<String, Value>>,
    now: UtcTime,
) -> Result<Vec<String>, Error> {
    let mut ready = ready(store).await?;
    let pending = pending_in(tags, &ready);
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let rebuilt = TagSet::check(&pending, &Catalog::default())
        .map_err(|e| Error::Corrupt(format!("pending tags do not check: {e:?}")))?;
    let pending_ids: BTreeSet<&str> = pending.iter().map(|t| t.id.as_str()).collect();
    let config = IngestConfig::load(store).await?;
    let now_ms = now.unix_millis();
    for attempt in 1..=config.max_attempts {
        let mut txn = Transaction::begin(store, config.shards).await?.with_compaction(config.compaction);
        let state: super::RecomputeScan = scan_as(store).await?;
        let (by_profile, _, _) = super::gather(store, &config.identity, &state).await?;
        let ids: Vec<String> = by_profile.values().flatten().map(|e| e.message_id.to_string()).collect();
        let applied = txn.applied_messages(ids.iter()).await?;
        let forgotten_before = now_ms - config.dedup_window_ms;
        let mut states: BTreeMap<String, ProfileTagState> = BTreeMap::new();
        for id in state.profiles.keys() {
            let mut tag_state = ProfileTagState::default();
            for event in by_profile.get(id.as_str()).into_iter().flatten() {
                if applied.contains(&*event.message_id) || event.received_at < forgotten_before {
                    let properties = event.properties()?;
                    rebuilt.observe(&mut tag_state, &event.view(&properties), now_ms);
                }
            }
            states.insert(id.clone(), tag_state);
        }
        let profiles: BTreeSet<String> = states.keys().cloned().collect();
        txn.update_profiles(&profiles, |id, profile| {
            profile
                .tag_state
                .tags
                .retain(|slot, _| slot.rsplit_once('@').is_none_or(|(tag, _)| !pending_ids.contains(tag)));
            if let Some(rebuilt) = states.remove(id) {
                profile.tag_state.tags.extend(rebuilt.tags);
            }
            profile.tags = values.get(id.as_str()).cloned().unwrap_or_default();
            profile.tags_at = Some(now);
        })
        .await?;
        match txn.commit().await {
            Ok(_) => {
                for tag in &pending {
                    ready.insert(tag.id.clone(), tag.version);
                }
                let body = serde_json::to_vec_pretty(&ready).map_err(|e| Error::Corrupt(e.to_string()))?;
                store.put(READY_KEY, body, PutOptions::json()).await?;
                return Ok(pending.iter().map(|t| t.id.clone()).collect());
            }
            Err(Error::Store(StoreError::PreconditionFailed)) => {
                tracing::info!(attempt, "another writer committed first; re-running the backfill");
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Store(StoreError::Unavailable(format!("state kept changing for {} attempts", config.max_attempts))))
}
