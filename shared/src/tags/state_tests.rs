//! Incremental and full computation agree exactly: tag states built batch by batch (in arrival order, with
//! profile merges and a serialization round trip after every batch) give the same values as evaluating
//! every event at once.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_795_000_000_000;

fn tag_set() -> TagSet {
    let defs: Vec<TagDefinition> = serde_json::from_value(json!([
        {"id": "n", "status": "active", "kind": "statistical", "aggregate": {"op": "count"}},
        {"id": "orders_7d", "status": "active", "kind": "statistical", "filter": {"events": ["Order"]},
         "aggregate": {"op": "count"}, "window": {"lastDays": 7}},
        {"id": "with_revenue", "status": "active", "kind": "statistical", "aggregate": {"op": "count", "property": "revenue"}},
        {"id": "spend", "status": "active", "kind": "statistical", "aggregate": {"op": "sum", "property": "revenue"}},
        {"id": "spend_30d", "status": "active", "kind": "statistical", "aggregate": {"op": "sum", "property": "revenue"},
         "window": {"lastDays": 30}},
        {"id": "avg_7d", "status": "active", "kind": "statistical", "aggregate": {"op": "avg", "property": "revenue"},
         "window": {"lastDays": 7}},
        {"id": "avg", "status": "active", "kind": "statistical", "aggregate": {"op": "avg", "property": "revenue"}},
        {"id": "low", "status": "active", "kind": "statistical", "aggregate": {"op": "min", "property": "revenue"}},
        {"id": "high", "status": "active", "kind": "statistical", "aggregate": {"op": "max", "property": "revenue"},
         "window": {"lastHours": 36}},
        {"id": "first_cat", "status": "active", "kind": "statistical", "aggregate": {"op": "first", "property": "category"}},
        {"id": "last_cat", "status": "active", "kind": "statistical", "aggregate": {"op": "last", "property": "category"}},
        {"id": "cats", "status": "active", "kind": "statistical", "aggregate": {"op": "distinct_count", "property": "category"}},
        {"id": "top_cat", "status": "active", "kind": "statistical",
         "aggregate": {"op": "most_frequent", "property": "category"}},
        {"id": "top_cat_30d", "status": "active", "kind": "statistical",
         "aggregate": {"op": "most_frequent", "property": "category"}, "window": {"lastDays": 30}},
        {"id": "cat_list", "status": "active", "kind": "statistical",
         "aggregate": {"op": "unique_list", "property": "category"}},
        {"id": "shoe_orders", "status": "active", "kind": "statistical",
         "filter": {"events": ["Order"], "properties": [{"field": "category", "op": "eq", "value": "shoes"}]},
         "aggregate": {"op": "sum", "property": "revenue"}},
        {"id": "big", "status": "active", "kind": "rule", "when": {"field": "tag:spend", "op": "gt", "value": 100}},
        {"id": "tier", "status": "active", "kind": "buckets", "of": "tag:spend_30d",
         "buckets": [{"label": "high", "min": 50}, {"label": "mid", "min": 0}], "otherwise": "refund"}
    ]))
    .expect("definitions");
    TagSet::check(&defs, &Catalog::default()).expect("valid")
}

