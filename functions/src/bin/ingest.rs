//! The ingest Lambda: S3 notifications (through SQS) of new `raw/` objects → identity graph and profiles.
//!
//! Environment: `CDP_BUCKET`, `CDP_KMS_KEY_ID` (or `CDP_MASTER_KEY_FILE`), `AWS_REGION` and the role's credentials
//! (set by Lambda), optionally
//! `AWS_ENDPOINT_URL_S3` for an S3-compatible store. Reserved concurrency 1 keeps it a single writer; the
//! manifest's compare-and-swap keeps state safe even if two run.

use functions::config::now;
use functions::ingest::lambda::handle_payload;
use functions::lambda::init_logging;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let store = functions::lambda::store().await?;
    let store = &store;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle_payload(store, &event.payload, now()?).await.map_err(Error::from)
    }))
    .await
}
