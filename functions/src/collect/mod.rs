//! The collect handler: the core's decisions, stored before answering. Used by `cdp up`; the edge worker does
//! the same with its own HTTP client, since `aws-sdk-s3` does not run in a Worker.

mod sources;

use shared::access::SuppressionCheck;
use shared::collect::webhook::WebhookRequest;
use shared::collect::{Answer, Batch, CollectRequest, Collected, collect};
use shared::ids::Entropy;
use shared::source::{SourceSecrets, Sources};
use shared::time::UtcTime;

pub use sources::{SourcesCache, load_source_secrets, load_sources, update_source_secrets, update_sources};

use crate::storage::{ObjectStore, PutOptions};

/// What handling a request did.
#[derive(Debug)]
pub struct Handled {
    /// The HTTP answer.
    pub answer: Answer,
    /// The raw object stored, if any: what the ingest function is notified of.
    pub raw_key: Option<String>,
}

/// Runs the collect pipeline on `request` and stores what it keeps: not the events of people on the
/// `suppression` list, which are counted (`privacy/v1/dropped/`) and dropped.
///
/// Accepted and failed events are written concurrently, each as one create-only object; the answer is 200
/// only when both are durable, else 503 so the client retries (a retry may duplicate the half that was
/// written; ingest drops duplicates by messageId). `seed` is 32 bytes from the OS's CSPRNG.
pub async fn handle<S: ObjectStore>(
    store: &S,
    sources: &Sources,
    suppression: Option<&SuppressionCheck>,
    request: &CollectRequest<'_>,
    now: UtcTime,
    seed: [u8; 32],
) -> Handled {
    let mut entropy = Entropy::from_seed(seed);
    match collect(request, sources, now, &mut entropy) {
        Collected::Rejected(answer) => {
            tracing::debug!(status = answer.status, "request rejected");
            Handled { answer, raw_key: None }
        }
        Collected::Kept(batch) => store_batch(store, batch, suppression, now, &mut entropy).await,
    }
}

/// Runs an inbound webhook through its source's signature check and mapping ([`shared::collect::webhook`])
/// and stores what it keeps, as [`handle`] does.
pub async fn handle_webhook<S: ObjectStore>(
    store: &S,
    sources: &Sources,
    secrets: &SourceSecrets,
    suppression: Option<&SuppressionCheck>,
    request: &WebhookRequest<'_>,
    now: UtcTime,
    seed: [u8; 32],
) -> Handled {
    let mut entropy = Entropy::from_seed(seed);
    match shared::collect::webhook::receive(request, sources, secrets, now, &mut entropy) {
        Collected::Rejected(answer) => {
            // The reason names the header that failed, never a secret or a signature.
            tracing::info!(source = request.source_id, status = answer.status, "webhook refused");
            Handled { answer, raw_key: None }
        }
        Collected::Kept(batch) => store_batch(store, batch, suppression, now, &mut entropy).await,
    }
}

/// Stores a kept batch: not the events of people on the `suppression` list, which are counted
/// (`privacy/v1/dropped/`) and dropped; then the accepted and failed objects, concurrently.
async fn store_batch<S: ObjectStore>(
    store: &S,
    mut batch: Batch,
    suppression: Option<&SuppressionCheck>,
    now: UtcTime,
    entropy: &mut Entropy,
) -> Handled {
    // Suppressed people's events are never stored; their count is (before the answer: nothing is lost).
    let dropped = suppression.map_or(0, |list| batch.drop_suppressed(list));
    if dropped > 0 {
        let (key, body) = shared::access::dropped_record(dropped, now, entropy.ulid(now));
        if let Err(error) = store.put(&key, body, PutOptions::json()).await {
            tracing::error!(%error, "could not count the suppressed events; answering 503");
            return Handled { answer: batch.storage_failed(), raw_key: None };
        }
    }
    let accepted = batch.accepted_object();
    let raw_key = accepted.as_ref().map(|(key, _)| key.clone());
    let write = |object: Option<(String, Vec<u8>)>| async move {
        match object {
            Some((key, body)) => store.put(&key, body, PutOptions::ndjson_gz()).await.map(|_| ()).map_err(|e| (key, e)),
            None => Ok(()),
        }
    };
    let (accepted, failed) = tokio::join!(write(accepted), write(batch.failed_object()));
    match accepted.and(failed) {
        Ok(()) => {
            tracing::debug!(
                source = %batch.source_id,
                request = %batch.request_id,
                accepted = batch.accepted.len(),
                failed = batch.failed.len(),
                "batch stored"
            );
            Handled { answer: batch.answer(), raw_key }
        }
        Err((key, error)) => {
            tracing::error!(source = %batch.source_id, %key, %error, "could not store batch; answering 503");
            Handled { answer: batch.storage_failed(), raw_key: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use shared::collect::Endpoint;
    use shared::event::{CanonicalEvent, FailedEvent};
    use shared::source::new_source;
    use shared::storage::decode_ndjson_gz;

    use super::*;
    use crate::storage::FsStore;

    const MIXED: &str = include_str!("../../../tests/fixtures/mixed-valid-invalid-batch.json");

    fn setup() -> (tempfile::TempDir, FsStore, Sources, String) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let (source, key) = new_source("web", "Web", &mut Entropy::from_seed([4; 32]));
        let mut sources = Sources::default();
        sources.add(source).unwrap();
        (dir, store, sources, key)
    }

    fn now() -> UtcTime {
        UtcTime::parse("2026-11-28T12:00:00Z").unwrap()
    }

    #[tokio::test]
    async fn stores_accepted_and_failed_before_answering() {
        let (_dir, store, sources, key) = setup();
        let body = MIXED.replacen('{', &format!("{{\"writeKey\":\"{key}\","), 1);
        let answer =
            handle(&store, &sources, None, &CollectRequest::new(Endpoint::Batch, body.as_bytes()), now(), [1; 32])
                .await
                .answer;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let raw = store.list("raw/v1/dt=2026-11-28/hr=12/").await.unwrap();
        let failed = store.list("failed/v1/dt=2026-11-28/hr=12/").await.unwrap();
        assert_eq!((raw.len(), failed.len()), (1, 1));
        let events: Vec<CanonicalEvent> =
            decode_ndjson_gz(&store.get(&raw[0].key).await.unwrap().unwrap().body).unwrap();
        assert_eq!(events.len(), 5);
        let bad: Vec<FailedEvent> = decode_ndjson_gz(&store.get(&failed[0].key).await.unwrap().unwrap().body).unwrap();
        assert_eq!(bad.len(), 5);
    }

    #[tokio::test]
    async fn a_rejected_request_stores_nothing() {
        let (_dir, store, sources, _key) = setup();
        let answer =
            handle(&store, &sources, None, &CollectRequest::new(Endpoint::Batch, MIXED.as_bytes()), now(), [1; 32])
                .await
                .answer;
        assert_eq!(answer.status, 401);
        assert!(store.list("raw/").await.unwrap().is_empty());
        assert!(store.list("failed/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_storage_failure_is_503() {
        let (dir, store, sources, key) = setup();
        std::fs::write(dir.path().join("raw"), b"a file where the folder should be").unwrap();
        let body = MIXED.replacen('{', &format!("{{\"writeKey\":\"{key}\","), 1);
        let answer =
            handle(&store, &sources, None, &CollectRequest::new(Endpoint::Batch, body.as_bytes()), now(), [1; 32])
                .await
                .answer;
        assert_eq!(answer.status, 503);
        assert!(answer.body.contains("storage_unavailable"));
    }
}
