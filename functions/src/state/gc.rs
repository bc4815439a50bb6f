//! Deleting the state objects nothing references any more.

use crate::Error;
use crate::state::shards::ShardCounts;
use crate::state::txn::Transaction;
use crate::storage::ObjectStore;

/// Deletes the state objects (shards, deltas, base tables) that the current manifest no longer references and
/// that commits up to `up_to_version` wrote: what compactions left behind. Objects of later versions may
/// belong to a commit in progress and stay; readers still on an older manifest must have finished (callers
/// wait a grace period after `up_to_version` was current). Returns the number deleted.
pub async fn collect_garbage<S: ObjectStore + Clone>(store: &S, up_to_version: u64) -> Result<usize, Error> {
    let txn = Transaction::begin(store, ShardCounts::default()).await?;
    let mut referenced: std::collections::HashSet<&str> = txn.base.objects.values().map(|o| o.key.as_str()).collect();
    referenced.extend(txn.manifest.deltas.iter().map(|d| d.key.as_str()));
    if let Some(base) = &txn.manifest.base {
        referenced.insert(base.key.as_str());
    }
    let mut deleted = 0;
    for meta in store.list("state/v1/").await? {
        if referenced.contains(meta.key.as_str()) {
            continue;
        }
        let version =
            meta.key.rsplit('/').next().and_then(|name| name.split('-').next()).and_then(|v| v.parse::<u64>().ok());
        if version.is_some_and(|v| v <= up_to_version) {
            store.delete(&meta.key).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}
