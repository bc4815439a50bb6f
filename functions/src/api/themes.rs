//! `/v1/themes`: one-click theme dashboards ([`crate::analysis::themes`]), assembled from the data dictionary.
//! Listing what each theme would hold needs `analysis:read`; assembling one (saving its insights and dashboard)
//! `analysis:write`, and is audited.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shared::access::Scope;

use super::error::ErrorBody;
use super::{Api, ApiError, json_body};
use crate::analysis::themes::{Assembled, THEMES, Theme, assemble_stored, audited, save};
use crate::storage::ObjectStore;

/// Each theme as the data supports it now.
async fn assembled<S: ObjectStore + Clone>(api: &Api<S>, themes: &[Theme]) -> Result<Vec<Assembled>, ApiError> {
    Ok(assemble_stored(api.store(), themes, crate::config::now()?).await?)
}

/// Lists the themes: for each, the dashboard and insights the data supports now, and what it would leave out.
#[utoipa::path(
    get, path = "/v1/themes", tag = "analysis",
    responses(
        (status = 200, description = "`{\"themes\": [{\"theme\": \"acquisition\"|\"ecommerce\"|\"retention\"|\"value\"|\"audiences\", \"dashboard\"?: {…as /v1/dashboards}, \"insights\": [{…as /v1/insights}], \"leftOut\": [{\"insight\", \"name\", \"reason\"}]}]}`", body = Object),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:read`", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:read"]))
)]
pub(crate) async fn list_themes<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.authorize(&headers, Scope::AnalysisRead).await?;
    let themes = assembled(&api, &THEMES).await?;
    Ok(json_body(&json!({"themes": themes})).into_response())
}

/// Assembles a theme: saves the insights the data supports (ids `theme-<theme>-…`, replacing those of an
/// earlier assembly) and its dashboard (`theme-<theme>`); answers what was saved and what was left out, and why.
#[utoipa::path(
    post, path = "/v1/themes/{theme}", tag = "analysis",
    params(("theme" = String, Path, description = "acquisition, ecommerce, retention, value or audiences")),
    responses(
        (status = 200, description = "`{\"theme\", \"dashboard\", \"insights\", \"leftOut\": [{\"insight\", \"name\", \"reason\"}]}`", body = Object),
        (status = 400, description = "An unknown theme, or one the data supports none of (the message says why)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:write`", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:write"]))
)]
pub(crate) async fn assemble_theme<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(theme): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::AnalysisWrite).await?;
    let theme = Theme::parse(&theme)?;
    let mut assembled = assembled(&api, &[theme]).await?;
    let Some(assembled) = assembled.pop() else {
        return Err(ApiError::invalid(format!("theme {}: nothing assembled", theme.id())));
    };
    let key = crate::suppression::hash_key(api.store()).await?;
    let replaced = save(api.store(), &assembled).await?;
    let change = audited(&assembled, &replaced, &key);
    api.audit(actor, "theme.assemble", &format!("theme:{}", theme.id()), change).await?;
    Ok(json_body(&assembled).into_response())
}
