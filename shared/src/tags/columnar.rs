//! Columnar tag evaluation: every computed tag for a run of profiles at once, a column at a time, from Arrow
//! arrays. Gives exactly the values of [`TagSet::evaluate`] (the reference semantics) for each profile.
//!
//! The input is one *chunk*: a table of profiles (row `i` is profile `first + i`, checked against its
//! `profile` column when it has one; trait columns named `traits.NAME`) and a table of their events (`profile` UInt32, `at` Int64 or Timestamp(ms), `type` and
//! `event` strings, property columns named `properties.NAME`). Events are sorted by profile, then time, then
//! messageId — a table clustered by profile, as the event store keeps it — so a profile's events are one run
//! of rows, and "first", "last" and ties follow row order. Value columns may be numbers (Float64, integers),
//! strings (Utf8 or dictionary-encoded), booleans, or JSON text (a Utf8 column whose field metadata has
//! `cdp.json = "true"`: for lists, objects, and properties whose kind varies from event to event).
//!
//! Evaluation works column by column: a filter becomes a row mask (string and boolean conditions are
//! decided once per distinct value, through the reference comparison, then looked up by code; number
//! conditions are one tight loop), then each aggregation runs over each profile's run of rows. Rules and
//! buckets are evaluated over whole columns of traits and earlier tags.

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

use super::check::TagSet;
use super::definition::{AggregateOp, CompareOp, Condition, EventFilter, Expr, Operand, TagKind, UNIQUE_LIST_MAX};
use super::conditions::{Patterns, compare};
use super::predict::{Model, Population};
use super::summary::{fsum_add, fsum_value, key};

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

    fn has(&self, row: usize) -> bool {
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

/// Every computed tag's values for a chunk of profiles, a column per tag (in evaluation order).
#[derive(Debug, Clone)]
pub struct TagColumns {
    /// Profiles (rows).
    pub rows: usize,
    /// Tag id and its values.
    pub columns: Vec<(String, Column<'static>)>,
}

impl TagColumns {
    /// One profile's tag values, as [`TagSet::evaluate`] gives them (tags without a value are absent).
    pub fn row(&self, row: usize) -> std::collections::BTreeMap<String, Value> {
        self.columns
            .iter()
            .filter_map(|(id, column)| Some((id.clone(), Some(column.value(row)).filter(|v| !v.is_null())?)))
            .collect()
    }

    /// The column of tag `id`.
    pub fn column(&self, id: &str) -> Option<&Column<'static>> {
        self.columns.iter().find(|(tag, _)| tag == id).map(|(_, c)| c)
    }
}

/// A chunk's event table, read.
pub(super) struct Events<'a> {
    batch: &'a RecordBatch,
    pub(super) at: &'a [i64],
    /// Row ranges per profile: profile `i`'s events are rows `offsets[i]..offsets[i + 1]`.
    pub(super) offsets: Vec<usize>,
    columns: HashMap<String, Column<'a>>,
}

impl<'a> Events<'a> {
    pub(super) fn read(batch: &'a RecordBatch, first: u32, profiles: usize) -> Result<Self, ColumnarError> {
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

    fn rows(&self) -> usize {
        self.at.len()
    }

    /// Each profile's first row at or after `start` (its rows are in time order).
    fn window_starts(&self, start: i64) -> Vec<usize> {
        self.offsets.windows(2).map(|run| run[0] + self.at[run[0]..run[1]].partition_point(|&at| at < start)).collect()
    }

    /// The column `name` (absent: no value on any row).
    pub(super) fn column(&mut self, name: &str) -> Result<&Column<'a>, ColumnarError> {
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

/// A column of the profile table (absent: no value on any row).
fn trait_column<'t>(traits: &'t RecordBatch, name: &str) -> Result<Column<'t>, ColumnarError> {
    let column = format!("traits.{name}");
    match traits.schema().column_with_name(&column) {
        None => Ok(Column::absent(traits.num_rows())),
        Some((i, field)) => {
            let json = field.metadata().get(JSON_METADATA).is_some_and(|v| v == "true");
            Column::from_arrow(traits.column(i), json).map_err(|e| ColumnarError(format!("column `{column}`: {}", e.0)))
        }
    }
}

