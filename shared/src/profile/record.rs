//! One unified profile and how events and merges update it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::policy::{ProfileRules, TraitPolicy};
use crate::event::{CanonicalEvent, EventType};
use crate::identity::{IdKey, ProfileId};
use crate::tags::ProfileTagState;
use crate::time::{UtcTime, earliest, latest};

/// A trait's value and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraitValue {
    /// The value (`null` while it is sealed).
    #[serde(default)]
    pub value: Value,
    /// The value sealed (encrypted) as stored, for personal traits; `None` once opened or if never sealed.
    /// Sealing and opening are the storage layer's (`functions::vault`); the rules here never look inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// Time of the event that set it.
    pub at: UtcTime,
    /// Source of that event.
    pub source: String,
    /// That event's messageId (breaks ties between events of the same time).
    pub message_id: String,
}

/// Running aggregate of one numeric property.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Number of values.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Aggregate {
    fn add(&mut self, x: f64) {
        if self.count == 0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.count += 1;
        self.sum += x;
    }

    fn combine(&mut self, other: &Aggregate) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// Counters of one event name (track's `event`; `page`, `screen`, `identify`, `group`, `alias` for the rest).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventStats {
    /// How many.
    pub count: u64,
    /// The first one's time.
    pub first_at: Option<UtcTime>,
    /// The last one's time.
    pub last_at: Option<UtcTime>,
    /// Aggregates of the configured numeric properties.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Aggregate>,
}

/// A unified profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Its id (stable: merges keep the older).
    pub id: ProfileId,
    /// Its identifiers.
    pub identities: BTreeSet<IdKey>,
    /// Profile ids merged into it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub merged_ids: BTreeSet<ProfileId>,
    /// Traits, by name.
    #[serde(default)]
    pub traits: BTreeMap<String, TraitValue>,
    /// Groups (accounts) joined.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub groups: BTreeSet<String>,
    /// Earliest event time.
    pub first_seen: Option<UtcTime>,
    /// Latest event time.
    pub last_seen: Option<UtcTime>,
    /// Counters and aggregates per event name.
    #[serde(default)]
    pub events: BTreeMap<String, EventStats>,
    /// Running state of the statistical tags, updated by ingest.
    #[serde(default, skip_serializing_if = "ProfileTagState::is_empty")]
    pub tag_state: ProfileTagState,
    /// Tag values as of `tags_at` (recomputed by ingest for the profiles it changes, and on schedule).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, Value>,
    /// When `tags` were computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_at: Option<UtcTime>,
    /// Audience membership, by audience id: the source of truth for entered/exited deliveries (ingest keeps
    /// the real-time audiences, the full recompute all of them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub memberships: BTreeMap<String, Membership>,
    /// The person's latest consent choice per purpose (`context.consent.categoryPreferences` of their events,
    /// `{"marketing": false, ...}` as the browser library and Segment's consent tools send it; the latest by
    /// event time wins). A destination serving a purpose the person denied receives nothing about them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consent: BTreeMap<String, ConsentChoice>,
}

/// One purpose's choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentChoice {
    /// Whether the person allows the purpose.
    pub granted: bool,
    /// When they chose (the event's time).
    pub at: UtcTime,
    /// The event that carried the choice (orders choices made at the same time).
    pub message_id: String,
}

/// A profile's standing in one audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    /// In the audience now.
    pub member: bool,
    /// Since when (ms).
    pub since: i64,
    /// Entries and exits so far: numbers each change, so a change delivered twice has one id.
    pub changes: u32,
}

impl Profile {
    /// Its traits' values by name: what rules, audiences and payloads read.
    pub fn trait_values(&self) -> serde_json::Map<String, serde_json::Value> {
        self.traits.iter().map(|(name, t)| (name.clone(), t.value.clone())).collect()
    }

    /// An empty profile.
    pub fn new(id: ProfileId) -> Self {
        Self {
            id,
            identities: BTreeSet::new(),
            merged_ids: BTreeSet::new(),
            traits: BTreeMap::new(),
            groups: BTreeSet::new(),
            first_seen: None,
            last_seen: None,
            events: BTreeMap::new(),
            tag_state: ProfileTagState::default(),
            tags: BTreeMap::new(),
            tags_at: None,
            memberships: BTreeMap::new(),
            consent: BTreeMap::new(),
        }
    }

    /// Whether the person's latest choice denies `purpose` (no choice denies nothing).
    pub fn denies(&self, purpose: &str) -> bool {
        self.consent.get(purpose).is_some_and(|choice| !choice.granted)
    }

