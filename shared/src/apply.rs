//! Applying a batch of events to the part of the identity graph and the profiles it touches: linking (and
//! merging), profile updates, the incremental tag states and values, and what partners receive (real-time
//! audience entries and exits, subscribed changes, triggered events). Pure: the graph and profiles the batch
//! needs come in ([`keys_to_read`] says which), and go out changed, with the messages; ingest reads and commits
//! them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::activation::{Activation, Message, ProfileNow};
use crate::event::CanonicalEvent;
use crate::identity::{IdKey, IdentityGraph, IdentityRules, ProfileId, keys_to_link};
use crate::profile::{Profile, ProfileRules};
use crate::tags::{EventView, TagSet};
use crate::time::UtcTime;

/// What a batch is applied with.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Identifier types and linking rules.
    pub identity: &'a IdentityRules,
    /// Trait policies and aggregated properties.
    pub profiles: &'a ProfileRules,
    /// Active tags, kept up to date on the profiles the batch changes.
    pub tags: Option<&'a TagSet>,
    /// The tag versions whose incremental state is complete; the others keep their previous values.
    pub ready: &'a BTreeMap<String, u32>,
    /// Audiences and destinations, when partners receive anything.
    pub activation: Option<&'a Activation>,
}

/// What applying a batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Events applied to the graph and profiles.
    pub applied: usize,
    /// Profiles merged.
    pub merges: usize,
    /// Links or merges refused by rules.
    pub refusals: usize,
    /// What partners receive, for the delivery outbox.
    pub messages: Vec<Message>,
}

/// The keys the graph and profiles must hold for [`apply`] to give the same result on them as on the whole
/// state.
pub fn keys_to_read(rules: &IdentityRules, events: &[CanonicalEvent]) -> BTreeSet<IdKey> {
    events.iter().flat_map(|event| keys_to_link(rules, event)).collect()
}

/// A touched profile's traits and tags before the batch.
type Before = BTreeMap<String, (Map<String, Value>, BTreeMap<String, Value>)>;

/// Applies `events` (in order) at `now` to `graph` and `data` (the profiles by id), which hold at least what
/// [`keys_to_read`] names.
pub fn apply(
    graph: &mut IdentityGraph,
    data: &mut BTreeMap<ProfileId, Profile>,
    events: &[CanonicalEvent],
    rules: &Rules<'_>,
    now: UtcTime,
) -> Applied {
    let (mut applied, mut merges, mut refusals) = (0, 0, 0);
    let empty = serde_json::Map::new();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut before: Before = BTreeMap::new();
    let mut triggered: Vec<(String, &CanonicalEvent)> = Vec::new();
    let mut merged_exits: Vec<Message> = Vec::new();
    // Properties cleaned as every reader of events sees them (the raw event keeps them as sent).
    let cleaned: Vec<Option<CanonicalEvent>> = events.iter().map(|e| rules.profiles.cleaning.clean_event(e)).collect();
    for (sent, cleaned) in events.iter().zip(&cleaned) {
        // Identities link by the event as sent: the index, the lake's identity keys and erasure all key it so.
        let linked = graph.link_event(rules.identity, sent);
        let event = cleaned.as_ref().unwrap_or(sent);
        refusals += linked.refused;
        let Some(target) = linked.profile else { continue };
        if rules.activation.is_some() && !before.contains_key(&target) {
            let snapshot = data.get(&target).map(|p| (p.trait_values(), p.tags.clone())).unwrap_or_default();
            before.insert(target.clone(), snapshot);
        }
        for absorbed in &linked.merged {
            merges += 1;
            if let Some(gone) = data.remove(absorbed) {
                if let Some(activation) = rules.activation {
                    merged_exits.extend(exits_of_absorbed(activation, &gone, now));
                }
                let survivor = data.entry(target.clone()).or_insert_with(|| Profile::new(target.clone()));
                survivor.absorb(gone, rules.profiles);
            }
        }
        let profile = data.entry(target.clone()).or_insert_with(|| Profile::new(target.clone()));
        profile.apply(event, rules.profiles);
        if let Some(tags) = rules.tags {
            tags.observe(&mut profile.tag_state, &EventView::of(event, &empty), now.unix_millis());
            touched.insert(target.clone());
        }
        if let Some(node) = graph.profile(&target) {
            profile.identities = node.identities.clone();
        }
        if rules.activation.is_some() {
            triggered.push((target.clone(), event));
        }
        applied += 1;
    }
    // The changed profiles' tag values, as of now.
    // Tags waiting for a backfill (or the full recompute) keep their previous values.
    if let Some(tags) = rules.tags {
        let waiting = tags.waiting(rules.ready);
        for id in touched {
            if let Some(profile) = data.get_mut(&id) {
                let traits = profile.trait_values();
                let mut values = tags.evaluate_state(&profile.tag_state, &traits, now.unix_millis());
                for tag in &waiting {
                    match profile.tags.get(tag) {
                        Some(previous) => values.insert(tag.clone(), previous.clone()),
                        None => values.remove(tag),
                    };
                }
                profile.tags = values;
                profile.tags_at = Some(now);
            }
        }
    }
    let mut messages = merged_exits;
    if let Some(activation) = rules.activation {
        messages.extend(deliveries(activation, data, &before, &triggered, now));
    }
    Applied { applied, merges, refusals, messages }
}