impl TagSet {
    /// Every computed tag's values for the chunk of profiles `first..first + traits.num_rows()` with their
    /// `events` (see the module documentation for the tables' shape), at `now` (ms).
    /// Population tags (propensity, RFM) have no value here: see [`TagSet::evaluate_columns_with`].
    pub fn evaluate_columns(
        &self,
        traits: &RecordBatch,
        first: u32,
        events: &RecordBatch,
        now: i64,
    ) -> Result<TagColumns, ColumnarError> {
        self.evaluate_columns_with(traits, first, events, now, &Population::default())
    }

    /// Every computed tag's values, population tags from the fitted `population` models (a tag without a
    /// model has no value).
    pub fn evaluate_columns_with(
        &self,
        traits: &RecordBatch,
        first: u32,
        events: &RecordBatch,
        now: i64,
        population: &Population,
    ) -> Result<TagColumns, ColumnarError> {
        let rows = traits.num_rows();
        if let Some(numbers) = traits.column_by_name("profile") {
            let numbers = numbers
                .as_primitive_opt::<UInt32Type>()
                .filter(|n| n.null_count() == 0)
                .ok_or_else(|| ColumnarError("the profile table's `profile` must be UInt32 without nulls".into()))?;
            if numbers.values().iter().enumerate().any(|(i, &p)| u64::from(p) != u64::from(first) + i as u64) {
                return Err(ColumnarError(format!("the profile table does not number its rows from {first}")));
            }
        }
        let mut events = Events::read(events, first, rows)?;
        // Reused across tags: rows passing each filter; those rows that also have the aggregated value; each
        // profile's first row inside each window; each numeric property's numbers.
        let mut masks: HashMap<String, Vec<bool>> = HashMap::new();
        let mut selections: HashMap<String, Vec<bool>> = HashMap::new();
        let mut windows: HashMap<i64, Vec<usize>> = HashMap::new();
        let mut numbers: HashMap<String, Vec<f64>> = HashMap::new();
        let mut out = TagColumns { rows, columns: Vec::with_capacity(self.tags.len()) };
        for tag in &self.tags {
            let column = match &tag.kind {
                TagKind::Statistical { filter, aggregate, window } => {
                    let filter_key = serde_json::to_string(filter).unwrap_or_default();
                    if !masks.contains_key(&filter_key) {
                        let mask = self.filter_mask(&mut events, filter)?;
                        masks.insert(filter_key.clone(), mask);
                    }
                    // Rows are in time order within a profile: a window is a suffix of each profile's rows.
                    let starts = window
                        .millis()
                        .map(|w| windows.entry(now - w).or_insert_with(|| events.window_starts(now - w)).as_slice());
                    let property = aggregate.property.as_ref().map(|p| format!("properties.{p}"));
                    let Some(property) = property else {
                        let runs = Runs { offsets: &events.offsets, starts };
                        out.columns.push((tag.id.clone(), count(&masks[&filter_key], runs)));
                        continue;
                    };
                    let numeric = aggregate.op.numeric();
                    events.column(&property)?;
                    let values = &events.columns[&property];
                    if numeric && !numbers.contains_key(&property) {
                        numbers.insert(
                            property.clone(),
                            numbers_of(values).into_iter().map(|x| x.unwrap_or(f64::NAN)).collect(),
                        );
                    }
                    let selection_key = format!("{filter_key}|{property}|{numeric}");
                    if !selections.contains_key(&selection_key) {
                        let mask = &masks[&filter_key];
                        let selected: Vec<bool> = if numeric {
                            let nums = &numbers[&property];
                            mask.iter().zip(nums).map(|(&m, x)| m && !x.is_nan()).collect()
                        } else {
                            mask.iter().enumerate().map(|(row, &m)| m && values.has(row)).collect()
                        };
                        selections.insert(selection_key.clone(), selected);
                    }
                    let selected = &selections[&selection_key];
                    let runs = Runs { offsets: &events.offsets, starts };
                    match numbers.get(&property).filter(|_| numeric) {
                        Some(nums) => aggregate_numbers(aggregate.op, selected, nums, runs),
                        None => aggregate_values(aggregate.op, selected, values, runs),
                    }
                }
                TagKind::Propensity { .. } | TagKind::Rfm { .. } | TagKind::Affinity { .. } => {
                    self.population_column(&tag.id, &tag.kind, rows, &mut events, now, population)?
                }
                TagKind::Rule { when } => {
                    let holds = self.holds_columns(when, traits, &out)?;
                    Column::Coded {
                        codes: Cow::Owned(holds.into_iter().map(u32::from).collect()),
                        entries: vec![Value::Bool(false), Value::Bool(true)],
                    }
                }
                TagKind::Buckets { of, buckets, otherwise } => {
                    let numbers = numbers_of(&operand_column(of, traits, &out)?);
                    let mut entries: Vec<Value> = buckets.iter().map(|b| Value::String(b.label.clone())).collect();
                    let fallback = match otherwise {
                        Some(label) => {
                            entries.push(Value::String(label.clone()));
                            (entries.len() - 1) as u32
                        }
                        None => NO_VALUE,
                    };
                    let codes = numbers
                        .iter()
                        .map(|x| match x {
                            None => NO_VALUE,
                            Some(x) => buckets
                                .iter()
                                .position(|b| b.min.is_none_or(|min| *x >= min) && b.max.is_none_or(|max| *x < max))
                                .map_or(fallback, |i| i as u32),
                        })
                        .collect();
                    Column::Coded { codes: Cow::Owned(codes), entries }
                }
            };
            out.columns.push((tag.id.clone(), column));
        }
        Ok(out)
    }