/// (profile, hours before T0, is an order, revenue, category)
type Generated = (usize, i64, bool, Option<f64>, Option<&'static str>);

fn event() -> impl Strategy<Value = Generated> {
    let revenue = prop_oneof![
        Just(None),
        Just(Some(0.1)),
        Just(Some(0.2)),
        Just(Some(-3.5)),
        Just(Some(1e16)),
        Just(Some(1.0)),
        (0u32..500).prop_map(|c| Some(f64::from(c) / 4.0)),
    ];
    let category = prop_oneof![Just(None), Just(Some("shoes")), Just(Some("shirts")), Just(Some("hats"))];
    (0usize..5, 0i64..(60 * 24), any::<bool>(), revenue, category)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn incremental_states_give_the_values_of_a_full_evaluation(
        events in proptest::collection::vec(event(), 1..60),
        cuts in proptest::collection::vec(1usize..8, 1..10),
        merges in proptest::collection::vec((0usize..5, 0usize..5, 0usize..10), 0..4),
    ) {
        let set = tag_set();
        let empty = Map::new();
        let properties: Vec<Map<String, Value>> = events
            .iter()
            .map(|(_, _, _, revenue, category)| {
                let mut p = Map::new();
                if let Some(r) = revenue { p.insert("revenue".into(), json!(r)); }
                if let Some(c) = category { p.insert("category".into(), json!(c)); }
                p
            })
            .collect();
        let ids: Vec<String> = (0..events.len()).map(|i| format!("m{i:03}")).collect();
        let view = |i: usize| {
            let (_, hours, order, _, _) = events[i];
            EventView {
                kind: "track",
                event: Some(if order { "Order" } else { "View" }),
                at: T0 - hours * HOUR,
                id: &ids[i],
                properties: properties.get(i).unwrap_or(&empty),
            }
        };
        // owner[p]: the profile p's events go to (merges redirect).
        let mut owner: Vec<usize> = (0..5).collect();
        let find = |owner: &Vec<usize>, mut p: usize| { while owner[p] != p { p = owner[p]; } p };
        let mut states: BTreeMap<usize, ProfileTagState> = BTreeMap::new();
        let mut all: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let (mut next, mut batch, mut now) = (0usize, 0usize, T0);
        while next < events.len() {
            let size = cuts[batch % cuts.len()];
            let end = (next + size).min(events.len());
            for (i, generated) in events.iter().enumerate().take(end).skip(next) {
                let p = find(&owner, generated.0);
                set.observe(states.entry(p).or_default(), &view(i), now);
                all.entry(p).or_default().push(i);
            }
            next = end;
            // Merges scheduled after this batch: b absorbs a.
            for &(a, b, at_batch) in &merges {
                let (a, b) = (find(&owner, a), find(&owner, b));
                if at_batch == batch && a != b {
                    owner[a] = b;
                    if let Some(theirs) = states.remove(&a) {
                        states.entry(b).or_default().absorb(theirs);
                    }
                    let moved = all.remove(&a).unwrap_or_default();
                    all.entry(b).or_default().extend(moved);
                }
            }
            // Stored and read back between batches.
            for state in states.values_mut() {
                let json = serde_json::to_string(state).expect("serialize");
                *state = serde_json::from_str(&json).expect("deserialize");
            }
            batch += 1;
            now += HOUR;
        }
        let traits = Map::new();
        for later in [0, 3 * 24 * HOUR, 40 * 24 * HOUR] {
            let at = now + later;
            for (p, state) in &states {
                let views: Vec<EventView<'_>> = all.get(p).map(|is| is.iter().map(|&i| view(i)).collect()).unwrap_or_default();
                let full = set.evaluate(&traits, &views, at);
                let incremental = set.evaluate_state(state, &traits, at);
                prop_assert_eq!(&incremental, &full, "profile {} at +{} h", p, later / HOUR);
            }
        }
    }
}

#[test]
fn sums_do_not_depend_on_the_order_of_additions() {
    let values = [1e16, 1.0, -1e16, 0.1, 0.2, 0.3];
    let mut forward = Summary::default();
    let mut backward = Summary::default();
    for (i, x) in values.iter().enumerate() {
        forward.add(AggregateOp::Sum, (i as i64, String::new()), Some(&json!(x)));
    }
    for (i, x) in values.iter().enumerate().rev() {
        backward.add(AggregateOp::Sum, (i as i64, String::new()), Some(&json!(x)));
    }
    assert_eq!(forward.value(AggregateOp::Sum, true), backward.value(AggregateOp::Sum, true));
    // The exact sum is 1.6, rounded once. Plain floating-point addition loses the 1.0 next to 1e16.
    assert_eq!(forward.value(AggregateOp::Sum, true), json!(1.6));
    let naive: f64 = values.iter().sum();
    assert_ne!(naive, 1.6, "plain addition would not do ({naive})");
}
