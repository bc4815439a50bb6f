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

pub(crate) mod table;

pub use table::{Column, ColumnarError, JSON_METADATA, NO_VALUE, event_table, profile_table, traits_of, value_array};
use table::{Events, coded_values, numbers_of};

use std::borrow::Cow;
use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt32Type;
use arrow_array::{Array, RecordBatch};
use arrow_buffer::NullBuffer;
use serde_json::Value;

use super::check::TagSet;
use super::conditions::{Patterns, compare};
use super::definition::{AggregateOp, CompareOp, Condition, EventFilter, Expr, Operand, TagKind, UNIQUE_LIST_MAX};
use super::predict::{Model, Population};
use super::summary::{fsum_add, fsum_value, key};

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
