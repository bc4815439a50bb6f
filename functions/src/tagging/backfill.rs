//! Backfilling tag versions. Ingest keeps each statistical tag's incremental state per version (`id@version`);
//! a new tag or a new version starts with no history, so its incremental values would be wrong until every
//! profile's state is rebuilt from all of its events. Until then the previous values keep serving
//! ([`TagSet::waiting`]): ingest writes the new state but not the new values. The full recompute then
//! backfills, in batches of whole profile shards (about [`super::BATCH`] profiles each, so that a transaction
//! holds only its batch's profiles): one state transaction per batch rebuilds the pending versions' state of its
//! profiles from the events ingest has applied, drops older versions' state, and stores the recompute's values
//! on them. When every batch has committed, the versions are recorded as ready (`tags/v1/ready.json`) and
//! ingest serves them; until then nothing of the new versions is served.
//!
//! A backfill stopped halfway (a Lambda's timeout) resumes at the next recompute: each rebuilt profile is
//! marked with the backfill's name (a digest of the versions it rebuilds; [`ProfileTagState::rebuilt`]), and
//! the next run passes over the profiles marked. A merge keeps the mark only if both profiles had it, so a
//! rebuilt profile that absorbs one not rebuilt yet is rebuilt again.
//!
//! Racing ingest is safe without reading every event again at each of its commits. The profiles (with how many
//! events had been applied to each: the sum of its counters by event name) and then the events are read once;
//! a batch rebuilds a profile only if that count has not moved when the batch's transaction writes it, so its
//! state is rebuilt from exactly the events it had. A profile that more events reached since (ingest, or a
//! merge) is passed over. At the end, if anything else committed since the read, the profiles are read again,
//! and the profiles of the first read that are not marked now (passed over, or merged with one not rebuilt)
//! are rebuilt from their events read again — at most [`FINAL_PASSES`] times, after which the next recompute
//! goes on. Profiles created since the read before need nothing: ingest built their state from their first
//! event. Only the events of profiles to rebuild are kept, and none is read when no profile is to be rebuilt
//! (a run resumed after the last batch, or a read again that finds every profile marked). A batch fenced by
//! another commit runs again on the new state with the same read. Events not yet applied (not remembered for
//! dedup, received within the dedup window) are left out, and ingest adds them to the new state when it
//! applies them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use shared::storage::keys;
use shared::tags::{Catalog, ProfileTagState, TagDefinition, TagKind, TagSet};
use shared::time::UtcTime;

use super::profiles::{Profiles, Reading};
use super::spill::Spill;
use crate::Error;
use crate::snapshot::{RunConfig, ready};
use crate::state::Compaction;
use crate::storage::{ObjectStore, PutOptions, StoreError};

/// Reads again at the end of a backfill, at most, before it leaves the rest to the next recompute.
const FINAL_PASSES: u32 = 3;

/// The profiles and their events as the backfill reads them at one state version.
struct Read {
    version: u64,
    /// Numbered by shard, then id: a batch of whole shards is a run of numbers.
    profiles: Profiles,
    /// Per profile: whether to rebuild it.
    todo: Vec<bool>,
    /// Where each batch starts.
    starts: Vec<u32>,
    /// The events of the profiles to rebuild, by batch, with their profile's number.
    spill: Spill,
}

impl Read {
    /// Files the events of the profiles `todo` says to rebuild under their profile's batch
    /// (`shards_per_batch` profile shards each), with the properties `wanted` (sorted).
    async fn new<S: ObjectStore>(
        store: &S,
        identity: &shared::identity::IdentityRules,
        profiles: Profiles,
        todo: Vec<bool>,
        shards_per_batch: u32,
        wanted: &[String],
    ) -> Result<Self, Error> {
        let starts: Vec<u32> = (0..profiles.shards().div_ceil(shards_per_batch))
            .map(|b| profiles.shard_start(b * shards_per_batch))
            .collect();
        let mut spill = Spill::cut(starts.clone(), profiles.len())?.keeping(wanted.to_vec());
        let wanted = |n: &u32| todo[*n as usize];
        super::read_events(store, identity, |event, keys| {
            match keys.iter().find_map(|key| profiles.resolve(key)).filter(wanted) {
                Some(n) => spill.push(n, &event),
                None => Ok(()),
            }
        })
        .await?;
        spill.seal()?;
        Ok(Self { version: profiles.version, profiles, todo, starts, spill })
    }

