//! The columnar evaluation gives the reference values: every aggregation, operator and value kind, on
//! generated profiles and events (ties in time, missing and mixed-kind values, profiles without events).

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_795_000_000_000;

fn tag_set() -> TagSet {
    let stat = |id: &str, aggregate: Value, extra: Value| {
        let mut def = json!({"id": id, "status": "active", "kind": "statistical", "aggregate": aggregate});
        def.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        def
    };
    let mut defs = vec![
        stat("n", json!({"op": "count"}), json!({})),
        stat("pages_2h", json!({"op": "count"}), json!({"filter": {"types": ["page"]}, "window": {"lastHours": 2}})),
        stat("orders_1d", json!({"op": "count"}), json!({"filter": {"events": ["Order"]}, "window": {"lastDays": 1}})),
        stat("with_revenue", json!({"op": "count", "property": "revenue"}), json!({})),
        stat(
            "big_orders",
            json!({"op": "count"}),
            json!({"filter": {"events": ["Order"], "properties": [{"field": "revenue", "op": "gte", "value": 10}]}}),
        ),
    ];
    for op in ["sum", "avg", "min", "max", "first", "last", "distinct_count", "most_frequent", "unique_list"] {
        for property in ["revenue", "category", "qty", "mixed"] {
            defs.push(stat(&format!("{op}_{property}"), json!({"op": op, "property": property}), json!({})));
        }
        defs.push(stat(
            &format!("{op}_revenue_3h"),
            json!({"op": op, "property": "revenue"}),
            json!({"window": {"lastHours": 3}}),
        ));
    }
    // Every comparison operator, on numbers, strings, booleans and mixed values, in filters and rules.
    let conditions = [
        ("eq", json!(2)),
        ("eq", json!("shoes")),
        ("ne", json!(2)),
        ("ne", json!("shoes")),
        ("gt", json!(2)),
        ("gte", json!(2.5)),
        ("lt", json!("m")),
        ("lte", json!(3)),
        ("in", json!([1, "hats", true])),
        ("contains", json!("ho")),
        ("contains", json!(1)),
        ("exists", json!(true)),
        ("exists", json!(false)),
        ("between", json!([1, 3])),
        ("regex", json!("^sh")),
        ("eq", json!(true)),
    ];
    for (i, (op, value)) in conditions.iter().enumerate() {
        for property in ["revenue", "category", "qty", "mixed", "flag"] {
            defs.push(stat(
                &format!("f{i}_{property}"),
                json!({"op": "count"}),
                json!({"filter": {"properties": [{"field": property, "op": op, "value": value}]}}),
            ));
        }
        for name in ["age", "plan", "vip", "mixed", "labels", "missing"] {
            defs.push(json!({"id": format!("r{i}_{name}"), "status": "active", "kind": "rule",
                "when": {"field": format!("trait:{name}"), "op": op, "value": value}}));
        }
        // A number tag compared with a string or boolean is a definition error, not a rule.
        if !(value.is_string() || value.is_boolean()) {
            defs.push(json!({"id": format!("t{i}"), "status": "active", "kind": "rule",
                "when": {"field": "tag:sum_revenue", "op": op, "value": value}}));
        }
    }
    defs.extend([
        json!({"id": "combo", "status": "active", "kind": "rule", "when": {"or": [
            {"and": [{"field": "tag:n", "op": "gt", "value": 3}, {"not": {"field": "trait:vip", "op": "eq", "value": true}}]},
            {"field": "tag:first_category", "op": "eq", "value": "hats"}
        ]}}),
        json!({"id": "tier", "status": "active", "kind": "buckets", "of": "tag:sum_revenue",
            "buckets": [{"label": "high", "min": 20}, {"label": "mid", "min": 0, "max": 20}], "otherwise": "refund"}),
        json!({"id": "age_band", "status": "active", "kind": "buckets", "of": "trait:age",
            "buckets": [{"label": "young", "max": 30}, {"label": "old", "min": 30}]}),
        json!({"id": "cat_band", "status": "active", "kind": "buckets", "of": "tag:top", "buckets": [{"label": "x"}]}),
        json!({"id": "top", "status": "active", "kind": "statistical",
            "aggregate": {"op": "most_frequent", "property": "qty"}, "window": {"lastHours": 5}}),
    ]);
    let defs: Vec<TagDefinition> = serde_json::from_value(Value::Array(defs)).expect("definitions");
    TagSet::check(&defs, &Catalog::default()).expect("valid")
}

