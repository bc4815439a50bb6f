//! Evaluating checked tags for one profile: the reference semantics that the full recompute and the
//! incremental path must reproduce exactly.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::check::TagSet;
use super::conditions::{EventView, Patterns, compare, operand, passes};
use super::definition::{Aggregation, EventFilter, Expr, Operand, TagKind, Window};
use super::summary::Summary;

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
