//! The whole pipeline on real-shaped payloads (`tests/fixtures/`).

use base64::Engine as _;
use serde_json::{Value, json};

use super::*;
use crate::event::EventType;
use crate::source::new_source;
use crate::storage::decode_ndjson_gz;

const ANALYTICS_JS: &str = include_str!("../../../tests/fixtures/segment-analytics-js-batch.json");
const NODE_TRACK: &str = include_str!("../../../tests/fixtures/segment-node-track.json");
const MIXED: &str = include_str!("../../../tests/fixtures/mixed-valid-invalid-batch.json");

struct Setup {
    sources: Sources,
    key: String,
}

fn setup() -> Setup {
    let (mut web, key) = new_source("web", "Website", &mut Entropy::from_seed([1; 32]));
    web.allowed_origins = vec!["https://*.shop.example".into()];
    let (other, _) = new_source("other", "Other", &mut Entropy::from_seed([2; 32]));
    let mut sources = Sources::default();
    sources.add(web).unwrap();
    sources.add(other).unwrap();
    Setup { sources, key }
}

fn now() -> UtcTime {
    UtcTime::parse("2026-11-28T12:00:10.000Z").unwrap()
}

fn basic(key: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:")))
}

fn run(req: &CollectRequest<'_>, s: &Setup) -> Collected {
    collect(req, &s.sources, now(), &mut Entropy::from_seed([5; 32]))
}

fn kept(c: Collected) -> Batch {
    match c {
        Collected::Kept(b) => b,
        Collected::Rejected(a) => panic!("expected a kept batch, got {a:?}"),
    }
}

fn rejected(c: Collected) -> Answer {
    match c {
        Collected::Rejected(a) => a,
        Collected::Kept(b) => panic!("expected a rejection, got {b:?}"),
    }
}

#[test]
fn analytics_js_batch_with_key_in_body() {
    let s = setup();
    let body = ANALYTICS_JS.replace("__WRITE_KEY__", &s.key);
    let mut req = CollectRequest::new(Endpoint::Batch, body.as_bytes());
    req.origin = Some("https://www.shop.example");
    req.client_ip = Some("198.51.100.23".parse().unwrap());
    let batch = kept(run(&req, &s));
    assert_eq!(batch.source_id, "web");
    assert_eq!(batch.accepted.len(), 3);
    assert!(batch.failed.is_empty());

    let page = &batch.accepted[0];
    assert_eq!(page.kind, EventType::Page);
    assert_eq!(page.name.as_deref(), Some("Pricing"));
    assert_eq!(page.category.as_deref(), Some("Docs"));
    // The client clock ran 1 h fast: sentAt 13:00:10 arrived at 12:00:10.
    assert_eq!(page.timestamp.to_string(), "2026-11-28T12:00:00.000Z");
    assert_eq!(page.original_timestamp.unwrap().to_string(), "2026-11-28T13:00:00.000Z");
    assert_eq!(page.context["library"]["name"], "analytics.js", "batch context merged");
    assert_eq!(page.context["campaign"], json!({"source": "newsletter", "medium": "email", "name": "black_friday"}));
    assert_eq!(page.context["ip"], "198.51.100.0");
    let ua = page.enrichment.user_agent.as_ref().unwrap();
    assert_eq!((ua.browser.as_str(), ua.os.as_str()), ("Safari", "Mac OSX"));

    let identify = &batch.accepted[2];
    let email = identify.identifiers.iter().find(|i| i.kind == "email").unwrap();
    assert_eq!(email.value, "jane.doe@example.com");
    assert_eq!(email.sha256.as_deref(), Some(crate::ids::sha256_hex("jane.doe@example.com").as_str()));

    let answer = batch.answer();
    assert_eq!(answer.status, 200);
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body, json!({"success": true, "accepted": 3, "failed": 0}));
    assert!(answer.headers.contains(&("access-control-allow-origin", "https://www.shop.example".to_string())));
    assert!(!answer.headers.iter().any(|(name, _)| *name == "access-control-allow-credentials"), "no credentials");
}

