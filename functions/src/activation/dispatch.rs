//! The delivery engine: producers put messages in the outbox (one object per batch of messages, so nothing is
//! lost between a producer and the engine); the dispatcher moves them into per-destination lanes (each lane's
//! state stored under `deliveries/v1/lanes/`, so a restart or the next Lambda invocation resumes), and one task
//! per lane sends, signs, retries, dead-letters and logs. Destinations never wait on each other: each lane has
//! its own task, each attempt its own deadline, each destination its own rate limit.
//!
//! Keys:
//! - `deliveries/v1/outbox/<ulid>.ndjson.gz` — messages waiting for the dispatcher;
//! - `deliveries/v1/lanes/<destination>/<lane>.json` — a lane's queue and in-flight request;
//! - `deliveries/v1/dead/<destination>/<webhook-id>.json` — dead letters, with the last error;
//! - `deliveries/v1/replay/<destination>/<webhook-id>.json` — replay requests (`cdp deliveries replay`);
//! - `deliveries/v1/status/<destination>.json` — a destination disabled by a 410;
//! - `deliveries/v1/log/<destination>/dt=YYYY-MM-DD/<ulid>.ndjson.gz` — one record per attempt (ids, status,
//!   timings; never secrets or payloads).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shared::activation::lane::{InFlight, Lane, Message, Settled};
use shared::activation::{DestinationDefinition, Outcome, Reach, Verdict};
use shared::event::CanonicalEvent;
use shared::ids::Entropy;
use shared::storage::keys;
use shared::time::UtcTime;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::http::{Attempt, Sender};
use super::outbox::OUTBOX;
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

/// A generator seeded by the operating system for a writer task, or `None` (the error logged) if there is no
/// randomness: the task then drains its channel and writes nothing.
fn writer_entropy(what: &str) -> Option<Entropy> {
    match crate::config::random_seed() {
        Ok(seed) => Some(Entropy::from_seed(seed)),
        Err(error) => {
            tracing::error!("{what} off: {error}");
            None
        }
    }
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

fn decode<T: serde::de::DeserializeOwned>(key: &str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Corrupt(format!("{key}: {e}")))
}

/// How often a lane that is delivering stores its state.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// How the dispatcher runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which addresses webhooks may reach (loopback only with `cdp up`'s local switch).
    pub reach: Reach,
    /// Where to announce the raw objects of outcome events (`cdp up`'s ingest; in the cloud the object's
    /// notification does it).
    pub ingest: Option<mpsc::UnboundedSender<String>>,
}

/// What the lane tasks report to whoever watches (logs, the feedback loop, tests).
pub type Observer = mpsc::UnboundedSender<AttemptRecord>;

struct Shared<S> {
    store: S,
    sender: Sender,
    disabled: HashMap<String, Arc<AtomicBool>>,
    rates: HashMap<String, Arc<Mutex<tokio::time::Instant>>>,
    observer: Option<Observer>,
    log: mpsc::UnboundedSender<AttemptRecord>,
    outcomes: mpsc::UnboundedSender<CanonicalEvent>,
}

enum Command {
    Push(Vec<Message>, oneshot::Sender<Result<(), Error>>),
    Forget(Arc<BTreeSet<String>>, oneshot::Sender<Result<(), Error>>),
    Replay(Box<InFlight>, oneshot::Sender<Result<(), Error>>),
    Stop(oneshot::Sender<Result<(), Error>>),
}

/// The running dispatcher: one task per lane of every destination.
pub struct Dispatcher<S: ObjectStore + Clone> {
    shared: Arc<Shared<S>>,
    destinations: BTreeMap<String, DestinationDefinition>,
    lanes: HashMap<(String, usize), mpsc::UnboundedSender<Command>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    logger: Option<tokio::task::JoinHandle<()>>,
    outcome_writer: Option<tokio::task::JoinHandle<()>>,
    drain: Option<i64>,
    /// Set when the outbox holds messages for a destination configured after this dispatcher started: its
    /// caller restarts it with the new configuration (the messages wait in the outbox until then).
    stale: bool,
}

