//! The API through the real `cdp up`: configuration managed over HTTP drives the pipeline; a person is looked
//! up by every identifier, erased on request — after which no object in the data folder holds them and the
//! partner got the deletion notice — and a suppressed identifier's later events are dropped and counted; every
//! operation is in the audit log.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cdp_e2e::http::{Reply, post, send};
use cdp_e2e::partner::Partner;
use cdp_e2e::procs::{CdpUp, cdp_api_key as api_key, cdp_bin, cdp_source_add};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn call(up: &CdpUp, method: &str, path: &str, key: &str, body: Option<Value>) -> Reply {
    let auth = format!("Bearer {key}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    send(
        method,
        &format!("{}{path}", up.url),
        body.as_bytes(),
        &[("authorization", &auth), ("content-type", "application/json")],
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `check` every 200 ms for up to `timeout`.
fn wait_for(what: &str, timeout: Duration, up: &CdpUp, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}\n{}", up.proc.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every file under `dir` (gzip undone) that contains `needle`.
fn holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let text = match shared::storage::gunzip(&bytes) {
                Ok(plain) => String::from_utf8_lossy(&plain).into_owned(),
                Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
            };
            if text.contains(needle) {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

#[test]
fn managed_configuration_lookup_erasure_suppression_and_audit_through_cdp_up() {
    let data = tempfile::tempdir().expect("dir");
    let write_key = cdp_source_add(data.path(), "web");
    let admin = api_key(data.path(), "ops", &["admin"]);
    let reader = api_key(data.path(), "personalization", &["profiles:read"]);
    let partner = Partner::start(SECRET);
    let up = CdpUp::start_with(data.path(), &["--webhooks-loopback", "--tag-interval", "1"]);

    // Configuration through the API: a tag, an audience on it, a destination subscribed to the audience.
    let tag =
        json!({"status": "active", "kind": "statistical", "filter": {"types": ["page"]}, "aggregate": {"op": "count"}});
    assert_eq!(call(&up, "PUT", "/v1/tags/views", &admin, Some(tag)).status, 201);
    let audience = json!({"status": "active", "when": {"field": "tag:views", "op": "gte", "value": 1}});
    assert_eq!(call(&up, "PUT", "/v1/audiences/viewers", &admin, Some(audience)).status, 201);
    let destination = json!({"url": partner.url("/hook"), "secret": SECRET, "send": {"audiences": ["viewers"]},
                             "batching": {"maxWaitMs": 0}});
    let created = call(&up, "PUT", "/v1/destinations/crm", &admin, Some(destination));
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(!created.body.contains(&SECRET[6..]), "the secret is write-only");

    // Jane browses, logs in, gives her email; Bob browses.
    let batch = json!({"batch": [
        {"type": "page", "anonymousId": "anon-jane-7", "messageId": "e1", "name": "Home"},
        {"type": "identify", "anonymousId": "anon-jane-7", "userId": "user-1042", "messageId": "e2",
         "traits": {"email": "jane@example.com", "plan": "pro"}},
        {"type": "page", "userId": "user-2077", "messageId": "e3", "name": "Home"},
    ]});
    assert_eq!(post(&format!("{}/v1/batch", up.url), &batch.to_string(), Some(&write_key)).status, 200);
    let profile = |identifier: &str| call(&up, "GET", &format!("/v1/profiles/{identifier}"), &reader, None);
    wait_for("Jane's profile", Duration::from_secs(30), &up, || profile("user_id:user-1042").status == 200);
    let jane = profile("user_id:user-1042").json();
    let jane_id = jane["id"].as_str().expect("id").to_string();
    for identifier in ["anonymous_id:anon-jane-7", "email:jane@example.com", jane_id.as_str()] {
        let same = profile(identifier);
        assert_eq!(same.status, 200, "{identifier}: {}", same.body);
        assert_eq!(same.json()["id"], jane["id"], "{identifier}");
    }
    assert_eq!(call(&up, "GET", "/v1/profiles/user_id:user-1042", &write_key, None).status, 401, "a write key");
    assert_eq!(call(&up, "GET", "/v1/tags", &reader, None).status, 403, "no config:read");

    // The audience entry reaches the partner.
    let entered = |partner: &Partner| {
        partner
            .received("/hook")
            .iter()
            .flat_map(|r| r.body["data"]["items"].as_array().cloned().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    wait_for("Jane's audience entry at the partner", Duration::from_secs(60), &up, || {
        entered(&partner).iter().any(|i| i["type"] == "audience.entered" && i["profile"]["id"] == jane["id"])
    });
    assert!(holding(data.path(), "user-1042").len() > 1, "Jane is stored before the erasure");
    // The audience as operators see it: definition, size, history and insight from the full recompute.
    let mut viewers = Value::Null;
    wait_for("the audience's insight", Duration::from_secs(60), &up, || {
        viewers = call(&up, "GET", "/v1/audiences/viewers", &admin, None).json();
        viewers["insight"]["size"] == 2
    });
    assert_eq!(viewers["computed"]["size"], 2, "{viewers}");
    assert!(viewers["history"]["sizes"].as_array().is_some_and(|s| !s.is_empty()), "{viewers}");
    assert_eq!(viewers["insight"]["values"], json!([]), "two members reveal no values");

    // Erasure by email.
    let eraser = api_key(data.path(), "dpo", &["profiles:delete"]);
    assert_eq!(
        call(
            &up,
            "POST",
            "/v1/privacy/requests",
            &reader,
            Some(json!({"type": "delete", "identifiers": ["email:jane@example.com"]}))
        )
        .status,
        403
    );
    let request = call(
        &up,
        "POST",
        "/v1/privacy/requests",
        &eraser,
        Some(json!({"type": "delete", "identifiers": ["email:jane@example.com"]})),
    );
    assert_eq!(request.status, 202, "{}", request.body);
    let id = request.json()["id"].as_str().expect("id").to_string();
    let mut status = Value::Null;
    wait_for("the erasure to complete", Duration::from_secs(90), &up, || {
        status = call(&up, "GET", &format!("/v1/privacy/requests/{id}"), &eraser, None).json();
        status["status"] == "completed"
    });
    assert_eq!(status["outcome"]["notified"], json!(["crm"]), "{status}");
    // The deletion notice is followed apart from completion: it reaches the partner, and the request says so.
    wait_for("the deletion notice to be taken", Duration::from_secs(60), &up, || {
        status = call(&up, "GET", &format!("/v1/privacy/requests/{id}"), &eraser, None).json();
        status["outcome"]["noticesSettled"] == 1 && status.get("noticesPending").is_none()
    });
    let notices: Vec<Value> = entered(&partner).into_iter().filter(|i| i["type"] == "profile.deleted").collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["profile"], json!({"id": jane_id}), "the notice names the profile id only");
    assert!(partner.received("/hook").iter().all(|r| r.verified), "every webhook signed");
    assert_eq!(profile("user_id:user-1042").status, 404);
    let email_hash = shared::ids::sha256_hex("jane@example.com");
    for needle in ["user-1042", "anon-jane-7", "jane@example.com", email_hash.as_str(), jane_id.as_str()] {
        assert_eq!(holding(data.path(), needle), Vec::<String>::new(), "no object holds {needle}");
    }
    assert_eq!(profile("user_id:user-2077").status, 200, "Bob is untouched");

    // Suppression: Bob's later events are dropped at ingest and counted.
    let suppressed = call(
        &up,
        "POST",
        "/v1/privacy/requests",
        &eraser,
        Some(json!({"type": "suppress", "identifiers": ["user_id:user-2077"]})),
    );
    assert_eq!(
        (suppressed.status, suppressed.json()["status"].as_str()),
        (200, Some("completed")),
        "{}",
        suppressed.body
    );
    let later = json!({"batch": [{"type": "page", "userId": "user-2077", "messageId": "e4", "name": "Again"}]});
    assert_eq!(post(&format!("{}/v1/batch", up.url), &later.to_string(), Some(&write_key)).status, 200);
    wait_for("the dropped event to be counted", Duration::from_secs(30), &up, || {
        call(&up, "GET", "/v1/privacy/suppressions", &eraser, None).json()["droppedEvents"] == 1
    });
    assert_eq!(profile("user_id:user-2077").json()["events"]["page"]["count"], 1);

    // Unlink and key revocation, then the audit log has every operation.
    let unlink = call(
        &up,
        "POST",
        "/v1/profiles/user_id:user-2077/unlink",
        &admin,
        Some(json!({"identifier": "user_id:user-2077"})),
    );
    assert_eq!(unlink.status, 409, "a profile's only identifier stays: {}", unlink.body);
    let reader_id = reader.split('_').nth(2).expect("id");
    assert_eq!(call(&up, "DELETE", &format!("/v1/api-keys/{reader_id}"), &admin, None).status, 200);
    assert_eq!(profile("user_id:user-2077").status, 401, "a revoked key");
    let log = call(&up, "GET", "/v1/audit?limit=500", &admin, None).json();
    let actions: Vec<&str> =
        log["records"].as_array().expect("records").iter().filter_map(|r| r["action"].as_str()).collect();
    for action in [
        "api_key.create",
        "source.create",
        "tag.create",
        "audience.create",
        "destination.create",
        "privacy.delete",
        "privacy.delete.completed",
        "privacy.suppress",
        "api_key.revoke",
    ] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
    assert!(!log.to_string().contains("user-1042") && !log.to_string().contains(&SECRET[6..]), "{log}");
}

/// The data dictionary through the real `cdp up`: what arrives is described (`GET /v1/catalog`, `cdp catalog`),
/// definitions on misspelled names are refused with the closest known one unless expected, and traits are
/// cleaned on the profile while the raw event keeps them as sent.
#[test]
fn data_dictionary_checks_definitions_and_traits_are_cleaned_through_cdp_up() {
    let data = tempfile::tempdir().expect("dir");
    let write_key = cdp_source_add(data.path(), "shop");
    let admin = api_key(data.path(), "ops", &["admin"]);
    let up = CdpUp::start_with(data.path(), &["--tag-interval", "1"]);

    let batch = json!({"batch": [
        {"type": "track", "userId": "u1", "messageId": "d1", "event": "Order Completed",
         "properties": {"revenue": 30.5, "currency": "CNY"}},
        {"type": "identify", "userId": "u1", "messageId": "d2",
         "traits": {"email": "User1@Example.com ", "plan": " pro ", "age": "thirty", "nickname": ""}},
    ]});
    assert_eq!(post(&format!("{}/v1/batch", up.url), &batch.to_string(), Some(&write_key)).status, 200);
    let mut catalog = Value::Null;
    wait_for("the data dictionary", Duration::from_secs(30), &up, || {
        catalog = call(&up, "GET", "/v1/catalog", &admin, None).json();
        catalog["traits"]["age"]["issues"] == 1
    });
    let order = &catalog["sources"]["shop"]["events"]["Order Completed"];
    assert_eq!(order["count"], 1, "{catalog}");
    assert_eq!(order["properties"]["revenue"]["types"], json!({"number": 1}), "{catalog}");
    assert_eq!(order["properties"]["currency"]["examples"], json!(["CNY"]), "{catalog}");
    assert_eq!(catalog["traits"]["age"]["lastIssue"], "`thirty` is not a number", "{catalog}");
    assert_eq!(catalog["traits"]["email"]["personal"], true, "{catalog}");
    assert!(!catalog.to_string().to_lowercase().contains("user1@example.com"), "no personal values: {catalog}");
    let only = call(&up, "GET", "/v1/catalog?event=identify", &admin, None).json();
    assert_eq!(only["sources"]["shop"]["calls"]["identify"]["count"], 1, "{only}");
    assert!(only["sources"]["shop"]["events"].as_object().is_some_and(|e| e.is_empty()), "{only}");

    // Definitions on misspelled names are refused with the closest known name.
    let misspelled = json!({"status": "active", "kind": "statistical", "filter": {"events": ["Order Complete"]},
                            "aggregate": {"op": "sum", "property": "revenu"}});
    let refused = call(&up, "PUT", "/v1/tags/spend", &admin, Some(misspelled));
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("unknown event `Order Complete`; did you mean `Order Completed`?"),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("unknown property `revenu`; did you mean `revenue`?"), "{}", refused.body);
    let spend = json!({"status": "active", "kind": "statistical", "filter": {"events": ["Order Completed"]},
                       "aggregate": {"op": "sum", "property": "revenue"}});
    assert_eq!(call(&up, "PUT", "/v1/tags/spend", &admin, Some(spend)).status, 201);
    let plna = json!({"status": "active", "when": {"field": "trait:plna", "op": "eq", "value": "pro"}});
    let refused = call(&up, "PUT", "/v1/audiences/pro", &admin, Some(plna));
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("unknown trait `plna`; did you mean `plan`?"), "{}", refused.body);
    // Data still to come: expected by name.
    let refunds = json!({"status": "active", "kind": "statistical", "expected": ["Order Refunded"],
                         "filter": {"events": ["Order Refunded"]}, "aggregate": {"op": "count"}});
    let created = call(&up, "PUT", "/v1/tags/refunds", &admin, Some(refunds));
    assert_eq!(created.status, 201, "{}", created.body);

    // The profile holds the clean traits; the empty one sets nothing; the raw event keeps what was sent.
    let profile = call(&up, "GET", "/v1/profiles/user_id:u1", &admin, None).json();
    assert_eq!(profile["traits"]["email"], "user1@example.com", "{profile}");
    assert_eq!(profile["traits"]["plan"], "pro", "{profile}");
    assert_eq!(profile["traits"]["age"], "thirty", "kept as sent: {profile}");
    assert!(profile["traits"].get("nickname").is_none(), "{profile}");
    assert_eq!(holding(&data.path().join("raw"), "User1@Example.com ").len(), 1, "the raw event as sent");

    // The same dictionary on the command line.
    let output = Command::new(cdp_bin())
        .args(["catalog", "--source", "shop", "--data"])
        .arg(data.path())
        .output()
        .expect("running cdp catalog");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("Order Completed") && text.contains("[1 not cleaned: `thirty` is not a number]"), "{text}");
}
