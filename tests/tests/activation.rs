//! Activation against a real partner receiver on 127.0.0.1 (tests/src/partner.rs), which verifies every
//! signature with its own implementation of the Standard Webhooks spec.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use cdp_e2e::partner::{Partner, Reply};
use functions::activation::dispatch::Dispatcher;
use functions::activation::http::Sender;
use functions::activation::{AttemptRecord, Settings};
use functions::storage::{FsStore, ObjectStore};
use serde_json::json;
use shared::activation::lane::Message;
use shared::activation::payload::AudienceRef;
use shared::activation::{DestinationDefinition, Detail, Item, Outcome, ProfileBlock, Reach};
use shared::ids::Entropy;
use tokio::sync::mpsc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn destination(id: &str, url: &str, extra: serde_json::Value) -> DestinationDefinition {
    let mut value = json!({
        "id": id, "url": url, "secret": SECRET, "send": {"audiences": ["vip"]},
        "retrySchedule": [0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        "batching": {"maxEvents": 5, "maxWaitMs": 50},
        "rateLimitPerSecond": 1000
    });
    if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(value).expect("a valid destination")
}

fn message(destination: &str, profile: usize, seq: usize) -> Message {
    let audience = AudienceRef { id: "vip".into(), name: String::new() };
    let detail =
        if seq.is_multiple_of(2) { Detail::AudienceEntered { audience } } else { Detail::AudienceExited { audience } };
    Message {
        destination: destination.into(),
        item: Item {
            id: format!("{destination}-p{profile}-{seq:03}"),
            occurred_at: "2026-11-28T12:00:00.000Z".into(),
            profile: ProfileBlock { id: format!("prof_{profile}"), ..ProfileBlock::default() },
            detail,
        },
        enqueued_at: now_ms(),
        subject: Some(format!("user_id:u{profile}")),
    }
}

fn now_ms() -> i64 {
    functions::config::now().map(|t| t.unix_millis()).unwrap_or(0)
}

/// A dispatcher running in the background, taking the outbox every 50 ms, until `stop`.
struct Running {
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    records: std::sync::Mutex<mpsc::UnboundedReceiver<AttemptRecord>>,
    seen: std::sync::Mutex<Vec<AttemptRecord>>,
}

impl Running {
    fn start(store: FsStore, destinations: Vec<DestinationDefinition>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let settings = Settings { reach: Reach::PublicAndLoopback, ingest: None };
        let task = runtime.spawn(async move {
            let mut dispatcher =
                Dispatcher::start(store, &destinations, settings, Some(tx), None).await.expect("dispatcher starts");
            loop {
                dispatcher.intake().await.expect("intake");
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            dispatcher.stop().await.expect("stops");
        });
        Self {
            runtime,
            stop: Some(stop),
            task: Some(task),
            records: std::sync::Mutex::new(rx),
            seen: std::sync::Mutex::default(),
        }
    }

    fn records(&self) -> Vec<AttemptRecord> {
        let mut rx = self.records.lock().expect("records");
        let mut seen = self.seen.lock().expect("seen");
        while let Ok(record) = rx.try_recv() {
            seen.push(record);
        }
        seen.clone()
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            self.runtime.block_on(task).expect("dispatcher task");
        }
    }
}

fn enqueue(store: &FsStore, messages: &[Message]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let now = functions::config::now().expect("clock");
    rt.block_on(functions::activation::outbox::enqueue(
        store,
        messages,
        now,
        &mut Entropy::from_seed(functions::config::random_seed().expect("seed")),
    ))
    .expect("enqueued");
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn items_of(body: &serde_json::Value) -> Vec<String> {
    body["data"]["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["id"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

#[test]
fn every_delivery_arrives_once_by_id_in_order_per_profile_through_failures_downtime_and_429() {
    let partner = Partner::start(SECRET);
    partner.script(
        "/a",
        [Reply::Status(500, None), Reply::Status(500, None), Reply::Status(503, None), Reply::Status(429, Some(2))],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStore::open(dir.path()).expect("store");
    let running = Running::start(store.clone(), vec![destination("a", &partner.url("/a"), json!({}))]);

    // 6 profiles × 12 items, enqueued in three outbox objects a little apart.
    let mut expected = BTreeSet::new();
    for round in 0..3 {
        let messages: Vec<Message> = (0..6).flat_map(|p| (0..4).map(move |s| message("a", p, round * 4 + s))).collect();
        expected.extend(messages.iter().map(|m| m.item.id.clone()));
        enqueue(&store, &messages);
        std::thread::sleep(Duration::from_millis(150));
    }
    // Once something got through, the partner goes down for a while, and comes back.
    wait_for("a first delivery", Duration::from_secs(30), || partner.received("/a").iter().any(|r| r.answered == 200));
    partner.down_for(Duration::from_millis(1500));
    let more: Vec<Message> = (0..6).map(|p| message("a", p, 12)).collect();
    expected.extend(more.iter().map(|m| m.item.id.clone()));
    enqueue(&store, &more);

    let delivered = || -> Vec<String> {
        partner.received("/a").iter().filter(|r| r.answered == 200).flat_map(|r| items_of(&r.body)).collect()
    };
    wait_for("every item", Duration::from_secs(60), || delivered().len() >= expected.len());
    std::thread::sleep(Duration::from_millis(500));
    let records = running.records();
    running.stop();

    let received = partner.received("/a");
    assert!(received.iter().all(|r| r.verified), "every attempt carries a valid signature");
    // Exactly once: each webhook-id answered 200 once; each item in one such request; nothing missing.
    let mut ok_by_id: HashMap<&str, usize> = HashMap::new();
    for r in received.iter().filter(|r| r.answered == 200) {
        *ok_by_id.entry(r.id.as_str()).or_default() += 1;
    }
    assert!(ok_by_id.values().all(|n| *n == 1), "{ok_by_id:?}");
    let items = delivered();
    assert_eq!(items.len(), expected.len(), "no item twice");
    assert_eq!(items.iter().cloned().collect::<BTreeSet<_>>(), expected);
    // Retries resend the same bytes under the same id.
    let mut bodies: HashMap<&str, &serde_json::Value> = HashMap::new();
    for r in &received {
        if let Some(first) = bodies.insert(r.id.as_str(), &r.body) {
            assert_eq!(first, &r.body, "{} was resent with other bytes", r.id);
        }
    }
    // In order per profile.
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for item in &items {
        let profile = item.rsplit_once('-').map(|(p, _)| p.to_string()).unwrap_or_default();
        if let Some(previous) = last.insert(profile.clone(), item.clone()) {
            assert!(previous < *item, "{item} arrived after {previous}");
        }
    }
    // The failures were really retried: each refused request went out again under its id and got through,
    // and the one answered 429 waited the 2 seconds the partner asked for.
    let answers: Vec<u16> = received.iter().map(|r| r.answered).take(4).collect();
    assert_eq!(answers, [500, 500, 503, 429]);
    for failed in &received[..4] {
        assert_eq!(ok_by_id.get(failed.id.as_str()), Some(&1), "{} was retried until delivered", failed.id);
    }
    let limited = &received[3];
    let next = received.iter().find(|r| r.id == limited.id && r.at > limited.at).expect("the 429'd request again");
    let gap = next.at.duration_since(limited.at);
    assert!(gap >= Duration::from_millis(1900), "Retry-After: 2 honoured, got {gap:?}");
    // The downtime showed as connection failures that were retried.
    assert!(
        records.iter().any(|r| matches!(r.outcome, Outcome::Connect { .. }) && r.result == "retrying"),
        "{records:#?}"
    );
    // Nothing left behind: lanes empty of work, no dead letters, the outbox drained, attempts logged.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    rt.block_on(async {
        assert!(store.list(functions::activation::outbox::OUTBOX).await.unwrap().is_empty());
        assert!(store.list("deliveries/v1/dead/").await.unwrap().is_empty());
        assert!(!store.list("deliveries/v1/log/a/").await.unwrap().is_empty());
        for meta in store.list("deliveries/v1/lanes/a/").await.unwrap() {
            let lane: shared::activation::Lane =
                serde_json::from_slice(&store.get(&meta.key).await.unwrap().unwrap().body).unwrap();
            assert!(lane.is_idle(), "{}", meta.key);
        }
    });
}

#[test]
fn a_hanging_partner_does_not_delay_another() {
    let partner = Partner::start(SECRET);
    partner.script("/hang", std::iter::repeat_n(Reply::Hang, 50));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStore::open(dir.path()).expect("store");
    let running = Running::start(
        store.clone(),
        vec![
            destination("slow", &partner.url("/hang"), json!({"timeoutMs": 8000})),
            destination("b", &partner.url("/b"), json!({})),
        ],
    );
    let mut messages = Vec::new();
    for p in 0..16 {
        messages.push(message("slow", p, 0));
        messages.push(message("b", p, 0));
    }
    let start = Instant::now();
    enqueue(&store, &messages);
    let b_items =
        || partner.received("/b").iter().filter(|r| r.answered == 200).flat_map(|r| items_of(&r.body)).count();
    wait_for("b's items", Duration::from_secs(10), || b_items() == 16);
    let took = start.elapsed();
    let records = running.records();
    assert!(took < Duration::from_secs(2), "b took {took:?} while slow hangs");
    assert!(records.iter().filter(|r| r.destination == "b").all(|r| r.latency_ms < 1000), "{records:#?}");
    assert!(records.iter().all(|r| r.destination != "slow"), "slow's attempts are still hanging: {records:#?}");
    assert!(!partner.received("/hang").is_empty(), "slow's requests did go out");
    running.stop();
}

#[test]
fn gone_disables_a_refused_message_is_dead_lettered_at_once_and_replays_once() {
    let partner = Partner::start(SECRET);
    partner.script("/gone", [Reply::Status(410, None)]);
    partner.script("/bad", [Reply::Status(400, None)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStore::open(dir.path()).expect("store");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let destinations = vec![
        destination("gone", &partner.url("/gone"), json!({})),
        destination("bad", &partner.url("/bad"), json!({})),
    ];
    let running = Running::start(store.clone(), destinations.clone());
    enqueue(&store, &[message("gone", 1, 0), message("bad", 1, 0)]);
    wait_for("both answers", Duration::from_secs(10), || {
        running.records().iter().filter(|r| r.result == "dead" || r.result == "disabled").count() == 2
    });
    // 410: the destination is disabled and later messages wait instead of going out.
    let status = rt.block_on(store.get(&functions::activation::stored::status_key("gone"))).unwrap();
    assert!(status.is_some_and(|s| String::from_utf8_lossy(&s.body).contains("410")));
    enqueue(&store, &[message("gone", 1, 1)]);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(partner.received("/gone").len(), 1);
    // 400: one attempt, then a dead letter with the reason.
    assert_eq!(partner.received("/bad").len(), 1);
    let dead = rt.block_on(functions::activation::stored::dead_letters(&store, "bad")).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].request.attempts, 1);
    assert!(dead[0].reason.contains("HTTP 400"), "{}", dead[0].reason);
    // Replay: sent again once, same id and bytes, and the dead letter is gone.
    rt.block_on(functions::activation::stored::request_replay(&store, "bad", &dead[0].request.webhook_id)).unwrap();
    wait_for("the replay", Duration::from_secs(10), || partner.received("/bad").len() == 2);
    std::thread::sleep(Duration::from_millis(500));
    let bad = partner.received("/bad");
    assert_eq!(bad.len(), 2, "replayed once");
    assert_eq!((bad[1].id.as_str(), bad[1].answered), (dead[0].request.webhook_id.as_str(), 200));
    assert_eq!(bad[0].body, bad[1].body);
    assert!(bad.iter().all(|r| r.verified));
    assert!(rt.block_on(functions::activation::stored::dead_letters(&store, "bad")).unwrap().is_empty());

    // Re-enabled while running, the waiting message goes out.
    rt.block_on(functions::activation::stored::enable(&store, "gone")).unwrap();
    wait_for("the waiting message", Duration::from_secs(10), || {
        partner.received("/gone").iter().any(|r| r.answered == 200 && items_of(&r.body) == ["gone-p1-001"])
    });
    running.stop();
    // A restart resumes from the stored lanes with nothing left to send.
    let running = Running::start(store.clone(), destinations);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(partner.received("/gone").len(), 2);
    running.stop();
}

#[test]
fn webhooks_never_reach_loopback_private_or_metadata_addresses_unless_local_development_allows_loopback() {
    let partner = Partner::start(SECRET);
    let port = partner.addr.rsplit_once(':').map(|(_, p)| p.to_string()).unwrap_or_default();
    partner.script("/redirect", [Reply::Redirect("http://169.254.169.254/latest/meta-data/".into())]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let post = |sender: &Sender, url: &str, follow: bool| {
        rt.block_on(sender.post(url, &[], bytes::Bytes::from_static(b"{}"), Duration::from_secs(3), follow)).outcome
    };
    let public = Sender::new(Reach::Public);
    for url in [
        format!("https://127.0.0.1:{port}/a"),
        "https://10.0.0.1/a".to_string(),
        "https://169.254.169.254/latest/meta-data/".to_string(),
        format!("https://[::1]:{port}/a"),
        format!("http://127.0.0.1:{port}/a"),
        // Other spellings of loopback: 6to4 embedding 127.0.0.1, a decimal integer, a short form.
        format!("https://[2002:7f00:1::]:{port}/a"),
        format!("https://2130706433:{port}/a"),
        format!("https://127.1:{port}/a"),
    ] {
        assert!(matches!(post(&public, &url, false), Outcome::Refused { .. }), "{url}");
    }
    // `localhost` is refused by name (other names are checked after resolution, before connecting).
    match post(&public, &format!("https://localhost:{port}/a"), false) {
        Outcome::Refused { reason } => assert!(reason.contains("localhost") && reason.contains("loopback"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(partner.received("/a").is_empty(), "nothing reached the partner");

    // The local switch opens loopback (by address and by name) and nothing else.
    let local = Sender::new(Reach::PublicAndLoopback);
    partner.script("/a", std::iter::repeat_n(Reply::Status(200, None), 3));
    assert_eq!(post(&local, &partner.url("/a"), false), Outcome::Status { status: 200, retry_after: None });
    assert_eq!(
        post(&local, &format!("http://localhost:{port}/a"), false),
        Outcome::Status { status: 200, retry_after: None }
    );
    for url in ["http://10.0.0.1/a", "http://169.254.169.254/latest/meta-data/", "http://192.168.1.1/"] {
        assert!(matches!(post(&local, url, false), Outcome::Refused { .. }), "{url}");
    }
    // Redirects: off by default (the 307 is the answer); when followed, each hop is checked.
    assert_eq!(post(&local, &partner.url("/redirect"), false), Outcome::Status { status: 307, retry_after: None });
    partner.script("/redirect", [Reply::Redirect("http://169.254.169.254/latest/meta-data/".into())]);
    assert!(
        matches!(post(&local, &partner.url("/redirect"), true), Outcome::Refused { reason } if reason.contains("169.254.169.254"))
    );
    partner.script("/redirect", [Reply::Redirect("/a".into())]);
    assert_eq!(post(&local, &partner.url("/redirect"), true), Outcome::Status { status: 200, retry_after: None });
}

#[test]
fn an_event_that_makes_a_profile_enter_an_audience_reaches_the_demo_partner_under_cdp_up() {
    use cdp_e2e::http::{post, send};
    use cdp_e2e::procs::{CdpUp, cdp_source_add};

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).expect("config dir");
    std::fs::write(
        config.join("tags.json"),
        json!([
            {"id": "spend", "status": "active", "kind": "statistical", "filter": {"events": ["Order Completed"]},
             "aggregate": {"op": "sum", "property": "revenue"}},
            {"id": "tier", "status": "active", "kind": "buckets", "of": "tag:spend",
             "buckets": [{"label": "high", "min": 100}], "otherwise": "low"}
        ])
        .to_string(),
    )
    .expect("tags");
    std::fs::write(
        config.join("audiences.json"),
        json!([
            {"id": "big_spenders", "status": "active", "when": {"field": "tag:tier", "op": "eq", "value": "high"}},
            {"id": "clickers", "status": "active", "when": {"did": {"events": ["Partner Feedback"],
             "properties": [{"field": "result", "op": "eq", "value": "clicked"}]}}}
        ])
        .to_string(),
    )
    .expect("audiences");
    let key = cdp_source_add(dir.path(), "shop");
    let up = CdpUp::start_with(dir.path(), &["--demo-partner", "--tag-interval", "3600"]);
    // The first full recompute makes the tags ready for ingest to serve.
    wait_for("the first tag computation", Duration::from_secs(30), || dir.path().join("tags/v1/ready.json").exists());

    let received = || -> Vec<serde_json::Value> {
        let reply = send("GET", &format!("{}/demo/partner?format=json", up.url), b"", &[]).expect("GET demo partner");
        assert_eq!(reply.status, 200);
        reply.json().as_array().cloned().unwrap_or_default()
    };
    let order = |id: &str, revenue: f64| json!({"type": "track", "event": "Order Completed", "userId": "kim", "messageId": id, "properties": {"revenue": revenue}});
    let start = Instant::now();
    let reply = post(&format!("{}/v1/batch", up.url), &json!({"batch": [order("o1", 60.0)]}).to_string(), Some(&key));
    assert_eq!(reply.status, 200, "{}", reply.body);
    // The order trigger arrives; the audience is not entered yet (60 < 100).
    wait_for("the first order's trigger", Duration::from_secs(20), || {
        received().iter().any(|r| r["payload"]["data"]["items"][0]["type"] == "event.triggered")
    });
    let reply = post(&format!("{}/v1/batch", up.url), &json!({"batch": [order("o2", 50.0)]}).to_string(), Some(&key));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let entered = |all: &[serde_json::Value]| -> Vec<serde_json::Value> {
        all.iter()
            .flat_map(|r| r["payload"]["data"]["items"].as_array().cloned().unwrap_or_default())
            .filter(|i| i["type"] == "audience.entered")
            .collect()
    };
    wait_for("the audience entry", Duration::from_secs(20), || !entered(&received()).is_empty());
    let took = start.elapsed();
    // The recompute after ingest finds the membership already recorded: nothing is delivered twice.
    std::thread::sleep(Duration::from_secs(4));
    let all = received();
    let entries = entered(&all);
    assert_eq!(entries.len(), 1, "{all:#?}");
    assert_eq!(entries[0]["audience"]["id"], "big_spenders");
    assert_eq!(entries[0]["profile"]["identifiers"], json!([{"type": "user_id", "value": "kim"}]));
    assert!(all.iter().all(|r| r["verified"] == true), "the demo partner verified every signature: {all:#?}");
    let triggers = all
        .iter()
        .flat_map(|r| r["payload"]["data"]["items"].as_array().cloned().unwrap_or_default())
        .filter(|i| i["type"] == "event.triggered")
        .count();
    assert_eq!(triggers, 2, "one per order");
    assert!(took < Duration::from_secs(20));
    // The deliveries command shows the destination, with nothing queued or dead.
    let out = std::process::Command::new(cdp_e2e::procs::cdp_bin())
        .args(["deliveries", "list", "--data"])
        .arg(dir.path())
        .output()
        .expect("cdp deliveries list");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("demo_partner\tenabled\tqueued 0\tin flight 0\tdead letters 0"), "{text}");

    // The feedback loop: the delivery's outcome is an event on the profile …
    let profile = |check: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        wait_for("the profile", Duration::from_secs(20), || {
            let out = std::process::Command::new(cdp_e2e::procs::cdp_bin())
                .args(["profile", "user_id:kim", "--json", "--data"])
                .arg(dir.path())
                .output()
                .expect("cdp profile");
            last = serde_json::from_slice(&out.stdout).unwrap_or_default();
            check(&last)
        });
        last
    };
    let p = profile(&|p| p["events"]["Audience Delivered"]["count"] == 1);
    assert!(p["audiences"]["big_spenders"].is_object());
    // … and the partner's results, posted back signed with the destination's secret, are too, and drive an
    // audience.
    let file = |path: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(path)).expect("file")).expect("json")
    };
    assert!(!file("config/destinations.json").to_string().contains("whsec_"), "no secret in the configuration");
    let secrets = file("secrets/v1/destinations.json");
    let secret = secrets["demo_partner"]["secret"].as_str().expect("the demo partner's secret").to_string();
    let body = json!({"results": [
        {"result": "clicked", "profileId": p["id"], "itemId": entries[0]["id"], "properties": {"campaign": "winter"}},
        {"result": "Clicked It!", "profileId": p["id"]},
        {"result": "opened", "identifier": {"type": "user_id", "value": "nobody-we-know"}}
    ]})
    .to_string();
    let url = format!("{}/v1/feedback/demo_partner", up.url);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let signature = cdp_e2e::partner::sign(&secret, "fb-1", now, body.as_bytes());
    let ts = now.to_string();
    let headers = [("content-type", "application/json"), ("webhook-id", "fb-1"), ("webhook-timestamp", ts.as_str())];
    let unsigned = send("POST", &url, body.as_bytes(), &headers).expect("POST feedback");
    assert_eq!(unsigned.status, 401, "{}", unsigned.body);
    let forged = cdp_e2e::partner::sign("whsec_c2VjcmV0LW9mLWEtcm90YXRlZC1lbmRwb2ludA==", "fb-1", now, body.as_bytes());
    let mut with_forged = headers.to_vec();
    with_forged.push(("webhook-signature", forged.as_str()));
    assert_eq!(send("POST", &url, body.as_bytes(), &with_forged).expect("POST").status, 401);
    let mut signed = headers.to_vec();
    signed.push(("webhook-signature", signature.as_str()));
    let reply = send("POST", &url, body.as_bytes(), &signed).expect("POST feedback");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert_eq!((answer["accepted"].as_u64(), answer["failed"].as_u64()), (Some(1), Some(2)), "{answer}");
    assert_eq!(answer["errors"][0]["index"], 1);
    assert!(answer["errors"][1]["message"].as_str().is_some_and(|m| m.contains("unknown profile")), "{answer}");
    let p = profile(&|p| p["events"]["Partner Feedback"]["count"] == 1 && p["audiences"]["clickers"].is_object());
    assert!(p["audiences"]["big_spenders"].is_object());
    // The same request again (a partner's retry) is one event.
    assert_eq!(send("POST", &url, body.as_bytes(), &signed).expect("POST").status, 200);
    std::thread::sleep(Duration::from_secs(1));
    let p = profile(&|p| p["events"]["Partner Feedback"]["count"] == 1);
    assert_eq!(p["events"]["Partner Feedback"]["count"], 1);
}

#[test]
fn messages_for_a_destination_added_after_the_dispatcher_started_wait_for_it_and_are_delivered() {
    let partner = Partner::start(SECRET);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStore::open(dir.path()).expect("store");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let old = destination("old", &partner.url("/old"), json!({}));
    let new = destination("new", &partner.url("/new"), json!({}));
    let config = |list: &[&DestinationDefinition]| {
        let body = serde_json::to_vec(list).expect("json");
        rt.block_on(store.put(
            shared::storage::keys::CONFIG_DESTINATIONS,
            body,
            functions::storage::PutOptions::json(),
        ))
        .expect("config");
    };
    config(&[&old]);
    let running = Running::start(store.clone(), vec![old.clone()]);
    // A destination is added, and ingest, which read the new configuration first, puts an item for it in the
    // outbox before the dispatcher restarts; another item names a destination configured nowhere.
    config(&[&old, &new]);
    enqueue(&store, &[message("new", 1, 0)]);
    enqueue(&store, &[message("ghost", 1, 0)]);
    wait_for("the ghost's dead letter", Duration::from_secs(10), || {
        rt.block_on(functions::activation::stored::dead_letters(&store, "ghost")).expect("dead letters").len() == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        rt.block_on(functions::activation::stored::dead_letters(&store, "new")).expect("dead letters").is_empty(),
        "not dead-lettered"
    );
    assert_eq!(
        rt.block_on(store.list(functions::activation::outbox::OUTBOX)).expect("outbox").len(),
        1,
        "it waits in the outbox"
    );
    running.stop();
    let running = Running::start(store.clone(), vec![old, new]);
    wait_for("the new destination's item", Duration::from_secs(10), || {
        partner.received("/new").iter().any(|r| r.answered == 200 && items_of(&r.body) == ["new-p1-000"])
    });
    running.stop();
}

#[test]
fn a_destination_without_its_secret_receives_nothing_unsigned() {
    let partner = Partner::start(SECRET);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStore::open(dir.path()).expect("store");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let mut bare = destination("bare", &partner.url("/bare"), json!({"retrySchedule": [0]}));
    bare.secret = None;
    let running = Running::start(store.clone(), vec![bare]);
    enqueue(&store, &[message("bare", 1, 0)]);
    wait_for("the dead letter", Duration::from_secs(10), || {
        rt.block_on(functions::activation::stored::dead_letters(&store, "bare")).expect("dead letters").len() == 1
    });
    let dead = rt.block_on(functions::activation::stored::dead_letters(&store, "bare")).expect("dead letters");
    assert!(dead[0].reason.contains("no signing secret"), "{}", dead[0].reason);
    assert!(partner.received("/bare").is_empty(), "nothing went out unsigned");
    running.stop();
}