    /// A population tag's values from its model (none without one).
    fn population_column(
        &self,
        id: &str,
        kind: &TagKind,
        rows: usize,
        events: &mut Events<'_>,
        now: i64,
        population: &Population,
    ) -> Result<Column<'static>, ColumnarError> {
        Ok(match (kind, population.models.get(id)) {
            (TagKind::Propensity { .. }, Some(Model::Propensity(model))) => {
                let (features, _) = self.propensity_features_of(id, events, now)?;
                let scores = features.iter().map(|x| Some((model.score(x) * 10_000.0).round() / 10_000.0)).collect();
                floats(scores)
            }
            (TagKind::Rfm { output, .. }, Some(Model::Rfm(model))) => {
                coded_values(self.rfm_values_of(id, events, now)?.iter().map(|v| v.map(|v| model.output(&v, *output))))
            }
            (TagKind::Affinity { .. }, Some(Model::Affinity { categories })) => {
                let scores = self.affinity_values_of(id, events, now, categories)?;
                match &kind {
                    TagKind::Affinity { share_of: Some(of), .. } => floats(
                        scores
                            .iter()
                            .map(|s| {
                                let total: f64 = s.iter().map(|(_, x)| x).sum();
                                let mine = s.iter().find(|(c, _)| c == of).map_or(0.0, |(_, x)| *x);
                                (total > 0.0).then(|| (mine / total * 10_000.0).round() / 10_000.0)
                            })
                            .collect(),
                    ),
                    // The highest score; ties: the smaller name.
                    _ => coded_values(scores.iter().map(|s| {
                        s.iter()
                            .fold(None::<&(String, f64)>, |best, c| match best {
                                Some(b) if b.1 > c.1 || (b.1 == c.1 && b.0 <= c.0) => Some(b),
                                _ => Some(c),
                            })
                            .map(|(category, _)| Value::String(category.clone()))
                    })),
                }
            }
            _ => Column::absent(rows),
        })
    }

    /// The rows that pass `filter`.
    pub(super) fn filter_mask(
        &self,
        events: &mut Events<'_>,
        filter: &EventFilter,
    ) -> Result<Vec<bool>, ColumnarError> {
        let mut mask = vec![true; events.rows()];
        let any_of = |names: &[String]| Condition {
            field: String::new(),
            op: CompareOp::In,
            value: Value::Array(names.iter().map(|n| Value::String(n.clone())).collect()),
        };
        if !filter.types.is_empty() {
            and(&mut mask, &condition_mask(&self.patterns, &any_of(&filter.types), events.column("type")?));
        }
        if !filter.events.is_empty() {
            and(&mut mask, &condition_mask(&self.patterns, &any_of(&filter.events), events.column("event")?));
        }
        for condition in &filter.properties {
            let column = events.column(&format!("properties.{}", condition.field))?;
            and(&mut mask, &condition_mask(&self.patterns, condition, column));
        }
        Ok(mask)
    }

    fn holds_columns(&self, expr: &Expr, traits: &RecordBatch, tags: &TagColumns) -> Result<Vec<bool>, ColumnarError> {
        Ok(match expr {
            Expr::And(all) => {
                let mut mask = vec![true; tags.rows];
                for e in all {
                    and(&mut mask, &self.holds_columns(e, traits, tags)?);
                }
                mask
            }
            Expr::Or(all) => {
                let mut mask = vec![false; tags.rows];
                for e in all {
                    for (m, h) in mask.iter_mut().zip(self.holds_columns(e, traits, tags)?) {
                        *m |= h;
                    }
                }
                mask
            }
            Expr::Not(inner) => self.holds_columns(inner, traits, tags)?.into_iter().map(|h| !h).collect(),
            Expr::Condition(c) => match Operand::parse(&c.field) {
                Ok(operand) => condition_mask(&self.patterns, c, &operand_column(&operand, traits, tags)?),
                Err(_) => vec![compare(&self.patterns, c, None); tags.rows],
            },
        })
    }
}

