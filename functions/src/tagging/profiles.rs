//! The profiles as the full recompute and the backfill hold them: compact columns instead of a decoded
//! [`crate::state::Scan`], so that memory grows by a few hundred bytes per profile rather than by kilobytes.
//!
//! Profiles are numbered by profile shard, then id (the order the state's shards hold them in, so a backfill
//! batch of whole shards is a run of numbers). Per profile: its id, and what the profiles are read for needs
//! ([`Reading`]). The recompute: the trait values as compact JSON (decoded again a chunk at a time), a
//! fingerprint of the recorded audience memberships and whether it is recorded as a member of each computed
//! audience. The backfill: whether it rebuilt the profile already, and how many events were applied to it.
//!
//! Identifiers, live profile ids and absorbed profile ids resolve to a live profile's number through tables
//! keyed by a 128-bit keyed hash of the string (two SipHash-1-3 keyed at random per process): 16 bytes a key
//! instead of the string, and a false match among even billions of keys is about as likely as a random 128-bit
//! collision (below 10⁻¹⁹).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};
use shared::profile::Membership;

use crate::Error;
use crate::state::{IdsShard, ProfilesShard, ShardCounts, Transaction, shard_of};
use crate::storage::ObjectStore;
use crate::vault::Vault;

/// Strings one after another, in blocks of [`Texts::BLOCK`] bytes allocated once each (a string longer than a
/// block has one of its own): growing never copies what is there, nor leaves up to half of one large buffer
/// unused as doubling would.
#[derive(Debug, Clone)]
pub(super) struct Texts {
    blocks: Vec<String>,
    /// Per block, the number of its first string.
    firsts: Vec<u32>,
    /// Per string, where it ends in its block.
    ends: Vec<u32>,
    block: usize,
}

impl Default for Texts {
    fn default() -> Self {
        Self::with_blocks(Self::BLOCK)
    }
}

impl Texts {
    /// Bytes per block.
    const BLOCK: usize = 1 << 20;

    fn with_blocks(block: usize) -> Self {
        Self { blocks: Vec::new(), firsts: Vec::new(), ends: Vec::new(), block }
    }

    pub(super) fn push(&mut self, s: &str) {
        if self.blocks.last().is_none_or(|b| b.capacity() - b.len() < s.len()) {
            self.blocks.push(String::with_capacity(self.block.max(s.len())));
            self.firsts.push(self.ends.len() as u32);
        }
        if let Some(block) = self.blocks.last_mut() {
            block.push_str(s);
            self.ends.push(block.len() as u32);
        }
    }

    pub(super) fn get(&self, n: usize) -> &str {
        let b = self.firsts.partition_point(|first| *first as usize <= n) - 1;
        let start = if self.firsts[b] as usize == n { 0 } else { self.ends[n - 1] as usize };
        &self.blocks[b][start..self.ends[n] as usize]
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn append(&mut self, other: &Texts) {
        for n in 0..other.len() {
            self.push(other.get(n));
        }
    }
}

/// A string's 128-bit keyed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key(u64, u64);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0 ^ self.1);
    }
}

/// Passes a [`Key`]'s bits on as the table's hash (they are a keyed hash already).
#[derive(Debug, Default, Clone, Copy)]
struct Folded(u64);

impl Hasher for Folded {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_ne_bytes(word);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

type Table = HashMap<Key, u32, std::hash::BuildHasherDefault<Folded>>;

/// What the identifiers shards are resolved against: the live profiles' ids and numbers, absorbed ids with
/// their survivor's number.
#[derive(Debug)]
struct Live {
    hashers: (RandomState, RandomState),
    ids: Texts,
    /// Live and absorbed profile ids → the live profile's number.
    numbers: Table,
}

impl Live {
    fn key(&self, s: &str) -> Key {
        Key(self.hashers.0.hash_one(s), self.hashers.1.hash_one(s))
    }

