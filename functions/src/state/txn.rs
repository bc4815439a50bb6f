//! One batch's read-modify-write of the state, committed by compare-and-swap on the manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use shared::event::CanonicalEvent;
use shared::identity::{IdKey, IdentityGraph, ProfileId};
use shared::profile::Profile;
use shared::time::UtcTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::shards::{
    BaseRef, BaseTable, DedupShard, Delta, DeltaRef, IdsShard, Kind, MANIFEST_KEY, Manifest, ProfileEntry,
    ProfilesShard, RawEntry, Shard, ShardCounts, ShardRef, StoredProfile, shard_name, shard_of,
};
use crate::Error;
use crate::storage::{Condition, ObjectStore, PutOptions, StoreError};
use crate::vault::Vault;

/// Object reads and writes in flight at once per transaction.
const PARALLEL_IO: usize = 32;

/// When a commit folds the outstanding deltas into whole shards instead of adding one more delta.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compaction {
    /// Deltas outstanding at most (every transaction reads them all).
    pub max_deltas: usize,
    /// Fold once the outstanding deltas' bytes exceed this share of the base objects' bytes …
    pub max_delta_ratio: f64,
    /// … and this many bytes: a small state keeps committing deltas instead of rewriting every shard it has
    /// at each commit.
    pub min_fold_bytes: u64,
}

impl Default for Compaction {
    /// Up to 32 deltas or a quarter of the base (once the deltas hold 4 MiB): a byte of change is rewritten
    /// about four more times by compaction, and a reader applies a bounded number of deltas.
    fn default() -> Self {
        Self { max_deltas: 32, max_delta_ratio: 0.25, min_fold_bytes: 4 << 20 }
    }
}