#[test]
fn canonical_events_round_trip_through_storage() {
    let s = setup();
    let body = ANALYTICS_JS.replace("__WRITE_KEY__", &s.key);
    let batch = kept(run(&CollectRequest::new(Endpoint::Batch, body.as_bytes()), &s));
    let (key, bytes) = batch.accepted_object().unwrap();
    assert!(key.starts_with("raw/v1/dt=2026-11-28/hr=12/"), "{key}");
    let decoded: Vec<CanonicalEvent> = decode_ndjson_gz(&bytes).unwrap();
    assert_eq!(decoded, batch.accepted);
    // camelCase on the wire.
    let line: Value = serde_json::to_value(&decoded[1]).unwrap();
    for field in ["messageId", "sourceId", "receivedAt", "anonymousId", "originalTimestamp", "sentAt"] {
        assert!(line.get(field).is_some(), "{field} missing in {line}");
    }
    assert!(batch.failed_object().is_none(), "no failed object without failures");
}

#[test]
fn node_single_track_with_basic_auth() {
    let s = setup();
    let mut req = CollectRequest::new(Endpoint::Single(EventType::Track), NODE_TRACK.as_bytes());
    let auth = basic(&s.key);
    req.authorization = Some(&auth);
    req.client_ip = Some("10.0.0.1".parse().unwrap());
    let batch = kept(run(&req, &s));
    let e = &batch.accepted[0];
    assert_eq!(e.event.as_deref(), Some("Order Completed"));
    assert_eq!(e.context["ip"], "203.0.113.0", "the relayed user IP wins, anonymized");
    assert_eq!(e.timestamp.to_string(), "2026-11-28T13:00:20.000Z", "no sentAt: the client's timestamp stands");
    assert_eq!(e.extras["_metadata"]["jsRuntime"], "node");
}

#[test]
fn mixed_batch_keeps_the_good_and_quarantines_the_bad() {
    let s = setup();
    let auth = basic(&s.key);
    let mut req = CollectRequest::new(Endpoint::Batch, MIXED.as_bytes());
    req.authorization = Some(&auth);
    let batch = kept(run(&req, &s));
    let ok: Vec<&str> = batch.accepted.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ok, ["mixed-ok-1", "mixed-ok-2", "mixed-ok-3", "mixed-ok-4", "mixed-ok-5"]);
    let bad: Vec<(usize, FailureCode)> = batch.failed.iter().map(|f| (f.index, f.code)).collect();
    assert_eq!(
        bad,
        [
            (1, FailureCode::MissingIdentity),
            (3, FailureCode::InvalidField),
            (4, FailureCode::UnknownType),
            (6, FailureCode::MissingEvent),
            (8, FailureCode::NotAnObject),
        ]
    );
    let original: Value = serde_json::from_str(&batch.failed[1].original).unwrap();
    assert_eq!(original["properties"], "oops", "the original bytes are kept");
    assert_eq!(batch.failed[1].message_id.as_deref(), Some("mixed-bad-props"));
    let (key, bytes) = batch.failed_object().unwrap();
    assert!(key.starts_with("failed/v1/dt=2026-11-28/hr=12/"));
    assert_eq!(decode_ndjson_gz::<FailedEvent>(&bytes).unwrap(), batch.failed);
    let body: Value = serde_json::from_str(&batch.answer().body).unwrap();
    assert_eq!(body["accepted"], 5);
    assert_eq!(body["failed"], 5);
    assert_eq!(
        body["errors"][0],
        json!({"index": 1, "code": "missing_identity", "message": "userId or anonymousId is required"})
    );
}

