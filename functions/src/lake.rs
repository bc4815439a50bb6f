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

use shared::storage::keys;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::ChunkReader;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use shared::event::{CanonicalEvent, EventType};
use shared::identity::IdentityRules;
use shared::tags::EventView;
use shared::time::UtcTime;

use crate::Error;
use crate::raw::read_object;
use crate::storage::{Condition, ObjectMeta, ObjectStore, PutOptions, StoreError};

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

/// An event's identity keys: the rules' (those that link, strongest first), then any other identifier the
/// event names (so that finding a person's events does not depend on how the rules stand).
pub fn identity_keys(rules: &IdentityRules, event: &CanonicalEvent) -> Vec<String> {
    let mut keys = rules.keys(event);
    for key in crate::suppression::event_keys(event) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Compacts raw objects named at least `settle_ms` before `now` into the lake; at most one bounded batch per
/// call (`more` says whether another would find work).
pub async fn compact<S: ObjectStore>(store: &S, settle_ms: i64, now: UtcTime) -> Result<Compacted, Error> {
    compact_within(store, settle_ms, now, MAX_EVENTS, MAX_TEXT_BYTES).await
}

/// [`compact`], stopping after the raw object that brings the run to `max_events` events or `max_bytes` of
/// event text.
async fn compact_within<S: ObjectStore>(
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
            let keys = identity_keys(&rules, &event);
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

fn schema() -> Arc<Schema> {
    let time = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("message_id", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, true),
        Field::new("timestamp", time(), false),
        Field::new("received_at", time(), false),
        Field::new("source_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("anonymous_id", DataType::Utf8, true),
        Field::new("identity_keys", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false),
        Field::new("properties", DataType::Utf8, true),
        Field::new("body", DataType::Utf8, false),
    ]))
}

fn parquet_error(what: &'static str) -> impl Fn(parquet::errors::ParquetError) -> Error {
    move |e| Error::Corrupt(format!("lake {what}: {e}"))
}

fn arrow_error(what: &'static str) -> impl Fn(arrow_schema::ArrowError) -> Error {
    move |e| Error::Corrupt(format!("lake {what}: {e}"))
}

/// One part's bytes: `rows` in their order, in row groups of at most [`ROW_GROUP`] rows with bloom filters.
pub fn encode(rows: &[Row]) -> Result<Vec<u8>, Error> {
    // Sized for the most distinct values a row group can have (events have a few identity keys each), then
    // folded down by the writer to what the values need.
    let distinct = (rows.len().clamp(1, ROW_GROUP) * 4) as u64;
    let mut properties = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP));
    for column in BLOOM {
        let path = ColumnPath::new(column.split('.').map(String::from).collect());
        properties = properties
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path.clone(), 0.01)
            .set_column_bloom_filter_max_ndv(path, distinct);
    }
    let schema = schema();
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, schema.clone(), Some(properties.build())).map_err(parquet_error("writer"))?;
    for chunk in rows.chunks(ROW_GROUP) {
        writer.write(&batch(&schema, chunk)?).map_err(parquet_error("writing"))?;
    }
    writer.close().map_err(parquet_error("closing"))?;
    Ok(out)
}

fn batch(schema: &Arc<Schema>, rows: &[Row]) -> Result<RecordBatch, Error> {
    let text = |f: &dyn Fn(&CanonicalEvent) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(|(e, _)| f(e)).collect::<StringArray>())
    };
    let time = |f: &dyn Fn(&CanonicalEvent) -> i64| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(|(e, _)| f(e))).with_timezone("UTC"))
    };
    let mut keys = ListBuilder::new(StringBuilder::new());
    for (_, event_keys) in rows {
        for key in event_keys {
            keys.values().append_value(key);
        }
        keys.append(true);
    }
    let mut properties = Vec::with_capacity(rows.len());
    let mut bodies = Vec::with_capacity(rows.len());
    let corrupt = |e: serde_json::Error| Error::Corrupt(e.to_string());
    for (event, _) in rows {
        properties.push(event.properties.as_ref().map(serde_json::to_string).transpose().map_err(corrupt)?);
        bodies.push(serde_json::to_string(event).map_err(corrupt)?);
    }
    let columns: Vec<ArrayRef> = vec![
        text(&|e| Some(&e.message_id)),
        text(&|e| Some(e.kind.as_str())),
        text(&|e| e.event.as_deref()),
        time(&|e| e.timestamp.unix_millis()),
        time(&|e| e.received_at.unix_millis()),
        text(&|e| Some(&e.source_id)),
        text(&|e| e.user_id.as_deref()),
        text(&|e| e.anonymous_id.as_deref()),
        Arc::new(keys.finish()),
        Arc::new(properties.iter().map(Option::as_deref).collect::<StringArray>()),
        Arc::new(StringArray::from_iter_values(bodies)),
    ];
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_error("row group"))
}

