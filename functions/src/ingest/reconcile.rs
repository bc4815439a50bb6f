//! Reconciliation: finds raw objects that ingest never applied and applies them.
//!
//! A notification can be lost: `cdp up`'s in-process queue dies with the process, and in the cloud an S3
//! notification can be dropped or end in the dead-letter queue. Ingest records every object it applied in the
//! state, in the same commit as its events (an entry of the dedup shards under [`object_record`], forgotten
//! with the dedup window), so a run here lists the raw objects after a watermark, applies those without a
//! record, and moves the watermark over the objects named before a settle time — by then every collector
//! has finished writing them, so none can appear behind the watermark later. `cdp up` runs it at start
//! (catching up on what a crash left) and every half minute; in the cloud a schedule invokes the ingest
//! function with it.
//!
//! Safe beside ingest: objects applied meanwhile are recorded, and applying an object twice changes nothing
//! (its events are deduplicated within the window). A record is forgotten only by a compaction, past the
//! dedup window after it was written (the state's manifest keeps the latest horizon one used): an object
//! named after that horizon without a record was never applied — even after a month without any process
//! running — while one named before it cannot be told apart from one applied and forgotten, so it is left
//! alone and counted (`unverifiable`), never applied twice.

use serde::{Deserialize, Serialize};
use shared::storage::{ObjectKind, object_named_at, raw_hour_prefix};
use shared::time::UtcTime;

use super::ingest;
use crate::Error;
use crate::snapshot::RunConfig;
use crate::state::MANIFEST_KEY;
use crate::storage::{Condition, ObjectStore, PutOptions, StoreError};

/// The reconciliation's watermark: `ingest/v1/watermark.json`.
pub const WATERMARK: &str = "ingest/v1/watermark.json";

/// Objects applied at once by one reconciliation step.
const CHUNK: usize = 256;

/// The state entry that records a raw object as applied. Dedup keys start with a source id (a lower-case
/// letter or digit), so `@` never meets one.
pub fn object_record(raw_key: &str) -> String {
    format!("@{raw_key}")
}

/// The watermark as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Watermark {
    /// Every raw object up to this key (in key order) is applied or was judged; none when nothing was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
    /// When it last moved (ms since the epoch).
    #[serde(default)]
    pub moved_at: i64,
}

/// When reconciliation acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Objects named less than this long ago are left to their notification (0 at `cdp up`'s start).
    pub grace_ms: i64,
    /// The watermark passes only objects named at least this long ago: longer than any collector takes to
    /// write an object, so none can appear behind it.
    pub settle_ms: i64,
}

