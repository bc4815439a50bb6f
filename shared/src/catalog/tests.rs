use serde_json::{Value, json};

use super::*;
use crate::audiences::AudienceSet;
use crate::tags::{TagDefinition, TagSet};

fn event(value: Value) -> CanonicalEvent {
    let mut base = json!({
        "messageId": "m", "sourceId": "web", "receivedAt": "2026-03-01T10:00:00.000Z",
        "timestamp": "2026-03-01T10:00:00.000Z", "userId": "u1"
    });
    for (k, v) in value.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn observed() -> Dictionary {
    let rules = ProfileRules::default();
    let mut dictionary = Dictionary::default();
    dictionary.observe(
        &event(json!({"type": "track", "event": "Order Completed", "properties": {"revenue": 12.5, "coupon": "X1"}})),
        &rules,
    );
    dictionary.observe(
        &event(json!({"type": "track", "event": "Order Completed", "receivedAt": "2026-03-02T09:00:00.000Z",
                      "properties": {"revenue": "30", "coupon": " X1", "quantity": "two"}})),
        &rules,
    );
    dictionary.observe(
        &event(
            json!({"type": "identify", "traits": {"email": "User1@Example.com ", "plan": " pro ", "age": "thirty"}}),
        ),
        &rules,
    );
    dictionary.observe(&event(json!({"type": "page", "sourceId": "app", "name": "Home"})), &rules);
    dictionary
}

#[test]
fn events_properties_and_traits_are_described() {
    let dictionary = observed();
    let order = &dictionary.sources["web"].events["Order Completed"];
    assert_eq!(order.count, 2);
    assert_eq!(order.first_seen.unwrap().to_string(), "2026-03-01T10:00:00.000Z");
    assert_eq!(order.last_seen.unwrap().to_string(), "2026-03-02T09:00:00.000Z");
    assert_eq!(order.days.keys().collect::<Vec<_>>(), ["2026-03-01", "2026-03-02"]);
    // Properties as the tag engines read them: cleaned (`"30"` is the number 30, `" X1"` is `"X1"`).
    let revenue = &order.properties["revenue"];
    assert_eq!(revenue.types, BTreeMap::from([("number".to_string(), 2)]));
    assert_eq!(revenue.examples, [json!(12.5), json!(30)]);
    assert_eq!(order.properties["coupon"].examples, [json!("X1")], "distinct clean examples");
    let mut with_email = Dictionary::default();
    with_email.observe(
        &event(json!({"type": "track", "event": "Form Submitted", "properties": {"value": "jane@example.com"}})),
        &ProfileRules::default(),
    );
    let value = &with_email.sources["web"].events["Form Submitted"].properties["value"];
    assert_eq!(value.last_issue.as_deref(), Some("a value that could not be cleaned"), "no address in a reason");
    for sent in [json!(["jane@example.com"]), json!("030/1234567 ext 2")] {
        let mut dictionary = Dictionary::default();
        dictionary.observe(
            &event(json!({"type": "track", "event": "Form Submitted", "properties": {"value": sent}})),
            &ProfileRules::default(),
        );
        let value = &dictionary.sources["web"].events["Form Submitted"].properties["value"];
        assert_eq!(value.last_issue.as_deref(), Some("a value that could not be cleaned"), "{sent}");
    }
    let quantity = &order.properties["quantity"];
    assert_eq!((quantity.issues, quantity.last_issue.as_deref()), (1, Some("`two` is not a number")));
    assert_eq!(quantity.types, BTreeMap::from([("string".to_string(), 1)]), "kept as sent");
    assert_eq!(dictionary.sources["web"].calls["identify"].count, 1);
    assert_eq!(dictionary.sources["app"].calls["page"].count, 1);

    let email = &dictionary.traits["email"];
    assert!(email.personal && email.examples.is_empty(), "personal values are never examples: {email:?}");
    assert_eq!(dictionary.traits["plan"].examples, [json!("pro")], "examples are the clean values");
    let age = &dictionary.traits["age"];
    assert_eq!((age.issues, age.last_issue.as_deref()), (1, Some("`thirty` is not a number")));
    assert_eq!(age.types, BTreeMap::from([("string".to_string(), 1)]), "kept as sent");
}

#[test]
fn the_catalog_for_checking_definitions() {
    let catalog = observed().catalog();
    assert_eq!(catalog.events.iter().collect::<Vec<_>>(), ["Order Completed"]);
    assert_eq!(catalog.properties["revenue"], ValueKind::Number);
    assert_eq!(catalog.properties["coupon"], ValueKind::String);
    assert_eq!(catalog.traits["plan"], ValueKind::String);

    let tag = |value: Value| -> Vec<String> {
        let defs: Vec<TagDefinition> = serde_json::from_value(json!([value])).unwrap();
        match TagSet::check(&defs, &catalog) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    };
    assert_eq!(
        tag(json!({"id": "x", "kind": "statistical", "filter": {"events": ["Order Complete"]},
                   "aggregate": {"op": "sum", "property": "revenu"}})),
        [
            "tags[0] (x).filter.events[0]: unknown event `Order Complete`; did you mean `Order Completed`?",
            "tags[0] (x).aggregate.property: unknown property `revenu`; did you mean `revenue`?",
        ]
    );
    assert_eq!(
        tag(json!({"id": "x", "kind": "rule", "when": {"field": "trait:tier", "op": "eq", "value": "gold"}})),
        ["tags[0] (x).when.field: unknown trait `tier` (not in the data dictionary; list it in `expected` if it is \
          still to come)"]
    );
    // Opting out, per name or for the whole definition.
    assert!(
        tag(json!({"id": "x", "kind": "rule", "expected": ["tier"],
                   "when": {"field": "trait:tier", "op": "eq", "value": "gold"}}))
        .is_empty()
    );
    assert!(
        tag(json!({"id": "x", "kind": "statistical", "expected": true, "filter": {"events": ["Order Refunded"]},
                   "aggregate": {"op": "count"}}))
        .is_empty()
    );
    let tags = TagSet::check(&[], &catalog).unwrap();
    let audiences: Vec<crate::audiences::AudienceDefinition> =
        serde_json::from_value(json!([{"id": "a", "when": {"field": "trait:plna", "op": "eq", "value": "pro"}}]))
            .unwrap();
    let errors = AudienceSet::check(&audiences, &tags, &catalog).unwrap_err();
    assert_eq!(errors[0].to_string(), "audiences[0] (a).when.field: unknown trait `plna`; did you mean `plan`?");
}

#[test]
fn merging_adds_counts_and_keeps_limits() {
    let mut all = observed();
    all.merge(observed());
    assert_eq!(all.sources["web"].events["Order Completed"].count, 4);
    assert_eq!(all.sources["web"].events["Order Completed"].days["2026-03-01"].events, 2);
    assert_eq!(all.traits["age"].issues, 2);
    assert_eq!(all.traits["plan"].examples.len(), 1);
    let json = serde_json::to_value(&all).unwrap();
    let back: Dictionary = serde_json::from_value(json).unwrap();
    assert_eq!(back, all, "round-trips");

    // Days beyond the last DAYS_KEPT are dropped, the oldest first.
    let mut long = Dictionary::default();
    for day in 0..(DAYS_KEPT as i64 + 5) {
        let at = UtcTime::from_unix_millis(1_700_000_000_000 + day * 86_400_000).unwrap().to_string();
        long.observe(&event(json!({"type": "track", "event": "E", "receivedAt": at})), &ProfileRules::default());
    }
    let days = &long.sources["web"].events["E"].days;
    assert_eq!(days.len(), DAYS_KEPT);
    assert_eq!(long.sources["web"].events["E"].count, DAYS_KEPT as u64 + 5, "the total still counts every event");
}

#[test]
fn personal_values_never_appear_and_junk_is_bounded() {
    let rules: ProfileRules =
        serde_json::from_value(json!({"cleaning": {"fields": {"contact": ["trim", "phone"]}}})).unwrap();
    let mut dictionary = Dictionary::default();
    let long = "x".repeat(MAX_NAME_CHARS + 1);
    dictionary.observe(
        &event(json!({"type": "identify", "traits": {"mobile": "13800138000", "contact": "+86 138 0013 8000",
                                                      "workEmail": "A@B.CN", "note": "call 138 0013 8000", &long: 1}})),
        &rules,
    );
    dictionary.observe(
        &event(json!({"type": "track", "event": long.clone(), "properties": {"ref": "+49 30 1234567"}})),
        &rules,
    );
    for name in ["mobile", "contact", "workEmail"] {
        let field = &dictionary.traits[name];
        assert!(field.personal && field.examples.is_empty(), "{name}: {field:?}");
    }
    assert_eq!(dictionary.traits["note"].examples, [json!("call 138 0013 8000")], "text that holds a number is text");
    assert!(!dictionary.traits.contains_key(&long), "names over {MAX_NAME_CHARS} characters are not kept");
    assert!(dictionary.sources["web"].events.is_empty());
    assert_eq!(dictionary.overflow, 2);
    let mut phones = Dictionary::default();
    phones.observe(&event(json!({"type": "track", "event": "E", "properties": {"ref": "+49 30 1234567"}})), &rules);
    assert!(phones.sources["web"].events["E"].properties["ref"].examples.is_empty(), "what looks like a phone number");

    // Names not seen for a while are forgotten.
    let mut old = observed();
    old.forget_before(UtcTime::parse("2026-03-02T00:00:00Z").unwrap());
    assert_eq!(old.sources["web"].events.keys().collect::<Vec<_>>(), ["Order Completed"], "seen on 03-02");
    assert!(old.traits.is_empty() && !old.sources.contains_key("app"));
}

#[test]
fn violations_are_counted_per_day() {
    let mut dictionary = Dictionary::default();
    let flagged = event(json!({"type": "track", "event": "Signed Up",
                               "context": {"violations": [{"path": "/properties/plan", "problem": "required"}]}}));
    dictionary.observe(&flagged, &ProfileRules::default());
    dictionary.observe(&event(json!({"type": "track", "event": "Signed Up"})), &ProfileRules::default());
    let day = dictionary.sources["web"].events["Signed Up"].days["2026-03-01"];
    assert_eq!((day.events, day.violations), (2, 1));
}
