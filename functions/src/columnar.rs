//! Parquet tables for the columnar full recompute, and the recompute over them in parallel.
//!
//! Two tables, cut into the same row groups: the profile table (a `profile` column and `traits.NAME`
//! columns; row group `g` holds a run of consecutive profiles) and the event table (see
//! [`shared::tags::TagSet::evaluate_columns`]: `profile`, `at`, `type`, `event`, `properties.NAME`; row group
//! `g` holds exactly the events of the profiles of the profile table's row group `g`, sorted by profile,
//! time and messageId). A row group is then a self-contained chunk: threads take chunks one at a time,
//! read only the columns the tags need, and evaluate them without sharing anything.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::ChunkReader;
use shared::tags::{Column, TagColumns, TagSet};

use crate::Error;
use crate::predict::Fitted;

fn parquet_error(what: &str) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
    move |e| Error::Corrupt(format!("{what}: {e}"))
}

/// Writes `batches` as one Parquet table, one row group per batch (snappy-compressed).
pub fn write_table<W: std::io::Write + Send>(
    out: W,
    schema: Arc<Schema>,
    batches: impl IntoIterator<Item = RecordBatch>,
) -> Result<(), Error> {
    let properties = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(usize::MAX))
        .build();
    if schema.fields().is_empty() {
        // Parquet keeps no row count without a column.
        return Err(Error::Internal("a table needs at least one column".into()));
    }
    let mut writer = ArrowWriter::try_new(out, schema, Some(properties)).map_err(parquet_error("parquet writer"))?;
    for batch in batches {
        writer.write(&batch).map_err(parquet_error("writing a row group"))?;
        writer.flush().map_err(parquet_error("closing a row group"))?;
    }
    writer.close().map_err(parquet_error("closing the table"))?;
    Ok(())
}

/// One chunk's tag values: the first profile of the chunk, and the values.
pub type Chunk = (u32, TagColumns);

/// Where a table's bytes are.
#[derive(Debug, Clone)]
pub enum Table {
    /// A Parquet file.
    File(std::path::PathBuf),
    /// A Parquet object in memory (as read from the store).
    Bytes(bytes::Bytes),
}

impl Table {
    fn open(&self) -> Result<Reader, Error> {
        Ok(match self {
            Table::File(path) => Reader::File(Arc::new(
                std::fs::File::open(path).map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?,
            )),
            Table::Bytes(bytes) => Reader::Bytes(bytes.clone()),
        })
    }
}

/// A table open for reading; clones share it, and threads read it with positioned reads (no shared cursor).
#[derive(Debug, Clone)]
enum Reader {
    File(Arc<std::fs::File>),
    Bytes(bytes::Bytes),
}

impl parquet::file::reader::Length for Reader {
    fn len(&self) -> u64 {
        match self {
            Reader::File(file) => file.metadata().map(|m| m.len()).unwrap_or(0),
            Reader::Bytes(bytes) => bytes.len() as u64,
        }
    }
}

/// A reader from a position in a file, by positioned reads.
struct ReadAt {
    file: Arc<std::fs::File>,
    at: u64,
}

impl std::io::Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl ChunkReader for Reader {
    type T = Box<dyn std::io::Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            Reader::File(file) => Box::new(std::io::BufReader::new(ReadAt { file: file.clone(), at: start })),
            Reader::Bytes(bytes) => {
                Box::new(std::io::Cursor::new(bytes.slice(start.min(bytes.len() as u64) as usize..)))
            }
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        match self {
            Reader::File(file) => {
                use std::os::unix::fs::FileExt as _;
                let mut buffer = vec![0; length];
                file.read_exact_at(&mut buffer, start)?;
                Ok(buffer.into())
            }
            Reader::Bytes(bytes) => {
                let start = start as usize;
                if start + length > bytes.len() {
                    return Err(parquet::errors::ParquetError::EOF(format!("{length} bytes at {start}: past the end")));
                }
                Ok(bytes.slice(start..start + length))
            }
        }
    }
}