/// The leaf column of the identity keys (bloom filters are per leaf).
const KEYS_LEAF: &str = "identity_keys.list.item";

fn open(bytes: bytes::Bytes) -> Result<ParquetRecordBatchReaderBuilder<bytes::Bytes>, Error> {
    ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(parquet_error("part"))
}

/// Reads `columns` of the row groups `groups` (all when `None`) of a part.
fn read<R: ChunkReader + 'static>(
    builder: ParquetRecordBatchReaderBuilder<R>,
    groups: Option<Vec<usize>>,
    columns: &[&str],
) -> Result<Vec<RecordBatch>, Error> {
    batches(builder, groups, columns)?.collect::<Result<Vec<_>, _>>().map_err(arrow_error("part"))
}

/// [`read`], a row group at a time.
fn batches<R: ChunkReader + 'static>(
    builder: ParquetRecordBatchReaderBuilder<R>,
    groups: Option<Vec<usize>>,
    columns: &[&str],
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, Error> {
    let mut roots = Vec::new();
    for column in columns {
        roots.push(
            builder.schema().index_of(column).map_err(|_| Error::Corrupt(format!("lake part: no column {column}")))?,
        );
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let mut builder = builder.with_projection(mask).with_batch_size(ROW_GROUP);
    if let Some(groups) = groups {
        builder = builder.with_row_groups(groups);
    }
    builder.build().map_err(parquet_error("part"))
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray, Error> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| Error::Corrupt(format!("lake part: {name} is not a text column")))
}

fn times<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a TimestampMillisecondArray, Error> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
        .ok_or_else(|| Error::Corrupt(format!("lake part: {name} is not a timestamp column")))
}

fn key_lists(batch: &RecordBatch) -> Result<Vec<Vec<String>>, Error> {
    let lists = batch
        .column_by_name("identity_keys")
        .and_then(|c| c.as_any().downcast_ref::<ListArray>())
        .ok_or_else(|| Error::Corrupt("lake part: identity_keys is not a list column".into()))?;
    let mut out = Vec::with_capacity(lists.len());
    for i in 0..lists.len() {
        let values = lists.value(i);
        let values = values
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Corrupt("lake part: identity_keys holds no text".into()))?;
        out.push(values.iter().flatten().map(String::from).collect());
    }
    Ok(out)
}

/// The row groups that may hold an event with one of `keys` (by their bloom filters; a row group without one
/// is read).
fn groups_for(
    builder: &ParquetRecordBatchReaderBuilder<bytes::Bytes>,
    keys: &BTreeSet<String>,
) -> Result<Vec<usize>, Error> {
    let leaf = builder.parquet_schema().columns().iter().position(|c| c.path().string() == KEYS_LEAF);
    let mut groups = Vec::new();
    for group in 0..builder.metadata().num_row_groups() {
        let filter = match leaf {
            Some(leaf) => {
                builder.get_row_group_column_bloom_filter(group, leaf).map_err(parquet_error("bloom filter"))?
            }
            None => None,
        };
        if filter.is_none_or(|filter| keys.iter().any(|k| filter.check(k.as_str()))) {
            groups.push(group);
        }
    }
    Ok(groups)
}

