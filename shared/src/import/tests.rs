use serde_json::{Value, json};

use super::*;
use crate::collect::collect_events;
use crate::ids::Entropy;
use crate::source::new_source;

fn now() -> UtcTime {
    UtcTime::parse("2026-03-01T08:00:00Z").unwrap()
}

fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn row(cells: &[&str]) -> Vec<Option<Value>> {
    cells.iter().map(|c| Some(Value::String(c.to_string()))).collect()
}

fn contacts() -> Compiled {
    Mapping::parse(
        br#"{"type": "identify", "userId": {"column": "crm_id"},
             "traits": {"name": {"column": "name"}, "plan": {"column": "plan", "default": "free"},
                        "age": {"column": "age", "type": "number"}, "vip": {"column": "vip", "type": "boolean"},
                        "signedUpAt": {"column": "signup", "type": "date", "format": "%d/%m/%Y"},
                        "region": "CN"},
             "identifiers": {"email": {"column": "email"}, "crm_id": {"column": "crm_id"}}}"#,
    )
    .unwrap()
    .check(&columns(&["crm_id", "name", "email", "plan", "age", "vip", "signup"]))
    .unwrap()
}

#[test]
fn a_row_becomes_an_identify_call() {
    let event = contacts()
        .event(&row(&["C-1", "Li Lei", "Li@Example.com", "", "31", "yes", "17/05/2024"]), "import-ab-2", now())
        .unwrap();
    let event: Value = serde_json::from_str(&event).unwrap();
    assert_eq!(event["type"], "identify");
    assert_eq!(event["messageId"], "import-ab-2");
    assert_eq!(event["userId"], "C-1");
    assert_eq!(event["timestamp"], "2026-03-01T08:00:00.000Z", "no timestamp mapped: when imported");
    assert_eq!(
        event["traits"],
        json!({"name": "Li Lei", "plan": "free", "age": 31, "vip": true, "signedUpAt": "2024-05-17T00:00:00.000Z",
               "region": "CN", "email": "Li@Example.com"})
    );
    assert_eq!(
        event["context"]["externalIds"],
        json!([{"id": "C-1", "type": "crm_id", "collection": "users", "encoding": "none"}])
    );
    assert_eq!(event["context"]["library"]["name"], "cdp-import");
}

#[test]
fn a_cell_that_does_not_read_as_its_type_is_the_rows_problem() {
    let bad = contacts().event(&row(&["C-1", "x", "", "", "thirty", "", ""]), "m", now()).unwrap_err().0;
    assert_eq!(bad, "traits.age: `thirty` in column `age` is not a number");
    let bad = contacts().event(&row(&["C-1", "x", "", "", "", "maybe", ""]), "m", now()).unwrap_err().0;
    assert_eq!(bad, "traits.vip: `maybe` in column `vip` is not true or false");
    let bad = contacts().event(&row(&["C-1", "x", "", "", "", "", "2024-05-17"]), "m", now()).unwrap_err().0;
    assert_eq!(bad, "`2024-05-17` in column `signup` is not a date in the format `%d/%m/%Y`");
}

#[test]
fn a_track_mapping_with_an_event_column_and_a_timestamp() {
    let mapping = Mapping::parse(
        br#"{"type": "track", "event": {"column": "action"}, "userId": {"column": "uid"},
             "timestamp": {"column": "at", "format": "%Y-%m-%d %H:%M:%S"},
             "properties": {"revenue": {"column": "amount", "type": "number"}, "campaign": "nov"}}"#,
    )
    .unwrap()
    .check(&columns(&["uid", "action", "at", "amount"]))
    .unwrap();
    let event = mapping.event(&row(&["u1", "Email Clicked", "2026-02-03 04:05:06", "1,299.50"]), "m", now()).unwrap();
    let event: Value = serde_json::from_str(&event).unwrap();
    assert_eq!(
        (event["event"].clone(), event["timestamp"].clone()),
        (json!("Email Clicked"), json!("2026-02-03T04:05:06.000Z"))
    );
    assert_eq!(event["properties"], json!({"revenue": 1299.5, "campaign": "nov"}));
    assert_eq!(mapping.columns(), [0, 1, 2, 3]);
}

#[test]
fn the_mapping_is_checked_before_any_row() {
    let problem = Mapping::parse(
        br#"{"type": "track", "userId": {"column": "user"}, "properties": {"x": {"column": "revenu"}}}"#,
    )
    .unwrap()
    .check(&columns(&["uid", "revenue"]))
    .unwrap_err();
    assert_eq!(
        problem.0,
        "a track mapping needs `event`; userId: the file has no column `user` (it has: `uid`, `revenue`); \
         properties.x: the file has no column `revenu` (it has: `uid`, `revenue`)"
    );
    let nobody =
        Mapping::parse(br#"{"type": "identify", "traits": {"a": {"column": "a"}}}"#).unwrap().check(&columns(&["a"]));
    assert!(nobody.unwrap_err().0.contains("a row must say whose it is"));
    assert!(Mapping::parse(br#"{"type": "merge"}"#).unwrap_err().0.contains("the mapping does not parse"));
    assert!(Mapping::parse(br#"{"type": "track", "evnt": "x"}"#).unwrap_err().0.contains("unknown field `evnt`"));
}

#[test]
fn rows_go_through_the_collect_pipeline() {
    let (source, _) = new_source("crm", "CRM", &mut Entropy::from_seed([1; 32]));
    let mapping = contacts();
    let good = mapping.event(
        &row(&["C-1", "Li Lei", "li@example.com", "pro", "", "", ""]),
        &message_id("ab12", "cd34ef", 2),
        now(),
    );
    let nobody = mapping.event(&row(&["", "Nobody", "", "", "", "", ""]), &message_id("ab12", "cd34ef", 3), now());
    let texts = vec![good.unwrap(), nobody.unwrap()];
    let batch = collect_events(&source, &texts, now(), &mut Entropy::from_seed([2; 32]));
    assert_eq!(batch.accepted.len(), 1);
    let event = &batch.accepted[0];
    assert_eq!((event.source_id.as_str(), event.message_id.as_str()), ("crm", "import-ab12-cd34ef-2"));
    assert!(event.identifiers.iter().any(|i| i.kind == "email"), "{:?}", event.identifiers);
    assert_eq!(batch.failed.len(), 1);
    assert_eq!((batch.failed[0].index, batch.failed[0].code.to_string()), (1, "missing_identity".to_string()));

    // Campaign results name their recipients by email alone: enough for a trusted reader.
    let results = Mapping::parse(
        br#"{"type": "track", "event": "Campaign Result", "identifiers": {"email": {"column": "to"}},
             "properties": {"opens": {"column": "opens", "type": "number"}}}"#,
    )
    .unwrap()
    .check(&columns(&["to", "opens"]))
    .unwrap();
    let text = results.event(&row(&["li@example.com", "3"]), "m-1", now()).unwrap();
    let batch = collect_events(&source, &[text], now(), &mut Entropy::from_seed([3; 32]));
    assert_eq!((batch.accepted.len(), batch.failed.len()), (1, 0), "{:?}", batch.failed);
    let ids: Vec<&str> = batch.accepted[0].identifiers.iter().map(|i| i.kind.as_str()).collect();
    assert_eq!(ids, ["email"]);
}
