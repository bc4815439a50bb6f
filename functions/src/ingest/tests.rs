//! Ingest on the folder store: scenarios, idempotence, order, quarantine, and two writers at once.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shared::ids::sha256_hex;

use super::*;
use crate::state::{Compaction, MANIFEST_KEY, Manifest, Settings, ShardCounts, lookup};
use crate::storage::{FsStore, StoreError};

fn now() -> UtcTime {
    UtcTime::parse("2026-11-28T12:00:00Z").unwrap()
}

/// Few shards, and commits that write deltas (folded every fourth commit) so that reads go through them.
fn small() -> RunConfig {
    let state = Settings {
        shards: ShardCounts { ids: 8, profiles: 8, dedup: 4 },
        compaction: Compaction { max_deltas: 3, max_delta_ratio: f64::INFINITY, min_fold_bytes: 0 },
        ..Settings::default()
    };
    RunConfig { state, ..RunConfig::default() }
}

/// [`small`], rewriting the changed shards whole at every commit.
fn always_folding() -> RunConfig {
    let small = small();
    RunConfig { state: Settings { compaction: Compaction::always(), ..small.state }, ..small }
}

/// Every identifier and profile id of `store`'s state, each with what `lookup` answers for it.
async fn everything(store: &FsStore, keys: &[&str]) -> Vec<(String, Option<crate::state::StoredProfile>)> {
    let mut out = Vec::new();
    for key in keys {
        let found = lookup(store, key).await.unwrap();
        let mut ids: Vec<String> = found.iter().map(|p| p.node.id.clone()).collect();
        for entry in found.iter().flat_map(|p| &p.node.audit) {
            if let shared::identity::AuditKind::Merged { absorbed, .. } = &entry.kind {
                ids.push(absorbed.clone()); // resolves to the survivor through its redirect
            }
        }
        out.push((key.to_string(), found));
        for id in ids {
            let found = lookup(store, &id).await.unwrap();
            out.push((id, found));
        }
    }
    out
}

async fn put_batch(store: &FsStore, seed: u8, events: Value) -> String {
    crate::testing::put_batch(store, seed, events, now()).await
}

fn ev(kind: &str, msg: &str, sec: u32, ids: Value, extra: Value) -> Value {
    let mut e =
        json!({"type": kind, "messageId": msg, "timestamp": format!("2026-11-28T11:{:02}:{:02}Z", sec / 60, sec % 60)});
    for (k, v) in ids.as_object().unwrap().iter().chain(extra.as_object().unwrap()) {
        e[k] = v.clone();
    }
    e
}

async fn person_objects(store: &FsStore) -> Vec<String> {
    vec![
        put_batch(store, 1, json!([
            ev("page", "m1", 1, json!({"anonymousId": "a-laptop"}), json!({})),
            ev("track", "m2", 2, json!({"anonymousId": "a-laptop"}), json!({"event": "Product Viewed"})),
        ])).await,
        put_batch(store, 2, json!([
            ev("identify", "m3", 3, json!({"anonymousId": "a-laptop", "userId": "u1"}), json!({"traits": {"email": "Jane@Example.com", "plan": "free"}})),
        ])).await,
        put_batch(store, 3, json!([
            ev("page", "m4", 4, json!({"anonymousId": "a-phone"}), json!({"context": {"device": {"id": "d-phone"}}})),
            ev("identify", "m5", 5, json!({"anonymousId": "a-phone", "userId": "u1"}), json!({"traits": {"plan": "pro"}})),
        ])).await,
        put_batch(store, 4, json!([
            ev("track", "m6", 6, json!({"userId": "u1"}), json!({"event": "Order Completed", "properties": {"revenue": 42.5}, "context": {"traits": {"email": "jane@example.com"}}})),
        ])).await,
    ]
}

async fn manifest(store: &FsStore) -> Option<Manifest> {
    store.get(MANIFEST_KEY).await.unwrap().map(|o| serde_json::from_slice(&o.body).unwrap())
}

#[tokio::test]
async fn one_person_across_devices_and_channels_becomes_one_profile() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let keys = person_objects(&store).await;
    let report = ingest(&store, &keys, &small(), now()).await.unwrap();
    assert_eq!((report.events, report.applied, report.duplicates, report.quarantined), (6, 6, 0, 0));
    assert_eq!(report.merges, 1, "the phone's profile merged into the laptop's");

    let email_key = format!("email:{}", sha256_hex("jane@example.com"));
    let by_email = lookup(&store, &email_key).await.unwrap().expect("profile by email");
    let by_anon = lookup(&store, "anonymous_id:a-phone").await.unwrap().expect("profile by phone id");
    assert_eq!(by_email.node.id, by_anon.node.id);
    let p = &by_email.profile;
    assert_eq!(p.traits["plan"].value, "pro", "last write wins by event time");
    assert_eq!(p.events["Order Completed"].properties["revenue"].sum, 42.5);
    assert_eq!(p.identities.len(), 5, "{:?}", p.identities);
    assert!(p.identities.contains("device_id:d-phone"));
    assert_eq!(p.merged_ids.len(), 1);
    let absorbed = p.merged_ids.iter().next().unwrap();
    assert_eq!(lookup(&store, absorbed).await.unwrap().unwrap().node.id, by_email.node.id, "absorbed ids redirect");
    assert_eq!(manifest(&store).await.unwrap().events_applied, 6);
}

