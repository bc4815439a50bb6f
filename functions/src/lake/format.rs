//! The parts' format: the Arrow schema, writing rows as Parquet with bloom filters, reading them back.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::ChunkReader;
use parquet::schema::types::ColumnPath;
use shared::event::CanonicalEvent;

use super::{BLOOM, ROW_GROUP, Row};
use crate::Error;

pub(super) fn schema() -> Arc<Schema> {
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

/// The parts' columns as a Glue Data Catalog (Hive) table declares them: (name, type), in order.
pub fn catalog_columns() -> Vec<(String, String)> {
    fn hive(data_type: &DataType) -> String {
        match data_type {
            DataType::Utf8 => "string".into(),
            DataType::Timestamp(..) => "timestamp".into(),
            DataType::List(item) => format!("array<{}>", hive(item.data_type())),
            other => format!("unsupported {other}"),
        }
    }
    schema().fields().iter().map(|f| (f.name().clone(), hive(f.data_type()))).collect()
}

pub(super) fn parquet_error(what: &'static str) -> impl Fn(parquet::errors::ParquetError) -> Error {
    move |e| Error::Corrupt(format!("lake {what}: {e}"))
}

pub(super) fn arrow_error(what: &'static str) -> impl Fn(arrow_schema::ArrowError) -> Error {
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

pub(super) fn batch(schema: &Arc<Schema>, rows: &[Row]) -> Result<RecordBatch, Error> {
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
pub(super) const KEYS_LEAF: &str = "identity_keys.list.item";

pub(super) fn open(bytes: bytes::Bytes) -> Result<ParquetRecordBatchReaderBuilder<bytes::Bytes>, Error> {
    ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(parquet_error("part"))
}

/// Reads `columns` of the row groups `groups` (all when `None`) of a part.
pub(super) fn read<R: ChunkReader + 'static>(
    builder: ParquetRecordBatchReaderBuilder<R>,
    groups: Option<Vec<usize>>,
    columns: &[&str],
) -> Result<Vec<RecordBatch>, Error> {
    batches(builder, groups, columns)?.collect::<Result<Vec<_>, _>>().map_err(arrow_error("part"))
}

/// [`read`], a row group at a time.
pub(super) fn batches<R: ChunkReader + 'static>(
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

pub(super) fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray, Error> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| Error::Corrupt(format!("lake part: {name} is not a text column")))
}

pub(super) fn times<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a TimestampMillisecondArray, Error> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
        .ok_or_else(|| Error::Corrupt(format!("lake part: {name} is not a timestamp column")))
}

pub(super) fn key_lists(batch: &RecordBatch) -> Result<Vec<Vec<String>>, Error> {
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
pub(super) fn groups_for(
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
pub(super) fn events_of<R: ChunkReader + 'static>(
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
