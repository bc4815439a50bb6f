//! Audience membership with hand-checked results, diffs across computations, definition errors, insight.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::*;
use crate::tags::{Catalog, TagDefinition, TagSet, ValueKind};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_795_000_000_000;

struct Person {
    id: &'static str,
    traits: Map<String, Value>,
    /// (event name, time)
    events: Vec<(&'static str, i64)>,
}

fn person(id: &'static str, traits: Value, events: &[(&'static str, f64)]) -> Person {
    Person {
        id,
        traits: traits.as_object().cloned().unwrap_or_default(),
        events: events.iter().map(|(name, days_ago)| (*name, T0 - (days_ago * DAY as f64) as i64)).collect(),
    }
}

fn tags() -> TagSet {
    let defs: Vec<TagDefinition> = serde_json::from_value(json!([
        {"id": "orders", "status": "active", "kind": "statistical", "filter": {"events": ["Order Completed"]},
         "aggregate": {"op": "count"}},
        {"id": "tier", "status": "active", "kind": "buckets", "of": "tag:orders",
         "buckets": [{"label": "high", "min": 3}], "otherwise": "low"}
    ]))
    .expect("tags parse");
    TagSet::check(&defs, &Catalog::default()).expect("tags check")
}

fn audiences(value: Value) -> AudienceSet {
    let defs: Vec<AudienceDefinition> = serde_json::from_value(value).expect("audiences parse");
    AudienceSet::check(&defs, &tags(), &Catalog::default()).unwrap_or_else(|e| panic!("{e:?}"))
}

/// Each person's audiences at `now`.
fn members(set: &AudienceSet, people: &[Person], now: i64) -> BTreeMap<&'static str, BTreeSet<String>> {
    let empty = Map::new();
    let tag_set = tags();
    people
        .iter()
        .map(|p| {
            let views: Vec<EventView<'_>> = p
                .events
                .iter()
                .map(|(name, at)| EventView { kind: "track", event: Some(name), at: *at, id: "", properties: &empty })
                .collect();
            let tag_values = tag_set.evaluate(&p.traits, &views, now);
            (p.id, set.members(&p.traits, &tag_values, &views, now))
        })
        .collect()
}

fn people() -> Vec<Person> {
    vec![
        person(
            "ann",
            json!({"plan": "pro"}),
            &[("Order Completed", 100.0), ("Order Completed", 50.0), ("Order Completed", 40.0)],
        ),
        person(
            "bob",
            json!({"plan": "free"}),
            &[("Order Completed", 2.0), ("Product Viewed", 1.0), ("Product Viewed", 1.0), ("Product Viewed", 0.5)],
        ),
        person("cyd", json!({}), &[("Product Viewed", 10.0)]),
        person(
            "dee",
            json!({"plan": "pro"}),
            &[("Order Completed", 5.0), ("Order Completed", 4.0), ("Order Completed", 3.0), ("Order Completed", 1.0)],
        ),
    ]
}

#[test]
fn membership_by_tags_traits_behaviour_and_other_audiences() {
    let set = audiences(json!([
        {"id": "lapsed_vips", "status": "active",
         "when": {"and": [{"in_audience": "vip"}, {"in_audience": "lapsed"}]}},
        {"id": "vip", "status": "active", "when": {"field": "tag:tier", "op": "eq", "value": "high"}},
        {"id": "lapsed", "status": "active", "when": {"did_not": {"events": ["Order Completed"], "window": {"lastDays": 30}}}},
        {"id": "browsers", "status": "active",
         "when": {"did": {"events": ["Product Viewed"], "window": {"lastDays": 7}, "atLeast": 3}}},
        {"id": "one_or_two_orders", "status": "active",
         "when": {"did": {"events": ["Order Completed"], "atLeast": 1, "atMost": 2}}},
        {"id": "pro_non_vips", "status": "active",
         "when": {"and": [{"field": "trait:plan", "op": "eq", "value": "pro"}, {"not": {"in_audience": "vip"}}]}},
        {"id": "draft_one", "when": {"field": "trait:plan", "op": "exists"}}
    ]));
    let got = members(&set, &people(), T0);
    let expect = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(got["ann"], expect(&["lapsed", "lapsed_vips", "vip"]));
    assert_eq!(got["bob"], expect(&["browsers", "one_or_two_orders"]));
    assert_eq!(got["cyd"], expect(&["lapsed"]));
    assert_eq!(got["dee"], expect(&["vip"]));
    assert!(set.audiences().iter().all(|a| a.id != "draft_one"), "drafts are not computed");
    let order: Vec<&str> = set.audiences().iter().map(|a| a.id.as_str()).collect();
    let position = |id: &str| order.iter().position(|a| *a == id).unwrap_or(usize::MAX);
    assert!(position("vip") < position("lapsed_vips") && position("lapsed") < position("lapsed_vips"));
}

