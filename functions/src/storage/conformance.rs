//! The behaviour every [`ObjectStore`] adapter must show, as one check run against each: the folder store in
//! its unit tests, the S3 adapter against a real S3-compatible server in the end-to-end tests.

use super::{Condition, ObjectStore, PutOptions, StoreError};

/// Increments per racing writer in [`check`].
const INCREMENTS: u64 = 10;

/// Adds one to the number stored at `key`, `times` times, by compare-and-swap; returns how often it was fenced.
async fn increment<S: ObjectStore>(store: &S, key: &str, times: u64) -> u64 {
    let mut fenced = 0;
    for _ in 0..times {
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(attempts <= 1_000, "an increment of {key} was fenced 1,000 times in a row");
            let current = store.get(key).await.expect("get").expect("counter exists");
            let value: u64 = std::str::from_utf8(&current.body).expect("UTF-8").parse().expect("a number");
            let condition = Condition::IfMatch(current.etag);
            let next = (value + 1).to_string().into_bytes();
            match store.put(key, next, PutOptions { condition, ..PutOptions::json() }).await {
                Ok(_) => break,
                Err(StoreError::PreconditionFailed) => fenced += 1,
                Err(e) => panic!("increment of {key}: {e}"),
            }
        }
    }
    fenced
}

/// Runs the contract against `store`, under keys starting with `prefix/`. Panics on the first violation.
pub async fn check<S: ObjectStore>(store: &S, prefix: &str) {
    let key = format!("{prefix}/state/manifest.json");
    assert!(store.get(&key).await.expect("get of a missing key").is_none(), "missing key reads as None");

    // Create-only: the first writer wins, the second is fenced.
    let etag1 = store
        .put(&key, b"v1".to_vec(), PutOptions { condition: Condition::IfNoneMatch, ..PutOptions::json() })
        .await
        .expect("first create");
    let second = store
        .put(&key, b"v1-other".to_vec(), PutOptions { condition: Condition::IfNoneMatch, ..PutOptions::json() })
        .await;
    assert!(matches!(second, Err(StoreError::PreconditionFailed)), "second create must be fenced, got {second:?}");

    let read = store.get(&key).await.expect("get").expect("object exists");
    assert_eq!(read.body, b"v1");
    assert_eq!(read.etag, etag1, "the ETag read is the one written");

    // Compare-and-swap: the current ETag wins, a stale one is fenced.
    let etag2 = store
        .put(&key, b"v2".to_vec(), PutOptions { condition: Condition::IfMatch(etag1.clone()), ..PutOptions::json() })
        .await
        .expect("swap with the current ETag");
    assert_ne!(etag1, etag2);
    let stale = store
        .put(&key, b"v3".to_vec(), PutOptions { condition: Condition::IfMatch(etag1), ..PutOptions::json() })
        .await;
    assert!(matches!(stale, Err(StoreError::PreconditionFailed)), "a stale ETag must be fenced, got {stale:?}");
    assert_eq!(store.get(&key).await.expect("get").expect("exists").body, b"v2");

    // Racing read-modify-write cycles on one object: every increment lands exactly once.
    let counter = format!("{prefix}/state/counter");
    store
        .put(&counter, b"0".to_vec(), PutOptions { condition: Condition::IfNoneMatch, ..PutOptions::json() })
        .await
        .expect("create counter");
    let (a, b, c, d) = tokio::join!(
        increment(store, &counter, INCREMENTS),
        increment(store, &counter, INCREMENTS),
        increment(store, &counter, INCREMENTS),
        increment(store, &counter, INCREMENTS),
    );
    let read = store.get(&counter).await.expect("get").expect("counter exists");
    assert_eq!(read.body, (4 * INCREMENTS).to_string().as_bytes(), "no increment lost ({} fenced)", a + b + c + d);

    // Ranges: a slice, one cut short by the end, one past the end, a missing object.
    let ranged = format!("{prefix}/lake/part");
    store.put(&ranged, b"abcdefghij".to_vec(), PutOptions::json()).await.expect("put");
    assert_eq!(store.get_range(&ranged, 2, 3).await.expect("range").as_deref(), Some(&b"cde"[..]));
    assert_eq!(store.get_range(&ranged, 8, 10).await.expect("range").as_deref(), Some(&b"ij"[..]));
    assert_eq!(store.get_range(&ranged, 20, 4).await.expect("range").as_deref(), Some(&b""[..]));
    assert_eq!(store.get_range(&format!("{prefix}/lake/none"), 0, 4).await.expect("range"), None);

    // Unconditional writes replace; listing is by prefix, sorted; deletes are idempotent.
    store.put(&format!("{prefix}/raw/b"), b"b".to_vec(), PutOptions::json()).await.expect("put b");
    store.put(&format!("{prefix}/raw/a"), b"a".to_vec(), PutOptions::json()).await.expect("put a");
    store.put(&format!("{prefix}/raw/a"), b"aa".to_vec(), PutOptions::json()).await.expect("replace a");
    store.put(&format!("{prefix}/rawx/c"), b"c".to_vec(), PutOptions::json()).await.expect("put c");
    let listed = store.list(&format!("{prefix}/raw/")).await.expect("list");
    let keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, [format!("{prefix}/raw/a"), format!("{prefix}/raw/b")]);
    assert_eq!(listed[0].size, 2);
    let partial = store.list(&format!("{prefix}/ra")).await.expect("list by partial name");
    assert_eq!(partial.len(), 3, "a prefix need not end at a folder boundary");
    store.delete(&format!("{prefix}/raw/a")).await.expect("delete");
    store.delete(&format!("{prefix}/raw/a")).await.expect("delete again");
    assert!(store.get(&format!("{prefix}/raw/a")).await.expect("get").is_none());
}