    /// The profile numbers of `batch`.
    fn batch(&self, batch: usize) -> std::ops::Range<u32> {
        let end = self.starts.get(batch + 1).map_or(self.profiles.len() as u32, |s| *s);
        self.starts.get(batch).map_or(end, |s| *s)..end
    }

    /// The first batch from `batch` on with a profile to rebuild (past the last one if none).
    fn next(&self, mut batch: usize) -> usize {
        while batch < self.starts.len() && !self.batch(batch).any(|n| self.todo[n as usize]) {
            batch += 1;
        }
        batch
    }
}

/// Names a backfill by the tag versions it rebuilds (a digest of their slots, `id@version`) and the cleaning
/// rules it reads events with: the mark it leaves on the profiles it rebuilt.
fn job(pending: &[TagDefinition], cleaning: u32) -> String {
    let slots: BTreeSet<String> = pending.iter().map(|t| format!("{}@{}", t.id, t.version)).collect();
    let mut joined: Vec<String> = slots.into_iter().collect();
    joined.push(format!("{}@{cleaning}", crate::snapshot::READY_CLEANING));
    shared::ids::sha256_hex(&joined.join("\n"))[..16].to_string()
}

/// The statistical tags of `tags` whose version is not ready: what [`backfill`] will rebuild.
pub(crate) async fn pending<S: ObjectStore>(
    store: &S,
    tags: &TagSet,
    cleaning: &shared::profile::CleaningRules,
) -> Result<Vec<TagDefinition>, Error> {
    Ok(pending_in(tags, &ready(store, cleaning).await?))
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
    let config = RunConfig::load(store).await?;
    backfill_by(store, &config, tags, &|id| Ok(values.get(id).cloned().unwrap_or_default()), now, super::BATCH).await
}

/// A profile's tag values by its id.
pub(crate) type ValuesOf<'v> = dyn Fn(&str) -> Result<BTreeMap<String, Value>, Error> + Sync + 'v;

