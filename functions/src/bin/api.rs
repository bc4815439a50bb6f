//! The API Lambda: the API's router behind a function URL (payload format 2.0), on S3.

use functions::api::{Api, router};
use functions::storage::{S3Settings, S3Store};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    functions::config::init_lambda_logging();
    let store = S3Store::new(S3Settings::from_env()?);
    lambda_http::run(router(Api::new(store))).await
}
