//! One batch's read-modify-write of the state, committed by compare-and-swap on the manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::event::CanonicalEvent;
use shared::identity::{IdKey, IdentityGraph, ProfileId};
use shared::profile::Profile;
use shared::time::UtcTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::shards::{
    DedupShard, Delta, DeltaRef, IdsShard, Kind, MANIFEST_KEY, Manifest, ProfileEntry, ProfilesShard, Shard,
    ShardCounts, ShardRef, StoredProfile, shard_name, shard_of,
};
use crate::Error;
use crate::storage::{Condition, ObjectStore, PutOptions, StoreError};

/// Object reads and writes in flight at once per transaction.
const PARALLEL_IO: usize = 32;

/// When a commit folds the outstanding deltas into whole shards instead of adding one more delta.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compaction {
    /// Deltas outstanding at most (every transaction reads them all).
    pub max_deltas: usize,
    /// Fold once the outstanding deltas' bytes exceed this share of the base objects' bytes.
    pub max_delta_ratio: f64,
}

impl Default for Compaction {
    /// Up to 32 deltas or a quarter of the base: a byte of change is rewritten about four more times by
    /// compaction, and a reader applies a bounded number of deltas.
    fn default() -> Self {
        Self { max_deltas: 32, max_delta_ratio: 0.25 }
    }
}

impl Compaction {
    /// Folds at every commit: each commit rewrites the shards it changed, whole (no deltas).
    pub fn always() -> Self {
        Self { max_deltas: 0, max_delta_ratio: 0.0 }
    }
}

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

/// The loaded shards of each kind, up to date with the deltas.
#[derive(Default)]
struct Tables {
    ids: BTreeMap<u32, IdsShard>,
    profiles: BTreeMap<u32, ProfilesShard>,
    dedup: BTreeMap<u32, DedupShard>,
}

/// A shard kind's table in [`Tables`].
trait Loaded: Shard {
    fn table(tables: &mut Tables) -> &mut BTreeMap<u32, Self>;
}

impl Loaded for IdsShard {
    fn table(tables: &mut Tables) -> &mut BTreeMap<u32, Self> {
        &mut tables.ids
    }
}

impl Loaded for ProfilesShard {
    fn table(tables: &mut Tables) -> &mut BTreeMap<u32, Self> {
        &mut tables.profiles
    }
}

impl Loaded for DedupShard {
    fn table(tables: &mut Tables) -> &mut BTreeMap<u32, Self> {
        &mut tables.dedup
    }
}

/// A batch's view of the state: the manifest it started from, its deltas, and the shards it loaded or changed.
pub struct Transaction<'s, S: ObjectStore + Clone> {
    store: &'s S,
    manifest: Manifest,
    etag: Option<String>,
    compaction: Compaction,
    /// The outstanding deltas (version, content), oldest first.
    deltas: Arc<Vec<(u64, Arc<Delta>)>>,
    tables: Tables,
    /// The entries changed, by shard.
    changed: BTreeMap<(Kind, u32), BTreeSet<String>>,
    /// MessageIds received before this are forgotten when a dedup shard is rewritten whole.
    horizon: Option<i64>,
}

/// Reads and decodes a gzipped JSON state object that the manifest names.
async fn read_json<S: ObjectStore, T: DeserializeOwned>(store: &S, key: &str) -> Result<T, Error> {
    let object = store
        .get(key)
        .await?
        .ok_or_else(|| Error::Corrupt(format!("the manifest names {key}, which does not exist")))?;
    let json = shared::storage::gunzip(&object.body).map_err(|e| Error::Corrupt(format!("{key}: {e}")))?;
    serde_json::from_slice(&json).map_err(|e| Error::Corrupt(format!("{key}: {e}")))
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Corrupt(format!("serializing state: {e}")))
}

fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::Corrupt(format!("a state I/O task failed: {e}"))
}

