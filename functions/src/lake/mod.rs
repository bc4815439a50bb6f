//! The event lake: every accepted event once more, compacted from `raw/` into Parquet,
//! `lake/events/dt=YYYY-MM-DD/part-<ulid>.parquet` (Hive-partitioned by the day of receipt, so DuckDB, Athena
//! or Spark read it as one table with a `dt` column).
//!
//! Columns: `message_id`, `type`, `event`, `timestamp` and `received_at` (ms, UTC), `source_id`, `user_id`,
//! `anonymous_id`, `identity_keys` (the event's identity keys, `type:value` with personal values by their hash,
//! as the identity rules gave them at compaction, strongest first), `properties` (JSON text) and `body` (the
//! whole canonical event as JSON, so nothing of it is lost). Row groups hold at most [`ROW_GROUP`] rows, each
//! with split-block bloom filters on `message_id`, `user_id`, `anonymous_id` and `identity_keys`: finding one
//! person's events reads a part's footer and filters and skips the row groups that cannot hold them.
//!
//! Compaction ([`compact`]) takes the raw objects after the manifest's watermark (`lake/v1/manifest.json`, the
//! last raw key compacted; raw keys sort in receipt order) whose names say they are older than a settle time,
//! so that an object still being written by a collector is never passed over, and writes one part per day of
//! receipt, named by the first raw object it holds, then advances the watermark under compare-and-swap.
//! Repeating a run writes the same part names again, so a retry after a crash overwrites instead of adding.
//! Events of people being erased (the suppression list's holds) are left out. Readers take the lake and the
//! raw objects after the watermark ([`raw_tail`]); a message id may appear twice only if two compactions ran at
//! once (the tagging function, the one compactor in the cloud, runs one at a time), and readers keep the first.

mod compact;
mod fetch;
mod format;
mod scrub;
mod tags;
#[cfg(test)]
mod tests;

pub use compact::{compact, compact_all};
pub use fetch::find;
pub use format::{catalog_columns, decode, encode};
pub use scrub::{Scrubbed, without};
pub use tags::{TagEvent, for_tags};

use serde::{Deserialize, Serialize};
use shared::event::CanonicalEvent;

use crate::Error;
use crate::storage::{ObjectMeta, ObjectStore, PutOptions};

/// Where the parts are.
pub const EVENTS: &str = "lake/events/";
/// The compaction's watermark.
pub const MANIFEST: &str = "lake/v1/manifest.json";
/// Rows per row group at most (each row group has its own bloom filters).
pub const ROW_GROUP: usize = 64 * 1024;
/// How old a raw object must be (by its name) before compaction takes it, by default: a collector names an
/// object when it starts writing it, so one named earlier than this before now is written or never will be.
pub const SETTLE_MS: i64 = 10 * 60 * 1000;
/// Raw objects one compaction run takes at most (the next run goes on).
const MAX_OBJECTS: usize = 20_000;
/// Events one compaction run holds at most (bounded memory: it stops after the object that reaches this).
const MAX_EVENTS: usize = 500_000;
/// At most this much event text (inflated JSON) per run: decoded events and their part take a few times as
/// much, so a run's memory stays bounded however large or compressible the objects are.
const MAX_TEXT_BYTES: usize = 16 << 20;
/// The leaf columns with bloom filters.
const BLOOM: [&str; 4] = ["message_id", "user_id", "anonymous_id", "identity_keys.list.item"];

/// The compaction's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The last raw object in the lake: raw objects after it (by key) are not compacted yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// When the watermark last moved (ms since the epoch).
    #[serde(default)]
    pub compacted_at: i64,
    /// Events written to the lake over all runs.
    #[serde(default)]
    pub events: u64,
}

/// What one compaction run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Compacted {
    /// Raw objects taken.
    pub objects: usize,
    /// Events written.
    pub events: usize,
    /// Events left out because their person is being erased.
    pub held: usize,
    /// Parts written.
    pub parts: Vec<String>,
    /// Whether raw objects old enough remain for another run.
    pub more: bool,
}

/// One event of the lake with its identity keys.
pub type Row = (CanonicalEvent, Vec<String>);

/// How parts are written.
pub fn part_options() -> PutOptions {
    PutOptions { content_type: Some("application/vnd.apache.parquet"), ..PutOptions::json() }
}

/// The manifest (default when absent) and its etag.
pub async fn manifest<S: ObjectStore>(store: &S) -> Result<(Manifest, Option<String>), Error> {
    match store.get(MANIFEST).await? {
        None => Ok((Manifest::default(), None)),
        Some(object) => {
            let manifest =
                serde_json::from_slice(&object.body).map_err(|e| Error::Corrupt(format!("{MANIFEST}: {e}")))?;
            Ok((manifest, Some(object.etag)))
        }
    }
}

/// The raw objects after the watermark (not in the lake yet), oldest first.
pub async fn raw_tail<S: ObjectStore>(store: &S, manifest: &Manifest) -> Result<Vec<String>, Error> {
    let mut keys: Vec<String> = store
        .list(shared::storage::ObjectKind::Raw.prefix())
        .await?
        .into_iter()
        .map(|m| m.key)
        .filter(|k| manifest.watermark.as_ref().is_none_or(|w| k > w))
        .collect();
    keys.sort_unstable();
    Ok(keys)
}

/// The parts with their sizes, oldest first (part names sort by day, then by the first raw object they hold).
pub async fn parts<S: ObjectStore>(store: &S) -> Result<Vec<ObjectMeta>, Error> {
    let mut parts: Vec<ObjectMeta> =
        store.list(EVENTS).await?.into_iter().filter(|m| m.key.ends_with(".parquet")).collect();
    parts.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok(parts)
}

/// The day partition (`dt=YYYY-MM-DD`) and the ULID of a raw object's key.
fn day_and_name(key: &str) -> Option<(&str, &str)> {
    let day = key.split('/').find(|segment| segment.starts_with("dt="))?;
    Some((day, key.rsplit('/').next()?.strip_suffix(".ndjson.gz")?))
}
