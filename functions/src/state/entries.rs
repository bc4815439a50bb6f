//! The entries a transaction reads or writes, by shard kind, and how each kind is decoded into its view.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use shared::identity::{IdKey, ProfileId};

use crate::Error;
use crate::state::shards::{DedupShard, Delta, IdsShard, ProfileEntry, ProfilesShard, RawEntry, Shard};
use crate::vault::Vault;

/// The entries this transaction read or wrote, by kind; `None` (or an empty entry) is "not stored".
#[derive(Default)]
pub(super) struct View {
    pub(super) ids: BTreeMap<IdKey, Option<ProfileId>>,
    pub(super) profiles: BTreeMap<ProfileId, ProfileEntry>,
    pub(super) dedup: BTreeMap<String, Option<i64>>,
}

/// How a shard kind's entries are decoded into the [`View`].
pub(super) trait Entries: Shard + Sync {
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

pub(super) fn decode<T: DeserializeOwned>(raw: Option<&RawValue>) -> Result<Option<T>, serde_json::Error> {
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
