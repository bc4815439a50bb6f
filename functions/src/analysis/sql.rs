//! Read-only SQL over the analysis tables, with limits on rows, time and memory.

use std::time::Duration;

use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::{SQLOptions, SessionContext};
use serde_json::{Value, json};

use crate::Error;

/// Limits of one query.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rows returned at most (the answer says when there were more).
    pub rows: usize,
    /// Time the query may take.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { rows: 10_000, time: Duration::from_secs(30) }
    }
}

/// Rows a query may ask for at most.
pub const MAX_ROWS: usize = 100_000;

/// A query's answer: its columns (name and type) and rows (JSON values: numbers, strings, booleans, null;
/// times as ISO 8601 UTC).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// The columns, in order: `{"name", "type"}`.
    pub columns: Vec<Value>,
    /// The rows, each an array in column order.
    pub rows: Vec<Vec<Value>>,
    /// Whether the query had more rows than the limit (only the first ones are here).
    pub truncated: bool,
}

/// The largest answer a query may give, in memory before it is JSON.
pub const MAX_ANSWER_BYTES: usize = 256 << 20;

/// Runs `query` (one `SELECT` or `WITH … SELECT`, `EXPLAIN` too) on `ctx` within `limits`. Anything that would
/// write or change the session (DDL, `INSERT`, `COPY`, `SET`) is refused, as is SQL that does not parse or
/// names what does not exist: [`Error::Invalid`] with DataFusion's message.
pub(super) async fn run(ctx: &SessionContext, query: &str, limits: Limits) -> Result<Answer, Error> {
    if limits.rows == 0 || limits.rows > MAX_ROWS {
        return Err(Error::Invalid(format!("rows: the limit is 1 to {MAX_ROWS}, not {}", limits.rows)));
    }
    if query.trim().is_empty() {
        return Err(Error::Invalid("sql: the query is empty".into()));
    }
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let work = async {
        let frame = ctx.sql_with_options(query, options).await.map_err(invalid)?;
        let frame = frame.limit(0, Some(limits.rows + 1)).map_err(invalid)?;
        // The columns from the plan: a query without rows may give no batch to take them from.
        let schema = frame.schema().inner().clone();
        let mut stream = frame.execute_stream().await.map_err(invalid)?;
        let (mut batches, mut bytes) = (Vec::new(), 0usize);
        while let Some(batch) = futures::StreamExt::next(&mut stream).await {
            let batch = batch.map_err(invalid)?;
            // The rows' own bytes: a limit's batch is a slice sharing its table's buffers.
            bytes += batch.columns().iter().map(|c| c.to_data().get_slice_memory_size().unwrap_or(0)).sum::<usize>();
            if bytes > MAX_ANSWER_BYTES {
                return Err(Error::Invalid(format!(
                    "sql: the answer is larger than {} MiB; select fewer rows or narrower columns",
                    MAX_ANSWER_BYTES >> 20
                )));
            }
            batches.push(batch);
        }
        Ok::<_, Error>((schema, batches))
    };
    let (schema, batches) = tokio::time::timeout(limits.time, work).await.map_err(|_| {
        Error::Invalid(format!("sql: the query took longer than its limit of {} s", limits.time.as_secs_f64()))
    })??;
    answer(&schema, &batches, limits.rows)
}

fn invalid(error: datafusion::error::DataFusionError) -> Error {
    let text = error.to_string();
    let text = text.strip_prefix("Error during planning: ").unwrap_or(&text);
    Error::Invalid(format!("sql: {text}"))
}

/// The batches (of `schema`) as an [`Answer`] of at most `max` rows.
pub(super) fn answer(schema: &arrow_schema::Schema, batches: &[RecordBatch], max: usize) -> Result<Answer, Error> {
    let columns = schema.fields().iter().map(|f| json!({"name": f.name(), "type": type_name(f.data_type())})).collect();
    let mut rows = Vec::new();
    let mut truncated = false;
    'batches: for batch in batches {
        let cells: Vec<Cells<'_>> = batch.columns().iter().map(|c| Cells::of(c.as_ref())).collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            if rows.len() == max {
                truncated = true;
                break 'batches;
            }
            rows.push(cells.iter().map(|c| c.value(row)).collect());
        }
    }
    Ok(Answer { columns, rows, truncated })
}

/// What a column's type is called in answers.
fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Boolean => "boolean".into(),
        t if t.is_integer() => "integer".into(),
        t if t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) => "number".into(),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => "time".into(),
        other => other.to_string(),
    }
}

/// One column's values as JSON.
struct Cells<'a> {
    array: &'a dyn Array,
    text: ArrayFormatter<'a>,
}

impl<'a> Cells<'a> {
    fn of(array: &'a dyn Array) -> Result<Self, Error> {
        let options = FormatOptions::default().with_null("");
        let text = ArrayFormatter::try_new(array, &options).map_err(|e| Error::Internal(format!("a column: {e}")))?;
        Ok(Self { array, text })
    }

    /// A time of any unit (and any zone, or none: UTC) in ms.
    fn millis(array: &dyn Array, row: usize) -> Option<i64> {
        use arrow_array::cast::AsArray as _;
        use arrow_array::types::{
            TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
        };
        match array.data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => {
                array.as_primitive::<TimestampSecondType>().value(row).checked_mul(1000)
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                Some(array.as_primitive::<TimestampMillisecondType>().value(row))
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Some(array.as_primitive::<TimestampMicrosecondType>().value(row).div_euclid(1000))
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                Some(array.as_primitive::<TimestampNanosecondType>().value(row).div_euclid(1_000_000))
            }
            _ => None,
        }
    }

    fn value(&self, row: usize) -> Value {
        use arrow_array::cast::AsArray as _;
        use arrow_array::types::{Float32Type, Float64Type};
        let array = self.array;
        if array.is_null(row) {
            return Value::Null;
        }
        match array.data_type() {
            DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
            DataType::Float64 => number(array.as_primitive::<Float64Type>().value(row)),
            DataType::Float32 => number(f64::from(array.as_primitive::<Float32Type>().value(row))),
            DataType::Timestamp(..) => Self::millis(array, row)
                .and_then(shared::time::UtcTime::from_unix_millis)
                .map_or_else(|| Value::String(self.text.value(row).to_string()), |t| Value::String(t.to_string())),
            DataType::Decimal128(..) | DataType::Decimal256(..) => {
                let text = self.text.value(row).to_string();
                text.parse::<f64>().ok().map_or(Value::String(text), number)
            }
            t if t.is_integer() => {
                let text = self.text.value(row).to_string();
                text.parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| text.parse::<u64>().map(Value::from))
                    .unwrap_or(Value::String(text))
            }
            _ => Value::String(self.text.value(row).to_string()),
        }
    }
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}