    /// The number of the live profile `id`.
    fn number(&self, id: &str) -> Option<u32> {
        self.numbers.get(&self.key(id)).copied().filter(|n| self.ids.get(*n as usize) == id)
    }

    /// The number of the live profile a live or absorbed profile id stands for.
    fn resolve(&self, id: &str) -> Option<u32> {
        self.numbers.get(&self.key(id)).copied()
    }
}

/// What [`Profiles`] are read for, and so which of their columns are kept.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reading<'a> {
    /// The full recompute: trait values, and the recorded memberships of these audiences.
    Recompute(&'a [String]),
    /// The backfill of this name: whether it rebuilt each profile, and how many events were applied to each.
    Backfill(&'a str),
}

/// What the recompute reads of a stored profile; the rest (the identity graph's links and audit trail, counters,
/// incremental tag state) is skipped while decoding, not kept.
#[derive(Debug, Deserialize)]
struct ForRecompute {
    profile: RecomputeFields,
}

#[derive(Debug, Deserialize)]
struct RecomputeFields {
    /// Each trait's value, or sealed value (where it came from is skipped).
    #[serde(default)]
    traits: BTreeMap<String, TraitOnly>,
    #[serde(default)]
    memberships: BTreeMap<String, Membership>,
}

/// What the backfill reads of a stored profile.
#[derive(Debug, Deserialize)]
struct ForBackfill {
    profile: BackfillFields,
}

#[derive(Debug, Deserialize)]
struct BackfillFields {
    /// How many events were applied to the profile (the sum of its counters by event name).
    #[serde(default, deserialize_with = "event_total")]
    events: u64,
    /// Only which backfill rebuilt the tag state (the states themselves are skipped).
    #[serde(default, rename = "tagState")]
    tag_state: RebuiltBy,
}

#[derive(Debug, Default, Deserialize)]
struct RebuiltBy {
    #[serde(default)]
    rebuilt: Option<String>,
}

/// A trait's value as stored: in clear, or sealed (a personal trait).
#[derive(Debug, Deserialize)]
struct TraitOnly {
    #[serde(default)]
    value: Value,
    #[serde(default)]
    sealed: Option<String>,
}

/// The traits' values, sealed ones opened with `vault`.
fn trait_values(traits: BTreeMap<String, TraitOnly>, vault: Option<&Vault>) -> Result<Map<String, Value>, Error> {
    let mut out = Map::new();
    for (name, t) in traits {
        let value = match (t.sealed, vault) {
            (None, _) => t.value,
            (Some(sealed), Some(vault)) => vault.open(&name, &sealed)?,
            (Some(_), None) => {
                return Err(Error::Corrupt(format!("trait {name} is sealed but the deployment has no data key")));
            }
        };
        out.insert(name, value);
    }
    Ok(out)
}

fn event_total<'de, D: serde::Deserializer<'de>>(events: D) -> Result<u64, D::Error> {
    struct Total;
    impl<'de> serde::de::Visitor<'de> for Total {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("event counters by name")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
            #[derive(Deserialize)]
            struct Counted {
                #[serde(default)]
                count: u64,
            }
            let mut total = 0u64;
            while let Some((serde::de::IgnoredAny, Counted { count })) = map.next_entry()? {
                total = total.saturating_add(count);
            }
            Ok(total)
        }
    }
    events.deserialize_map(Total)
}

/// One profile shard decoded.
#[derive(Debug, Default)]
struct Part {
    ids: Texts,
    traits: Texts,
    fingerprints: Vec<u64>,
    members: Vec<u64>,
    rebuilt: Vec<bool>,
    applied: Vec<u64>,
    redirects: Vec<(String, String)>,
}

/// The profiles of one state version (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Profiles {
    /// The state version read.
    pub(crate) version: u64,
    live: Arc<Live>,
    /// Identifier key → live profile number.
    identifiers: Table,
    /// Where each profile shard's profiles start; one more entry, the count of profiles.
    shard_starts: Vec<u32>,
    /// Trait values (`{name: value}`), compact JSON.
    traits: Texts,
    fingerprints: Vec<u64>,
    /// The audiences whose recorded membership is kept, in `members` bit order.
    audiences: Vec<String>,
    /// Per profile, `words` words of bits: recorded a member of audience `a` (bit `a`).
    members: Vec<u64>,
    words: usize,
    /// Per profile: its tag state was rebuilt by the backfill the profiles were read for.
    rebuilt: Vec<bool>,
    /// Per profile: how many events were applied to it.
    applied: Vec<u64>,
}

