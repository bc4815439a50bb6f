//! Helpers for the library's own tests.

use serde_json::{Value, json};
use shared::collect::{CollectRequest, Collected, Endpoint, collect};
use shared::ids::Entropy;
use shared::source::{Sources, new_source};
use shared::time::UtcTime;

use crate::storage::{ObjectStore, PutOptions};

/// Runs `events` through the real collect pipeline at `now` and stores them as one raw object; returns its key.
pub(crate) async fn put_batch<S: ObjectStore>(store: &S, seed: u8, events: Value, now: UtcTime) -> String {
    let (source, key) = new_source("web", "Web", &mut Entropy::from_seed([1; 32]));
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
    assert!(batch.failed.is_empty(), "{:?}", batch.failed);
    let (object_key, bytes) = batch.accepted_object().unwrap();
    store.put(&object_key, bytes, PutOptions::ndjson_gz()).await.unwrap();
    object_key
}