#[tokio::test]
async fn the_same_objects_twice_or_duplicated_notifications_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let keys = person_objects(&store).await;
    let doubled: Vec<String> = keys.iter().chain(&keys).cloned().collect();
    let first = ingest(&store, &doubled, &small(), now()).await.unwrap();
    assert_eq!((first.applied, first.duplicates), (6, 6), "a duplicated notification is dropped by messageId");
    let before = manifest(&store).await.unwrap();
    let again = ingest(&store, &keys, &small(), now()).await.unwrap();
    assert_eq!((again.applied, again.duplicates, again.commit), (0, 6, None));
    assert_eq!(manifest(&store).await.unwrap(), before, "nothing was written");
}

#[tokio::test]
async fn an_object_of_old_events_delivered_again_and_after_a_compaction_changes_nothing() {
    // A redrive after a long outage: the events were received 30 days before the object is processed, far
    // beyond the 7-day dedup window, which runs from when a messageId is first applied.
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let day = 24 * 3600 * 1000;
    let received = now().add_millis(-30 * day).unwrap();
    let at = |sec: i64| received.add_millis(-1000 * sec).unwrap().to_string();
    let key = crate::testing::put_batch(
        &store,
        50,
        json!([
            {"type": "identify", "messageId": "old-1", "timestamp": at(30), "userId": "u-old", "anonymousId": "a-old",
             "traits": {"plan": "gold"}},
            {"type": "track", "messageId": "old-2", "timestamp": at(20), "userId": "u-old", "event": "Order Completed",
             "properties": {"revenue": 10}},
            {"type": "page", "messageId": "old-3", "timestamp": at(10), "anonymousId": "a-old"},
        ]),
        received,
    )
    .await;
    let keys = std::slice::from_ref(&key);
    let ids = ["user_id:u-old", "anonymous_id:a-old"];
    let first = ingest(&store, keys, &small(), now()).await.unwrap();
    assert_eq!((first.applied, first.duplicates), (3, 0));
    let state = everything(&store, &ids).await;
    let applied = manifest(&store).await.unwrap().events_applied;
    assert_eq!(state[0].1.as_ref().unwrap().profile.events["Order Completed"].count, 1);

    let hour = 3600 * 1000;
    let again = ingest(&store, keys, &small(), now().add_millis(hour).unwrap()).await.unwrap();
    assert_eq!((again.applied, again.duplicates, again.commit), (0, 3, None), "the redelivery is dropped whole");
    assert_eq!(everything(&store, &ids).await, state);

    // A commit that folds every delta into whole shards, forgetting messageIds past the window.
    let later = now().add_millis(2 * hour).unwrap();
    let mut fold =
        Transaction::begin(&store, small().state.shards).await.unwrap().with_compaction(Compaction::always());
    fold.fresh(Vec::new(), later, small().state.dedup_window_ms).await.unwrap();
    assert!(fold.commit().await.unwrap().compacted, "the state was compacted");

    let after = ingest(&store, keys, &small(), now().add_millis(3 * hour).unwrap()).await.unwrap();
    assert_eq!((after.applied, after.duplicates, after.commit), (0, 3, None), "still remembered after compaction");
    assert_eq!(everything(&store, &ids).await, state);
    assert_eq!(manifest(&store).await.unwrap().events_applied, applied);
}

#[tokio::test]
async fn one_source_cannot_silence_another_by_reusing_its_message_ids() {
    // Anyone holding the public browser key sends an event with the messageId of the server's real order.
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let browser = crate::testing::put_batch_from(
        &store,
        "browser",
        60,
        json!([ev("track", "order-1001", 1, json!({"anonymousId": "a-mallory"}), json!({"event": "Order Completed"}))]),
        now(),
    )
    .await;
    let server = crate::testing::put_batch_from(
        &store,
        "server",
        61,
        json!([ev(
            "track",
            "order-1001",
            2,
            json!({"userId": "u-buyer"}),
            json!({"event": "Order Completed", "properties": {"revenue": 99}})
        )]),
        now(),
    )
    .await;
    let first = ingest(&store, std::slice::from_ref(&browser), &small(), now()).await.unwrap();
    let second = ingest(&store, std::slice::from_ref(&server), &small(), now()).await.unwrap();
    assert_eq!((first.applied, second.applied, second.duplicates), (1, 1, 0), "each source's event is applied");
    let buyer = lookup(&store, "user_id:u-buyer").await.unwrap().expect("the buyer's profile");
    assert_eq!(buyer.profile.events["Order Completed"].properties["revenue"].sum, 99.0);
    // Within one source the messageId still deduplicates.
    let again = ingest(&store, &[browser, server], &small(), now()).await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 2));
}