#[test]
fn diffs_report_each_entry_and_exit_once_and_nothing_when_nothing_changed() {
    let set = audiences(json!([
        {"id": "active_week", "status": "active", "when": {"did": {"window": {"lastDays": 7}}}}
    ]));
    let mut population = vec![
        person("a", json!({}), &[("Page", 1.0)]),
        person("b", json!({}), &[("Page", 6.0)]),
        person("c", json!({}), &[("Page", 30.0)]),
    ];
    let of = |m: BTreeMap<&'static str, BTreeSet<String>>| -> BTreeSet<String> {
        m.into_iter().filter(|(_, a)| a.contains("active_week")).map(|(p, _)| p.to_string()).collect()
    };
    let (first, diff) = Snapshot::default().next(of(members(&set, &population, T0)), T0);
    assert_eq!(diff, Diff { entered: vec!["a".into(), "b".into()], exited: vec![] });

    // Two days later: b's visit is 8 days old; c came back.
    let t1 = T0 + 2 * DAY;
    population[2].events.push(("Page", t1 - DAY / 2));
    let (second, diff) = first.next(of(members(&set, &population, t1)), t1);
    assert_eq!(diff, Diff { entered: vec!["c".into()], exited: vec!["b".into()] });

    // Recomputed with nothing changed: an empty diff.
    let (third, diff) = second.next(of(members(&set, &population, t1)), t1);
    assert!(diff.is_empty(), "{diff:?}");
    assert_eq!(third.sizes, vec![(T0, 2), (t1, 2), (t1, 2)]);
    assert_eq!(third.members, ["a", "c"].map(String::from).into());
}

#[test]
fn definition_errors_name_the_field() {
    let catalog = Catalog {
        events: ["Order Completed".to_string()].into(),
        traits: [("plan".to_string(), ValueKind::String)].into(),
        properties: BTreeMap::new(),
    };
    let cases = [
        (json!({"id": "x", "when": {"in_audience": "nope"}}), "audiences[0] (x).when: unknown audience `nope`"),
        (
            json!({"id": "x", "when": {"field": "tag:nope", "op": "exists"}}),
            "audiences[0] (x).when.field: unknown tag `nope`",
        ),
        (
            json!({"id": "x", "when": {"field": "trait:plann", "op": "exists"}}),
            "audiences[0] (x).when.field: unknown trait `plann`",
        ),
        (
            json!({"id": "x", "when": {"did": {"events": ["Order Complete"]}}}),
            "audiences[0] (x).when.did.events[0]: unknown event `Order Complete`",
        ),
        (
            json!({"id": "x", "when": {"did": {"atLeast": 3, "atMost": 1}}}),
            "audiences[0] (x).when.did: atLeast 3 is above atMost 1",
        ),
        (
            json!({"id": "x", "when": {"did_not": {"atLeast": 2}}}),
            "audiences[0] (x).when.did_not: did_not means zero times",
        ),
        (
            json!({"id": "x", "when": {"did": {"window": {"lastHours": 0}}}}),
            "audiences[0] (x).when.did.window: a window of zero length",
        ),
        (json!({"id": "x", "when": {"or": []}}), "audiences[0] (x).when: `or` of nothing"),
    ];
    for (definition, expected) in cases {
        let defs: Vec<AudienceDefinition> = serde_json::from_value(json!([definition])).expect("parses");
        let found: Vec<String> = match AudienceSet::check(&defs, &tags(), &catalog) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        };
        assert!(found.iter().any(|e| e.starts_with(expected)), "expected {expected:?}, got {found:?}");
    }
    let cycle: Vec<AudienceDefinition> = serde_json::from_value(json!([
        {"id": "a", "status": "active", "when": {"in_audience": "b"}},
        {"id": "b", "status": "active", "when": {"not": {"in_audience": "a"}}}
    ]))
    .expect("parses");
    let errors = AudienceSet::check(&cycle, &tags(), &Catalog::default()).expect_err("a cycle");
    assert!(errors.iter().any(|e| e.problem.contains("a cycle")), "{errors:?}");
    let unknown: Result<AudienceDefinition, _> =
        serde_json::from_value(json!({"id": "x", "when": {"did": {"event": "typo"}}}));
    let message = unknown.unwrap_err().to_string();
    assert!(message.contains("event"), "unknown behaviour fields are refused: {message}");
}

