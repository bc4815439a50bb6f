//! `POST /v1/feedback/{destination}`: partners report what they did with our deliveries. Authenticated by the
//! destination's webhook signature (Standard Webhooks headers, HMAC with its secret), not by an API key — see
//! `crate::activation::feedback`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Api, ApiError, json_body};
use crate::activation::feedback::{Signed, receive};
use crate::storage::ObjectStore;

/// Takes a partner's results (`{"results": [...]}`, docs/webhooks.md) as `Partner Feedback` events.
#[utoipa::path(
    post, path = "/v1/feedback/{destination}", tag = "deliveries",
    params(("destination" = String, Path, description = "The destination reporting")),
    request_body(content = Object, description = "`{\"results\": [{\"profileId\" | \"identifier\", \"result\", ...}]}`, signed with the destination's secret (`webhook-id`, `webhook-timestamp`, `webhook-signature`)"),
    responses(
        (status = 200, description = "Results taken (bad ones kept aside with their reasons)", body = Object),
        (status = 400, description = "Not JSON, or too many results", body = Object),
        (status = 401, description = "Not signed with the destination's secret", body = Object),
        (status = 404, description = "No such destination", body = Object),
        (status = 413, description = "Body over 512 KiB", body = Object),
    ),
    security(())
)]
pub(crate) async fn feedback<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(destination): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let signed = Signed {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
    };
    let seed = crate::config::random_seed()?;
    let answer = receive(api.store(), &destination, signed, &body, crate::config::now()?, seed).await?;
    if let (Some(key), Some(ingest)) = (&answer.raw_key, &api.ingest) {
        // `cdp up`'s ingest; in the cloud the object's notification does it.
        let _ = ingest.send(key.clone());
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    Ok((status, json_body(&answer.body)).into_response())
}