#[tokio::test]
async fn reconciliation_applies_the_objects_whose_notification_was_lost_once() {
    use super::reconcile::{Timing, WATERMARK, reconcile};
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let config = small();
    let timing = Timing { grace_ms: 10_000, settle_ms: 20_000 };
    let minute = 60_000;
    // The first run, on an empty store, starts the watermark.
    let first = reconcile(&store, &config, now(), timing).await.unwrap();
    assert_eq!((first.listed, first.missing, first.watermark.as_deref()), (0, 0, None));
    assert!(store.get(WATERMARK).await.unwrap().is_some());

    let stored = now().add_millis(-5 * minute).unwrap();
    let mut keys = Vec::new();
    for i in 0..3u8 {
        let events = json!([ev(
            "track",
            &format!("lost-{i}"),
            u32::from(i),
            json!({"userId": format!("u-lost-{i}")}),
            json!({"event": "Order Completed"})
        )]);
        keys.push(crate::testing::put_batch(&store, 70 + i, events, stored.add_millis(i64::from(i)).unwrap()).await);
    }
    // Only the first object's notification arrived; the others died with the process.
    ingest(&store, &keys[..1], &config, stored).await.unwrap();
    let run = reconcile(&store, &config, now(), timing).await.unwrap();
    assert_eq!((run.listed, run.missing, run.applied, run.unverifiable), (3, 2, 2, 0));
    assert_eq!(run.watermark.as_ref(), keys.last(), "every object named before the settle time is passed");
    for i in 0..3 {
        let profile = lookup(&store, &format!("user_id:u-lost-{i}")).await.unwrap().expect("applied");
        assert_eq!(profile.profile.events["Order Completed"].count, 1, "u-lost-{i} once");
    }
    assert_eq!(manifest(&store).await.unwrap().events_applied, 3);

    // A late notification of an object reconciliation applied changes nothing; nor does another run.
    let late = ingest(&store, &keys[1..], &config, now()).await.unwrap();
    assert_eq!((late.applied, late.commit), (0, None));
    let again = reconcile(&store, &config, now().add_millis(minute).unwrap(), timing).await.unwrap();
    assert_eq!((again.listed, again.missing), (0, 0));

    // An object younger than the grace time is left to its notification, and the watermark waits for it.
    let fresh = crate::testing::put_batch(
        &store,
        80,
        json!([ev("track", "fresh-1", 9, json!({"userId": "u-fresh"}), json!({"event": "X"}))]),
        now().add_millis(minute).unwrap(),
    )
    .await;
    let young = reconcile(&store, &config, now().add_millis(minute + 5_000).unwrap(), timing).await.unwrap();
    assert_eq!((young.listed, young.missing), (1, 0));
    assert_eq!(young.watermark.as_ref(), keys.last());
    let due = reconcile(&store, &config, now().add_millis(minute + 60_000).unwrap(), timing).await.unwrap();
    assert_eq!((due.missing, due.applied, due.watermark), (1, 1, Some(fresh)));
}

#[tokio::test]
async fn reconciliation_of_an_older_state_starts_after_what_is_stored_and_never_applies_it_again() {
    use super::reconcile::{Timing, reconcile};
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let keys = person_objects(&store).await;
    // A state whose objects were applied before reconciliation existed: a manifest, no watermark.
    ingest(&store, &keys, &small(), now()).await.unwrap();
    let later = now().add_millis(3_600_000).unwrap();
    let run = reconcile(&store, &small(), later, Timing { grace_ms: 0, settle_ms: 1_000 }).await.unwrap();
    assert_eq!((run.missing, run.applied), (0, 0));
    assert_eq!(run.watermark.as_ref(), keys.iter().max());
    assert_eq!(manifest(&store).await.unwrap().events_applied, 6);
}

