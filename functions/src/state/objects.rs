//! Reading and writing state objects: JSON, gzip, content-hash names, create-only writes.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::state::shards::{Delta, Shard, ShardRef};
use crate::storage::{Condition, ObjectStore, PutOptions, StoreError};

/// Object reads and writes in flight at once per transaction.
pub(super) const PARALLEL_IO: usize = 32;

pub(super) fn corrupt(what: &str) -> impl Fn(serde_json::Error) -> Error + '_ {
    move |e| Error::Corrupt(format!("{what}: {e}"))
}

/// Shard `n` of a kind as of `deltas`: its base object with every newer delta applied.
pub(super) async fn read_shard<S: ObjectStore, T: Shard>(
    store: &S,
    base: Option<ShardRef>,
    deltas: &[(u64, Arc<Delta>)],
    n: u32,
) -> Result<T, Error> {
    let (mut shard, since) = match base {
        Some(ShardRef { key, version, .. }) => (read_json::<S, T>(store, &key).await?, version),
        None => (T::default(), 0),
    };
    for (version, delta) in deltas {
        if *version > since {
            shard.apply(delta, n).map_err(corrupt("applying a delta"))?;
        }
    }
    Ok(shard)
}

/// Reads and decodes a gzipped JSON state object that the manifest names.
pub(super) async fn read_json<S: ObjectStore, T: DeserializeOwned>(store: &S, key: &str) -> Result<T, Error> {
    let object = store
        .get(key)
        .await?
        .ok_or_else(|| Error::Corrupt(format!("the manifest names {key}, which does not exist")))?;
    let json = shared::storage::gunzip(&object.body).map_err(|e| Error::Corrupt(format!("{key}: {e}")))?;
    serde_json::from_slice(&json).map_err(|e| Error::Corrupt(format!("{key}: {e}")))
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Corrupt(format!("serializing state: {e}")))
}

pub(super) fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::Corrupt(format!("a state I/O task failed: {e}"))
}

/// Writes a state object create-only. The same name already there holds the same content (names carry the
/// content's hash): a retry after a crash.
pub(super) async fn write_once<S: ObjectStore>(store: &S, key: &str, body: Vec<u8>) -> Result<(), Error> {
    let options = PutOptions { content_type: Some("application/gzip"), condition: Condition::IfNoneMatch };
    match store.put(key, body, options).await {
        Ok(_) | Err(StoreError::PreconditionFailed) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Gzips `json` and names it `state/v1/<folder>/<version>-<content hash>.json.gz`.
pub(super) fn state_object(folder: &str, version: u64, json: &[u8]) -> (String, Vec<u8>) {
    let body = shared::storage::gzip(json);
    let hash = &shared::ids::sha256_hex_bytes(&body)[..16];
    (format!("state/v1/{folder}/{version:012}-{hash}.json.gz"), body)
}
