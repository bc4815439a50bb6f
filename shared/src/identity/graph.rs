//! The identity graph: identifiers → profiles, with merges, refusals, redirects, an audit trail, and splits.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::rules::{IdKey, IdentityRules};
use crate::event::{CanonicalEvent, EventType};
use crate::ids::sha256_hex;
use crate::time::UtcTime;

/// A profile's id: `prof_` and 20 hex digits, derived from what created it (so the same history gives the same
/// ids, whatever machine replays it).
pub type ProfileId = String;

/// What every profile id starts with.
pub const PROFILE_ID_PREFIX: &str = "prof_";

/// How many redirects a chain may have: redirects only ever point to a younger merge's survivor, so chains end;
/// the bound guards against a broken state.
pub const MAX_REDIRECTS: usize = 64;

/// The first id on the chain of redirects from `id` (itself included) that `live` accepts, with what `live`
/// gave for it; `None` when the chain ends first or runs past [`MAX_REDIRECTS`]. The one way merges are
/// followed, whatever holds the redirects.
pub fn follow_redirects<'r, T>(
    mut id: &'r str,
    mut live: impl FnMut(&str) -> Option<T>,
    mut redirect: impl FnMut(&str) -> Option<&'r str>,
) -> Option<T> {
    for _ in 0..=MAX_REDIRECTS {
        if let Some(found) = live(id) {
            return Some(found);
        }
        id = redirect(id)?;
    }
    None
}

/// An alias's `previousId` with the two keys it may stand for in the graph: as a user id, else as an anonymous id.
fn alias_of(event: &CanonicalEvent) -> Option<(&str, [IdKey; 2])> {
    let previous = event.previous_id.as_deref().filter(|_| event.kind == EventType::Alias)?;
    Some((previous, [format!("user_id:{previous}"), format!("anonymous_id:{previous}")]))
}

/// The keys linking `event` may read from a stored graph ([`IdentityGraph::link_event`] on a graph holding
/// only them gives the same result as on the whole): its identifiers' keys, and both keys an alias's
/// `previousId` may stand for.
pub fn keys_to_link(rules: &IdentityRules, event: &CanonicalEvent) -> Vec<IdKey> {
    let mut keys = rules.keys(event);
    if let Some((_, alias)) = alias_of(event) {
        keys.extend(alias);
    }
    keys
}

/// Whether `text` names a profile (a profile id) rather than an identifier (`type:value`).
pub fn is_profile_id(text: &str) -> bool {
    text.starts_with(PROFILE_ID_PREFIX)
}

/// One profile's place in the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileNode {
    /// Its id.
    pub id: ProfileId,
    /// The earliest event time seen for it: the older of two merging profiles survives.
    pub first_seen: UtcTime,
    /// Its identifiers.
    pub identities: BTreeSet<IdKey>,
    /// Why its identifiers belong together: pairs seen in one event. Unlinking one identifier splits the
    /// profile along these.
    pub links: BTreeSet<(IdKey, IdKey)>,
    /// What happened to it, oldest first.
    pub audit: Vec<AuditEntry>,
}

/// One line of a profile's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Event time (or the operator's time for unlinks).
    pub at: UtcTime,
    /// The event that caused it (or the operator request's id).
    pub message_id: String,
    /// What happened.
    pub kind: AuditKind,
}

/// What happened to a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditKind {
    /// Created with these identifiers.
    Created {
        /// Its first identifiers.
        identifiers: Vec<IdKey>,
    },
    /// Identifiers added.
    Linked {
        /// The new identifiers.
        identifiers: Vec<IdKey>,
    },
    /// Another profile merged into this one; its id now redirects here.
    Merged {
        /// The absorbed profile.
        absorbed: ProfileId,
        /// The identifier that connected them.
        via: IdKey,
    },
    /// A merge with another profile was refused by a rule.
    MergeRefused {
        /// The profile it would have merged with.
        other: ProfileId,
        /// The identifier that would have connected them.
        via: IdKey,
        /// The rule.
        reason: String,
    },
    /// An identifier was not added because of a rule.
    LinkRefused {
        /// The identifier.
        identifier: IdKey,
        /// The rule.
        reason: String,
    },
    /// An identifier was removed.
    Unlinked {
        /// The identifier.
        identifier: IdKey,
    },
    /// Identifiers no longer connected were split off into another profile.
    SplitOff {
        /// The new profile.
        into: ProfileId,
        /// What moved there.
        identifiers: Vec<IdKey>,
    },
    /// This profile was split off another.
    SplitFrom {
        /// The profile it came from.
        from: ProfileId,
    },
}