fn value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        (-2i64..5).prop_map(|n| Some(json!(n))),
        (0u32..40).prop_map(|c| Some(json!(f64::from(c) / 4.0))),
        Just(Some(json!(0.1))),
        Just(Some(json!(-0.0))),
        Just(Some(json!("shoes"))),
        Just(Some(json!("hats"))),
        Just(Some(json!("m"))),
        Just(Some(json!(true))),
        Just(Some(json!([1, "shoes"]))),
        Just(Some(json!({"a": 1}))),
    ]
}

/// (profile, hours before T0, kind, event name, revenue, category, qty, mixed, flag)
type Generated = (u32, i64, bool, bool, Option<f64>, Option<&'static str>, Option<i64>, Option<Value>, Option<bool>);

fn event() -> impl Strategy<Value = Generated> {
    let revenue =
        prop_oneof![Just(None), Just(Some(0.1)), Just(Some(1e16)), (0u32..80).prop_map(|c| Some(f64::from(c) / 4.0))];
    let category = prop_oneof![Just(None), Just(Some("shoes")), Just(Some("shirts")), Just(Some("hats"))];
    let qty = prop_oneof![Just(None), (0i64..4).prop_map(Some)];
    (
        0u32..6,
        0i64..8,
        any::<bool>(),
        any::<bool>(),
        revenue,
        category,
        qty,
        value(),
        proptest::option::of(any::<bool>()),
    )
}

type Traits = (Option<Value>, Option<&'static str>, Option<bool>, Option<Value>, bool);

fn traits() -> impl Strategy<Value = Traits> {
    let age = prop_oneof![Just(None), (18i64..40).prop_map(|a| Some(json!(a)))];
    let plan = prop_oneof![Just(None), Just(Some("pro")), Just(Some("shoes")), Just(Some("m"))];
    (age, plan, proptest::option::of(any::<bool>()), value(), any::<bool>())
}

/// Equal as the reference compares values: numbers by value, arrays item by item.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        _ => a == b,
    }
}

