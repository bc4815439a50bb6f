//! The configuration is read once per run: one ingest batch (as the ingest function handles it) and one full
//! recompute each read every configuration file once, with every file present.

use serde_json::json;
use shared::storage::keys;
use shared::time::UtcTime;

use super::*;
use crate::storage::conformance::Recording;
use crate::storage::{FsStore, PutOptions};
use crate::vault::{KeySource, ensure};

fn now() -> UtcTime {
    UtcTime::parse("2026-11-28T12:00:00Z").unwrap()
}

/// Every configuration file ingest and the recompute read, with content that checks.
async fn configure(store: &FsStore) {
    let files = [
        (keys::CONFIG_IDENTITY, serde_json::to_value(IdentityRules::default()).unwrap()),
        (keys::CONFIG_PROFILES, json!({"personal": ["nationalId"]})),
        (
            keys::CONFIG_TAGS,
            json!([
                {"id": "spend", "status": "active", "kind": "statistical", "filter": {"events": ["Order Completed"]},
                 "aggregate": {"op": "sum", "property": "revenue"}},
                {"id": "tier", "status": "active", "kind": "buckets", "of": "tag:spend",
                 "buckets": [{"label": "high", "min": 100}], "otherwise": "low"}
            ]),
        ),
        (
            keys::CONFIG_AUDIENCES,
            json!([{"id": "big_spenders", "name": "Big spenders", "status": "active",
                    "when": {"field": "tag:tier", "op": "eq", "value": "high"}}]),
        ),
        (
            keys::CONFIG_DESTINATIONS,
            json!([{"id": "crm", "url": "https://hooks.partner.example/cdp",
                    "send": {"audiences": ["big_spenders"], "events": [{"events": ["Order Completed"]}]}}]),
        ),
        (keys::CONFIG_PRODUCTS, json!({"product": "sku"})),
    ];
    for (key, value) in files {
        store.put(key, value.to_string().into_bytes(), PutOptions::json()).await.unwrap();
    }
}

/// The configuration files among `reads`, with their counts.
fn config_reads(reads: &std::collections::BTreeMap<String, usize>) -> Vec<(&str, usize)> {
    reads.iter().filter(|(k, _)| k.starts_with("config/")).map(|(k, n)| (k.as_str(), *n)).collect()
}

#[tokio::test]
async fn one_ingest_batch_and_one_full_recompute_each_read_every_configuration_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let inner = FsStore::open(dir.path().join("data")).unwrap();
    ensure(&inner, &KeySource::File(dir.path().join("master.key"))).await.unwrap();
    configure(&inner).await;
    let events = json!([
        {"type": "identify", "messageId": "m1", "userId": "ann", "timestamp": "2026-11-28T11:00:00Z",
         "traits": {"email": "ann@example.com", "nationalId": "X1"}},
        {"type": "track", "messageId": "m2", "userId": "ann", "event": "Order Completed",
         "timestamp": "2026-11-28T11:01:00Z", "properties": {"revenue": 150, "sku": "A-1"}}
    ]);
    let key = crate::testing::put_batch(&inner, 1, events, now()).await;
    let store = Recording::new(inner);
    let every: Vec<(&str, usize)> = [
        keys::CONFIG_AUDIENCES,
        keys::CONFIG_DESTINATIONS,
        keys::CONFIG_IDENTITY,
        keys::CONFIG_PRODUCTS,
        keys::CONFIG_PROFILES,
        keys::CONFIG_TAGS,
    ]
    .into_iter()
    .map(|k| (k, 1))
    .collect();

    // One batch as the ingest function handles an S3 notification.
    let notification = json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": key}}}]});
    crate::ingest::lambda::handle_payload(&store, &notification, now()).await.unwrap();
    let reads = store.take();
    assert_eq!(config_reads(&reads), every, "ingest: {reads:?}");
    let ann = crate::state::lookup(&store, "user_id:ann").await.unwrap().expect("the batch was applied");
    assert_eq!(ann.profile.traits["nationalId"].value, json!("X1"), "sealed with the vault and opened");
    store.take();

    let report = crate::tagging::full_recompute(&store, now()).await.unwrap();
    let reads = store.take();
    assert_eq!(config_reads(&reads), every, "full recompute: {reads:?}");
    assert_eq!(report.audiences["big_spenders"].size, 1, "the recompute ran on the configuration: {report:?}");
    assert_eq!(report.products, 1, "product tags read config/products.json: {report:?}");
}
