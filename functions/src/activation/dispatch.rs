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

use shared::activation::DestinationDefinition;
use shared::activation::lane::{InFlight, Lane, Message};
use shared::storage::keys;
use shared::time::UtcTime;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::http::Sender;
use super::outbox::OUTBOX;
use crate::activation::DeadLetter;
use crate::activation::Observer;
use crate::activation::Settings;
use crate::activation::engine::Command;
use crate::activation::engine::Shared;
use crate::activation::engine::now_ms;
use crate::activation::lane::lane_task;
use crate::activation::records::log_writer;
use crate::activation::records::outcome_writer;
use crate::activation::stored::FORGET;
use crate::activation::stored::Forget;
use crate::activation::stored::dead_key;
use crate::activation::stored::decode;
use crate::activation::stored::forget_stored;
use crate::activation::stored::lane_key;
use crate::activation::stored::status_key;
use crate::error::Error;
use crate::storage::{ObjectStore, PutOptions};

/// The running dispatcher: one task per lane of every destination.
pub struct Dispatcher<S: ObjectStore + Clone> {
    pub(super) shared: Arc<Shared<S>>,
    pub(super) destinations: BTreeMap<String, DestinationDefinition>,
    pub(super) lanes: HashMap<(String, usize), mpsc::UnboundedSender<Command>>,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(super) logger: Option<tokio::task::JoinHandle<()>>,
    pub(super) outcome_writer: Option<tokio::task::JoinHandle<()>>,
    pub(super) drain: Option<i64>,
    /// Set when the outbox holds messages for a destination configured after this dispatcher started: its
    /// caller restarts it with the new configuration (the messages wait in the outbox until then).
    pub(super) stale: bool,
}

/// What to do with messages for a destination this dispatcher has no lane for.
pub(super) enum Unrouted {
    /// Configured since the dispatcher started: leave them in the outbox for a dispatcher that knows it.
    Wait,
    /// Turned off, or not configured at all: a dead letter naming the reason.
    DeadLetter,
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