impl Timing {
    /// The cloud: a notification normally arrives within seconds and SQS retries for minutes; an edge worker
    /// finishes a write well within ten minutes.
    pub const CLOUD: Self = Self { grace_ms: 120_000, settle_ms: 600_000 };
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconciled {
    /// Raw objects after the watermark.
    pub listed: usize,
    /// Of those, never applied: applied now.
    pub missing: usize,
    /// Events applied from them.
    pub applied: usize,
    /// Never applied by their record, but named before the dedup window: left alone (see the module).
    pub unverifiable: usize,
    /// The watermark after the run.
    pub watermark: Option<String>,
}

/// Applies every raw object after the watermark that has no record (named at least `timing.grace_ms` before
/// `now`), then moves the watermark.
pub async fn reconcile<S: ObjectStore + Clone>(
    store: &S,
    config: &RunConfig,
    now: UtcTime,
    timing: Timing,
) -> Result<Reconciled, Error> {
    let (mut mark, etag) = read_watermark(store).await?;
    let settled = now.unix_millis() - timing.settle_ms;
    if etag.is_none() && store.get(MANIFEST_KEY).await?.is_some() {
        // A state from before reconciliation: its objects were applied under notifications alone, and their
        // records do not exist. Start from what is settled now.
        let keys = list_after(store, None, now).await?;
        mark.through = keys.into_iter().take_while(|k| object_named_at(k).is_some_and(|t| t <= settled)).last();
        tracing::info!(watermark = ?mark.through, "ingest reconciliation starts after the objects already stored");
        write_watermark(store, &mark, None, now).await?;
        return Ok(Reconciled { watermark: mark.through, ..Reconciled::default() });
    }
    let keys = list_after(store, mark.through.as_deref(), now).await?;
    let mut report = Reconciled { listed: keys.len(), ..Reconciled::default() };
    let (recorded, forgotten_before) = {
        let mut txn = config.begin(store).await?;
        let forgotten_before = txn.manifest().forgotten_before;
        (txn.recorded_objects(keys.iter().map(|k| object_record(k))).await?, forgotten_before)
    };
    let due = now.unix_millis() - timing.grace_ms;
    let mut missing = Vec::new();
    for key in &keys {
        if recorded.contains(&object_record(key)) {
            continue;
        }
        match object_named_at(key) {
            Some(t) if t < forgotten_before => {
                tracing::error!(%key, "raw object without a record of ingest, named before records were forgotten: left alone");
                report.unverifiable += 1;
            }
            Some(t) if t <= due => missing.push(key.clone()),
            _ => {}
        }
    }
    for chunk in missing.chunks(CHUNK) {
        tracing::warn!(objects = chunk.len(), first = %chunk[0], "applying raw objects that ingest never applied");
        let applied = ingest(store, chunk, config, now).await?;
        report.missing += chunk.len();
        report.applied += applied.applied;
    }
    // Every object named before the settle time is now applied or judged.
    let through = keys.into_iter().take_while(|k| object_named_at(k).is_some_and(|t| t <= settled)).last();
    // The first run writes the watermark even if it stays empty: its existence says that every object after
    // it is recorded when applied.
    if etag.is_none() || (through.is_some() && through > mark.through) {
        mark.through = through.max(mark.through);
        if let Err(error) = write_watermark(store, &mark, etag, now).await {
            match error {
                Error::Store(StoreError::PreconditionFailed) => {
                    tracing::info!("another reconciliation moved the ingest watermark meanwhile");
                }
                error => return Err(error),
            }
        }
    }
    report.watermark = mark.through;
    Ok(report)
}

async fn read_watermark<S: ObjectStore>(store: &S) -> Result<(Watermark, Option<String>), Error> {
    match store.get(WATERMARK).await? {
        None => Ok((Watermark::default(), None)),
        Some(object) => {
            let mark = serde_json::from_slice(&object.body).map_err(|e| Error::Corrupt(format!("{WATERMARK}: {e}")))?;
            Ok((mark, Some(object.etag)))
        }
    }
}

async fn write_watermark<S: ObjectStore>(
    store: &S,
    mark: &Watermark,
    etag: Option<String>,
    now: UtcTime,
) -> Result<(), Error> {
    let mark = Watermark { moved_at: now.unix_millis(), ..mark.clone() };
    let body = serde_json::to_vec(&mark).map_err(Error::encoding)?;
    let condition = match etag {
        Some(etag) => Condition::IfMatch(etag),
        None => Condition::IfNoneMatch,
    };
    store.put(WATERMARK, body, PutOptions { content_type: Some("application/json"), condition }).await?;
    Ok(())
}

/// The raw objects after `through`, in key order (which is the order they were named in). With a watermark,
/// only the hour partitions from its hour to the hour after now are listed.
async fn list_after<S: ObjectStore>(store: &S, through: Option<&str>, now: UtcTime) -> Result<Vec<String>, Error> {
    let prefixes: Vec<String> = match through.and_then(object_named_at).and_then(UtcTime::from_unix_millis) {
        None => vec![format!("{}v1/", ObjectKind::Raw.prefix())],
        Some(from) => {
            const HOUR: i64 = 3_600_000;
            let (first, last) = (from.unix_millis() / HOUR, now.unix_millis() / HOUR + 1);
            (first..=last.max(first))
                .filter_map(|hour| UtcTime::from_unix_millis(hour * HOUR))
                .map(raw_hour_prefix)
                .collect()
        }
    };
    let mut keys = Vec::new();
    for prefix in prefixes {
        keys.extend(
            store
                .list(&prefix)
                .await?
                .into_iter()
                .map(|meta| meta.key)
                .filter(|k| object_named_at(k).is_some() && through.is_none_or(|w| k.as_str() > w)),
        );
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}
