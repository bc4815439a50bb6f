//! Recording the full recompute's audience memberships on the profiles, and delivering the entries and exits.
//!
//! Memberships on the profiles are the one record of who is in which audience: ingest updates the real-time
//! audiences as events arrive, the full recompute all audiences (those that need the event history, and the
//! exits that time alone causes). Each change is recorded by one state transaction, so it is delivered once.
//! A profile whose memberships changed after the recompute read the state was touched by ingest, which is
//! fresher: it is left alone.

use std::collections::{BTreeMap, BTreeSet};

use shared::activation::ProfileNow;
use shared::activation::lane::Message;
use shared::audiences::AudienceSet;
use shared::time::UtcTime;

use crate::Error;
use crate::ingest::{Activation, IngestConfig};
use crate::state::Transaction;
use crate::storage::{ObjectStore, StoreError};

/// Records `members` (audience → profile ids, for every computed audience) on the profiles of `state` whose
/// membership differs, and puts the entries and exits in the delivery outbox. Returns the changes recorded.
pub(crate) async fn record<S: ObjectStore + Clone>(
    store: &S,
    audiences: &AudienceSet,
    members: &BTreeMap<String, BTreeSet<String>>,
    state: &super::RecomputeScan,
    activation: Option<&Activation>,
    now: UtcTime,
) -> Result<usize, Error> {
    let ids: Vec<&str> = audiences.audiences().iter().map(|a| a.id.as_str()).collect();
    let mut decided: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for (profile, stored) in &state.profiles {
        let wanted: BTreeMap<String, bool> =
            ids.iter().map(|a| (a.to_string(), members.get(*a).is_some_and(|m| m.contains(profile)))).collect();
        let differs = wanted
            .iter()
            .any(|(a, member)| stored.profile.memberships.get(a).map(|m| m.member).unwrap_or(false) != *member);
        if differs {
            decided.insert(profile.clone(), wanted);
        }
    }
    if decided.is_empty() {
        return Ok(0);
    }
    let config = IngestConfig::load(store).await?;
    let profiles: BTreeSet<String> = decided.keys().cloned().collect();
    for attempt in 1..=config.max_attempts.max(1) {
        let mut txn = Transaction::begin(store, config.shards).await?.with_compaction(config.compaction);
        let mut messages: Vec<Message> = Vec::new();
        let mut recorded = 0;
        txn.update_profiles(&profiles, |id, profile| {
            let scanned = state.profiles.get(id).map(|s| &s.profile.memberships);
            if scanned != Some(&profile.memberships) {
                return; // ingest changed it since: fresher than this recompute
            }
            let Some(wanted) = decided.get(id) else { return };
            let changes = shared::audiences::record_memberships(&mut profile.memberships, wanted, now.unix_millis());
            recorded += changes.len();
            if let Some(activation) = activation {
                let traits = profile.traits.iter().map(|(k, t)| (k.clone(), t.value.clone())).collect();
                let keys: Vec<String> = profile.identities.iter().cloned().collect();
                let view = ProfileNow { id, keys: &keys, traits: &traits, tags: &profile.tags };
                messages.extend(activation.destinations.audience_messages(&view, &changes, &activation.names, now));
            }
        })
        .await?;
        if !txn.is_dirty() {
            return Ok(0);
        }
        let outbox = crate::activation::dispatch::stage(store, &messages, now).await?;
        match txn.commit().await {
            Ok(_) => return Ok(recorded),
            Err(error) => {
                crate::activation::dispatch::withdraw(store, outbox.as_deref()).await;
                match error {
                    Error::Store(StoreError::PreconditionFailed) => {
                        tracing::info!(attempt, "another writer committed first; recording memberships again");
                    }
                    other => return Err(other),
                }
            }
        }
    }
    Err(Error::Store(StoreError::Unavailable(format!("state kept changing for {} attempts", config.max_attempts))))
}
