//! `/v1/audit`: the audit log, newest first.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::access::{AuditRecord, Scope};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::{Api, ApiError, json_body};
use crate::storage::ObjectStore;

/// Most records one page holds.
const MAX_LIMIT: usize = 500;

/// Which records to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only this action (`api_key.create`, `profile.unlink`, ...), or every action of a kind (`api_key.`).
    action: Option<String>,
    /// Only records about this target (`api_key:…`, `source:web`, `profile:prof_…`).
    target: Option<String>,
    /// Records older than this record id (the previous page's `nextCursor`).
    cursor: Option<String>,
    /// Records per page, 1 to 500 (default 100).
    limit: Option<usize>,
}

/// One page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditPage {
    /// Newest first.
    #[schema(value_type = Vec<Object>)]
    records: Vec<AuditRecord>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    next_cursor: Option<String>,
}

/// Reads the audit log: who changed what and when, with configuration before and after.
#[utoipa::path(
    get, path = "/v1/audit", tag = "access",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page, newest first", body = AuditPage),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `audit:read`", body = ErrorBody),
    ),
    security(("apiKey" = ["audit:read"]))
)]
pub(crate) async fn list<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    api.authorize(&headers, Scope::AuditRead).await?;
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!("limit: must be 1 to {MAX_LIMIT}")));
    }
    let mut keys = api.store().list("audit/v1/").await?;
    // Keys are `audit/v1/dt=…/<ulid>.json`: by name is by time.
    keys.sort_by(|a, b| record_id(&b.key).cmp(record_id(&a.key)));
    let mut records = Vec::new();
    let mut next_cursor = None;
    for meta in keys {
        let id = record_id(&meta.key);
        if query.cursor.as_deref().is_some_and(|cursor| id >= cursor) {
            continue;
        }
        if records.len() == limit {
            next_cursor = records.last().map(|r: &AuditRecord| r.id.clone());
            break;
        }
        let Some(object) = api.store().get(&meta.key).await? else { continue };
        let record: AuditRecord = match serde_json::from_slice(&object.body) {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(key = %meta.key, %error, "unreadable audit record");
                continue;
            }
        };
        let action_matches = query
            .action
            .as_deref()
            .is_none_or(|a| if a.ends_with('.') { record.action.starts_with(a) } else { record.action == a });
        if action_matches && query.target.as_deref().is_none_or(|t| record.target == t) {
            records.push(record);
        }
    }
    Ok(json_body(&AuditPage { records, next_cursor }).into_response())
}

fn record_id(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key).trim_end_matches(".json")
}
