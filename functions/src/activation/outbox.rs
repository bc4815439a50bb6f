//! The delivery outbox (`deliveries/v1/outbox/<ulid>.ndjson.gz`): producers (ingest, the full recompute,
//! erasures) put messages here, one object per batch, and the dispatcher takes them in order. A producer
//! stages its messages before its state commit and withdraws them if the commit does not happen
//! ([`commit_staged`]), so a delivery is never lost and a batch that did not commit delivers nothing new.

use shared::activation::lane::Message;
use shared::ids::Entropy;
use shared::time::UtcTime;

use crate::error::Error;
use crate::state::{CommitStats, Transaction};
use crate::storage::{ObjectStore, PutOptions};

/// Messages waiting for the dispatcher.
pub const OUTBOX: &str = "deliveries/v1/outbox/";

/// Writes `messages` to the outbox as one object; the dispatcher picks it up (in the cloud, the object's
/// notification triggers the activation function). Returns the key, or `None` when there was nothing to write.
pub async fn enqueue<S: ObjectStore>(
    store: &S,
    messages: &[Message],
    now: UtcTime,
    entropy: &mut Entropy,
) -> Result<Option<String>, Error> {
    if messages.is_empty() {
        return Ok(None);
    }
    let key = format!("{OUTBOX}{}.ndjson.gz", entropy.ulid(now));
    store.put(&key, shared::storage::encode_ndjson_gz(messages), PutOptions::ndjson_gz()).await?;
    Ok(Some(key))
}

/// Stages a producer's messages before its state commit: writes them to the outbox (nothing when there are
/// none) and returns the key, for [`withdraw`] if the commit does not happen. A crash in between repeats a
/// delivery (with the same item ids, which partners deduplicate), never loses one.
pub async fn stage<S: ObjectStore>(store: &S, messages: &[Message], now: UtcTime) -> Result<Option<String>, Error> {
    if messages.is_empty() {
        return Ok(None);
    }
    let mut entropy = Entropy::from_seed(crate::config::random_seed()?);
    enqueue(store, messages, now, &mut entropy).await
}

/// Removes a staged outbox object whose commit did not happen. Left behind (the delete failed), it delivers
/// items of a batch that did not commit; the re-run makes the same items, so partners see them once by id.
pub async fn withdraw<S: ObjectStore>(store: &S, staged: Option<&str>) {
    if let Some(key) = staged
        && let Err(error) = store.delete(key).await
    {
        tracing::warn!(%key, %error, "could not withdraw an outbox object");
    }
}

/// Stages `messages`, then commits `txn`; the messages are withdrawn when the commit does not happen. `Ok(None)`:
/// another writer committed first (run again on the new state, [`crate::state::Attempts`]).
pub async fn commit_staged<S: ObjectStore + Clone>(
    store: &S,
    txn: Transaction<'_, S>,
    messages: &[Message],
    now: UtcTime,
) -> Result<Option<CommitStats>, Error> {
    let staged = stage(store, messages, now).await?;
    let committed = crate::state::fenced(txn.commit().await);
    if !matches!(committed, Ok(Some(_))) {
        withdraw(store, staged.as_deref()).await;
    }
    committed
}