/// A recorded membership map's fingerprint (0 when empty).
fn fingerprint(hasher: &RandomState, memberships: &BTreeMap<String, Membership>) -> u64 {
    if memberships.is_empty() {
        return 0;
    }
    let mut state = hasher.build_hasher();
    for (audience, m) in memberships {
        (audience, m.member, m.since, m.changes).hash(&mut state);
    }
    state.finish() | 1
}

impl Profiles {
    /// Reads the current state: profile shards first (numbering the profiles), then identifiers shards; keeps
    /// the columns `reading` needs (the others stay empty, and their accessors are not to be called).
    pub(crate) async fn read<S: ObjectStore + Clone>(
        store: &S,
        vault: Option<Arc<crate::vault::Vault>>,
        reading: Reading<'_>,
    ) -> Result<Self, Error> {
        let txn = Transaction::begin_sealed(store, ShardCounts::default(), vault).await?;
        let version = txn.manifest().version;
        let hashers = (RandomState::new(), RandomState::new());
        let audiences = match reading {
            Reading::Recompute(audiences) => audiences,
            Reading::Backfill(_) => &[],
        };
        let words = audiences.len().div_ceil(64);
        let wanted: Arc<Vec<String>> = Arc::new(audiences.to_vec());
        let membership_hasher = hashers.0.clone();
        let vault = txn.vault().cloned();
        let backfill: Option<Arc<str>> = match reading {
            Reading::Recompute(_) => None,
            Reading::Backfill(job) => Some(Arc::from(job)),
        };
        let decode = move |_: u32, shard: ProfilesShard| -> Result<Part, Error> {
            let mut part = Part::default();
            for (id, raw) in shard.profiles {
                let corrupt = |e: serde_json::Error| Error::Corrupt(format!("profile {id}: {e}"));
                part.ids.push(&id);
                if let Some(job) = &backfill {
                    let profile = serde_json::from_str::<ForBackfill>(raw.get()).map_err(corrupt)?.profile;
                    part.rebuilt.push(profile.tag_state.rebuilt.as_deref() == Some(&**job));
                    part.applied.push(profile.events);
                    continue;
                }
                let profile = serde_json::from_str::<ForRecompute>(raw.get()).map_err(corrupt)?.profile;
                let traits = trait_values(profile.traits, vault.as_deref())?;
                part.traits.push(&serde_json::to_string(&traits).map_err(Error::encoding)?);
                part.fingerprints.push(fingerprint(&membership_hasher, &profile.memberships));
                let mut bits = vec![0u64; words];
                for (a, audience) in wanted.iter().enumerate() {
                    if profile.memberships.get(audience).is_some_and(|m| m.member) {
                        bits[a / 64] |= 1 << (a % 64);
                    }
                }
                part.members.extend(bits);
            }
            for (id, raw) in shard.redirects {
                let to: String =
                    serde_json::from_str(raw.get()).map_err(|e| Error::Corrupt(format!("redirect {id}: {e}")))?;
                part.redirects.push((id, to));
            }
            Ok(part)
        };
        let (mut ids, mut traits, mut fingerprints, mut members) = (Texts::default(), Texts::default(), vec![], vec![]);
        let (mut shard_starts, mut redirects, mut rebuilt, mut applied) =
            (Vec::new(), HashMap::new(), Vec::new(), Vec::new());
        txn.each_shard(decode, |_, part: Part| {
            shard_starts.push(number(ids.len())?);
            ids.append(&part.ids);
            traits.append(&part.traits);
            fingerprints.extend(part.fingerprints);
            members.extend(part.members);
            rebuilt.extend(part.rebuilt);
            applied.extend(part.applied);
            redirects.extend(part.redirects);
            Ok(())
        })
        .await?;
        shard_starts.push(number(ids.len())?);

        let mut live = Live { hashers, ids, numbers: Table::default() };
        live.numbers.reserve(live.ids.len() + redirects.len());
        for n in 0..live.ids.len() {
            let key = live.key(live.ids.get(n));
            live.numbers.insert(key, number(n)?);
        }
        // Absorbed ids: to the live profile at the end of their chain of redirects.
        fn survivor(live: &Live, redirects: &HashMap<String, String>, at: &str) -> Option<u32> {
            shared::identity::follow_redirects(at, |id| live.number(id), |id| redirects.get(id).map(String::as_str))
        }
        let absorbed: Vec<(Key, u32)> =
            redirects.iter().filter_map(|(id, to)| Some((live.key(id), survivor(&live, &redirects, to)?))).collect();
        drop(redirects);
        for (key, n) in absorbed {
            live.numbers.entry(key).or_insert(n);
        }

        let live = Arc::new(live);
        let resolving = live.clone();
        let decode = move |_: u32, shard: IdsShard| -> Result<Vec<(Key, u32)>, Error> {
            let mut out = Vec::with_capacity(shard.index.len());
            for (key, raw) in shard.index {
                // Borrowed unless escaped.
                let id = match serde_json::from_str::<&str>(raw.get()) {
                    Ok(id) => std::borrow::Cow::Borrowed(id),
                    Err(_) => std::borrow::Cow::Owned(
                        serde_json::from_str::<String>(raw.get())
                            .map_err(|e| Error::Corrupt(format!("identifier {key}: {e}")))?,
                    ),
                };
                if let Some(n) = resolving.resolve(&id) {
                    out.push((resolving.key(&key), n));
                }
            }
            Ok(out)
        };
        let mut identifiers = Table::default();
        let shards = txn.manifest().shards.ids as usize;
        txn.each_shard(decode, |_, resolved: Vec<(Key, u32)>| {
            // Sized once from the first shard (shards hold about as many keys each): growing by doubling would
            // hold the old table and the new one together.
            if identifiers.is_empty() {
                identifiers.reserve(resolved.len() * shards * 9 / 8);
            }
            identifiers.extend(resolved);
            Ok(())
        })
        .await?;
        Ok(Self {
            version,
            live,
            identifiers,
            shard_starts,
            traits,
            fingerprints,
            audiences: audiences.to_vec(),
            members,
            words,
            rebuilt,
            applied,
        })
    }

