//! Offline sources through the real `cdp up`: a CRM export imported with `cdp import` becomes profiles (cleaned,
//! bad rows quarantined with their row), importing it again changes nothing, and a marketing platform's
//! campaign results (回流) land as events on the same people.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cdp_e2e::http::send;
use cdp_e2e::procs::{CdpUp, cdp_api_key, cdp_bin, cdp_source_add};
use serde_json::Value;

fn cdp_import(data: &Path, file: &Path, source: &str, mapping: &Path) -> Output {
    Command::new(cdp_bin())
        .arg("import")
        .arg(file)
        .args(["--source", source, "--mapping"])
        .arg(mapping)
        .arg("--data")
        .arg(data)
        .output()
        .expect("running cdp import")
}

fn profile(up: &CdpUp, key: &str, identifier: &str) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let reply = send("GET", &format!("{}/v1/profiles/{identifier}", up.url), b"", &[("authorization", &auth)])
        .unwrap_or_else(|e| panic!("{e}"));
    let body = if reply.status == 200 { reply.json() } else { Value::Null };
    (reply.status, body)
}

#[test]
fn a_crm_export_and_campaign_results_imported_through_cdp_up() {
    let data = tempfile::tempdir().expect("dir");
    let files = tempfile::tempdir().expect("dir");
    cdp_source_add(data.path(), "crm");
    cdp_source_add(data.path(), "email-platform");
    let admin = cdp_api_key(data.path(), "ops", &["admin"]);
    let up = CdpUp::start_with(data.path(), &[]);

    let contacts = files.path().join("contacts.csv");
    std::fs::write(
        &contacts,
        "crm_id,name,email,phone,age\n\
         C-1,Li Lei, Li.Lei@Example.com ,138 0013 8000,31\n\
         C-2,\"Han, Meimei\",han@example.com,,\n\
         C-3,Bad Age,bad@example.com,,thirty\n",
    )
    .expect("write");
    let mapping = files.path().join("contacts.json");
    std::fs::write(
        &mapping,
        r#"{"type": "identify", "userId": {"column": "crm_id"},
            "traits": {"name": {"column": "name"}, "phone": {"column": "phone"}, "age": {"column": "age", "type": "number"}},
            "identifiers": {"email": {"column": "email"}}}"#,
    )
    .expect("write");
    let output = cdp_import(data.path(), &contacts, "crm", &mapping);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}{}", stdout, String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("3 rows in") && stdout.contains("2 stored in 1 raw objects, 1 failed"), "{stdout}");
    assert!(stdout.contains("applied to profiles: 2 events"), "{stdout}");

    let (status, li) = profile(&up, &admin, "user_id:C-1");
    assert_eq!(status, 200);
    assert_eq!(li["traits"]["email"], "li.lei@example.com", "cleaned: {li}");
    assert_eq!(li["traits"]["name"], "Li Lei");
    assert_eq!(profile(&up, &admin, "email:han@example.com").1["traits"]["name"], "Han, Meimei");
    assert_eq!(profile(&up, &admin, "user_id:C-3").0, 404, "the bad row is not a profile");
    let failed: Vec<_> = walk(&data.path().join("failed/imports/crm"));
    assert_eq!(failed.len(), 1, "{failed:?}");
    let rows = shared::storage::decode_ndjson_gz::<Value>(&std::fs::read(&failed[0]).expect("read")).expect("decode");
    assert_eq!((rows[0]["file"].as_str(), rows[0]["row"].as_u64()), (Some("contacts.csv"), Some(4)));

    // Again: nothing changes.
    let again = cdp_import(data.path(), &contacts, "crm", &mapping);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("applied to profiles: 0 events (2 already there"), "{stdout}");
    assert_eq!(profile(&up, &admin, "user_id:C-1").1["events"]["identify"]["count"], 1);

    // Campaign results from the email platform, per recipient: events on the same people, by email.
    let results = files.path().join("results.csv");
    std::fs::write(
        &results,
        "campaign,recipient,sent_at,sends,opens,clicks,conversions\n\
         nov-launch,LI.LEI@example.com,2026-11-20 09:00:00,1,3,1,1\n\
         nov-launch,han@example.com,2026-11-20 09:00:00,1,0,0,0\n",
    )
    .expect("write");
    let results_mapping = files.path().join("results.json");
    std::fs::write(
        &results_mapping,
        r#"{"type": "track", "event": "Campaign Result", "identifiers": {"email": {"column": "recipient"}},
            "timestamp": {"column": "sent_at", "format": "%Y-%m-%d %H:%M:%S"},
            "properties": {"campaign": {"column": "campaign"}, "sends": {"column": "sends", "type": "number"},
                           "opens": {"column": "opens", "type": "number"}, "clicks": {"column": "clicks", "type": "number"},
                           "conversions": {"column": "conversions", "type": "number"}}}"#,
    )
    .expect("write");
    let output = cdp_import(data.path(), &results, "email-platform", &results_mapping);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let start = Instant::now();
    loop {
        let li = profile(&up, &admin, "user_id:C-1").1;
        if li["events"]["Campaign Result"]["count"] == 1 {
            assert_eq!(li["identities"].as_array().map(Vec::len), Some(3), "user id, email, phone: {li}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the campaign result on Li Lei's profile: {li}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A tracking plan set with `cdp source plan`, enforced by the real `cdp up`: an event that keeps it is
/// stored as sent, one that breaks it is refused with the violations (blocked), an unplanned one is stored
/// with its violations listed (flagged) and counted in the data dictionary.
#[test]
fn a_tracking_plan_blocks_and_flags_through_cdp_up() {
    let data = tempfile::tempdir().expect("dir");
    let key = cdp_source_add(data.path(), "web");
    let admin = cdp_api_key(data.path(), "ops", &["admin"]);
    let plan = data.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"{"events": {"Signed Up": {"type": "object", "required": ["plan"],
                                     "properties": {"plan": {"enum": ["free", "pro"]}, "seats": {"type": "integer", "minimum": 1}}}},
            "unplanned": "flag", "violations": "block"}"#,
    )
    .expect("write");
    let output = Command::new(cdp_bin())
        .args(["source", "plan", "web"])
        .arg(&plan)
        .arg("--data")
        .arg(data.path())
        .output()
        .expect("cdp source plan");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let up = CdpUp::start_with(data.path(), &[]);

    let batch = serde_json::json!({"batch": [
        {"type": "track", "userId": "u1", "messageId": "p1", "event": "Signed Up", "properties": {"plan": "pro", "seats": 2}},
        {"type": "track", "userId": "u1", "messageId": "p2", "event": "Signed Up", "properties": {"plan": "gold", "seats": 0}},
        {"type": "track", "userId": "u1", "messageId": "p3", "event": "Video Played"}
    ]});
    let reply = cdp_e2e::http::post(&format!("{}/v1/batch", up.url), &batch.to_string(), Some(&key));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert_eq!((answer["accepted"].as_u64(), answer["failed"].as_u64()), (Some(2), Some(1)), "{answer}");
    assert_eq!(answer["errors"][0]["code"], "violates_tracking_plan");
    let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/properties/plan: \"gold\" is not one of \"free\", \"pro\"")
            && message.contains("/properties/seats: 0 is below the minimum 1"),
        "{message}"
    );

    // The flagged event carries its violations; the dictionary counts them per event and day.
    let auth = format!("Bearer {admin}");
    let start = Instant::now();
    loop {
        let catalog =
            send("GET", &format!("{}/v1/catalog?event=Video%20Played", up.url), b"", &[("authorization", &auth)])
                .expect("catalog")
                .json();
        let days = &catalog["sources"]["web"]["events"]["Video Played"]["days"];
        if let Some(day) = days.as_object().and_then(|d| d.values().next()) {
            assert_eq!((day["events"].as_u64(), day["violations"].as_u64()), (Some(1), Some(1)), "{catalog}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the flagged event in the dictionary: {catalog}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let raw: Vec<_> = walk(&data.path().join("raw"));
    let events: Vec<shared::event::CanonicalEvent> = raw
        .iter()
        .flat_map(|path| shared::storage::decode_ndjson_gz(&std::fs::read(path).expect("read")).expect("decode"))
        .collect();
    let ids: Vec<&str> = events.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["p1", "p3"], "the blocked event is not stored");
    assert!(events[0].context.get("violations").is_none());
    assert_eq!(events[1].context["violations"][0]["problem"], "`Video Played` is not in the tracking plan");
}

fn cdp_sync(data: &Path, url: &str, query: &str, cursor: &str, mapping: &Path) -> (bool, String) {
    let output = Command::new(cdp_bin())
        .args([
            "sync", "postgres", "--url", url, "--query", query, "--cursor", cursor, "--source", "crm", "--batch", "1",
        ])
        .arg("--mapping")
        .arg(mapping)
        .arg("--data")
        .arg(data)
        .output()
        .expect("running cdp sync postgres");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let password =
        url.split_once("://").and_then(|(_, rest)| rest.split_once('@')).and_then(|(user, _)| user.split_once(':'));
    assert!(password.is_some_and(|(_, p)| !text.contains(p)), "the password is never printed: {text}");
    (output.status.success(), text)
}

fn traits_of(data: &Path, identifier: &str) -> Value {
    let output = Command::new(cdp_bin())
        .args(["profile", identifier, "--json", "--data"])
        .arg(data)
        .output()
        .expect("running cdp profile");
    assert!(output.status.success(), "{identifier}: {}", String::from_utf8_lossy(&output.stderr));
    let profile: Value = serde_json::from_slice(&output.stdout).expect("a profile as JSON");
    profile["traits"].clone()
}

#[test]
fn a_postgres_table_is_synced_incrementally_by_its_cursor() {
    let pg = cdp_e2e::postgres::Postgres::start();
    pg.sql(
        "create table customers (id serial primary key, email text, full_name text, plan text, score numeric, \
         vip boolean, tags text[], updated_at timestamptz)",
    );
    // Two rows share a time: the cursor's tiebreaker (id) keeps either from being skipped, one row per batch.
    pg.sql(
        "insert into customers (email, full_name, plan, score, vip, tags, updated_at) values \
         (' Li.Lei@Example.com ', 'Li Lei', 'gold', 87.5, true, '{a,b}', '2026-01-01T10:00:00Z'), \
         ('han@example.com', 'Han Meimei', 'silver', 10, false, '{}', '2026-01-01T10:00:00Z'), \
         ('wei@example.com', 'Wei', 'free', null, false, null, '2026-01-02T09:00:00Z')",
    );
    let data = tempfile::tempdir().expect("dir");
    cdp_source_add(data.path(), "crm");
    let mapping = data.path().join("customers.json");
    std::fs::write(
        &mapping,
        r#"{"type": "identify", "userId": {"column": "id"},
            "traits": {"name": {"column": "full_name"}, "plan": {"column": "plan"}, "score": {"column": "score"},
                       "vip": {"column": "vip"}, "tags": {"column": "tags"}, "updatedAt": {"column": "updated_at", "type": "date"}},
            "identifiers": {"email": {"column": "email"}}}"#,
    )
    .expect("write");

    let (ok, text) = cdp_sync(data.path(), &pg.url, "customers", "updated_at,id", &mapping);
    assert!(ok, "{text}");
    assert!(text.contains("3 new rows") && text.contains("3 stored in 3 raw objects, 0 failed"), "{text}");
    let li = traits_of(data.path(), "email:li.lei@example.com");
    assert_eq!((li["name"].as_str(), li["plan"].as_str()), (Some("Li Lei"), Some("gold")), "{li}");
    assert_eq!((li["score"].clone(), li["vip"].clone()), (serde_json::json!(87.5), serde_json::json!(true)), "{li}");
    assert_eq!(li["tags"], serde_json::json!(["a", "b"]), "arrays as JSON arrays");
    assert_eq!(traits_of(data.path(), "email:han@example.com")["name"], "Han Meimei", "the row sharing a time");

    let (ok, text) = cdp_sync(data.path(), &pg.url, "customers", "updated_at,id", &mapping);
    assert!(ok && text.contains("0 new rows"), "nothing new, nothing read: {text}");
    // Without a tiebreaker, a batch of one cannot pass two rows that share a time: refused, not skipped.
    let (ok, text) = cdp_sync(data.path(), &pg.url, "select * from customers", "updated_at", &mapping);
    assert!(!ok && text.contains("more than 1 rows share the cursor value"), "{text}");
    pg.sql("insert into customers (email, full_name) values ('nocursor@example.com', 'No Cursor')");

    pg.sql("update customers set plan = 'gold', updated_at = '2026-01-03T08:00:00Z' where email = 'han@example.com'");
    pg.sql("insert into customers (email, full_name, plan, updated_at) values ('zhao@example.com', 'Zhao', 'free', '2026-01-03T09:00:00Z')");
    let (ok, text) = cdp_sync(data.path(), &pg.url, "customers", "updated_at,id", &mapping);
    assert!(ok && text.contains("2 new rows") && text.contains("of 5 synced so far"), "{text}");
    assert!(text.contains("1 rows have no value in (updated_at, id) and are never read"), "{text}");
    assert_eq!(traits_of(data.path(), "email:han@example.com")["plan"], "gold", "the changed row is a new event");
    assert_eq!(traits_of(data.path(), "email:zhao@example.com")["name"], "Zhao");
    let cursors: Vec<_> =
        std::fs::read_dir(data.path().join("sync/v1/crm")).expect("the cursor's folder").flatten().collect();
    assert_eq!(cursors.len(), 1);
    let stored: Value = serde_json::from_slice(&std::fs::read(cursors[0].path()).expect("read")).expect("json");
    assert_eq!(stored["cursor"][1], "5", "{stored}");

    // Problems named before anything is read or stored.
    let bad = data.path().join("bad.json");
    std::fs::write(&bad, r#"{"type": "identify", "userId": {"column": "customer_id"}}"#).expect("write");
    let (ok, text) = cdp_sync(data.path(), &pg.url, "customers", "updated_at,id", &bad);
    assert!(!ok && text.contains("no column `customer_id`") && text.contains("`full_name`"), "{text}");
    let (ok, text) = cdp_sync(data.path(), &pg.url, "customers", "changed_at", &mapping);
    assert!(!ok && text.contains("--cursor: the query has no column `changed_at`"), "{text}");
    let (ok, text) = cdp_sync(data.path(), &pg.url, "select * from clients", "updated_at", &mapping);
    assert!(!ok && text.contains("relation \"clients\" does not exist"), "{text}");
    let closed = format!("postgres://cdp:not-a-real-password@127.0.0.1:{}/postgres", cdp_e2e::free_port());
    let (ok, text) = cdp_sync(data.path(), &closed, "customers", "updated_at,id", &mapping);
    assert!(!ok && text.contains("could not connect to PostgreSQL at 127.0.0.1:"), "{text}");
    let wrong = pg.url.replace(cdp_e2e::postgres::PASSWORD, "wrong-password-9");
    let (ok, text) = cdp_sync(data.path(), &wrong, "customers", "updated_at,id", &mapping);
    assert!(!ok && text.contains("password authentication failed"), "{text}");
}
