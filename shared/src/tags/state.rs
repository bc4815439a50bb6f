//! Running state of statistical tags: what a profile's events add up to, kept so that a tag's value can be
//! given at any later time, more events can be added in any order, and two profiles' states can merge —
//! always with the same result as evaluating all the events at once.
//!
//! - All-time tags keep a [`Summary`]: counts, an exact sum (Shewchuk's partials, so the rounded result does
//!   not depend on the order of additions), min/max, first/last by (time, messageId), and per-value counts
//!   where the aggregation needs them.
//! - Windowed tags keep the matching events still inside the window (time, messageId, the property's value);
//!   events that fell out of the window can never come back in, so they are dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::check::TagSet;
use super::definition::{AggregateOp, TagKind, UNIQUE_LIST_MAX};
use super::eval::{EventView, passes};

/// An event's place in time order: time, then messageId.
pub type Stamp = (i64, String);

/// A value with the stamp of the event that had it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// When.
    pub at: Stamp,
    /// What.
    pub value: Value,
}

/// How often one distinct value was seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// Times seen.
    pub count: u64,
    /// Its first occurrence (and the value as first written: `1` and `1.0` are one value).
    pub first: Stamped,
    /// Its latest occurrence.
    pub last: Stamp,
}

/// An order-independent summary of matching events and their property values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Matching events.
    pub events: u64,
    /// Of which with the property (not null).
    pub with_value: u64,
    /// Numeric values.
    pub numbers: u64,
    /// Their exact sum, as non-overlapping partials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partials: Vec<f64>,
    /// Smallest number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Earliest value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<Stamped>,
    /// Latest value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Stamped>,
    /// Distinct values (only for distinct_count, most_frequent and unique_list).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, Seen>,
}

/// Adds `x` to an exact sum kept as non-overlapping partials (Shewchuk; Python's `math.fsum`).
pub(crate) fn fsum_add(partials: &mut Vec<f64>, mut x: f64) {
    let mut kept = 0;
    for j in 0..partials.len() {
        let mut y = partials[j];
        if x.abs() < y.abs() {
            std::mem::swap(&mut x, &mut y);
        }
        let hi = x + y;
        let lo = y - (hi - x);
        if lo != 0.0 {
            partials[kept] = lo;
            kept += 1;
        }
        x = hi;
    }
    partials.truncate(kept);
    partials.push(x);
}

/// The correctly rounded value of an exact sum.
pub(crate) fn fsum_value(partials: &[f64]) -> f64 {
    let Some((&last, rest)) = partials.split_last() else { return 0.0 };
    let mut hi = last;
    let mut lo = 0.0;
    let mut n = rest.len();
    while n > 0 {
        let x = hi;
        let y = rest[n - 1];
        n -= 1;
        hi = x + y;
        lo = y - (hi - x);
        if lo != 0.0 {
            break;
        }
    }
    if n > 0 && ((lo < 0.0 && rest[n - 1] < 0.0) || (lo > 0.0 && rest[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        if y == x - hi {
            hi = x;
        }
    }
    hi
}

/// A value's identity for distinct counts: numbers by value, everything else by its JSON text.
pub(crate) fn key(value: &Value) -> String {
    match value.as_f64() {
        Some(x) if value.is_number() => format!("n:{x}"),
        _ => format!("j:{value}"),
    }
}

fn tracks_values(op: AggregateOp) -> bool {
    matches!(op, AggregateOp::DistinctCount | AggregateOp::MostFrequent | AggregateOp::UniqueList)
}

impl Summary {
    /// Adds one matching event (its stamp, and the property's value if it has one).
    pub fn add(&mut self, op: AggregateOp, at: Stamp, value: Option<&Value>) {
        self.events += 1;
        let Some(value) = value.filter(|v| !v.is_null()) else { return };
        self.with_value += 1;
        if let Some(x) = value.as_f64() {
            self.numbers += 1;
            fsum_add(&mut self.partials, x);
            self.min = Some(self.min.map_or(x, |m| m.min(x)));
            self.max = Some(self.max.map_or(x, |m| m.max(x)));
        }
        if self.first.as_ref().is_none_or(|f| at < f.at) {
            self.first = Some(Stamped { at: at.clone(), value: value.clone() });
        }
        if self.last.as_ref().is_none_or(|l| at > l.at) {
            self.last = Some(Stamped { at: at.clone(), value: value.clone() });
        }
        if tracks_values(op) {
            let seen = self.values.entry(key(value)).or_insert_with(|| Seen {
                count: 0,
                first: Stamped { at: at.clone(), value: value.clone() },
                last: at.clone(),
            });
            seen.count += 1;
            if at < seen.first.at {
                seen.first = Stamped { at: at.clone(), value: value.clone() };
            }
            if at > seen.last {
                seen.last = at;
            }
        }
    }

    /// Adds another summary of different events (a merged profile's).
    pub fn combine(&mut self, other: Summary) {
        self.events += other.events;
        self.with_value += other.with_value;
        self.numbers += other.numbers;
        for x in other.partials {
            fsum_add(&mut self.partials, x);
        }
        self.min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(f) = other.first
            && self.first.as_ref().is_none_or(|s| f.at < s.at)
        {
            self.first = Some(f);
        }
        if let Some(l) = other.last
            && self.last.as_ref().is_none_or(|s| l.at > s.at)
        {
            self.last = Some(l);
        }
        for (k, theirs) in other.values {
            match self.values.get_mut(&k) {
                None => {
                    self.values.insert(k, theirs);
                }
                Some(ours) => {
                    ours.count += theirs.count;
                    if theirs.first.at < ours.first.at {
                        ours.first = theirs.first;
                    }
                    if theirs.last > ours.last {
                        ours.last = theirs.last;
                    }
                }
            }
        }
    }

    /// The aggregation's value (`with_property`: whether the aggregation names a property).
    pub fn value(&self, op: AggregateOp, with_property: bool) -> Value {
        let number = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
        match op {
            AggregateOp::Count => Value::from(if with_property { self.with_value } else { self.events }),
            AggregateOp::Sum => number(fsum_value(&self.partials)),
            AggregateOp::Avg if self.numbers == 0 => Value::Null,
            AggregateOp::Avg => number(fsum_value(&self.partials) / self.numbers as f64),
            AggregateOp::Min => self.min.map_or(Value::Null, number),
            AggregateOp::Max => self.max.map_or(Value::Null, number),
            AggregateOp::First => self.first.as_ref().map_or(Value::Null, |f| f.value.clone()),
            AggregateOp::Last => self.last.as_ref().map_or(Value::Null, |l| l.value.clone()),
            AggregateOp::DistinctCount => Value::from(self.values.len()),
            AggregateOp::MostFrequent => self
                .values
                .values()
                .max_by(|a, b| (a.count, &a.last).cmp(&(b.count, &b.last)))
                .map_or(Value::Null, |s| s.first.value.clone()),
            AggregateOp::UniqueList => {
                let mut seen: Vec<&Seen> = self.values.values().collect();
                seen.sort_by(|a, b| a.first.at.cmp(&b.first.at));
                let list: Vec<Value> = seen.iter().take(UNIQUE_LIST_MAX).map(|s| s.first.value.clone()).collect();
                if list.is_empty() { Value::Null } else { Value::Array(list) }
            }
        }
    }
}

/// One statistical tag's state for one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatState {
    /// All time.
    Total(Box<Summary>),
    /// The matching events still inside the window: (stamp, the property's value).
    Recent(Vec<(Stamp, Option<Value>)>),
}

/// Every statistical tag's state for one profile, by tag id (and version: a new version starts afresh).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileTagState {
    /// `id@version` → state.
    pub tags: BTreeMap<String, StatState>,
    /// The backfill (named by a digest of the tag versions it rebuilds) that rebuilt these states from the
    /// profile's whole history, kept while nothing but applied events changed them: a backfill that resumes
    /// passes over the profiles it already did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<String>,
}

