//! `/v1/api-keys`: create (shown once), list and revoke API keys. Admin only.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::access::{ApiKey, Scope};
use shared::ids::Entropy;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::{Api, ApiError, Change, json_body, parse_body, update_keys};
use crate::storage::ObjectStore;

/// An API key as listed: never its secret or hash.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiKeyView {
    /// Public id (part of the key).
    id: String,
    /// What it is for.
    name: String,
    /// Its scopes.
    #[schema(value_type = Vec<String>)]
    scopes: BTreeSet<Scope>,
    /// When it was created.
    created_at: String,
    /// Who created it.
    created_by: String,
    /// When it was revoked.
    revoked_at: Option<String>,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(key: &ApiKey) -> Self {
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            scopes: key.scopes.clone(),
            created_at: key.created_at.to_string(),
            created_by: key.created_by.clone(),
            revoked_at: key.revoked_at.map(|t| t.to_string()),
        }
    }
}

/// Every API key, active and revoked.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApiKeyList {
    /// Oldest first.
    keys: Vec<ApiKeyView>,
}

/// A key to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    /// What it is for (1 to 200 characters).
    name: String,
    /// `profiles:read`, `profiles:write`, `profiles:delete`, `config:read`, `config:write`, `audit:read`, `pii:send`,
    /// `pii:read`, `analysis:read`, `analysis:write`, `admin`.
    scopes: Vec<String>,
}

/// A new key: `key` is shown this once; only its hash is stored.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreatedKey {
    /// The key, for `Authorization: Bearer …`. Store it now: it cannot be shown again.
    key: String,
    /// Its record.
    api_key: ApiKeyView,
}

/// Lists API keys.
#[utoipa::path(
    get, path = "/v1/api-keys", tag = "access",
    responses(
        (status = 200, description = "Every key (without secrets)", body = ApiKeyList),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `admin`", body = ErrorBody),
    ),
    security(("apiKey" = ["admin"]))
)]
pub(crate) async fn list<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.authorize(&headers, Scope::Admin).await?;
    let keys = super::load_keys(api.store()).await?;
    Ok(json_body(&ApiKeyList { keys: keys.list().iter().map(ApiKeyView::from).collect() }).into_response())
}

/// Creates an API key; the answer carries the key once.
#[utoipa::path(
    post, path = "/v1/api-keys", tag = "access",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created; the key is in the answer, once", body = CreatedKey),
        (status = 400, description = "Bad name or scopes", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `admin`", body = ErrorBody),
    ),
    security(("apiKey" = ["admin"]))
)]
pub(crate) async fn create<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::Admin).await?;
    let request: CreateKey = parse_body(&body)?;
    let mut scopes = BTreeSet::new();
    for name in &request.scopes {
        let scope = Scope::parse(name).ok_or_else(|| {
            ApiError::invalid(format!(
                "scopes: unknown scope {name:?} (one of {})",
                Scope::ALL.map(Scope::name).join(", ")
            ))
        })?;
        scopes.insert(scope);
    }
    let now = crate::config::now()?;
    let mut entropy = Entropy::from_seed(crate::config::random_seed()?);
    let new = update_keys(api.store(), |keys| {
        keys.create(&request.name, scopes.clone(), &actor.id, now, &mut entropy).map_err(ApiError::invalid)
    })
    .await?;
    api.keys_changed().await;
    let view = ApiKeyView::from(&new.record);
    let after = serde_json::to_value(&view).ok();
    api.audit(actor, "api_key.create", &format!("api_key:{}", view.id), Change { after, ..Change::default() }).await?;
    Ok((StatusCode::CREATED, json_body(&CreatedKey { key: new.key, api_key: view })).into_response())
}

/// Revokes an API key at once (in this function; other warm instances within 2 s).
#[utoipa::path(
    delete, path = "/v1/api-keys/{id}", tag = "access",
    params(("id" = String, Path, description = "The key's public id")),
    responses(
        (status = 200, description = "Revoked", body = ApiKeyView),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `admin`", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "The key making the request", body = ErrorBody),
    ),
    security(("apiKey" = ["admin"]))
)]
pub(crate) async fn revoke<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::Admin).await?;
    if actor.id == id {
        return Err(ApiError::conflict(
            "a key cannot revoke itself (that would lock its holder out); revoke it with another admin key or `cdp api-key revoke`",
        ));
    }
    let now = crate::config::now()?;
    let (before, after) = update_keys(api.store(), |keys| {
        let before = keys.revoke(&id, now).ok_or_else(|| ApiError::not_found(format!("no API key {id:?}")))?;
        let after = keys.get(&id).cloned().unwrap_or_else(|| before.clone());
        Ok((ApiKeyView::from(&before), ApiKeyView::from(&after)))
    })
    .await?;
    api.keys_changed().await;
    let change =
        Change { before: serde_json::to_value(&before).ok(), after: serde_json::to_value(&after).ok(), detail: None };
    api.audit(actor, "api_key.revoke", &format!("api_key:{id}"), change).await?;
    Ok(json_body(&after).into_response())
}
