//! What each destination receives when something happens to a profile: audience entries and exits, events
//! that pass a trigger filter, and changes of subscribed traits and tags. Item ids are derived from what
//! happened (never from when it was computed), so the same change computed twice is one item.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::destination::{DestinationDefinition, DestinationSet};
use super::lane::Message;
use super::payload::{AudienceRef, Change, Detail, Item, TriggeredEvent, profile_block};
use crate::event::CanonicalEvent;
use crate::tags::EventView;
use crate::time::UtcTime;

/// A profile as it is after a step, for building items.
#[derive(Debug, Clone, Copy)]
pub struct ProfileNow<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its identity keys (`kind:value`).
    pub keys: &'a [String],
    /// Traits now.
    pub traits: &'a Map<String, Value>,
    /// Tags now.
    pub tags: &'a BTreeMap<String, Value>,
    /// The person's latest consent choices, by purpose.
    pub consent: &'a BTreeMap<String, crate::profile::ConsentChoice>,
}

impl ProfileNow<'_> {
    /// Whether the person's latest choice denies `purpose`.
    fn denies(&self, purpose: &str) -> bool {
        self.consent.get(purpose).is_some_and(|choice| !choice.granted)
    }
}

fn item_id(parts: &[&str]) -> String {
    format!("itm_{}", &crate::ids::sha256_hex(&parts.join("\n"))[..32])
}

fn item(
    destination: &DestinationDefinition,
    profile: &ProfileNow<'_>,
    id: String,
    at: UtcTime,
    detail: Detail,
) -> Item {
    let block =
        profile_block(destination, profile.id, profile.keys.iter().map(String::as_str), profile.traits, profile.tags);
    Item { id, occurred_at: at.to_string(), profile: block, detail }
}

fn message(destination: &DestinationDefinition, item: Item, enqueued_at: i64, profile: &ProfileNow<'_>) -> Message {
    let subject = super::feedback::subject_of(profile.keys);
    Message { destination: destination.id.clone(), item, enqueued_at, subject }
}

impl DestinationSet {
    fn active(&self) -> impl Iterator<Item = &DestinationDefinition> {
        self.destinations().iter().filter(|d| d.enabled)
    }

    /// The active destinations that may receive something about `profile`: none serving a purpose the person
    /// denied.
    fn serving<'s>(&'s self, profile: &'s ProfileNow<'_>) -> impl Iterator<Item = &'s DestinationDefinition> {
        self.active().filter(move |d| !d.purposes.iter().any(|purpose| profile.denies(purpose)))
    }

    /// Entries and exits (`(audience, entered, change number)`, from
    /// [`crate::audiences::record_memberships`]) for the destinations subscribed to those audiences.
    pub fn audience_messages(
        &self,
        profile: &ProfileNow<'_>,
        changes: &[(String, bool, u32)],
        names: &BTreeMap<String, String>,
        at: UtcTime,
    ) -> Vec<Message> {
        let mut out = Vec::new();
        for destination in self.serving(profile) {
            for (audience, entered, number) in changes {
                if !destination.send.audiences.contains(audience) {
                    continue;
                }
                let kind = if *entered { "entered" } else { "exited" };
                let id = item_id(&[&destination.id, audience, profile.id, kind, &number.to_string()]);
                let audience =
                    AudienceRef { id: audience.clone(), name: names.get(audience).cloned().unwrap_or_default() };
                let detail =
                    if *entered { Detail::AudienceEntered { audience } } else { Detail::AudienceExited { audience } };
                out.push(message(destination, item(destination, profile, id, at, detail), at.unix_millis(), profile));
            }
        }
        out
    }

    /// The event for every destination with a trigger filter it passes (one item per destination).
    pub fn trigger_messages(&self, profile: &ProfileNow<'_>, event: &CanonicalEvent, at: UtcTime) -> Vec<Message> {
        if event.source_id == super::feedback::SYSTEM_SOURCE {
            return Vec::new(); // delivery outcomes never trigger deliveries
        }
        let empty = Map::new();
        let view = EventView::of(event, &empty);
        let mut out = Vec::new();
        for destination in self.serving(profile) {
            if !destination.send.events.iter().any(|f| crate::tags::passes(self.patterns(), f, &view)) {
                continue;
            }
            let id = item_id(&[&destination.id, "event", &event.source_id, &event.message_id]);
            let detail = Detail::EventTriggered {
                event: TriggeredEvent {
                    message_id: event.message_id.clone(),
                    kind: event.kind.as_str().to_string(),
                    event: event.event.clone(),
                    properties: event.properties.clone().unwrap_or_default(),
                    timestamp: event.timestamp.to_string(),
                },
            };
            out.push(message(
                destination,
                item(destination, profile, id, event.timestamp, detail),
                at.unix_millis(),
                profile,
            ));
        }
        out
    }

    /// Changes of subscribed traits and tags between `before` and the profile now.
    pub fn change_messages(
        &self,
        profile: &ProfileNow<'_>,
        traits_before: &Map<String, Value>,
        tags_before: &BTreeMap<String, Value>,
        at: UtcTime,
    ) -> Vec<Message> {
        let mut out = Vec::new();
        for destination in self.serving(profile) {
            let mut changes = BTreeMap::new();
            for name in &destination.send.traits {
                let (before, after) = (traits_before.get(name), profile.traits.get(name));
                if before != after && destination.may_send_trait(name) {
                    let change = Change {
                        before: before.cloned().unwrap_or(Value::Null),
                        after: after.cloned().unwrap_or(Value::Null),
                    };
                    changes.insert(format!("trait:{name}"), change);
                }
            }
            for tag in &destination.send.tags {
                let (before, after) = (tags_before.get(tag), profile.tags.get(tag));
                if before != after {
                    let change = Change {
                        before: before.cloned().unwrap_or(Value::Null),
                        after: after.cloned().unwrap_or(Value::Null),
                    };
                    changes.insert(format!("tag:{tag}"), change);
                }
            }
            if changes.is_empty() {
                continue;
            }
            let text = serde_json::to_string(&changes).unwrap_or_default();
            let id = item_id(&[&destination.id, "changes", profile.id, &text]);
            let detail = Detail::ProfileUpdated { changes };
            out.push(message(destination, item(destination, profile, id, at, detail), at.unix_millis(), profile));
        }
        out
    }
}
