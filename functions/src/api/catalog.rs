//! `/v1/catalog`: the data dictionary — per source, the events and calls seen with their properties (observed
//! JSON types, examples, counts per day, first and last seen), and the traits, with data-quality issues.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shared::access::Scope;
use utoipa::IntoParams;

use super::error::ErrorBody;
use super::{Api, ApiError, json_body};
use crate::storage::ObjectStore;

/// What part of the dictionary to show.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CatalogQuery {
    /// Only this source.
    source: Option<String>,
    /// Only this track event (or call type: `identify`, `page`, …), in every source or in `source`.
    event: Option<String>,
}

/// Reads the data dictionary. Personal data's values are never in it (no examples for them).
#[utoipa::path(
    get, path = "/v1/catalog", tag = "config",
    params(CatalogQuery),
    responses(
        (status = 200, description = "`{\"sources\": {id: {\"events\": {name: entry}, \"calls\": {type: entry}}}, \"traits\": {name: field}}`; an entry: `count`, `firstSeen`, `lastSeen`, `days` (`{YYYY-MM-DD: {events, violations}}`), `properties`; a field: `count`, `types` (per JSON type), `examples`, `personal`, `firstSeen`, `lastSeen`, `issues`, `lastIssue`", body = Object),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `config:read`", body = ErrorBody),
    ),
    security(("apiKey" = ["config:read"]))
)]
pub(crate) async fn get<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
    query: Result<Query<CatalogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    api.authorize(&headers, Scope::ConfigRead).await?;
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let mut dictionary = crate::catalog::load(api.store()).await?;
    dictionary.only(query.source.as_deref(), query.event.as_deref());
    Ok(json_body(&dictionary).into_response())
}
