//! The ingest handler: new `raw/` objects → deduplicated events → identity graph and profiles → state.
//!
//! Used by the ingest Lambda (fed by S3 notifications through SQS) and by `cdp up` (fed in-process).

pub mod lambda;
pub mod reconcile;

use std::collections::{BTreeMap, BTreeSet};

use shared::apply::{Applied, Rules};
use shared::event::CanonicalEvent;
use shared::profile::Profile;
use shared::time::UtcTime;

use crate::Error;
use crate::raw::read_object;
use crate::snapshot::RunConfig;
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
    // Which object each event came from: the data dictionary learns, per object, the events applied.
    let mut origins = Origins::new();
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
        for event in &object.events {
            origins.insert((event.source_id.clone(), event.message_id.clone()), key.clone());
        }
        events.extend(object.events);
    }
    records.sort_unstable();
    records.dedup();
    let applied = apply_events(store, events, &records, Some(&origins), config, now).await?;
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
    apply_events(store, events, &[], None, config, now).await
}

/// The raw object each event came from, by (source, messageId).
type Origins = std::collections::HashMap<(String, String), String>;

/// [`ingest_events`], recording `records` (the objects the events came from, see [`reconcile`]) as applied in
/// the same commit.
async fn apply_events<S: ObjectStore + Clone>(
    store: &S,
    mut events: Vec<CanonicalEvent>,
    records: &[String],
    origins: Option<&Origins>,
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
        let mut txn = config.begin(store).await?;
        let fresh = txn.fresh(events.clone(), now, dedup_window).await?;
        txn.record(records, now, dedup_window).await?;
        report.duplicates = events.len() - fresh.len();
        if let Some(origins) = origins {
            // What each object brought that was not seen before (suppressed people's events and duplicates,
            // a client's retry in another object among them, left out), written before the commit: a retry of
            // this batch rewrites the same parts with what it applies.
            let mut by_object: BTreeMap<&str, Vec<&CanonicalEvent>> = BTreeMap::new();
            for event in &fresh {
                if let Some(key) = origins.get(&(event.source_id.clone(), event.message_id.clone())) {
                    by_object.entry(key.as_str()).or_default().push(event);
                }
            }
            for (key, described) in by_object {
                crate::catalog::record(store, key, described, &config.snapshot.profiles).await?;
            }
        }
        let Applied { applied, merges, refusals, messages } = apply(&mut txn, &fresh, config, now).await?;
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
        let mut txn = config.begin(store).await?;
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

async fn apply<S: ObjectStore + Clone>(
    txn: &mut Transaction<'_, S>,
    events: &[CanonicalEvent],
    config: &RunConfig,
    now: UtcTime,
) -> Result<Applied, Error> {
    let snapshot = &config.snapshot;
    let keys = shared::apply::keys_to_read(&snapshot.identity, events);
    let (mut graph, mut data) = txn.graph_for(&keys).await?;
    let rules = Rules {
        identity: &snapshot.identity,
        profiles: &snapshot.profiles,
        tags: snapshot.tags.as_ref(),
        ready: &snapshot.ready,
        activation: snapshot.activation.as_ref(),
    };
    let applied = shared::apply::apply(&mut graph, &mut data, events, &rules, now);
    txn.put_back(graph, data).await?;
    Ok(applied)
}

#[cfg(test)]
mod tests;
