//! Privacy requests (GDPR / CCPA) by identifier: `delete` (erasure), `suppress` and `unsuppress`.
//!
//! - **suppress** adds the identifiers' hashes to `privacy/v1/suppressed.json`: from then on ingest drops every
//!   event carrying one of them and counts it (`privacy/v1/dropped/…`). **unsuppress** removes them. Both
//!   complete at once.
//! - **delete** is queued (`privacy/v1/requests/<id>.json`, status `pending`) and carried out by
//!   [`process`] (the tagging function's schedule in the cloud, a timer in `cdp up`):
//!   1. the person's profiles are found through any of the identifiers, with every identifier and absorbed
//!      profile id they hold; while the erasure runs, ingest drops events carrying any of them (so an event in
//!      flight cannot re-create the person);
//!   2. their events are removed from the event store: every `raw/` object holding one is rewritten without
//!      it (emptied objects are deleted), and `failed/` lines naming them are dropped;
//!   3. the identity graph and profiles lose them in one commit that compacts the state, and the state objects
//!      that held them are deleted after a grace period for readers still on the previous state;
//!   4. tag values, audience snapshots and diffs lose their profile ids; deliveries forget them (lanes, dead
//!      letters, the outbox), and every destination gets a `profile.deleted` notice (profile id only);
//!   5. once the dispatcher has forgotten them and every notice is delivered or dead-lettered, the request is
//!      `completed` and keeps only hashed identifiers and counts.
//!
//! Objects are rewritten in place; with bucket versioning on, older versions are removed by the bucket's
//! lifecycle rule for noncurrent versions (see `infra/`).

mod erase;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shared::access::Actor;
use shared::identity::identifier_key;
use shared::ids::Entropy;
use shared::time::UtcTime;

pub use erase::process;

use crate::Error;
use crate::storage::{ObjectStore, PutOptions};
use crate::suppression::{hash_key, update_suppression};

/// Where requests are kept.
pub const REQUESTS: &str = "privacy/v1/requests/";
/// Counts of events dropped at ingest because of suppression, one object per ingest run that dropped any.
pub use crate::suppression::DROPPED;
/// The suppression list.
pub use crate::suppression::SUPPRESSED;
/// Identifiers one request may name.
pub const MAX_IDENTIFIERS: usize = 100;

/// What a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    /// Erase the person.
    Delete,
    /// Drop their future events at ingest.
    Suppress,
    /// Stop suppressing.
    Unsuppress,
}

impl RequestKind {
    /// `delete`, `suppress`, `unsuppress`.
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Delete => "delete",
            RequestKind::Suppress => "suppress",
            RequestKind::Unsuppress => "unsuppress",
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted, not started.
    Pending,
    /// Data erased; waiting for the state grace period and for deliveries to forget the person.
    Erasing,
    /// Done: nothing of the person is stored (deletion notices to partners are tracked on their own, in
    /// `noticesPending`, and never hold up completion).
    Completed,
}

/// What an erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Profiles removed (including absorbed ids).
    pub profiles: usize,
    /// Identifiers removed from the identity graph.
    pub identifiers: usize,
    /// Events removed from `raw/`.
    pub events: usize,
    /// `failed/` lines removed.
    pub failed_lines: usize,
    /// Objects rewritten or deleted.
    pub objects: usize,
    /// State objects deleted after the grace period.
    pub state_objects: usize,
    /// Destinations sent a deletion notice.
    pub notified: Vec<String>,
    /// Deletion notices the destinations took (delivered, or given up on after their retry schedule).
    #[serde(default)]
    pub notices_settled: usize,
}

/// The work state of an erasure: holds the person's identifiers, so it is removed when the request completes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    /// Profile ids (live and absorbed).
    pub profiles: BTreeSet<String>,
    /// Every identity key they held.
    pub keys: BTreeSet<String>,
    /// The state version after the erasing commit: older unreferenced state objects are garbage.
    pub state_version: u64,
    /// When the data was erased (ms).
    pub erased_at: i64,
    /// The forget request for the dispatcher, until it is done.
    pub forget: Option<String>,
    /// Deletion notices: destination → item id.
    pub notices: BTreeMap<String, String>,
}

