//! One batch's read-modify-write of the state, committed by compare-and-swap on the manifest: this file
//! begins a transaction and reads and changes entries; [`commit`] writes them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shared::event::CanonicalEvent;
use shared::identity::{IdKey, IdentityGraph, ProfileId};
use shared::profile::Profile;
use shared::time::UtcTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::Error;
use crate::state::cache::{cached_base, delta_cache};
use crate::state::compaction::Compaction;
use crate::state::entries::{Entries, View};
use crate::state::objects::{PARALLEL_IO, corrupt, read_json, read_shard, task_failed};
use crate::state::shards::{
    BaseTable, DedupShard, Delta, IdsShard, Kind, MANIFEST_KEY, Manifest, ProfileEntry, ProfilesShard, Shard,
    ShardCounts, StoredProfile, shard_name, shard_of,
};
use crate::storage::ObjectStore;
use crate::vault::Vault;

mod commit;

pub use commit::CommitStats;

/// A batch's view of the state: the manifest it started from, its deltas, and the entries it read or changed.
/// Only the entries asked for are decoded and kept, so memory follows the batch, not the state.
pub struct Transaction<'s, S: ObjectStore + Clone> {
    pub(in crate::state) store: &'s S,
    pub(in crate::state) manifest: Manifest,
    pub(in crate::state) etag: Option<String>,
    pub(in crate::state) compaction: Compaction,
    /// Each shard's base object (the table shared with the process's cache until a fold changes it).
    pub(in crate::state) base: Arc<BaseTable>,
    /// The outstanding deltas (version, content), oldest first.
    pub(in crate::state) deltas: Arc<Vec<(u64, Arc<Delta>)>>,
    pub(in crate::state) view: View,
    /// The entries changed.
    pub(in crate::state) changed: BTreeSet<(Kind, String)>,
    /// MessageIds first applied before this are forgotten when a dedup shard is rewritten whole.
    pub(in crate::state) horizon: Option<i64>,
    /// Seals personal traits on write and opens them on read; `None` where the deployment has no data key.
    pub(in crate::state) vault: Option<Arc<Vault>>,
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

    pub(in crate::state) async fn start(
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

    pub(in crate::state) fn count(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Ids => self.manifest.shards.ids,
            Kind::Profiles => self.manifest.shards.profiles,
            Kind::Dedup => self.manifest.shards.dedup,
        }
    }

    /// Decodes into the view the entries `keys` of one kind that are not there yet: their shards are read in
    /// parallel, each once.
    pub(in crate::state) async fn load<'k, T: Entries>(
        &mut self,
        keys: impl IntoIterator<Item = &'k String>,
    ) -> Result<(), Error> {
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
}