    /// Only the ids (the rest is freed).
    pub(crate) fn into_ids(self) -> ProfileIds {
        let ids = Arc::try_unwrap(self.live).map_or_else(|live| live.ids.clone(), |live| live.ids);
        ProfileIds { ids, shard_starts: self.shard_starts }
    }

    /// How many profiles.
    pub(crate) fn len(&self) -> usize {
        self.live.ids.len()
    }

    /// Profile `n`'s id.
    pub(crate) fn id(&self, n: u32) -> &str {
        self.live.ids.get(n as usize)
    }

    /// The number of the live profile `id` (not an absorbed one).
    pub(crate) fn number(&self, id: &str) -> Option<u32> {
        self.live.number(id)
    }

    /// The live profile an identifier key, a profile id or an absorbed profile id stands for (as
    /// [`crate::state::Scan::resolve`]).
    pub(crate) fn resolve(&self, what: &str) -> Option<u32> {
        let key = self.live.key(what);
        let (profile, identifier) = (self.live.numbers.get(&key), self.identifiers.get(&key));
        match shared::identity::is_profile_id(what) {
            true => profile.or(identifier),
            false => identifier.or(profile),
        }
        .copied()
    }

    /// Profile `n`'s trait values.
    pub(crate) fn traits(&self, n: u32) -> Result<Map<String, Value>, Error> {
        serde_json::from_str(self.traits.get(n as usize)).map_err(|e| Error::Corrupt(format!("traits: {e}")))
    }

