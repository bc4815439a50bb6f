//! What the lanes report: outcomes written back to the lanes and dead letters, and the delivery log.

use std::collections::BTreeMap;
use std::time::Duration;

use shared::activation::lane::InFlight;
use shared::activation::{DestinationDefinition, Outcome};
use shared::event::CanonicalEvent;
use shared::ids::Entropy;
use shared::time::UtcTime;
use tokio::sync::mpsc;

use crate::activation::AttemptRecord;
use crate::activation::DeadLetter;
use crate::activation::engine::Shared;
use crate::activation::stored::dead_key;
use crate::storage::{ObjectStore, PutOptions};

/// The outcome events of a settled request's items (those with a subject), for the outcome writer.
pub(super) fn outcomes<S>(
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
pub(super) async fn outcome_writer<S: ObjectStore>(
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

pub(super) fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Status { status, .. } => format!("HTTP {status}"),
        Outcome::Timeout => "timed out".into(),
        Outcome::Connect { error } => format!("no connection: {error}"),
        Outcome::Refused { reason } => format!("refused: {reason}"),
    }
}

pub(super) async fn store_dead<S: ObjectStore>(store: &S, dead: &DeadLetter) {
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
pub(super) async fn log_writer<S: ObjectStore>(store: S, mut records: mpsc::UnboundedReceiver<AttemptRecord>) {
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

/// A generator seeded by the operating system for a writer task, or `None` (the error logged) if there is no
/// randomness: the task then drains its channel and writes nothing.
pub(super) fn writer_entropy(what: &str) -> Option<Entropy> {
    match crate::config::random_seed() {
        Ok(seed) => Some(Entropy::from_seed(seed)),
        Err(error) => {
            tracing::error!("{what} off: {error}");
            None
        }
    }
}
