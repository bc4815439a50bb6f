//! ID-Mapping through the real `cdp up`: events posted to the collector form unified profiles, read back with
//! `cdp profile --json`.

use std::process::Command;
use std::time::{Duration, Instant};

use shared::storage::keys;

use cdp_e2e::http::post;
use cdp_e2e::procs::{CdpUp, cdp_bin, cdp_source_add};
use serde_json::{Value, json};

fn profile(data: &std::path::Path, identifier: &str) -> Option<Value> {
    let out = Command::new(cdp_bin())
        .args(["profile", identifier, "--json", "--data"])
        .arg(data)
        .output()
        .expect("running cdp profile");
    out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("cdp profile --json prints JSON"))
}

/// Polls until `check` holds for the profile of `identifier` (ingest runs right after each request).
fn wait_for(data: &std::path::Path, identifier: &str, check: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        if let Some(p) = profile(data, identifier)
            && check(&p)
        {
            return p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "profile of {identifier} never got there: {:?}",
            profile(data, identifier)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn profiles_form_live_under_cdp_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = cdp_source_add(dir.path(), "site");
    let up = CdpUp::start(dir.path());
    let batch = |events: Value| {
        let reply = post(&format!("{}/v1/batch", up.url), &json!({"batch": events}).to_string(), Some(&key));
        assert_eq!(reply.status, 200, "{}", reply.body);
    };
    // Anonymous browsing, login, a second device, then a server call with the email only.
    batch(json!([{"type": "page", "anonymousId": "laptop", "messageId": "e1"}]));
    batch(json!([{"type": "identify", "anonymousId": "laptop", "userId": "u1", "messageId": "e2",
                  "traits": {"email": "Jane@Example.com", "plan": "free"}}]));
    batch(json!([{"type": "page", "anonymousId": "phone", "messageId": "e3"}]));
    batch(
        json!([{"type": "identify", "anonymousId": "phone", "userId": "u1", "messageId": "e4", "traits": {"plan": "pro"}}]),
    );
    let reply = post(
        &format!("{}/v1/track", up.url),
        &json!({"event": "Order Completed", "messageId": "e6", "anonymousId": "crm-import",
                "context": {"traits": {"email": "jane@example.com"}}, "properties": {"revenue": 30}})
        .to_string(),
        Some(&key),
    );
    assert_eq!(reply.status, 200);

    let p = wait_for(dir.path(), "email:jane@example.com", |p| {
        p["identities"].as_array().is_some_and(|ids| ids.len() == 5)
    });
    let same = profile(dir.path(), "anonymous_id:phone").expect("phone resolves");
    assert_eq!(p["id"], same["id"], "one person, one profile");
    assert_eq!(p["traits"]["plan"], "pro");
    assert_eq!(p["events"]["Order Completed"]["count"], 1);
    assert_eq!(p["mergedIds"].as_array().map(Vec::len), Some(1));

    // An operator unlinks the phone: it no longer connects to anything else, so it splits off.
    let out = Command::new(cdp_bin())
        .args(["unlink", "anonymous_id:phone", "--request-id", "ticket-42", "--data"])
        .arg(dir.path())
        .output()
        .expect("running cdp unlink");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = profile(dir.path(), "email:jane@example.com").expect("profile");
    assert_eq!(after["id"], p["id"], "the part with the strongest identifiers keeps the id");
    assert_eq!(after["identities"].as_array().map(Vec::len), Some(4));
    assert!(profile(dir.path(), "anonymous_id:phone").is_none(), "the unlinked identifier resolves to nothing");

    // A shared tablet: two user ids never merge; the refusal is in both histories.
    batch(json!([{"type": "identify", "anonymousId": "tablet", "userId": "mum", "messageId": "t1"}]));
    batch(json!([{"type": "identify", "anonymousId": "tablet", "userId": "dad", "messageId": "t2"}]));
    let dad = wait_for(dir.path(), "user_id:dad", |_| true);
    let mum = profile(dir.path(), "user_id:mum").expect("mum's profile");
    assert_ne!(dad["id"], mum["id"]);
    for p in [&dad, &mum] {
        let refused = p["history"].as_array().expect("history").iter().any(|e| e["kind"]["type"] == "merge_refused");
        assert!(refused, "refusal recorded in {}", p["id"]);
    }
    // A blocked value links nothing.
    batch(json!([{"type": "track", "userId": "null", "anonymousId": "x1", "event": "A", "messageId": "n1"},
                 {"type": "track", "userId": "null", "anonymousId": "x2", "event": "A", "messageId": "n2"}]));
    let x1 = wait_for(dir.path(), "anonymous_id:x1", |_| true);
    let x2 = wait_for(dir.path(), "anonymous_id:x2", |_| true);
    assert_ne!(x1["id"], x2["id"]);
    assert!(profile(dir.path(), "user_id:null").is_none());
}

/// Runs `cdp <args> --data DIR` and returns its standard output.
fn cdp(data: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(cdp_bin()).args(args).arg("--data").arg(data).output().expect("running cdp");
    assert!(out.status.success(), "cdp {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tags_and_audiences_follow_events_and_definitions_under_cdp_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = cdp_source_add(dir.path(), "site");
    std::fs::create_dir_all(dir.path().join("config")).expect("config folder");
    std::fs::write(
        dir.path().join("config/tags.json"),
        json!([{"id": "orders", "status": "active", "kind": "statistical",
                "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "count"}},
               {"id": "spend", "status": "active", "kind": "statistical",
                "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "sum", "property": "revenue"}}])
        .to_string(),
    )
    .expect("tags");
    std::fs::write(
        dir.path().join("config/audiences.json"),
        json!([{"id": "buyers", "status": "active", "when": {"field": "tag:orders", "op": "gte", "value": 1}}])
            .to_string(),
    )
    .expect("audiences");
    let up = CdpUp::start(dir.path());
    let order = |user: &str, id: &str, revenue: f64| {
        json!({"type": "track", "userId": user, "event": "Order Completed", "messageId": id,
               "properties": {"revenue": revenue}})
    };
    let reply = post(
        &format!("{}/v1/batch", up.url),
        &json!({"batch": [order("ann", "o1", 12.5), order("ann", "o2", 7.5),
                          {"type": "page", "userId": "bob", "messageId": "p1"}]})
        .to_string(),
        Some(&key),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);

    // cdp up recomputes a few seconds after ingest.
    let start = Instant::now();
    let values = loop {
        let path = dir.path().join(keys::TAG_VALUES);
        if let Ok(bytes) = std::fs::read(&path) {
            let values: Value = serde_json::from_slice(&shared::storage::gunzip(&bytes).expect("gzip")).expect("JSON");
            if values["profiles"].as_object().is_some_and(|p| p.values().any(|t| t["spend"] == 20.0)) {
                break values;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "tags were not computed");
        std::thread::sleep(Duration::from_millis(200));
    };
    let ann = wait_for(dir.path(), "user_id:ann", |_| true);
    assert_eq!(ann["tags"], json!({"orders": 2, "spend": 20.0}), "kept up to date by ingest");
    let ann = ann["id"].as_str().expect("id").to_string();
    assert_eq!(values["profiles"][&ann], json!({"orders": 2, "spend": 20.0}), "the full recompute agrees");
    let listed = cdp(dir.path(), &["tags", "list"]);
    assert!(listed.lines().any(|l| l.starts_with("orders ") && l.contains("100.0 %")), "{listed}");
    let audiences = cdp(dir.path(), &["audiences"]);
    let buyers = audiences.lines().find(|l| l.starts_with("buyers ")).expect("buyers listed");
    assert_eq!(buyers.split_whitespace().collect::<Vec<_>>(), ["buyers", "active", "1", "1", "0"], "{audiences}");

    // A changed definition is applied without a restart.
    std::fs::write(
        dir.path().join("config/audiences.json"),
        json!([{"id": "buyers", "status": "active", "when": {"field": "tag:orders", "op": "gte", "value": 5}}])
            .to_string(),
    )
    .expect("audiences");
    let start = Instant::now();
    loop {
        let audiences = cdp(dir.path(), &["audiences"]);
        let line = audiences.lines().find(|l| l.starts_with("buyers ")).unwrap_or_default().to_string();
        if line.split_whitespace().collect::<Vec<_>>() == ["buyers", "active", "0", "0", "1"] {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the new definition was not applied: {line}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let check = Command::new(cdp_bin()).args(["tags", "check", "--data"]).arg(dir.path()).output().expect("cdp");
    assert!(check.status.success());
    std::fs::write(
        dir.path().join("config/tags.json"),
        r#"[{"id": "x", "kind": "statistical", "aggregate": {"op": "avg"}}]"#,
    )
    .expect("tags");
    let check = Command::new(cdp_bin()).args(["tags", "check", "--data"]).arg(dir.path()).output().expect("cdp");
    assert!(!check.status.success());
    let message = String::from_utf8_lossy(&check.stderr);
    assert!(message.contains("tags[0] (x).aggregate.property: avg needs a property"), "{message}");
    drop(up);
}
