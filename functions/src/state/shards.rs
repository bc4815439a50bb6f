//! The manifest and the shard kinds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared::identity::{IdKey, ProfileId, ProfileNode};
use shared::profile::Profile;

/// Where the manifest lives.
pub const MANIFEST_KEY: &str = "state/manifest.json";

/// How many shards of each kind; fixed when the state is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardCounts {
    /// Identifier → profile id.
    pub ids: u32,
    /// Profiles (graph node and data) and redirects of absorbed ids.
    pub profiles: u32,
    /// Recently seen messageIds.
    pub dedup: u32,
}

impl Default for ShardCounts {
    /// Sized for about ten million profiles with shards of some hundreds of kilobytes.
    fn default() -> Self {
        Self { ids: 1024, profiles: 1024, dedup: 256 }
    }
}

/// The state's root: its version, the base object of each shard, and the deltas committed since.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Increases by one with every commit.
    pub version: u64,
    /// Shard counts.
    pub shards: ShardCounts,
    /// Shard name (`ids/0042`) → its base object; absent shards are empty.
    pub objects: BTreeMap<String, ShardRef>,
    /// Deltas not yet folded into the base objects, oldest first. A shard is its base object with every delta
    /// newer than the base applied in order.
    #[serde(default)]
    pub deltas: Vec<DeltaRef>,
    /// Events applied so far (for operators).
    pub events_applied: u64,
}

impl Manifest {
    /// Bytes of all base objects.
    pub fn base_bytes(&self) -> u64 {
        self.objects.values().map(|o| o.bytes).sum()
    }

    /// Bytes of the deltas not yet folded in.
    pub fn delta_bytes(&self) -> u64 {
        self.deltas.iter().map(|d| d.bytes).sum()
    }
}

/// A shard's base object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRef {
    /// Object key.
    pub key: String,
    /// The commit that wrote it: deltas up to this version are already in it.
    pub version: u64,
    /// Size of the object (gzipped).
    pub bytes: u64,
}

/// A delta object: the entries one commit changed, grouped by shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaRef {
    /// Object key.
    pub key: String,
    /// The commit that wrote it.
    pub version: u64,
    /// Size of the object (gzipped).
    pub bytes: u64,
    /// The identifier shards it changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<u32>,
    /// The profile shards it changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<u32>,
    /// The dedup shards it changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dedup: Vec<u32>,
}

impl DeltaRef {
    /// The shard numbers of `kind` it changes.
    pub(crate) fn touches(&self, kind: Kind) -> &[u32] {
        match kind {
            Kind::Ids => &self.ids,
            Kind::Profiles => &self.profiles,
            Kind::Dedup => &self.dedup,
        }
    }
}

/// The three kinds of shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Ids,
    Profiles,
    Dedup,
}

impl Kind {
    pub(crate) const ALL: [Kind; 3] = [Kind::Ids, Kind::Profiles, Kind::Dedup];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Ids => "ids",
            Kind::Profiles => "profiles",
            Kind::Dedup => "dedup",
        }
    }
}

/// The entries one commit changed, each with its value after the commit (`None`: removed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Delta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) ids: BTreeMap<u32, BTreeMap<IdKey, Option<ProfileId>>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) profiles: BTreeMap<u32, BTreeMap<ProfileId, ProfileEntry>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) dedup: BTreeMap<u32, BTreeMap<String, Option<i64>>>,
}

/// A profile id's whole entry in its shard after a commit: a stored profile, a redirect, or neither.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProfileEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) profile: Option<StoredProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) redirect: Option<ProfileId>,
}

/// Sets (`Some`) or removes (`None`) every entry of `changes` in `map`.
fn replay<K: Ord + Clone, V: Clone>(map: &mut BTreeMap<K, V>, changes: &BTreeMap<K, Option<V>>) {
    for (key, value) in changes {
        match value {
            Some(value) => map.insert(key.clone(), value.clone()),
            None => map.remove(key),
        };
    }
}

/// A shard kind's in-memory form: loaded from its base object, brought up to date by deltas.
pub(crate) trait Shard: Default + Serialize + serde::de::DeserializeOwned + Send + 'static {
    const KIND: Kind;
    /// Applies `delta`'s changes to shard `n`.
    fn apply(&mut self, delta: &Delta, n: u32);
    /// Forgets what is no longer needed when the shard is rewritten whole (messageIds older than `horizon`).
    fn expire(&mut self, _horizon: i64) {}
}

impl Shard for IdsShard {
    const KIND: Kind = Kind::Ids;
    fn apply(&mut self, delta: &Delta, n: u32) {
        if let Some(changes) = delta.ids.get(&n) {
            replay(&mut self.index, changes);
        }
    }
}

impl Shard for ProfilesShard {
    const KIND: Kind = Kind::Profiles;
    fn apply(&mut self, delta: &Delta, n: u32) {
        for (id, entry) in delta.profiles.get(&n).into_iter().flatten() {
            match &entry.profile {
                Some(profile) => self.profiles.insert(id.clone(), profile.clone()),
                None => self.profiles.remove(id),
            };
            match &entry.redirect {
                Some(to) => self.redirects.insert(id.clone(), to.clone()),
                None => self.redirects.remove(id),
            };
        }
    }
}

impl Shard for DedupShard {
    const KIND: Kind = Kind::Dedup;
    fn apply(&mut self, delta: &Delta, n: u32) {
        if let Some(changes) = delta.dedup.get(&n) {
            replay(&mut self.seen, changes);
        }
    }
    fn expire(&mut self, horizon: i64) {
        self.seen.retain(|_, at| *at >= horizon);
    }
}

/// A profile as stored: its place in the identity graph and its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredProfile {
    /// Graph node: identities, links, audit trail.
    pub node: ProfileNode,
    /// Traits, counters, aggregates.
    pub profile: Profile,
}

/// One shard of identifiers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct IdsShard {
    pub(crate) index: BTreeMap<IdKey, ProfileId>,
}

/// One shard of profiles and redirects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProfilesShard {
    pub(crate) profiles: BTreeMap<ProfileId, StoredProfile>,
    pub(crate) redirects: BTreeMap<ProfileId, ProfileId>,
}

/// One shard of seen messageIds, with the time each was first received (ms since the epoch).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DedupShard {
    pub(crate) seen: BTreeMap<String, i64>,
}

/// The shard of `key` among `count`: FNV-1a, stable across versions and platforms.
pub(crate) fn shard_of(key: &str, count: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(count.max(1))) as u32
}

/// `ids/0042`.
pub(crate) fn shard_name(kind: &str, n: u32) -> String {
    format!("{kind}/{n:04}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharding_is_stable_and_spread() {
        assert_eq!(shard_of("user_id:u1", 1024), shard_of("user_id:u1", 1024));
        let used: std::collections::BTreeSet<u32> =
            (0..2000).map(|i| shard_of(&format!("anonymous_id:{i}"), 64)).collect();
        assert_eq!(used.len(), 64, "2000 keys reach every one of 64 shards");
        assert_eq!(shard_name("ids", 42), "ids/0042");
    }
}