/// What linking one event did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Linked {
    /// The profile the event belongs to (`None` when it carried no linkable identifier).
    pub profile: Option<ProfileId>,
    /// Whether that profile was created by this event.
    pub created: bool,
    /// Profiles absorbed into it.
    pub merged: Vec<ProfileId>,
    /// Merges and links refused by rules.
    pub refused: usize,
}

/// Identifiers → profiles, profiles and redirects of absorbed profile ids.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityGraph {
    index: BTreeMap<IdKey, ProfileId>,
    profiles: BTreeMap<ProfileId, ProfileNode>,
    redirects: BTreeMap<ProfileId, ProfileId>,
}

fn edge(a: &str, b: &str) -> (IdKey, IdKey) {
    if a <= b { (a.to_string(), b.to_string()) } else { (b.to_string(), a.to_string()) }
}

impl IdentityGraph {
    /// The profile an identifier belongs to.
    pub fn profile_of(&self, key: &str) -> Option<&ProfileNode> {
        self.index.get(key).and_then(|id| self.profiles.get(id))
    }

    /// A profile by id; an absorbed id resolves to the survivor (following merges of merges).
    pub fn profile(&self, id: &str) -> Option<&ProfileNode> {
        follow_redirects(id, |id| self.profiles.get(id), |id| self.redirects.get(id).map(String::as_str))
    }

    /// A graph holding only some of the state: the index entries, profiles and redirects a batch needs.
    /// Linking reads the index only for the event's identifiers and profiles only for their profiles, so a
    /// part loaded for those gives the same result as the whole.
    pub fn from_parts(
        index: BTreeMap<IdKey, ProfileId>,
        profiles: BTreeMap<ProfileId, ProfileNode>,
        redirects: BTreeMap<ProfileId, ProfileId>,
    ) -> Self {
        Self { index, profiles, redirects }
    }

    /// The graph's index, profiles and redirects.
    pub fn into_parts(
        self,
    ) -> (BTreeMap<IdKey, ProfileId>, BTreeMap<ProfileId, ProfileNode>, BTreeMap<ProfileId, ProfileId>) {
        (self.index, self.profiles, self.redirects)
    }

    /// The profile id of an identifier.
    pub fn lookup(&self, key: &str) -> Option<&ProfileId> {
        self.index.get(key)
    }

    /// Where an absorbed profile id now points, if it was absorbed.
    pub fn redirect(&self, id: &str) -> Option<&ProfileId> {
        self.redirects.get(id)
    }

    /// All live profiles, by id.
    pub fn profiles(&self) -> impl Iterator<Item = &ProfileNode> {
        self.profiles.values()
    }

    /// Number of identifiers.
    pub fn identifiers(&self) -> usize {
        self.index.len()
    }

    /// Links an event's identifiers (an alias's `previousId` too: as the user id or anonymous id it already
    /// is in the graph, else as an anonymous id).
    pub fn link_event(&mut self, rules: &IdentityRules, event: &CanonicalEvent) -> Linked {
        let mut keys = rules.keys(event);
        if let Some((previous, [as_user, as_anonymous])) = alias_of(event) {
            let key = if self.index.contains_key(&as_user) { as_user } else { as_anonymous };
            let kind = rules.kind_of(&key).to_string();
            if !rules.is_blocked(&kind, previous) && !keys.contains(&key) {
                keys.push(key);
                keys.sort_by_key(|k| (rules.priority(k), k.clone()));
            }
        }
        self.link(rules, &keys, &event.message_id, event.timestamp)
    }

