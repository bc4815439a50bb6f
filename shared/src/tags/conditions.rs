//! What conditions read and how they compare: the view of an event a filter tests, and the comparison of a
//! field's value with a condition's — shared by every evaluator (one profile, the columnar engine, the
//! incremental state).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::definition::{CompareOp, Condition, EventFilter, Operand};

/// What a statistical tag reads of one event.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    /// `track`, `page`, ...
    pub kind: &'a str,
    /// A track's event name.
    pub event: Option<&'a str>,
    /// Event time, ms since the epoch.
    pub at: i64,
    /// Its messageId: orders events of the same time.
    pub id: &'a str,
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
            id: &event.message_id,
            properties: event.properties.as_ref().unwrap_or(empty),
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

pub(crate) fn passes(patterns: &Patterns, filter: &EventFilter, event: &EventView<'_>) -> bool {
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
