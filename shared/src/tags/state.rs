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
use super::conditions::{EventView, passes};
use super::definition::TagKind;
use super::summary::{Stamp, Summary};

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
