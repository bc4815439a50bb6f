//! Profile updates: policies, counters, merges, and order independence.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::event::Enrichment;

fn t(sec: i64) -> UtcTime {
    UtcTime::from_unix_millis(1_764_000_000_000 + sec * 1000).unwrap()
}

fn event(kind: EventType, msg: &str, sec: i64, source: &str, body: serde_json::Value) -> CanonicalEvent {
    CanonicalEvent {
        message_id: msg.into(),
        kind,
        source_id: source.into(),
        received_at: t(sec),
        timestamp: t(sec),
        original_timestamp: None,
        sent_at: None,
        user_id: Some("u1".into()),
        anonymous_id: None,
        event: body.get("event").and_then(|v| v.as_str()).map(str::to_string),
        name: None,
        category: None,
        group_id: body.get("groupId").and_then(|v| v.as_str()).map(str::to_string),
        previous_id: None,
        properties: body.get("properties").and_then(|v| v.as_object()).cloned(),
        traits: body.get("traits").and_then(|v| v.as_object()).cloned(),
        context: Default::default(),
        integrations: Default::default(),
        identifiers: vec![],
        enrichment: Enrichment::default(),
        extras: Default::default(),
    }
}

fn identify(msg: &str, sec: i64, source: &str, traits: serde_json::Value) -> CanonicalEvent {
    event(EventType::Identify, msg, sec, source, json!({ "traits": traits }))
}

fn order(msg: &str, sec: i64, revenue: f64) -> CanonicalEvent {
    event(EventType::Track, msg, sec, "web", json!({"event": "Order Completed", "properties": {"revenue": revenue}}))
}

#[test]
fn last_write_wins_by_event_time_not_arrival() {
    let rules = ProfileRules::default();
    let mut p = Profile::new("p".into());
    p.apply(&identify("m2", 20, "web", json!({"plan": "pro"})), &rules);
    p.apply(&identify("m1", 10, "web", json!({"plan": "free", "name": "Jane"})), &rules);
    assert_eq!(p.traits["plan"].value, "pro", "the later event wins even though it arrived first");
    assert_eq!(p.traits["name"].value, "Jane");
}

#[test]
fn first_write_and_source_priority() {
    let mut rules = ProfileRules::default();
    rules.traits.insert("createdAt".into(), TraitPolicy::FirstWrite);
    rules.traits.insert("email".into(), TraitPolicy::SourcePriority { sources: vec!["crm".into()] });
    let mut p = Profile::new("p".into());
    p.apply(&identify("m1", 10, "crm", json!({"createdAt": "2020", "email": "crm@x.example"})), &rules);
    p.apply(&identify("m2", 20, "web", json!({"createdAt": "2024", "email": "web@x.example"})), &rules);
    assert_eq!(p.traits["createdAt"].value, "2020");
    assert_eq!(p.traits["email"].value, "crm@x.example", "the CRM outranks the website");
    p.apply(&identify("m3", 30, "crm", json!({"email": "new@x.example"})), &rules);
    assert_eq!(p.traits["email"].value, "new@x.example", "among equals, the latest");
}

#[test]
fn counters_and_aggregates() {
    let rules = ProfileRules::default();
    let mut p = Profile::new("p".into());
    p.apply(&order("m1", 10, 20.0), &rules);
    p.apply(&order("m2", 30, 5.5), &rules);
    p.apply(&event(EventType::Page, "m3", 5, "web", json!({})), &rules);
    p.apply(&event(EventType::Group, "m4", 40, "web", json!({"groupId": "acme"})), &rules);
    let orders = &p.events["Order Completed"];
    assert_eq!((orders.count, orders.first_at, orders.last_at), (2, Some(t(10)), Some(t(30))));
    let revenue = &orders.properties["revenue"];
    assert_eq!((revenue.count, revenue.sum, revenue.min, revenue.max), (2, 25.5, 5.5, 20.0));
    assert_eq!(p.events["page"].count, 1);
    assert_eq!((p.first_seen, p.last_seen), (Some(t(5)), Some(t(40))));
    assert!(p.groups.contains("acme"));
}

#[test]
fn absorbing_equals_having_seen_everything() {
    let rules = ProfileRules::default();
    let events_a = [identify("m1", 10, "web", json!({"plan": "free"})), order("m2", 20, 10.0)];
    let events_b = [identify("m3", 30, "web", json!({"plan": "pro"})), order("m4", 5, 3.0)];
    let mut a = Profile::new("a".into());
    let mut b = Profile::new("b".into());
    events_a.iter().for_each(|e| a.apply(e, &rules));
    events_b.iter().for_each(|e| b.apply(e, &rules));
    a.absorb(b, &rules);
    let mut all = Profile::new("a".into());
    events_a.iter().chain(&events_b).for_each(|e| all.apply(e, &rules));
    assert!(a.merged_ids.contains("b"));
    a.merged_ids.clear();
    assert_eq!(a, all);
}

proptest! {
    /// Any arrival order of the same events gives the same profile.
    #[test]
    fn order_does_not_matter(seed in any::<u64>(), n in 1usize..12) {
        let rules = ProfileRules::default();
        let events: Vec<CanonicalEvent> = (0..n)
            .map(|i| match i % 3 {
                0 => identify(&format!("m{i}"), (i as i64 * 7) % 5, "web", json!({"plan": format!("p{i}"), "n": i})),
                1 => order(&format!("m{i}"), i as i64, i as f64 * 1.5),
                _ => event(EventType::Page, &format!("m{i}"), 100 - i as i64, "web", json!({})),
            })
            .collect();
        let mut shuffled = events.clone();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut a = Profile::new("p".into());
        let mut b = Profile::new("p".into());
        events.iter().for_each(|e| a.apply(e, &rules));
        shuffled.iter().for_each(|e| b.apply(e, &rules));
        // Sums of floats may differ in the last bit with order; compare them rounded.
        for p in [&mut a, &mut b] {
            for stats in p.events.values_mut() {
                for agg in stats.properties.values_mut() {
                    agg.sum = (agg.sum * 1e6).round() / 1e6;
                }
            }
        }
        prop_assert_eq!(a, b);
    }
}