#[test]
fn unknown_or_missing_key_is_401() {
    let s = setup();
    let body = ANALYTICS_JS.replace("__WRITE_KEY__", "wrong");
    assert_eq!(rejected(run(&CollectRequest::new(Endpoint::Batch, body.as_bytes()), &s)).status, 401);
    assert_eq!(rejected(run(&CollectRequest::new(Endpoint::Batch, MIXED.as_bytes()), &s)).status, 401);
    // A bad key in the header is refused even when the body carries a good one.
    let body = ANALYTICS_JS.replace("__WRITE_KEY__", &s.key);
    let auth = basic("wrong");
    let mut req = CollectRequest::new(Endpoint::Batch, body.as_bytes());
    req.authorization = Some(&auth);
    let answer = rejected(run(&req, &s));
    assert_eq!(answer.status, 401);
    assert!(answer.body.contains("unauthorized"));
}

#[test]
fn limits_and_bad_json_are_400() {
    let s = setup();
    let auth = basic(&s.key);
    let status = |endpoint: Endpoint, body: &[u8]| {
        let mut req = CollectRequest::new(endpoint, body);
        req.authorization = Some(&auth);
        rejected(run(&req, &s))
    };
    let big = format!(r#"{{"batch":[],"pad":"{}"}}"#, "x".repeat(MAX_REQUEST_BYTES));
    let a = status(Endpoint::Batch, big.as_bytes());
    assert_eq!((a.status, a.body.contains("request_too_large")), (400, true));
    let big_event = format!(r#"{{"userId":"u","event":"x","properties":{{"p":"{}"}}}}"#, "x".repeat(MAX_EVENT_BYTES));
    assert_eq!(status(Endpoint::Single(EventType::Track), big_event.as_bytes()).status, 400);
    let a = status(Endpoint::Batch, b"{\"batch\": [");
    assert_eq!((a.status, a.body.contains("invalid_json")), (400, true));
    assert_eq!(status(Endpoint::Batch, b"\xff\xfe").status, 400);
    let a = status(Endpoint::Batch, b"{\"batch\": {}}");
    assert_eq!((a.status, a.body.contains("invalid_batch")), (400, true));
    assert_eq!(status(Endpoint::Batch, b"{}").status, 400);
    assert_eq!(status(Endpoint::Batch, b"[]").status, 400);
    assert_eq!(status(Endpoint::Batch, br#"{"batch":[],"context":"x"}"#).status, 400);
    assert_eq!(status(Endpoint::Batch, br#"{"batch":[],"sentAt":"never"}"#).status, 400);
    let many = format!(r#"{{"batch":[{}]}}"#, vec!["{}"; MAX_BATCH_EVENTS + 1].join(","));
    let a = status(Endpoint::Batch, many.as_bytes());
    assert_eq!((a.status, a.body.contains("too_many_events")), (400, true));
}

#[test]
fn an_oversize_event_in_a_batch_fails_alone() {
    let s = setup();
    let auth = basic(&s.key);
    let big = format!(
        r#"{{"type":"track","userId":"u","event":"x","properties":{{"p":"{}"}}}}"#,
        "x".repeat(MAX_EVENT_BYTES)
    );
    let body = format!(r#"{{"batch":[{big},{{"type":"track","userId":"u","event":"ok"}}]}}"#);
    let mut req = CollectRequest::new(Endpoint::Batch, body.as_bytes());
    req.authorization = Some(&auth);
    let batch = kept(run(&req, &s));
    assert_eq!(batch.accepted.len(), 1);
    assert_eq!(batch.failed[0].code, FailureCode::EventTooLarge);
    assert_eq!(batch.failed[0].original, big);
}

#[test]
fn origins_are_checked_per_source() {
    let s = setup();
    let body = ANALYTICS_JS.replace("__WRITE_KEY__", &s.key);
    let mut req = CollectRequest::new(Endpoint::Batch, body.as_bytes());
    req.origin = Some("https://evil.example");
    assert_eq!(rejected(run(&req, &s)).status, 403);
    let allowed = preflight(Some("https://www.shop.example"), &s.sources);
    assert_eq!(allowed.status, 204);
    assert!(!allowed.headers.iter().any(|(name, _)| *name == "access-control-allow-credentials"), "no credentials");
    // The second source allows any origin, so a preflight from anywhere passes; the POST is checked per source.
    assert_eq!(preflight(Some("https://evil.example"), &s.sources).status, 204);
    assert_eq!(preflight(None, &s.sources).status, 400);
    let mut only_web = Sources::default();
    only_web.add(s.sources.list()[0].clone()).unwrap();
    assert_eq!(preflight(Some("https://evil.example"), &only_web).status, 403);
}

#[test]
fn storage_failure_answers_503_without_claiming_anything() {
    let s = setup();
    let body = ANALYTICS_JS.replace("__WRITE_KEY__", &s.key);
    let batch = kept(run(&CollectRequest::new(Endpoint::Batch, body.as_bytes()), &s));
    let answer = batch.storage_failed();
    assert_eq!(answer.status, 503);
    assert!(!answer.body.contains("\"success\":true"));
}

#[test]
fn same_inputs_same_decisions() {
    let s = setup();
    let auth = basic(&s.key);
    let mut req = CollectRequest::new(Endpoint::Batch, MIXED.as_bytes());
    req.authorization = Some(&auth);
    let a = kept(run(&req, &s));
    let b = kept(run(&req, &s));
    assert_eq!(a.request_id, b.request_id);
    assert_eq!(a.accepted, b.accepted);
    assert_eq!(a.failed, b.failed);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn field() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[ a-zA-Z0-9@._-]{0,12}".prop_map(Value::from),
            Just(json!({"k": "v"})),
            Just(json!([1, 2])),
            Just(json!("2026-11-28T10:00:00Z")),
        ]
    }

    fn event() -> impl Strategy<Value = Value> {
        let keys = prop::sample::select(vec![
            "type",
            "userId",
            "anonymousId",
            "event",
            "name",
            "properties",
            "traits",
            "context",
            "messageId",
            "timestamp",
            "sentAt",
            "previousId",
            "groupId",
            "integrations",
            "extra",
        ]);
        let kind = prop::sample::select(vec!["track", "identify", "page", "screen", "group", "alias", "nope"]);
        (prop::collection::btree_map(keys, field(), 0..10), kind, any::<bool>()).prop_map(|(fields, kind, typed)| {
            let mut m: serde_json::Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if typed {
                m.insert("type".into(), kind.into());
            }
            Value::Object(m)
        })
    }

    proptest! {
        /// Whatever the events, every one is either accepted or failed with a reason, in order, and
        /// collecting never panics.
        #[test]
        fn every_event_is_accounted_for(events in prop::collection::vec(prop_oneof![event(), field()], 0..40)) {
            let s = setup();
            let body = json!({ "batch": events, "writeKey": s.key }).to_string();
            let batch = kept(run(&CollectRequest::new(Endpoint::Batch, body.as_bytes()), &s));
            prop_assert_eq!(batch.accepted.len() + batch.failed.len(), events.len());
            let mut failed_indices: Vec<usize> = batch.failed.iter().map(|f| f.index).collect();
            failed_indices.dedup();
            prop_assert_eq!(failed_indices.len(), batch.failed.len(), "each failure has its own index");
            for f in &batch.failed {
                prop_assert!(!f.reason.is_empty());
                let original: Value = serde_json::from_str(&f.original).expect("original bytes are the event's JSON");
                prop_assert_eq!(&original, &events[f.index]);
            }
            for e in &batch.accepted {
                prop_assert!(e.user_id.is_some() || e.anonymous_id.is_some());
                prop_assert!(e.timestamp <= e.received_at);
                prop_assert!(!e.message_id.is_empty() && e.message_id.chars().count() <= 100);
            }
        }

        /// Arbitrary bytes get an answer, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
            let s = setup();
            let auth = basic(&s.key);
            let mut req = CollectRequest::new(Endpoint::Batch, &body);
            req.authorization = Some(&auth);
            match run(&req, &s) {
                Collected::Rejected(answer) => prop_assert!(answer.status == 400),
                Collected::Kept(batch) => prop_assert!(batch.answer().status == 200),
            }
        }
    }
}

#[test]
fn user_ids_beyond_two_to_the_53_stay_apart() {
    let s = setup();
    let body = format!(
        r#"{{"writeKey":"{}","batch":[
            {{"type":"identify","userId":123456789012345678901234567890,"messageId":"big-1"}},
            {{"type":"identify","userId":123456789012345678901234567891,"messageId":"big-2"}},
            {{"type":"identify","userId":42,"messageId":"small"}}]}}"#,
        s.key
    );
    let batch = kept(run(&CollectRequest::new(Endpoint::Batch, body.as_bytes()), &s));
    let ids: Vec<&str> = batch.accepted.iter().filter_map(|e| e.user_id.as_deref()).collect();
    assert_eq!(ids, ["123456789012345678901234567890", "123456789012345678901234567891", "42"]);
}

#[test]
fn errors_name_what_is_actually_wrong() {
    let s = setup();
    let twice = format!(r#"{{"writeKey":"{}","batch":[],"batch":[]}}"#, s.key);
    let answer = rejected(run(&CollectRequest::new(Endpoint::Batch, twice.as_bytes()), &s));
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("request body has `batch` more than once"), "{}", answer.body);

    let body = format!(
        r#"{{"writeKey":"{}","batch":[{{"type":"track","event":"\ud800 lone","userId":"u"}},{{"type":"page","userId":"u"}},7]}}"#,
        s.key
    );
    let batch = kept(run(&CollectRequest::new(Endpoint::Batch, body.as_bytes()), &s));
    assert_eq!(batch.accepted.len(), 1, "the good event is kept");
    let codes: Vec<(FailureCode, &str)> = batch.failed.iter().map(|f| (f.code, f.reason.as_str())).collect();
    assert_eq!(codes[0].0, FailureCode::InvalidJson, "{codes:?}");
    assert!(codes[0].1.contains("escape"), "{codes:?}");
    assert_eq!(codes[1], (FailureCode::NotAnObject, "event must be a JSON object, got a number"));
}

#[test]
fn a_client_time_out_of_bounds_is_replaced_by_receipt_with_a_note() {
    let s = setup();
    let body = format!(
        r#"{{"writeKey":"{}","sentAt":"2999-01-01T00:00:00Z","batch":[
            {{"type":"page","userId":"u","timestamp":"2026-11-28T12:00:00Z","messageId":"far"}},
            {{"type":"page","userId":"u","originalTimestamp":"0000-01-01T00:00:00Z","sentAt":null,"messageId":"zero"}}]}}"#,
        s.key
    );
    let batch = kept(run(&CollectRequest::new(Endpoint::Batch, body.as_bytes()), &s));
    for event in &batch.accepted {
        assert_eq!(event.timestamp, now(), "{}", event.message_id);
        assert_eq!(event.enrichment.notes.len(), 1, "{}", event.message_id);
    }
    assert_eq!(
        batch.accepted[1].original_timestamp.map(|t| t.to_string()).as_deref(),
        Some("0000-01-01T00:00:00.000Z")
    );
}

