//! Helpers for the library's own tests.

use serde_json::{Value, json};
use shared::collect::{CollectRequest, Collected, Endpoint, collect};
use shared::ids::Entropy;
use shared::source::{Sources, new_source};
use shared::time::UtcTime;

use crate::storage::{ObjectStore, PutOptions};

/// Runs `events` through the real collect pipeline at `now` and stores them as one raw object; returns its key.
pub(crate) async fn put_batch<S: ObjectStore>(store: &S, seed: u8, events: Value, now: UtcTime) -> String {
    let (raw, failed) = collect_into(store, seed, events, now).await;
    assert!(failed.is_none(), "every event is accepted");
    raw.expect("accepted events")
}

/// [`put_batch`] through the source `source_id` instead of `web`.
pub(crate) async fn put_batch_from<S: ObjectStore>(
    store: &S,
    source_id: &str,
    seed: u8,
    events: Value,
    now: UtcTime,
) -> String {
    let (raw, failed) = collect_through(store, source_id, seed, events, now).await;
    assert!(failed.is_none(), "every event is accepted");
    raw.expect("accepted events")
}

/// Runs `events` through the real collect pipeline at `now` and stores what the collector would: the accepted
/// events and the rejected ones. Returns the raw and the failed object's keys.
pub(crate) async fn collect_into<S: ObjectStore>(
    store: &S,
    seed: u8,
    events: Value,
    now: UtcTime,
) -> (Option<String>, Option<String>) {
    collect_through(store, "web", seed, events, now).await
}

async fn collect_through<S: ObjectStore>(
    store: &S,
    source_id: &str,
    seed: u8,
    events: Value,
    now: UtcTime,
) -> (Option<String>, Option<String>) {
    let (source, key) = new_source(source_id, source_id, &mut Entropy::from_seed([1; 32]));
    let mut sources = Sources::default();
    sources.add(source).unwrap();
    let body = json!({"batch": events, "writeKey": key}).to_string();
    let Collected::Kept(batch) = collect(
        &CollectRequest::new(Endpoint::Batch, body.as_bytes()),
        &sources,
        now,
        &mut Entropy::from_seed([seed; 32]),
    ) else {
        panic!("rejected")
    };
    let mut keys = (None, None);
    if let Some((object_key, bytes)) = batch.accepted_object() {
        store.put(&object_key, bytes, PutOptions::ndjson_gz()).await.unwrap();
        keys.0 = Some(object_key);
    }
    if let Some((object_key, bytes)) = batch.failed_object() {
        store.put(&object_key, bytes, PutOptions::ndjson_gz()).await.unwrap();
        keys.1 = Some(object_key);
    }
    keys
}
