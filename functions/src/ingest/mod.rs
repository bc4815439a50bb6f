//! The ingest handler: new `raw/` objects → deduplicated events → identity graph and profiles → state.
//!
//! Used by the ingest Lambda (fed by S3 notifications through SQS) and by `cdp up` (fed in-process).

pub mod lambda;
pub mod reconcile;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use shared::activation::ProfileNow;
use shared::activation::lane::Message;
use shared::event::CanonicalEvent;
use shared::profile::Profile;
use shared::tags::EventView;
use shared::time::UtcTime;

use crate::Error;
use crate::raw::read_object;
use crate::snapshot::{Activation, RunConfig};
use crate::state::{CommitStats, Transaction};
use crate::storage::{ObjectStore, PutOptions};

/// What an ingest run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Objects read.
    pub objects: usize,
    /// Events decoded.
    pub events: usize,
    /// Events dropped as already seen.
    pub duplicates: usize,
    /// Events applied to the graph and profiles.
    pub applied: usize,
    /// Lines that did not decode, quarantined under `failed/ingest/`.
    pub quarantined: usize,
    /// Profiles merged.
    pub merges: usize,
    /// Links or merges refused by rules.
    pub refusals: usize,
    /// Commit attempts (more than one: another writer committed first).
    pub attempts: u32,
    /// What the commit wrote (none when nothing changed).
    pub commit: Option<CommitStats>,
    /// Items put in the delivery outbox (audience entries and exits, triggers, changes).
    pub deliveries: usize,
    /// Events dropped because an identifier they carry is suppressed (or being erased).
    pub suppressed: usize,
}

impl IngestReport {
    /// Logs the report as one structured line.
    pub fn log(&self) {
        tracing::info!(
            objects = self.objects,
            events = self.events,
            applied = self.applied,
            duplicates = self.duplicates,
            merges = self.merges,
            refusals = self.refusals,
            quarantined = self.quarantined,
            attempts = self.attempts,
            deliveries = self.deliveries,
            suppressed = self.suppressed,
            compacted = self.commit.is_some_and(|c| c.compacted),
            shards_written = self.commit.map_or(0, |c| c.shards_written),
            bytes_written = self.commit.map_or(0, |c| c.bytes_written),
            "ingested"
        );
    }
}

/// Ingests the objects at `keys`: reads them (quarantining undecodable lines), drops events seen before, links
/// identities, updates profiles and commits the state, re-running on a fresh state when another writer
/// committed first. Idempotent: the same objects again change nothing.
pub async fn ingest<S: ObjectStore + Clone>(
    store: &S,
    keys: &[String],
    config: &RunConfig,
    now: UtcTime,
) -> Result<IngestReport, Error> {
    let mut report = IngestReport::default();
    let mut events: Vec<CanonicalEvent> = Vec::new();
    let mut records = Vec::new();
    for key in keys {
        let Some(object) = read_object(store, key).await? else {
            tracing::warn!(%key, "object listed in a notification does not exist; skipping");
            continue;
        };
        records.push(reconcile::object_record(key));
        report.objects += 1;
        report.quarantined += object.quarantined.len();
        if !object.quarantined.is_empty() {
            let body = shared::storage::encode_ndjson_gz(&object.quarantined);
            let failed_key = format!("failed/ingest/{key}");
            // Deterministic name and content: a retry rewrites the same object.
            store
                .put(
                    &failed_key,
                    body,
                    PutOptions { content_type: Some("application/x-ndjson+gzip"), ..PutOptions::json() },
                )
                .await?;
        }
        events.extend(object.events);
    }
    records.sort_unstable();
    records.dedup();
    let applied = apply_events(store, events, &records, config, now).await?;
    Ok(IngestReport { objects: report.objects, quarantined: report.quarantined, ..applied })
}

/// Applies decoded events to the state (the part of [`ingest`] after reading objects): drops events seen
/// before, links identities, updates profiles and commits, re-running on a fresh state when another writer
/// committed first.
pub async fn ingest_events<S: ObjectStore + Clone>(
    store: &S,
    events: Vec<CanonicalEvent>,
    config: &RunConfig,
    now: UtcTime,
) -> Result<IngestReport, Error> {
    apply_events(store, events, &[], config, now).await
}

