//! Committing a transaction: a delta object of the entries it changed, or a fold of the outstanding deltas
//! into whole shards ([`Compaction`]), then the manifest under compare-and-swap.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Transaction;
use crate::Error;
use crate::state::objects::{PARALLEL_IO, read_shard, state_object, task_failed, to_json, write_once};
use crate::state::shards::{
    BaseRef, DedupShard, Delta, DeltaRef, IdsShard, Kind, MANIFEST_KEY, ProfilesShard, RawEntry, Shard, ShardRef,
    shard_name, shard_of,
};
use crate::storage::{Condition, ObjectStore, PutOptions};

/// What a commit wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// The manifest's new version.
    pub version: u64,
    /// Whether this commit folded the deltas into whole shards.
    pub compacted: bool,
    /// Whole shard objects written (by a compaction).
    pub shards_written: usize,
    /// Bytes of the delta object written (0 when compacting).
    pub delta_bytes: usize,
    /// Bytes written in all (shards or delta, and the manifest).
    pub bytes_written: usize,
}

impl<'s, S: ObjectStore + Clone> Transaction<'s, S> {
    /// The changed entries with their values now, by shard, moved out of the view (the commit that calls it
    /// consumes the transaction).
    fn take_delta(&mut self) -> Result<Delta, Error> {
        let mut delta = Delta::default();
        for (kind, key) in &self.changed {
            let n = shard_of(key, self.count(*kind));
            let key = key.clone();
            match kind {
                Kind::Ids => {
                    let value = self.view.ids.remove(&key).flatten();
                    delta.ids.entry(n).or_default().insert(key, value);
                }
                Kind::Profiles => {
                    let mut entry = self.view.profiles.remove(&key).unwrap_or_default();
                    if let (Some(vault), Some(stored)) = (&self.vault, &mut entry.profile) {
                        vault.seal_traits(stored.profile.traits.iter_mut())?;
                    }
                    let value =
                        RawEntry::encode(entry).map_err(|e| Error::Corrupt(format!("serializing state: {e}")))?;
                    delta.profiles.entry(n).or_default().insert(key, value);
                }
                Kind::Dedup => {
                    let value = self.view.dedup.get(&key).copied().flatten();
                    delta.dedup.entry(n).or_default().insert(key, value);
                }
            }
        }
        Ok(delta)
    }

    /// Writes this commit's changes — as one delta object, or, when the compaction policy says so, by folding
    /// every outstanding delta and these changes into whole shard objects — then moves the manifest with
    /// compare-and-swap. A concurrent commit since [`begin`](Self::begin) makes this fail with
    /// [`crate::storage::StoreError::PreconditionFailed`]; the caller starts over.
    pub async fn commit(mut self) -> Result<CommitStats, Error> {
        let version = self.manifest.version + 1;
        let mut stats = CommitStats { version, ..CommitStats::default() };
        let delta = self.take_delta()?;
        let mut compact = self.manifest.deltas.len() + 1 > self.compaction.max_deltas;
        if !compact {
            let (key, body) = state_object("deltas", version, &to_json(&delta)?);
            let outstanding = self.manifest.delta_bytes() + body.len() as u64;
            let base = self.manifest.base_bytes().max(1);
            compact = outstanding > self.compaction.min_fold_bytes
                && outstanding as f64 / base as f64 > self.compaction.max_delta_ratio;
            if !compact {
                self.manifest.deltas.push(DeltaRef {
                    key: key.clone(),
                    version,
                    bytes: body.len() as u64,
                    ids: delta.ids.keys().copied().collect(),
                    profiles: delta.profiles.keys().copied().collect(),
                    dedup: delta.dedup.keys().copied().collect(),
                });
                stats.delta_bytes = body.len();
                stats.bytes_written += body.len();
                write_once(self.store, &key, body).await?;
            }
        }
        if compact {
            stats.compacted = true;
            self.fold(delta, version, &mut stats).await?;
        }
        self.manifest.version = version;
        let body = serde_json::to_vec(&self.manifest).map_err(Error::encoding)?;
        stats.bytes_written += body.len();
        let condition = match self.etag {
            Some(etag) => Condition::IfMatch(etag),
            None => Condition::IfNoneMatch,
        };
        self.store.put(MANIFEST_KEY, body, PutOptions { content_type: Some("application/json"), condition }).await?;
        Ok(stats)
    }

    /// Rewrites whole every shard that an outstanding delta or this commit's `delta` changes, shard by shard
    /// (memory holds a bounded number of shards), and drops the deltas.
    async fn fold(&mut self, delta: Delta, version: u64, stats: &mut CommitStats) -> Result<(), Error> {
        let mut fold: BTreeSet<(Kind, u32)> = BTreeSet::new();
        fold.extend(delta.ids.keys().map(|n| (Kind::Ids, *n)));
        fold.extend(delta.profiles.keys().map(|n| (Kind::Profiles, *n)));
        fold.extend(delta.dedup.keys().map(|n| (Kind::Dedup, *n)));
        for outstanding in &self.manifest.deltas {
            for kind in Kind::ALL {
                fold.extend(outstanding.touches(kind).iter().map(|n| (kind, *n)));
            }
        }
        let mut all: Vec<(u64, Arc<Delta>)> = self.deltas.iter().cloned().collect();
        all.push((version, Arc::new(delta)));
        let all = Arc::new(all);
        let permits = Arc::new(Semaphore::new(PARALLEL_IO));
        let mut tasks = JoinSet::new();
        let dedup_folded = fold.iter().any(|(kind, _)| *kind == Kind::Dedup);
        for (kind, n) in fold {
            let name = shard_name(kind.name(), n);
            let base = self.base.objects.get(&name).cloned();
            let (store, all, permits, horizon) = (self.store.clone(), all.clone(), permits.clone(), self.horizon);
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.map_err(|e| Error::Machine(e.to_string()))?;
                let json = match kind {
                    Kind::Ids => to_json(&read_shard::<S, IdsShard>(&store, base, &all, n).await?)?,
                    Kind::Profiles => to_json(&read_shard::<S, ProfilesShard>(&store, base, &all, n).await?)?,
                    Kind::Dedup => {
                        let mut shard = read_shard::<S, DedupShard>(&store, base, &all, n).await?;
                        if let Some(horizon) = horizon {
                            shard.expire(horizon);
                        }
                        to_json(&shard)?
                    }
                };
                let (key, body) = state_object(&name, version, &json);
                let bytes = body.len() as u64;
                write_once(&store, &key, body).await?;
                Ok::<_, Error>((name, ShardRef { key, version, bytes }))
            });
        }
        if let Some(horizon) = self.horizon.filter(|_| dedup_folded) {
            self.manifest.forgotten_before = self.manifest.forgotten_before.max(horizon);
        }
        while let Some(joined) = tasks.join_next().await {
            let (name, written) = joined.map_err(task_failed)??;
            stats.shards_written += 1;
            stats.bytes_written += written.bytes as usize;
            Arc::make_mut(&mut self.base).objects.insert(name, written);
        }
        let table = std::mem::take(Arc::make_mut(&mut self.base));
        let (key, body) = state_object("base", version, &to_json(&table)?);
        stats.bytes_written += body.len();
        let bytes = table.objects.values().map(|o| o.bytes).sum();
        self.manifest.base = Some(BaseRef { key: key.clone(), objects: table.objects.len(), bytes });
        write_once(self.store, &key, body).await?;
        self.manifest.deltas.clear();
        Ok(())
    }
}