#[test]
fn insight_ranks_a_planted_distinguishing_trait_first() {
    // A fixed pseudo-random population: plan, country and newsletter independent of membership; members
    // came mostly through partners (80 % against 5 % of everyone else).
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut profiles = Vec::new();
    let mut in_audience = BTreeSet::new();
    for i in 0..2000 {
        let member = i % 10 == 0;
        let channel = if next(100) < if member { 80 } else { 5 } {
            "partner"
        } else {
            ["search", "social", "email"][next(3) as usize]
        };
        let plan = ["free", "pro", "team", "enterprise"][next(4) as usize];
        let country = ["DE", "FR", "US", "JP", "BR"][next(5) as usize];
        let newsletter = next(2) == 0;
        let traits = json!({"plan": plan, "country": country, "newsletter": newsletter, "channel": channel});
        let id = format!("p{i}");
        if member {
            in_audience.insert(id.clone());
        }
        let tags = BTreeMap::from([("tier".to_string(), json!(if next(2) == 0 { "high" } else { "low" }))]);
        profiles.push((id, traits.as_object().cloned().unwrap_or_default(), tags));
    }
    let population = profiles.iter().map(|(id, traits, tags)| (id.as_str(), traits, tags));
    let ranked = insight(&in_audience, population, 5);
    assert_eq!((ranked[0].field.as_str(), &ranked[0].value), ("trait:channel", &json!("partner")), "{ranked:?}");
    assert!(ranked[0].lift > 5.0 && ranked[0].share > 0.7, "{:?}", ranked[0]);
    assert!(ranked.windows(2).all(|w| w[0].lift >= w[1].lift), "sorted by lift");
    assert!(ranked[1..].iter().all(|r| r.lift < 1.6), "nothing else stands out: {ranked:?}");
}

#[test]
fn insight_counted_once_for_every_audience_matches_each_audience_alone() {
    // 60 profiles; audience "even" holds even numbers, "small" the first 20, overlapping.
    let mut profiles = Vec::new();
    for i in 0..60u32 {
        let plan = ["free", "pro", "team"][(i % 3) as usize];
        let traits = json!({"plan": plan, "vip": i % 2 == 0,
            "email": format!("p{i}@example.com"), "visits": i});
        let tags = BTreeMap::from([("tier".to_string(), json!(if i < 20 { "high" } else { "low" }))]);
        profiles.push((format!("p{i}"), traits.as_object().cloned().unwrap_or_default(), tags));
    }
    let even: BTreeSet<String> = (0..60).step_by(2).map(|i| format!("p{i}")).collect();
    let small: BTreeSet<String> = (0..20).map(|i| format!("p{i}")).collect();
    let mut counts = InsightCounts::default();
    for (id, traits, tags) in &profiles {
        let member_of = [("even", &even), ("small", &small)].into_iter().filter(|(_, m)| m.contains(id));
        counts.observe(traits, tags, member_of.map(|(a, _)| a));
    }
    for (name, members) in [("even", &even), ("small", &small)] {
        let alone = insight(members, profiles.iter().map(|(id, t, g)| (id.as_str(), t, g)), 10);
        assert_eq!(counts.top(name, 10), alone, "{name}");
        assert!(!alone.is_empty());
        assert!(alone.iter().all(|i| i.field != "trait:email" && i.field != "trait:visits"), "{alone:?}");
    }
    let even_top = counts.top("even", 10);
    assert_eq!((even_top[0].field.as_str(), &even_top[0].value, even_top[0].lift), ("trait:vip", &json!(true), 2.0));
    let small_top = counts.top("small", 10);
    assert_eq!(
        (small_top[0].field.as_str(), &small_top[0].value, small_top[0].lift),
        ("tag:tier", &json!("high"), 3.0)
    );
    assert!(counts.top("nobody", 10).is_empty());
}

