//! One batch's read-modify-write of the state, committed by compare-and-swap on the manifest.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::event::CanonicalEvent;
use shared::identity::{IdKey, IdentityGraph, ProfileId};
use shared::profile::Profile;
use shared::time::UtcTime;

use super::shards::{
    DedupShard, IdsShard, MANIFEST_KEY, Manifest, ProfilesShard, ShardCounts, StoredProfile, shard_name, shard_of,
};
use crate::Error;
use crate::storage::{Condition, ObjectStore, PutOptions, StoreError};

/// What a commit wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// The manifest's new version.
    pub version: u64,
    /// Shard objects written.
    pub shards_written: usize,
    /// Bytes written (shards and manifest).
    pub bytes_written: usize,
}

/// A batch's view of the state: the manifest it started from and the shards it loaded or changed.
pub struct Transaction<'s, S: ObjectStore + Clone> {
    store: &'s S,
    manifest: Manifest,
    etag: Option<String>,
    ids: BTreeMap<u32, IdsShard>,
    profiles: BTreeMap<u32, ProfilesShard>,
    dedup: BTreeMap<u32, DedupShard>,
    dirty: BTreeSet<(&'static str, u32)>,
}

impl<'s, S: ObjectStore + Clone> Transaction<'s, S> {
    /// Starts from the current manifest (a new, empty state with `counts` if there is none).
    pub async fn begin(store: &'s S, counts: ShardCounts) -> Result<Self, Error> {
        let (manifest, etag) = match store.get(MANIFEST_KEY).await? {
            Some(object) => {
                let manifest: Manifest =
                    serde_json::from_slice(&object.body).map_err(|e| Error::Corrupt(format!("{MANIFEST_KEY}: {e}")))?;
                (manifest, Some(object.etag))
            }
            None => (Manifest { shards: counts, ..Manifest::default() }, None),
        };
        Ok(Self {
            store,
            manifest,
            etag,
            ids: BTreeMap::new(),
            profiles: BTreeMap::new(),
            dedup: BTreeMap::new(),
            dirty: BTreeSet::new(),
        })
    }