fn operand_column<'t>(
    operand: &Operand,
    traits: &'t RecordBatch,
    tags: &'t TagColumns,
) -> Result<Column<'t>, ColumnarError> {
    match operand {
        Operand::Trait(name) => trait_column(traits, name),
        Operand::Tag(id) => Ok(tags.column(id).cloned().unwrap_or_else(|| Column::absent(tags.rows))),
    }
}

fn and(mask: &mut [bool], other: &[bool]) {
    for (m, o) in mask.iter_mut().zip(other) {
        *m &= *o;
    }
}

/// A coded column of per-row values (none: no value), each distinct value stored once.
fn coded_values(values: impl Iterator<Item = Option<Value>>) -> Column<'static> {
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
pub(super) fn numbers_of(column: &Column<'_>) -> Vec<Option<f64>> {
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

/// Whether each row's value satisfies `condition` — exactly as [`compare`] decides for that value.
fn condition_mask(patterns: &Patterns, condition: &Condition, column: &Column<'_>) -> Vec<bool> {
    let absent = compare(patterns, condition, None);
    match column {
        Column::Coded { codes, entries } => {
            let table: Vec<bool> = entries.iter().map(|e| compare(patterns, condition, Some(e))).collect();
            codes.iter().map(|&c| if c == NO_VALUE { absent } else { table[c as usize] }).collect()
        }
        Column::Numbers { values, nulls, .. } => {
            let want = &condition.value;
            let number = want.as_f64().filter(|_| want.is_number());
            let present = |test: &dyn Fn(f64) -> bool| -> Vec<bool> {
                values
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| if nulls.as_ref().is_none_or(|n| n.is_valid(i)) { test(x) } else { absent })
                    .collect()
            };
            match (condition.op, number) {
                (CompareOp::Eq, Some(w)) => present(&|x| x == w),
                (CompareOp::Ne, Some(w)) => present(&|x| x != w),
                (CompareOp::Ne, None) => present(&|_| true),
                (CompareOp::Gt, Some(w)) => present(&|x| x > w),
                (CompareOp::Gte, Some(w)) => present(&|x| x >= w),
                (CompareOp::Lt, Some(w)) => present(&|x| x < w),
                (CompareOp::Lte, Some(w)) => present(&|x| x <= w),
                (CompareOp::In, _) => {
                    let set: Vec<f64> = want
                        .as_array()
                        .map(|all| all.iter().filter(|w| w.is_number()).filter_map(Value::as_f64).collect())
                        .unwrap_or_default();
                    present(&|x| set.contains(&x))
                }
                (CompareOp::Between, _) => match want.as_array().map(Vec::as_slice) {
                    Some([low, high]) => match (low.as_f64(), high.as_f64()) {
                        (Some(l), Some(h)) => present(&|x| x >= l && x <= h),
                        _ => present(&|_| false),
                    },
                    _ => present(&|_| false),
                },
                (CompareOp::Exists, _) => {
                    let wanted = want.as_bool().unwrap_or(true);
                    present(&|_| wanted)
                }
                // Contains, regex, and order or equality against a non-number never hold for a number.
                _ => present(&|_| false),
            }
        }
    }
}

