//! The manifest and the shard kinds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
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
    /// The table of every shard's base object, rewritten by each compaction; none for a new state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
    /// Deltas not yet folded into the base objects, oldest first. A shard is its base object with every delta
    /// newer than the base applied in order.
    #[serde(default)]
    pub deltas: Vec<DeltaRef>,
    /// Events applied so far (for operators).
    pub events_applied: u64,
    /// The latest horizon a compaction forgot dedup entries before (ms since the epoch): an entry recorded at
    /// or after it is still stored, so a missing one was never recorded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub forgotten_before: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Manifest {
    /// Bytes of all base objects.
    pub fn base_bytes(&self) -> u64 {
        self.base.as_ref().map_or(0, |b| b.bytes)
    }

    /// Bytes of the deltas not yet folded in.
    pub fn delta_bytes(&self) -> u64 {
        self.deltas.iter().map(|d| d.bytes).sum()
    }
}

/// Where the table of base objects is, and its totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRef {
    /// Object key of the table (`state/v1/base/<version>-<content hash>.json.gz`).
    pub key: String,
    /// Shard objects it lists.
    pub objects: usize,
    /// Their total size (gzipped).
    pub bytes: u64,
}

/// The table of base objects: shard name (`ids/0042`) → its object; absent shards are empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct BaseTable {
    pub(crate) objects: BTreeMap<String, ShardRef>,
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Delta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) ids: BTreeMap<u32, BTreeMap<IdKey, Option<ProfileId>>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) profiles: BTreeMap<u32, BTreeMap<ProfileId, RawEntry>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) dedup: BTreeMap<u32, BTreeMap<String, Option<i64>>>,
}

/// A profile id's whole entry in its shard after a commit: a stored profile, a redirect, or neither.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProfileEntry {
    pub(crate) profile: Option<StoredProfile>,
    pub(crate) redirect: Option<ProfileId>,
}

/// A [`ProfileEntry`] as a delta holds it: the stored profile stays raw JSON, decoded only when a transaction
/// reads that entry (a delta is held by every transaction until it is folded; decoded, its profiles would take
/// several times the memory) and copied as it is into the shards it is applied to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RawEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) profile: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) redirect: Option<ProfileId>,
}

impl RawEntry {
    /// `entry` with its profile encoded.
    pub(crate) fn encode(entry: ProfileEntry) -> Result<Self, serde_json::Error> {
        let profile = entry.profile.map(|p| serde_json::value::to_raw_value(&p)).transpose()?;
        Ok(Self { profile, redirect: entry.redirect })
    }

    /// The entry with its profile decoded.
    pub(crate) fn decode(&self) -> Result<ProfileEntry, serde_json::Error> {
        let profile = self.profile.as_ref().map(|raw| serde_json::from_str(raw.get())).transpose()?;
        Ok(ProfileEntry { profile, redirect: self.redirect.clone() })
    }
}

/// Sets (`Some`) or removes (`None`) an entry of a raw map.
fn set<V: Serialize>(map: &mut RawMap, key: &str, value: Option<&V>) -> Result<(), serde_json::Error> {
    match value {
        Some(value) => {
            map.insert(key.to_string(), serde_json::value::to_raw_value(value)?);
        }
        None => {
            map.remove(key);
        }
    }
    Ok(())
}

/// A shard kind's stored form.
pub(crate) trait Shard: Default + Serialize + serde::de::DeserializeOwned + Send + 'static {
    const KIND: Kind;
    /// Applies `delta`'s changes to shard `n`.
    fn apply(&mut self, delta: &Delta, n: u32) -> Result<(), serde_json::Error>;
    /// Forgets what is no longer needed when the shard is rewritten whole (messageIds first applied before `horizon`).
    fn expire(&mut self, _horizon: i64) {}
}

impl Shard for IdsShard {
    const KIND: Kind = Kind::Ids;
    fn apply(&mut self, delta: &Delta, n: u32) -> Result<(), serde_json::Error> {
        for (key, value) in delta.ids.get(&n).into_iter().flatten() {
            set(&mut self.index, key, value.as_ref())?;
        }
        Ok(())
    }
}

impl Shard for ProfilesShard {
    const KIND: Kind = Kind::Profiles;
    fn apply(&mut self, delta: &Delta, n: u32) -> Result<(), serde_json::Error> {
        for (id, entry) in delta.profiles.get(&n).into_iter().flatten() {
            match &entry.profile {
                Some(raw) => self.profiles.insert(id.clone(), raw.clone()),
                None => self.profiles.remove(id),
            };
            set(&mut self.redirects, id, entry.redirect.as_ref())?;
        }
        Ok(())
    }
}

impl Shard for DedupShard {
    const KIND: Kind = Kind::Dedup;
    fn apply(&mut self, delta: &Delta, n: u32) -> Result<(), serde_json::Error> {
        for (key, value) in delta.dedup.get(&n).into_iter().flatten() {
            set(&mut self.seen, key, value.as_ref())?;
        }
        Ok(())
    }
    fn expire(&mut self, horizon: i64) {
        self.seen.retain(|_, at| serde_json::from_str::<i64>(at.get()).is_ok_and(|at| at >= horizon));
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

/// Shards are read lazily: a base object is decoded into maps of raw JSON values, and only the entries a
/// transaction asks for are decoded further. Folding rewrites them without decoding the rest.
pub(crate) type RawMap = BTreeMap<String, Box<RawValue>>;

/// One shard of identifiers: identifier → profile id.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct IdsShard {
    #[serde(default)]
    pub(crate) index: RawMap,
}

/// One shard of profiles ([`StoredProfile`]) and redirects of absorbed profile ids.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ProfilesShard {
    #[serde(default)]
    pub(crate) profiles: RawMap,
    #[serde(default)]
    pub(crate) redirects: RawMap,
}

/// One shard of seen messageIds, with the time each was first received (ms since the epoch).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct DedupShard {
    #[serde(default)]
    pub(crate) seen: RawMap,
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

    #[test]
    fn a_delta_keeps_its_profiles_raw_until_one_is_read() {
        let json = r#"{"profiles":{"3":{"prof_a":{"profile":{"not":"a profile"}},"prof_b":{"redirect":"prof_c"}}}}"#;
        let delta: Delta = serde_json::from_str(json).expect("a delta decodes without decoding its profiles");
        assert_eq!(serde_json::to_string(&delta).expect("encoded"), json, "written back as it was");
        let mut shard = ProfilesShard::default();
        shard.apply(&delta, 3).expect("applied");
        assert_eq!(shard.profiles["prof_a"].get(), r#"{"not":"a profile"}"#, "copied into the shard as it is");
        assert_eq!(shard.redirects["prof_b"].get(), r#""prof_c""#);
        assert!(delta.profiles[&3]["prof_a"].decode().is_err(), "decoded only when read");
        let redirect = delta.profiles[&3]["prof_b"].decode().expect("a redirect");
        assert_eq!((redirect.profile, redirect.redirect.as_deref()), (None, Some("prof_c")));
    }
}