#[tokio::test]
async fn an_object_left_by_a_crash_a_month_ago_is_applied_unless_its_record_may_have_been_forgotten() {
    use super::reconcile::{Timing, reconcile};
    let timing = Timing { grace_ms: 0, settle_ms: 1_000 };
    let day = 24 * 3_600_000;
    let start = now().add_millis(-30 * day).unwrap();
    let old = |store: FsStore, seed: u8| async move {
        let events = json!([ev(
            "track",
            &format!("old-{seed}"),
            9,
            json!({"userId": format!("u-old-{seed}")}),
            json!({"event": "X"})
        )]);
        crate::testing::put_batch(&store, seed, events, start.add_millis(60_000).unwrap()).await
    };
    // Stored, then the process died and nothing ran for a month: no record can have been forgotten.
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    reconcile(&store, &small(), start, timing).await.unwrap();
    let key = old(store.clone(), 90).await;
    let run = reconcile(&store, &small(), now(), timing).await.unwrap();
    assert_eq!((run.listed, run.missing, run.applied, run.unverifiable), (1, 1, 1, 0));
    assert_eq!(run.watermark, Some(key));

    // Here a compaction forgot what was applied more than the window ago: the object may be one of those.
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    reconcile(&store, &small(), start, timing).await.unwrap();
    let key = old(store.clone(), 91).await;
    let other =
        put_batch(&store, 92, json!([ev("track", "new-1", 1, json!({"userId": "u-new"}), json!({"event": "X"}))]))
            .await;
    ingest(&store, &[other], &always_folding(), now()).await.unwrap();
    let run = reconcile(&store, &small(), now(), timing).await.unwrap();
    assert_eq!((run.missing, run.unverifiable), (0, 1), "left alone, never applied twice");
    assert!(lookup(&store, "user_id:u-old-91").await.unwrap().is_none());
    assert!(run.watermark.is_some_and(|w| w >= key));
}

#[tokio::test]
async fn object_order_does_not_change_the_state() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (sa, sb) = (FsStore::open(a.path()).unwrap(), FsStore::open(b.path()).unwrap());
    let keys_a = person_objects(&sa).await;
    let keys_b = person_objects(&sb).await;
    assert_eq!(keys_a.len(), keys_b.len());
    // One store gets the objects one by one, in reverse; the other all at once.
    for key in keys_b.iter().rev() {
        ingest(&sb, std::slice::from_ref(key), &small(), now()).await.unwrap();
    }
    ingest(&sa, &keys_a, &small(), now()).await.unwrap();
    for key in ["user_id:u1", "anonymous_id:a-laptop", "anonymous_id:a-phone", "device_id:d-phone"] {
        let pa = lookup(&sa, key).await.unwrap().unwrap().profile;
        let pb = lookup(&sb, key).await.unwrap().unwrap().profile;
        assert_eq!(pa.traits, pb.traits, "{key}");
        assert_eq!(pa.events, pb.events, "{key}");
        assert_eq!(pa.identities, pb.identities, "{key}");
    }
}

#[tokio::test]
async fn malformed_objects_are_quarantined_and_good_lines_applied() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let good =
        put_batch(&store, 9, json!([ev("track", "ok-1", 1, json!({"userId": "u9"}), json!({"event": "X"}))])).await;
    let text = shared::storage::gunzip(&store.get(&good).await.unwrap().unwrap().body).unwrap();
    let mut lines = String::from_utf8(text).unwrap();
    lines.push_str("{\"this is\": \"not an event\"}\n");
    lines.push_str(
        &String::from_utf8(shared::storage::gunzip(&store.get(&good).await.unwrap().unwrap().body).unwrap())
            .unwrap()
            .replace("ok-1", "ok-2"),
    );
    let mut gz = shared::storage::gzip(lines.as_bytes());
    let bad_key = "raw/v1/dt=2026-11-28/hr=12/BADLINE.ndjson.gz".to_string();
    store.put(&bad_key, gz.clone(), PutOptions::ndjson_gz()).await.unwrap();
    gz.truncate(gz.len() - 12);
    let cut_key = "raw/v1/dt=2026-11-28/hr=12/TRUNCATED.ndjson.gz".to_string();
    store.put(&cut_key, gz, PutOptions::ndjson_gz()).await.unwrap();

    let report = ingest(&store, &[bad_key.clone(), cut_key.clone()], &small(), now()).await.unwrap();
    assert_eq!(report.applied, 2, "ok-1 and ok-2 from the object with a bad line");
    assert!(report.quarantined >= 2, "the bad line and the damaged tail");
    let q = store.get(&format!("failed/ingest/{bad_key}")).await.unwrap().expect("quarantine object");
    let q: Vec<crate::raw::Quarantined> = shared::storage::decode_ndjson_gz(&q.body).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].line, 2);
    assert!(q[0].reason.starts_with("not a canonical event"), "{}", q[0].reason);
    let cut: Vec<crate::raw::Quarantined> =
        shared::storage::decode_ndjson_gz(&store.get(&format!("failed/ingest/{cut_key}")).await.unwrap().unwrap().body)
            .unwrap();
    assert!(cut.iter().any(|q| q.line == 0 && q.reason.contains("gzip")), "{cut:?}");
}