/// [`backfill`] with `values` looked up by profile id and batches of about `batch` profiles.
pub(crate) async fn backfill_by<S: ObjectStore + Clone>(
    store: &S,
    config: &RunConfig,
    tags: &TagSet,
    values: &ValuesOf<'_>,
    now: UtcTime,
    batch_profiles: usize,
) -> Result<Vec<String>, Error> {
    let cleaning = &config.snapshot.profiles.cleaning;
    let mut ready = ready(store, cleaning).await?;
    let pending = pending_in(tags, &ready);
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let rebuilt = TagSet::check(&pending, &Catalog::default())
        .map_err(|e| Error::Internal(format!("pending tags do not check: {e:?}")))?;
    let pending_ids: BTreeSet<&str> = pending.iter().map(|t| t.id.as_str()).collect();
    let job = job(&pending, cleaning.fingerprint());
    // What the rebuilt tags read of an event's properties.
    let wanted = rebuilt.properties();
    let now_ms = now.unix_millis();
    // The profiles and their events as of a state version.
    let mut read: Option<Read> = None;
    let (mut batch, mut shards_per_batch, mut attempt, mut passes) = (0usize, 0u32, 0u32, 0u32);
    // Profiles of batches committed that were passed over: events were applied to them since the read.
    let mut skipped = 0usize;
    loop {
        if let Some(read) = &read {
            batch = read.next(batch);
        }
        // Each batch rewrites its own shards whole (and folds what is outstanding): a backfill changes every
        // profile, which as deltas would be rewritten again by a later fold and held by every reader until then.
        let mut txn = config.begin(store).await?.with_compaction(Compaction::always());
        let version = txn.manifest().version;
        if read.as_ref().is_none_or(|r| batch >= r.spill.chunks()) {
            // At the end, unless nothing happened since the read: read again, and rebuild the profiles read before
            // that are not marked now (passed over, or merged with one not rebuilt).
            if read.as_ref().is_some_and(|r| r.version == version) && skipped == 0 {
                break;
            }
            if read.is_some() {
                passes += 1;
                if passes > FINAL_PASSES {
                    tracing::warn!(passes, "profiles kept changing: the backfill goes on at the next recompute");
                    return Ok(Vec::new());
                }
            }
            let before = read.take().map(|r| r.profiles);
            let profiles = Profiles::read(store, config.snapshot.vault.clone(), Reading::Backfill(&job)).await?;
            if shards_per_batch == 0 {
                let count = profiles.shards().max(1);
                let per_shard = profiles.len().div_ceil(count as usize).max(1);
                shards_per_batch = u32::try_from(batch_profiles / per_shard).unwrap_or(u32::MAX).clamp(1, count);
            }
            // Profiles created since the read before need nothing: ingest built their state from their first event.
            let todo: Vec<bool> = (0..profiles.len() as u32)
                .map(|n| !profiles.rebuilt(n) && before.as_ref().is_none_or(|b| b.number(profiles.id(n)).is_some()))
                .collect();
            if !todo.contains(&true) {
                break;
            }
            let next = Read::new(store, &config.snapshot.identity, profiles, todo, shards_per_batch, &wanted).await?;
            (batch, skipped) = (next.next(0), 0);
            read = Some(next);
        }
        let read = read.as_mut().ok_or_else(|| Error::Internal("the events are read".into()))?;
        // Profiles this backfill rebuilt in an earlier run (or that need nothing) are passed over.
        let numbers: Vec<u32> = read.batch(batch).filter(|n| read.todo[*n as usize]).collect();
        let group: BTreeSet<String> = numbers.iter().map(|n| read.profiles.id(*n).to_string()).collect();
        let rows = read.spill.read(batch)?;
        // Events received before the dedup window are taken as applied (ingest may have forgotten their
        // messageIds); the window runs from application, never before receipt, so ingest remembers every
        // later event it applied.
        let forgotten_before = now_ms - config.state.dedup_window_ms;
        let recent: Vec<String> = rows
            .iter()
            .filter(|(_, e)| e.received_at >= forgotten_before)
            .map(|(_, e)| e.dedup_key.to_string())
            .collect();
        let applied = txn.applied_messages(recent.iter()).await?;
        let mut states: std::collections::HashMap<u32, ProfileTagState> =
            numbers.iter().map(|n| (*n, ProfileTagState::default())).collect();
        for (number, event) in &rows {
            let Some(tag_state) = states.get_mut(number) else { continue };
            if event.received_at < forgotten_before || applied.contains(&*event.dedup_key) {
                let properties = event.clean_properties_of(&wanted, &config.snapshot.profiles.cleaning)?;
                rebuilt.observe(tag_state, &event.view(&properties), now_ms);
            }
        }
        let mut group_values: BTreeMap<String, BTreeMap<String, Value>> =
            group.iter().map(|id| Ok((id.clone(), values(id)?))).collect::<Result<_, Error>>()?;
        let mut passed_over = 0;
        txn.rewrite_profiles(&group, |id, profile| {
            // A profile is rebuilt only from the events it had when they were read: one that more events reached
            // since (ingest, or a merge) is passed over, and rebuilt after a read again at the end.
            let total: u64 = profile.events.values().map(|e| e.count).sum();
            let Some(n) = read.profiles.number(id).filter(|n| read.profiles.applied(*n) == total) else {
                passed_over += 1;
                return false;
            };
            profile
                .tag_state
                .tags
                .retain(|slot, _| slot.rsplit_once('@').is_none_or(|(tag, _)| !pending_ids.contains(tag)));
            if let Some(rebuilt) = states.remove(&n) {
                profile.tag_state.tags.extend(rebuilt.tags);
            }
            profile.tag_state.rebuilt = Some(job.clone());
            profile.tags = group_values.remove(id).unwrap_or_default();
            profile.tags_at = Some(now);
            true
        })
        .await?;
        if !txn.is_dirty() {
            (batch, skipped) = (batch + 1, skipped + passed_over);
            continue;
        }
        match txn.commit().await {
            Ok(stats) => {
                // Only this batch's profiles changed: when no other writer committed since the read, the read
                // holds for the version after this commit.
                if read.version == version {
                    read.version = stats.version;
                }
                (batch, attempt, skipped) = (batch + 1, 0, skipped + passed_over);
            }
            Err(Error::Store(StoreError::PreconditionFailed)) if attempt + 1 < config.state.max_attempts => {
                attempt += 1;
                tracing::info!(batch, attempt, "another writer committed first; running the batch again");
            }
            Err(Error::Store(StoreError::PreconditionFailed)) => {
                return Err(crate::state::kept_changing("the backfill", config.state.max_attempts));
            }
            Err(e) => return Err(e),
        }
    }
    for tag in &pending {
        ready.insert(tag.id.clone(), tag.version);
    }
    ready.insert(crate::snapshot::READY_CLEANING.to_string(), cleaning.fingerprint());
    let body = serde_json::to_vec_pretty(&ready).map_err(Error::encoding)?;
    store.put(keys::TAGS_READY, body, PutOptions::json()).await?;
    Ok(pending.iter().map(|t| t.id.clone()).collect())
}