    /// The place of `audience` among those the profiles were read for.
    pub(crate) fn audience(&self, audience: &str) -> Option<usize> {
        self.audiences.iter().position(|a| a == audience)
    }

    /// Whether profile `n` is recorded as a member of the audience at place `a` among those the profiles were
    /// read for.
    pub(crate) fn recorded(&self, n: u32, a: usize) -> bool {
        a < self.audiences.len() && self.members[n as usize * self.words + a / 64] & (1 << (a % 64)) != 0
    }

    /// Whether `memberships` are those recorded on profile `n` when the profiles were read.
    pub(crate) fn unchanged(&self, n: u32, memberships: &BTreeMap<String, Membership>) -> bool {
        self.fingerprints[n as usize] == fingerprint(&self.live.hashers.0, memberships)
    }

    /// Whether profile `n`'s tag state was rebuilt by the backfill the profiles were read for.
    pub(crate) fn rebuilt(&self, n: u32) -> bool {
        self.rebuilt[n as usize]
    }

    /// How many events had been applied to profile `n` (the sum of its counters by event name).
    pub(crate) fn applied(&self, n: u32) -> u64 {
        self.applied[n as usize]
    }

    /// The first profile number of profile shard `shard` (the count of profiles past the last shard).
    pub(crate) fn shard_start(&self, shard: u32) -> u32 {
        let last = self.shard_starts.len() - 1;
        self.shard_starts[(shard as usize).min(last)]
    }

    /// How many profile shards.
    pub(crate) fn shards(&self) -> u32 {
        (self.shard_starts.len() - 1) as u32
    }
}

/// The profile ids alone, numbered as in the [`Profiles`] they came from: a profile's number is found by
/// binary search among its shard's ids (in id order). What the backfill keeps of the recompute's profiles.
#[derive(Debug)]
pub(crate) struct ProfileIds {
    ids: Texts,
    /// As [`Profiles`]' `shard_starts`.
    shard_starts: Vec<u32>,
}

impl ProfileIds {
    /// The number of profile `id`, if it was one.
    pub(crate) fn number(&self, id: &str) -> Option<u32> {
        let shard = shard_of(id, (self.shard_starts.len() - 1) as u32) as usize;
        let (mut low, mut high) = (*self.shard_starts.get(shard)?, *self.shard_starts.get(shard + 1)?);
        while low < high {
            let middle = low + (high - low) / 2;
            match self.ids.get(middle as usize).cmp(id) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Some(middle),
            }
        }
        None
    }
}

/// `n` as a profile number.
fn number(n: usize) -> Result<u32, Error> {
    u32::try_from(n).map_err(|_| Error::Internal("more than 2³² profiles".into()))
}

#[cfg(test)]
mod tests {
    use super::Texts;

    #[test]
    fn texts_hold_strings_across_blocks_without_moving_them() {
        let strings: Vec<String> = (0..200).map(|n| "é".repeat(n % 13) + &"x".repeat(n % 7)).collect();
        let mut texts = Texts::with_blocks(16);
        let mut more = Texts::with_blocks(16);
        for (n, s) in strings.iter().enumerate() {
            if n < 120 { texts.push(s) } else { more.push(s) }
        }
        let long = "y".repeat(40);
        more.push(&long);
        texts.append(&more);
        assert_eq!(texts.len(), 201);
        for (n, s) in strings.iter().chain([&long]).enumerate() {
            assert_eq!(texts.get(n), s, "string {n}");
        }
        assert!(texts.blocks.len() > 20, "many blocks: {}", texts.blocks.len());
        assert!(texts.blocks.iter().all(|b| b.capacity() == 16 || b.capacity() == b.len()), "none grew");
    }
}