#[tokio::test]
async fn two_writers_at_once_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let mut keys = Vec::new();
    for i in 0..6u8 {
        keys.push(
            put_batch(
                &store,
                20 + i,
                json!([ev(
                    "track",
                    &format!("w{i}"),
                    u32::from(i),
                    json!({"userId": format!("user-{i}")}),
                    json!({"event": "X"})
                )]),
            )
            .await,
        );
    }
    let config = small();
    // The gate holds the three commits until all three writers have read the manifest.
    let gated = crate::storage::conformance::Gated::new(store.clone(), MANIFEST_KEY, 3);
    let (a, b, c) = tokio::join!(
        ingest(&gated, &keys[0..2], &config, now()),
        ingest(&gated, &keys[2..4], &config, now()),
        ingest(&gated, &keys[4..6], &config, now()),
    );
    let attempts = [a.unwrap().attempts, b.unwrap().attempts, c.unwrap().attempts];
    assert_eq!(manifest(&store).await.unwrap().events_applied, 6, "every writer's events were committed");
    for i in 0..6 {
        assert!(lookup(&store, &format!("user_id:user-{i}")).await.unwrap().is_some(), "user-{i}");
    }
    // Forced conflict: a transaction that started before another commit is fenced.
    let stale = Transaction::begin(&store, config.state.shards).await.unwrap();
    let mut fresh = Transaction::begin(&store, config.state.shards).await.unwrap();
    let extra =
        put_batch(&store, 40, json!([ev("track", "late", 1, json!({"userId": "late"}), json!({"event": "X"}))])).await;
    let events = read_object(&store, &extra).await.unwrap().unwrap().events;
    let events = fresh.fresh(events, now(), config.state.dedup_window_ms).await.unwrap();
    apply(&mut fresh, &events, &config, now()).await.unwrap();
    fresh.commit().await.unwrap();
    let mut stale = stale;
    let events = read_object(&store, &extra).await.unwrap().unwrap().events;
    stale.fresh(events, now(), config.state.dedup_window_ms).await.unwrap();
    assert!(matches!(stale.commit().await, Err(Error::Store(StoreError::PreconditionFailed))));
    assert_eq!(attempts.iter().filter(|&&n| n == 1).count(), 1, "one writer commits first: {attempts:?}");
    assert!(attempts.iter().sum::<u32>() >= 5, "the other two were fenced and re-ran: {attempts:?}");
}

#[tokio::test]
async fn unlink_splits_a_stored_profile() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    // A bad device id joined two people's anonymous histories.
    let keys = vec![
        put_batch(
            &store,
            50,
            json!([ev(
                "identify",
                "s1",
                1,
                json!({"anonymousId": "a1"}),
                json!({"traits": {"email": "x@example.com"}})
            )]),
        )
        .await,
        put_batch(
            &store,
            51,
            json!([ev("page", "s2", 2, json!({"anonymousId": "a2"}), json!({"context": {"device": {"id": "bad"}}}))]),
        )
        .await,
        put_batch(
            &store,
            52,
            json!([ev("page", "s3", 3, json!({"anonymousId": "a1"}), json!({"context": {"device": {"id": "bad"}}}))]),
        )
        .await,
    ];
    ingest(&store, &keys, &small(), now()).await.unwrap();
    let before = lookup(&store, "anonymous_id:a2").await.unwrap().unwrap().node.id;
    assert_eq!(lookup(&store, "anonymous_id:a1").await.unwrap().unwrap().node.id, before, "merged through the device");

    let parts = unlink(&store, "device_id:bad", "op-1", &small(), now()).await.unwrap();
    assert_eq!(parts.len(), 2);
    assert!(lookup(&store, "device_id:bad").await.unwrap().is_none());
    let a1 = lookup(&store, "anonymous_id:a1").await.unwrap().unwrap();
    let a2 = lookup(&store, "anonymous_id:a2").await.unwrap().unwrap();
    assert_ne!(a1.node.id, a2.node.id);
    assert_eq!(a1.node.id, before, "the part with the strongest identifier (the email) keeps the id");
    assert!(a1.profile.traits.contains_key("email"));
    assert_eq!(a2.profile.identities.len(), 1);
    assert!(unlink(&store, "device_id:bad", "op-2", &small(), now()).await.unwrap().is_empty(), "already gone");
}

