//! Population tags: RFM quintiles and segments, propensity features, and their values in the columnar
//! evaluation, hand-checked.

use serde_json::{Map, Value, json};

use super::*;

const DAY: i64 = 86_400_000;
const NOW: i64 = 1_795_000_000_000;

fn tags() -> TagSet {
    let defs: Vec<TagDefinition> = serde_json::from_value(json!([
        {"id": "buy_30d", "status": "active", "kind": "propensity", "purchase": {"events": ["Order"]}, "revenue": "revenue"},
        {"id": "rfm", "status": "active", "kind": "rfm", "purchase": {"events": ["Order"]}, "revenue": "revenue"},
        {"id": "rfm_score", "status": "active", "kind": "rfm", "purchase": {"events": ["Order"]}, "revenue": "revenue", "output": "score"},
        {"id": "likely", "status": "active", "kind": "rule", "when": {"field": "tag:buy_30d", "op": "gte", "value": 0.5}},
        {"id": "keep", "status": "active", "kind": "rule", "when": {"field": "tag:rfm", "op": "in", "value": ["champions", "loyal"]}}
    ]))
    .unwrap();
    TagSet::check(&defs, &Catalog::default()).unwrap()
}

#[test]
fn rfm_quintiles_score_equal_values_alike_and_segments_follow_the_grid() {
    // Ten purchasers: recency 1..10 days, frequency 1..10, revenue 10..100.
    let values: Vec<[f64; 3]> = (1..=10).map(|i| [f64::from(i), f64::from(i), f64::from(i * 10)]).collect();
    let model = RfmModel::fit(&values).unwrap();
    assert_eq!(model.frequency, [2.0, 4.0, 6.0, 8.0]);
    assert_eq!(model.recency, [-9.0, -7.0, -5.0, -3.0]);
    // Most recent (1 day), most frequent (10), most spent (100): 5/5/5; the opposite 1/1/1.
    assert_eq!(model.scores(&[1.0, 10.0, 100.0]), [5, 5, 5]);
    assert_eq!(model.scores(&[10.0, 1.0, 10.0]), [1, 1, 1]);
    assert_eq!(model.scores(&[5.0, 5.0, 50.0]), [3, 3, 3]);
    // Values outside the population's range still score 1–5.
    assert_eq!(model.scores(&[400.0, 0.0, -5.0]), [1, 1, 1]);
    assert_eq!(model.output(&[1.0, 10.0, 100.0], RfmOutput::Score), json!(555));
    assert_eq!(model.output(&[1.0, 10.0, 100.0], RfmOutput::Segment), json!("champions"));
    // All equal: everyone gets the same score.
    let same = RfmModel::fit(&[[3.0, 2.0, 5.0]; 7]).unwrap();
    assert_eq!(same.scores(&[3.0, 2.0, 5.0]), [1, 1, 1]);
    assert!(RfmModel::fit(&[]).is_none());
    for (r, f, segment) in [
        (5, 5, "champions"),
        (4, 4, "champions"),
        (3, 5, "loyal"),
        (5, 3, "loyal"),
        (5, 1, "promising"),
        (3, 2, "need_attention"),
        (2, 5, "at_risk"),
        (1, 1, "hibernating"),
    ] {
        assert_eq!(RfmModel::segment(r, f), segment, "R{r} F{f}");
    }
}

/// Profile 0: orders 40 and 10 days ago (revenue 10 and 30), a view 2 days ago; profile 1: one view 100 days
/// ago; profile 2: nothing.
fn chunk() -> (arrow_array::RecordBatch, arrow_array::RecordBatch) {
    let order = |r: f64| json!({"revenue": r}).as_object().cloned().unwrap();
    let props = [order(10.0), order(30.0), Map::new(), Map::new()];
    let view = |at: i64, id: &'static str, p: &'static Map<String, Value>| EventView {
        kind: "track",
        event: Some("Viewed"),
        at,
        id,
        properties: p,
    };
    let props: &'static [Map<String, Value>] = Box::leak(Box::new(props));
    let order = |at: i64, id: &'static str, p: &'static Map<String, Value>| EventView {
        event: Some("Order"),
        ..view(at, id, p)
    };
    let rows = vec![
        (0, order(NOW - 40 * DAY, "a", &props[0])),
        (0, order(NOW - 10 * DAY, "b", &props[1])),
        (0, view(NOW - 2 * DAY, "c", &props[2])),
        (1, view(NOW - 100 * DAY, "d", &props[3])),
    ];
    let empty = Box::leak(Box::new(Map::new()));
    let traits = profile_table(0, &[&*empty, &*empty, &*empty], &[]);
    (traits, event_table(rows, &["revenue".to_string()]))
}

