//! The data dictionary (数据字典): what the data holds, kept up to date as events arrive. Per source and event,
//! the properties with their observed JSON types, a few example values, counts per day, first and last seen;
//! the traits likewise, with the values cleaning could not clean counted as data-quality issues. Tag,
//! audience and destination definitions are checked against the [`Catalog`] it gives.
//!
//! Pure: ingest observes each raw object's events into a [`Dictionary`] of their own, and the stored
//! dictionary [`merge`](Dictionary::merge)s them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::{CanonicalEvent, EventType};
use crate::profile::{Cleaned, ProfileRules};
use crate::tags::{Catalog, ValueKind};
use crate::time::{UtcTime, earliest, latest};

/// Days of counts kept per event.
pub const DAYS_KEPT: usize = 90;
/// Example values kept per name.
pub const EXAMPLES: usize = 3;
/// Event names kept per source (the rest are counted in [`Dictionary::overflow`]).
pub const MAX_EVENTS: usize = 1000;
/// Properties kept per event, and traits kept.
pub const MAX_FIELDS: usize = 500;
/// Characters of an example string kept.
const EXAMPLE_CHARS: usize = 80;
/// Longest event, property or trait name kept (characters); longer ones count as overflow.
pub const MAX_NAME_CHARS: usize = 128;

/// The data dictionary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dictionary {
    /// Per source id.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceEntry>,
    /// Traits sent with identify calls, by name.
    #[serde(default)]
    pub traits: BTreeMap<String, Field>,
    /// Names not kept because a limit was reached ([`MAX_EVENTS`], [`MAX_FIELDS`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overflow: u64,
}

/// What one source sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceEntry {
    /// Track events by name.
    #[serde(default)]
    pub events: BTreeMap<String, EventEntry>,
    /// The other calls (`identify`, `page`, `screen`, `group`, `alias`) by type.
    #[serde(default)]
    pub calls: BTreeMap<String, EventEntry>,
}

/// One event name (or call type) of one source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEntry {
    /// Events received.
    pub count: u64,
    /// When the first arrived (by our clock).
    pub first_seen: Option<UtcTime>,
    /// When the last arrived.
    pub last_seen: Option<UtcTime>,
    /// Per day of arrival (UTC, `YYYY-MM-DD`), the last [`DAYS_KEPT`].
    #[serde(default)]
    pub days: BTreeMap<String, DayCount>,
    /// Properties by name.
    #[serde(default)]
    pub properties: BTreeMap<String, Field>,
}

/// One day's counts of an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayCount {
    /// Events received.
    pub events: u64,
    /// Events that broke their source's tracking plan (stored flagged).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub violations: u64,
}