#[tokio::test]
async fn commits_write_deltas_until_compaction_folds_them_and_the_state_is_the_same_either_way() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (deltas, whole) = (FsStore::open(a.path()).unwrap(), FsStore::open(b.path()).unwrap());
    let (keys_a, keys_b) = (person_objects(&deltas).await, person_objects(&whole).await);
    let mut history = Vec::new();
    for (i, (ka, kb)) in keys_a.iter().zip(&keys_b).enumerate() {
        let ra = ingest(&deltas, std::slice::from_ref(ka), &small(), now()).await.unwrap();
        let rb = ingest(&whole, std::slice::from_ref(kb), &always_folding(), now()).await.unwrap();
        let (ca, cb) = (ra.commit.unwrap(), rb.commit.unwrap());
        assert!(cb.compacted && cb.delta_bytes == 0 && cb.shards_written > 0, "{cb:?}");
        let m = manifest(&deltas).await.unwrap();
        history.push((ca.compacted, m.deltas.len()));
        if ca.compacted {
            assert_eq!(ca.delta_bytes, 0);
        } else {
            assert_eq!(ca.shards_written, 0, "a delta commit writes no whole shard");
            assert!(ca.delta_bytes > 0 && ca.bytes_written < cb.bytes_written, "commit {i}: {ca:?} vs {cb:?}");
            assert_eq!(m.deltas.last().unwrap().version, m.version);
        }
    }
    // Three commits write deltas; a fourth delta would be one too many, so the fourth commit folds them.
    assert_eq!(history, [(false, 1), (false, 2), (false, 3), (true, 0)]);
    let keys = ["user_id:u1", "anonymous_id:a-laptop", "anonymous_id:a-phone", "device_id:d-phone"];
    assert_eq!(everything(&deltas, &keys).await, everything(&whole, &keys).await);

    // An unlink is one more commit, a delta over the folded shards.
    let parts_a = unlink(&deltas, "device_id:d-phone", "op", &small(), now()).await.unwrap();
    let parts_b = unlink(&whole, "device_id:d-phone", "op", &always_folding(), now()).await.unwrap();
    assert_eq!(parts_a, parts_b);
    assert_eq!(manifest(&deltas).await.unwrap().deltas.len(), 1);
    assert_eq!(everything(&deltas, &keys).await, everything(&whole, &keys).await);
    // Replays still find every messageId (in folded shards and deltas alike).
    let again = ingest(&deltas, &keys_a, &small(), now()).await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 6));
}

#[test]
fn deltas_and_whole_shards_give_the_same_state_for_any_batches() {
    use proptest::prelude::*;
    let people = proptest::collection::vec((0u8..6, 0u8..4, 0u8..3, any::<bool>()), 1..24);
    let config = ProptestConfig { cases: 24, ..ProptestConfig::default() };
    proptest!(config, |(events in people, cut in 1usize..5, max_deltas in 0usize..4)| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (deltas, whole) = (FsStore::open(a.path()).unwrap(), FsStore::open(b.path()).unwrap());
            let small = small();
            let compaction = Compaction { max_deltas, max_delta_ratio: f64::INFINITY, min_fold_bytes: 0 };
            let policy = RunConfig { state: Settings { compaction, ..small.state }, ..small };
            // Person p browses on device d; some events log in as user p, some carry an email shared by p's pair.
            let events: Vec<Value> = events.iter().enumerate().map(|(i, (p, d, email, login))| {
                let mut ids = json!({"anonymousId": format!("anon-{p}-{d}")});
                if *login { ids["userId"] = json!(format!("user-{p}")); }
                let traits = json!({"email": format!("pair{}-{email}@example.com", p / 2), "n": i});
                ev("identify", &format!("e{i}"), i as u32, ids, json!({"traits": traits}))
            }).collect();
            for (i, chunk) in events.chunks(cut).enumerate() {
                let seed = 100 + i as u8;
                let ka = put_batch(&deltas, seed, Value::Array(chunk.to_vec())).await;
                let kb = put_batch(&whole, seed, Value::Array(chunk.to_vec())).await;
                ingest(&deltas, &[ka], &policy, now()).await.unwrap();
                ingest(&whole, &[kb], &always_folding(), now()).await.unwrap();
            }
            let mut keys = Vec::new();
            for p in 0..6 {
                keys.push(format!("user_id:user-{p}"));
                for d in 0..4 { keys.push(format!("anonymous_id:anon-{p}-{d}")); }
            }
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let (sa, sb) = (everything(&deltas, &keys).await, everything(&whole, &keys).await);
            prop_assert_eq!(sa, sb);
            Ok(())
        })?;
    });
}

/// Tags, audiences and a destination in `config/`, as `cdp up` or an operator would write them.
async fn activation_config(store: &FsStore) {
    let files = [
        (
            "config/tags.json",
            json!([
                {"id": "spend", "status": "active", "kind": "statistical", "filter": {"events": ["Order Completed"]},
                 "aggregate": {"op": "sum", "property": "revenue"}},
                {"id": "tier", "status": "active", "kind": "buckets", "of": "tag:spend",
                 "buckets": [{"label": "high", "min": 100}], "otherwise": "low"}
            ]),
        ),
        (
            "config/audiences.json",
            json!([
                {"id": "big_spenders", "name": "Big spenders", "status": "active", "when": {"field": "tag:tier", "op": "eq", "value": "high"}},
                {"id": "recent_buyers", "status": "active", "when": {"did": {"events": ["Order Completed"], "window": {"lastDays": 7}}}}
            ]),
        ),
        (
            "config/destinations.json",
            json!([
                {"id": "crm", "url": "https://hooks.partner.example/cdp", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                 "send": {"audiences": ["big_spenders", "recent_buyers"], "events": [{"events": ["Order Completed"]}], "traits": ["plan"]},
                 "fields": {"traits": ["plan"], "tags": ["tier"]}}
            ]),
        ),
    ];
    for (key, value) in files {
        store.put(key, value.to_string().into_bytes(), PutOptions::json()).await.unwrap();
    }
}