#[test]
fn propensity_features_and_labels_count_only_what_the_time_allows() {
    let tags = tags();
    let (_, events) = chunk();
    let (features, labels) = tags.propensity_features("buy_30d", 0, 3, &events, NOW - 30 * DAY).unwrap();
    // As of 30 days ago, profile 0 had one event (the order 40 days ago), and bought again within 30 days.
    let p0 = features[0];
    assert_eq!(p0[0], 1f64.ln_1p());
    assert_eq!(p0[1], 1f64.ln_1p(), "the order 40 days ago is within 30 days of 30 days ago");
    assert_eq!(p0[2], 0.0);
    assert_eq!(p0[3], 1f64.ln_1p());
    assert_eq!(p0[5], 10f64.ln_1p());
    assert!((p0[6] - 10.0 / 30.0).abs() < 1e-12, "{}", p0[6]);
    assert!((p0[7] - 10.0 / 30.0).abs() < 1e-12);
    assert_eq!(labels, vec![true, false, false]);
    // Nothing seen: no events, last event and purchase a year away.
    assert_eq!(features[2], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 365.0 / 30.0, 365.0 / 30.0, 0.0]);
    // As of now, profile 0 has 3 events and 2 purchases worth 40.
    let (now, _) = tags.propensity_features("buy_30d", 0, 3, &events, NOW).unwrap();
    assert_eq!(now[0][3], 2f64.ln_1p());
    assert_eq!(now[0][5], 40f64.ln_1p());
    assert!(tags.propensity_features("likely", 0, 3, &events, NOW).is_err(), "not a propensity tag");

    let rfm = tags.rfm_values("rfm", 0, 3, &events, NOW).unwrap();
    assert_eq!(rfm, vec![Some([10.0, 2.0, 40.0]), None, None]);
}

#[test]
fn population_tags_take_their_values_from_the_fitted_models_and_rules_read_them() {
    let tags = tags();
    let (traits, events) = chunk();
    // Without models: no values, and rules over them are false.
    let plain = tags.evaluate_columns(&traits, 0, &events, NOW).unwrap();
    assert_eq!(plain.row(0), [("keep".to_string(), json!(false)), ("likely".to_string(), json!(false))].into());

    // A model that only looks at purchases: logit = 2 × log_purchases − 1.
    let mut weights = vec![0.0; FEATURES.len()];
    weights[3] = 2.0;
    let model = LogisticModel {
        features: FEATURES.iter().map(ToString::to_string).collect(),
        means: vec![0.0; FEATURES.len()],
        scales: vec![1.0; FEATURES.len()],
        weights,
        intercept: -1.0,
        evaluation: Evaluation::default(),
    };
    let rfm = RfmModel {
        recency: [30.0, 20.0, 15.0, 5.0].map(|d: f64| -d),
        frequency: [1.0; 4],
        monetary: [50.0; 4],
        profiles: 1,
    };
    let population = Population {
        models: [
            ("buy_30d".to_string(), Model::Propensity(model)),
            ("rfm".to_string(), Model::Rfm(rfm.clone())),
            ("rfm_score".to_string(), Model::Rfm(rfm)),
        ]
        .into(),
    };
    let values = tags.evaluate_columns_with(&traits, 0, &events, NOW, &population).unwrap();
    let expected = |x: f64| ((1.0 / (1.0 + (-(2.0 * x - 1.0)).exp())) * 10_000.0).round() / 10_000.0;
    let p0 = values.row(0);
    assert_eq!(p0["buy_30d"], json!(expected(2f64.ln_1p())));
    // 10 days since the last order passes three recency thresholds (30, 20, 15 days) → R 4; 2 orders pass
    // all frequency thresholds → F 5; 40 spent passes none → M 1.
    assert_eq!(p0["rfm"], json!("champions"));
    assert_eq!(p0["rfm_score"], json!(451));
    assert_eq!(p0["keep"], json!(true));
    assert_eq!(p0["likely"], json!(expected(2f64.ln_1p()) >= 0.5));
    // No purchase: a propensity, but no RFM value.
    let p1 = values.row(1);
    assert_eq!(p1["buy_30d"], json!(expected(0.0)));
    assert!(!p1.contains_key("rfm"));
    assert_eq!(p1["likely"], json!(false));
}

