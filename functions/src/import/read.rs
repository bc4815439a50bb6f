//! Reading a file's rows: CSV (with a header), NDJSON (one object per line) and Parquet, each also gzipped.
//! Rows come in chunks, each cell as JSON (text in a CSV); a row that cannot be read (a wrong number of fields,
//! invalid UTF-8, a line that is not a JSON object) is that row's problem, named by its number, and the rest go
//! on. A file that cannot be read at all (empty, a header alone, not Parquet) is an error before any row.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::{Map, Value};
use shared::Invalid;
use shared::time::UtcTime;

/// One row: its number (the line in a CSV or NDJSON file, from 1; the row in a Parquet file, from 1) and its
/// cells by column position, or why it cannot be read.
pub type Row = (u64, Result<Vec<Option<Value>>, String>);

/// The formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated, with a header line.
    Csv,
    /// One JSON object per line (`.ndjson`, `.jsonl`).
    Ndjson,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// The format of a file by its name (`.csv`, `.ndjson`, `.jsonl`, `.parquet`, each also with `.gz`), and
    /// whether it is gzipped.
    pub fn of(path: &Path) -> Result<(Format, bool), Invalid> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_ascii_lowercase();
        let (stem, gz) = match name.strip_suffix(".gz") {
            Some(stem) => (stem, true),
            None => (name.as_str(), false),
        };
        let format = match stem.rsplit('.').next() {
            Some("csv") => Format::Csv,
            Some("ndjson" | "jsonl") => Format::Ndjson,
            Some("parquet") => Format::Parquet,
            _ => {
                return Err(Invalid(format!(
                    "{}: not a file imports read (.csv, .ndjson, .jsonl or .parquet, each also .gz)",
                    path.display()
                )));
            }
        };
        Ok((format, gz))
    }
}

/// A file's rows.
pub struct Rows {
    columns: Vec<String>,
    /// The columns decoded (by position); the others are left empty.
    used: Vec<bool>,
    source: Source,
    /// Bytes of the file read so far (compressed bytes for a gzipped file).
    read: Arc<AtomicU64>,
}

enum Source {
    Csv { reader: csv::Reader<Box<dyn Read + Send>>, record: csv::ByteRecord, line: u64 },
    Ndjson { lines: Box<dyn BufRead + Send>, peeked: std::collections::VecDeque<(u64, Vec<u8>)>, line: u64 },
    Parquet { batches: ParquetRecordBatchReader, batch: Option<RecordBatch>, at: usize, row: u64 },
}

/// Lines of an NDJSON file read to learn its columns (keys may differ from line to line).
const NDJSON_PEEK: usize = 1000;

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn io(path: &Path, e: std::io::Error) -> Invalid {
    Invalid(format!("{}: {e}", path.display()))
}