/// One property or trait.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Field {
    /// Values seen.
    pub count: u64,
    /// Values seen per JSON type (`string`, `number`, `boolean`, `object`, `array`, `null`), after cleaning
    /// (a value that could not be cleaned, as sent).
    #[serde(default)]
    pub types: BTreeMap<String, u64>,
    /// A few distinct example values (none for personal data).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<Value>,
    /// Whether it is personal data (its values are never shown here).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub personal: bool,
    /// First seen (by our clock).
    pub first_seen: Option<UtcTime>,
    /// Last seen.
    pub last_seen: Option<UtcTime>,
    /// Values cleaning could not clean (kept as sent): data-quality issues.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub issues: u64,
    /// The latest issue's reason (no value in it for personal data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_issue: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Dictionary {
    /// Observes one event as it arrived.
    pub fn observe(&mut self, event: &CanonicalEvent, rules: &ProfileRules) {
        let at = event.received_at;
        let day = at.date_and_hour().0;
        let source = self.sources.entry(event.source_id.clone()).or_default();
        let (names, name) = match (event.kind, &event.event) {
            (EventType::Track, Some(name)) => (&mut source.events, name.clone()),
            (kind, _) => (&mut source.calls, kind.as_str().to_string()),
        };
        if !names.contains_key(&name) && (names.len() >= MAX_EVENTS || name.chars().count() > MAX_NAME_CHARS) {
            self.overflow += 1;
            return;
        }
        let entry = names.entry(name).or_default();
        entry.count += 1;
        entry.first_seen = earliest(entry.first_seen, Some(at));
        entry.last_seen = latest(entry.last_seen, Some(at));
        let today = entry.days.entry(day).or_default();
        today.events += 1;
        if event.context.get("violations").and_then(Value::as_array).is_some_and(|v| !v.is_empty()) {
            today.violations += 1;
        }
        let mut overflow = 0;
        // Properties as the tag engines read them and traits as the profile holds them: cleaned.
        if let Some(properties) = &event.properties {
            overflow += observe_fields(&mut entry.properties, properties, at, rules);
        }
        prune_days(&mut entry.days);
        if event.kind == EventType::Identify
            && let Some(traits) = &event.traits
        {
            overflow += observe_fields(&mut self.traits, traits, at, rules);
        }
        self.overflow += overflow;
    }

    /// Adds what `other` observed.
    pub fn merge(&mut self, other: Dictionary) {
        for (id, theirs) in other.sources {
            let ours = self.sources.entry(id).or_default();
            for (mine, their) in [(&mut ours.events, theirs.events), (&mut ours.calls, theirs.calls)] {
                for (name, entry) in their {
                    if !mine.contains_key(&name) && mine.len() >= MAX_EVENTS {
                        self.overflow += entry.count;
                        continue;
                    }
                    mine.entry(name).or_default().merge(entry, &mut self.overflow);
                }
            }
        }
        merge_fields(&mut self.traits, other.traits, &mut self.overflow);
        self.overflow += other.overflow;
    }

    /// What definitions are checked against: every track event name, and each property's and trait's kind
    /// (the type most of its values have).
    pub fn catalog(&self) -> Catalog {
        let mut catalog = Catalog::default();
        let mut properties: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        for source in self.sources.values() {
            catalog.events.extend(source.events.keys().cloned());
            for entry in source.events.values().chain(source.calls.values()) {
                for (name, field) in &entry.properties {
                    let types = properties.entry(name).or_default();
                    for (kind, n) in &field.types {
                        *types.entry(kind).or_default() += n;
                    }
                }
            }
        }
        catalog.properties = properties.into_iter().map(|(name, types)| (name.to_string(), dominant(&types))).collect();
        catalog.traits = self
            .traits
            .iter()
            .map(|(name, field)| {
                let types = field.types.iter().map(|(k, n)| (k.as_str(), *n)).collect();
                (name.clone(), dominant(&types))
            })
            .collect();
        catalog
    }

    /// Forgets what was last seen before `cutoff` (names that stopped coming, and junk a public write key
    /// sent once).
    pub fn forget_before(&mut self, cutoff: UtcTime) {
        let recent = |seen: Option<UtcTime>| seen.is_some_and(|t| t >= cutoff);
        for source in self.sources.values_mut() {
            for names in [&mut source.events, &mut source.calls] {
                names.retain(|_, entry| recent(entry.last_seen));
                for entry in names.values_mut() {
                    entry.properties.retain(|_, field| recent(field.last_seen));
                }
            }
        }
        self.sources.retain(|_, s| !(s.events.is_empty() && s.calls.is_empty()));
        self.traits.retain(|_, field| recent(field.last_seen));
    }

    /// Only what `source` sent and only the event (or call type) `event`, where given.
    pub fn only(&mut self, source: Option<&str>, event: Option<&str>) {
        if let Some(source) = source {
            self.sources.retain(|id, _| id == source);
        }
        if let Some(event) = event {
            for source in self.sources.values_mut() {
                source.events.retain(|name, _| name == event);
                source.calls.retain(|name, _| name == event);
            }
            self.sources.retain(|_, s| !(s.events.is_empty() && s.calls.is_empty()));
        }
    }

    /// The track event names of every source.
    pub fn event_names(&self) -> BTreeSet<&str> {
        self.sources.values().flat_map(|s| s.events.keys().map(String::as_str)).collect()
    }
}

impl EventEntry {
    fn merge(&mut self, other: EventEntry, overflow: &mut u64) {
        self.count += other.count;
        self.first_seen = earliest(self.first_seen, other.first_seen);
        self.last_seen = latest(self.last_seen, other.last_seen);
        for (day, counts) in other.days {
            let ours = self.days.entry(day).or_default();
            ours.events += counts.events;
            ours.violations += counts.violations;
        }
        prune_days(&mut self.days);
        merge_fields(&mut self.properties, other.properties, overflow);
    }
}