impl Compaction {
    /// Folds at every commit: each commit rewrites the shards it changed, whole (no deltas).
    pub fn always() -> Self {
        Self { max_deltas: 0, max_delta_ratio: 0.0, min_fold_bytes: 0 }
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

/// The entries this transaction read or wrote, by kind; `None` (or an empty entry) is "not stored".
#[derive(Default)]
struct View {
    ids: BTreeMap<IdKey, Option<ProfileId>>,
    profiles: BTreeMap<ProfileId, ProfileEntry>,
    dedup: BTreeMap<String, Option<i64>>,
}

/// How a shard kind's entries are decoded into the [`View`].
trait Entries: Shard + Sync {
    type Value: Send + Clone + Default + 'static;
    fn extract(&self, key: &str) -> Result<Self::Value, serde_json::Error>;
    fn view(view: &mut View) -> &mut BTreeMap<String, Self::Value>;
    /// The entry's value after `delta`, if `delta` changed it in shard `n`.
    fn in_delta(delta: &Delta, n: u32, key: &str) -> Result<Option<Self::Value>, serde_json::Error>;
    /// Opens what the entry holds sealed (personal traits), once it is read.
    fn open(_value: &mut Self::Value, _vault: Option<&Vault>) -> Result<(), Error> {
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(raw: Option<&RawValue>) -> Result<Option<T>, serde_json::Error> {
    raw.map(|raw| serde_json::from_str(raw.get())).transpose()
}

impl Entries for IdsShard {
    type Value = Option<ProfileId>;
    fn extract(&self, key: &str) -> Result<Self::Value, serde_json::Error> {
        decode(self.index.get(key).map(|v| &**v))
    }
    fn view(view: &mut View) -> &mut BTreeMap<String, Self::Value> {
        &mut view.ids
    }
    fn in_delta(delta: &Delta, n: u32, key: &str) -> Result<Option<Self::Value>, serde_json::Error> {
        Ok(delta.ids.get(&n).and_then(|entries| entries.get(key)).cloned())
    }
}

impl Entries for ProfilesShard {
    type Value = ProfileEntry;
    fn extract(&self, key: &str) -> Result<Self::Value, serde_json::Error> {
        Ok(ProfileEntry {
            profile: decode(self.profiles.get(key).map(|v| &**v))?,
            redirect: decode(self.redirects.get(key).map(|v| &**v))?,
        })
    }
    fn view(view: &mut View) -> &mut BTreeMap<String, Self::Value> {
        &mut view.profiles
    }
    fn in_delta(delta: &Delta, n: u32, key: &str) -> Result<Option<Self::Value>, serde_json::Error> {
        delta.profiles.get(&n).and_then(|entries| entries.get(key)).map(RawEntry::decode).transpose()
    }
    fn open(value: &mut Self::Value, vault: Option<&Vault>) -> Result<(), Error> {
        match &mut value.profile {
            Some(stored) => crate::vault::open_traits(vault, stored.profile.traits.iter_mut()),
            None => Ok(()),
        }
    }
}

impl Entries for DedupShard {
    type Value = Option<i64>;
    fn extract(&self, key: &str) -> Result<Self::Value, serde_json::Error> {
        decode(self.seen.get(key).map(|v| &**v))
    }
    fn view(view: &mut View) -> &mut BTreeMap<String, Self::Value> {
        &mut view.dedup
    }
    fn in_delta(delta: &Delta, n: u32, key: &str) -> Result<Option<Self::Value>, serde_json::Error> {
        Ok(delta.dedup.get(&n).and_then(|entries| entries.get(key)).cloned())
    }
}

/// Decoded base objects (shards and base tables) kept between transactions in this process (a warm function,
/// `cdp up`): they are immutable and named by their content, so a kept copy is never stale. Bounded by the
/// decoded JSON's size (`CDP_STATE_CACHE_MB`, default 256), oldest first out.
struct BaseCache {
    entries: std::collections::HashMap<String, (Arc<dyn std::any::Any + Send + Sync>, usize)>,
    order: std::collections::VecDeque<String>,
    bytes: usize,
    budget: usize,
}

fn base_cache<T>(f: impl FnOnce(&mut BaseCache) -> T) -> T {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<BaseCache>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        let mb = std::env::var("CDP_STATE_CACHE_MB").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(256);
        std::sync::Mutex::new(BaseCache {
            entries: Default::default(),
            order: Default::default(),
            bytes: 0,
            budget: mb << 20,
        })
    });
    f(&mut cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// The base object `key`, decoded, from the cache or the store.
async fn cached_base<S: ObjectStore, T: DeserializeOwned + Send + Sync + 'static>(
    store: &S,
    key: &str,
) -> Result<Arc<T>, Error> {
    if let Some(hit) = base_cache(|cache| cache.entries.get(key).map(|(value, _)| value.clone()))
        && let Ok(hit) = hit.downcast::<T>()
    {
        return Ok(hit);
    }
    let object = store
        .get(key)
        .await?
        .ok_or_else(|| Error::Corrupt(format!("the manifest names {key}, which does not exist")))?;
    let json = shared::storage::gunzip(&object.body).map_err(|e| Error::Corrupt(format!("{key}: {e}")))?;
    let value: Arc<T> = Arc::new(serde_json::from_slice(&json).map_err(|e| Error::Corrupt(format!("{key}: {e}")))?);
    let cost = json.len();
    base_cache(|cache| {
        if cost > cache.budget || cache.entries.contains_key(key) {
            return;
        }
        while cache.bytes + cost > cache.budget {
            let Some(oldest) = cache.order.pop_front() else { break };
            if let Some((_, size)) = cache.entries.remove(&oldest) {
                cache.bytes -= size;
            }
        }
        cache.entries.insert(key.to_string(), (value.clone(), cost));
        cache.order.push_back(key.to_string());
        cache.bytes += cost;
    });
    Ok(value)
}

/// Decoded delta objects by key (see [`Transaction::begin`]); bounded by the outstanding deltas of the last
/// manifest read.
fn delta_cache<T>(f: impl FnOnce(&mut std::collections::HashMap<String, Arc<Delta>>) -> T) -> T {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, Arc<Delta>>>> =
        std::sync::OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut cache)
}

/// A batch's view of the state: the manifest it started from, its deltas, and the entries it read or changed.
/// Only the entries asked for are decoded and kept, so memory follows the batch, not the state.
pub struct Transaction<'s, S: ObjectStore + Clone> {
    store: &'s S,
    manifest: Manifest,
    etag: Option<String>,
    compaction: Compaction,
    /// Each shard's base object (the table shared with the process's cache until a fold changes it).
    base: Arc<BaseTable>,
    /// The outstanding deltas (version, content), oldest first.
    deltas: Arc<Vec<(u64, Arc<Delta>)>>,
    view: View,
    /// The entries changed.
    changed: BTreeSet<(Kind, String)>,
    /// MessageIds first applied before this are forgotten when a dedup shard is rewritten whole.
    horizon: Option<i64>,
    /// Seals personal traits on write and opens them on read; `None` where the deployment has no data key.
    vault: Option<Arc<Vault>>,
}

fn corrupt(what: &str) -> impl Fn(serde_json::Error) -> Error + '_ {
    move |e| Error::Corrupt(format!("{what}: {e}"))
}