impl Rows {
    /// Opens `path` as `format`; the columns are read (CSV header, NDJSON keys, Parquet schema).
    pub fn open(path: &Path, format: Format, gz: bool) -> Result<Self, Invalid> {
        let file = File::open(path).map_err(|e| io(path, e))?;
        if file.metadata().map_err(|e| io(path, e))?.len() == 0 {
            return Err(Invalid(format!("{}: the file is empty", path.display())));
        }
        let read = Arc::new(AtomicU64::new(0));
        let counted = Counting { inner: file, read: read.clone() };
        let plain: Box<dyn Read + Send> = match gz {
            true => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, counted))),
            false => Box::new(counted),
        };
        match format {
            Format::Csv => Self::csv(path, plain, read),
            Format::Ndjson => Self::ndjson(path, plain, read),
            Format::Parquet => Self::parquet(path, plain, gz, read),
        }
    }

    fn csv(path: &Path, plain: Box<dyn Read + Send>, read: Arc<AtomicU64>) -> Result<Self, Invalid> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).buffer_capacity(1 << 20).from_reader(plain);
        let header = reader.byte_headers().map_err(|e| Invalid(format!("{}: {e}", path.display())))?.clone();
        let mut columns = Vec::with_capacity(header.len());
        for (i, name) in header.iter().enumerate() {
            let name = std::str::from_utf8(name)
                .map_err(|_| Invalid(format!("{}: the header's column {} is not UTF-8", path.display(), i + 1)))?;
            // A byte-order mark some spreadsheets write before the first name.
            columns.push(name.trim_start_matches('\u{feff}').trim().to_string());
        }
        if columns.iter().all(String::is_empty) {
            return Err(Invalid(format!("{}: the first line has no column names", path.display())));
        }
        Ok(Self {
            columns,
            used: Vec::new(),
            source: Source::Csv { reader, record: csv::ByteRecord::new(), line: 1 },
            read,
        })
    }

    fn ndjson(path: &Path, plain: Box<dyn Read + Send>, read: Arc<AtomicU64>) -> Result<Self, Invalid> {
        let mut lines: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 20, plain));
        let mut peeked = std::collections::VecDeque::new();
        let mut columns: Vec<String> = Vec::new();
        let mut line = 0;
        while peeked.len() < NDJSON_PEEK {
            let mut bytes = Vec::new();
            if lines.read_until(b'\n', &mut bytes).map_err(|e| io(path, e))? == 0 {
                break;
            }
            line += 1;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&bytes) {
                for key in object.keys() {
                    if !columns.contains(key) {
                        columns.push(key.clone());
                    }
                }
            }
            peeked.push_back((line, bytes));
        }
        if peeked.is_empty() {
            return Err(Invalid(format!("{}: the file has no lines", path.display())));
        }
        if columns.is_empty() {
            return Err(Invalid(format!(
                "{}: none of the first {} lines is a JSON object",
                path.display(),
                peeked.len()
            )));
        }
        Ok(Self { columns, used: Vec::new(), source: Source::Ndjson { lines, peeked, line }, read })
    }

    fn parquet(path: &Path, mut plain: Box<dyn Read + Send>, gz: bool, read: Arc<AtomicU64>) -> Result<Self, Invalid> {
        let not_parquet =
            |e: parquet::errors::ParquetError| Invalid(format!("{}: not a Parquet file ({e})", path.display()));
        // Parquet is read from its footer: a gzipped file is inflated in memory first.
        let (columns, batches) = if gz {
            let mut bytes = Vec::new();
            plain.read_to_end(&mut bytes).map_err(|e| io(path, e))?;
            if bytes.is_empty() {
                return Err(Invalid(format!("{}: the file is empty", path.display())));
            }
            let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).map_err(not_parquet)?;
            let columns = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
            (columns, builder.with_batch_size(8192).build().map_err(not_parquet)?)
        } else {
            let file = File::open(path).map_err(|e| io(path, e))?;
            read.store(file.metadata().map_err(|e| io(path, e))?.len(), Ordering::Relaxed);
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(not_parquet)?;
            let columns = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
            (columns, builder.with_batch_size(8192).build().map_err(not_parquet)?)
        };
        Ok(Self { columns, used: Vec::new(), source: Source::Parquet { batches, batch: None, at: 0, row: 0 }, read })
    }

    /// Decodes only the columns at these positions (the ones a mapping reads); the others are left empty.
    pub fn only(&mut self, positions: Vec<usize>) {
        self.used = (0..self.columns.len()).map(|i| positions.contains(&i)).collect();
    }

    /// The file's columns.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Bytes of the file read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Up to `n` more rows (none at the end). An error is the file's (it stops being readable).
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<Row>, Invalid> {
        let width = self.columns.len();
        let mut out = Vec::with_capacity(n);
        match &mut self.source {
            Source::Csv { reader, record, line } => {
                while out.len() < n {
                    match reader.read_byte_record(record) {
                        Ok(false) => break,
                        Ok(true) => {
                            *line = record.position().map_or(*line + 1, |p| p.line());
                            out.push((*line, csv_row(record, width, &self.used)));
                        }
                        Err(e) => {
                            let at = e.position().map_or(*line + 1, |p| p.line());
                            *line = at;
                            match e.kind() {
                                csv::ErrorKind::Io(_) => return Err(Invalid(format!("line {at}: {e}"))),
                                _ => out.push((at, Err(e.to_string()))),
                            }
                        }
                    }
                }
            }
            Source::Ndjson { lines, peeked, line } => {
                while out.len() < n {
                    let (number, bytes) = match peeked.pop_front() {
                        Some(next) => next,
                        None => {
                            let mut bytes = Vec::new();
                            let read = lines.read_until(b'\n', &mut bytes).map_err(|e| Invalid(e.to_string()))?;
                            if read == 0 {
                                break;
                            }
                            *line += 1;
                            if bytes.iter().all(u8::is_ascii_whitespace) {
                                continue;
                            }
                            (*line, bytes)
                        }
                    };
                    out.push((number, ndjson_row(&bytes, &self.columns, &self.used)));
                }
            }
            Source::Parquet { batches, batch, at, row } => {
                while out.len() < n {
                    let current = match batch {
                        Some(current) if *at < current.num_rows() => current,
                        _ => match batches.next() {
                            Some(Ok(next)) => {
                                *batch = Some(next);
                                *at = 0;
                                continue;
                            }
                            Some(Err(e)) => return Err(Invalid(format!("row {}: {e}", *row + 1))),
                            None => break,
                        },
                    };
                    *row += 1;
                    let used = &self.used;
                    let cells: Result<Vec<_>, String> = (0..current.num_columns())
                        .map(|c| match used.get(c) {
                            Some(false) => Ok(None),
                            _ => parquet_cell(current.column(c).as_ref(), *at),
                        })
                        .collect();
                    out.push((*row, cells));
                    *at += 1;
                }
            }
        }
        Ok(out)
    }
}