    /// Links identifiers seen together (sorted strongest first, as [`IdentityRules::keys`] returns them).
    ///
    /// The event belongs to the profile of its strongest identifier. Going from strongest to weakest, each
    /// identifier joins that profile, or its own profile merges into it, unless a limit forbids it; then the
    /// refusal is recorded on both sides and the identifier stays where it was (or unlinked, if new).
    pub fn link(&mut self, rules: &IdentityRules, keys: &[IdKey], message_id: &str, at: UtcTime) -> Linked {
        let mut linked = Linked::default();
        // Identifiers seen before any known one: they found a profile only if no known one can take them.
        let mut pending: Vec<IdKey> = Vec::new();
        let mut target: Option<ProfileId> = None;
        for key in keys {
            let known = self.index.get(key).cloned();
            match (known, target.clone()) {
                (None, None) => pending.push(key.clone()),
                (Some(found), None) => {
                    if pending.is_empty() {
                        target = Some(found);
                    } else if let Some(reason) = self.add_conflict(rules, &found, &pending) {
                        // The stronger, new identifiers cannot join: they found their own profile.
                        let created = self.create(&pending, message_id, at);
                        linked.created = true;
                        self.refuse_merge(&created, &found, key, &reason, message_id, at);
                        linked.refused += 1;
                        target = Some(created);
                    } else {
                        self.add(&found, &pending, message_id, at);
                        target = Some(found);
                    }
                    pending.clear();
                }
                (None, Some(t)) => match self.add_conflict(rules, &t, std::slice::from_ref(key)) {
                    Some(reason) => {
                        self.refuse_link(&t, key, &reason, message_id, at);
                        linked.refused += 1;
                    }
                    None => self.add(&t, std::slice::from_ref(key), message_id, at),
                },
                (Some(found), Some(t)) if found == t => {}
                (Some(found), Some(t)) => match self.merge_conflict(rules, &t, &found) {
                    Some(reason) => {
                        self.refuse_merge(&t, &found, key, &reason, message_id, at);
                        linked.refused += 1;
                    }
                    None => {
                        let (survivor, absorbed) = self.merge(&t, &found, key, message_id, at);
                        linked.merged.push(absorbed);
                        target = Some(survivor);
                    }
                },
            }
        }
        if target.is_none() && !pending.is_empty() {
            target = Some(self.create(&pending, message_id, at));
            linked.created = true;
        }
        if let Some(t) = &target {
            // Why these identifiers are together: a star from the event's strongest identifier in the profile
            // to its others there. The same event always draws the same star, so replays change nothing.
            let members: Vec<&IdKey> = keys.iter().filter(|k| self.index.get(*k) == Some(t)).collect();
            if let Some(node) = self.profiles.get_mut(t) {
                if let Some((anchor, rest)) = members.split_first() {
                    for k in rest {
                        node.links.insert(edge(anchor, k));
                    }
                }
                if at < node.first_seen {
                    node.first_seen = at;
                }
            }
        }
        linked.profile = target;
        linked
    }