#[test]
fn compressed_bodies_are_read_and_unknown_encodings_refused() {
    let s = setup();
    let body = format!(r#"{{"writeKey":"{}","batch":[{{"type":"page","userId":"u"}}]}}"#, s.key);
    let zipped = crate::storage::gzip(body.as_bytes());
    let mut req = CollectRequest::new(Endpoint::Batch, &zipped);
    req.content_encoding = Some("gzip");
    assert_eq!(kept(run(&req, &s)).accepted.len(), 1);
    let mut req = CollectRequest::new(Endpoint::Batch, body.as_bytes());
    req.content_encoding = Some("br");
    let answer = rejected(run(&req, &s));
    assert_eq!(answer.status, 415);
    assert!(answer.body.contains("unsupported_encoding"), "{}", answer.body);
}

#[test]
fn a_suppressed_person_s_events_are_dropped_before_storage_and_counted() {
    let s = setup();
    let body = format!(
        r#"{{"writeKey":"{}","batch":[{{"type":"page","userId":"gone"}},{{"type":"page","userId":"here"}},{{"type":"page"}}]}}"#,
        s.key
    );
    let mut batch = kept(run(&CollectRequest::new(Endpoint::Batch, body.as_bytes()), &s));
    let key = crate::access::IdentifierKey::from_bytes([9; 32]);
    let list = crate::access::Suppression { suppressed: [key.hash("user_id:gone")].into(), ..Default::default() };
    let check = crate::access::SuppressionCheck { list, key: key.clone() };
    assert_eq!(batch.drop_suppressed(&check), 1);
    assert_eq!(batch.accepted.len(), 1);
    assert_eq!(batch.accepted[0].user_id.as_deref(), Some("here"));
    let (_, stored) = batch.accepted_object().unwrap();
    assert!(!String::from_utf8(crate::storage::gunzip(&stored).unwrap()).unwrap().contains("gone"));
    let body: Value = serde_json::from_str(&batch.answer().body).unwrap();
    assert_eq!((body["accepted"].clone(), body["failed"].clone()), (json!(2), json!(1)), "acknowledged, not revealed");
    let nothing = crate::access::SuppressionCheck { list: crate::access::Suppression::default(), key };
    assert_eq!(batch.drop_suppressed(&nothing), 0);
}

#[test]
fn the_sources_tracking_plan_flags_and_blocks() {
    let (mut web, key) = new_source("web", "Website", &mut Entropy::from_seed([1; 32]));
    web.tracking_plan = Some(
        serde_json::from_value(json!({
            "events": {"Signed Up": {"required": ["plan"], "properties": {"plan": {"enum": ["free", "pro"]}}}},
            "unplanned": "flag", "violations": "block"
        }))
        .unwrap(),
    );
    let mut sources = Sources::default();
    sources.add(web).unwrap();
    let body = json!({"batch": [
        {"type": "track", "userId": "u1", "messageId": "a", "event": "Signed Up", "properties": {"plan": "pro"}},
        {"type": "track", "userId": "u1", "messageId": "b", "event": "Signed Up", "properties": {}},
        {"type": "track", "userId": "u1", "messageId": "c", "event": "Played"},
        {"type": "page", "userId": "u1", "messageId": "d", "context": {"violations": ["forged by the client"]}}
    ]})
    .to_string();
    let auth = basic(&key);
    let mut req = CollectRequest::new(Endpoint::Batch, body.as_bytes());
    req.authorization = Some(&auth);
    let batch = kept(collect(&req, &sources, now(), &mut Entropy::from_seed([5; 32])));
    let ids: Vec<&str> = batch.accepted.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["a", "c", "d"]);
    assert!(batch.accepted[0].context.get("violations").is_none());
    assert!(batch.accepted[2].context.get("violations").is_none(), "only the plan says what a violation is");
    assert_eq!(
        batch.accepted[1].context["violations"],
        json!([{"path": "/event", "problem": "`Played` is not in the tracking plan"}])
    );
    assert_eq!(batch.failed.len(), 1);
    let blocked = &batch.failed[0];
    assert_eq!(
        (blocked.index, blocked.code, blocked.message_id.as_deref()),
        (1, FailureCode::ViolatesTrackingPlan, Some("b"))
    );
    assert_eq!(blocked.reason, "breaks the tracking plan: /properties/plan: required");
    let answer: Value = serde_json::from_str(&batch.answer().body).unwrap();
    assert_eq!(answer["errors"][0]["code"], "violates_tracking_plan");
}
