//! Erasure and suppression on the folder store: afterwards no object holds the person.

use serde_json::{Value, json};
use shared::access::Actor;
use shared::ids::sha256_hex;
use shared::time::UtcTime;

use super::*;
use crate::ingest::ingest;
use crate::snapshot::RunConfig;
use crate::storage::FsStore;
use crate::suppression::{dropped_total, load_suppression};
use crate::testing::collect_into;

fn now() -> UtcTime {
    UtcTime::parse("2026-11-29T12:00:00Z").unwrap()
}

fn ev(kind: &str, msg: &str, fields: Value) -> Value {
    let mut e = json!({"type": kind, "messageId": msg, "timestamp": "2026-11-29T11:00:00Z"});
    for (k, v) in fields.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

/// Every stored object's text (gzip undone) with its key.
fn everything(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let text = if path.extension().is_some_and(|e| e == "parquet") {
                // Compressed columns: search the values.
                let rows = crate::lake::decode(bytes.into(), None).unwrap();
                rows.iter()
                    .map(|(event, keys)| format!("{} {keys:?}\n", serde_json::to_string(event).unwrap()))
                    .collect()
            } else {
                match shared::storage::gunzip(&bytes) {
                    Ok(plain) => String::from_utf8_lossy(&plain).into_owned(),
                    Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
                }
            };
            out.push((path.strip_prefix(dir).unwrap().display().to_string(), text));
        }
    }
    out
}

async fn ingest_all(store: &FsStore, keys: &[Option<String>]) {
    let keys: Vec<String> = keys.iter().flatten().cloned().collect();
    let config = RunConfig::load(store).await.unwrap();
    ingest(store, &keys, &config, now()).await.unwrap();
}