    /// Removes an identifier (GDPR erasure, or an operator undoing a bad link) and splits its profile where
    /// the remaining identifiers no longer connect: the part holding the strongest identifier keeps the id,
    /// each other part becomes a new profile. Returns the resulting profile ids (none if the key was unknown).
    pub fn unlink(&mut self, rules: &IdentityRules, key: &str, request_id: &str, at: UtcTime) -> Vec<ProfileId> {
        let Some(id) = self.index.remove(key) else { return Vec::new() };
        let Some(mut node) = self.profiles.remove(&id) else { return Vec::new() };
        node.identities.remove(key);
        node.links.retain(|(a, b)| a != key && b != key);
        node.audit.push(AuditEntry {
            at,
            message_id: request_id.to_string(),
            kind: AuditKind::Unlinked { identifier: key.to_string() },
        });
        let mut parts = components(&node.identities, &node.links);
        if parts.is_empty() {
            // Its last identifier: the profile stays, empty, so its history and redirects still resolve.
            self.profiles.insert(id.clone(), node);
            return vec![id];
        }
        // The part with the strongest identifier keeps the profile.
        parts.sort_by_key(|part| part.iter().map(|k| (rules.priority(k), k.clone())).min());
        let mut out = vec![id.clone()];
        for part in parts.iter().skip(1) {
            let seed = format!("{id}:{}|{request_id}", part.iter().next().map_or("", String::as_str));
            let new_id = self.new_id(&seed);
            let links: BTreeSet<(IdKey, IdKey)> =
                node.links.iter().filter(|(a, _)| part.contains(a)).cloned().collect();
            node.links.retain(|(a, _)| !part.contains(a));
            for k in part {
                node.identities.remove(k);
                self.index.insert(k.clone(), new_id.clone());
            }
            node.audit.push(AuditEntry {
                at,
                message_id: request_id.to_string(),
                kind: AuditKind::SplitOff { into: new_id.clone(), identifiers: part.iter().cloned().collect() },
            });
            let split = ProfileNode {
                id: new_id.clone(),
                first_seen: node.first_seen,
                identities: part.clone(),
                links,
                audit: vec![AuditEntry {
                    at,
                    message_id: request_id.to_string(),
                    kind: AuditKind::SplitFrom { from: id.clone() },
                }],
            };
            self.profiles.insert(new_id.clone(), split);
            out.push(new_id);
        }
        self.profiles.insert(id, node);
        out
    }

    /// An id from what creates the profile (its first identifier and the event, or the split's origin):
    /// the same history gives the same ids, and 80 bits make a collision with any other id negligible, so no
    /// lookup of the whole state is needed.
    fn new_id(&self, seed: &str) -> ProfileId {
        let mut n = 0u32;
        loop {
            let text = if n == 0 { seed.to_string() } else { format!("{seed}#{n}") };
            let id = format!("{PROFILE_ID_PREFIX}{}", &sha256_hex(&text)[..20]);
            if !self.profiles.contains_key(&id) && !self.redirects.contains_key(&id) {
                return id;
            }
            n += 1;
        }
    }

    fn create(&mut self, keys: &[IdKey], message_id: &str, at: UtcTime) -> ProfileId {
        let id = self.new_id(&format!("{}|{message_id}", keys[0]));
        for k in keys {
            self.index.insert(k.clone(), id.clone());
        }
        let node = ProfileNode {
            id: id.clone(),
            first_seen: at,
            identities: keys.iter().cloned().collect(),
            links: BTreeSet::new(),
            audit: vec![AuditEntry {
                at,
                message_id: message_id.to_string(),
                kind: AuditKind::Created { identifiers: keys.to_vec() },
            }],
        };
        self.profiles.insert(id.clone(), node);
        id
    }

    fn add(&mut self, id: &ProfileId, keys: &[IdKey], message_id: &str, at: UtcTime) {
        for k in keys {
            self.index.insert(k.clone(), id.clone());
        }
        if let Some(node) = self.profiles.get_mut(id) {
            node.identities.extend(keys.iter().cloned());
            node.audit.push(AuditEntry {
                at,
                message_id: message_id.to_string(),
                kind: AuditKind::Linked { identifiers: keys.to_vec() },
            });
        }
    }

    /// Why `keys` cannot all join profile `id`, if they cannot.
    fn add_conflict(&self, rules: &IdentityRules, id: &ProfileId, keys: &[IdKey]) -> Option<String> {
        let node = self.profiles.get(id)?;
        let all: BTreeSet<&IdKey> = node.identities.iter().chain(keys).collect();
        limit_conflict(rules, all)
    }

    /// Why profiles `a` and `b` cannot merge, if they cannot.
    fn merge_conflict(&self, rules: &IdentityRules, a: &ProfileId, b: &ProfileId) -> Option<String> {
        let (na, nb) = (self.profiles.get(a)?, self.profiles.get(b)?);
        limit_conflict(rules, na.identities.iter().chain(&nb.identities).collect())
    }

