//! What the delivery engine keeps in the store, apart from the lanes' queues: dead letters, replay and
//! forget requests, destinations disabled by a 410, and the functions operators and the erasure use on them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use shared::activation::Outcome;
use shared::activation::lane::{InFlight, Lane};

use crate::error::Error;
use crate::storage::{ObjectStore, PutOptions};

/// A lane's state object.
pub fn lane_key(destination: &str, lane: usize) -> String {
    format!("deliveries/v1/lanes/{destination}/{lane}.json")
}

/// A dead letter.
pub fn dead_key(destination: &str, webhook_id: &str) -> String {
    format!("deliveries/v1/dead/{destination}/{webhook_id}.json")
}

/// A replay request.
pub fn replay_key(destination: &str, webhook_id: &str) -> String {
    format!("deliveries/v1/replay/{destination}/{webhook_id}.json")
}

/// Where erasures ask the dispatcher to forget people: `deliveries/v1/forget/<request id>.json`, holding
/// [`Forget`]; the dispatcher deletes it once done.
pub const FORGET: &str = "deliveries/v1/forget/";

/// People to forget: everything about these profiles leaves the lanes and dead letters (deletion notices stay).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forget {
    /// Profile ids.
    pub profiles: BTreeSet<String>,
}

/// A destination's status (present when disabled).
pub fn status_key(destination: &str) -> String {
    format!("deliveries/v1/status/{destination}.json")
}

/// A request given up on, kept for inspection and replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The destination.
    pub destination: String,
    /// Its lane.
    pub lane: usize,
    /// Why it was given up.
    pub reason: String,
    /// When (ms).
    pub dead_at: i64,
    /// The request, with its attempts and last error.
    pub request: InFlight,
}

/// Why a destination is disabled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disabled {
    /// Why.
    pub reason: String,
    /// When (ms).
    pub at: i64,
}

/// One attempt, as logged (no secrets, no payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// The destination.
    pub destination: String,
    /// `webhook-id`.
    pub webhook_id: String,
    /// Items in the request.
    pub item_ids: Vec<String>,
    /// Attempt number (1 for the first).
    pub attempt: u32,
    /// When it was made (ms).
    pub at: i64,
    /// How it ended.
    pub outcome: Outcome,
    /// What follows: `delivered`, `retrying`, `dead`, `disabled`.
    pub result: String,
    /// How long the attempt took (ms).
    pub elapsed_ms: u64,
    /// From the oldest item's enqueue to now (ms).
    pub latency_ms: i64,
}

/// Asks for a dead letter to be sent again (the dispatcher picks the request up on its next pass).
pub async fn request_replay<S: ObjectStore>(store: &S, destination: &str, webhook_id: &str) -> Result<(), Error> {
    let key = dead_key(destination, webhook_id);
    let Some(object) = store.get(&key).await? else {
        return Err(Error::Config(shared::Error::Config(format!("no dead letter {webhook_id} for {destination}"))));
    };
    store.put(&replay_key(destination, webhook_id), object.body, PutOptions::json()).await?;
    Ok(())
}

/// The dead letters of a destination.
pub async fn dead_letters<S: ObjectStore>(store: &S, destination: &str) -> Result<Vec<DeadLetter>, Error> {
    let mut out = Vec::new();
    for meta in store.list(&format!("deliveries/v1/dead/{destination}/")).await? {
        if let Some(object) = store.get(&meta.key).await? {
            out.push(decode(&meta.key, &object.body)?);
        }
    }
    Ok(out)
}

/// Re-enables a destination a 410 disabled.
pub async fn enable<S: ObjectStore>(store: &S, destination: &str) -> Result<(), Error> {
    Ok(store.delete(&status_key(destination)).await?)
}

/// Drops everything about `profiles` from the stored lanes no running task owns (all but `running`) and from
/// every dead letter. With no dispatcher running (no destinations), erasures call it directly.
pub async fn forget_stored<S: ObjectStore>(
    store: &S,
    profiles: &BTreeSet<String>,
    running: &BTreeSet<(String, usize)>,
) -> Result<(), Error> {
    for meta in store.list("deliveries/v1/lanes/").await? {
        let mut parts = meta.key.trim_start_matches("deliveries/v1/lanes/").split('/');
        let (Some(id), Some(lane)) =
            (parts.next(), parts.next().and_then(|l| l.trim_end_matches(".json").parse().ok()))
        else {
            continue;
        };
        if running.contains(&(id.to_string(), lane)) {
            continue;
        }
        let Some(object) = store.get(&meta.key).await? else { continue };
        let mut state: Lane = decode(&meta.key, &object.body)?;
        if state.forget(profiles) > 0 {
            persist(store, id, lane, &state).await?;
        }
    }
    for meta in store.list("deliveries/v1/dead/").await? {
        let Some(object) = store.get(&meta.key).await? else { continue };
        let mut dead: DeadLetter = decode(&meta.key, &object.body)?;
        match dead.request.without(profiles) {
            None => store.delete(&meta.key).await?,
            Some(request) if request != dead.request => {
                dead.request = request;
                let body = serde_json::to_vec_pretty(&dead).map_err(Error::encoding)?;
                store.put(&meta.key, body, PutOptions::json()).await?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(key: &str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Corrupt(format!("{key}: {e}")))
}

pub(super) async fn persist<S: ObjectStore>(
    store: &S,
    destination: &str,
    lane: usize,
    state: &Lane,
) -> Result<(), Error> {
    let key = lane_key(destination, lane);
    if state.is_idle() && state.recent.is_empty() {
        store.delete(&key).await?;
        return Ok(());
    }
    let body = serde_json::to_vec(state).map_err(Error::encoding)?;
    store.put(&key, body, PutOptions::json()).await?;
    Ok(())
}
