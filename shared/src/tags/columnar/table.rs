//! The columnar tables tags read: a chunk's event table and profile table (Arrow record batches), their
//! columns as the evaluators see them ([`Column`]: numbers, or coded values each stored once), and the
//! conversions between JSON values and columns.

use std::borrow::Cow;
use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Int8Type, Int16Type, Int32Type, Int64Type, TimestampMillisecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_buffer::NullBuffer;
use arrow_schema::DataType;
use serde_json::{Map, Value};

/// Field metadata marking a Utf8 column whose values are JSON text.
pub const JSON_METADATA: &str = "cdp.json";

/// Code of "no value" in a [`Column::Coded`].
pub const NO_VALUE: u32 = u32::MAX;

/// A problem with the input tables.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("columnar input: {0}")]
pub struct ColumnarError(pub String);

/// One column of values, one per row.
#[derive(Debug, Clone)]
pub enum Column<'a> {
    /// Numbers (`integer`: they read as integers, like counts); rows marked null in `nulls` have no value.
    Numbers {
        /// The numbers.
        values: Cow<'a, [f64]>,
        /// Which rows have a value (none: all).
        nulls: Option<NullBuffer>,
        /// Whether the values are written as integers.
        integer: bool,
    },
    /// Codes into a list of distinct values (strings, booleans, lists, any JSON); [`NO_VALUE`]: no value.
    Coded {
        /// One code per row.
        codes: Cow<'a, [u32]>,
        /// The distinct values (never null).
        entries: Vec<Value>,
    },
}

