//! The ingest Lambda's event handling: SQS batches of S3 notifications (with partial batch failures), a
//! direct S3 event, or the schedule's event, which reconciles (applies raw objects whose notification was
//! lost, see [`super::reconcile`]).

use serde_json::Value;
use shared::time::UtcTime;

use super::ingest;
use super::reconcile::{Timing, reconcile};
use crate::Error;
use crate::notifications::{BatchItemFailure, SqsBatchResponse};
use crate::notifications::{keys_of_s3_event, keys_of_sqs_event};
use crate::snapshot::RunConfig;
use crate::storage::ObjectStore;

/// Handles one invocation's payload.
///
/// SQS (records with `eventSource: aws:sqs`): the keys of every readable message are ingested together;
/// messages whose body is not an S3 notification, or all of them if the ingest fails, are reported in
/// `batchItemFailures` so SQS redelivers only those (and, after the redrive limit, parks them in the DLQ).
/// A direct S3 event: its keys are ingested; a failure is an error, and Lambda retries the event.
pub async fn handle_payload<S: ObjectStore + Clone>(store: &S, payload: &Value, now: UtcTime) -> Result<Value, Error> {
    let config = RunConfig::load(store).await?;
    if payload["detail-type"].as_str() == Some("Scheduled Event") {
        let report = reconcile(store, &config, now, Timing::CLOUD).await?;
        tracing::info!(
            listed = report.listed,
            missing = report.missing,
            applied = report.applied,
            unverifiable = report.unverifiable,
            "ingest reconciled"
        );
        return serde_json::to_value(&report).map_err(Error::encoding);
    }
    let is_sqs = payload["Records"].as_array().and_then(|r| r.first()).and_then(|r| r["eventSource"].as_str())
        == Some("aws:sqs");
    if !is_sqs {
        let keys = keys_of_s3_event(payload).map_err(|e| Error::Invalid(format!("unexpected payload: {e}")))?;
        let report = ingest(store, &keys, &config, now).await?;
        report.log();
        return Ok(serde_json::json!({ "applied": report.applied, "duplicates": report.duplicates }));
    }
    let messages = keys_of_sqs_event(payload).map_err(|e| Error::Invalid(format!("unexpected payload: {e}")))?;
    let mut response = SqsBatchResponse::default();
    let mut keys = Vec::new();
    let mut carried = Vec::new();
    for (message_id, parsed) in messages {
        match parsed {
            Ok(message_keys) => {
                keys.extend(message_keys);
                carried.push(message_id);
            }
            Err(reason) => {
                tracing::warn!(%message_id, %reason, "message is not an S3 notification");
                response.batch_item_failures.push(BatchItemFailure { item_identifier: message_id });
            }
        }
    }
    match ingest(store, &keys, &config, now).await {
        Ok(report) => report.log(),
        Err(error) => {
            tracing::error!(%error, messages = carried.len(), "ingest failed; SQS will redeliver");
            response
                .batch_item_failures
                .extend(carried.into_iter().map(|item_identifier| BatchItemFailure { item_identifier }));
        }
    }
    serde_json::to_value(&response).map_err(Error::encoding)
}