/// Every computed tag's values for every profile of the two tables, at `now` (ms), on `threads` threads,
/// with what fitting the population tags' models gave. Chunks come back in profile order.
pub fn recompute(
    tags: &TagSet,
    profiles: Table,
    events: Table,
    now: i64,
    threads: usize,
) -> Result<(Vec<Chunk>, BTreeMap<String, Fitted>), Error> {
    let (profiles, events) = (profiles.open()?, events.open()?);
    let options = ArrowReaderOptions::new();
    let profile_meta = ArrowReaderMetadata::load(&profiles, options.clone()).map_err(parquet_error("profile table"))?;
    let event_meta = ArrowReaderMetadata::load(&events, options).map_err(parquet_error("event table"))?;
    let groups = profile_meta.metadata().num_row_groups();
    if event_meta.metadata().num_row_groups() != groups {
        return Err(Error::Corrupt(format!(
            "the profile table has {groups} row groups and the event table {}: they must be cut alike",
            event_meta.metadata().num_row_groups()
        )));
    }
    // The first profile of each chunk: profiles are numbered by their row in the profile table.
    let mut firsts = Vec::with_capacity(groups);
    let mut next = 0u64;
    for g in 0..groups {
        firsts.push(u32::try_from(next).map_err(|_| Error::Corrupt("more than 2^32 profiles".into()))?);
        next += profile_meta.metadata().row_group(g).num_rows() as u64;
    }
    let mut trait_names: Vec<String> = vec!["profile".into()];
    trait_names.extend(tags.traits().iter().map(|t| format!("traits.{t}")));
    let mut event_names: Vec<String> = ["profile", "at", "type", "event"].map(String::from).to_vec();
    event_names.extend(tags.properties().iter().map(|p| format!("properties.{p}")));

    let read =
        |reader: &Reader, meta: &ArrowReaderMetadata, group: usize, names: &[String]| -> Result<RecordBatch, Error> {
            let schema = meta.schema();
            let roots: Vec<usize> = names.iter().filter_map(|n| schema.index_of(n).ok()).collect();
            let mask = ProjectionMask::roots(meta.parquet_schema(), roots);
            let rows = meta.metadata().row_group(group).num_rows() as usize;
            let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(reader.clone(), meta.clone())
                .with_row_groups(vec![group])
                .with_projection(mask)
                .with_batch_size(rows.max(1));
            let reader = builder.build().map_err(parquet_error("reading a row group"))?;
            let batches: Vec<RecordBatch> =
                reader.collect::<Result<_, _>>().map_err(|e| Error::Corrupt(format!("reading a row group: {e}")))?;
            match batches.len() {
                1 => Ok(batches.into_iter().next().expect("one batch")),
                _ => one_batch(&batches, meta, names, rows),
            }
        };

    // First pass, for population tags (propensity, RFM, affinity) only: gather and fit their models.
    let mut trainer = crate::predict::Trainer::new(tags, now);
    if trainer.needed() {
        for (group, &first) in firsts.iter().enumerate() {
            let rows = profile_meta.metadata().row_group(group).num_rows() as usize;
            trainer.observe(first, rows, &read(&events, &event_meta, group, &event_names)?)?;
        }
    }
    let (population, fitted) = trainer.finish();

    let next_group = AtomicUsize::new(0);
    let results: Vec<Result<Vec<(usize, Chunk)>, Error>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let group = next_group.fetch_add(1, Ordering::Relaxed);
                        if group >= groups {
                            return Ok(done);
                        }
                        let traits = read(&profiles, &profile_meta, group, &trait_names)?;
                        let chunk = read(&events, &event_meta, group, &event_names)?;
                        let values = tags
                            .evaluate_columns_with(&traits, firsts[group], &chunk, now, &population)
                            .map_err(|e| Error::Corrupt(format!("row group {group}: {e}")))?;
                        done.push((group, (firsts[group], values)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(Error::Machine("a worker panicked".into()))))
            .collect()
    });
    let mut chunks = Vec::with_capacity(groups);
    for result in results {
        chunks.extend(result?);
    }
    chunks.sort_by_key(|(group, _)| *group);
    Ok((chunks.into_iter().map(|(_, chunk)| chunk).collect(), fitted))
}

/// The one batch of a row group that did not come back as one: none for an empty row group; more is an error.
fn one_batch(
    batches: &[RecordBatch],
    meta: &ArrowReaderMetadata,
    names: &[String],
    rows: usize,
) -> Result<RecordBatch, Error> {
    let Some(first) = batches.first() else {
        let fields: Vec<Field> = names.iter().filter_map(|n| meta.schema().field_with_name(n).ok().cloned()).collect();
        let schema = Arc::new(Schema::new(fields));
        let empty = RecordBatch::new_empty(schema);
        return if rows == 0 { Ok(empty) } else { Err(Error::Corrupt("a row group read back empty".into())) };
    };
    Err(Error::Corrupt(format!(
        "a row group of {rows} rows read back in {} batches of {} rows; expected one",
        batches.len(),
        first.num_rows()
    )))
}

