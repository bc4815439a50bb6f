//! Reading the current state whole or one profile at a time, without changing it.

use std::collections::BTreeMap;

use shared::identity::{IdKey, ProfileId};

use crate::Error;
use crate::state::objects::corrupt;
use crate::state::shards::{IdsShard, ProfilesShard, ShardCounts, StoredProfile};
use crate::state::txn::Transaction;
use crate::storage::ObjectStore;

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
    // Following merges as `shared::identity::follow_redirects` does, reading each profile's shard on the way.
    for _ in 0..=shared::identity::MAX_REDIRECTS {
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
        let id = self.ids.get(what).or_else(|| self.redirects.get(what))?;
        shared::identity::follow_redirects(id, live, |id| self.redirects.get(id).map(String::as_str))
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