/// A profile merged into another leaves every audience it was in: partners that received its entry get its
/// exit (the survivor's own memberships are decided as for any touched profile, so it enters where it
/// qualifies). The item's id names the profile and the change's number, so a retried batch sends it once.
fn exits_of_absorbed(activation: &Activation, gone: &Profile, now: UtcTime) -> Vec<Message> {
    let changes: Vec<(String, bool, u32)> = gone
        .memberships
        .iter()
        .filter(|(_, m)| m.member)
        .map(|(audience, m)| (audience.clone(), false, m.changes + 1))
        .collect();
    if changes.is_empty() {
        return Vec::new();
    }
    let traits = gone.trait_values();
    let keys: Vec<String> = gone.identities.iter().cloned().collect();
    let view = ProfileNow { id: &gone.id, keys: &keys, traits: &traits, tags: &gone.tags, consent: &gone.consent };
    activation.destinations.audience_messages(&view, &changes, &activation.names, now)
}

/// The batch's deliveries: each touched profile's real-time audience entries and exits (recorded on the
/// profile), its subscribed trait and tag changes, and its events that pass a destination's trigger.
fn deliveries(
    activation: &Activation,
    data: &mut BTreeMap<String, Profile>,
    before: &Before,
    triggered: &[(String, &CanonicalEvent)],
    now: UtcTime,
) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut events_of: BTreeMap<&str, Vec<&CanonicalEvent>> = BTreeMap::new();
    for (profile, event) in triggered {
        events_of.entry(profile.as_str()).or_default().push(event);
    }
    for (id, (traits_before, tags_before)) in before {
        // A profile merged away in this batch has no deliveries of its own.
        let Some(profile) = data.get_mut(id) else { continue };
        let traits = profile.trait_values();
        let decided = activation.audiences.realtime_members(&traits, &profile.tags);
        let changes = crate::audiences::record_memberships(&mut profile.memberships, &decided, now.unix_millis());
        let keys: Vec<String> = profile.identities.iter().cloned().collect();
        let view = ProfileNow { id, keys: &keys, traits: &traits, tags: &profile.tags, consent: &profile.consent };
        messages.extend(activation.destinations.audience_messages(&view, &changes, &activation.names, now));
        messages.extend(activation.destinations.change_messages(&view, traits_before, tags_before, now));
        for event in events_of.get(id.as_str()).into_iter().flatten() {
            messages.extend(activation.destinations.trigger_messages(&view, event, now));
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::event::{Enrichment, EventType, Identifier};

    fn t(sec: i64) -> UtcTime {
        UtcTime::from_unix_millis(1_764_000_000_000 + sec * 1000).unwrap()
    }

    fn event(kind: EventType, msg: &str, sec: i64, ids: &[(&str, &str)], previous: Option<&str>) -> CanonicalEvent {
        CanonicalEvent {
            message_id: msg.into(),
            kind,
            source_id: "web".into(),
            received_at: t(sec),
            timestamp: t(sec),
            original_timestamp: None,
            sent_at: None,
            user_id: None,
            anonymous_id: None,
            event: Some("Order Completed".into()).filter(|_| kind == EventType::Track),
            name: None,
            category: None,
            group_id: None,
            previous_id: previous.map(String::from),
            properties: json!({"revenue": 120}).as_object().cloned(),
            traits: None,
            context: Default::default(),
            integrations: Default::default(),
            identifiers: ids
                .iter()
                .map(|(kind, value)| Identifier { kind: kind.to_string(), value: value.to_string(), sha256: None })
                .collect(),
            enrichment: Enrichment::default(),
            extras: Default::default(),
        }
    }

    #[test]
    fn a_visitor_who_logs_in_and_buys_is_one_profile_with_its_tag_and_the_alias_keys_are_read() {
        let identity = IdentityRules::default();
        let profiles = ProfileRules::default();
        let defs: Vec<crate::tags::TagDefinition> =
            serde_json::from_value(json!([{"id": "spend", "status": "active", "kind": "statistical",
            "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "sum", "property": "revenue"}}]))
            .unwrap();
        let tags = TagSet::check(&defs, &crate::tags::Catalog::default()).unwrap();
        let ready = BTreeMap::from([("spend".to_string(), 1)]);
        let rules =
            Rules { identity: &identity, profiles: &profiles, tags: Some(&tags), ready: &ready, activation: None };
        let events = [
            event(EventType::Track, "m1", 1, &[("anonymous_id", "a1")], None),
            event(EventType::Identify, "m2", 2, &[("anonymous_id", "a1"), ("user_id", "u1")], None),
            event(EventType::Alias, "m3", 3, &[("user_id", "u1")], Some("a9")),
        ];
        let read = keys_to_read(&identity, &events);
        assert!(read.contains("user_id:a9") && read.contains("anonymous_id:a9"), "{read:?}");

        let (mut graph, mut data) = (IdentityGraph::default(), BTreeMap::new());
        let done = apply(&mut graph, &mut data, &events, &rules, t(10));
        assert_eq!((done.applied, done.merges, done.refusals, done.messages.len()), (3, 0, 0, 0));
        let profile = graph.profile_of("anonymous_id:a1").expect("the visitor's profile");
        assert_eq!(graph.profile_of("anonymous_id:a9").map(|p| &p.id), Some(&profile.id), "the alias joins it");
        assert_eq!(data[&profile.id].tags.get("spend"), Some(&json!(120.0)), "the tag is up to date");
    }

    #[test]
    fn identities_link_by_the_event_as_sent_and_the_rest_reads_it_cleaned() {
        let mut identity = IdentityRules::default();
        let account = crate::identity::IdentifierType {
            name: "account".into(),
            priority: 3,
            max_per_profile: 1,
            blocked: Vec::new(),
            paths: vec!["properties.accountEmail".into()],
        };
        identity.types.push(account);
        let profiles = ProfileRules::default();
        let ready = BTreeMap::new();
        let rules = Rules { identity: &identity, profiles: &profiles, tags: None, ready: &ready, activation: None };
        let mut sent = event(EventType::Track, "m1", 1, &[("user_id", "u1")], None);
        sent.properties = json!({"accountEmail": " Ann@Example.com", "revenue": "120"}).as_object().cloned();
        let read = keys_to_read(&identity, std::slice::from_ref(&sent));
        let (mut graph, mut data) = (IdentityGraph::default(), BTreeMap::new());
        apply(&mut graph, &mut data, std::slice::from_ref(&sent), &rules, t(10));
        let profile = graph.profile_of("user_id:u1").expect("the profile").id.clone();
        for key in read {
            assert_eq!(graph.profile_of(&key).map(|p| &p.id), Some(&profile), "{key}: the key ingest read");
        }
        let stats = &data[&profile].events["Order Completed"].properties["revenue"];
        assert_eq!((stats.count, stats.sum), (1, 120.0), "the aggregate reads the clean number");
    }
}
