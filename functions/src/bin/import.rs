//! The import Lambda: files put under `imports/<source id>/` (S3 notifications through SQS) → events in
//! `raw/`, through the source's mapping (`imports/<source id>/mapping.json`); see `functions::import::lambda`.
//!
//! Environment: `CDP_BUCKET`, `AWS_REGION` and the role's credentials (set by Lambda), optionally
//! `AWS_ENDPOINT_URL_S3` for an S3-compatible store and `CDP_IMPORT_MARGIN_SECONDS` (default 60): how long
//! before the deadline a run stops taking chunks and writes its checkpoint.

use std::time::{Duration, Instant, SystemTime};

use functions::config::{now, random_seed};
use functions::import::lambda::{Run, handle_payload};
use functions::lambda::init_logging;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let store = functions::lambda::store().await?;
    let store = &store;
    let margin = std::env::var("CDP_IMPORT_MARGIN_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60u64);
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        // The invocation's deadline, as an instant of this process's clock.
        let left = event.context.deadline().duration_since(SystemTime::now()).unwrap_or_default();
        let run = Run {
            stop_at: Instant::now() + left.saturating_sub(Duration::from_secs(margin)),
            tmp: std::env::temp_dir(),
            seed: random_seed()?,
        };
        handle_payload(store, &event.payload, now()?, &run).await.map_err(Error::from)
    }))
    .await
}