async fn outbox(store: &FsStore) -> Vec<shared::activation::lane::Message> {
    let mut out = Vec::new();
    for meta in store.list(crate::activation::outbox::OUTBOX).await.unwrap() {
        let body = store.get(&meta.key).await.unwrap().unwrap().body;
        out.extend(shared::storage::decode_ndjson_gz::<shared::activation::lane::Message>(&body).unwrap());
    }
    out
}

#[tokio::test]
async fn ingest_puts_audience_entries_triggers_and_changes_in_the_outbox_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    activation_config(&store).await;
    // As after the first full recompute: the statistical tag's state is complete, so ingest serves it.
    let mut config = RunConfig::load(&store).await.unwrap();
    config.snapshot.ready = [("spend".to_string(), 1)].into();
    assert!(config.snapshot.activation.is_some());
    let first = put_batch(
        &store,
        1,
        json!([
            ev("identify", "m1", 1, json!({"userId": "u1"}), json!({"traits": {"plan": "free"}})),
            ev(
                "track",
                "m2",
                2,
                json!({"userId": "u1"}),
                json!({"event": "Order Completed", "properties": {"revenue": 60}})
            ),
        ]),
    )
    .await;
    let report = ingest(&store, std::slice::from_ref(&first), &config, now()).await.unwrap();
    // The order fires the trigger and plan appeared: no audience yet (60 < 100; recent_buyers is not real-time).
    let messages = outbox(&store).await;
    let kinds: Vec<String> =
        messages.iter().map(|m| serde_json::to_value(&m.item).unwrap()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["profile.updated", "event.triggered"], "{messages:#?}");
    assert_eq!(report.deliveries, 2);
    // The same object again changes nothing and delivers nothing more.
    let again = ingest(&store, &[first], &config, now()).await.unwrap();
    assert_eq!((again.applied, again.deliveries), (0, 0));
    assert_eq!(outbox(&store).await.len(), 2);

    let second = put_batch(
        &store,
        2,
        json!([ev(
            "track",
            "m3",
            3,
            json!({"userId": "u1"}),
            json!({"event": "Order Completed", "properties": {"revenue": 50}})
        ),]),
    )
    .await;
    ingest(&store, &[second], &config, now()).await.unwrap();
    let messages = outbox(&store).await;
    let entered: Vec<&shared::activation::lane::Message> = messages
        .iter()
        .filter(|m| matches!(m.item.detail, shared::activation::Detail::AudienceEntered { .. }))
        .collect();
    assert_eq!(entered.len(), 1, "{messages:#?}");
    let item = serde_json::to_value(&entered[0].item).unwrap();
    assert_eq!(item["audience"], json!({"id": "big_spenders", "name": "Big spenders"}));
    assert_eq!(item["profile"]["tags"], json!({"tier": "high"}));
    assert_eq!(item["profile"]["traits"], json!({"plan": "free"}));
    assert_eq!(item["profile"]["identifiers"], json!([{"type": "user_id", "value": "u1"}]));
    // The membership is on the profile, numbered; the tier change is not subscribed, so no update item.
    let stored = lookup(&store, "user_id:u1").await.unwrap().unwrap();
    let membership = stored.profile.memberships.get("big_spenders").copied().unwrap();
    assert_eq!((membership.member, membership.changes), (true, 1));
    assert!(!stored.profile.memberships.contains_key("recent_buyers"), "decided by the full recompute");
    assert_eq!(messages.len(), 4, "entered + the second trigger: {messages:#?}");
}

