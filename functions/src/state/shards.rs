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

/// The state's root: its version and the object holding each shard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Increases by one with every commit.
    pub version: u64,
    /// Shard counts.
    pub shards: ShardCounts,
    /// Shard name (`ids/0042`) → object key; absent shards are empty.
    pub objects: BTreeMap<String, String>,
    /// Events applied so far (for operators).
    pub events_applied: u64,
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