/// A part's events in their order: all of them, or (`only`) those with one of these identity keys, reading
/// only the row groups whose bloom filters may hold one.
pub fn decode(bytes: bytes::Bytes, only: Option<&BTreeSet<String>>) -> Result<Vec<Row>, Error> {
    let builder = open(bytes)?;
    let groups = match only {
        Some(keys) => Some(groups_for(&builder, keys)?),
        None => None,
    };
    if groups.as_ref().is_some_and(Vec::is_empty) {
        return Ok(Vec::new());
    }
    events_of(builder, groups, only)
}

/// The events (`body`) of the row groups `groups` whose identity keys meet `only` (all when `None`).
fn events_of<R: ChunkReader + 'static>(
    builder: ParquetRecordBatchReaderBuilder<R>,
    groups: Option<Vec<usize>>,
    only: Option<&BTreeSet<String>>,
) -> Result<Vec<Row>, Error> {
    let mut rows = Vec::new();
    for batch in read(builder, groups, &["identity_keys", "body"])? {
        let bodies = strings(&batch, "body")?;
        for (i, keys) in key_lists(&batch)?.into_iter().enumerate() {
            if only.is_some_and(|only| !keys.iter().any(|k| only.contains(k))) {
                continue;
            }
            let event = serde_json::from_str(bodies.value(i))
                .map_err(|e| Error::Corrupt(format!("lake part: an event does not decode: {e}")))?;
            rows.push((event, keys));
        }
    }
    Ok(rows)
}

/// Byte ranges of a part fetched from the store, served to the Parquet reader (which asks only for what
/// was fetched for it: the footer's row groups, their bloom filters, the column chunks read).
#[derive(Debug, Clone)]
struct Fetched {
    size: u64,
    ranges: Arc<Vec<(u64, bytes::Bytes)>>,
}

impl Fetched {
    fn range(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        for (at, bytes) in self.ranges.iter() {
            if *at <= start && start + length as u64 <= at + bytes.len() as u64 {
                let from = (start - at) as usize;
                return Ok(bytes.slice(from..from + length));
            }
        }
        Err(parquet::errors::ParquetError::General(format!("bytes {start}+{length} of the part were not fetched")))
    }
}

impl parquet::file::reader::Length for Fetched {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for Fetched {
    type T = std::io::Cursor<bytes::Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        for (at, bytes) in self.ranges.iter() {
            if *at <= start && start < at + bytes.len() as u64 {
                return Ok(std::io::Cursor::new(bytes.slice((start - at) as usize..)));
            }
        }
        Err(parquet::errors::ParquetError::General(format!("byte {start} of the part was not fetched")))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        self.range(start, length)
    }
}

/// Reads `len` bytes at `start` of `key`; `None` when the object is gone.
async fn fetch<S: ObjectStore>(store: &S, key: &str, start: u64, len: u64) -> Result<Option<bytes::Bytes>, Error> {
    Ok(store.get_range(key, start, len).await?.map(bytes::Bytes::from))
}

/// A part's footer (its metadata), read by range; `None` when the part is gone.
async fn footer<S: ObjectStore>(store: &S, part: &ObjectMeta) -> Result<Option<ParquetMetaData>, Error> {
    let corrupt = |what: &str| Error::Corrupt(format!("{}: {what}", part.key));
    let tail_len = part.size.min(64 * 1024);
    let Some(tail) = fetch(store, &part.key, part.size - tail_len, tail_len).await? else { return Ok(None) };
    if tail.len() < 8 || &tail[tail.len() - 4..] != b"PAR1" {
        return Err(corrupt("not a Parquet file"));
    }
    let mut length = [0u8; 4];
    length.copy_from_slice(&tail[tail.len() - 8..tail.len() - 4]);
    let length = u64::from(u32::from_le_bytes(length));
    let metadata = if length + 8 <= tail.len() as u64 {
        tail.slice(tail.len() - 8 - length as usize..tail.len() - 8)
    } else if length + 8 <= part.size {
        let Some(bytes) = fetch(store, &part.key, part.size - 8 - length, length).await? else { return Ok(None) };
        bytes
    } else {
        return Err(corrupt("its footer is longer than the file"));
    };
    ParquetMetaDataReader::decode_metadata(&metadata).map(Some).map_err(parquet_error("footer"))
}