/// Writes a state object create-only. The same name already there holds the same content (names carry the
/// content's hash): a retry after a crash.
async fn write_once<S: ObjectStore>(store: &S, key: &str, body: Vec<u8>) -> Result<(), Error> {
    let options = PutOptions { content_type: Some("application/gzip"), condition: Condition::IfNoneMatch };
    match store.put(key, body, options).await {
        Ok(_) | Err(StoreError::PreconditionFailed) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Gzips `json` and names it `state/v1/<folder>/<version>-<content hash>.json.gz`.
fn state_object(folder: &str, version: u64, json: &[u8]) -> (String, Vec<u8>) {
    let body = shared::storage::gzip(json);
    let hash = &shared::ids::sha256_hex_bytes(&body)[..16];
    (format!("state/v1/{folder}/{version:012}-{hash}.json.gz"), body)
}

impl<'s, S: ObjectStore + Clone> Transaction<'s, S> {
    /// Starts from the current manifest (a new, empty state with `counts` if there is none) and reads its
    /// outstanding deltas.
    pub async fn begin(store: &'s S, counts: ShardCounts) -> Result<Self, Error> {
        let (manifest, etag) = match store.get(MANIFEST_KEY).await? {
            Some(object) => {
                let manifest: Manifest =
                    serde_json::from_slice(&object.body).map_err(|e| Error::Corrupt(format!("{MANIFEST_KEY}: {e}")))?;
                (manifest, Some(object.etag))
            }
            None => (Manifest { shards: counts, ..Manifest::default() }, None),
        };
        let mut tasks = JoinSet::new();
        for (i, delta) in manifest.deltas.iter().enumerate() {
            let (store, key) = (store.clone(), delta.key.clone());
            tasks.spawn(async move { Ok::<_, Error>((i, read_json::<S, Delta>(&store, &key).await?)) });
        }
        let mut deltas = vec![None; manifest.deltas.len()];
        while let Some(joined) = tasks.join_next().await {
            let (i, delta) = joined.map_err(task_failed)??;
            deltas[i] = Some((manifest.deltas[i].version, Arc::new(delta)));
        }
        Ok(Self {
            store,
            etag,
            compaction: Compaction::default(),
            deltas: Arc::new(deltas.into_iter().flatten().collect()),
            manifest,
            tables: Tables::default(),
            changed: BTreeMap::new(),
            horizon: None,
        })
    }

    /// Uses `policy` to decide, at commit, between writing a delta and folding the deltas into the shards.
    pub fn with_compaction(mut self, policy: Compaction) -> Self {
        self.compaction = policy;
        self
    }

    /// The manifest this transaction started from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Loads the shards `wanted` of one kind that are not loaded yet, in parallel: each is its base object
    /// with the newer deltas applied.
    async fn load<T: Loaded>(&mut self, wanted: impl IntoIterator<Item = u32>) -> Result<(), Error> {
        let table = T::table(&mut self.tables);
        let missing: BTreeSet<u32> = wanted.into_iter().filter(|n| !table.contains_key(n)).collect();
        let permits = Arc::new(Semaphore::new(PARALLEL_IO));
        let mut tasks = JoinSet::new();
        for n in missing {
            let base = self.manifest.objects.get(&shard_name(T::KIND.name(), n)).cloned();
            let (store, deltas, permits) = (self.store.clone(), self.deltas.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.map_err(|e| Error::Corrupt(e.to_string()))?;
                let (mut shard, since) = match base {
                    Some(ShardRef { key, version, .. }) => (read_json::<S, T>(&store, &key).await?, version),
                    None => (T::default(), 0),
                };
                for (version, delta) in deltas.iter() {
                    if *version > since {
                        shard.apply(delta, n);
                    }
                }
                Ok::<_, Error>((n, shard))
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (n, shard) = joined.map_err(task_failed)??;
            T::table(&mut self.tables).insert(n, shard);
        }
        Ok(())
    }

    /// Shard `n` of a kind, loaded if needed.
    async fn shard<T: Loaded>(&mut self, n: u32) -> Result<&mut T, Error> {
        self.load::<T>([n]).await?;
        Ok(T::table(&mut self.tables).entry(n).or_default())
    }

    fn changed(&mut self, kind: Kind, n: u32, key: &str) {
        self.changed.entry((kind, n)).or_default().insert(key.to_string());
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
        self.horizon = Some(horizon);
        self.load::<DedupShard>(events.iter().map(|e| shard_of(&e.message_id, count))).await?;
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let n = shard_of(&event.message_id, count);
            let shard = self.shard::<DedupShard>(n).await?;
            match shard.seen.get(&event.message_id) {
                Some(at) if *at >= horizon => continue,
                _ => {
                    shard.seen.insert(event.message_id.clone(), event.received_at.unix_millis());
                    self.changed(Kind::Dedup, n, &event.message_id);
                    out.push(event);
                }
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
        self.load::<IdsShard>(keys.iter().map(|k| shard_of(k, count))).await?;
        let mut index = BTreeMap::new();
        for key in keys {
            let shard = self.shard::<IdsShard>(shard_of(key, count)).await?;
            if let Some(id) = shard.index.get(key) {
                index.insert(key.clone(), id.clone());
            }
        }
        let wanted: BTreeSet<ProfileId> = index.values().cloned().collect();
        let count = self.manifest.shards.profiles;
        self.load::<ProfilesShard>(wanted.iter().map(|id| shard_of(id, count))).await?;
        let mut nodes = BTreeMap::new();
        let mut data = BTreeMap::new();
        for id in wanted {
            let shard = self.shard::<ProfilesShard>(shard_of(&id, count)).await?;
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
        self.load::<IdsShard>(index.keys().map(|k| shard_of(k, ids_count))).await?;
        for (key, id) in index {
            let n = shard_of(&key, ids_count);
            let shard = self.shard::<IdsShard>(n).await?;
            if shard.index.get(&key) != Some(&id) {
                shard.index.insert(key.clone(), id);
                self.changed(Kind::Ids, n, &key);
            }
        }
        let count = self.manifest.shards.profiles;
        self.load::<ProfilesShard>(nodes.keys().chain(redirects.keys()).map(|id| shard_of(id, count))).await?;
        for (id, node) in nodes {
            let profile = data.remove(&id).unwrap_or_else(|| Profile::new(id.clone()));
            let stored = StoredProfile { node, profile };
            let n = shard_of(&id, count);
            let shard = self.shard::<ProfilesShard>(n).await?;
            if shard.profiles.get(&id) != Some(&stored) {
                shard.profiles.insert(id.clone(), stored);
                self.changed(Kind::Profiles, n, &id);
            }
        }
        for (absorbed, survivor) in redirects {
            let n = shard_of(&absorbed, count);
            let shard = self.shard::<ProfilesShard>(n).await?;
            let removed = shard.profiles.remove(&absorbed).is_some();
            if removed || shard.redirects.get(&absorbed) != Some(&survivor) {
                shard.redirects.insert(absorbed.clone(), survivor);
                self.changed(Kind::Profiles, n, &absorbed);
            }
        }
        Ok(())
    }

    /// Removes an identifier from the index (after the graph unlinked it).
    pub async fn remove_identifier(&mut self, key: &str) -> Result<(), Error> {
        let n = shard_of(key, self.manifest.shards.ids);
        if self.shard::<IdsShard>(n).await?.index.remove(key).is_some() {
            self.changed(Kind::Ids, n, key);
        }
        Ok(())
    }

    /// Counts applied events in the manifest.
    pub fn applied(&mut self, events: usize) {
        self.manifest.events_applied += events as u64;
    }

    /// Whether anything changed.
    pub fn is_dirty(&self) -> bool {
        !self.changed.is_empty()
    }

    /// The changed entries with their values now.
    fn delta(&self) -> Delta {
        let mut delta = Delta::default();
        for ((kind, n), keys) in &self.changed {
            match kind {
                Kind::Ids => {
                    let shard = self.tables.ids.get(n);
                    let part = keys.iter().map(|k| (k.clone(), shard.and_then(|s| s.index.get(k).cloned())));
                    delta.ids.insert(*n, part.collect());
                }
                Kind::Profiles => {
                    let shard = self.tables.profiles.get(n);
                    let part = keys.iter().map(|id| {
                        let entry = ProfileEntry {
                            profile: shard.and_then(|s| s.profiles.get(id).cloned()),
                            redirect: shard.and_then(|s| s.redirects.get(id).cloned()),
                        };
                        (id.clone(), entry)
                    });
                    delta.profiles.insert(*n, part.collect());
                }
                Kind::Dedup => {
                    let shard = self.tables.dedup.get(n);
                    let part = keys.iter().map(|m| (m.clone(), shard.and_then(|s| s.seen.get(m).copied())));
                    delta.dedup.insert(*n, part.collect());
                }
            }
        }
        delta
    }

    /// Writes this commit's changes — as one delta object, or, when the compaction policy says so, by folding
    /// every outstanding delta and these changes into whole shard objects — then moves the manifest with
    /// compare-and-swap. A concurrent commit since [`begin`](Self::begin) makes this fail with
    /// [`StoreError::PreconditionFailed`]; the caller starts over.
    pub async fn commit(mut self) -> Result<CommitStats, Error> {
        let version = self.manifest.version + 1;
        let mut stats = CommitStats { version, ..CommitStats::default() };
        let mut compact = self.manifest.deltas.len() + 1 > self.compaction.max_deltas;
        if !compact {
            let delta = self.delta();
            let (key, body) = state_object("deltas", version, &to_json(&delta)?);
            let outstanding = self.manifest.delta_bytes() + body.len() as u64;
            let base = self.manifest.base_bytes().max(1);
            compact = outstanding as f64 / base as f64 > self.compaction.max_delta_ratio;
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
            self.fold(version, &mut stats).await?;
        }
        self.manifest.version = version;
        let body = serde_json::to_vec(&self.manifest).map_err(|e| Error::Corrupt(e.to_string()))?;
        stats.bytes_written += body.len();
        let condition = match self.etag {
            Some(etag) => Condition::IfMatch(etag),
            None => Condition::IfNoneMatch,
        };
        self.store.put(MANIFEST_KEY, body, PutOptions { content_type: Some("application/json"), condition }).await?;
        Ok(stats)
    }

    /// Rewrites whole every shard that an outstanding delta or this commit changed, and drops the deltas.
    async fn fold(&mut self, version: u64, stats: &mut CommitStats) -> Result<(), Error> {
        let mut fold: BTreeSet<(Kind, u32)> = self.changed.keys().copied().collect();
        for delta in &self.manifest.deltas {
            for kind in Kind::ALL {
                fold.extend(delta.touches(kind).iter().map(|n| (kind, *n)));
            }
        }
        let of = |kind| fold.iter().filter(move |(k, _)| *k == kind).map(|(_, n)| *n);
        self.load::<IdsShard>(of(Kind::Ids)).await?;
        self.load::<ProfilesShard>(of(Kind::Profiles)).await?;
        self.load::<DedupShard>(of(Kind::Dedup)).await?;
        let permits = Arc::new(Semaphore::new(PARALLEL_IO));
        let mut tasks = JoinSet::new();
        for (kind, n) in fold {
            let json = match kind {
                Kind::Ids => to_json(&self.tables.ids.get(&n))?,
                Kind::Profiles => to_json(&self.tables.profiles.get(&n))?,
                Kind::Dedup => {
                    let shard = self.tables.dedup.entry(n).or_default();
                    if let Some(horizon) = self.horizon {
                        shard.expire(horizon);
                    }
                    to_json(shard)?
                }
            };
            let (store, permits) = (self.store.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.map_err(|e| Error::Corrupt(e.to_string()))?;
                let name = shard_name(kind.name(), n);
                let (key, body) = state_object(&name, version, &json);
                let bytes = body.len() as u64;
                write_once(&store, &key, body).await?;
                Ok::<_, Error>((name, ShardRef { key, version, bytes }))
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (name, written) = joined.map_err(task_failed)??;
            stats.shards_written += 1;
            stats.bytes_written += written.bytes as usize;
            self.manifest.objects.insert(name, written);
        }
        self.manifest.deltas.clear();
        Ok(())
    }
}

/// The profile an identifier (`email:<sha256>`, `user_id:u1`, ...) or a profile id (an absorbed one resolves
/// to the survivor) belongs to, read from the current state.
pub async fn lookup<S: ObjectStore + Clone>(store: &S, what: &str) -> Result<Option<StoredProfile>, Error> {
    let mut txn = Transaction::begin(store, ShardCounts::default()).await?;
    let mut id = if what.starts_with("prof_") {
        what.to_string()
    } else {
        let n = shard_of(what, txn.manifest.shards.ids);
        match txn.shard::<IdsShard>(n).await?.index.get(what) {
            Some(id) => id.clone(),
            None => return Ok(None),
        }
    };
    let count = txn.manifest.shards.profiles;
    for _ in 0..64 {
        let shard = txn.shard::<ProfilesShard>(shard_of(&id, count)).await?;
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