#[tokio::test]
async fn after_an_erasure_no_object_holds_the_person() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let tags = json!([{"id": "views", "status": "active", "kind": "statistical", "filter": {"types": ["page"]},
                       "aggregate": {"op": "count"}}]);
    let audiences =
        json!([{"id": "viewers", "status": "active", "when": {"field": "tag:views", "op": "gte", "value": 1}}]);
    store.put("config/tags.json", tags.to_string().into_bytes(), PutOptions::json()).await.unwrap();
    store.put("config/audiences.json", audiences.to_string().into_bytes(), PutOptions::json()).await.unwrap();
    let (raw1, failed) = collect_into(
        &store,
        1,
        json!([
            ev("page", "m1", json!({"anonymousId": "anon-jane-7", "name": "Home"})),
            ev(
                "identify",
                "m2",
                json!({"anonymousId": "anon-jane-7", "userId": "user-1042",
                                     "traits": {"email": "Jane@Example.com", "phone": "+49 30 1234567"}})
            ),
            ev("page", "m3", json!({"userId": "user-2077", "name": "Home"})),
            // Rejected by the collector (no event name): kept under failed/ with the original bytes.
            ev("track", "m4", json!({"userId": "user-1042"})),
        ]),
        now(),
    )
    .await;
    assert!(failed.is_some(), "a rejected event is stored");
    let (raw2, _) = collect_into(
        &store,
        2,
        json!([
            ev("page", "m5", json!({"anonymousId": "anon-jane-phone", "name": "Home"})),
            ev(
                "alias",
                "m6",
                json!({"anonymousId": "anon-jane-phone", "userId": "user-1042", "previousId": "anon-jane-phone"})
            )
        ]),
        now(),
    )
    .await;
    ingest_all(&store, &[raw1, raw2]).await;
    let jane = crate::state::lookup(&store, "user_id:user-1042").await.unwrap().unwrap();
    let compacted = crate::lake::compact(&store, 0, now()).await.unwrap();
    assert_eq!((compacted.objects, compacted.events), (2, 5), "both objects in the lake: {compacted:?}");
    crate::tagging::full_recompute(&store, now()).await.unwrap();
    let bob = crate::state::lookup(&store, "user_id:user-2077").await.unwrap().unwrap();
    let (email_hash, phone_hash) = (sha256_hex("jane@example.com"), sha256_hex("+49301234567"));
    let needles = [
        "user-1042",
        "anon-jane-7",
        "anon-jane-phone",
        "jane@example.com",
        "Jane@Example.com",
        "+49 30 1234567",
        email_hash.as_str(),
        phone_hash.as_str(),
        jane.node.id.as_str(),
    ];
    let holding = |needle: &str| {
        everything(dir.path()).into_iter().filter(|(_, t)| t.contains(needle)).map(|(k, _)| k).collect::<Vec<_>>()
    };
    assert!(!holding(&jane.node.id).is_empty() && !holding("user-1042").is_empty(), "the person is stored before");

    let request = submit(&store, RequestKind::Delete, &["email:Jane@Example.com".into()], Actor::cli("test"), now())
        .await
        .unwrap();
    assert_eq!(request.status, Status::Pending);
    assert_eq!(process(&store, 0, now()).await.unwrap(), 1);
    let erasing = get(&store, &request.id).await.unwrap().unwrap();
    assert_eq!(erasing.status, Status::Erasing, "{erasing:?}");
    assert!(crate::state::lookup(&store, "user_id:user-1042").await.unwrap().is_none());
    assert!(crate::state::lookup(&store, &jane.node.id).await.unwrap().is_none());
    // While it runs, an event of the person in flight is dropped at ingest (it cannot re-create them).
    let (late, _) = collect_into(
        &store,
        3,
        json!([ev("page", "m7", json!({"anonymousId": "anon-jane-7", "name": "Late"}))]),
        now(),
    )
    .await;
    let config = RunConfig::load(&store).await.unwrap();
    let report = ingest(&store, &[late.unwrap()], &config, now()).await.unwrap();
    assert_eq!(report.suppressed, 1);
    // and the lake leaves it out.
    assert_eq!(crate::lake::compact(&store, 0, now()).await.unwrap().held, 1);

    assert_eq!(process(&store, 0, now()).await.unwrap(), 1);
    let done = get(&store, &request.id).await.unwrap().unwrap();
    assert_eq!(done.status, Status::Completed, "{done:?}");
    assert_eq!(done.outcome.profiles, 1 + jane.profile.merged_ids.len());
    // Jane's four events in raw/ and again in the lake, and the late one in raw/.
    assert!(done.outcome.events >= 9 && done.outcome.failed_lines == 1, "{:?}", done.outcome);
    assert!(done.outcome.state_objects > 0, "old state objects deleted: {:?}", done.outcome);
    for needle in needles {
        assert_eq!(holding(needle), Vec::<String>::new(), "{needle} is gone from every object");
    }
    // The other person is untouched.
    assert_eq!(crate::state::lookup(&store, "user_id:user-2077").await.unwrap().unwrap(), bob);
    assert!(!holding("user-2077").is_empty());
    assert!(load_suppression(&store).await.unwrap().is_empty(), "nothing held once done");
    assert!(crate::tagging::full_recompute(&store, now()).await.is_ok());
}