    /// The manifest this transaction started from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    async fn read<T: DeserializeOwned + Default>(store: &S, manifest: &Manifest, name: &str) -> Result<T, Error> {
        let Some(key) = manifest.objects.get(name) else { return Ok(T::default()) };
        let object = store
            .get(key)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("the manifest names {key}, which does not exist")))?;
        let json = shared::storage::gunzip(&object.body).map_err(|e| Error::Corrupt(format!("{key}: {e}")))?;
        serde_json::from_slice(&json).map_err(|e| Error::Corrupt(format!("{key}: {e}")))
    }

    async fn ids_shard(&mut self, n: u32) -> Result<&mut IdsShard, Error> {
        if !self.ids.contains_key(&n) {
            let shard = Self::read(self.store, &self.manifest, &shard_name("ids", n)).await?;
            self.ids.insert(n, shard);
        }
        Ok(self.ids.entry(n).or_default())
    }

    async fn profiles_shard(&mut self, n: u32) -> Result<&mut ProfilesShard, Error> {
        if !self.profiles.contains_key(&n) {
            let shard = Self::read(self.store, &self.manifest, &shard_name("profiles", n)).await?;
            self.profiles.insert(n, shard);
        }
        Ok(self.profiles.entry(n).or_default())
    }

    async fn dedup_shard(&mut self, n: u32) -> Result<&mut DedupShard, Error> {
        if !self.dedup.contains_key(&n) {
            let shard = Self::read(self.store, &self.manifest, &shard_name("dedup", n)).await?;
            self.dedup.insert(n, shard);
        }
        Ok(self.dedup.entry(n).or_default())
    }

    /// Keeps the events whose messageId was not seen within `window_ms` before `now` (nor earlier in this
    /// batch), and remembers them. Exact: a real event is never dropped for looking like another.
    pub async fn fresh(
        &mut self,
        events: Vec<CanonicalEvent>,
        now: UtcTime,
        window_ms: i64,
    ) -> Result<Vec<CanonicalEvent>, Error> {
        let count = self.manifest.shards.dedup;
        let horizon = now.unix_millis() - window_ms;
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let n = shard_of(&event.message_id, count);
            let shard = self.dedup_shard(n).await?;
            match shard.seen.get(&event.message_id) {
                Some(at) if *at >= horizon => continue,
                _ => {
                    shard.seen.insert(event.message_id.clone(), event.received_at.unix_millis());
                    self.dirty.insert(("dedup", n));
                    out.push(event);
                }
            }
        }
        // Forget what fell out of the window, in the shards being rewritten anyway.
        for (kind, n) in self.dirty.clone() {
            if kind == "dedup"
                && let Some(shard) = self.dedup.get_mut(&n)
            {
                shard.seen.retain(|_, at| *at >= horizon);
            }
        }
        Ok(out)
    }

    /// The part of the identity graph and the profiles that linking `keys` can touch.
    pub async fn graph_for(
        &mut self,
        keys: &BTreeSet<IdKey>,
    ) -> Result<(IdentityGraph, BTreeMap<ProfileId, Profile>), Error> {
        let count = self.manifest.shards.ids;
        let mut index = BTreeMap::new();
        for key in keys {
            let shard = self.ids_shard(shard_of(key, count)).await?;
            if let Some(id) = shard.index.get(key) {
                index.insert(key.clone(), id.clone());
            }
        }
        let wanted: BTreeSet<ProfileId> = index.values().cloned().collect();
        let count = self.manifest.shards.profiles;
        let mut nodes = BTreeMap::new();
        let mut data = BTreeMap::new();
        for id in wanted {
            let shard = self.profiles_shard(shard_of(&id, count)).await?;
            match shard.profiles.get(&id) {
                Some(stored) => {
                    nodes.insert(id.clone(), stored.node.clone());
                    data.insert(id, stored.profile.clone());
                }
                None => {
                    return Err(Error::Corrupt(format!("an identifier points to profile {id}, which is not stored")));
                }
            }
        }
        Ok((IdentityGraph::from_parts(index, nodes, BTreeMap::new()), data))
    }

    /// Writes a changed part of the graph and its profiles back into the shards (in memory, until commit).
    pub async fn put_back(
        &mut self,
        graph: IdentityGraph,
        mut data: BTreeMap<ProfileId, Profile>,
    ) -> Result<(), Error> {
        let (index, nodes, redirects) = graph.into_parts();
        let ids_count = self.manifest.shards.ids;
        for (key, id) in index {
            let n = shard_of(&key, ids_count);
            let shard = self.ids_shard(n).await?;
            if shard.index.get(&key) != Some(&id) {
                shard.index.insert(key, id);
                self.dirty.insert(("ids", n));
            }
        }
        let count = self.manifest.shards.profiles;
        for (id, node) in nodes {
            let profile = data.remove(&id).unwrap_or_else(|| Profile::new(id.clone()));
            let stored = StoredProfile { node, profile };
            let n = shard_of(&id, count);
            let shard = self.profiles_shard(n).await?;
            if shard.profiles.get(&id) != Some(&stored) {
                shard.profiles.insert(id, stored);
                self.dirty.insert(("profiles", n));
            }
        }
        for (absorbed, survivor) in redirects {
            let n = shard_of(&absorbed, count);
            let shard = self.profiles_shard(n).await?;
            let removed = shard.profiles.remove(&absorbed).is_some();
            if removed || shard.redirects.get(&absorbed) != Some(&survivor) {
                shard.redirects.insert(absorbed, survivor);
                self.dirty.insert(("profiles", n));
            }
        }
        Ok(())
    }

    /// Removes an identifier from the index (after the graph unlinked it).
    pub async fn remove_identifier(&mut self, key: &str) -> Result<(), Error> {
        let n = shard_of(key, self.manifest.shards.ids);
        if self.ids_shard(n).await?.index.remove(key).is_some() {
            self.dirty.insert(("ids", n));
        }
        Ok(())
    }

    /// Counts applied events in the manifest.
    pub fn applied(&mut self, events: usize) {
        self.manifest.events_applied += events as u64;
    }

    /// Whether anything changed.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Writes the changed shards as new objects, then moves the manifest with compare-and-swap. A concurrent
    /// commit since [`begin`](Self::begin) makes this fail with [`StoreError::PreconditionFailed`]; the
    /// caller starts over.
    pub async fn commit(mut self) -> Result<CommitStats, Error> {
        let version = self.manifest.version + 1;
        let mut stats = CommitStats { version, ..CommitStats::default() };
        let mut writes = tokio::task::JoinSet::new();
        for (kind, n) in std::mem::take(&mut self.dirty) {
            let name = shard_name(kind, n);
            let json = match kind {
                "ids" => to_json(&self.ids.get(&n))?,
                "profiles" => to_json(&self.profiles.get(&n))?,
                _ => to_json(&self.dedup.get(&n))?,
            };
            let body = shared::storage::gzip(&json);
            let hash = &shared::ids::sha256_hex_bytes(&body)[..16];
            let key = format!("state/v1/{name}/{version:012}-{hash}.json.gz");
            stats.shards_written += 1;
            stats.bytes_written += body.len();
            self.manifest.objects.insert(name, key.clone());
            let store = self.store.clone();
            writes.spawn(async move {
                let options = PutOptions { content_type: Some("application/gzip"), condition: Condition::IfNoneMatch };
                match store.put(&key, body, options).await {
                    // The same content under the same name is already there (a retry after a crash).
                    Ok(_) | Err(StoreError::PreconditionFailed) => Ok(()),
                    Err(e) => Err(e),
                }
            });
        }
        while let Some(result) = writes.join_next().await {
            result.map_err(|e| Error::Corrupt(format!("shard write task failed: {e}")))??;
        }
        self.manifest.version = version;
        let body = serde_json::to_vec_pretty(&self.manifest).map_err(|e| Error::Corrupt(e.to_string()))?;
        stats.bytes_written += body.len();
        let condition = match self.etag {
            Some(etag) => Condition::IfMatch(etag),
            None => Condition::IfNoneMatch,
        };
        self.store.put(MANIFEST_KEY, body, PutOptions { content_type: Some("application/json"), condition }).await?;
        Ok(stats)
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Corrupt(format!("serializing a shard: {e}")))
}

/// The profile an identifier (`email:<sha256>`, `user_id:u1`, ...) or a profile id (an absorbed one resolves
/// to the survivor) belongs to, read from the current state.
pub async fn lookup<S: ObjectStore + Clone>(store: &S, what: &str) -> Result<Option<StoredProfile>, Error> {
    let mut txn = Transaction::begin(store, ShardCounts::default()).await?;
    let mut id = if what.starts_with("prof_") {
        what.to_string()
    } else {
        let n = shard_of(what, txn.manifest.shards.ids);
        match txn.ids_shard(n).await?.index.get(what) {
            Some(id) => id.clone(),
            None => return Ok(None),
        }
    };
    let count = txn.manifest.shards.profiles;
    for _ in 0..64 {
        let shard = txn.profiles_shard(shard_of(&id, count)).await?;
        if let Some(stored) = shard.profiles.get(&id) {
            return Ok(Some(stored.clone()));
        }
        match shard.redirects.get(&id) {
            Some(next) => id = next.clone(),
            None => return Ok(None),
        }
    }
    Ok(None)
}