/// A value's identity for distinct counts (as the reference's `key`), as a small integer per distinct key.
fn identities(column: &Column<'_>) -> Option<Vec<u32>> {
    match column {
        Column::Numbers { .. } => None,
        Column::Coded { entries, .. } => {
            let mut by_key: HashMap<String, u32> = HashMap::new();
            Some(
                entries
                    .iter()
                    .map(|e| {
                        let next = by_key.len() as u32;
                        *by_key.entry(key(e)).or_insert(next)
                    })
                    .collect(),
            )
        }
    }
}

/// Each profile's rows: `offsets[p]..offsets[p + 1]`, starting at `starts[p]` within a window.
#[derive(Clone, Copy)]
struct Runs<'r> {
    offsets: &'r [usize],
    starts: Option<&'r [usize]>,
}

impl Runs<'_> {
    fn iter(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        (0..self.offsets.len() - 1).map(|p| self.starts.map_or(self.offsets[p], |s| s[p])..self.offsets[p + 1])
    }
}

fn integers(counts: Vec<f64>) -> Column<'static> {
    Column::Numbers { values: Cow::Owned(counts), nulls: None, integer: true }
}

fn floats(values: Vec<Option<f64>>) -> Column<'static> {
    let nulls = values
        .iter()
        .any(Option::is_none)
        .then(|| NullBuffer::from(values.iter().map(Option::is_some).collect::<Vec<_>>()));
    Column::Numbers { values: Cow::Owned(values.iter().map(|x| x.unwrap_or(0.0)).collect()), nulls, integer: false }
}