/// [`ingest_events`], recording `records` (the objects the events came from, see [`reconcile`]) as applied in
/// the same commit.
async fn apply_events<S: ObjectStore + Clone>(
    store: &S,
    mut events: Vec<CanonicalEvent>,
    records: &[String],
    config: &RunConfig,
    now: UtcTime,
) -> Result<IngestReport, Error> {
    let mut report = IngestReport { events: events.len(), ..IngestReport::default() };
    if let Some(suppression) = &config.snapshot.suppression {
        events.retain(|event| !suppression.drops_event(event));
        report.suppressed = report.events - events.len();
        if report.suppressed > 0
            && let Err(error) = crate::suppression::count_dropped(store, report.suppressed, now).await
        {
            tracing::error!(%error, dropped = report.suppressed, "could not record the count of suppressed events");
        }
    }
    // One order for the same set of events, whatever order the objects came in.
    events.sort_by(|a, b| (a.timestamp, &a.message_id, &a.source_id).cmp(&(b.timestamp, &b.message_id, &b.source_id)));

    let dedup_window = config.state.dedup_window_ms;
    let mut attempts = crate::state::Attempts::new(&config.state, "this batch");
    loop {
        let attempt = attempts.next().await?;
        report.attempts = attempt;
        let mut txn = Transaction::begin_sealed(store, config.state.shards, config.snapshot.vault.clone())
            .await?
            .with_compaction(config.state.compaction);
        let fresh = txn.fresh(events.clone(), now, dedup_window).await?;
        txn.record(records, now, dedup_window).await?;
        report.duplicates = events.len() - fresh.len();
        let (applied, merges, refusals, messages) = apply(&mut txn, &fresh, config, now).await?;
        (report.applied, report.merges, report.refusals) = (applied, merges, refusals);
        if !txn.is_dirty() {
            report.commit = None;
            return Ok(report);
        }
        txn.applied(applied);
        if let Some(stats) = crate::activation::outbox::commit_staged(store, txn, &messages, now).await? {
            report.commit = Some(stats);
            report.deliveries = messages.len();
            return Ok(report);
        }
    }
}

/// Removes an identifier from the identity graph (an operator undoing a bad link, or an erasure request) and
/// splits its profile where the remaining identifiers no longer connect: the part holding the strongest
/// identifier keeps the profile (and its traits and counters), each other part becomes a new profile. Returns
/// the resulting profile ids; none when the identifier is unknown.
pub async fn unlink<S: ObjectStore + Clone>(
    store: &S,
    key: &str,
    request_id: &str,
    config: &RunConfig,
    now: UtcTime,
) -> Result<Vec<String>, Error> {
    let mut attempts = crate::state::Attempts::new(&config.state, "the unlink");
    loop {
        attempts.next().await?;
        let mut txn = Transaction::begin_sealed(store, config.state.shards, config.snapshot.vault.clone())
            .await?
            .with_compaction(config.state.compaction);
        let (found, _) = txn.graph_for(&BTreeSet::from([key.to_string()])).await?;
        let Some(node) = found.profile_of(key) else { return Ok(Vec::new()) };
        // Every identifier of the profile: the split must move their index entries too.
        let (mut graph, mut data) = txn.graph_for(&node.identities.clone()).await?;
        let parts = graph.unlink(&config.snapshot.identity, key, request_id, now);
        for id in &parts {
            if let Some(node) = graph.profile(id) {
                data.entry(id.clone()).or_insert_with(|| Profile::new(id.clone())).identities = node.identities.clone();
            }
        }
        txn.put_back(graph, data).await?;
        txn.remove_identifier(key).await?;
        if crate::state::fenced(txn.commit().await)?.is_some() {
            return Ok(parts);
        }
    }
}

/// A touched profile's traits and tags before the batch.
type Before = BTreeMap<String, (Map<String, Value>, BTreeMap<String, Value>)>;