impl ProfileTagState {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.rebuilt.is_none()
    }

    /// Merges `other` (an absorbed profile's states) into this one. The result counts as rebuilt by a
    /// backfill only if both were.
    pub fn absorb(&mut self, other: ProfileTagState) {
        if self.rebuilt != other.rebuilt {
            self.rebuilt = None;
        }
        for (slot, theirs) in other.tags {
            match (self.tags.get_mut(&slot), theirs) {
                (Some(StatState::Total(ours)), StatState::Total(theirs)) => ours.combine(*theirs),
                (Some(StatState::Recent(ours)), StatState::Recent(theirs)) => ours.extend(theirs),
                (None, theirs) => {
                    self.tags.insert(slot, theirs);
                }
                // A definition changed its window between the two: the version changes with it, so the
                // slots differ; states of one slot always have one shape.
                (Some(_), _) => {}
            }
        }
    }
}

impl TagSet {
    /// Adds one event to a profile's tag states, as of `now` (windows drop what fell out of them).
    pub fn observe(&self, state: &mut ProfileTagState, event: &EventView<'_>, now: i64) {
        for tag in &self.tags {
            let TagKind::Statistical { filter, aggregate, window } = &tag.kind else { continue };
            let slot = format!("{}@{}", tag.id, tag.version);
            let start = window.millis().map(|w| now - w);
            let value = aggregate.property.as_ref().and_then(|p| event.properties.get(p)).filter(|v| !v.is_null());
            let matches = passes(&self.patterns, filter, event);
            let entry = state.tags.entry(slot).or_insert_with(|| match start {
                None => StatState::Total(Box::default()),
                Some(_) => StatState::Recent(Vec::new()),
            });
            match entry {
                StatState::Total(summary) => {
                    if matches {
                        summary.add(aggregate.op, (event.at, event.id.to_string()), value);
                    }
                }
                StatState::Recent(recent) => {
                    let start = start.unwrap_or(i64::MIN);
                    recent.retain(|((at, _), _)| *at >= start);
                    if matches && event.at >= start {
                        recent.push(((event.at, event.id.to_string()), value.cloned()));
                    }
                }
            }
        }
    }

    /// Every computed tag's value from a profile's states and traits, at `now`: the same values as
    /// [`TagSet::evaluate`] over all of the profile's events.
    pub fn evaluate_state(
        &self,
        state: &ProfileTagState,
        traits: &Map<String, Value>,
        now: i64,
    ) -> BTreeMap<String, Value> {
        self.evaluate_with(traits, |tag| {
            let TagKind::Statistical { aggregate, window, .. } = &tag.kind else { return Value::Null };
            let with_property = aggregate.property.is_some();
            match state.tags.get(&format!("{}@{}", tag.id, tag.version)) {
                None => Summary::default().value(aggregate.op, with_property),
                Some(StatState::Total(summary)) => summary.value(aggregate.op, with_property),
                Some(StatState::Recent(recent)) => {
                    let start = window.millis().map_or(i64::MIN, |w| now - w);
                    let mut summary = Summary::default();
                    for (at, value) in recent.iter().filter(|((at, _), _)| *at >= start) {
                        summary.add(aggregate.op, at.clone(), value.as_ref());
                    }
                    summary.value(aggregate.op, with_property)
                }
            }
        })
    }
}
