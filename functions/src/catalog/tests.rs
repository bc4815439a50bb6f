use serde_json::{Value, json};

use super::*;
use crate::storage::FsStore;

fn now() -> UtcTime {
    UtcTime::parse("2026-11-28T12:00:00Z").unwrap()
}

fn events(value: Value) -> Vec<CanonicalEvent> {
    value
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut e = json!({"messageId": format!("m{i}"), "sourceId": "web", "receivedAt": "2026-11-28T11:00:00.000Z",
                               "timestamp": "2026-11-28T11:00:00.000Z", "userId": "u1"});
            for (k, x) in v.as_object().unwrap() {
                e[k] = x.clone();
            }
            serde_json::from_value(e).unwrap()
        })
        .collect()
}

fn orders(n: usize) -> Vec<CanonicalEvent> {
    events(Value::Array(
        (0..n).map(|_| json!({"type": "track", "event": "Order Completed", "properties": {"revenue": 10}})).collect(),
    ))
}

async fn count(store: &FsStore) -> u64 {
    load(store).await.unwrap().sources.get("web").map_or(0, |s| s.events["Order Completed"].count)
}

#[tokio::test]
async fn parts_are_seen_at_once_and_folded_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let rules = ProfileRules::default();
    assert_eq!(load(&store).await.unwrap(), Dictionary::default());
    record(&store, "raw/v1/dt=2026-11-28/hr=11/A.ndjson.gz", &orders(2), &rules).await.unwrap();
    record(&store, "raw/v1/dt=2026-11-28/hr=11/B.ndjson.gz", &orders(3), &rules).await.unwrap();
    assert_eq!(count(&store).await, 5, "readers see the parts before any fold");
    // A retried ingest rewrites its part: still counted once.
    record(&store, "raw/v1/dt=2026-11-28/hr=11/A.ndjson.gz", &orders(2), &rules).await.unwrap();
    assert_eq!(count(&store).await, 5);

    assert_eq!(fold(&store, now()).await.unwrap(), Folded { parts: 2, more: false });
    assert!(store.list(keys::CATALOG_PENDING).await.unwrap().is_empty(), "folded parts are deleted");
    assert_eq!(count(&store).await, 5);
    assert_eq!(fold(&store, now()).await.unwrap(), Folded::default(), "nothing to fold twice");
    assert_eq!(count(&store).await, 5);

    // A late retry of an object already folded: its part is skipped (and deleted), not counted again.
    record(&store, "raw/v1/dt=2026-11-28/hr=11/B.ndjson.gz", &orders(3), &rules).await.unwrap();
    assert_eq!(count(&store).await, 5);
    assert_eq!(fold(&store, now()).await.unwrap(), Folded::default());
    assert!(store.list(keys::CATALOG_PENDING).await.unwrap().is_empty());

    // A new object after the fold.
    record(&store, "raw/v1/dt=2026-11-28/hr=12/C.ndjson.gz", &orders(1), &rules).await.unwrap();
    assert_eq!(count(&store).await, 6);
    let later = now().add_millis(FOLDED_KEPT_MS + 1).unwrap();
    assert_eq!(fold(&store, later).await.unwrap().parts, 1);
    assert_eq!(count(&store).await, 6);
    let (stored, _) = read(&store).await.unwrap();
    assert_eq!(
        stored.folded.keys().collect::<Vec<_>>(),
        ["catalog/v1/pending/raw~v1~dt=2026-11-28~hr=12~C.ndjson.gz.json"],
        "names folded more than six hours ago are forgotten"
    );
}

#[tokio::test]
async fn a_fold_stopped_before_its_deletes_counts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let rules = ProfileRules::default();
    let key = "raw/v1/dt=2026-11-28/hr=11/A.ndjson.gz";
    record(&store, key, &orders(2), &rules).await.unwrap();
    fold(&store, now()).await.unwrap();
    // As if the deletes had not happened: the part is back, and its name is remembered.
    record(&store, key, &orders(2), &rules).await.unwrap();
    record(&store, "raw/v1/dt=2026-11-28/hr=11/B.ndjson.gz", &orders(1), &rules).await.unwrap();
    let later = now().add_millis(FOLDED_KEPT_MS + 1).unwrap();
    assert_eq!(fold(&store, later).await.unwrap().parts, 1);
    assert_eq!(count(&store).await, 3);
    assert!(store.list(keys::CATALOG_PENDING).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_part_that_does_not_decode_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    record(&store, "raw/v1/dt=2026-11-28/hr=11/A.ndjson.gz", &orders(2), &ProfileRules::default()).await.unwrap();
    store.put("catalog/v1/pending/broken.json", b"{not json".to_vec(), PutOptions::json()).await.unwrap();
    assert_eq!(count(&store).await, 2);
    assert_eq!(fold(&store, now()).await.unwrap().parts, 1);
    assert_eq!(count(&store).await, 2);
}
