//! Suppression: the identifiers whose events are dropped (`privacy/v1/suppressed.json`, hashed with the
//! deployment's identifier key), and the count of events dropped. The collectors, ingest and the lake check
//! events against it; privacy requests (`suppress`, `unsuppress`, and erasures while they run) change it.

use shared::ids::Entropy;
use shared::time::UtcTime;

use crate::Error;
use crate::storage::{ObjectStore, PutOptions};

/// The suppression list's object.
pub const SUPPRESSED: &str = shared::access::SUPPRESSED_KEY;
/// Where counts of dropped events go.
pub const DROPPED: &str = shared::access::DROPPED_PREFIX;

use shared::access::{IDENTIFIER_KEY_OBJECT, IdentifierKey};
/// The suppression list (`shared::access::Suppression`): hashes of identity keys whose events are dropped.
pub use shared::access::{Suppression, SuppressionCheck};

/// The current suppression list (empty when there is none).
pub async fn load_suppression<S: ObjectStore>(store: &S) -> Result<Suppression, Error> {
    Ok(crate::config::read(store, SUPPRESSED).await?.unwrap_or_default())
}

/// The suppression list with the deployment's identifier key, as the collectors and ingest check events;
/// `None` when nothing is suppressed (the key is then not needed).
pub async fn load_suppression_check<S: ObjectStore>(store: &S) -> Result<Option<SuppressionCheck>, Error> {
    let list = load_suppression(store).await?;
    if list.is_empty() {
        return Ok(None);
    }
    Ok(Some(SuppressionCheck { list, key: hash_key(store).await? }))
}

/// The deployment's identifier key (`keys/v1/identifiers.key`), made on first use: 32 bytes of the operating
/// system's CSPRNG, written create-only, so two processes making it at once end with the same key.
pub async fn hash_key<S: ObjectStore>(store: &S) -> Result<IdentifierKey, Error> {
    for _ in 0..3 {
        if let Some(object) = store.get(IDENTIFIER_KEY_OBJECT).await? {
            return Ok(IdentifierKey::from_stored(&object.body)?);
        }
        let key = IdentifierKey::from_bytes(crate::config::random_seed()?);
        let options =
            PutOptions { content_type: Some("text/plain"), condition: crate::storage::Condition::IfNoneMatch };
        match store.put(IDENTIFIER_KEY_OBJECT, key.to_stored(), options).await {
            Ok(_) => return Ok(key),
            Err(crate::storage::StoreError::PreconditionFailed) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(Error::Corrupt(format!("{IDENTIFIER_KEY_OBJECT} could not be read or made")))
}

/// Changes the suppression list under compare-and-swap.
pub async fn update_suppression<S: ObjectStore>(store: &S, change: impl Fn(&mut Suppression)) -> Result<(), Error> {
    crate::config::update(store, SUPPRESSED, "application/json", |bytes| {
        let mut list: Suppression = match bytes {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| Error::Config(shared::Error::Config(format!("{SUPPRESSED}: {e}"))))?,
            None => Suppression::default(),
        };
        change(&mut list);
        let body = serde_json::to_vec_pretty(&list).map_err(Error::encoding)?;
        Ok::<_, Error>((body, ()))
    })
    .await
}

/// Records `count` events dropped by suppression at `now`.
pub async fn count_dropped<S: ObjectStore>(store: &S, count: usize, now: UtcTime) -> Result<(), Error> {
    let id = Entropy::from_seed(crate::config::random_seed()?).ulid(now);
    let (key, body) = shared::access::dropped_record(count, now, id);
    store.put(&key, body, PutOptions::json()).await?;
    Ok(())
}

/// Events dropped by suppression so far.
pub async fn dropped_total<S: ObjectStore>(store: &S) -> Result<u64, Error> {
    let mut total = 0;
    for meta in store.list(DROPPED).await? {
        if let Some(object) = store.get(&meta.key).await?
            && let Ok(value) = serde_json::from_slice::<serde_json::Value>(&object.body)
        {
            total += value["dropped"].as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}