impl Field {
    fn observe(&mut self, sent: &Value, at: UtcTime, personal: bool, cleaned: Cleaned) {
        self.count += 1;
        self.personal |= personal;
        self.first_seen = earliest(self.first_seen, Some(at));
        self.last_seen = latest(self.last_seen, Some(at));
        let value = match cleaned {
            Cleaned::Issue(reason) => {
                self.issues += 1;
                // A reason quotes the value: never for personal data, nor a value that is not text, holds an
                // `@` or seven digits (an email address or a phone number, however written).
                let quotes_personal = match sent.as_str() {
                    Some(text) => text.contains('@') || text.bytes().filter(u8::is_ascii_digit).count() >= 7,
                    None => true,
                };
                self.last_issue =
                    Some(if personal || quotes_personal { "a value that could not be cleaned".into() } else { reason });
                sent.clone()
            }
            other => match other.value_for(sent) {
                Some(value) => value,
                // Empty: absent after cleaning, nothing to type.
                None => return,
            },
        };
        *self.types.entry(crate::source::json_type(&value).to_string()).or_default() += 1;
        if !self.personal {
            self.example(value);
        }
    }

    /// Keeps `value` as an example: a short scalar not seen yet, never what looks like an email address or a
    /// phone number.
    fn example(&mut self, value: Value) {
        if self.examples.len() >= EXAMPLES || self.examples.contains(&value) {
            return;
        }
        let kept = match value {
            Value::String(text) if text.contains('@') || looks_like_phone(&text) => return,
            Value::String(text) => Value::String(text.chars().take(EXAMPLE_CHARS).collect()),
            Value::Number(_) | Value::Bool(_) => value,
            _ => return,
        };
        if !self.examples.contains(&kept) {
            self.examples.push(kept);
        }
    }

    fn merge(&mut self, other: Field) {
        self.count += other.count;
        self.personal |= other.personal;
        self.first_seen = earliest(self.first_seen, other.first_seen);
        if latest(self.last_seen, other.last_seen) == other.last_seen && other.last_issue.is_some() {
            self.last_issue = other.last_issue;
        }
        self.last_seen = latest(self.last_seen, other.last_seen);
        self.issues += other.issues;
        for (kind, n) in other.types {
            *self.types.entry(kind).or_default() += n;
        }
        if self.personal {
            self.examples.clear();
        } else {
            for example in other.examples {
                self.example(example);
            }
        }
    }
}

/// Observes each of `values` (properties or traits) as cleaned; the names not kept for the limits.
fn observe_fields(
    fields: &mut BTreeMap<String, Field>,
    values: &Map<String, Value>,
    at: UtcTime,
    rules: &ProfileRules,
) -> u64 {
    let mut overflow = 0;
    for (name, value) in values {
        if !fields.contains_key(name) && (fields.len() >= MAX_FIELDS || name.chars().count() > MAX_NAME_CHARS) {
            overflow += 1;
            continue;
        }
        let cleaned = rules.cleaning.clean(name, value);
        fields.entry(name.clone()).or_default().observe(value, at, personal(rules, name), cleaned);
    }
    overflow
}

/// Whether the values of `name` are personal data here: the profile rules' personal traits, and whatever
/// cleaning treats as an email address or a phone number.
fn personal(rules: &ProfileRules, name: &str) -> bool {
    rules.is_personal(name)
        || name.to_ascii_lowercase().ends_with("email")
        || rules.cleaning.steps(name).contains(&crate::profile::Clean::Phone)
}

/// Seven or more digits and nothing but what phone numbers are written with.
fn looks_like_phone(text: &str) -> bool {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    digits >= 7 && text.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c))
}

fn merge_fields(fields: &mut BTreeMap<String, Field>, other: BTreeMap<String, Field>, overflow: &mut u64) {
    for (name, field) in other {
        if !fields.contains_key(&name) && fields.len() >= MAX_FIELDS {
            *overflow += 1;
            continue;
        }
        fields.entry(name).or_default().merge(field);
    }
}

fn prune_days(days: &mut BTreeMap<String, DayCount>) {
    while days.len() > DAYS_KEPT {
        days.pop_first();
    }
}

/// The kind most values have (nulls left out); `Other` for objects and arrays.
fn dominant(types: &BTreeMap<&str, u64>) -> ValueKind {
    let top = types.iter().filter(|(k, _)| **k != "null").max_by_key(|(k, n)| (**n, std::cmp::Reverse(**k)));
    match top.map(|(k, _)| *k) {
        Some("number") => ValueKind::Number,
        Some("string") => ValueKind::String,
        Some("boolean") => ValueKind::Boolean,
        _ => ValueKind::Other,
    }
}

#[cfg(test)]
mod tests;