    fn merge(
        &mut self,
        a: &ProfileId,
        b: &ProfileId,
        via: &IdKey,
        message_id: &str,
        at: UtcTime,
    ) -> (ProfileId, ProfileId) {
        let older = |n: &ProfileNode| (n.first_seen, n.id.clone());
        let (survivor, absorbed) = match (self.profiles.get(a), self.profiles.get(b)) {
            (Some(na), Some(nb)) if older(nb) < older(na) => (b.clone(), a.clone()),
            _ => (a.clone(), b.clone()),
        };
        let Some(gone) = self.profiles.remove(&absorbed) else { return (survivor, absorbed) };
        for k in &gone.identities {
            self.index.insert(k.clone(), survivor.clone());
        }
        self.redirects.insert(absorbed.clone(), survivor.clone());
        if let Some(node) = self.profiles.get_mut(&survivor) {
            node.first_seen = node.first_seen.min(gone.first_seen);
            node.identities.extend(gone.identities);
            node.links.extend(gone.links);
            node.audit.extend(gone.audit);
            node.audit.sort_by_key(|x| x.at);
            node.audit.push(AuditEntry {
                at,
                message_id: message_id.to_string(),
                kind: AuditKind::Merged { absorbed: absorbed.clone(), via: via.clone() },
            });
        }
        (survivor, absorbed)
    }

    fn refuse_merge(&mut self, a: &ProfileId, b: &ProfileId, via: &IdKey, reason: &str, message_id: &str, at: UtcTime) {
        for (this, other) in [(a, b), (b, a)] {
            if let Some(node) = self.profiles.get_mut(this) {
                let kind =
                    AuditKind::MergeRefused { other: other.clone(), via: via.clone(), reason: reason.to_string() };
                // A shared device refuses on every event; one line per (other profile, identifier) is enough.
                if !node.audit.iter().any(|e| e.kind == kind) {
                    node.audit.push(AuditEntry { at, message_id: message_id.to_string(), kind });
                }
            }
        }
    }

    fn refuse_link(&mut self, id: &ProfileId, key: &IdKey, reason: &str, message_id: &str, at: UtcTime) {
        if let Some(node) = self.profiles.get_mut(id) {
            let kind = AuditKind::LinkRefused { identifier: key.clone(), reason: reason.to_string() };
            if !node.audit.iter().any(|e| e.kind == kind) {
                node.audit.push(AuditEntry { at, message_id: message_id.to_string(), kind });
            }
        }
    }
}

/// The first type whose distinct values in `keys` exceed its limit, as a reason.
fn limit_conflict<'a>(rules: &IdentityRules, keys: BTreeSet<&'a IdKey>) -> Option<String> {
    let mut counts: BTreeMap<&'a str, usize> = BTreeMap::new();
    for key in &keys {
        *counts.entry(rules.kind_of(key)).or_default() += 1;
    }
    counts.into_iter().find_map(|(kind, n)| {
        let limit = rules.limit(kind);
        (n > limit).then(|| format!("a profile may hold at most {limit} {kind} value(s); this would make {n}"))
    })
}

/// Connected components of `nodes` over `edges`, each sorted; ordered by their smallest key.
fn components(nodes: &BTreeSet<IdKey>, edges: &BTreeSet<(IdKey, IdKey)>) -> Vec<BTreeSet<IdKey>> {
    let mut neighbours: BTreeMap<&IdKey, Vec<&IdKey>> = BTreeMap::new();
    for (a, b) in edges {
        if nodes.contains(a) && nodes.contains(b) {
            neighbours.entry(a).or_default().push(b);
            neighbours.entry(b).or_default().push(a);
        }
    }
    let mut seen: BTreeSet<&IdKey> = BTreeSet::new();
    let mut out = Vec::new();
    for start in nodes {
        if !seen.insert(start) {
            continue;
        }
        let mut part = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(k) = stack.pop() {
            part.insert(k.clone());
            for n in neighbours.get(k).into_iter().flatten() {
                if seen.insert(n) {
                    stack.push(n);
                }
            }
        }
        out.push(part);
    }
    out
}

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;
