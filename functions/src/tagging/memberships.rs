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

use super::Writes;
use super::profiles::Profiles;
use crate::Error;
use crate::snapshot::{Activation, RunConfig};
use crate::storage::ObjectStore;

/// Records `members` (each audience's members by profile number, ascending, in the order of `audiences`) on
/// the profiles whose recorded membership differs, and puts the entries and exits in the delivery outbox; in
/// transactions of at most `batch` profiles (in number order, so each reads few shards; a transaction holds
/// its profiles whole, and their messages), each committed with its own messages staged. Returns the changes recorded.
pub(crate) async fn record<S: ObjectStore + Clone>(
    writes: Writes<'_, S>,
    audiences: &AudienceSet,
    members: &[Vec<u32>],
    profiles: &Profiles,
    activation: Option<&Activation>,
) -> Result<usize, Error> {
    let Writes { store, config, now, batch } = writes;
    let ids: Vec<&str> = audiences.audiences().iter().map(|a| a.id.as_str()).collect();
    // The profiles to record, with whether each is to be a member of each audience.
    let mut decided: Vec<(u32, Vec<bool>)> = Vec::new();
    // Where each audience's member list is at (profiles are visited in number order).
    let mut at = vec![0usize; ids.len()];
    let mut wanted = vec![false; ids.len()];
    for n in 0..profiles.len() as u32 {
        for (a, list) in members.iter().enumerate().take(ids.len()) {
            wanted[a] = list.get(at[a]) == Some(&n);
            at[a] += usize::from(wanted[a]);
        }
        if (0..ids.len()).any(|a| profiles.recorded(n, a) != wanted[a]) {
            decided.push((n, wanted.clone()));
        }
    }
    if decided.is_empty() {
        return Ok(0);
    }
    let mut recorded = 0;
    for batch in decided.chunks(batch.max(1)) {
        let batch: BTreeMap<String, BTreeMap<String, bool>> = batch
            .iter()
            .map(|(n, wanted)| {
                let wanted = ids.iter().zip(wanted).map(|(a, member)| (a.to_string(), *member)).collect();
                (profiles.id(*n).to_string(), wanted)
            })
            .collect();
        recorded += record_batch(store, config, &batch, profiles, activation, now).await?;
    }
    Ok(recorded)
}

/// Records `decided` (profile id → audience → member) in one transaction with its messages.
async fn record_batch<S: ObjectStore + Clone>(
    store: &S,
    config: &RunConfig,
    decided: &BTreeMap<String, BTreeMap<String, bool>>,
    profiles: &Profiles,
    activation: Option<&Activation>,
    now: UtcTime,
) -> Result<usize, Error> {
    let changing: BTreeSet<String> = decided.keys().cloned().collect();
    let mut attempts = crate::state::Attempts::new(&config.state, "the memberships recorded");
    loop {
        attempts.next().await?;
        let mut txn = config.begin(store).await?;
        let mut messages: Vec<Message> = Vec::new();
        let mut recorded = 0;
        txn.update_profiles(&changing, |id, profile| {
            if !profiles.number(id).is_some_and(|n| profiles.unchanged(n, &profile.memberships)) {
                return; // ingest changed it since: fresher than this recompute
            }
            let Some(wanted) = decided.get(id) else { return };
            let changes = shared::audiences::record_memberships(&mut profile.memberships, wanted, now.unix_millis());
            recorded += changes.len();
            if let Some(activation) = activation {
                let traits = profile.trait_values();
                let keys: Vec<String> = profile.identities.iter().cloned().collect();
                let view =
                    ProfileNow { id, keys: &keys, traits: &traits, tags: &profile.tags, consent: &profile.consent };
                messages.extend(activation.destinations.audience_messages(&view, &changes, &activation.names, now));
            }
        })
        .await?;
        if !txn.is_dirty() {
            return Ok(0);
        }
        if crate::activation::outbox::commit_staged(store, txn, &messages, now).await?.is_some() {
            return Ok(recorded);
        }
    }
}
