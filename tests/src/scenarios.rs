//! The scenarios every collector shell must pass alike, and what they stored, projected so that two shells'
//! results can be compared (receipt times and request ids differ between runs; nothing else may).

use base64::Engine as _;
use serde_json::{Value, json};
use shared::event::{CanonicalEvent, FailedEvent};
use shared::storage::decode_ndjson_gz;

use crate::fixture;
use crate::http::{post, send};

/// The person on the suppression list the scenarios expect ([`suppression_list`]): a collector must drop their
/// events before storing them.
pub const SUPPRESSED_USER: &str = "u-suppressed";

/// What a shell under test holds for the suppression scenario: the deployment's identifier key and the
/// suppression list hashed with it, as `(object key, bytes)` to write into its store.
pub fn suppression_files() -> [(&'static str, Vec<u8>); 2] {
    let key = shared::access::IdentifierKey::from_bytes([42; 32]);
    let list = shared::access::Suppression {
        suppressed: [key.hash(&format!("user_id:{SUPPRESSED_USER}"))].into(),
        ..Default::default()
    };
    [
        (shared::access::IDENTIFIER_KEY_OBJECT, key.to_stored()),
        (shared::access::SUPPRESSED_KEY, serde_json::to_vec(&list).expect("json")),
    ]
}

/// The webhook sources the scenarios expect: `(id, kind, signing secret, mapping file under tests/fixtures/)`.
pub const WEBHOOK_SOURCES: [(&str, &str, &str, Option<&str>); 3] = [
    ("shop", "shopify", "shpss_2f7c1b0e9a8d4c6b", None),
    ("billing", "stripe", "whsec_test_5Wk0aZ4p7Qm2Lx9Rv3Tb", None),
    ("crm", "webhook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Some("webhooks/standard-webhook-mapping.json")),
];

/// The webhook sources and their secrets, as a shell's store holds them (for a store written directly).
pub fn webhook_sources() -> (Vec<shared::source::SourceConfig>, shared::source::SourceSecrets) {
    let mut sources = Vec::new();
    let mut secrets = shared::source::SourceSecrets::default();
    for (i, (id, kind, secret, mapping)) in WEBHOOK_SOURCES.into_iter().enumerate() {
        let (mut source, _) =
            shared::source::new_source(id, id, &mut shared::ids::Entropy::from_seed([i as u8 + 60; 32]));
        source.kind = shared::source::SourceKind::parse(kind).expect("a kind");
        source.mapping =
            mapping.map(|file| shared::import::Mapping::parse(fixture(file).as_bytes()).expect("a mapping"));
        sources.push(source);
        secrets.set(id, secret);
    }
    (sources, secrets)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

/// Inbound webhooks signed as Shopify, Stripe and Standard Webhooks senders sign, through the shell at `url`.
fn webhooks(url: &str, bucket: &dyn Bucket) {
    use shared::collect::webhook::verify::sign;
    let [(_, _, shopify_secret, _), (_, _, stripe_secret, _), (_, _, standard_secret, _)] = WEBHOOK_SOURCES;
    let order = fixture("webhooks/shopify-orders-create.json");
    let shopify = |topic: &str, secret: &str, body: &str| {
        let signature = sign::shopify(secret, body.as_bytes());
        let headers = [
            ("content-type", "application/json"),
            ("x-shopify-topic", topic),
            ("x-shopify-hmac-sha256", signature.as_str()),
            ("x-shopify-webhook-id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
        ];
        send("POST", &format!("{url}/v1/webhooks/shop"), body.as_bytes(), &headers).unwrap_or_else(|e| panic!("{e}"))
    };
    let before = bucket.snapshot().objects();
    let reply = shopify("orders/create", "not-the-shop-secret", &order);
    assert_eq!((reply.status, reply.json()["code"].clone()), (401, json!("invalid_signature")), "{}", reply.body);
    let reply =
        send("POST", &format!("{url}/v1/webhooks/shop"), order.as_bytes(), &[("x-shopify-topic", "orders/create")]);
    assert_eq!(reply.map(|r| r.status), Ok(401), "unsigned");
    let reply = send("POST", &format!("{url}/v1/webhooks/nowhere"), order.as_bytes(), &[]).map(|r| r.status);
    assert_eq!(reply, Ok(404));
    assert_eq!(bucket.snapshot().objects(), before, "a refused webhook stores nothing");

    for topic in ["orders/create", "orders/paid"] {
        let reply = shopify(topic, shopify_secret, &order);
        assert_eq!((reply.status, reply.json()["accepted"].clone()), (200, json!(1)), "{topic}: {}", reply.body);
    }
    let reply = shopify("products/update", shopify_secret, r#"{"id": 632910392, "title": "IPod Nano - 8GB"}"#);
    assert_eq!((reply.status, reply.json()["failed"].clone()), (200, json!(1)), "{}", reply.body);
    assert_eq!(reply.json()["errors"][0]["code"], "unmapped_payload");

    let session = fixture("webhooks/stripe-checkout-session-completed.json");
    let stripe = |seconds: i64| {
        let signature = sign::stripe(stripe_secret, session.as_bytes(), seconds);
        let headers = [("content-type", "application/json"), ("stripe-signature", signature.as_str())];
        send("POST", &format!("{url}/v1/webhooks/billing"), session.as_bytes(), &headers)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let stale = stripe(unix_now() - 600);
    assert_eq!(stale.status, 401, "{}", stale.body);
    assert!(stale.json()["message"].as_str().is_some_and(|m| m.contains("s old")), "{}", stale.body);
    let reply = stripe(unix_now());
    assert_eq!((reply.status, reply.json()["accepted"].clone()), (200, json!(1)), "{}", reply.body);

    let contact = fixture("webhooks/standard-webhook.json");
    let at = unix_now().to_string();
    let signature = sign::standard(standard_secret, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", unix_now(), contact.as_bytes())
        .expect("a whsec_ secret");
    let headers = [
        ("content-type", "application/json"),
        ("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
        ("webhook-timestamp", at.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    let reply =
        send("POST", &format!("{url}/v1/webhooks/crm"), contact.as_bytes(), &headers).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.json()["accepted"].clone()), (200, json!(1)), "{}", reply.body);

    let stored: Vec<CanonicalEvent> = bucket.snapshot().raw.into_iter().flat_map(|(_, events)| events).collect();
    let orders: Vec<&CanonicalEvent> =
        stored.iter().filter(|e| e.message_id == "shopify-order-820982911946154508").collect();
    assert_eq!(orders.len(), 2, "both deliveries stored under one messageId, so ingest keeps one");
    let order = orders[0];
    assert_eq!((order.event.as_deref(), order.source_id.as_str()), (Some("Order Completed"), "shop"));
    let properties = order.properties.clone().unwrap_or_default();
    assert_eq!((properties["revenue"].clone(), properties["currency"].clone()), (json!(388.0), json!("USD")));
    assert!(order.identifiers.iter().any(|i| i.kind == "email" && i.value == "jon@example.com"));
    let paid = stored.iter().find(|e| e.source_id == "billing").expect("the Stripe order");
    assert_eq!(paid.properties.as_ref().map(|p| p["total"].clone()), Some(json!(24.2)));
    let contact = stored.iter().find(|e| e.source_id == "crm").expect("the Standard Webhooks event");
    assert_eq!(
        (contact.event.as_deref(), contact.message_id.as_str()),
        (Some("contact.created"), "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
    );
}

/// The tracking plan of the scenarios' second source, `planned`: `Signed Up` must carry a known plan and at
/// least one seat (else blocked); events the plan does not name are stored, flagged.
pub const PLAN: &str = r#"{"events": {"Signed Up": {"type": "object", "required": ["plan"],
  "properties": {"plan": {"enum": ["free", "pro"]}, "seats": {"type": "integer", "minimum": 1}}}},
  "unplanned": "flag", "violations": "block"}"#;

/// The write keys the scenarios send with: source `e2e` (no plan), and source `planned` (with [`PLAN`]).
pub struct Keys {
    /// Source `e2e`.
    pub main: String,
    /// Source `planned`.
    pub planned: String,
}

/// A source's tracking plan, enforced by the shell: kept, blocked with the violations, flagged.
fn tracking_plan(url: &str, key: &str, bucket: &dyn Bucket) {
    let batch = json!({"batch": [
        {"type": "track", "userId": "u-plan", "messageId": "plan-1", "event": "Signed Up", "properties": {"plan": "pro", "seats": 2}},
        {"type": "track", "userId": "u-plan", "messageId": "plan-2", "event": "Signed Up", "properties": {"plan": "gold", "seats": 0}},
        {"type": "track", "userId": "u-plan", "messageId": "plan-3", "event": "Video Played"}
    ]});
    let reply = post(&format!("{url}/v1/batch"), &batch.to_string(), Some(key));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert_eq!((answer["accepted"].clone(), answer["failed"].clone()), (json!(2), json!(1)), "{answer}");
    assert_eq!(
        (answer["errors"][0]["index"].clone(), answer["errors"][0]["code"].clone()),
        (json!(1), json!("violates_tracking_plan"))
    );
    let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("/properties/plan: \"gold\" is not one of \"free\", \"pro\""), "{message}");
    let stored: Vec<CanonicalEvent> = bucket.snapshot().raw.into_iter().flat_map(|(_, events)| events).collect();
    let planned: Vec<&CanonicalEvent> = stored.iter().filter(|e| e.source_id == "planned").collect();
    let ids: Vec<&str> = planned.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["plan-1", "plan-3"], "the blocked event is not stored");
    assert!(planned[0].context.get("violations").is_none());
    assert_eq!(planned[1].context["violations"][0]["problem"], "`Video Played` is not in the tracking plan");
}

/// Everything a collector stored under `raw/` and `failed/`, decoded, and the suppressed events it counted.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// `(key, events)` per raw object, by key.
    pub raw: Vec<(String, Vec<CanonicalEvent>)>,
    /// `(key, events)` per failed object, by key.
    pub failed: Vec<(String, Vec<FailedEvent>)>,
    /// Events dropped because their person is suppressed (the counts under `privacy/v1/dropped/`).
    pub dropped: u64,
}

impl Snapshot {
    /// Decodes `(key, bytes)` pairs listed from a store.
    pub fn decode(objects: Vec<(String, Vec<u8>)>) -> Self {
        let mut snapshot = Snapshot::default();
        for (key, bytes) in objects {
            if key.starts_with("raw/") {
                let events = decode_ndjson_gz(&bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
                snapshot.raw.push((key, events));
            } else if key.starts_with("failed/") {
                let events = decode_ndjson_gz(&bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
                snapshot.failed.push((key, events));
            } else if key.starts_with(shared::access::DROPPED_PREFIX) {
                let record: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{key}: {e}"));
                snapshot.dropped += record["dropped"].as_u64().expect("a count");
            }
        }
        snapshot
    }

    /// Number of objects.
    pub fn objects(&self) -> usize {
        self.raw.len() + self.failed.len()
    }
}

/// A place a collector writes to, read back by the test.
pub trait Bucket {
    /// All objects under `raw/` and `failed/`.
    fn snapshot(&self) -> Snapshot;
}

/// What a shell stored across all scenarios, without run-specific values.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    /// Accepted events, projected, sorted by messageId.
    pub accepted: Vec<Value>,
    /// Failed events, projected, sorted by messageId and index.
    pub failed: Vec<Value>,
}

/// Runs every scenario against the collector at `url` (which must accept `keys.main` for source `e2e` and
/// `keys.planned` for source `planned`, with [`PLAN`], and hold the [`WEBHOOK_SOURCES`]), checking
/// each answer and what `bucket` holds after it. Returns the projected stored results.
pub fn run(url: &str, keys: &Keys, bucket: &dyn Bucket) -> Outcome {
    let key = keys.main.as_str();
    assert!(bucket.snapshot().objects() == 0, "scenarios start on an empty bucket");

    // A bad write key: 401, nothing stored.
    let reply = post(&format!("{url}/v1/batch"), &fixture("mixed-valid-invalid-batch.json"), Some("not-a-key"));
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.json()["code"], "unauthorized");
    let body = fixture("segment-analytics-js-batch.json").replace("__WRITE_KEY__", "not-a-key");
    assert_eq!(post(&format!("{url}/v1/batch"), &body, None).status, 401);
    assert_eq!(bucket.snapshot().objects(), 0, "a refused request stores nothing");

    // Oversize and invalid JSON: 400, nothing stored.
    let big = format!(
        r#"{{"batch":[{{"type":"track","userId":"u","event":"x","properties":{{"p":"{}"}}}}]}}"#,
        "x".repeat(520_000)
    );
    let reply = post(&format!("{url}/v1/batch"), &big, Some(key));
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.json()["code"], "request_too_large");
    let single = format!(r#"{{"userId":"u","event":"x","properties":{{"p":"{}"}}}}"#, "x".repeat(33_000));
    assert_eq!(post(&format!("{url}/v1/track"), &single, Some(key)).status, 400);
    let reply = post(&format!("{url}/v1/batch"), r#"{"batch": [ {"type": "#, Some(key));
    assert_eq!((reply.status, reply.json()["code"].clone()), (400, json!("invalid_json")));
    assert_eq!(bucket.snapshot().objects(), 0, "a rejected request stores nothing");

    // A mixed batch: the good events are kept, each bad one quarantined with its reason.
    let reply = post(&format!("{url}/v1/batch"), &fixture("mixed-valid-invalid-batch.json"), Some(key));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(
        (answer["success"].clone(), answer["accepted"].clone(), answer["failed"].clone()),
        (json!(true), json!(5), json!(5))
    );
    let snapshot = bucket.snapshot();
    assert_eq!((snapshot.raw.len(), snapshot.failed.len()), (1, 1), "one raw and one failed object per request");
    let (raw_key, events) = &snapshot.raw[0];
    assert!(
        raw_key.starts_with("raw/v1/dt=") && raw_key.contains("/hr=") && raw_key.ends_with(".ndjson.gz"),
        "{raw_key}"
    );
    let ids: Vec<&str> = events.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["mixed-ok-1", "mixed-ok-2", "mixed-ok-3", "mixed-ok-4", "mixed-ok-5"]);
    let signed_up = &events[0];
    assert_eq!(signed_up.context["campaign"], json!({"source": "ads", "name": "launch"}));
    assert_eq!(signed_up.context["library"]["name"], "analytics-python", "batch context merged");
    assert_eq!(
        signed_up.received_at.unix_millis() - signed_up.timestamp.unix_millis(),
        2000,
        "clock skew corrected: sent 2 s after it happened"
    );
    let email = events[1].identifiers.iter().find(|i| i.kind == "email").expect("email identifier");
    assert_eq!(email.value, "u1@example.com");
    let failed = &snapshot.failed[0].1;
    let reasons: Vec<(usize, &str)> = failed.iter().map(|f| (f.index, f.code.as_str())).collect();
    assert_eq!(
        reasons,
        [
            (1, "missing_identity"),
            (3, "invalid_field"),
            (4, "unknown_type"),
            (6, "missing_event"),
            (8, "not_an_object")
        ]
    );
    assert!(failed.iter().all(|f| !f.reason.is_empty() && !f.original.is_empty()));
    assert_eq!(failed[1].reason, "properties must be an object, got a string");

    // Segment's analytics.js batch, key in the body, from an allowed origin.
    let body = fixture("segment-analytics-js-batch.json").replace("__WRITE_KEY__", key);
    let reply = send(
        "POST",
        &format!("{url}/v1/batch"),
        body.as_bytes(),
        &[("content-type", "text/plain"), ("origin", "https://www.shop.example")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://www.shop.example"));
    assert_eq!(reply.header("access-control-allow-credentials"), None, "the collector never takes credentials");
    assert_eq!(reply.json()["accepted"], 3);

    // Segment's mobile SDKs (analytics-kotlin, analytics-swift): a screen call, the app, device, OS, network and
    // screen in the context, the device id and the advertising id (unless ad tracking is limited) as identifiers.
    let body = fixture("segment-mobile-batch.json").replace("__WRITE_KEY__", key);
    let reply = post(&format!("{url}/v1/batch"), &body, None);
    assert_eq!((reply.status, reply.json()["accepted"].clone()), (200, json!(3)), "{}", reply.body);
    let mobile: Vec<CanonicalEvent> = bucket
        .snapshot()
        .raw
        .into_iter()
        .flat_map(|(_, events)| events)
        .filter(|e| e.context.get("app").is_some())
        .collect();
    let ids = |e: &CanonicalEvent| -> Vec<(String, String)> {
        e.identifiers.iter().map(|i| (i.kind.clone(), i.value.clone())).collect()
    };
    let screen = mobile.iter().find(|e| e.kind == shared::event::EventType::Screen).expect("the screen call");
    assert_eq!((screen.name.as_deref(), screen.category.as_deref()), (Some("Product Detail"), Some("Catalog")));
    assert_eq!(screen.context["os"]["name"], "Android");
    assert_eq!(
        (screen.context["app"]["build"].clone(), screen.context["network"]["wifi"].clone()),
        (json!("341"), json!(true))
    );
    assert_eq!(screen.context["screen"]["density"], 2.625);
    let android = ids(screen);
    assert!(android.contains(&("device_id".into(), "f1d2c3b4a5968778".into())), "{android:?}");
    assert!(android.contains(&("advertising_id".into(), "38400000-8cf0-11bd-b23e-10b96e40000d".into())), "{android:?}");
    let ios = mobile.iter().find(|e| e.kind == shared::event::EventType::Identify).expect("the identify call");
    let ios = ids(ios);
    assert!(ios.contains(&("device_id".into(), "6F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9".into())), "{ios:?}");
    assert!(ios.iter().all(|(kind, _)| kind != "advertising_id"), "limited ad tracking: {ios:?}");

    // A single call from a server library, key in Basic auth.
    let reply = post(&format!("{url}/v1/track"), &fixture("segment-node-track.json"), Some(key));
    assert_eq!((reply.status, reply.json()["accepted"].clone()), (200, json!(1)), "{}", reply.body);

    // CORS preflight and health.
    let reply = send(
        "OPTIONS",
        &format!("{url}/v1/batch"),
        b"",
        &[("origin", "https://www.shop.example"), ("access-control-request-method", "POST")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://www.shop.example"));
    assert_eq!(reply.header("access-control-allow-credentials"), None);
    assert_eq!(send("GET", &format!("{url}/health"), b"", &[]).map(|r| r.status), Ok(200));

    // A gzip body (Content-Encoding) is read; an encoding the collector does not read is refused, not misread.
    let events = json!({"batch": [{"type": "track", "event": "Zipped", "userId": "u-gz", "messageId": "gz-1"}]});
    let auth = crate::http::basic(key);
    let zipped = shared::storage::gzip(events.to_string().as_bytes());
    let headers = [("content-type", "application/json"), ("content-encoding", "gzip"), ("authorization", &auth)];
    let reply = send("POST", &format!("{url}/v1/batch"), &zipped, &headers).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.json()["accepted"].clone()), (200, json!(1)), "{}", reply.body);
    let headers = [("content-type", "application/json"), ("content-encoding", "br"), ("authorization", &auth)];
    let plain = events.to_string();
    let reply = send("POST", &format!("{url}/v1/batch"), plain.as_bytes(), &headers).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, 415, "{}", reply.body);

    // The pixel: one event in the query string (base64 JSON, the write key inside), answered with a 1×1 GIF.
    let pixel = |event: Value| {
        let data = base64::engine::general_purpose::STANDARD.encode(event.to_string());
        let data = data.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
        send("GET", &format!("{url}/v1/pixel/track?data={data}"), b"", &[]).unwrap_or_else(|e| panic!("{e}"))
    };
    let opened = json!({"writeKey": key, "event": "Email Opened", "userId": "u-mail", "messageId": "px-1",
                        "properties": {"campaign": "nov"}});
    let reply = pixel(opened.clone());
    assert_eq!((reply.status, reply.header("content-type")), (200, Some("image/gif")), "{}", reply.body);
    assert_eq!(reply.bytes, shared::collect::pixel::GIF);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let mut wrong = opened;
    wrong["writeKey"] = json!("not-a-key");
    let reply = pixel(wrong);
    assert_eq!((reply.status, reply.header("x-cdp-error")), (401, Some("unauthorized")));
    assert_eq!(reply.bytes, shared::collect::pixel::GIF, "a refused pixel is still an image");
    let reply = send("GET", &format!("{url}/v1/pixel/track?data=***"), b"", &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.header("x-cdp-error")), (400, Some("invalid_pixel")));

    webhooks(url, bucket);
    tracking_plan(url, &keys.planned, bucket);

    // A suppressed person's event is acknowledged, counted, and never stored; the other in the batch is.
    let events = json!({"batch": [
        {"type": "track", "event": "Tracked", "userId": SUPPRESSED_USER, "messageId": "sup-1"},
        {"type": "track", "event": "Tracked", "userId": "u-free", "messageId": "sup-2"}]});
    let reply = post(&format!("{url}/v1/batch"), &events.to_string(), Some(key));
    assert_eq!((reply.status, reply.json()["accepted"].clone()), (200, json!(2)), "{}", reply.body);

    let snapshot = bucket.snapshot();
    assert_eq!((snapshot.raw.len(), snapshot.failed.len(), snapshot.dropped), (12, 3, 1));
    assert!(
        snapshot.raw.iter().flat_map(|(_, e)| e).all(|e| e.user_id.as_deref() != Some(SUPPRESSED_USER)),
        "nothing of the suppressed person is stored"
    );
    project(&snapshot)
}

/// The stored results without what legitimately differs between runs and shells: receipt time (kept as the
/// offset of a skew-corrected `timestamp` from it), request ids, object keys, and geo (only the edge has it).
pub fn project(snapshot: &Snapshot) -> Outcome {
    let mut accepted: Vec<Value> = snapshot
        .raw
        .iter()
        .flat_map(|(_, events)| events.iter())
        .map(|e| {
            let offset = e.timestamp.unix_millis() - e.received_at.unix_millis();
            let mut v = serde_json::to_value(e).expect("event serializes");
            let o = v.as_object_mut().expect("object");
            o.remove("receivedAt");
            // With sentAt the timestamp is relative to receipt (skew-corrected); without, it is the client's.
            if e.sent_at.is_some() || e.original_timestamp.is_none() {
                o.remove("timestamp");
                o.insert("timestampMinusReceivedAtMs".into(), json!(offset));
            }
            // Geo comes from the edge's request metadata; the local runner has none.
            if let Some(enrichment) = o.get_mut("enrichment").and_then(Value::as_object_mut) {
                enrichment.remove("geo");
            }
            v
        })
        .collect();
    accepted.sort_by_key(|v| v["messageId"].as_str().unwrap_or_default().to_string());
    let mut failed: Vec<Value> = snapshot
        .failed
        .iter()
        .flat_map(|(_, events)| events.iter())
        .map(|f| json!({"index": f.index, "code": f.code, "reason": f.reason, "messageId": f.message_id, "original": f.original, "sourceId": f.source_id}))
        .collect();
    failed.sort_by_key(|v| (v["messageId"].as_str().unwrap_or_default().to_string(), v["index"].as_u64()));
    Outcome { accepted, failed }
}