fn csv_row(record: &csv::ByteRecord, width: usize, used: &[bool]) -> Result<Vec<Option<Value>>, String> {
    if record.len() < width && record.iter().any(|field| field.contains(&b'\n')) {
        return Err(format!(
            "{} fields; the header has {width}: a quote opened on this line is not closed, so the lines after it \
             ran into one field",
            record.len()
        ));
    }
    if record.len() != width {
        return Err(format!("{} fields; the header has {width}", record.len()));
    }
    record
        .iter()
        .enumerate()
        .map(|(i, field)| match std::str::from_utf8(field) {
            _ if used.get(i) == Some(&false) => Ok(None),
            Ok("") => Ok(None),
            Ok(text) => Ok(Some(Value::String(text.to_string()))),
            Err(_) => Err(format!("field {} is not UTF-8", i + 1)),
        })
        .collect()
}

fn ndjson_row(bytes: &[u8], columns: &[String], used: &[bool]) -> Result<Vec<Option<Value>>, String> {
    let mut object: Map<String, Value> = match serde_json::from_slice(bytes) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err("not a JSON object".into()),
        Err(e) => return Err(format!("not JSON: {e}")),
    };
    Ok(columns
        .iter()
        .enumerate()
        .map(|(i, c)| if used.get(i) == Some(&false) { None } else { object.remove(c) })
        .collect())
}