async fn apply<S: ObjectStore + Clone>(
    txn: &mut Transaction<'_, S>,
    events: &[CanonicalEvent],
    config: &RunConfig,
    now: UtcTime,
) -> Result<(usize, usize, usize, Vec<Message>), Error> {
    let mut keys = BTreeSet::new();
    for event in events {
        keys.extend(shared::identity::keys_to_link(&config.snapshot.identity, event));
    }
    let (mut graph, mut data): (_, BTreeMap<String, Profile>) = txn.graph_for(&keys).await?;
    let (mut applied, mut merges, mut refusals) = (0, 0, 0);
    let empty = serde_json::Map::new();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut before: Before = BTreeMap::new();
    let mut triggered: Vec<(String, &CanonicalEvent)> = Vec::new();
    let mut merged_exits: Vec<Message> = Vec::new();
    for event in events {
        let linked = graph.link_event(&config.snapshot.identity, event);
        refusals += linked.refused;
        let Some(target) = linked.profile else { continue };
        if config.snapshot.activation.is_some() && !before.contains_key(&target) {
            let snapshot = data.get(&target).map(|p| (p.trait_values(), p.tags.clone())).unwrap_or_default();
            before.insert(target.clone(), snapshot);
        }
        for absorbed in &linked.merged {
            merges += 1;
            if let Some(gone) = data.remove(absorbed) {
                if let Some(activation) = &config.snapshot.activation {
                    merged_exits.extend(exits_of_absorbed(activation, &gone, now));
                }
                let survivor = data.entry(target.clone()).or_insert_with(|| Profile::new(target.clone()));
                survivor.absorb(gone, &config.snapshot.profiles);
            }
        }
        let profile = data.entry(target.clone()).or_insert_with(|| Profile::new(target.clone()));
        profile.apply(event, &config.snapshot.profiles);
        if let Some(tags) = &config.snapshot.tags {
            tags.observe(&mut profile.tag_state, &EventView::of(event, &empty), now.unix_millis());
            touched.insert(target.clone());
        }
        if let Some(node) = graph.profile(&target) {
            profile.identities = node.identities.clone();
        }
        if config.snapshot.activation.is_some() {
            triggered.push((target.clone(), event));
        }
        applied += 1;
    }
    // The changed profiles' tag values, as of now.
    // Tags waiting for a backfill (or the full recompute) keep their previous values.
    if let Some(tags) = &config.snapshot.tags {
        let waiting = tags.waiting(&config.snapshot.ready);
        for id in touched {
            if let Some(profile) = data.get_mut(&id) {
                let traits = profile.trait_values();
                let mut values = tags.evaluate_state(&profile.tag_state, &traits, now.unix_millis());
                for tag in &waiting {
                    match profile.tags.get(tag) {
                        Some(previous) => values.insert(tag.clone(), previous.clone()),
                        None => values.remove(tag),
                    };
                }
                profile.tags = values;
                profile.tags_at = Some(now);
            }
        }
    }
    let mut messages = merged_exits;
    if let Some(activation) = &config.snapshot.activation {
        messages.extend(deliveries(activation, &mut data, &before, &triggered, now));
    }
    txn.put_back(graph, data).await?;
    Ok((applied, merges, refusals, messages))
}

/// A profile merged into another leaves every audience it was in: partners that received its entry get its
/// exit (the survivor's own memberships are decided as for any touched profile, so it enters where it
/// qualifies). The item's id names the profile and the change's number, so a retried batch sends it once.
fn exits_of_absorbed(activation: &Activation, gone: &Profile, now: UtcTime) -> Vec<Message> {
    let changes: Vec<(String, bool, u32)> = gone
        .memberships
        .iter()
        .filter(|(_, m)| m.member)
        .map(|(audience, m)| (audience.clone(), false, m.changes + 1))
        .collect();
    if changes.is_empty() {
        return Vec::new();
    }
    let traits = gone.trait_values();
    let keys: Vec<String> = gone.identities.iter().cloned().collect();
    let view = ProfileNow { id: &gone.id, keys: &keys, traits: &traits, tags: &gone.tags, consent: &gone.consent };
    activation.destinations.audience_messages(&view, &changes, &activation.names, now)
}

/// The batch's deliveries: each touched profile's real-time audience entries and exits (recorded on the
/// profile), its subscribed trait and tag changes, and its events that pass a destination's trigger.
fn deliveries(
    activation: &Activation,
    data: &mut BTreeMap<String, Profile>,
    before: &Before,
    triggered: &[(String, &CanonicalEvent)],
    now: UtcTime,
) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut events_of: BTreeMap<&str, Vec<&CanonicalEvent>> = BTreeMap::new();
    for (profile, event) in triggered {
        events_of.entry(profile.as_str()).or_default().push(event);
    }
    for (id, (traits_before, tags_before)) in before {
        // A profile merged away in this batch has no deliveries of its own.
        let Some(profile) = data.get_mut(id) else { continue };
        let traits = profile.trait_values();
        let decided = activation.audiences.realtime_members(&traits, &profile.tags);
        let changes = shared::audiences::record_memberships(&mut profile.memberships, &decided, now.unix_millis());
        let keys: Vec<String> = profile.identities.iter().cloned().collect();
        let view = ProfileNow { id, keys: &keys, traits: &traits, tags: &profile.tags, consent: &profile.consent };
        messages.extend(activation.destinations.audience_messages(&view, &changes, &activation.names, now));
        messages.extend(activation.destinations.change_messages(&view, traits_before, tags_before, now));
        for event in events_of.get(id.as_str()).into_iter().flatten() {
            messages.extend(activation.destinations.trigger_messages(&view, event, now));
        }
    }
    messages
}

#[cfg(test)]
mod tests;