    fn offer_consent(&mut self, purpose: &str, choice: ConsentChoice) {
        let newer = self.consent.get(purpose).is_none_or(|c| (choice.at, &choice.message_id) > (c.at, &c.message_id));
        if newer {
            self.consent.insert(purpose.to_string(), choice);
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &CanonicalEvent, rules: &ProfileRules) {
        let at = event.timestamp;
        self.first_seen = Some(self.first_seen.map_or(at, |t| t.min(at)));
        self.last_seen = Some(self.last_seen.map_or(at, |t| t.max(at)));
        let name = match (event.kind, &event.event) {
            (EventType::Track, Some(name)) => name.clone(),
            (kind, _) => kind.as_str().to_string(),
        };
        let stats = self.events.entry(name).or_default();
        stats.count += 1;
        stats.first_at = Some(stats.first_at.map_or(at, |t| t.min(at)));
        stats.last_at = Some(stats.last_at.map_or(at, |t| t.max(at)));
        if let Some(properties) = &event.properties {
            for key in &rules.aggregated_properties {
                if let Some(x) = properties.get(key).and_then(number) {
                    stats.properties.entry(key.clone()).or_default().add(x);
                }
            }
        }
        if event.kind == EventType::Identify
            && let Some(traits) = &event.traits
        {
            for (key, sent) in traits {
                // The clean value (or the value as sent, when it cannot be cleaned); an empty one sets nothing.
                let Some(value) = rules.cleaning.clean(key, sent).value_for(sent) else { continue };
                let candidate = TraitValue {
                    value,
                    sealed: None,
                    at,
                    source: event.source_id.clone(),
                    message_id: event.message_id.clone(),
                };
                self.offer_trait(key, candidate, rules);
            }
        }
        if event.kind == EventType::Group
            && let Some(group) = &event.group_id
        {
            self.groups.insert(group.clone());
        }
        let preferences = event.context.get("consent").and_then(|c| c.get("categoryPreferences"));
        if let Some(preferences) = preferences.and_then(Value::as_object) {
            for (purpose, granted) in preferences {
                if let Some(granted) = granted.as_bool() {
                    let choice = ConsentChoice { granted, at, message_id: event.message_id.clone() };
                    self.offer_consent(purpose, choice);
                }
            }
        }
    }

    /// Folds another profile (merged into this one by the identity graph) into this one.
    pub fn absorb(&mut self, other: Profile, rules: &ProfileRules) {
        self.identities.extend(other.identities);
        self.merged_ids.insert(other.id);
        self.merged_ids.extend(other.merged_ids);
        self.groups.extend(other.groups);
        for (key, value) in other.traits {
            self.offer_trait(&key, value, rules);
        }
        self.first_seen = earliest(self.first_seen, other.first_seen);
        self.last_seen = latest(self.last_seen, other.last_seen);
        for (name, theirs) in other.events {
            let ours = self.events.entry(name).or_default();
            ours.count += theirs.count;
            ours.first_at = earliest(ours.first_at, theirs.first_at);
            ours.last_at = latest(ours.last_at, theirs.last_at);
            for (key, aggregate) in theirs.properties {
                ours.properties.entry(key).or_default().combine(&aggregate);
            }
        }
        self.tag_state.absorb(other.tag_state);
        for (purpose, choice) in other.consent {
            self.offer_consent(&purpose, choice);
        }
    }

    fn offer_trait(&mut self, key: &str, candidate: TraitValue, rules: &ProfileRules) {
        let wins = match self.traits.get(key) {
            None => true,
            Some(current) => beats(&candidate, current, rules.policy(key)),
        };
        if wins {
            self.traits.insert(key.to_string(), candidate);
        }
    }
}

/// Whether `a` replaces `b` under `policy`. A total order on (time, messageId), so the winner does not
/// depend on which arrived first.
fn beats(a: &TraitValue, b: &TraitValue, policy: &TraitPolicy) -> bool {
    let later = (a.at, &a.message_id) > (b.at, &b.message_id);
    match policy {
        TraitPolicy::LastWrite => later,
        TraitPolicy::FirstWrite => (a.at, &a.message_id) < (b.at, &b.message_id),
        TraitPolicy::SourcePriority { sources } => {
            let rank = |s: &str| sources.iter().position(|x| x == s).unwrap_or(sources.len());
            match rank(&a.source).cmp(&rank(&b.source)) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => later,
            }
        }
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|x| x.is_finite()),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
