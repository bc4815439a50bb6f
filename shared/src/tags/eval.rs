//! Evaluating checked tags for one profile: the reference semantics that the full recompute and the
//! incremental path must reproduce exactly.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::check::TagSet;
use super::definition::{AggregateOp, Aggregation, CompareOp, Condition, EventFilter, Expr, Operand, TagKind};
use super::definition::{UNIQUE_LIST_MAX, Window};

/// What a statistical tag reads of one event.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    /// `track`, `page`, ...
    pub kind: &'a str,
    /// A track's event name.
    pub event: Option<&'a str>,
    /// Event time, ms since the epoch.
    pub at: i64,
    /// Its properties.
    pub properties: &'a Map<String, Value>,
}

impl<'a> EventView<'a> {
    /// The view of a canonical event.
    pub fn of(event: &'a crate::event::CanonicalEvent, empty: &'a Map<String, Value>) -> Self {
        Self {
            kind: event.kind.as_str(),
            event: event.event.as_deref(),
            at: event.timestamp.unix_millis(),
            properties: event.properties.as_ref().unwrap_or(empty),
        }
    }
}

impl TagSet {
    /// Every computed tag's value for a profile with `traits` and `events` (in any order), at `now` (ms).
    /// Tags without a value (an average of nothing, a rule over missing traits is still false) are absent.
    pub fn evaluate(&self, traits: &Map<String, Value>, events: &[EventView<'_>], now: i64) -> BTreeMap<String, Value> {
        let mut values = BTreeMap::new();
        for tag in &self.tags {
            let value = match &tag.kind {
                TagKind::Statistical { filter, aggregate, window } => {
                    statistical(&self.patterns, filter, aggregate, *window, events, now)
                }
                TagKind::Rule { when } => Value::Bool(self.holds(when, traits, &values)),
                TagKind::Buckets { of, buckets, otherwise } => {
                    // No number, no value; a number in no bucket gets `otherwise`.
                    match operand(of, traits, &values).and_then(Value::as_f64) {
                        None => Value::Null,
                        Some(x) => buckets
                            .iter()
                            .find(|b| b.min.is_none_or(|min| x >= min) && b.max.is_none_or(|max| x < max))
                            .map(|b| b.label.clone())
                            .or_else(|| otherwise.clone())
                            .map_or(Value::Null, Value::String),
                    }
                }
            };
            if !value.is_null() {
                values.insert(tag.id.clone(), value);
            }
        }
        values
    }

    fn holds(&self, expr: &Expr, traits: &Map<String, Value>, tags: &BTreeMap<String, Value>) -> bool {
        match expr {
            Expr::And(all) => all.iter().all(|e| self.holds(e, traits, tags)),
            Expr::Or(all) => all.iter().any(|e| self.holds(e, traits, tags)),
            Expr::Not(inner) => !self.holds(inner, traits, tags),
            Expr::Condition(c) => {
                let value = Operand::parse(&c.field).ok().and_then(|o| operand(&o, traits, tags));
                compare(&self.patterns, c, value)
            }
        }
    }
}

/// Compiled `regex` patterns, by pattern text.
pub(crate) type Patterns = BTreeMap<String, regex_lite::Regex>;

/// Whether `value` (the field's, `None` when absent) satisfies `condition`.
pub(crate) fn compare(patterns: &Patterns, condition: &Condition, value: Option<&Value>) -> bool {
    let value = value.filter(|v| !v.is_null());
    let want = &condition.value;
    match condition.op {
        CompareOp::Exists => value.is_some() == want.as_bool().unwrap_or(true),
        CompareOp::Ne => !value.is_some_and(|v| same(v, want)),
        _ => {
            let Some(value) = value else { return false };
            match condition.op {
                CompareOp::Eq => same(value, want),
                CompareOp::Gt => order(value, want).is_some_and(|o| o.is_gt()),
                CompareOp::Gte => order(value, want).is_some_and(|o| o.is_ge()),
                CompareOp::Lt => order(value, want).is_some_and(|o| o.is_lt()),
                CompareOp::Lte => order(value, want).is_some_and(|o| o.is_le()),
                CompareOp::In => want.as_array().is_some_and(|all| all.iter().any(|w| same(value, w))),
                CompareOp::Contains => match (value, want) {
                    (Value::String(s), Value::String(w)) => s.contains(w.as_str()),
                    (Value::Array(items), w) => items.iter().any(|i| same(i, w)),
                    _ => false,
                },
                CompareOp::Between => match (value.as_f64(), want.as_array().map(Vec::as_slice)) {
                    (Some(x), Some([low, high])) => {
                        low.as_f64().is_some_and(|l| x >= l) && high.as_f64().is_some_and(|h| x <= h)
                    }
                    _ => false,
                },
                CompareOp::Regex => match (value.as_str(), want.as_str()) {
                    (Some(text), Some(pattern)) => patterns.get(pattern).is_some_and(|r| r.is_match(text)),
                    _ => false,
                },
                CompareOp::Exists | CompareOp::Ne => unreachable!("handled above"),
            }
        }
    }
}

fn passes(patterns: &Patterns, filter: &EventFilter, event: &EventView<'_>) -> bool {
    (filter.types.is_empty() || filter.types.iter().any(|t| t == event.kind))
        && (filter.events.is_empty() || event.event.is_some_and(|e| filter.events.iter().any(|f| f == e)))
        && filter.properties.iter().all(|c| compare(patterns, c, event.properties.get(&c.field)))
}

pub(crate) fn operand<'v>(
    operand: &Operand,
    traits: &'v Map<String, Value>,
    tags: &'v BTreeMap<String, Value>,
) -> Option<&'v Value> {
    match operand {
        Operand::Trait(name) => traits.get(name),
        Operand::Tag(id) => tags.get(id),
    }
}

