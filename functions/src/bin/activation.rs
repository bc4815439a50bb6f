//! The activation Lambda: delivers audience entries and exits, triggered events and profile changes to
//! partners' webhooks (Standard Webhooks signatures, retries, dead letters).
//!
//! Invoked by SQS (S3 notifications of `deliveries/v1/outbox/` objects, with partial batch responses) and by
//! an EventBridge schedule every minute (retries that came due, replays). Environment: `CDP_BUCKET`, `CDP_KMS_KEY_ID`,
//! `AWS_REGION`, credentials, optionally `AWS_ENDPOINT_URL_S3`. Reserved concurrency 1 (one writer of the
//! lanes); the timeout bounds how long one invocation keeps sending (the dispatcher stops 3 s before it).

use functions::activation::lambda::{handle_payload, reach_from_env};
use functions::lambda::init_logging;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let store = functions::lambda::store().await?;
    let store = &store;
    let reach = reach_from_env();
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = event.context.deadline as i64;
        handle_payload(store, &event.payload, deadline, reach).await.map_err(Error::from)
    }))
    .await
}
