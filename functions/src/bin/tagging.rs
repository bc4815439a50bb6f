//! The tagging Lambda: a scheduled full recompute of tags and audiences (EventBridge Scheduler or a rule
//! invokes it, e.g. every 15 minutes, for windowed tags whose values change as time passes).
//!
//! Payload: an EventBridge `Scheduled Event` (its `time` is the computation's "now"), or `{}` (the clock).
//! Each run first advances open privacy erasures ([`functions::privacy::process`]), then compacts the raw
//! objects named more than ten minutes ago into the event lake ([`functions::lake::compact`]) and folds what
//! ingest observed into the data dictionary ([`functions::catalog::fold`]). Answers the report
//! (coverage and audience sizes). Environment as the ingest function's: `CDP_BUCKET`, `CDP_KMS_KEY_ID`, `AWS_REGION`,
//! credentials, optionally `AWS_ENDPOINT_URL_S3`; `CDP_PRIVACY_GRACE_SECONDS` (default 300): how long state
//! objects that held an erased person stay for readers of the previous state. Reserved concurrency 1: one
//! computation at a time.

use functions::config::now;
use functions::lambda::init_logging;
use functions::tagging::full_recompute;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;
use shared::time::UtcTime;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_logging();
    let store = functions::lambda::store().await?;
    let store = &store;
    let grace_ms =
        std::env::var("CDP_PRIVACY_GRACE_SECONDS").ok().and_then(|s| s.parse::<i64>().ok()).unwrap_or(300) * 1000;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now = match event.payload["time"].as_str() {
            Some(time) => UtcTime::parse(time).ok_or_else(|| format!("the event's time {time:?} is not RFC 3339"))?,
            None => now()?,
        };
        // Open erasures first: a recompute must not bring an erased person's ids back into tags or audiences.
        let advanced = functions::privacy::process(store, grace_ms, now).await?;
        if advanced > 0 {
            tracing::info!(requests = advanced, "privacy requests advanced");
        }
        // Raw objects into the lake, which the recompute reads (with the few not compacted yet).
        // A compaction that fails does not hold up the recompute, which reads what is not compacted from raw/.
        match functions::lake::compact_all(store, functions::lake::SETTLE_MS, now, 50).await {
            Ok(events) => tracing::info!(events, "raw events compacted into the lake"),
            Err(error) => tracing::error!(%error, "raw events not compacted; the recompute reads them from raw/"),
        }
        // What ingest observed into the data dictionary; a fold that fails leaves the parts for the next run
        // (readers see them meanwhile).
        match functions::catalog::fold_all(store, now, 20).await {
            Ok(parts) => tracing::info!(parts, "data dictionary folded"),
            Err(error) => tracing::error!(%error, "data dictionary not folded"),
        }
        let report = full_recompute(store, now).await?;
        tracing::info!(profiles = report.profiles, events = report.events, "tags and audiences computed");
        serde_json::to_value(&report).map_err(Error::from)
    }))
    .await
}
