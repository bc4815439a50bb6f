//! Configuration files in the store (`config/*.json`): read when needed, so that changes apply without a
//! restart.

use serde::de::DeserializeOwned;

use crate::Error;
use crate::storage::{Condition, ObjectStore, PutOptions, StoreError};

/// `key` decoded, or `None` when absent; a file that does not parse is a configuration error naming it.
pub async fn read<S: ObjectStore, T: DeserializeOwned>(store: &S, key: &str) -> Result<Option<T>, Error> {
    match store.get(key).await? {
        None => Ok(None),
        Some(object) => serde_json::from_slice(&object.body)
            .map(Some)
            .map_err(|e| Error::Config(shared::Error::Config(format!("{key}: {e}")))),
    }
}

/// How many times [`update`] re-reads and re-applies a change when other writers keep winning.
const UPDATE_ATTEMPTS: usize = 8;

/// A read-modify-write of the object at `key` under compare-and-swap: `change` sees the current bytes (`None`
/// when absent) and returns the new bytes and its result; when another writer changed the object meanwhile,
/// the write is fenced and `change` runs again on the new bytes. Nothing is lost between two editors.
pub async fn update<S, R, E>(
    store: &S,
    key: &str,
    content_type: &'static str,
    mut change: impl FnMut(Option<&[u8]>) -> Result<(Vec<u8>, R), E>,
) -> Result<R, E>
where
    S: ObjectStore,
    E: From<Error>,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let current = store.get(key).await.map_err(Error::from)?;
        let (condition, bytes) = match &current {
            Some(object) => (Condition::IfMatch(object.etag.clone()), Some(object.body.as_slice())),
            None => (Condition::IfNoneMatch, None),
        };
        let (body, result) = change(bytes)?;
        let options = PutOptions { content_type: Some(content_type), condition };
        match store.put(key, body, options).await {
            Ok(_) => return Ok(result),
            Err(StoreError::PreconditionFailed) => continue,
            Err(e) => return Err(Error::from(e).into()),
        }
    }
    Err(Error::Store(StoreError::Unavailable(format!("{key} kept changing for {UPDATE_ATTEMPTS} attempts"))).into())
}

/// The lambdas' clock: now, as the core's time type.
pub fn now() -> Result<shared::time::UtcTime, Error> {
    let ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    shared::time::UtcTime::from_unix_millis(ms).ok_or_else(|| Error::Machine("the clock is out of range".into()))
}

/// 32 bytes from the operating system's CSPRNG (ids must not be predictable).
pub fn random_seed() -> Result<[u8; 32], Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Machine(format!("no randomness from the operating system: {e}")))?;
    Ok(seed)
}
