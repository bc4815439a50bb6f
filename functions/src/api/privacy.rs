//! `/v1/privacy/requests`: GDPR / CCPA requests by identifier (delete, suppress, unsuppress) and their status.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::access::Scope;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::{Api, ApiError, Change, json_body, parse_body};
use crate::privacy::{PrivacyRequest, RequestError, RequestKind, Status, get, submit};
use crate::storage::ObjectStore;
use crate::suppression::dropped_total;

/// A privacy request to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRequest {
    /// `delete` (erase the person), `suppress` (drop their future events at ingest) or `unsuppress`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    kind: RequestKind,
    /// 1 to 100 identifiers of the person (`email:jane@example.com`, `user_id:u1`, ...; for `delete` also
    /// profile ids).
    identifiers: Vec<String>,
}

/// A privacy request and where it stands. Once completed it holds only hashed identifiers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestView {
    /// `prv_…`.
    id: String,
    /// `delete`, `suppress` or `unsuppress`.
    #[serde(rename = "type")]
    kind: String,
    /// `pending`, `erasing` or `completed`.
    status: String,
    /// When it was made.
    created_at: String,
    /// When it last changed.
    updated_at: String,
    /// When it completed.
    completed_at: Option<String>,
    /// `sha256:` of each identifier's key.
    hashed_identifiers: Vec<String>,
    /// What it did so far.
    #[schema(value_type = Object)]
    outcome: Value,
    /// What an open erasure waits for.
    waiting_for: Option<String>,
}

fn view(request: &PrivacyRequest) -> RequestView {
    RequestView {
        id: request.id.clone(),
        kind: request.kind.name().to_string(),
        status: status_name(request.status).to_string(),
        created_at: request.created_at.to_string(),
        updated_at: request.updated_at.to_string(),
        completed_at: request.completed_at.map(|t| t.to_string()),
        hashed_identifiers: request.hashed_identifiers.clone(),
        outcome: serde_json::to_value(&request.outcome).unwrap_or(Value::Null),
        waiting_for: request.waiting_for.clone(),
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Pending => "pending",
        Status::Erasing => "erasing",
        Status::Completed => "completed",
    }
}

/// Makes a privacy request: suppressions apply at once (200); a deletion is queued (202) — poll its status.
#[utoipa::path(
    post, path = "/v1/privacy/requests", tag = "privacy",
    request_body = NewRequest,
    responses(
        (status = 200, description = "Suppression applied", body = RequestView),
        (status = 202, description = "Deletion queued", body = RequestView),
        (status = 400, description = "Bad type or identifiers", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `profiles:delete`", body = ErrorBody),
    ),
    security(("apiKey" = ["profiles:delete"]))
)]
pub(crate) async fn create<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ProfilesDelete).await?;
    let request: NewRequest = parse_body(&body)?;
    let made = match submit(api.store(), request.kind, &request.identifiers, actor.clone(), crate::config::now()?).await
    {
        Ok(made) => made,
        Err(RequestError::Invalid(problem)) => return Err(ApiError::invalid(problem)),
        Err(RequestError::Store(error)) => return Err(error.into()),
    };
    let detail = json!({"identifiers": made.hashed_identifiers});
    let change = Change { detail: Some(detail), ..Change::default() };
    api.audit(actor, &format!("privacy.{}", made.kind.name()), &format!("privacy_request:{}", made.id), change).await?;
    let status = if made.kind == RequestKind::Delete { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, json_body(&view(&made))).into_response())
}

/// A privacy request's status.
#[utoipa::path(
    get, path = "/v1/privacy/requests/{id}", tag = "privacy",
    params(("id" = String, Path, description = "The request's id (`prv_…`)")),
    responses(
        (status = 200, description = "The request", body = RequestView),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `profiles:delete`", body = ErrorBody),
        (status = 404, description = "No such request", body = ErrorBody),
    ),
    security(("apiKey" = ["profiles:delete"]))
)]
pub(crate) async fn status<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.authorize(&headers, Scope::ProfilesDelete).await?;
    match get(api.store(), &id).await? {
        Some(request) => Ok(json_body(&view(&request)).into_response()),
        None => Err(ApiError::not_found(format!("no privacy request {id:?}"))),
    }
}

/// How many identifiers are suppressed, and how many events ingest dropped for them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SuppressionView {
    /// Identifiers suppressed by request.
    suppressed: usize,
    /// Identifiers held while erasures run.
    erasing: usize,
    /// Events dropped at ingest so far.
    dropped_events: u64,
}

/// The suppression list's size and the events dropped for it.
#[utoipa::path(
    get, path = "/v1/privacy/suppressions", tag = "privacy",
    responses(
        (status = 200, description = "Counts", body = SuppressionView),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `profiles:delete`", body = ErrorBody),
    ),
    security(("apiKey" = ["profiles:delete"]))
)]
pub(crate) async fn suppressions<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.authorize(&headers, Scope::ProfilesDelete).await?;
    let list = crate::suppression::load_suppression(api.store()).await?;
    let view = SuppressionView {
        suppressed: list.suppressed.len(),
        erasing: list.erasing.values().map(|s| s.len()).sum(),
        dropped_events: dropped_total(api.store()).await?,
    };
    Ok(json_body(&view).into_response())
}