/// A privacy request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivacyRequest {
    /// `prv_<ulid>`.
    pub id: String,
    /// What it asks.
    pub kind: RequestKind,
    /// Where it stands.
    pub status: Status,
    /// Who asked.
    pub requested_by: Actor,
    /// When.
    pub created_at: UtcTime,
    /// Last change.
    pub updated_at: UtcTime,
    /// When it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<UtcTime>,
    /// The identifiers keyed-hashed ([`shared::access::IdentifierKey::hash`]): what remains once it completes.
    pub hashed_identifiers: Vec<String>,
    /// The identifiers' graph keys, until it completes (erasures need them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// The identifiers as given, until it completes (to find them in rejected events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifiers: Vec<String>,
    /// An erasure's work state, until it completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure: Option<Erasure>,
    /// Deletion notices not yet taken by their destination (`destination\nprofile id` → item id; no personal
    /// data): followed after completion until each is delivered or given up on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notices_pending: BTreeMap<String, String>,
    /// What it did.
    #[serde(default)]
    pub outcome: Outcome,
    /// What it waits for, for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Bad identifiers.
    #[error("{0}")]
    Invalid(String),
    /// Storage.
    #[error(transparent)]
    Store(#[from] Error),
}

/// Accepts a request: suppressions apply at once; a deletion is queued for [`process`].
pub async fn submit<S: ObjectStore>(
    store: &S,
    kind: RequestKind,
    identifiers: &[String],
    by: Actor,
    now: UtcTime,
) -> Result<PrivacyRequest, RequestError> {
    if identifiers.is_empty() || identifiers.len() > MAX_IDENTIFIERS {
        return Err(RequestError::Invalid(format!("identifiers: 1 to {MAX_IDENTIFIERS} are needed")));
    }
    let mut keys = Vec::new();
    for (i, identifier) in identifiers.iter().enumerate() {
        let key = identifier_key(identifier).map_err(|e| RequestError::Invalid(format!("identifiers[{i}]: {e}")))?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if kind != RequestKind::Delete && keys.iter().any(|k| shared::identity::is_profile_id(k)) {
        return Err(RequestError::Invalid(
            "identifiers: suppression works on identifiers (type:value), not profile ids".into(),
        ));
    }
    let key = hash_key(store).await?;
    let hashed: Vec<String> = keys.iter().map(|k| key.hash(k)).collect();
    let id = format!("prv_{}", Entropy::from_seed(crate::config::random_seed()?).ulid(now));
    let mut request = PrivacyRequest {
        id,
        kind,
        status: Status::Pending,
        requested_by: by,
        created_at: now,
        updated_at: now,
        completed_at: None,
        hashed_identifiers: hashed.clone(),
        keys: Vec::new(),
        identifiers: Vec::new(),
        erasure: None,
        notices_pending: BTreeMap::new(),
        outcome: Outcome::default(),
        waiting_for: None,
    };
    match kind {
        RequestKind::Delete => {
            request.keys = keys;
            request.identifiers = identifiers.to_vec();
        }
        RequestKind::Suppress => {
            update_suppression(store, |list| list.suppressed.extend(hashed.iter().cloned())).await?;
            request.status = Status::Completed;
            request.completed_at = Some(now);
        }
        RequestKind::Unsuppress => {
            update_suppression(store, |list| list.suppressed.retain(|h| !hashed.contains(h))).await?;
            request.status = Status::Completed;
            request.completed_at = Some(now);
        }
    }
    save(store, &request).await?;
    Ok(request)
}

/// A request by id.
pub async fn get<S: ObjectStore>(store: &S, id: &str) -> Result<Option<PrivacyRequest>, Error> {
    if !id.starts_with("prv_") || !id[4..].bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(None);
    }
    match store.get(&format!("{REQUESTS}{id}.json")).await? {
        Some(object) => {
            serde_json::from_slice(&object.body).map(Some).map_err(|e| Error::Corrupt(format!("request {id}: {e}")))
        }
        None => Ok(None),
    }
}

pub(crate) async fn save<S: ObjectStore>(store: &S, request: &PrivacyRequest) -> Result<(), Error> {
    let body = serde_json::to_vec_pretty(request).map_err(Error::encoding)?;
    store.put(&format!("{REQUESTS}{}.json", request.id), body, PutOptions::json()).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
