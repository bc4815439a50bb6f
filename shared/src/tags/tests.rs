//! Hand-checked values for every tag kind, aggregation and operator; window edges; missing properties;
//! definition errors that name where they are.

use serde_json::{Map, Value, json};

use super::*;

const DAY: i64 = 86_400_000;
const NOW: i64 = 1_795_000_000_000;

fn defs(value: Value) -> Vec<TagDefinition> {
    serde_json::from_value(value).expect("definitions parse")
}

fn set(value: Value) -> TagSet {
    TagSet::check(&defs(value), &Catalog::default()).unwrap_or_else(|e| panic!("{e:?}"))
}

fn errors(value: Value, catalog: &Catalog) -> Vec<String> {
    match TagSet::check(&defs(value), catalog) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// An event as the tests hold it: (kind, event name, time in ms, properties).
type Row = (&'static str, Option<&'static str>, i64, Map<String, Value>);

/// (kind, event, days before NOW, properties)
fn events(rows: &[(&'static str, Option<&'static str>, f64, Value)]) -> Vec<Row> {
    rows.iter()
        .map(|(k, e, days, p)| (*k, *e, NOW - (days * DAY as f64) as i64, p.as_object().cloned().unwrap_or_default()))
        .collect()
}

fn eval(set: &TagSet, traits: Value, rows: &[Row]) -> Map<String, Value> {
    let views: Vec<EventView<'_>> = rows
        .iter()
        .map(|(kind, event, at, properties)| EventView { kind, event: *event, at: *at, id: "", properties })
        .collect();
    let traits = traits.as_object().cloned().unwrap_or_default();
    set.evaluate(&traits, &views, NOW).into_iter().collect()
}

fn stat(id: &str, op: &str, property: Option<&str>, window: Value) -> Value {
    json!({"id": id, "status": "active", "kind": "statistical",
           "filter": {"events": ["Order Completed"]},
           "aggregate": {"op": op, "property": property}, "window": window})
}

fn orders() -> Vec<Row> {
    events(&[
        ("track", Some("Order Completed"), 40.0, json!({"revenue": 100, "category": "shoes"})),
        ("track", Some("Order Completed"), 30.0, json!({"revenue": 20.5, "category": "shirts"})),
        ("track", Some("Order Completed"), 10.0, json!({"category": "shirts"})), // no revenue
        ("track", Some("Order Completed"), 2.0, json!({"revenue": 7, "category": "shoes", "coupon": null})),
        ("track", Some("Product Viewed"), 1.0, json!({"revenue": 999, "category": "hats"})),
        ("page", None, 0.5, json!({})),
    ])
}

#[test]
fn every_aggregation_over_all_time() {
    let ops = [
        ("count", None, json!(4)),
        ("count", Some("revenue"), json!(3)),
        ("sum", Some("revenue"), json!(127.5)),
        ("avg", Some("revenue"), json!(42.5)),
        ("min", Some("revenue"), json!(7.0)),
        ("max", Some("revenue"), json!(100.0)),
        ("first", Some("category"), json!("shoes")),
        ("last", Some("revenue"), json!(7)),
        ("distinct_count", Some("category"), json!(2)),
        ("unique_list", Some("category"), json!(["shoes", "shirts"])),
    ];
    let list: Vec<Value> =
        ops.iter().enumerate().map(|(i, (op, p, _))| stat(&format!("t{i}"), op, *p, json!({}))).collect();
    let values = eval(&set(Value::Array(list)), json!({}), &orders());
    for (i, (op, property, expected)) in ops.iter().enumerate() {
        assert_eq!(values.get(&format!("t{i}")), Some(expected), "{op} of {property:?}");
    }
}

#[test]
fn most_frequent_breaks_ties_by_the_latest() {
    // shoes ×2 (latest 2 days ago), shirts ×2 (latest 10 days ago): shoes.
    let values = eval(&set(json!([stat("top", "most_frequent", Some("category"), json!({}))])), json!({}), &orders());
    assert_eq!(values["top"], "shoes");
    let tie = events(&[
        ("track", Some("Order Completed"), 3.0, json!({"category": "a"})),
        ("track", Some("Order Completed"), 2.0, json!({"category": "b"})),
    ]);
    let values = eval(&set(json!([stat("top", "most_frequent", Some("category"), json!({}))])), json!({}), &tie);
    assert_eq!(values["top"], "b");
}

#[test]
fn windows_include_an_event_exactly_at_their_start() {
    let rows = events(&[
        ("track", Some("Order Completed"), 30.0, json!({"revenue": 1})),
        ("track", Some("Order Completed"), 30.0 + 1.0 / DAY as f64, json!({"revenue": 10})), // 1 ms before
        ("track", Some("Order Completed"), 0.0, json!({"revenue": 100})),
    ]);
    let tags = set(json!([
        stat("d30", "sum", Some("revenue"), json!({"lastDays": 30})),
        stat("h1", "count", None, json!({"lastHours": 1})),
        stat("all", "sum", Some("revenue"), json!({})),
    ]));
    let values = eval(&tags, json!({}), &rows);
    assert_eq!(values["d30"], json!(101.0), "exactly 30 days ago is in, 1 ms earlier is out");
    assert_eq!(values["h1"], json!(1));
    assert_eq!(values["all"], json!(111.0));
}

#[test]
fn missing_properties_are_skipped_and_empty_aggregates_have_no_value() {
    let rows = events(&[("track", Some("Order Completed"), 1.0, json!({"category": "x"}))]);
    let tags = set(json!([
        stat("sum", "sum", Some("revenue"), json!({})),
        stat("avg", "avg", Some("revenue"), json!({})),
        stat("min", "min", Some("revenue"), json!({})),
        stat("last", "last", Some("revenue"), json!({})),
        stat("list", "unique_list", Some("revenue"), json!({})),
        stat("n", "count", Some("revenue"), json!({})),
    ]));
    let values = eval(&tags, json!({}), &rows);
    assert_eq!(values.get("sum"), Some(&json!(0.0)));
    assert_eq!(values.get("n"), Some(&json!(0)));
    for absent in ["avg", "min", "last", "list"] {
        assert!(!values.contains_key(absent), "{absent}: {values:?}");
    }
}

#[test]
fn filters_on_types_and_property_conditions() {
    let tags = set(json!([
        {"id": "pages", "status": "active", "kind": "statistical", "filter": {"types": ["page"]},
         "aggregate": {"op": "count"}},
        {"id": "big_shoe_orders", "status": "active", "kind": "statistical",
         "filter": {"events": ["Order Completed"], "properties": [
             {"field": "category", "op": "eq", "value": "shoes"}, {"field": "revenue", "op": "gte", "value": 50}]},
         "aggregate": {"op": "count"}},
        {"id": "any_event", "status": "active", "kind": "statistical", "aggregate": {"op": "count"}}
    ]));
    let values = eval(&tags, json!({}), &orders());
    assert_eq!(values["pages"], json!(1));
    assert_eq!(values["big_shoe_orders"], json!(1));
    assert_eq!(values["any_event"], json!(6));
}

fn rule(id: &str, when: Value) -> Value {
    json!({"id": id, "status": "active", "kind": "rule", "when": when})
}

#[test]
fn every_operator_with_hand_checked_results() {
    let traits = json!({"age": 34, "plan": "pro", "email": "jane@shop.example", "score": 1.0,
                        "interests": ["running", "tea"], "vip": true, "gone": null});
    let cases = [
        (json!({"field": "trait:plan", "op": "eq", "value": "pro"}), true),
        (json!({"field": "trait:score", "op": "eq", "value": 1}), true),
        (json!({"field": "trait:plan", "op": "ne", "value": "free"}), true),
        (json!({"field": "trait:missing", "op": "ne", "value": "free"}), true),
        (json!({"field": "trait:missing", "op": "eq", "value": "free"}), false),
        (json!({"field": "trait:age", "op": "gt", "value": 34}), false),
        (json!({"field": "trait:age", "op": "gte", "value": 34}), true),
        (json!({"field": "trait:age", "op": "lt", "value": 35}), true),
        (json!({"field": "trait:age", "op": "lte", "value": 33}), false),
        (json!({"field": "trait:plan", "op": "gt", "value": "basic"}), true),
        (json!({"field": "trait:age", "op": "gt", "value": "30"}), false),
        (json!({"field": "trait:plan", "op": "in", "value": ["team", "pro"]}), true),
        (json!({"field": "trait:score", "op": "in", "value": [2, 1]}), true),
        (json!({"field": "trait:email", "op": "contains", "value": "@shop."}), true),
        (json!({"field": "trait:interests", "op": "contains", "value": "tea"}), true),
        (json!({"field": "trait:interests", "op": "contains", "value": "golf"}), false),
        (json!({"field": "trait:vip", "op": "exists"}), true),
        (json!({"field": "trait:gone", "op": "exists"}), false),
        (json!({"field": "trait:gone", "op": "exists", "value": false}), true),
        (json!({"field": "trait:age", "op": "between", "value": [34, 40]}), true),
        (json!({"field": "trait:age", "op": "between", "value": [18, 34]}), true),
        (json!({"field": "trait:age", "op": "between", "value": [35, 40]}), false),
        (json!({"field": "trait:email", "op": "regex", "value": "^[a-z]+@shop\\.example$"}), true),
        (json!({"field": "trait:plan", "op": "regex", "value": "^free"}), false),
        (
            json!({"and": [{"field": "trait:vip", "op": "eq", "value": true},
                        {"not": {"field": "trait:plan", "op": "eq", "value": "free"}}]}),
            true,
        ),
        (
            json!({"or": [{"field": "trait:age", "op": "lt", "value": 18},
                       {"field": "trait:missing", "op": "exists"}]}),
            false,
        ),
    ];
    let list: Vec<Value> =
        cases.iter().enumerate().map(|(i, (when, _))| rule(&format!("r{i}"), when.clone())).collect();
    let values = eval(&set(Value::Array(list)), traits, &[]);
    for (i, (when, expected)) in cases.iter().enumerate() {
        assert_eq!(values[&format!("r{i}")], json!(expected), "{when}");
    }
}

#[test]
fn buckets_and_tags_reading_tags() {
    let tags = set(json!([
        {"id": "tier", "status": "active", "kind": "buckets", "of": "tag:ltv",
         "buckets": [{"label": "high", "min": 100}, {"label": "mid", "min": 20, "max": 100}], "otherwise": "low"},
        {"id": "loyal_high", "status": "active", "kind": "rule",
         "when": {"and": [{"field": "tag:tier", "op": "eq", "value": "high"}, {"field": "tag:orders", "op": "gte", "value": 2}]}},
        stat("ltv", "sum", Some("revenue"), json!({})),
        stat("orders", "count", None, json!({})),
        {"id": "age_band", "status": "active", "kind": "buckets", "of": "trait:age",
         "buckets": [{"label": "young", "max": 30}, {"label": "adult", "min": 30}]},
    ]));
    let values = eval(&tags, json!({"age": 30}), &orders());
    assert_eq!(values["ltv"], json!(127.5));
    assert_eq!(values["tier"], "high");
    assert_eq!(values["loyal_high"], true);
    assert_eq!(values["age_band"], "adult", "min is inclusive");
    let edge = events(&[("track", Some("Order Completed"), 1.0, json!({"revenue": 100}))]);
    assert_eq!(eval(&tags, json!({"age": 29.99}), &edge)["tier"], "high", "100 is in [100, ∞)");
    let low = events(&[("track", Some("Order Completed"), 1.0, json!({"revenue": 19.99}))]);
    assert_eq!(eval(&tags, json!({}), &low)["tier"], "low");
    let values = eval(&tags, json!({}), &[]);
    assert_eq!(values["tier"], "low", "a sum of nothing is 0, which is in no bucket");
    assert!(!values.contains_key("age_band"), "no age, no band");
}

#[test]
fn only_active_and_deprecated_tags_are_computed() {
    let tags = set(json!([
        {"id": "a", "status": "active", "kind": "statistical", "aggregate": {"op": "count"}},
        {"id": "d", "status": "deprecated", "kind": "statistical", "aggregate": {"op": "count"}},
        {"id": "draft", "kind": "statistical", "aggregate": {"op": "count"}},
        {"id": "old", "status": "archived", "kind": "statistical", "aggregate": {"op": "count"}},
    ]));
    let ids: Vec<&str> = tags.tags().iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["a", "d"]);
}