impl Column<'_> {
    /// A column of `rows` rows without any value.
    pub fn absent(rows: usize) -> Column<'static> {
        Column::Coded { codes: Cow::Owned(vec![NO_VALUE; rows]), entries: Vec::new() }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Column::Numbers { values, .. } => values.len(),
            Column::Coded { codes, .. } => codes.len(),
        }
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `row` (null: none).
    pub fn value(&self, row: usize) -> Value {
        match self {
            Column::Numbers { values, nulls, integer } => {
                if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                    return Value::Null;
                }
                number_value(values[row], *integer)
            }
            Column::Coded { codes, entries } => match codes[row] {
                NO_VALUE => Value::Null,
                code => entries[code as usize].clone(),
            },
        }
    }

    pub(crate) fn has(&self, row: usize) -> bool {
        match self {
            Column::Numbers { nulls, .. } => nulls.as_ref().is_none_or(|n| n.is_valid(row)),
            Column::Coded { codes, .. } => codes[row] != NO_VALUE,
        }
    }

    /// Reads an Arrow array (`json`: a Utf8 array holds JSON text).
    pub fn from_arrow(array: &ArrayRef, json: bool) -> Result<Column<'_>, ColumnarError> {
        let nulls = array.logical_nulls();
        let ints =
            |values: Vec<f64>| Ok(Column::Numbers { values: Cow::Owned(values), nulls: nulls.clone(), integer: true });
        match array.data_type() {
            DataType::Float64 => Ok(Column::Numbers {
                values: Cow::Borrowed(array.as_primitive::<arrow_array::types::Float64Type>().values()),
                nulls,
                integer: false,
            }),
            DataType::Float32 => Ok(Column::Numbers {
                values: Cow::Owned(
                    array.as_primitive::<Float32Type>().values().iter().map(|&x| f64::from(x)).collect(),
                ),
                nulls,
                integer: false,
            }),
            DataType::Int8 => ints(array.as_primitive::<Int8Type>().values().iter().map(|&x| f64::from(x)).collect()),
            DataType::Int16 => ints(array.as_primitive::<Int16Type>().values().iter().map(|&x| f64::from(x)).collect()),
            DataType::Int32 => ints(array.as_primitive::<Int32Type>().values().iter().map(|&x| f64::from(x)).collect()),
            DataType::Int64 => ints(array.as_primitive::<Int64Type>().values().iter().map(|&x| x as f64).collect()),
            DataType::UInt8 => ints(array.as_primitive::<UInt8Type>().values().iter().map(|&x| f64::from(x)).collect()),
            DataType::UInt16 => {
                ints(array.as_primitive::<UInt16Type>().values().iter().map(|&x| f64::from(x)).collect())
            }
            DataType::UInt32 => {
                ints(array.as_primitive::<UInt32Type>().values().iter().map(|&x| f64::from(x)).collect())
            }
            DataType::UInt64 => ints(array.as_primitive::<UInt64Type>().values().iter().map(|&x| x as f64).collect()),
            DataType::Boolean => {
                let bools = array.as_boolean();
                let codes = (0..bools.len())
                    .map(|i| if bools.is_null(i) { NO_VALUE } else { u32::from(bools.value(i)) })
                    .collect();
                Ok(Column::Coded { codes: Cow::Owned(codes), entries: vec![Value::Bool(false), Value::Bool(true)] })
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let texts = strings(array)?;
                let mut interned: HashMap<&str, u32> = HashMap::new();
                let mut distinct = Vec::new();
                let codes = texts
                    .iter()
                    .map(|text| match text {
                        None => NO_VALUE,
                        Some(text) => *interned.entry(text).or_insert_with(|| {
                            distinct.push(*text);
                            (distinct.len() - 1) as u32
                        }),
                    })
                    .collect();
                coded(codes, distinct.into_iter().map(Some), json)
            }
            DataType::Dictionary(_, _) => {
                let dictionary = array.as_any_dictionary();
                if dictionary.values().is_empty() {
                    return Ok(Column::absent(array.len()));
                }
                let entries = strings(dictionary.values())?;
                let keys: Vec<u32> = match array.data_type() {
                    DataType::Dictionary(key, _) => match key.as_ref() {
                        DataType::Int8 => {
                            array.as_dictionary::<Int8Type>().keys().values().iter().map(|&k| k as u32).collect()
                        }
                        DataType::Int16 => {
                            array.as_dictionary::<Int16Type>().keys().values().iter().map(|&k| k as u32).collect()
                        }
                        DataType::Int32 => {
                            array.as_dictionary::<Int32Type>().keys().values().iter().map(|&k| k as u32).collect()
                        }
                        DataType::UInt8 => {
                            array.as_dictionary::<UInt8Type>().keys().values().iter().map(|&k| u32::from(k)).collect()
                        }
                        DataType::UInt16 => {
                            array.as_dictionary::<UInt16Type>().keys().values().iter().map(|&k| u32::from(k)).collect()
                        }
                        DataType::UInt32 => array.as_dictionary::<UInt32Type>().keys().values().to_vec(),
                        _ => dictionary.normalized_keys().into_iter().map(|k| k as u32).collect(),
                    },
                    _ => unreachable!("matched a dictionary"),
                };
                let codes = match &nulls {
                    None => keys,
                    Some(nulls) => {
                        keys.into_iter().zip(nulls.iter()).map(|(k, valid)| if valid { k } else { NO_VALUE }).collect()
                    }
                };
                coded(codes, entries.into_iter(), json)
            }
            DataType::Null => Ok(Column::absent(array.len())),
            other => Err(ColumnarError(format!("a value column of type {other} is not supported"))),
        }
    }
}