#[test]
fn the_published_schema_lists_every_operator_and_field() {
    let schema: Value = serde_json::from_str(include_str!("../../../docs/schemas/audience-definition.schema.json"))
        .expect("schema is JSON");
    let keys: Vec<String> = schema["$defs"]["expr"]["oneOf"]
        .as_array()
        .expect("oneOf")
        .iter()
        .filter_map(|branch| branch["required"].as_array().and_then(|r| r.first()).and_then(Value::as_str))
        .map(String::from)
        .collect();
    assert_eq!(keys, ["and", "or", "not", "did", "did_not", "in_audience"]);
    // Each operator key parses into its variant, and every behaviour field in the schema is accepted.
    let behaviour: Vec<String> =
        schema["$defs"]["behaviour"]["properties"].as_object().expect("fields").keys().cloned().collect();
    let mut full = serde_json::Map::new();
    for field in &behaviour {
        let value = match field.as_str() {
            "window" => json!({"lastDays": 3}),
            "atLeast" | "atMost" => json!(1),
            _ => json!([]),
        };
        full.insert(field.clone(), value);
    }
    for key in &keys {
        let inner = match key.as_str() {
            "and" | "or" => json!([{"in_audience": "x"}]),
            "not" => json!({"in_audience": "x"}),
            "in_audience" => json!("x"),
            _ => Value::Object(full.clone()),
        };
        let parsed: AudienceExpr = serde_json::from_value(json!({ key.as_str(): inner })).expect("parses");
        let back = serde_json::to_value(&parsed).expect("serializes");
        assert!(back.get(key.as_str()).is_some(), "{key} round-trips: {back}");
    }
    let top: Vec<String> = schema["properties"].as_object().expect("properties").keys().cloned().collect();
    let example: AudienceDefinition = serde_json::from_value(
        json!({"id": "x", "name": "", "description": "", "owner": "", "status": "active", "expected": ["plan"],
               "when": {"in_audience": "y"}}),
    )
    .expect("every top-level field parses");
    assert_eq!(top.len(), 7);
    assert_eq!(example.status, Lifecycle::Active);
}

#[test]
fn realtime_audiences_are_those_decided_by_traits_and_tags_alone() {
    let set = audiences(json!([
        {"id": "high", "status": "active", "when": {"field": "tag:tier", "op": "eq", "value": "high"}},
        {"id": "pro_high", "status": "active", "when": {"and": [{"in_audience": "high"}, {"field": "trait:plan", "op": "eq", "value": "pro"}]}},
        {"id": "recent", "status": "active", "when": {"did": {"events": ["Order Completed"], "window": {"lastDays": 7}}}},
        {"id": "not_recent", "status": "active", "when": {"not": {"in_audience": "recent"}}}
    ]));
    assert!(set.is_realtime("high") && set.is_realtime("pro_high"));
    assert!(!set.is_realtime("recent") && !set.is_realtime("not_recent"), "behaviour, directly or not");
    assert!(!set.is_realtime("missing"));
    let traits = json!({"plan": "pro"});
    let tags: BTreeMap<String, Value> = [("tier".to_string(), json!("high"))].into();
    let decided = set.realtime_members(traits.as_object().unwrap(), &tags);
    assert_eq!(decided, [("high".to_string(), true), ("pro_high".to_string(), true)].into());
    let low: BTreeMap<String, Value> = [("tier".to_string(), json!("low"))].into();
    let decided = set.realtime_members(traits.as_object().unwrap(), &low);
    assert_eq!(decided, [("high".to_string(), false), ("pro_high".to_string(), false)].into());
}

#[test]
fn insight_never_reveals_personal_data_or_a_few_members_values() {
    let mut profiles = Vec::new();
    for i in 0..100 {
        let traits =
            json!({"email": format!("p{i}@example.com"), "name": "Jane Roe", "vip": if i < 3 { "yes" } else { "no" }});
        profiles.push((format!("p{i}"), traits.as_object().cloned().unwrap_or_default(), BTreeMap::new()));
    }
    // An audience of three: the only values they share are their names (personal) and `vip: yes` (held by
    // fewer than five members).
    let members: BTreeSet<String> = ["p0", "p1", "p2"].iter().map(|s| s.to_string()).collect();
    let population = profiles.iter().map(|(id, traits, tags)| (id.as_str(), traits, tags));
    let ranked = insight(&members, population, 10);
    assert!(ranked.is_empty(), "{ranked:?}");
}