#[test]
fn definition_errors_name_the_field_and_the_problem() {
    let catalog = Catalog {
        events: ["Order Completed".to_string()].into(),
        traits: [("age".to_string(), ValueKind::Number), ("plan".to_string(), ValueKind::String)].into(),
        properties: [("revenue".to_string(), ValueKind::Number), ("category".to_string(), ValueKind::String)].into(),
    };
    let cases = [
        (stat("x", "sum", None, json!({})), "tags[0] (x).aggregate.property: sum needs a property"),
        (
            stat("x", "sum", Some("category"), json!({})),
            "tags[0] (x).aggregate.property: `category` holds String values; Sum needs numbers",
        ),
        (stat("x", "sum", Some("nope"), json!({})), "tags[0] (x).aggregate.property: unknown property `nope`"),
        (
            stat("x", "count", None, json!({"lastDays": 3, "lastHours": 2})),
            "tags[0] (x).window: give lastDays or lastHours, not both",
        ),
        (
            stat("x", "count", None, json!({"lastDays": 0})),
            "tags[0] (x).window: a window of zero length holds no event",
        ),
        (
            json!({"id": "x", "kind": "statistical", "filter": {"events": ["Order Complete"]}, "aggregate": {"op": "count"}}),
            "tags[0] (x).filter.events[0]: unknown event `Order Complete`",
        ),
        (
            json!({"id": "x", "kind": "statistical", "filter": {"types": ["click"]}, "aggregate": {"op": "count"}}),
            "tags[0] (x).filter.types[0]: unknown event type `click`",
        ),
        (
            rule("x", json!({"field": "trait:agee", "op": "gt", "value": 3})),
            "tags[0] (x).when.field: unknown trait `agee`",
        ),
        (
            rule("x", json!({"field": "trait:age", "op": "gt", "value": "30"})),
            "tags[0] (x).when.value: `trait:age` holds Number values, compared with \"30\"",
        ),
        (
            rule("x", json!({"field": "age", "op": "gt", "value": 3})),
            "tags[0] (x).when.field: `age` is not an operand: write `trait:NAME` or `tag:ID`",
        ),
        (
            rule("x", json!({"field": "trait:age", "op": "between", "value": [40, 18]})),
            "tags[0] (x).when.value: between 40 and 18: the low end is above the high end",
        ),
        (
            rule("x", json!({"field": "trait:plan", "op": "between", "value": [1, 2]})),
            "tags[0] (x).when.value: `trait:plan` holds String values; between needs numbers",
        ),
        (
            rule("x", json!({"field": "trait:plan", "op": "regex", "value": "(unclosed"})),
            "tags[0] (x).when.value: invalid pattern",
        ),
        (
            rule("x", json!({"field": "trait:plan", "op": "in", "value": []})),
            "tags[0] (x).when.value: `in` needs a non-empty array of values",
        ),
        (rule("x", json!({"and": []})), "tags[0] (x).when: `and` of nothing"),
        (rule("x", json!({"field": "tag:nope", "op": "exists"})), "tags[0] (x).when.field: unknown tag `nope`"),
        (rule("Bad-Id", json!({"field": "trait:age", "op": "exists"})), "tags[0] (Bad-Id).id: `Bad-Id` is not an id"),
        (
            json!({"id": "x", "kind": "buckets", "of": "trait:plan", "buckets": [{"label": "a", "min": 5, "max": 1}]}),
            "tags[0] (x).of: `trait:plan` holds String values; Number needed",
        ),
    ];
    for (definition, expected) in cases {
        let found = errors(json!([definition]), &catalog);
        assert!(found.iter().any(|e| e.starts_with(expected)), "expected {expected:?}, got {found:?}");
    }
    let reversed = errors(
        json!([{"id": "x", "kind": "buckets", "of": "trait:age", "buckets": [{"label": "a", "min": 5, "max": 1}]}]),
        &catalog,
    );
    assert_eq!(reversed, ["tags[0] (x).buckets[0]: min 5 is not below max 1"]);
    let twice = errors(json!([stat("x", "count", None, json!({})), stat("x", "count", None, json!({}))]), &catalog);
    assert_eq!(twice, ["tags[1] (x).id: `x` is defined twice"]);
    let draft = errors(
        json!([{"id": "d", "kind": "statistical", "aggregate": {"op": "count"}},
               rule("r", json!({"field": "tag:d", "op": "gt", "value": 1}))]),
        &catalog,
    );
    assert_eq!(draft, ["tags[1] (r).when.field: tag `d` is draft, so it has no value"]);
    let cycle = errors(
        json!([
            rule("a", json!({"field": "tag:b", "op": "eq", "value": true})),
            rule("b", json!({"field": "tag:a", "op": "eq", "value": true}))
        ]),
        &catalog,
    );
    assert!(cycle.iter().any(|e| e.contains("(a cycle)")), "{cycle:?}");
    // Several problems are all reported.
    assert_eq!(errors(json!([stat("x", "sum", None, json!({"lastDays": 0}))]), &catalog).len(), 2);
}

