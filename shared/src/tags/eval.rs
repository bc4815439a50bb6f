//! Evaluating checked tags for one profile: the reference semantics that the full recompute and the
//! incremental path must reproduce exactly.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::check::TagSet;
use super::definition::{Aggregation, CompareOp, Condition, EventFilter, Expr, Operand, TagKind, Window};
use super::state::Summary;

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

impl TagSet {
    /// Every computed tag's value for a profile with `traits` and `events` (in any order), at `now` (ms).
    /// Tags without a value (an average of nothing, a rule over missing traits is still false) are absent.
    pub fn evaluate(&self, traits: &Map<String, Value>, events: &[EventView<'_>], now: i64) -> BTreeMap<String, Value> {
        self.evaluate_with(traits, |tag| match &tag.kind {
            TagKind::Statistical { filter, aggregate, window } => {
                statistical(&self.patterns, filter, aggregate, *window, events, now)
            }
            _ => Value::Null,
        })
    }

    /// Every computed tag's value, with statistical tags' values from `statistical`.
    pub(crate) fn evaluate_with(
        &self,
        traits: &Map<String, Value>,
        statistical: impl Fn(&super::definition::TagDefinition) -> Value,
    ) -> BTreeMap<String, Value> {
        let mut values = BTreeMap::new();
        for tag in &self.tags {
            let value = match &tag.kind {
                TagKind::Statistical { .. } => statistical(tag),
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
                // Only the full recompute, which sees the whole population, gives these.
                TagKind::Propensity { .. } | TagKind::Rfm { .. } | TagKind::Affinity { .. } => Value::Null,
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
    let mut summary = Summary::default();
    for event in events.iter().filter(|e| start.is_none_or(|s| e.at >= s) && passes(patterns, filter, e)) {
        let value = aggregate.property.as_ref().and_then(|p| event.properties.get(p));
        summary.add(aggregate.op, (event.at, event.id.to_string()), value);
    }
    summary.value(aggregate.op, aggregate.property.is_some())
}