fn number_value(x: f64, integer: bool) -> Value {
    if integer && x.fract() == 0.0 && x.abs() < 9.007_199_254_740_992e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

/// The texts of a string array (plain, large or view).
fn strings(array: &ArrayRef) -> Result<Vec<Option<&str>>, ColumnarError> {
    match array.data_type() {
        DataType::Utf8 => Ok(array.as_string::<i32>().iter().collect()),
        DataType::LargeUtf8 => Ok(array.as_string::<i64>().iter().collect()),
        DataType::Utf8View => Ok(array.as_string_view().iter().collect()),
        other => Err(ColumnarError(format!("dictionary values of type {other} are not supported"))),
    }
}

/// A coded column from codes into `texts` (entries that are null become "no value").
fn coded<'t>(
    mut codes: Vec<u32>,
    texts: impl Iterator<Item = Option<&'t str>>,
    json: bool,
) -> Result<Column<'static>, ColumnarError> {
    let mut entries = Vec::new();
    let mut remap = Vec::new();
    for text in texts {
        let value = match text {
            None => Value::Null,
            Some(text) if json => {
                serde_json::from_str(text).map_err(|e| ColumnarError(format!("`{text}` is not JSON: {e}")))?
            }
            Some(text) => Value::String(text.to_string()),
        };
        if value.is_null() {
            remap.push(NO_VALUE);
        } else {
            remap.push(entries.len() as u32);
            entries.push(value);
        }
    }
    let out_of_range = || ColumnarError("a dictionary key is out of range".into());
    if entries.len() == remap.len() {
        // No null entries: codes stay, once checked.
        if codes.iter().any(|&c| c != NO_VALUE && c as usize >= remap.len()) {
            return Err(out_of_range());
        }
    } else {
        for code in &mut codes {
            if *code != NO_VALUE {
                *code = *remap.get(*code as usize).ok_or_else(out_of_range)?;
            }
        }
    }
    Ok(Column::Coded { codes: Cow::Owned(codes), entries })
}

/// A chunk's event table, read.
pub(crate) struct Events<'a> {
    pub(crate) batch: &'a RecordBatch,
    pub(crate) at: &'a [i64],
    /// Row ranges per profile: profile `i`'s events are rows `offsets[i]..offsets[i + 1]`.
    pub(crate) offsets: Vec<usize>,
    pub(crate) columns: HashMap<String, Column<'a>>,
}

impl<'a> Events<'a> {
    pub(crate) fn read(batch: &'a RecordBatch, first: u32, profiles: usize) -> Result<Self, ColumnarError> {
        let profile = batch
            .column_by_name("profile")
            .ok_or_else(|| ColumnarError("the event table has no `profile` column".into()))?;
        let profile = profile
            .as_primitive_opt::<UInt32Type>()
            .filter(|p| p.null_count() == 0)
            .ok_or_else(|| ColumnarError("`profile` must be UInt32 without nulls".into()))?
            .values();
        let at =
            batch.column_by_name("at").ok_or_else(|| ColumnarError("the event table has no `at` column".into()))?;
        let at: &[i64] = match at.data_type() {
            DataType::Int64 if at.null_count() == 0 => at.as_primitive::<Int64Type>().values(),
            DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, _) if at.null_count() == 0 => {
                at.as_primitive::<TimestampMillisecondType>().values()
            }
            _ => return Err(ColumnarError("`at` must be Int64 or Timestamp(ms) without nulls".into())),
        };
        let mut offsets = vec![0usize; profiles + 1];
        let end = first as u64 + profiles as u64;
        for (row, &p) in profile.iter().enumerate() {
            if u64::from(p) < u64::from(first) || u64::from(p) >= end {
                return Err(ColumnarError(format!("row {row}: profile {p} is outside this chunk ({first}..{end})")));
            }
            if row > 0 {
                let previous = profile[row - 1];
                if p < previous || (p == previous && at[row] < at[row - 1]) {
                    return Err(ColumnarError(format!("row {row}: events are not sorted by profile, then time")));
                }
            }
            offsets[(p - first) as usize + 1] += 1;
        }
        for i in 0..profiles {
            offsets[i + 1] += offsets[i];
        }
        Ok(Self { batch, at, offsets, columns: HashMap::new() })
    }

    pub(crate) fn rows(&self) -> usize {
        self.at.len()
    }

    /// Each profile's first row at or after `start` (its rows are in time order).
    pub(crate) fn window_starts(&self, start: i64) -> Vec<usize> {
        self.offsets.windows(2).map(|run| run[0] + self.at[run[0]..run[1]].partition_point(|&at| at < start)).collect()
    }

    /// The column `name` (absent: no value on any row).
    pub(crate) fn column(&mut self, name: &str) -> Result<&Column<'a>, ColumnarError> {
        if !self.columns.contains_key(name) {
            let column = match self.batch.schema().column_with_name(name) {
                None => Column::absent(self.rows()),
                Some((i, field)) => {
                    let json = field.metadata().get(JSON_METADATA).is_some_and(|v| v == "true");
                    Column::from_arrow(self.batch.column(i), json)
                        .map_err(|e| ColumnarError(format!("column `{name}`: {}", e.0)))?
                }
            };
            self.columns.insert(name.to_string(), column);
        }
        Ok(&self.columns[name])
    }
}