/// The events of a part (as listed, with its size) that have one of `keys`, reading by range only its footer,
/// the bloom filters of its identity keys and the column chunks of the row groups they do not rule out:
/// a part that does not hold the person costs its footer and filters, not its bytes. Empty when it is gone.
pub async fn find<S: ObjectStore>(store: &S, part: &ObjectMeta, keys: &BTreeSet<String>) -> Result<Vec<Row>, Error> {
    let Some(metadata) = footer(store, part).await? else { return Ok(Vec::new()) };
    let leaf = metadata.file_metadata().schema_descr().columns().iter().position(|c| c.path().string() == KEYS_LEAF);
    let mut groups = Vec::new();
    for (g, group) in metadata.row_groups().iter().enumerate() {
        let column = leaf.map(|leaf| group.column(leaf));
        let filter = match column.map(|c| (c, c.bloom_filter_offset(), c.bloom_filter_length())) {
            Some((column, Some(offset), Some(length))) => {
                let Some(bytes) = fetch(store, &part.key, offset as u64, length as u64).await? else {
                    return Ok(Vec::new());
                };
                let reader = Fetched { size: part.size, ranges: Arc::new(vec![(offset as u64, bytes)]) };
                Sbbf::read_from_column_chunk(column, &reader).map_err(parquet_error("bloom filter"))?
            }
            _ => None,
        };
        if filter.is_none_or(|filter| keys.iter().any(|k| filter.check(k.as_str()))) {
            groups.push(g);
        }
    }
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    // The column chunks of the identity keys and the events, in those row groups.
    let mut ranges = Vec::new();
    for &g in &groups {
        for column in metadata.row_group(g).columns() {
            let path = column.column_path().string();
            if path == KEYS_LEAF || path == "body" {
                let (start, length) = column.byte_range();
                let Some(bytes) = fetch(store, &part.key, start, length).await? else { return Ok(Vec::new()) };
                ranges.push((start, bytes));
            }
        }
    }
    let reader = Fetched { size: part.size, ranges: Arc::new(ranges) };
    let metadata =
        ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new()).map_err(parquet_error("footer"))?;
    events_of(ParquetRecordBatchReaderBuilder::new_with_metadata(reader, metadata), Some(groups), Some(keys))
}

/// An event as tags and audiences read it: its id, type, name, times and properties, the properties kept as
/// JSON text until a chunk of profiles needs them (a tenth of the memory of a decoded canonical event).
#[derive(Debug, Clone, PartialEq)]
pub struct TagEvent {
    /// Its source and messageId, as deduplication keys it ([`shared::event::dedup_key`]).
    pub dedup_key: Box<str>,
    /// Which call.
    pub kind: EventType,
    /// A track's event name.
    pub event: Option<Box<str>>,
    /// When it happened (ms since the epoch).
    pub at: i64,
    /// When it was received (ms since the epoch).
    pub received_at: i64,
    /// The properties as JSON text, if any.
    pub properties: Option<Box<str>>,
}

impl TagEvent {
    /// The parts of a canonical event tags read.
    pub fn of(event: &CanonicalEvent) -> Self {
        Self {
            dedup_key: event.dedup_key().into(),
            kind: event.kind,
            event: event.event.as_deref().map(Into::into),
            at: event.timestamp.unix_millis(),
            received_at: event.received_at.unix_millis(),
            // A map of JSON values always serializes.
            properties: event.properties.as_ref().and_then(|p| serde_json::to_string(p).ok()).map(Into::into),
        }
    }

    /// The properties, decoded (empty without).
    pub fn properties(&self) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        match &self.properties {
            None => Ok(serde_json::Map::new()),
            Some(text) => serde_json::from_str(text)
                .map_err(|e| Error::Corrupt(format!("the properties of {} do not decode: {e}", self.dedup_key))),
        }
    }

    /// Only the properties named in `wanted` (sorted), decoded; the others are skipped without being kept.
    pub fn properties_of(&self, wanted: &[String]) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        use serde::de::DeserializeSeed as _;
        let Some(text) = &self.properties else { return Ok(serde_json::Map::new()) };
        let mut reader = serde_json::Deserializer::from_str(text);
        Picked(wanted)
            .deserialize(&mut reader)
            .and_then(|picked| reader.end().map(|()| picked))
            .map_err(|e| Error::Corrupt(format!("the properties of {} do not decode: {e}", self.dedup_key)))
    }

    /// The evaluators' view, with the properties decoded by [`TagEvent::properties`].
    pub fn view<'a>(&'a self, properties: &'a serde_json::Map<String, serde_json::Value>) -> EventView<'a> {
        EventView {
            kind: self.kind.as_str(),
            event: self.event.as_deref(),
            at: self.at,
            id: shared::event::message_id_of(&self.dedup_key),
            properties,
        }
    }
}