#[test]
fn malformed_json_is_refused_by_the_parser_with_the_reason() {
    let unknown_field: Result<TagDefinition, _> = serde_json::from_value(
        json!({"id": "x", "kind": "rule", "when": {"field": "trait:a", "op": "exists"}, "colour": 1}),
    );
    assert!(unknown_field.unwrap_err().to_string().contains("colour"));
    let unknown_op: Result<TagDefinition, _> =
        serde_json::from_value(json!({"id": "x", "kind": "statistical", "aggregate": {"op": "median"}}));
    assert!(unknown_op.unwrap_err().to_string().contains("median"));
    let typo: Result<TagDefinition, _> = serde_json::from_value(
        json!({"id": "x", "kind": "rule", "when": {"and": [{"feild": "trait:a", "op": "exists"}]}}),
    );
    let message = typo.unwrap_err().to_string();
    assert!(message.contains("unknown field `feild`"), "a typo inside a rule is named: {message}");
    let unknown_kind: Result<TagDefinition, _> = serde_json::from_value(json!({"id": "x", "kind": "magic"}));
    assert!(unknown_kind.unwrap_err().to_string().contains("magic"));
}

#[test]
fn the_published_schema_lists_every_kind_operator_and_state() {
    let schema: Value =
        serde_json::from_str(include_str!("../../../docs/schemas/tag-definition.schema.json")).expect("schema is JSON");
    let listed = |pointer: &str| -> Vec<String> {
        let values = schema.pointer(pointer).and_then(Value::as_array).unwrap_or_else(|| panic!("{pointer}"));
        values.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect()
    };
    let names = |values: Vec<Value>| -> Vec<String> {
        values.into_iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect()
    };
    use AggregateOp as A;
    let ops =
        [A::Count, A::Sum, A::Avg, A::Min, A::Max, A::First, A::Last, A::DistinctCount, A::MostFrequent, A::UniqueList];
    assert_eq!(listed("/$defs/aggregate/properties/op/enum"), names(ops.iter().map(|o| json!(o)).collect()));
    use CompareOp as C;
    let compare = [C::Eq, C::Ne, C::Gt, C::Gte, C::Lt, C::Lte, C::In, C::Contains, C::Exists, C::Between, C::Regex];
    assert_eq!(listed("/$defs/condition/properties/op/enum"), names(compare.iter().map(|o| json!(o)).collect()));
    use Lifecycle as L;
    let states = [L::Draft, L::Active, L::Deprecated, L::Archived];
    assert_eq!(listed("/properties/status/enum"), names(states.iter().map(|s| json!(s)).collect()));
    assert_eq!(listed("/properties/kind/enum"), ["statistical", "rule", "buckets", "propensity", "rfm", "affinity"]);
    use RfmOutput as R;
    let outputs = [R::Segment, R::Score, R::Recency, R::Frequency, R::Monetary];
    assert_eq!(listed("/properties/output/enum"), names(outputs.iter().map(|o| json!(o)).collect()));
    let types: Vec<String> = crate::event::EventType::ALL.iter().map(|t| t.to_string()).collect();
    assert_eq!(listed("/$defs/filter/properties/types/items/enum"), types);
    // Every top-level field the parser accepts is in the schema, and no other.
    let example = json!({"id": "x", "name": "", "description": "", "owner": "", "version": 1, "status": "active",
                         "expected": true, "kind": "statistical", "filter": {}, "aggregate": {"op": "count"}, "window": {}});
    let parsed: TagDefinition = serde_json::from_value(example.clone()).expect("parses");
    let mut fields: Vec<String> = example.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    fields.extend(
        ["when", "of", "buckets", "otherwise", "purchase", "horizonDays", "revenue", "output", "weights", "product"]
            .into_iter()
            .chain(["category", "halfLifeDays", "shareOf"])
            .map(String::from),
    );
    fields.sort();
    let mut properties: Vec<String> =
        schema["properties"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    properties.sort();
    assert_eq!(properties, fields);
    assert_eq!(parsed.status, Lifecycle::Active);
}