/// One cell of a Parquet column as JSON: text, numbers, booleans, dates and times (ISO 8601), decimals as
/// numbers; other types as their text.
fn parquet_cell(array: &dyn Array, i: usize) -> Result<Option<Value>, String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    if array.is_null(i) {
        return Ok(None);
    }
    let number = |x: f64| serde_json::Number::from_f64(x).map(Value::Number);
    let time = |ms: i64| UtcTime::from_unix_millis(ms).map(|t| Value::String(t.to_string()));
    Ok(match array.data_type() {
        DataType::Utf8 => Some(Value::String(array.as_string::<i32>().value(i).to_string())),
        DataType::LargeUtf8 => Some(Value::String(array.as_string::<i64>().value(i).to_string())),
        DataType::Utf8View => Some(Value::String(array.as_string_view().value(i).to_string())),
        DataType::Boolean => Some(Value::Bool(array.as_boolean().value(i))),
        DataType::Int8 => Some(array.as_primitive::<Int8Type>().value(i).into()),
        DataType::Int16 => Some(array.as_primitive::<Int16Type>().value(i).into()),
        DataType::Int32 => Some(array.as_primitive::<Int32Type>().value(i).into()),
        DataType::Int64 => Some(array.as_primitive::<Int64Type>().value(i).into()),
        DataType::UInt8 => Some(array.as_primitive::<UInt8Type>().value(i).into()),
        DataType::UInt16 => Some(array.as_primitive::<UInt16Type>().value(i).into()),
        DataType::UInt32 => Some(array.as_primitive::<UInt32Type>().value(i).into()),
        DataType::UInt64 => Some(array.as_primitive::<UInt64Type>().value(i).into()),
        DataType::Float32 => number(f64::from(array.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => number(array.as_primitive::<Float64Type>().value(i)),
        DataType::Decimal128(_, scale) => {
            let raw = array.as_primitive::<Decimal128Type>().value(i);
            number(raw as f64 / 10f64.powi(i32::from(*scale)))
        }
        DataType::Date32 => time(i64::from(array.as_primitive::<Date32Type>().value(i)) * 86_400_000)
            .map(|v| Value::String(v.as_str().unwrap_or_default()[..10].to_string())),
        DataType::Timestamp(unit, _) => {
            let (raw, per_ms) = match unit {
                TimeUnit::Second => (array.as_primitive::<TimestampSecondType>().value(i), -1000),
                TimeUnit::Millisecond => (array.as_primitive::<TimestampMillisecondType>().value(i), 1),
                TimeUnit::Microsecond => (array.as_primitive::<TimestampMicrosecondType>().value(i), 1000),
                TimeUnit::Nanosecond => (array.as_primitive::<TimestampNanosecondType>().value(i), 1_000_000),
            };
            time(if per_ms < 0 { raw.saturating_mul(1000) } else { raw / per_ms })
        }
        // Dictionary-encoded (how Parquet writers store repeated text): the value its key points at.
        DataType::Dictionary(key, _) => {
            let dictionary = array.as_any_dictionary();
            let keys = dictionary.keys();
            let at = match key.as_ref() {
                DataType::Int8 => usize::try_from(keys.as_primitive::<Int8Type>().value(i)).ok(),
                DataType::Int16 => usize::try_from(keys.as_primitive::<Int16Type>().value(i)).ok(),
                DataType::Int32 => usize::try_from(keys.as_primitive::<Int32Type>().value(i)).ok(),
                DataType::Int64 => usize::try_from(keys.as_primitive::<Int64Type>().value(i)).ok(),
                DataType::UInt8 => Some(usize::from(keys.as_primitive::<UInt8Type>().value(i))),
                DataType::UInt16 => Some(usize::from(keys.as_primitive::<UInt16Type>().value(i))),
                DataType::UInt32 => usize::try_from(keys.as_primitive::<UInt32Type>().value(i)).ok(),
                DataType::UInt64 => usize::try_from(keys.as_primitive::<UInt64Type>().value(i)).ok(),
                other => return Err(format!("a dictionary keyed by {other}, which imports do not read")),
            };
            let values = dictionary.values();
            match at {
                Some(at) if at < values.len() => parquet_cell(values.as_ref(), at)?,
                _ => return Err("a dictionary key past its values".into()),
            }
        }
        // Nested columns as JSON arrays and objects.
        DataType::List(_) => Some(list(array.as_list::<i32>().value(i).as_ref())?),
        DataType::LargeList(_) => Some(list(array.as_list::<i64>().value(i).as_ref())?),
        DataType::Struct(fields) => {
            let row = array.as_struct();
            let mut object = Map::new();
            for (field, column) in fields.iter().zip(row.columns()) {
                if let Some(value) = parquet_cell(column.as_ref(), i)? {
                    object.insert(field.name().clone(), value);
                }
            }
            Some(Value::Object(object))
        }
        other => return Err(format!("a {other} cell, which imports do not read")),
    })
}

/// A list cell's items as a JSON array (a null item as `null`).
fn list(items: &dyn Array) -> Result<Value, String> {
    (0..items.len()).map(|j| parquet_cell(items, j).map(|v| v.unwrap_or(Value::Null))).collect::<Result<_, _>>()
}
