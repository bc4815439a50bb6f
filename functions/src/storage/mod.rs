//! The storage port: the few object-store operations the handlers need, with compare-and-swap.
//!
//! Adapters: [`S3Store`] (AWS S3 or any S3-compatible server) and [`FsStore`] (a local folder, the embedded
//! default of `cdp up`). Both honour the same conditions, so fencing behaves the same on a laptop and in AWS.

pub mod aws;
mod fs;
mod s3;

use std::future::Future;

pub use fs::{FsStore, create_dirs, private_file};
pub use s3::{S3Settings, S3Store};

/// A condition on a write, as S3's conditional requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Condition {
    /// Write unconditionally.
    #[default]
    None,
    /// Create only: fail with [`StoreError::PreconditionFailed`] if the key exists (`If-None-Match: *`).
    IfNoneMatch,
    /// Replace only the version with this ETag (`If-Match`).
    IfMatch(String),
}

/// How to write an object.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// MIME type of the body.
    pub content_type: Option<&'static str>,
    /// The write's condition.
    pub condition: Condition,
}

impl PutOptions {
    /// Gzip NDJSON, created only if absent (collector objects have unique names; a collision is a bug).
    pub fn ndjson_gz() -> Self {
        Self { content_type: Some("application/x-ndjson+gzip"), condition: Condition::IfNoneMatch }
    }

    /// JSON, written unconditionally.
    pub fn json() -> Self {
        Self { content_type: Some("application/json"), condition: Condition::None }
    }
}

/// An object read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its bytes.
    pub body: Vec<u8>,
    /// Its version tag, for [`Condition::IfMatch`].
    pub etag: String,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// What a store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A write's condition did not hold: someone else wrote first. The caller re-reads and retries.
    #[error("precondition failed: the object changed or already exists")]
    PreconditionFailed,
    /// The key is not acceptable (our bug: keys come from `shared::storage`).
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// The store could not be reached or answered with an error (an outside service's fault; retryable).
    #[error("object store unavailable: {0}")]
    Unavailable(String),
}

/// The object-store operations handlers use.
pub trait ObjectStore: Send + Sync + 'static {
    /// Writes `body` at `key`; returns the new ETag.
    fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        options: PutOptions,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
    /// Reads `key`, or `None` if it does not exist.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Object>, StoreError>> + Send;
    /// Reads `len` bytes of `key` from `start` (fewer where the object ends first), or `None` if it does not
    /// exist: the footer and filters of a Parquet part without the rest of it.
    fn get_range(
        &self,
        key: &str,
        start: u64,
        len: u64,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Lists keys starting with `prefix`, in lexicographic order.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<ObjectMeta>, StoreError>> + Send;
    /// Deletes `key`; deleting a missing key is not an error.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Rejects keys that could escape a folder or that S3 would treat differently from a folder.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with('/')
        && !key.contains('\\')
        && !key.contains('\0')
        && key.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if ok { Ok(()) } else { Err(StoreError::InvalidKey(key.to_string())) }
}

pub mod conformance;
