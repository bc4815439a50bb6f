//! The API Lambda: the API's router behind a function URL (payload format 2.0), on S3.
//!
//! Environment: `CDP_BUCKET`, `CDP_KMS_KEY_ID`, `AWS_REGION`, credentials, optionally `AWS_ENDPOINT_URL_S3`; `CDP_WEBHOOKS_LOOPBACK`
//! only for local tests (destinations on loopback addresses).

use functions::activation::lambda::reach_from_env;
use functions::api::{Api, router};
use shared::activation::Reach;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    functions::lambda::init_logging();
    let store = functions::lambda::store().await?;
    let loopback = reach_from_env() == Reach::PublicAndLoopback;
    lambda_http::run(router(Api::with_loopback(store, loopback))).await
}
