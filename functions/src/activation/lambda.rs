//! The activation Lambda's event handling. It is invoked by SQS (notifications of new outbox objects:
//! `deliveries/v1/outbox/`) and by a schedule (every minute, for retries that came due and replays). Either
//! way it takes the whole outbox into the lanes and sends what is due until shortly before its deadline; what
//! waits longer (a retry in 5 minutes, 2 hours, …) stays in the stored lane for a later invocation. Reserved
//! concurrency 1: the lanes have one writer.

use serde_json::Value;
use shared::activation::{DestinationDefinition, Reach};

use super::dispatch::Dispatcher;
use super::engine::Settings;
use crate::Error;
use crate::notifications::{BatchItemFailure, SqsBatchResponse};
use crate::storage::ObjectStore;

/// Which addresses webhooks may reach: public only, unless `CDP_WEBHOOKS_LOOPBACK=true` (tests of the binary
/// against a receiver on the same machine; never set in the cloud — the Terraform module does not).
pub fn reach_from_env() -> Reach {
    match std::env::var("CDP_WEBHOOKS_LOOPBACK").as_deref() {
        Ok("true" | "1") => {
            tracing::warn!("CDP_WEBHOOKS_LOOPBACK is set: webhooks may reach loopback addresses (local testing only)");
            Reach::PublicAndLoopback
        }
        _ => Reach::Public,
    }
}

/// Time kept back from the invocation's deadline to store the lanes and answer.
pub const MARGIN_MS: i64 = 3_000;

/// Handles one invocation: `deadline_ms` is the invocation's deadline (ms since the epoch). For an SQS event
/// the answer is a partial batch response (every message failed if the outbox could not be taken, so SQS
/// redelivers); for a scheduled event, a summary.
pub async fn handle_payload<S: ObjectStore + Clone>(
    store: &S,
    payload: &Value,
    deadline_ms: i64,
    reach: Reach,
) -> Result<Value, Error> {
    let destinations: Vec<DestinationDefinition> = super::secrets::load_destinations(store).await?;
    let records: Vec<String> = payload["Records"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .filter(|r| r["eventSource"].as_str() == Some("aws:sqs"))
                .filter_map(|r| r["messageId"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let drain_until = deadline_ms - MARGIN_MS;
    let run = async {
        let mut dispatcher =
            Dispatcher::start(store.clone(), &destinations, Settings { reach, ingest: None }, None, Some(drain_until))
                .await?;
        let taken = dispatcher.intake().await;
        dispatcher.stop().await?;
        taken
    };
    match run.await {
        Ok(taken) => {
            tracing::info!(taken, destinations = destinations.len(), "deliveries run");
            if records.is_empty() {
                Ok(serde_json::json!({ "taken": taken }))
            } else {
                serde_json::to_value(SqsBatchResponse::default()).map_err(Error::encoding)
            }
        }
        Err(error) if !records.is_empty() => {
            tracing::error!(%error, messages = records.len(), "deliveries failed; SQS will redeliver");
            let failures = records.into_iter().map(|item_identifier| BatchItemFailure { item_identifier }).collect();
            serde_json::to_value(SqsBatchResponse { batch_item_failures: failures }).map_err(Error::encoding)
        }
        Err(error) => Err(error),
    }
}