/// A coded column of per-row values (none: no value), each distinct value stored once.
pub(crate) fn coded_values(values: impl Iterator<Item = Option<Value>>) -> Column<'static> {
    let mut entries: Vec<Value> = Vec::new();
    let mut index: HashMap<String, u32> = HashMap::new();
    let codes = values
        .map(|value| match value {
            None => NO_VALUE,
            Some(value) => *index.entry(value.to_string()).or_insert_with(|| {
                entries.push(value);
                (entries.len() - 1) as u32
            }),
        })
        .collect();
    Column::Coded { codes: Cow::Owned(codes), entries }
}

/// Each row's number, if it has one.
pub(crate) fn numbers_of(column: &Column<'_>) -> Vec<Option<f64>> {
    match column {
        Column::Numbers { values, nulls, .. } => {
            values.iter().enumerate().map(|(i, &x)| nulls.as_ref().is_none_or(|n| n.is_valid(i)).then_some(x)).collect()
        }
        Column::Coded { codes, entries } => {
            let table: Vec<Option<f64>> = entries.iter().map(|e| e.as_f64().filter(|_| e.is_number())).collect();
            codes.iter().map(|&c| if c == NO_VALUE { None } else { table[c as usize] }).collect()
        }
    }
}

/// The trait map of one row of a profile table (for comparisons with the reference evaluation).
pub fn traits_of(traits: &RecordBatch, row: usize) -> Result<Map<String, Value>, ColumnarError> {
    let mut map = Map::new();
    for (i, field) in traits.schema().fields().iter().enumerate() {
        let Some(name) = field.name().strip_prefix("traits.") else { continue };
        let json = field.metadata().get(JSON_METADATA).is_some_and(|v| v == "true");
        let value = Column::from_arrow(traits.column(i), json)?.value(row);
        if !value.is_null() {
            map.insert(name.to_string(), value);
        }
    }
    Ok(map)
}

/// An Arrow array of `values` in the narrowest kind that holds them all: integers, numbers, strings
/// (dictionary-encoded), booleans, or JSON text (`true` in the second place: mark the field with
/// [`JSON_METADATA`]).
pub fn value_array(values: &[Option<&Value>]) -> (ArrayRef, bool) {
    use arrow_array::{BooleanArray, DictionaryArray, Float64Array, Int64Array, StringArray};
    use std::sync::Arc;
    let present = || values.iter().flatten().filter(|v| !v.is_null());
    fn get<'v>(v: &Option<&'v Value>) -> Option<&'v Value> {
        v.filter(|v| !v.is_null())
    }
    if present().all(|v| v.is_i64()) {
        (Arc::new(Int64Array::from(values.iter().map(|v| get(v).and_then(Value::as_i64)).collect::<Vec<_>>())), false)
    } else if present().all(|v| v.is_number()) {
        (Arc::new(Float64Array::from(values.iter().map(|v| get(v).and_then(Value::as_f64)).collect::<Vec<_>>())), false)
    } else if present().all(|v| v.is_string()) {
        let array: DictionaryArray<Int32Type> = values.iter().map(|v| get(v).and_then(Value::as_str)).collect();
        (Arc::new(array), false)
    } else if present().all(|v| v.is_boolean()) {
        (
            Arc::new(BooleanArray::from(values.iter().map(|v| get(v).and_then(Value::as_bool)).collect::<Vec<_>>())),
            false,
        )
    } else {
        let texts: Vec<Option<String>> = values.iter().map(|v| get(v).map(Value::to_string)).collect();
        (Arc::new(StringArray::from(texts)), true)
    }
}

