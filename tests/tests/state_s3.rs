//! The ingest handler and its state on a real S3-compatible server: one person's events become one profile,
//! replays change nothing, and writers racing on the manifest are fenced and retry without losing updates.

use cdp_e2e::local_s3::LocalS3;
use functions::ingest::ingest;
use functions::snapshot::RunConfig;
use functions::state::{MANIFEST_KEY, Manifest, ShardCounts, lookup};
use functions::storage::conformance::Gated;
use functions::storage::{ObjectStore, PutOptions, S3Store};
use serde_json::{Value, json};
use shared::collect::{CollectRequest, Collected, Endpoint, collect};
use shared::ids::{Entropy, sha256_hex};
use shared::source::{Sources, new_source};
use shared::time::UtcTime;

fn now() -> UtcTime {
    UtcTime::parse("2026-11-28T12:00:00Z").expect("time")
}

async fn put_batch(store: &S3Store, seed: u8, events: Value) -> String {
    let (source, key) = new_source("web", "Web", &mut Entropy::from_seed([1; 32]));
    let mut sources = Sources::default();
    sources.add(source).expect("source");
    let body = json!({"batch": events, "writeKey": key}).to_string();
    let request = CollectRequest::new(Endpoint::Batch, body.as_bytes());
    let Collected::Kept(batch) = collect(&request, &sources, now(), &mut Entropy::from_seed([seed; 32])) else {
        panic!("rejected")
    };
    let (object_key, bytes) = batch.accepted_object().expect("accepted events");
    store.put(&object_key, bytes, PutOptions::ndjson_gz()).await.expect("put raw object");
    object_key
}

async fn manifest(store: &S3Store) -> Manifest {
    let object = store.get(MANIFEST_KEY).await.expect("get").expect("manifest exists");
    serde_json::from_slice(&object.body).expect("manifest JSON")
}

#[test]
fn ingest_on_s3_links_dedups_and_fences_concurrent_writers() {
    let s3 = LocalS3::start();
    let store = s3.store();
    let state =
        functions::state::Settings { shards: ShardCounts { ids: 16, profiles: 16, dedup: 8 }, ..Default::default() };
    let config = RunConfig { state, ..RunConfig::default() };
    s3.block_on(async {
        let person = vec![
            put_batch(&store, 1, json!([{"type": "page", "anonymousId": "laptop", "messageId": "p1"}])).await,
            put_batch(
                &store,
                2,
                json!([{"type": "identify", "anonymousId": "laptop", "userId": "u1", "messageId": "p2",
                                         "traits": {"email": "jane@example.com"}}]),
            )
            .await,
            put_batch(
                &store,
                3,
                json!([{"type": "identify", "anonymousId": "phone", "userId": "u1", "messageId": "p3"}]),
            )
            .await,
        ];
        let report = ingest(&store, &person, &config, now()).await.expect("ingest");
        assert_eq!(report.applied, 3);
        let by_email = lookup(&store, &format!("email:{}", sha256_hex("jane@example.com"))).await.expect("lookup");
        let by_phone = lookup(&store, "anonymous_id:phone").await.expect("lookup");
        assert_eq!(by_email.expect("by email").node.id, by_phone.expect("by phone").node.id);

        // Replaying the same notification changes nothing.
        let version = manifest(&store).await.version;
        let again = ingest(&store, &person, &config, now()).await.expect("replay");
        assert_eq!((again.applied, again.duplicates, again.commit), (0, 3, None));
        assert_eq!(manifest(&store).await.version, version);

        // Three writers at once, each with its own people: all commit, two after being fenced (the gate holds
        // their commits until all three have read the manifest).
        let mut keys = Vec::new();
        for i in 0..6u8 {
            let events =
                json!([{"type": "track", "userId": format!("w{i}"), "event": "X", "messageId": format!("w{i}")}]);
            keys.push(put_batch(&store, 10 + i, events).await);
        }
        let gated = Gated::new(store.clone(), MANIFEST_KEY, 3);
        let (a, b, c) = tokio::join!(
            ingest(&gated, &keys[0..2], &config, now()),
            ingest(&gated, &keys[2..4], &config, now()),
            ingest(&gated, &keys[4..6], &config, now()),
        );
        let attempts = [a.expect("a").attempts, b.expect("b").attempts, c.expect("c").attempts];
        assert_eq!(attempts.iter().filter(|&&n| n == 1).count(), 1, "one writer commits first: {attempts:?}");
        assert!(attempts.iter().sum::<u32>() >= 5, "the other two were fenced and re-ran: {attempts:?}");
        let m = manifest(&store).await;
        assert_eq!(m.events_applied, 9, "no update lost");
        assert_eq!(m.version, version + 3);
        for i in 0..6 {
            assert!(lookup(&store, &format!("user_id:w{i}")).await.expect("lookup").is_some(), "w{i}");
        }
    });
}
