//! What the dispatcher and its lane tasks share: the settings, the store and sender, the commands a lane
//! task takes, and the clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use shared::activation::Reach;
use shared::activation::lane::{InFlight, Message};
use shared::event::CanonicalEvent;
use shared::time::UtcTime;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::http::Sender;
use crate::activation::AttemptRecord;
use crate::error::Error;

/// How often a lane that is delivering stores its state.
pub(super) const PERSIST_EVERY: Duration = Duration::from_secs(1);

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

pub(super) struct Shared<S> {
    pub(super) store: S,
    pub(super) sender: Sender,
    pub(super) disabled: HashMap<String, Arc<AtomicBool>>,
    pub(super) rates: HashMap<String, Arc<Mutex<tokio::time::Instant>>>,
    pub(super) observer: Option<Observer>,
    pub(super) log: mpsc::UnboundedSender<AttemptRecord>,
    pub(super) outcomes: mpsc::UnboundedSender<CanonicalEvent>,
}

pub(super) enum Command {
    Push(Vec<Message>, oneshot::Sender<Result<(), Error>>),
    Forget(Arc<BTreeSet<String>>, oneshot::Sender<Result<(), Error>>),
    Replay(Box<InFlight>, oneshot::Sender<Result<(), Error>>),
    Stop(oneshot::Sender<Result<(), Error>>),
}

pub(super) fn now_ms() -> i64 {
    crate::config::now().map(UtcTime::unix_millis).unwrap_or(0)
}