fn field(name: String, array: &ArrayRef, json: bool) -> arrow_schema::Field {
    let field = arrow_schema::Field::new(name, array.data_type().clone(), true);
    if json { field.with_metadata(HashMap::from([(JSON_METADATA.to_string(), "true".to_string())])) } else { field }
}

/// The event table of a chunk from events of profiles (absolute profile numbers), with the listed property
/// columns; sorts them by profile, time and messageId.
pub fn event_table(mut rows: Vec<(u32, crate::tags::EventView<'_>)>, properties: &[String]) -> RecordBatch {
    use arrow_array::{DictionaryArray, Int64Array, UInt32Array};
    use std::sync::Arc;
    rows.sort_by(|(p, a), (q, b)| (p, a.at, a.id).cmp(&(q, b.at, b.id)));
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut push = |name: &str, array: ArrayRef, json: bool, fields: &mut Vec<arrow_schema::Field>| {
        fields.push(field(name.to_string(), &array, json));
        columns.push(array);
    };
    push("profile", Arc::new(UInt32Array::from_iter_values(rows.iter().map(|(p, _)| *p))), false, &mut fields);
    push("at", Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, e)| e.at))), false, &mut fields);
    let kinds: DictionaryArray<Int32Type> = rows.iter().map(|(_, e)| Some(e.kind)).collect();
    push("type", Arc::new(kinds), false, &mut fields);
    let names: DictionaryArray<Int32Type> = rows.iter().map(|(_, e)| e.event).collect();
    push("event", Arc::new(names), false, &mut fields);
    for property in properties {
        let values: Vec<Option<&Value>> = rows.iter().map(|(_, e)| e.properties.get(property)).collect();
        let (array, json) = value_array(&values);
        push(&format!("properties.{property}"), array, json, &mut fields);
    }
    RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns).expect("columns match their fields")
}

/// The profile table of a chunk of profiles numbered from `first`: a `profile` column (so that the table
/// keeps its row count even without traits, in Parquet too), and the listed trait columns.
pub fn profile_table(first: u32, traits: &[&Map<String, Value>], names: &[String]) -> RecordBatch {
    use std::sync::Arc;
    let numbers = arrow_array::UInt32Array::from_iter_values(first..first + traits.len() as u32);
    let mut fields = vec![arrow_schema::Field::new("profile", DataType::UInt32, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(numbers)];
    for name in names {
        let values: Vec<Option<&Value>> = traits.iter().map(|t| t.get(name)).collect();
        let (array, json) = value_array(&values);
        fields.push(field(format!("traits.{name}"), &array, json));
        columns.push(array);
    }
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(traits.len()));
    RecordBatch::try_new_with_options(Arc::new(arrow_schema::Schema::new(fields)), columns, &options)
        .expect("columns match their fields")
}

/// A column's values as text, one per row (product ids and categories; numbers as written).
pub(crate) fn texts(events: &mut Events<'_>, name: &str) -> Result<Vec<Option<String>>, ColumnarError> {
    let rows = events.at.len();
    let column = events.column(name)?;
    Ok(match column {
        Column::Coded { codes, entries } => {
            let entries: Vec<Option<String>> = entries.iter().map(text).collect();
            codes.iter().map(|&c| entries.get(c as usize).cloned().flatten()).collect()
        }
        Column::Numbers { .. } => (0..rows).map(|row| text(&column.value(row))).collect(),
    })
}

/// A product id as text (numbers as written).
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}