/// The tag values as one Arrow table: a `profile` column, then a column per tag (whole numbers Int64,
/// numbers Float64, strings Utf8, booleans Boolean, anything else JSON text).
pub fn results_batch(chunk: &Chunk) -> RecordBatch {
    use arrow_array::{BooleanArray, Float64Array, Int64Array, StringArray, UInt32Array};
    let (first, values) = chunk;
    let mut fields = vec![Field::new("profile", arrow_schema::DataType::UInt32, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from_iter_values(*first..*first + values.rows as u32))];
    for (id, column) in &values.columns {
        let rows = 0..values.rows;
        let array: ArrayRef = match column {
            Column::Numbers { integer: true, .. } => {
                Arc::new(rows.map(|r| column.value(r).as_i64()).collect::<Int64Array>())
            }
            Column::Numbers { .. } => Arc::new(rows.map(|r| column.value(r).as_f64()).collect::<Float64Array>()),
            Column::Coded { entries, .. } if entries.iter().all(|e| e.is_string()) => {
                Arc::new(rows.map(|r| column.value(r).as_str().map(str::to_string)).collect::<StringArray>())
            }
            Column::Coded { entries, .. } if entries.iter().all(|e| e.is_boolean()) => {
                Arc::new(rows.map(|r| column.value(r).as_bool()).collect::<BooleanArray>())
            }
            Column::Coded { .. } => Arc::new(
                rows.map(|r| Some(column.value(r)).filter(|v| !v.is_null()).map(|v| v.to_string()))
                    .collect::<StringArray>(),
            ),
        };
        fields.push(Field::new(id, array.data_type().clone(), true));
        columns.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match their fields")
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};
    use shared::tags::{Catalog, EventView, TagDefinition, event_table, profile_table};

    use super::*;

    const NOW: i64 = 1_795_000_000_000;

    fn tags() -> TagSet {
        let defs: Vec<TagDefinition> = serde_json::from_value(json!([
            {"id": "orders", "status": "active", "kind": "statistical", "filter": {"events": ["Order"]},
             "aggregate": {"op": "count"}},
            {"id": "spend_1d", "status": "active", "kind": "statistical", "window": {"lastDays": 1},
             "aggregate": {"op": "sum", "property": "revenue"}},
            {"id": "top", "status": "active", "kind": "statistical",
             "aggregate": {"op": "most_frequent", "property": "category"}},
            {"id": "vip", "status": "active", "kind": "rule",
             "when": {"and": [{"field": "tag:orders", "op": "gte", "value": 2}, {"field": "trait:plan", "op": "eq", "value": "pro"}]}}
        ]))
        .unwrap();
        TagSet::check(&defs, &Catalog::default()).unwrap()
    }

    #[test]
    fn chunks_written_as_row_groups_compute_on_threads_as_the_reference_does() {
        let tags = tags();
        // 3 chunks of 4 profiles; profile p has p % 5 events.
        let traits: Vec<Map<String, Value>> = (0..12)
            .map(|p| json!({"plan": if p % 3 == 0 { "pro" } else { "free" }}).as_object().unwrap().clone())
            .collect();
        let properties: Vec<Map<String, Value>> = (0..5)
            .map(|i| {
                json!({"revenue": i as f64 * 2.5, "category": if i % 2 == 0 { "a" } else { "b" }})
                    .as_object()
                    .unwrap()
                    .clone()
            })
            .collect();
        let ids: Vec<String> = (0..60).map(|i| format!("m{i:02}")).collect();
        let views: Vec<(u32, EventView<'_>)> = (0..12u32)
            .flat_map(|p| (0..(p as usize % 5)).map(move |i| (p, i)))
            .map(|(p, i)| {
                let view = EventView {
                    kind: "track",
                    event: Some(if i % 2 == 0 { "Order" } else { "Viewed" }),
                    at: NOW - (i as i64) * 20 * 3_600_000,
                    id: &ids[p as usize * 5 + i],
                    properties: &properties[i],
                };
                (p, view)
            })
            .collect();
        let mut profile_buf = Vec::new();
        let mut event_buf = Vec::new();
        let chunks: Vec<(RecordBatch, RecordBatch)> = (0..3u32)
            .map(|c| {
                let own: Vec<&Map<String, Value>> = traits[c as usize * 4..c as usize * 4 + 4].iter().collect();
                let events = views.iter().filter(|(p, _)| p / 4 == c).cloned().collect();
                (profile_table(c * 4, &own, &tags.traits()), event_table(events, &tags.properties()))
            })
            .collect();
        write_table(&mut profile_buf, chunks[0].0.schema(), chunks.iter().map(|c| c.0.clone())).unwrap();
        write_table(&mut event_buf, chunks[0].1.schema(), chunks.iter().map(|c| c.1.clone())).unwrap();

        let (results, models) =
            recompute(&tags, Table::Bytes(profile_buf.clone().into()), Table::Bytes(event_buf.into()), NOW, 2).unwrap();
        assert!(models.is_empty(), "no population tags, no models");
        assert_eq!(results.iter().map(|(first, _)| *first).collect::<Vec<_>>(), vec![0, 4, 8]);
        for (first, values) in &results {
            for row in 0..values.rows {
                let p = first + row as u32;
                let own: Vec<EventView<'_>> = views.iter().filter(|(q, _)| *q == p).map(|(_, e)| *e).collect();
                assert_eq!(values.row(row), tags.evaluate(&traits[p as usize], &own, NOW), "profile {p}");
            }
        }
        let batch = results_batch(&results[2]);
        assert_eq!(batch.num_rows(), 4);
        assert_eq!(batch.schema().field(4).data_type(), &arrow_schema::DataType::Boolean);

        // Tables cut differently are refused, not misread.
        let mut short = Vec::new();
        write_table(&mut short, chunks[0].1.schema(), chunks.iter().take(2).map(|c| c.1.clone())).unwrap();
        let error = recompute(&tags, Table::Bytes(profile_buf.into()), Table::Bytes(short.into()), NOW, 2).unwrap_err();
        assert!(error.to_string().contains("must be cut alike"), "{error}");
    }

    #[test]
    fn population_models_are_fitted_in_a_first_pass_over_the_row_groups() {
        let defs: Vec<TagDefinition> = serde_json::from_value(json!([
            {"id": "rfm", "status": "active", "kind": "rfm", "output": "frequency",
             "purchase": {"events": ["Order"]}, "revenue": "revenue"}
        ]))
        .unwrap();
        let tags = TagSet::check(&defs, &Catalog::default()).unwrap();
        let order = json!({"revenue": 10.0}).as_object().cloned().unwrap();
        let ids: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
        // Profile p (of 10, in two row groups of 5) has p % 4 orders.
        let rows: Vec<(u32, EventView<'_>)> = (0..10u32)
            .flat_map(|p| (0..p % 4).map(move |i| (p, i)))
            .enumerate()
            .map(|(k, (p, i))| {
                let at = NOW - i64::from(i + 1) * 86_400_000;
                (p, EventView { kind: "track", event: Some("Order"), at, id: &ids[k], properties: &order })
            })
            .collect();
        let empty = Map::new();
        let (mut profile_buf, mut event_buf) = (Vec::new(), Vec::new());
        let groups: Vec<(RecordBatch, RecordBatch)> = [0u32, 5]
            .iter()
            .map(|&first| {
                let own = rows.iter().filter(|(p, _)| (first..first + 5).contains(p)).cloned().collect();
                (profile_table(first, &[&empty; 5], &[]), event_table(own, &tags.properties()))
            })
            .collect();
        write_table(&mut profile_buf, groups[0].0.schema(), groups.iter().map(|g| g.0.clone())).unwrap();
        write_table(&mut event_buf, groups[0].1.schema(), groups.iter().map(|g| g.1.clone())).unwrap();
        let (chunks, models) =
            recompute(&tags, Table::Bytes(profile_buf.into()), Table::Bytes(event_buf.into()), NOW, 2).unwrap();
        // Buyers: profiles 1, 2, 3, 5, 6, 7, 9 (1–3 orders); frequency quintiles over them.
        assert_eq!(models["rfm"], Fitted::Rfm { profiles: 7 });
        let values: Vec<Value> = chunks
            .iter()
            .flat_map(|(_, c)| (0..c.rows).map(|r| c.row(r).get("rfm").cloned().unwrap_or(Value::Null)))
            .collect();
        // Orders per profile: 0 1 2 3 0 1 2 3 0 1; the thresholds of [1,1,1,2,2,3,3] are 1, 1, 2, 3, so 1 order
        // passes none (score 1), 2 pass two (3), 3 pass three (4).
        assert_eq!(
            values,
            vec![
                Value::Null,
                json!(1),
                json!(3),
                json!(4),
                Value::Null,
                json!(1),
                json!(3),
                json!(4),
                Value::Null,
                json!(1)
            ]
        );
    }
}
