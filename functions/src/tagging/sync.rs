//! Initial sync: a destination newly subscribed to an audience (a destination added, or an audience added to
//! its `send.audiences`) receives `audience.entered` for every current member, not only the changes after it
//! subscribed. `deliveries/v1/synced.json` records, per enabled destination, the audiences it has been sent in
//! full; the full recompute compares it with the subscriptions before recording its own membership changes
//! (which then reach every subscribed destination alike). A destination that is disabled (or removed) leaves
//! the record, so it is synced again when it comes back.
//!
//! The items are the members' own entries (the audience, the profile and the number of the change that made
//! it a member), so an entry a destination already received (sent in real time just before the sync, or
//! synced again after a failed run) has the same id and partners deduplicate it.

use std::collections::{BTreeMap, BTreeSet};

use shared::activation::ProfileNow;
use shared::activation::lane::Message;

use super::Writes;
use super::profiles::Profiles;
use crate::Error;
use crate::snapshot::Activation;
use crate::storage::{ObjectStore, PutOptions};

/// Per destination, the audiences whose members it has been sent.
pub const SYNCED: &str = "deliveries/v1/synced.json";

/// Sends every member of each newly subscribed audience, as recorded on the profiles (`profiles` says whom to
/// read), to the destinations that subscribed, `batch` members at a time; returns the items staged. Runs
/// before the recompute records its own changes, which then reach every subscribed destination alike.
pub(crate) async fn initial<S: ObjectStore + Clone>(
    writes: Writes<'_, S>,
    activation: &Activation,
    profiles: &Profiles,
) -> Result<usize, Error> {
    let Writes { store, config, now, batch } = writes;
    let audiences: BTreeSet<&String> = activation.audiences.audiences().iter().map(|a| &a.id).collect();
    let synced: BTreeMap<String, BTreeSet<String>> = crate::config::read(store, SYNCED).await?.unwrap_or_default();
    let mut next: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Audience → the destinations it is new to.
    let mut due: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for destination in activation.destinations.destinations().iter().filter(|d| d.enabled) {
        let subscribed: Vec<&String> =
            audiences.iter().copied().filter(|a| destination.send.audiences.contains(a)).collect();
        let done = synced.get(&destination.id);
        for audience in &subscribed {
            if done.is_none_or(|done| !done.contains(*audience)) {
                due.entry(audience.as_str()).or_default().insert(destination.id.as_str());
            }
        }
        next.insert(destination.id.clone(), subscribed.into_iter().cloned().collect());
    }
    let mut staged = 0;
    if !due.is_empty() {
        let due_at: Vec<usize> = due.keys().filter_map(|a| profiles.audience(a)).collect();
        let members: Vec<u32> =
            (0..profiles.len() as u32).filter(|n| due_at.iter().any(|a| profiles.recorded(*n, *a))).collect();
        for batch in members.chunks(batch.max(1)) {
            let batch: BTreeSet<String> = batch.iter().map(|n| profiles.id(*n).to_string()).collect();
            let mut messages: Vec<Message> = Vec::new();
            // A read: the closure changes nothing, so nothing is committed.
            let mut txn = config.begin(store).await?;
            txn.update_profiles(&batch, |id, profile| {
                let traits = profile.trait_values();
                let keys: Vec<String> = profile.identities.iter().cloned().collect();
                let view =
                    ProfileNow { id, keys: &keys, traits: &traits, tags: &profile.tags, consent: &profile.consent };
                for (audience, destinations) in &due {
                    let Some(membership) = profile.memberships.get(*audience).filter(|m| m.member) else { continue };
                    let changes = [(audience.to_string(), true, membership.changes)];
                    let produced = activation.destinations.audience_messages(&view, &changes, &activation.names, now);
                    messages.extend(produced.into_iter().filter(|m| destinations.contains(m.destination.as_str())));
                }
            })
            .await?;
            crate::activation::outbox::stage(store, &messages, now).await?;
            staged += messages.len();
        }
    }
    if next != synced {
        let body = serde_json::to_vec_pretty(&next).map_err(Error::encoding)?;
        store.put(SYNCED, body, PutOptions::json()).await?;
    }
    Ok(staged)
}