/// A store that holds writes of one key until a number of writers have all reached them: armed with `n`, the
/// next `n` writes of `key` wait for each other, then go on in turn. Tests of fencing use it on the manifest, so
/// that racing writers have all read the same version before any commits, whatever the machine's scheduling.
#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    key: String,
    armed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    barrier: std::sync::Arc<tokio::sync::Barrier>,
}

impl<S: ObjectStore> Gated<S> {
    /// Holds the next `writers` writes of `key` until all of them have arrived.
    pub fn new(inner: S, key: &str, writers: usize) -> Self {
        Self {
            inner,
            key: key.to_string(),
            armed: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(writers)),
            barrier: std::sync::Arc::new(tokio::sync::Barrier::new(writers)),
        }
    }
}

impl<S: ObjectStore> ObjectStore for Gated<S> {
    async fn put(&self, key: &str, body: Vec<u8>, options: PutOptions) -> Result<String, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if key == self.key && self.armed.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
            self.barrier.wait().await;
        }
        self.inner.put(key, body, options).await
    }
    async fn get(&self, key: &str) -> Result<Option<super::Object>, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_range(key, start, len).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<super::ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

/// A store that counts the reads of each key (whole and ranged): tests of how often something is read use it.
#[derive(Clone)]
pub struct Recording<S> {
    inner: S,
    reads: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, usize>>>,
}

impl<S: ObjectStore> Recording<S> {
    /// Counts the reads made through it of `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner, reads: Default::default() }
    }

    /// The reads of every key read since the last call (and starts counting afresh).
    pub fn take(&self) -> std::collections::BTreeMap<String, usize> {
        std::mem::take(&mut *self.reads.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn count(&self, key: &str) {
        *self.reads.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_string()).or_default() += 1;
    }
}

impl<S: ObjectStore> ObjectStore for Recording<S> {
    async fn put(&self, key: &str, body: Vec<u8>, options: PutOptions) -> Result<String, StoreError> {
        self.inner.put(key, body, options).await
    }
    async fn get(&self, key: &str) -> Result<Option<super::Object>, StoreError> {
        self.count(key);
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.count(key);
        self.inner.get_range(key, start, len).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<super::ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}