/// A part's events as tags read them ([`TagEvent`]), with their identity keys, to `each`, a row group at a time
/// (only those columns are read; one row group is decoded at once).
pub fn for_tags(
    bytes: bytes::Bytes,
    mut each: impl FnMut(TagEvent, &[String]) -> Result<(), Error>,
) -> Result<(), Error> {
    let columns =
        ["message_id", "type", "event", "timestamp", "received_at", "source_id", "identity_keys", "properties"];
    for batch in batches(open(bytes)?, None, &columns)? {
        let batch = batch.map_err(arrow_error("part"))?;
        let (ids, sources, kinds, names, properties) = (
            strings(&batch, "message_id")?,
            strings(&batch, "source_id")?,
            strings(&batch, "type")?,
            strings(&batch, "event")?,
            strings(&batch, "properties")?,
        );
        let (at, received) = (times(&batch, "timestamp")?, times(&batch, "received_at")?);
        for (i, keys) in key_lists(&batch)?.into_iter().enumerate() {
            let kind = EventType::ALL
                .into_iter()
                .find(|k| k.as_str() == kinds.value(i))
                .ok_or_else(|| Error::Corrupt(format!("lake part: unknown type {:?}", kinds.value(i))))?;
            let event = TagEvent {
                dedup_key: shared::event::dedup_key(sources.value(i), ids.value(i)).into(),
                kind,
                event: (!names.is_null(i)).then(|| names.value(i).into()),
                at: at.value(i),
                received_at: received.value(i),
                properties: (!properties.is_null(i)).then(|| properties.value(i).into()),
            };
            each(event, &keys)?;
        }
    }
    Ok(())
}

/// What is left of a part after an erasure.
#[derive(Debug, Clone, PartialEq)]
pub struct Scrubbed {
    /// The part's new bytes; `None` when no event is left (the part goes).
    pub rest: Option<Vec<u8>>,
    /// Events removed.
    pub removed: usize,
}

/// A part without the events that have one of `keys`; `None` when it holds none of them.
pub fn without(bytes: bytes::Bytes, keys: &BTreeSet<String>) -> Result<Option<Scrubbed>, Error> {
    if decode(bytes.clone(), Some(keys))?.is_empty() {
        return Ok(None);
    }
    let (gone, kept): (Vec<Row>, Vec<Row>) =
        decode(bytes, None)?.into_iter().partition(|(_, k)| k.iter().any(|k| keys.contains(k)));
    let rest = if kept.is_empty() { None } else { Some(encode(&kept)?) };
    Ok(Some(Scrubbed { rest, removed: gone.len() }))
}

#[cfg(test)]
mod tests;

/// Decodes a JSON object keeping only the members named in a sorted list.
struct Picked<'w>(&'w [String]);

impl<'de> serde::de::DeserializeSeed<'de> for Picked<'_> {
    type Value = serde_json::Map<String, serde_json::Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Picked<'_> {
    type Value = serde_json::Map<String, serde_json::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of properties")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(PropertyName(name)) = map.next_key()? {
            if self.0.binary_search_by(|w| w.as_str().cmp(&name)).is_ok() {
                out.insert(name.into_owned(), map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// A member's name, borrowed from the text unless escaped.
struct PropertyName<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for PropertyName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> serde::de::Visitor<'de> for Name {
            type Value = PropertyName<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a property name")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(PropertyName(std::borrow::Cow::Borrowed(name)))
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
                Ok(PropertyName(std::borrow::Cow::Owned(name.to_string())))
            }
        }
        deserializer.deserialize_str(Name)
    }
}