/// What to do with messages for a destination this dispatcher has no lane for.
enum Unrouted {
    /// Configured since the dispatcher started: leave them in the outbox for a dispatcher that knows it.
    Wait,
    /// Turned off, or not configured at all: a dead letter naming the reason.
    DeadLetter,
}

fn now_ms() -> i64 {
    crate::config::now().map(UtcTime::unix_millis).unwrap_or(0)
}

impl<S: ObjectStore + Clone> Dispatcher<S> {
    /// Starts a task for every lane of every enabled destination in `destinations`, resuming the stored lane
    /// states. With `drain_until` (ms; the Lambda's deadline) lane tasks stop once they have nothing due
    /// before it; without, they run until [`Dispatcher::stop`].
    pub async fn start(
        store: S,
        destinations: &[DestinationDefinition],
        settings: Settings,
        observer: Option<Observer>,
        drain_until: Option<i64>,
    ) -> Result<Self, Error> {
        let (log_tx, log_rx) = mpsc::unbounded_channel();
        let logger = tokio::spawn(log_writer(store.clone(), log_rx));
        let (outcome_tx, outcome_rx) = mpsc::unbounded_channel();
        let outcome_writer = tokio::spawn(outcome_writer(store.clone(), outcome_rx, settings.ingest.clone()));
        let mut disabled = HashMap::new();
        let mut rates = HashMap::new();
        for d in destinations {
            let off = store.get(&status_key(&d.id)).await?.is_some();
            disabled.insert(d.id.clone(), Arc::new(AtomicBool::new(off)));
            rates.insert(d.id.clone(), Arc::new(Mutex::new(tokio::time::Instant::now())));
        }
        let shared = Arc::new(Shared {
            store,
            sender: Sender::new(settings.reach),
            disabled,
            rates,
            observer,
            log: log_tx,
            outcomes: outcome_tx,
        });
        let mut dispatcher = Self {
            shared,
            destinations: destinations.iter().map(|d| (d.id.clone(), d.clone())).collect(),
            lanes: HashMap::new(),
            tasks: Vec::new(),
            logger: Some(logger),
            outcome_writer: Some(outcome_writer),
            drain: drain_until,
            stale: false,
        };
        for d in destinations.iter().filter(|d| d.enabled) {
            for lane in 0..shared::activation::LANES {
                let state: Lane = match dispatcher.shared.store.get(&lane_key(&d.id, lane)).await? {
                    Some(object) => decode(&lane_key(&d.id, lane), &object.body)?,
                    None => Lane::default(),
                };
                let (tx, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(lane_task(dispatcher.shared.clone(), d.clone(), lane, state, rx, drain_until));
                dispatcher.lanes.insert((d.id.clone(), lane), tx);
                dispatcher.tasks.push(task);
            }
        }
        Ok(dispatcher)
    }

    /// Whether the configuration moved on since this dispatcher started: messages for a destination it does
    /// not know are waiting in the outbox. Restart it with the configuration as it is now.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Moves every outbox object's messages and every replay request into the lanes (each lane stores them
    /// before the outbox object is deleted). Messages for turned-off destinations, and for destinations that
    /// the configuration as it is now does not name, become dead letters naming the reason. An object with
    /// messages for a destination configured after this dispatcher started stays in the outbox, whole, and
    /// the dispatcher reports itself [stale](Self::is_stale): a producer saw the new configuration first, and
    /// its messages wait for a dispatcher that knows it instead of being dead-lettered by the race. Returns
    /// the number of messages taken.
    pub async fn intake(&mut self) -> Result<usize, Error> {
        let store = self.shared.store.clone();
        // A destination re-enabled (`cdp deliveries enable`) resumes; its lanes notice within a second.
        for (id, flag) in &self.shared.disabled {
            flag.store(store.get(&status_key(id)).await?.is_some(), Ordering::Relaxed);
        }
        // Forget first: a deletion notice enqueued after a forget request must not be forgotten with it.
        for meta in store.list(FORGET).await? {
            let Some(object) = store.get(&meta.key).await? else { continue };
            let forget: Forget = decode(&meta.key, &object.body)?;
            self.forget(Arc::new(forget.profiles)).await?;
            store.delete(&meta.key).await?;
        }
        let mut taken = 0;
        for meta in store.list(OUTBOX).await? {
            let Some(object) = store.get(&meta.key).await? else { continue };
            let messages: Vec<Message> = shared::storage::decode_ndjson_gz(&object.body)
                .map_err(|e| Error::Corrupt(format!("{}: {e}", meta.key)))?;
            let unknown: BTreeSet<&str> = messages
                .iter()
                .map(|m| m.destination.as_str())
                .filter(|d| !self.destinations.contains_key(*d))
                .collect();
            if !unknown.is_empty() && matches!(self.unrouted(&unknown).await?, Unrouted::Wait) {
                self.stale = true;
                continue;
            }
            taken += messages.len();
            let mut by_lane: BTreeMap<(String, usize), Vec<Message>> = BTreeMap::new();
            for message in messages {
                by_lane.entry((message.destination.clone(), message.lane())).or_default().push(message);
            }
            let mut acks = Vec::new();
            for ((destination, lane), messages) in by_lane {
                match self.lanes.get(&(destination.clone(), lane)) {
                    Some(tx) => {
                        let (ack, done) = oneshot::channel();
                        tx.send(Command::Push(messages, ack))
                            .map_err(|_| Error::Machine(format!("the lane task of {destination} stopped")))?;
                        acks.push(done);
                    }
                    None => self.unroutable(&destination, lane, messages).await?,
                }
            }
            for done in acks {
                done.await.map_err(|_| Error::Machine("a lane task stopped".into()))??;
            }
            store.delete(&meta.key).await?;
        }
        for meta in store.list("deliveries/v1/replay/").await? {
            let Some(object) = store.get(&meta.key).await? else { continue };
            let dead: DeadLetter = decode(&meta.key, &object.body)?;
            let Some(tx) = self.lanes.get(&(dead.destination.clone(), dead.lane)) else { continue };
            let (ack, done) = oneshot::channel();
            tx.send(Command::Replay(Box::new(dead.request.clone()), ack))
                .map_err(|_| Error::Machine(format!("the lane task of {} stopped", dead.destination)))?;
            done.await.map_err(|_| Error::Machine("a lane task stopped".into()))??;
            store.delete(&dead_key(&dead.destination, &dead.request.webhook_id)).await?;
            store.delete(&meta.key).await?;
        }
        Ok(taken)
    }

    /// Drops everything about `profiles` from every lane (running or not) and every dead letter.
    async fn forget(&self, profiles: Arc<BTreeSet<String>>) -> Result<(), Error> {
        let lanes: BTreeSet<usize> = profiles.iter().map(|p| shared::activation::lane_of(p)).collect();
        let mut acks = Vec::new();
        for ((id, lane), tx) in &self.lanes {
            if lanes.contains(lane) {
                let (ack, done) = oneshot::channel();
                tx.send(Command::Forget(profiles.clone(), ack))
                    .map_err(|_| Error::Machine(format!("the lane task of {id} stopped")))?;
                acks.push(done);
            }
        }
        for done in acks {
            done.await.map_err(|_| Error::Machine("a lane task stopped".into()))??;
        }
        let running: BTreeSet<(String, usize)> = self.lanes.keys().cloned().collect();
        forget_stored(&self.shared.store, &profiles, &running).await
    }

    /// For messages to destinations this dispatcher does not know: whether the configuration as stored now
    /// names one of them (wait for a restart), or names none (dead letters). A configuration that does not
    /// read is waited out too: nothing is dead-lettered because of a file being edited.
    async fn unrouted(&self, unknown: &BTreeSet<&str>) -> Result<Unrouted, Error> {
        match crate::config::read::<_, Vec<DestinationDefinition>>(&self.shared.store, keys::CONFIG_DESTINATIONS).await
        {
            Ok(now) => {
                let configured = now.unwrap_or_default();
                Ok(if configured.iter().any(|d| unknown.contains(d.id.as_str())) {
                    Unrouted::Wait
                } else {
                    Unrouted::DeadLetter
                })
            }
            Err(Error::Config(problem)) => {
                tracing::warn!(%problem, "deliveries for new destinations wait until the configuration reads");
                Ok(Unrouted::Wait)
            }
            Err(error) => Err(error),
        }
    }

    async fn unroutable(&self, destination: &str, lane: usize, messages: Vec<Message>) -> Result<(), Error> {
        let reason = match self.destinations.get(destination) {
            Some(_) => format!("destination {destination} is turned off (enabled: false)"),
            None => format!("destination {destination} is not configured"),
        };
        let now = now_ms();
        let subjects: Vec<String> = messages.iter().map(|m| m.subject.clone().unwrap_or_default()).collect();
        let items: Vec<_> = messages.into_iter().map(|m| m.item).collect();
        let item_ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
        let webhook_id = format!("msg_{}", &shared::ids::sha256_hex(&item_ids.join("\n"))[..32]);
        let at = UtcTime::from_unix_millis(now).unwrap_or_else(|| unreachable!("now is in range"));
        let body = String::from_utf8(shared::activation::payload::body(destination, items, at)).unwrap_or_default();
        let request = InFlight {
            webhook_id,
            item_ids,
            subjects,
            body,
            attempts: 0,
            due_at: now,
            formed_at: now,
            oldest_enqueued_at: now,
            last_error: None,
        };
        let dead = DeadLetter { destination: destination.to_string(), lane, reason, dead_at: now, request };
        let key = dead_key(destination, &dead.request.webhook_id);
        let body = serde_json::to_vec_pretty(&dead).map_err(Error::encoding)?;
        self.shared.store.put(&key, body, PutOptions::json()).await?;
        Ok(())
    }

    /// In drain mode: waits until every lane task has finished (nothing due before the deadline), then flushes
    /// the log. Without drain mode, stops every lane task (each stores its state) and flushes the log.
    pub async fn stop(mut self) -> Result<(), Error> {
        if self.drain.is_none() {
            let mut acks = Vec::new();
            for tx in self.lanes.values() {
                let (ack, done) = oneshot::channel();
                if tx.send(Command::Stop(ack)).is_ok() {
                    acks.push(done);
                }
            }
            for done in acks {
                let _ = done.await;
            }
        }
        self.lanes.clear();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        // The writers end when every sender is gone.
        let writers = [self.logger.take(), self.outcome_writer.take()];
        drop(self);
        for writer in writers.into_iter().flatten() {
            let _ = writer.await;
        }
        Ok(())
    }
}

async fn persist<S: ObjectStore>(store: &S, destination: &str, lane: usize, state: &Lane) -> Result<(), Error> {
    let key = lane_key(destination, lane);
    if state.is_idle() && state.recent.is_empty() {
        store.delete(&key).await?;
        return Ok(());
    }
    let body = serde_json::to_vec(state).map_err(Error::encoding)?;
    store.put(&key, body, PutOptions::json()).await?;
    Ok(())
}

async fn lane_task<S: ObjectStore + Clone>(
    shared: Arc<Shared<S>>,
    destination: DestinationDefinition,
    lane_no: usize,
    mut lane: Lane,
    mut commands: mpsc::UnboundedReceiver<Command>,
    drain_until: Option<i64>,
) {
    let disabled = shared.disabled.get(&destination.id).cloned().unwrap_or_default();
    // Closed by `Dispatcher::stop`: without a deadline the task stops; with one it finishes what is due first.
    let mut closed = false;
    let mut stored_at = tokio::time::Instant::now();
    let mut dirty = false;
    loop {
        let now = now_ms();
        let off = disabled.load(Ordering::Relaxed);
        let due = if off { None } else { lane.due(&destination.batching) };
        // In drain mode an attempt that could outlast the deadline is left for the next run.
        let fits = drain_until.is_none_or(|deadline| now + destination.timeout_ms as i64 <= deadline);
        if due.is_some_and(|at| at <= now) && fits {
            attempt(&shared, &destination, lane_no, &mut lane, &disabled).await;
            // After a delivery the lane is stored at most once a second (and when it stops): a crash repeats at
            // most that second's deliveries (same webhook-ids and item ids), never loses one. A request that
            // failed is stored at once, with its attempts and next time.
            let failing = lane.current.as_ref().is_some_and(|c| c.attempts > 0);
            dirty = true;
            if failing || stored_at.elapsed() >= PERSIST_EVERY {
                if let Err(error) = persist(&shared.store, &destination.id, lane_no, &lane).await {
                    tracing::error!(destination = %destination.id, lane = lane_no, "could not store the lane: {error}");
                }
                (stored_at, dirty) = (tokio::time::Instant::now(), false);
            }
            continue;
        }
        let due = if fits { due } else { None };
        let finished = match drain_until {
            // Not before `stop` closes the channel: the intake may still bring work.
            Some(deadline) => closed && due.is_none_or(|at| at > deadline),
            None => closed,
        };
        if finished {
            if let Err(error) = persist(&shared.store, &destination.id, lane_no, &lane).await {
                tracing::error!(destination = %destination.id, lane = lane_no, "could not store the lane: {error}");
            }
            return;
        }
        let mut wait = match (due, drain_until) {
            (Some(at), _) => Duration::from_millis((at - now).max(0) as u64),
            (None, Some(deadline)) => Duration::from_millis((deadline - now).max(0) as u64),
            (None, None) => Duration::from_secs(3600),
        };
        if off {
            wait = wait.min(Duration::from_secs(1)); // to notice a re-enable
        }
        if dirty {
            let since = stored_at.elapsed();
            if since >= PERSIST_EVERY {
                if let Err(error) = persist(&shared.store, &destination.id, lane_no, &lane).await {
                    tracing::error!(destination = %destination.id, lane = lane_no, "could not store the lane: {error}");
                }
                (stored_at, dirty) = (tokio::time::Instant::now(), false);
            } else {
                wait = wait.min(PERSIST_EVERY - since);
            }
        }
        if closed {
            tokio::time::sleep(wait).await;
            continue;
        }
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Push(messages, ack)) => {
                    for message in messages {
                        lane.push(message);
                    }
                    let _ = ack.send(persist(&shared.store, &destination.id, lane_no, &lane).await);
                }
                Some(Command::Forget(profiles, ack)) => {
                    let result = if lane.forget(&profiles) > 0 {
                        persist(&shared.store, &destination.id, lane_no, &lane).await
                    } else {
                        Ok(())
                    };
                    let _ = ack.send(result);
                }
                Some(Command::Replay(request, ack)) => {
                    lane.replay(*request, now_ms());
                    let _ = ack.send(persist(&shared.store, &destination.id, lane_no, &lane).await);
                }
                Some(Command::Stop(ack)) => {
                    let _ = ack.send(persist(&shared.store, &destination.id, lane_no, &lane).await);
                    return;
                }
                None => closed = true,
            },
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One attempt of the lane's due request: rate limit, sign, send, settle, store, log.
async fn attempt<S: ObjectStore + Clone>(
    shared: &Arc<Shared<S>>,
    destination: &DestinationDefinition,
    lane_no: usize,
    lane: &mut Lane,
    disabled: &AtomicBool,
) {
    let Some(now) = crate::config::now().ok() else { return };
    let Some(request) = lane.next(&destination.id, &destination.batching, now).cloned() else { return };
    if let Some(rate) = shared.rates.get(&destination.id) {
        let slot = {
            let mut next = rate.lock().await;
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + Duration::from_secs(1) / destination.rate_limit_per_second.max(1);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
    let at = now_ms();
    let timestamp = at / 1000;
    let body = Bytes::from(request.body.clone().into_bytes());
    // Never an unsigned webhook: a destination whose secret is missing gets nothing (a dead letter, replayable
    // once the secret is stored).
    let Attempt { outcome, elapsed } = if destination.signing_secrets(at).next().is_none() {
        let reason = format!(
            "destination {} has no signing secret ({})",
            destination.id,
            shared::activation::DESTINATION_SECRETS
        );
        Attempt { outcome: Outcome::Refused { reason }, elapsed: Duration::ZERO }
    } else {
        let signature = shared::activation::signing::signature_header(
            destination.signing_secrets(at),
            &request.webhook_id,
            timestamp,
            &body,
        );
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("user-agent".to_string(), "cdp-webhooks/1".to_string()),
            ("webhook-id".to_string(), request.webhook_id.clone()),
            ("webhook-timestamp".to_string(), timestamp.to_string()),
            ("webhook-signature".to_string(), signature),
        ];
        headers.extend(destination.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        shared
            .sender
            .post(
                &destination.url,
                &headers,
                body,
                Duration::from_millis(destination.timeout_ms),
                destination.follow_redirects,
            )
            .await
    };
    let verdict = destination.retry_schedule.verdict(request.attempts + 1, &outcome);
    let error = match &verdict {
        Verdict::Delivered => None,
        _ => Some(describe(&outcome)),
    };
    let end = now_ms();
    let settled = lane.settle(verdict, error, end);
    match &settled {
        Some(Settled::Delivered(request)) => outcomes(shared, destination, request, None, end),
        Some(Settled::Dead(request, reason)) => outcomes(shared, destination, request, Some(reason), end),
        Some(Settled::Disabled(request)) => {
            outcomes(shared, destination, request, Some("the partner answered 410 Gone"), end)
        }
        _ => {}
    }
    let result = match &settled {
        Some(Settled::Delivered(_)) => "delivered",
        Some(Settled::Retrying { .. }) => "retrying",
        Some(Settled::Dead(request, reason)) => {
            let dead = DeadLetter {
                destination: destination.id.clone(),
                lane: lane_no,
                reason: reason.clone(),
                dead_at: end,
                request: request.clone(),
            };
            store_dead(&shared.store, &dead).await;
            "dead"
        }
        Some(Settled::Disabled(request)) => {
            disabled.store(true, Ordering::Relaxed);
            let reason = format!("the partner answered 410 Gone for {}", request.webhook_id);
            let status = Disabled { reason: reason.clone(), at: end };
            if let Ok(body) = serde_json::to_vec_pretty(&status)
                && let Err(error) = shared.store.put(&status_key(&destination.id), body, PutOptions::json()).await
            {
                tracing::error!(destination = %destination.id, "could not store the disabled status: {error}");
            }
            tracing::warn!(destination = %destination.id, "disabled: {reason}");
            let dead = DeadLetter {
                destination: destination.id.clone(),
                lane: lane_no,
                reason,
                dead_at: end,
                request: request.clone(),
            };
            store_dead(&shared.store, &dead).await;
            "disabled"
        }
        None => return,
    };
    let record = AttemptRecord {
        destination: destination.id.clone(),
        webhook_id: request.webhook_id.clone(),
        item_ids: request.item_ids.clone(),
        attempt: request.attempts + 1,
        at,
        outcome,
        result: result.to_string(),
        elapsed_ms: elapsed.as_millis() as u64,
        latency_ms: end - request.oldest_enqueued_at,
    };
    if let Some(observer) = &shared.observer {
        let _ = observer.send(record.clone());
    }
    let _ = shared.log.send(record);
}

/// The outcome events of a settled request's items (those with a subject), for the outcome writer.
fn outcomes<S>(
    shared: &Shared<S>,
    destination: &DestinationDefinition,
    request: &InFlight,
    reason: Option<&str>,
    at: i64,
) {
    let Ok(envelope) = serde_json::from_str::<shared::activation::Envelope>(&request.body) else { return };
    let Some(at) = UtcTime::from_unix_millis(at) else { return };
    for (i, item) in envelope.data.items.iter().enumerate() {
        let Some(subject) = request.subjects.get(i).filter(|s| !s.is_empty()) else { continue };
        let event = shared::activation::feedback::outcome_event(
            &destination.id,
            &request.webhook_id,
            item,
            subject,
            request.attempts,
            reason,
            at,
        );
        if let Some(event) = event {
            let _ = shared.outcomes.send(event);
        }
    }
}

/// Writes outcome events as raw objects (one a second at most), as the collector writes events, so ingest
/// applies them to the profiles; announces each object to `ingest` when given.
async fn outcome_writer<S: ObjectStore>(
    store: S,
    mut events: mpsc::UnboundedReceiver<CanonicalEvent>,
    ingest: Option<mpsc::UnboundedSender<String>>,
) {
    let Some(mut entropy) = writer_entropy("outcome events") else {
        while events.recv().await.is_some() {}
        return;
    };
    let mut open = true;
    while open {
        let mut batch = Vec::new();
        match events.recv().await {
            Some(event) => batch.push(event),
            None => break,
        }
        let flush_at = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(flush_at);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => batch.push(event),
                    None => { open = false; break; }
                },
                () = &mut flush_at => break,
            }
        }
        let Ok(now) = crate::config::now() else { continue };
        let key = shared::storage::object_key(shared::storage::ObjectKind::Raw, now, entropy.ulid(now));
        let body = shared::storage::encode_ndjson_gz(&batch);
        // A few tries: these events exist nowhere else.
        let mut stored = false;
        for attempt in 1..=5u64 {
            match store.put(&key, body.clone(), PutOptions::ndjson_gz()).await {
                Ok(_) => {
                    stored = true;
                    break;
                }
                Err(error) => {
                    tracing::warn!(%key, attempt, "could not store outcome events: {error}");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
            }
        }
        if !stored {
            tracing::error!(events = batch.len(), "outcome events lost: the store is unavailable");
            continue;
        }
        if let Some(ingest) = &ingest {
            let _ = ingest.send(key);
        }
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Status { status, .. } => format!("HTTP {status}"),
        Outcome::Timeout => "timed out".into(),
        Outcome::Connect { error } => format!("no connection: {error}"),
        Outcome::Refused { reason } => format!("refused: {reason}"),
    }
}

async fn store_dead<S: ObjectStore>(store: &S, dead: &DeadLetter) {
    let key = dead_key(&dead.destination, &dead.request.webhook_id);
    let stored = match serde_json::to_vec_pretty(dead) {
        Ok(body) => store.put(&key, body, PutOptions::json()).await.map(|_| ()),
        Err(error) => {
            tracing::error!("dead letter {key} does not encode: {error}");
            return;
        }
    };
    if let Err(error) = stored {
        tracing::error!("could not store dead letter {key}: {error}");
    }
}

/// Collects attempt records and writes them once a second (and at the end) as one object per destination.
async fn log_writer<S: ObjectStore>(store: S, mut records: mpsc::UnboundedReceiver<AttemptRecord>) {
    let Some(mut entropy) = writer_entropy("delivery log") else {
        while records.recv().await.is_some() {}
        return;
    };
    let mut buffer: BTreeMap<String, Vec<AttemptRecord>> = BTreeMap::new();
    let mut open = true;
    while open {
        let flush_at = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(flush_at);
        loop {
            tokio::select! {
                record = records.recv() => match record {
                    Some(record) => buffer.entry(record.destination.clone()).or_default().push(record),
                    None => { open = false; break; }
                },
                () = &mut flush_at => break,
            }
        }
        for (destination, records) in std::mem::take(&mut buffer) {
            let Ok(now) = crate::config::now() else { continue };
            let (date, _) = now.date_and_hour();
            let key = format!("deliveries/v1/log/{destination}/dt={date}/{}.ndjson.gz", entropy.ulid(now));
            if let Err(error) =
                store.put(&key, shared::storage::encode_ndjson_gz(&records), PutOptions::ndjson_gz()).await
            {
                tracing::error!("could not store the delivery log {key}: {error}");
            }
        }
    }
}