#[tokio::test]
async fn suppressed_identifiers_are_dropped_at_ingest_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let (first, _) =
        collect_into(&store, 1, json!([ev("page", "m1", json!({"userId": "user-2077", "name": "Home"}))]), now()).await;
    ingest_all(&store, &[first]).await;
    let request =
        submit(&store, RequestKind::Suppress, &["user_id:user-2077".into()], Actor::cli("test"), now()).await.unwrap();
    assert_eq!(request.status, Status::Completed);
    assert!(!serde_json::to_string(&request).unwrap().contains("user-2077"), "only hashes are kept");

    let (later, _) = collect_into(
        &store,
        2,
        json!([
            ev("page", "m2", json!({"userId": "user-2077", "name": "Again"})),
            ev("page", "m3", json!({"userId": "user-3000", "name": "Other"}))
        ]),
        now(),
    )
    .await;
    let config = RunConfig::load(&store).await.unwrap();
    let report = ingest(&store, &[later.clone().unwrap()], &config, now()).await.unwrap();
    assert_eq!((report.suppressed, report.applied), (1, 1));
    assert_eq!(dropped_total(&store).await.unwrap(), 1);
    let profile = crate::state::lookup(&store, "user_id:user-2077").await.unwrap().unwrap();
    assert_eq!(profile.profile.events["page"].count, 1, "the later event was not applied");

    submit(&store, RequestKind::Unsuppress, &["user_id:user-2077".into()], Actor::cli("test"), now()).await.unwrap();
    let (again, _) =
        collect_into(&store, 3, json!([ev("page", "m4", json!({"userId": "user-2077", "name": "Back"}))]), now()).await;
    let config = RunConfig::load(&store).await.unwrap();
    assert_eq!(ingest(&store, &[again.unwrap()], &config, now()).await.unwrap().applied, 1);

    let bad = submit(&store, RequestKind::Suppress, &["nonsense".into()], Actor::cli("test"), now()).await;
    assert!(matches!(bad, Err(RequestError::Invalid(ref m)) if m.contains("identifiers[0]")), "{bad:?}");
    assert!(matches!(
        submit(&store, RequestKind::Delete, &[], Actor::cli("test"), now()).await,
        Err(RequestError::Invalid(_))
    ));
}

#[tokio::test]
async fn an_erasure_completes_within_the_grace_period_whatever_partners_do_and_notices_are_followed_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let destinations = json!([{"id": "slow", "url": "https://slow.partner.example/hook",
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "send": {"events": [{"events": ["Order Completed"]}]}}]);
    store.put("config/destinations.json", destinations.to_string().into_bytes(), PutOptions::json()).await.unwrap();
    let (raw, _) = collect_into(
        &store,
        1,
        json!([ev("identify", "m1", json!({"userId": "user-1042", "traits": {"email": "jane@example.com"}}))]),
        now(),
    )
    .await;
    ingest_all(&store, &[raw]).await;
    let request =
        submit(&store, RequestKind::Delete, &["user_id:user-1042".into()], Actor::cli("test"), now()).await.unwrap();
    process(&store, 60_000, now()).await.unwrap();
    // The dispatcher forgot the person (it would, on its next intake); the partner has not taken the notice.
    for meta in store.list(crate::activation::stored::FORGET).await.unwrap() {
        store.delete(&meta.key).await.unwrap();
    }
    let later = now().add_millis(61_000).unwrap();
    process(&store, 60_000, later).await.unwrap();
    let done = get(&store, &request.id).await.unwrap().unwrap();
    assert_eq!(done.status, Status::Completed, "completed after the grace period: {done:?}");
    assert!(done.keys.is_empty() && done.identifiers.is_empty() && done.erasure.is_none(), "only hashes kept");
    assert!(!serde_json::to_string(&done).unwrap().contains("user-1042"));
    assert_eq!(done.notices_pending.len(), 1, "the notice to `slow` is followed apart: {done:?}");
    assert!(everything(dir.path()).iter().all(|(_, text)| !text.contains("jane@example.com")), "nothing holds Jane");

    // The delivery log shows the notice delivered: it is settled on the next pass.
    let item = done.notices_pending.values().next().unwrap().clone();
    let record = json!({"destination": "slow", "webhookId": "msg_1", "itemIds": [item], "attempt": 3, "at": 0,
                        "outcome": {"status": {"status": 200}}, "result": "delivered", "elapsedMs": 1, "latencyMs": 1});
    let log = shared::storage::gzip(format!("{record}\n").as_bytes());
    store.put("deliveries/v1/log/slow/dt=2026-11-29/01.ndjson.gz", log, PutOptions::ndjson_gz()).await.unwrap();
    process(&store, 60_000, later).await.unwrap();
    let followed = get(&store, &request.id).await.unwrap().unwrap();
    assert!(followed.notices_pending.is_empty(), "{followed:?}");
    assert_eq!(followed.outcome.notices_settled, 1);
}