/// Selected rows per profile.
fn count(selected: &[bool], runs: Runs<'_>) -> Column<'static> {
    integers(runs.iter().map(|r| selected[r].iter().filter(|&&s| s).count() as f64).collect())
}

/// A numeric aggregation (sum, avg, min, max) of the selected rows' numbers.
fn aggregate_numbers(op: AggregateOp, selected: &[bool], numbers: &[f64], runs: Runs<'_>) -> Column<'static> {
    let picked = |r: std::ops::Range<usize>| r.filter(|&row| selected[row]).map(|row| numbers[row]);
    match op {
        AggregateOp::Sum | AggregateOp::Avg => {
            let mut partials = Vec::new();
            let results = runs
                .iter()
                .map(|r| {
                    partials.clear();
                    let mut n = 0u64;
                    for x in picked(r) {
                        fsum_add(&mut partials, x);
                        n += 1;
                    }
                    let sum = fsum_value(&partials);
                    match op {
                        AggregateOp::Sum => Some(sum),
                        _ => (n > 0).then(|| sum / n as f64),
                    }
                })
                .collect();
            floats(results)
        }
        AggregateOp::Min => floats(runs.iter().map(|r| picked(r).reduce(f64::min)).collect()),
        _ => floats(runs.iter().map(|r| picked(r).reduce(f64::max)).collect()),
    }
}

/// A value aggregation (count of values, first, last, distinct count, most frequent, unique list) of the
/// selected rows (which all have a value).
fn aggregate_values(op: AggregateOp, selected: &[bool], values: &Column<'_>, runs: Runs<'_>) -> Column<'static> {
    match op {
        AggregateOp::First | AggregateOp::Last => {
            let picked: Vec<Option<usize>> = runs
                .iter()
                .map(|mut r| {
                    if op == AggregateOp::First {
                        r.find(|&row| selected[row])
                    } else {
                        r.rev().find(|&row| selected[row])
                    }
                })
                .collect();
            take(values, &picked)
        }
        AggregateOp::DistinctCount | AggregateOp::MostFrequent | AggregateOp::UniqueList => {
            let ids = identities(values);
            let identity = |row: usize| -> u64 {
                match (values, &ids) {
                    (Column::Numbers { values, .. }, _) => values[row].to_bits(),
                    (Column::Coded { codes, .. }, Some(ids)) => u64::from(ids[codes[row] as usize]),
                    (Column::Coded { codes, .. }, None) => u64::from(codes[row]),
                }
            };
            // Per distinct value: (identity, count, first row, last row), in order of first occurrence.
            let mut seen: Vec<(u64, u64, usize, usize)> = Vec::new();
            let distinct = |r: std::ops::Range<usize>, seen: &mut Vec<(u64, u64, usize, usize)>| {
                seen.clear();
                for row in r.filter(|&row| selected[row]) {
                    let id = identity(row);
                    match seen.iter_mut().find(|s| s.0 == id) {
                        Some(s) => {
                            s.1 += 1;
                            s.3 = row;
                        }
                        None => seen.push((id, 1, row, row)),
                    }
                }
            };
            match op {
                AggregateOp::DistinctCount => integers(
                    runs.iter()
                        .map(|r| {
                            distinct(r, &mut seen);
                            seen.len() as f64
                        })
                        .collect(),
                ),
                AggregateOp::MostFrequent => {
                    let picked: Vec<Option<usize>> = runs
                        .iter()
                        .map(|r| {
                            distinct(r, &mut seen);
                            seen.iter().max_by_key(|s| (s.1, s.3)).map(|s| s.2)
                        })
                        .collect();
                    take(values, &picked)
                }
                _ => {
                    let mut entries = Vec::new();
                    let codes = runs
                        .iter()
                        .map(|r| {
                            distinct(r, &mut seen);
                            if seen.is_empty() {
                                return NO_VALUE;
                            }
                            let items = seen.iter().take(UNIQUE_LIST_MAX).map(|s| values.value(s.2)).collect();
                            entries.push(Value::Array(items));
                            (entries.len() - 1) as u32
                        })
                        .collect();
                    Column::Coded { codes: Cow::Owned(codes), entries }
                }
            }
        }
        // Count of values.
        _ => count(selected, runs),
    }
}

/// The values at `rows` (none: no value), as a column of the same kind.
fn take(values: &Column<'_>, rows: &[Option<usize>]) -> Column<'static> {
    match values {
        Column::Numbers { values, integer, .. } => Column::Numbers {
            values: Cow::Owned(rows.iter().map(|r| r.map_or(0.0, |r| values[r])).collect()),
            nulls: rows
                .iter()
                .any(Option::is_none)
                .then(|| NullBuffer::from(rows.iter().map(Option::is_some).collect::<Vec<_>>())),
            integer: *integer,
        },
        Column::Coded { codes, entries } => Column::Coded {
            codes: Cow::Owned(rows.iter().map(|r| r.map_or(NO_VALUE, |r| codes[r])).collect()),
            entries: entries.clone(),
        },
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
pub fn event_table(mut rows: Vec<(u32, super::EventView<'_>)>, properties: &[String]) -> RecordBatch {
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

impl TagSet {
    /// The event properties that computed tags read (filters, aggregations, purchases, products).
    pub fn properties(&self) -> Vec<String> {
        let mut names = std::collections::BTreeSet::new();
        for tag in &self.tags {
            match &tag.kind {
                TagKind::Statistical { filter, aggregate, .. } => {
                    names.extend(filter.properties.iter().map(|c| c.field.clone()));
                    names.extend(aggregate.property.clone());
                }
                TagKind::Propensity { purchase, revenue, .. } => {
                    names.extend(purchase.properties.iter().map(|c| c.field.clone()));
                    names.extend(revenue.clone());
                }
                TagKind::Rfm { purchase, revenue, .. } => {
                    names.extend(purchase.properties.iter().map(|c| c.field.clone()));
                    names.insert(revenue.clone());
                }
                TagKind::Affinity { product, category, .. } => {
                    names.insert(product.clone());
                    names.insert(category.clone());
                }
                TagKind::Rule { .. } | TagKind::Buckets { .. } => {}
            }
        }
        names.into_iter().collect()
    }

    /// The traits that computed tags read.
    pub fn traits(&self) -> Vec<String> {
        fn walk(expr: &Expr, names: &mut std::collections::BTreeSet<String>) {
            match expr {
                Expr::And(all) | Expr::Or(all) => all.iter().for_each(|e| walk(e, names)),
                Expr::Not(inner) => walk(inner, names),
                Expr::Condition(c) => {
                    if let Ok(Operand::Trait(name)) = Operand::parse(&c.field) {
                        names.insert(name);
                    }
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for tag in &self.tags {
            match &tag.kind {
                TagKind::Rule { when } => walk(when, &mut names),
                TagKind::Buckets { of: Operand::Trait(name), .. } => {
                    names.insert(name.clone());
                }
                _ => {}
            }
        }
        names.into_iter().collect()
    }
}
