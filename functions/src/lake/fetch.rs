//! Reading a part by ranges: its footer and bloom filters first, then only the row groups that can hold the
//! keys asked for.

use std::collections::BTreeSet;
use std::sync::Arc;

use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::ChunkReader;

use super::Row;
use super::format::{KEYS_LEAF, events_of, parquet_error};
use crate::Error;
use crate::storage::{ObjectMeta, ObjectStore};

/// Byte ranges of a part fetched from the store, served to the Parquet reader (which asks only for what
/// was fetched for it: the footer's row groups, their bloom filters, the column chunks read).
#[derive(Debug, Clone)]
pub(super) struct Fetched {
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
pub(super) async fn fetch<S: ObjectStore>(
    store: &S,
    key: &str,
    start: u64,
    len: u64,
) -> Result<Option<bytes::Bytes>, Error> {
    Ok(store.get_range(key, start, len).await?.map(bytes::Bytes::from))
}

/// A part's footer (its metadata), read by range; `None` when the part is gone.
pub(super) async fn footer<S: ObjectStore>(store: &S, part: &ObjectMeta) -> Result<Option<ParquetMetaData>, Error> {
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