/// Shard `n` of a kind as of `deltas`: its base object with every newer delta applied.
async fn read_shard<S: ObjectStore, T: Shard>(
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
    /// Reads the deployment's vault first ([`crate::vault::for_store`]); a run that loaded its configuration
    /// once passes that configuration's vault to [`Transaction::begin_sealed`] instead.
    pub async fn begin(store: &'s S, counts: ShardCounts) -> Result<Self, Error> {
        let (manifest, vault) = tokio::join!(store.get(MANIFEST_KEY), crate::vault::for_store(store));
        Self::start(store, counts, manifest?, vault?).await
    }

    /// [`Transaction::begin`] with personal traits sealed and opened by `vault`, the vault of a configuration
    /// loaded once. Without one (a configuration not loaded from the store, or a store without a data key), the
    /// store's own is read as [`Transaction::begin`] does, so nothing is ever written in clear beside sealed values.
    pub async fn begin_sealed(store: &'s S, counts: ShardCounts, vault: Option<Arc<Vault>>) -> Result<Self, Error> {
        match vault {
            Some(vault) => {
                let manifest = store.get(MANIFEST_KEY).await?;
                Self::start(store, counts, manifest, Some(vault)).await
            }
            None => Self::begin(store, counts).await,
        }
    }

    async fn start(
        store: &'s S,
        counts: ShardCounts,
        manifest: Option<crate::storage::Object>,
        vault: Option<Arc<Vault>>,
    ) -> Result<Self, Error> {
        let (manifest, etag) = match manifest {
            Some(object) => {
                let manifest: Manifest =
                    serde_json::from_slice(&object.body).map_err(|e| Error::Corrupt(format!("{MANIFEST_KEY}: {e}")))?;
                (manifest, Some(object.etag))
            }
            None => (Manifest { shards: counts, ..Manifest::default() }, None),
        };
        let base = match &manifest.base {
            Some(base) => cached_base::<S, BaseTable>(store, &base.key).await?,
            None => Arc::new(BaseTable::default()),
        };
        // Delta objects are immutable and named by their content: decoded ones are kept for the next
        // transaction in this process (a warm function, `cdp up`), so each is read once, not once per batch.
        let cached = delta_cache(|cache| {
            cache.retain(|key, _| manifest.deltas.iter().any(|d| &d.key == key));
            manifest.deltas.iter().map(|d| cache.get(&d.key).cloned()).collect::<Vec<_>>()
        });
        let mut tasks = JoinSet::new();
        let mut deltas = vec![None; manifest.deltas.len()];
        for (i, delta) in manifest.deltas.iter().enumerate() {
            if let Some(Some(hit)) = cached.get(i) {
                deltas[i] = Some((delta.version, hit.clone()));
                continue;
            }
            let (store, key) = (store.clone(), delta.key.clone());
            tasks.spawn(async move { Ok::<_, Error>((i, read_json::<S, Delta>(&store, &key).await?)) });
        }
        while let Some(joined) = tasks.join_next().await {
            let (i, delta) = joined.map_err(task_failed)??;
            let delta = Arc::new(delta);
            delta_cache(|cache| cache.insert(manifest.deltas[i].key.clone(), delta.clone()));
            deltas[i] = Some((manifest.deltas[i].version, delta));
        }
        Ok(Self {
            store,
            etag,
            compaction: Compaction::default(),
            deltas: Arc::new(deltas.into_iter().flatten().collect()),
            base,
            manifest,
            view: View::default(),
            changed: BTreeSet::new(),
            horizon: None,
            vault,
        })
    }

    /// Uses `policy` to decide, at commit, between writing a delta and folding the deltas into the shards.
    pub fn with_compaction(mut self, policy: Compaction) -> Self {
        self.compaction = policy;
        self
    }

    /// What opens personal traits read raw from the shards (`None` where the deployment has no data key).
    pub(crate) fn vault(&self) -> Option<&Arc<Vault>> {
        self.vault.as_ref()
    }

    /// The manifest this transaction started from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Every shard of `T`'s kind as this transaction began, each decoded by `decode` (shard number, shard) on
    /// the runtime's threads, up to 32 at a time, and handed to `each` in shard order: for readers that keep a
    /// compact form of their own rather than a [`Scan`] (the full recompute's profiles).
    pub(crate) async fn each_shard<T, R>(
        &self,
        decode: impl Fn(u32, T) -> Result<R, Error> + Clone + Send + 'static,
        mut each: impl FnMut(u32, R) -> Result<(), Error>,
    ) -> Result<(), Error>
    where
        T: Shard,
        R: Send + 'static,
    {
        let count = self.count(T::KIND);
        let mut flight = std::collections::VecDeque::with_capacity(PARALLEL_IO);
        let mut next = 0;
        let outcome = loop {
            while flight.len() < PARALLEL_IO && next < count {
                let base = self.base.objects.get(&shard_name(T::KIND.name(), next)).cloned();
                let (store, deltas, decode, n) = (self.store.clone(), self.deltas.clone(), decode.clone(), next);
                flight.push_back(tokio::spawn(async move {
                    let shard = read_shard::<S, T>(&store, base, &deltas, n).await?;
                    decode(n, shard)
                }));
                next += 1;
            }
            let Some(task) = flight.pop_front() else { break Ok(()) };
            let n = next - flight.len() as u32 - 1;
            if let Err(e) = task.await.map_err(task_failed).and_then(|r| r).and_then(|r| each(n, r)) {
                break Err(e);
            }
        };
        for task in flight {
            task.abort();
        }
        outcome
    }

    fn count(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Ids => self.manifest.shards.ids,
            Kind::Profiles => self.manifest.shards.profiles,
            Kind::Dedup => self.manifest.shards.dedup,
        }
    }

    /// Decodes into the view the entries `keys` of one kind that are not there yet: their shards are read in
    /// parallel, each once.
    async fn load<'k, T: Entries>(&mut self, keys: impl IntoIterator<Item = &'k String>) -> Result<(), Error> {
        let count = self.count(T::KIND);
        let known = T::view(&mut self.view);
        let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for key in keys {
            if !known.contains_key(key) {
                by_shard.entry(shard_of(key, count)).or_default().push(key.clone());
            }
        }
        let permits = Arc::new(Semaphore::new(PARALLEL_IO));
        let mut tasks = JoinSet::new();
        for (n, keys) in by_shard {
            let base = self.base.objects.get(&shard_name(T::KIND.name(), n)).cloned();
            let (store, deltas, permits) = (self.store.clone(), self.deltas.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.map_err(|e| Error::Machine(e.to_string()))?;
                // An entry is its value in the newest delta that changed it, else in the base object.
                let since = base.as_ref().map_or(0, |b| b.version);
                let newer: Vec<&Arc<Delta>> =
                    deltas.iter().rev().take_while(|(version, _)| *version > since).map(|(_, d)| d).collect();
                let mut shard: Option<Arc<T>> = None;
                let mut out = Vec::with_capacity(keys.len());
                for key in keys {
                    let mut changed = None;
                    for delta in &newer {
                        changed = T::in_delta(delta, n, &key).map_err(corrupt(&key))?;
                        if changed.is_some() {
                            break;
                        }
                    }
                    let value = match changed {
                        Some(value) => value,
                        None => match &base {
                            None => T::Value::default(),
                            Some(base) => {
                                if shard.is_none() {
                                    shard = Some(cached_base::<S, T>(&store, &base.key).await?);
                                }
                                shard
                                    .as_ref()
                                    .map(|s| s.extract(&key))
                                    .transpose()
                                    .map_err(corrupt(&key))?
                                    .unwrap_or_default()
                            }
                        },
                    };
                    out.push((key, value));
                }
                Ok::<_, Error>(out)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let mut entries = joined.map_err(task_failed)??;
            for (_, value) in &mut entries {
                T::open(value, self.vault.as_deref())?;
            }
            T::view(&mut self.view).extend(entries);
        }
        Ok(())
    }

    /// Keeps the events whose [dedup key](CanonicalEvent::dedup_key) (source and messageId) was not applied
    /// within `window_ms` before `now` (nor earlier in this batch), and remembers them with `now`, the time
    /// they are applied. Exact: a real event is never dropped
    /// for looking like another.
    ///
    /// The window runs from when a messageId was first applied, not from when its event was received: an
    /// object replayed, redriven or imported long after its events were received is applied once however old
    /// they are, and any redelivery within the window of that first application changes nothing.
    pub async fn fresh(
        &mut self,
        events: Vec<CanonicalEvent>,
        now: UtcTime,
        window_ms: i64,
    ) -> Result<Vec<CanonicalEvent>, Error> {
        let horizon = now.unix_millis() - window_ms;
        self.horizon = Some(horizon);
        let keys: Vec<String> = events.iter().map(CanonicalEvent::dedup_key).collect();
        self.load::<DedupShard>(&keys).await?;
        let mut out = Vec::with_capacity(events.len());
        for (event, key) in events.into_iter().zip(keys) {
            let seen = self.view.dedup.entry(key.clone()).or_default();
            match seen {
                Some(at) if *at >= horizon => continue,
                _ => {
                    *seen = Some(now.unix_millis());
                    self.changed.insert((Kind::Dedup, key));
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
        self.load::<IdsShard>(keys).await?;
        let mut index = BTreeMap::new();
        for key in keys {
            if let Some(Some(id)) = self.view.ids.get(key) {
                index.insert(key.clone(), id.clone());
            }
        }
        let wanted: BTreeSet<ProfileId> = index.values().cloned().collect();
        self.load::<ProfilesShard>(&wanted).await?;
        let mut nodes = BTreeMap::new();
        let mut data = BTreeMap::new();
        for id in wanted {
            match self.view.profiles.get(&id).and_then(|e| e.profile.as_ref()) {
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

    /// Writes a changed part of the graph and its profiles back (in memory, until commit). Every identifier
    /// and profile it holds came from [`graph_for`](Self::graph_for) or is new: profile ids are derived from
    /// the event that creates them and never reused.
    pub async fn put_back(
        &mut self,
        graph: IdentityGraph,
        mut data: BTreeMap<ProfileId, Profile>,
    ) -> Result<(), Error> {
        let (index, nodes, redirects) = graph.into_parts();
        for (key, id) in index {
            let entry = self.view.ids.entry(key.clone()).or_default();
            if entry.as_ref() != Some(&id) {
                *entry = Some(id);
                self.changed.insert((Kind::Ids, key));
            }
        }
        for (id, node) in nodes {
            let profile = data.remove(&id).unwrap_or_else(|| Profile::new(id.clone()));
            let stored = StoredProfile { node, profile };
            let entry = self.view.profiles.entry(id.clone()).or_default();
            if entry.profile.as_ref() != Some(&stored) || entry.redirect.is_some() {
                *entry = ProfileEntry { profile: Some(stored), redirect: None };
                self.changed.insert((Kind::Profiles, id));
            }
        }
        for (absorbed, survivor) in redirects {
            let entry = self.view.profiles.entry(absorbed.clone()).or_default();
            if entry.profile.is_some() || entry.redirect.as_ref() != Some(&survivor) {
                *entry = ProfileEntry { profile: None, redirect: Some(survivor) };
                self.changed.insert((Kind::Profiles, absorbed));
            }
        }
        Ok(())
    }

    /// Records `entries` (raw objects' records, see `ingest::reconcile`) as applied at `now`, like the events'
    /// dedup keys in [`fresh`](Self::fresh): in the same commit, forgotten with the same window. Entries recorded
    /// within the window are left as they are, so a redelivery writes nothing.
    pub async fn record(&mut self, entries: &[String], now: UtcTime, window_ms: i64) -> Result<(), Error> {
        let horizon = now.unix_millis() - window_ms;
        self.horizon = Some(self.horizon.map_or(horizon, |h| h.min(horizon)));
        self.load::<DedupShard>(entries).await?;
        for entry in entries {
            let seen = self.view.dedup.entry(entry.clone()).or_default();
            if !matches!(seen, Some(at) if *at >= horizon) {
                *seen = Some(now.unix_millis());
                self.changed.insert((Kind::Dedup, entry.clone()));
            }
        }
        Ok(())
    }

    /// The entries among `entries` that are recorded (see [`record`](Self::record)).
    pub async fn recorded_objects(
        &mut self,
        entries: impl IntoIterator<Item = String>,
    ) -> Result<BTreeSet<String>, Error> {
        let entries: Vec<String> = entries.into_iter().collect();
        self.applied_messages(entries.iter()).await
    }

    /// The [dedup keys](CanonicalEvent::dedup_key) among `ids` that ingest has applied (and remembers).
    pub async fn applied_messages<'i>(
        &mut self,
        ids: impl IntoIterator<Item = &'i String> + Clone,
    ) -> Result<BTreeSet<String>, Error> {
        self.load::<DedupShard>(ids.clone()).await?;
        Ok(ids.into_iter().filter(|id| matches!(self.view.dedup.get(*id), Some(Some(_)))).cloned().collect())
    }

    /// Changes stored profiles in place (in memory, until commit): `change` sees each of `ids` that is a
    /// stored profile (not a redirect); only profiles it actually changes are written.
    pub async fn update_profiles(
        &mut self,
        ids: &BTreeSet<ProfileId>,
        mut change: impl FnMut(&ProfileId, &mut Profile),
    ) -> Result<(), Error> {
        self.load::<ProfilesShard>(ids).await?;
        for id in ids {
            let Some(entry) = self.view.profiles.get_mut(id) else { continue };
            let Some(stored) = entry.profile.as_mut() else { continue };
            let before = stored.profile.clone();
            change(id, &mut stored.profile);
            if stored.profile != before {
                self.changed.insert((Kind::Profiles, id.clone()));
            }
        }
        Ok(())
    }

    /// [`update_profiles`](Self::update_profiles) for a change that says itself whether it changed the profile
    /// (`true`: written, without comparing it with a copy from before).
    pub async fn rewrite_profiles(
        &mut self,
        ids: &BTreeSet<ProfileId>,
        mut change: impl FnMut(&ProfileId, &mut Profile) -> bool,
    ) -> Result<(), Error> {
        self.load::<ProfilesShard>(ids).await?;
        for id in ids {
            let Some(stored) = self.view.profiles.get_mut(id).and_then(|entry| entry.profile.as_mut()) else {
                continue;
            };
            if change(id, &mut stored.profile) {
                self.changed.insert((Kind::Profiles, id.clone()));
            }
        }
        Ok(())
    }

    /// Removes an identifier from the index (after the graph unlinked it).
    pub async fn remove_identifier(&mut self, key: &str) -> Result<(), Error> {
        let key = key.to_string();
        self.load::<IdsShard>([&key]).await?;
        if let Some(entry) = self.view.ids.get_mut(&key)
            && entry.take().is_some()
        {
            self.changed.insert((Kind::Ids, key));
        }
        Ok(())
    }

    /// Removes profiles and redirects of absorbed ids (an erasure), in memory until commit.
    pub async fn remove_profiles(&mut self, ids: &BTreeSet<ProfileId>) -> Result<(), Error> {
        self.load::<ProfilesShard>(ids).await?;
        for id in ids {
            if let Some(entry) = self.view.profiles.get_mut(id)
                && (entry.profile.is_some() || entry.redirect.is_some())
            {
                *entry = ProfileEntry::default();
                self.changed.insert((Kind::Profiles, id.clone()));
            }
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
    /// [`StoreError::PreconditionFailed`]; the caller starts over.
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

/// The profile an identifier (`email:<sha256>`, `user_id:u1`, ...) or a profile id (an absorbed one resolves
/// to the survivor) belongs to, read from the current state.
pub async fn lookup<S: ObjectStore + Clone>(store: &S, what: &str) -> Result<Option<StoredProfile>, Error> {
    let mut txn = Transaction::begin(store, ShardCounts::default()).await?;
    let what = what.to_string();
    let mut id = if shared::identity::is_profile_id(&what) {
        what
    } else {
        txn.load::<IdsShard>([&what]).await?;
        match txn.view.ids.get(&what) {
            Some(Some(id)) => id.clone(),
            _ => return Ok(None),
        }
    };
    for _ in 0..64 {
        txn.load::<ProfilesShard>([&id]).await?;
        let entry = txn.view.profiles.get(&id).cloned().unwrap_or_default();
        if let Some(stored) = entry.profile {
            return Ok(Some(stored));
        }
        match entry.redirect {
            Some(next) => id = next,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// The whole state, decoded: every identifier's profile, every stored profile, every redirect. For exports,
/// tests and benchmarks; memory grows with the state (the full recompute keeps a compact form of its own).
#[derive(Debug, Default)]
pub struct Scan {
    /// Identifier → profile id.
    pub ids: std::collections::HashMap<IdKey, ProfileId>,
    /// Profile id → profile.
    pub profiles: BTreeMap<ProfileId, StoredProfile>,
    /// Absorbed profile id → the profile it merged into.
    pub redirects: std::collections::HashMap<ProfileId, ProfileId>,
}

impl Scan {
    /// The live profile id for an identifier or a (possibly absorbed) profile id.
    pub fn resolve(&self, what: &str) -> Option<&ProfileId> {
        let live = |id: &str| self.profiles.get_key_value(id).map(|(k, _)| k);
        if shared::identity::is_profile_id(what)
            && let Some(found) = live(what)
        {
            return Some(found);
        }
        let mut id = self.ids.get(what).or_else(|| self.redirects.get(what))?;
        for _ in 0..64 {
            if let Some(found) = live(id) {
                return Some(found);
            }
            id = self.redirects.get(id)?;
        }
        None
    }
}

/// Reads and decodes every shard of the current state (32 at a time).
pub async fn scan<S: ObjectStore + Clone>(store: &S) -> Result<Scan, Error> {
    let txn = Transaction::begin(store, ShardCounts::default()).await?;
    let mut out = Scan::default();
    let decode = |_: u32, shard: IdsShard| -> Result<Vec<(IdKey, ProfileId)>, Error> {
        let mut out = Vec::with_capacity(shard.index.len());
        for (key, raw) in shard.index {
            let id: ProfileId = serde_json::from_str(raw.get()).map_err(corrupt(&key))?;
            out.push((key, id));
        }
        Ok(out)
    };
    txn.each_shard(decode, |_, ids| {
        out.ids.extend(ids);
        Ok(())
    })
    .await?;
    type Decoded = (Vec<(ProfileId, StoredProfile)>, Vec<(ProfileId, ProfileId)>);
    let vault = txn.vault.clone();
    let decode = move |_: u32, shard: ProfilesShard| -> Result<Decoded, Error> {
        let mut stored = Vec::with_capacity(shard.profiles.len());
        for (id, raw) in shard.profiles {
            let mut profile: StoredProfile = serde_json::from_str(raw.get()).map_err(corrupt(&id))?;
            crate::vault::open_traits(vault.as_deref(), profile.profile.traits.iter_mut())?;
            stored.push((id, profile));
        }
        let mut redirects = Vec::with_capacity(shard.redirects.len());
        for (id, raw) in shard.redirects {
            let to: ProfileId = serde_json::from_str(raw.get()).map_err(corrupt(&id))?;
            redirects.push((id, to));
        }
        Ok((stored, redirects))
    };
    txn.each_shard(decode, |_, (stored, redirects)| {
        out.profiles.extend(stored);
        out.redirects.extend(redirects);
        Ok(())
    })
    .await?;
    Ok(out)
}