#[test]
fn predictive_definitions_are_checked() {
    let defs: Vec<TagDefinition> = serde_json::from_value(json!([
        {"id": "p", "status": "active", "kind": "propensity", "purchase": {"events": []}, "horizonDays": 0},
        {"id": "r", "status": "active", "kind": "rfm", "purchase": {"events": ["Order"]}, "revenue": ""}
    ]))
    .unwrap();
    let errors = TagSet::check(&defs, &Catalog::default()).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        vec![
            "tags[0] (p).purchase.events: name the purchase events",
            "tags[0] (p).horizonDays: 0 is not between 1 and 365",
            "tags[1] (r).revenue: empty property name",
        ]
    );
    let wrong: Result<Vec<TagDefinition>, _> = serde_json::from_value(json!([
        {"id": "r", "kind": "rfm", "purchase": {"events": ["Order"]}, "revenue": "x", "output": "median"}
    ]));
    assert!(wrong.unwrap_err().to_string().contains("median"));
}

#[test]
fn affinity_weighs_events_by_name_and_age_and_takes_missing_categories_from_products() {
    let defs: Vec<TagDefinition> = serde_json::from_value(json!([
        {"id": "fav", "status": "active", "kind": "affinity", "weights": {"View": 1, "Order": 4}, "halfLifeDays": 10},
        {"id": "hats", "status": "active", "kind": "affinity", "weights": {"View": 1, "Order": 4}, "halfLifeDays": 10,
         "shareOf": "hats"}
    ]))
    .unwrap();
    let tags = TagSet::check(&defs, &Catalog::default()).unwrap();
    let props: Vec<Map<String, Value>> = [
        json!({"category": "shoes"}),
        json!({"category": "shoes"}),
        json!({"product_id": "p9"}),
        json!({"product_id": "unknown"}),
    ]
    .iter()
    .map(|v| v.as_object().cloned().unwrap())
    .collect();
    let event = |name: &'static str, days: i64, id: &'static str, p: usize| EventView {
        kind: "track",
        event: Some(name),
        at: NOW - days * DAY,
        id,
        properties: Box::leak(Box::new(props[p].clone())),
    };
    // Two shoe views now (1 + 1); a hat order (p9) ten days ago: 4 × ½ = 2; an unknown product counts nothing.
    let rows = vec![
        (0, event("View", 0, "a", 0)),
        (0, event("View", 0, "b", 1)),
        (0, event("Order", 10, "c", 2)),
        (0, event("Order", 0, "d", 3)),
        (1, event("Other", 0, "e", 0)),
    ];
    let empty = Map::new();
    let traits = profile_table(0, &[&empty, &empty], &[]);
    let events = event_table(rows, &tags.properties());
    let categories = [("p9".to_string(), "hats".to_string())].into();
    let scores = tags.affinity_values("fav", 0, 2, &events, NOW, &categories).unwrap();
    assert_eq!(scores, vec![vec![("hats".to_string(), 2.0), ("shoes".to_string(), 2.0)], vec![]]);
    let population = Population {
        models: [
            ("fav".to_string(), Model::Affinity { categories: categories.clone() }),
            ("hats".to_string(), Model::Affinity { categories }),
        ]
        .into(),
    };
    let values = tags.evaluate_columns_with(&traits, 0, &events, NOW, &population).unwrap();
    // A tie (2 and 2): the smaller name.
    assert_eq!(values.row(0), [("fav".to_string(), json!("hats")), ("hats".to_string(), json!(0.5))].into());
    assert!(values.row(1).is_empty(), "no weighed events, no value");
}