#[tokio::test]
async fn a_profile_merged_away_leaves_its_audiences_at_partners() {
    let order = |msg: &str, sec: u32, ids: Value, revenue: u32| {
        ev("track", msg, sec, ids, json!({"event": "Order Completed", "properties": {"revenue": revenue}}))
    };
    let mut exits = 0;
    // Two people as far as anyone knows, one a big spender (either the first seen or the second, so that
    // either side of the merge is the member), then one login joins them.
    for big_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        activation_config(&store).await;
        let mut config = RunConfig::load(&store).await.unwrap();
        config.snapshot.ready = [("spend".to_string(), 1)].into();
        let (visitor, user) = if big_first { (120, 10) } else { (10, 120) };
        for (seed, batch) in [
            (1, json!([order("m1", 1, json!({"anonymousId": "a1"}), visitor)])),
            (2, json!([order("m2", 2, json!({"userId": "u9"}), user)])),
            (3, json!([ev("identify", "m3", 3, json!({"anonymousId": "a1", "userId": "u9"}), json!({}))])),
        ] {
            let key = put_batch(&store, seed, batch).await;
            ingest(&store, &[key], &config, now()).await.unwrap();
        }
        let survivor = lookup(&store, "user_id:u9").await.unwrap().unwrap();
        assert_eq!(survivor.profile.merged_ids.len(), 1, "one profile absorbed");
        assert!(survivor.profile.memberships["big_spenders"].member, "130 spent: the person is a big spender");
        // What partners were told, replayed: every profile they hold as a member is a live one, and the person
        // is held exactly once, by the surviving id.
        let mut held: BTreeMap<String, i32> = BTreeMap::new();
        for message in outbox(&store).await {
            let step = match message.item.detail {
                shared::activation::Detail::AudienceEntered { .. } => 1,
                shared::activation::Detail::AudienceExited { .. } => {
                    exits += 1;
                    -1
                }
                _ => continue,
            };
            *held.entry(message.item.profile.id.clone()).or_default() += step;
        }
        held.retain(|_, n| *n != 0);
        assert_eq!(held, BTreeMap::from([(survivor.node.id.clone(), 1)]), "partners hold the survivor only");
        // The same event again (a client's retry) sends nothing more.
        let before = outbox(&store).await.len();
        let again = put_batch(
            &store,
            4,
            json!([ev("identify", "m3", 3, json!({"anonymousId": "a1", "userId": "u9"}), json!({}))]),
        )
        .await;
        ingest(&store, &[again], &config, now()).await.unwrap();
        assert_eq!(outbox(&store).await.len(), before);
    }
    assert_eq!(exits, 1, "the member was absorbed in one of the two orders");
}

#[tokio::test]
async fn an_event_denying_a_purpose_reaches_no_destination_serving_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let destinations = json!([
        {"id": "ads", "url": "https://ads.partner.example/cdp", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
         "purposes": ["marketing"], "send": {"events": [{"events": ["Order Completed"]}]}},
        {"id": "ops", "url": "https://ops.partner.example/cdp", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
         "send": {"events": [{"events": ["Order Completed"]}]}}
    ]);
    store.put("config/destinations.json", destinations.to_string().into_bytes(), PutOptions::json()).await.unwrap();
    let config = RunConfig::load(&store).await.unwrap();
    let order = |msg: &str, sec: u32, marketing: bool| {
        ev(
            "track",
            msg,
            sec,
            json!({"userId": "u1"}),
            json!({"event": "Order Completed",
            "context": {"consent": {"categoryPreferences": {"marketing": marketing}}}}),
        )
    };
    let denied = put_batch(&store, 1, json!([order("o1", 1, false)])).await;
    ingest(&store, &[denied], &config, now()).await.unwrap();
    let to: Vec<String> = outbox(&store).await.into_iter().map(|m| m.destination).collect();
    assert_eq!(to, ["ops"], "the marketing destination gets nothing of a person who denied marketing");
    let profile = lookup(&store, "user_id:u1").await.unwrap().unwrap().profile;
    assert!(profile.denies("marketing"));
    // A later grant: what comes after reaches both; nothing from before is sent again.
    let granted = put_batch(&store, 2, json!([order("o2", 2, true)])).await;
    ingest(&store, &[granted], &config, now()).await.unwrap();
    let mut to: Vec<String> = outbox(&store).await.into_iter().map(|m| m.destination).collect();
    to.sort();
    assert_eq!(to, ["ads", "ops", "ops"]);
}

#[tokio::test]
async fn the_data_dictionary_counts_what_was_applied_not_a_clients_retries() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let order = |msg: &str| ev("track", msg, 1, json!({"userId": "u1"}), json!({"event": "Order Completed"}));
    let first = put_batch(&store, 1, json!([order("o1"), order("o2")])).await;
    // The client did not hear the answer and sent o2 again, in another request (another object), with o3.
    let retry = put_batch(&store, 2, json!([order("o2"), order("o3")])).await;
    ingest(&store, &[first], &small(), now()).await.unwrap();
    let report = ingest(&store, std::slice::from_ref(&retry), &small(), now()).await.unwrap();
    assert_eq!((report.applied, report.duplicates), (1, 1));
    let count = |dictionary: shared::catalog::Dictionary| dictionary.sources["web"].events["Order Completed"].count;
    assert_eq!(count(crate::catalog::load(&store).await.unwrap()), 3, "o1, o2, o3: the retried o2 once");
    // A late redelivery of the retry's object, after its part was folded and forgotten, adds nothing either.
    crate::catalog::fold(&store, now()).await.unwrap();
    ingest(&store, &[retry], &small(), now()).await.unwrap();
    assert_eq!(count(crate::catalog::load(&store).await.unwrap()), 3);
}