/// Equality with numbers compared by value (1 == 1.0).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

/// Order of two numbers, or of two strings; none across kinds.
fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// A value's identity for distinct counts: numbers by value, everything else by its JSON text.
fn key(value: &Value) -> String {
    match value.as_f64() {
        Some(x) if value.is_number() => format!("n:{x}"),
        _ => format!("j:{value}"),
    }
}

/// A statistical aggregation over `events` at `now`.
pub(crate) fn statistical(
    patterns: &Patterns,
    filter: &EventFilter,
    aggregate: &Aggregation,
    window: Window,
    events: &[EventView<'_>],
    now: i64,
) -> Value {
    let start = window.millis().map(|w| now - w);
    // Matching events in time order (ties by their order in the input), with the property's value.
    let mut matching: Vec<(i64, usize, Option<&Value>)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| start.is_none_or(|s| e.at >= s) && passes(patterns, filter, e))
        .map(|(i, e)| (e.at, i, aggregate.property.as_ref().and_then(|p| e.properties.get(p)).filter(|v| !v.is_null())))
        .collect();
    matching.sort_by_key(|(at, i, _)| (*at, *i));
    let values = || matching.iter().filter_map(|(_, _, v)| *v);
    let numbers = || values().filter_map(Value::as_f64);
    let number = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
    match aggregate.op {
        AggregateOp::Count => match aggregate.property {
            None => Value::from(matching.len()),
            Some(_) => Value::from(values().count()),
        },
        AggregateOp::Sum => number(numbers().sum()),
        AggregateOp::Avg => {
            let (n, sum) = numbers().fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
            if n == 0 { Value::Null } else { number(sum / n as f64) }
        }
        AggregateOp::Min => numbers().reduce(f64::min).map_or(Value::Null, number),
        AggregateOp::Max => numbers().reduce(f64::max).map_or(Value::Null, number),
        AggregateOp::First => values().next().cloned().unwrap_or(Value::Null),
        AggregateOp::Last => values().next_back().cloned().unwrap_or(Value::Null),
        AggregateOp::DistinctCount => Value::from(values().map(key).collect::<std::collections::BTreeSet<_>>().len()),
        AggregateOp::MostFrequent => {
            // value key → (count, position of its latest occurrence, the value)
            let mut counts: BTreeMap<String, (usize, usize, &Value)> = BTreeMap::new();
            for (position, value) in values().enumerate() {
                let entry = counts.entry(key(value)).or_insert((0, 0, value));
                entry.0 += 1;
                entry.1 = position;
            }
            counts.into_values().max_by_key(|(n, last, _)| (*n, *last)).map_or(Value::Null, |(_, _, v)| v.clone())
        }
        AggregateOp::UniqueList => {
            let mut seen = std::collections::BTreeSet::new();
            let list: Vec<Value> = values().filter(|v| seen.insert(key(v))).take(UNIQUE_LIST_MAX).cloned().collect();
            if list.is_empty() { Value::Null } else { Value::Array(list) }
        }
    }
}
