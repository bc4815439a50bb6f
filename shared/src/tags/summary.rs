//! What a profile's matching events add up to for one aggregation ([`Summary`]): counts, an exact sum
//! (Shewchuk's partials, so the rounded result does not depend on the order of additions), min/max, first/last
//! by (time, messageId), and per-value counts where the aggregation needs them. Summaries merge, and give the
//! same value as aggregating all the events at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::definition::{AggregateOp, UNIQUE_LIST_MAX};

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