fn assert_same(expected: &BTreeMap<String, Value>, got: &BTreeMap<String, Value>, profile: usize) {
    let keys = |m: &BTreeMap<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(expected), keys(got), "profile {profile}: tags with a value");
    for (id, value) in expected {
        assert!(same(value, &got[id]), "profile {profile}, tag {id}: expected {value}, got {}", got[id]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn columnar_values_are_the_reference_values(
        events in proptest::collection::vec(event(), 0..50),
        profiles in proptest::collection::vec(traits(), 6),
    ) {
        let set = tag_set();
        let first = 10u32;
        let traits: Vec<Map<String, Value>> = profiles
            .iter()
            .map(|(age, plan, vip, mixed, labels)| {
                let mut t = Map::new();
                if let Some(age) = age { t.insert("age".into(), age.clone()); }
                if let Some(plan) = plan { t.insert("plan".into(), json!(plan)); }
                if let Some(vip) = vip { t.insert("vip".into(), json!(vip)); }
                if let Some(mixed) = mixed { t.insert("mixed".into(), mixed.clone()); }
                if *labels { t.insert("labels".into(), json!(["shoes", 1])); }
                t
            })
            .collect();
        let properties: Vec<Map<String, Value>> = events
            .iter()
            .map(|(_, _, _, _, revenue, category, qty, mixed, flag)| {
                let mut p = Map::new();
                if let Some(r) = revenue { p.insert("revenue".into(), json!(r)); }
                if let Some(c) = category { p.insert("category".into(), json!(c)); }
                if let Some(q) = qty { p.insert("qty".into(), json!(q)); }
                if let Some(m) = mixed { p.insert("mixed".into(), m.clone()); }
                if let Some(f) = flag { p.insert("flag".into(), json!(f)); }
                p
            })
            .collect();
        let ids: Vec<String> = (0..events.len()).map(|i| format!("m{:02}", (i * 7) % 50)).collect();
        let views: Vec<(u32, EventView<'_>)> = events
            .iter()
            .enumerate()
            .map(|(i, (profile, hours, page, order, ..))| {
                (first + profile, EventView {
                    kind: if *page { "page" } else { "track" },
                    event: (!*page).then_some(if *order { "Order" } else { "Viewed" }),
                    // Whole hours: many events share a time, and windows start exactly on some.
                    at: T0 - hours * HOUR,
                    id: &ids[i],
                    properties: &properties[i],
                })
            })
            .collect();
        let trait_refs: Vec<&Map<String, Value>> = traits.iter().collect();
        let table = event_table(views.clone(), &set.properties());
        let profile_rows = profile_table(first, &trait_refs, &set.traits());
        let columns = set.evaluate_columns(&profile_rows, first, &table, T0).expect("evaluates");
        prop_assert_eq!(columns.rows, 6);
        for (i, traits) in traits.iter().enumerate() {
            let own: Vec<EventView<'_>> =
                views.iter().filter(|(p, _)| *p == first + i as u32).map(|(_, e)| *e).collect();
            assert_same(&set.evaluate(traits, &own, T0), &columns.row(i), i);
        }
    }
}

#[test]
fn input_that_breaks_the_table_contract_is_refused_with_the_reason() {
    let set = tag_set();
    let empty = Map::new();
    let view = |at: i64| EventView { kind: "track", event: Some("Order"), at, id: "m", properties: &empty };
    let traits = profile_table(0, &[&empty, &empty], &[]);
    let mut table = event_table(vec![(0, view(T0)), (1, view(T0))], &[]);
    // Out of the chunk.
    let error = set.evaluate_columns(&profile_table(1, &[&empty, &empty], &[]), 1, &table, T0).unwrap_err();
    assert!(error.0.contains("outside this chunk"), "{error}");
    // A profile table numbered from elsewhere.
    let error = set.evaluate_columns(&traits, 1, &table, T0).unwrap_err();
    assert!(error.0.contains("does not number its rows from 1"), "{error}");
    // Not sorted: swap the rows' times within one profile.
    table = event_table(vec![(0, view(T0)), (0, view(T0 - HOUR))], &[]);
    let at: arrow_array::ArrayRef = std::sync::Arc::new(arrow_array::Int64Array::from(vec![T0, T0 - HOUR]));
    let mut columns = table.columns().to_vec();
    columns[1] = at;
    let unsorted = arrow_array::RecordBatch::try_new(table.schema(), columns).unwrap();
    let error = set.evaluate_columns(&traits, 0, &unsorted, T0).unwrap_err();
    assert!(error.0.contains("not sorted"), "{error}");
    // A column of a kind that values cannot have.
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "traits.age",
        arrow_schema::DataType::Binary,
        true,
    )]));
    let binary: arrow_array::ArrayRef = std::sync::Arc::new(arrow_array::BinaryArray::from(vec![&b"x"[..], b"y"]));
    let traits = arrow_array::RecordBatch::try_new(schema, vec![binary]).unwrap();
    let error = set.evaluate_columns(&traits, 0, &table, T0).unwrap_err();
    assert!(error.0.contains("traits.age") && error.0.contains("not supported"), "{error}");
}
