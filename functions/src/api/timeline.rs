//! `GET /v1/profiles/{identifier}/events`: a profile's events, newest first, from the event store.
//!
//! The event store is the lake (Parquet parts by day, [`crate::lake`]) and the raw objects not compacted into
//! it yet. Newest first: the raw objects, then the parts; a part is read by range, its footer and bloom filters
//! first, so one that does not hold the person costs those and not its rows. A page reads at most [`MAX_OBJECTS`] objects; when it stops there it answers the events
//! found so far with a `nextCursor` to continue from.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::access::Scope;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::{Api, ApiError, json_body};
use crate::raw::read_object;
use crate::storage::ObjectStore;

/// Objects one page reads at most.
const MAX_OBJECTS: usize = 2_000;
/// Events per page at most.
const MAX_LIMIT: usize = 500;

/// Which events.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct TimelineQuery {
    /// Events per page, 1 to 500 (default 50).
    limit: Option<usize>,
    /// The previous page's `nextCursor`.
    cursor: Option<String>,
}

/// One page of a profile's events.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TimelinePage {
    /// The profile's id.
    id: String,
    /// Canonical events (as stored), newest received first; personal traits, properties and identifiers masked
    /// unless the key has `pii:read`.
    #[schema(value_type = Vec<Object>)]
    events: Vec<serde_json::Value>,
    /// Pass as `cursor` for older events; absent when there are none.
    next_cursor: Option<String>,
}

/// A position in the store: an object and how many of its (newest-first) events were already passed.
fn parse_cursor(cursor: &str) -> Option<(String, usize)> {
    let (key, skip) = cursor.rsplit_once('~')?;
    let skip = skip.parse().ok()?;
    ((key.starts_with("raw/") || key.starts_with(crate::lake::EVENTS)) && !key.contains(".."))
        .then(|| (key.to_string(), skip))
}

/// A profile's events, newest first.
#[utoipa::path(
    get,
    path = "/v1/profiles/{identifier}/events",
    tag = "profiles",
    params(("identifier" = String, Path, description = "As for the profile lookup"), TimelineQuery),
    responses(
        (status = 200, description = "One page of events", body = TimelinePage),
        (status = 308, description = "The profile id was merged into another; `Location` names it"),
        (status = 400, description = "Bad identifier or query", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `profiles:read`", body = ErrorBody),
        (status = 404, description = "No profile has this identifier", body = ErrorBody),
    ),
    security(("apiKey" = ["profiles:read"]))
)]
pub(crate) async fn events<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
    query: Result<Query<TimelineQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ProfilesRead).await?;
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!("limit: must be 1 to {MAX_LIMIT}")));
    }
    let start = match query.cursor.as_deref() {
        Some(cursor) => Some(parse_cursor(cursor).ok_or_else(|| ApiError::invalid("cursor: not one this API gave"))?),
        None => None,
    };
    let stored = match super::profiles::resolve(&api, &identifier, "/events").await? {
        Ok(stored) => stored,
        Err(redirect) => return Ok(redirect),
    };
    let disclosure = super::disclosure::Disclosure::for_caller(&api, &headers).await?;
    let what = if disclosure.reveals() { "events+pii" } else { "events" };
    super::profiles::audit_read(&api, actor, what, &stored.node.id, &identifier).await?;
    let keys: BTreeSet<String> = stored.node.identities.iter().cloned().collect();
    // Newest first: the raw objects not compacted yet, then the lake's parts.
    let (manifest, _) = crate::lake::manifest(api.store()).await?;
    let mut objects = crate::lake::raw_tail(api.store(), &manifest).await?;
    objects.reverse();
    let tail = objects.len();
    let parts = crate::lake::parts(api.store()).await?;
    objects.extend(parts.iter().rev().map(|part| part.key.clone()));
    let parts: std::collections::BTreeMap<&str, &crate::storage::ObjectMeta> =
        parts.iter().map(|part| (part.key.as_str(), part)).collect();
    let first = match &start {
        None => 0,
        Some((key, _)) => match objects.iter().position(|k| k == key) {
            Some(at) => at,
            // The object went: a raw one into the lake (go on with the parts), a part rewritten by an erasure.
            None if key.starts_with("raw/") => tail,
            None => objects.iter().skip(tail).position(|k| k < key).map_or(objects.len(), |at| tail + at),
        },
    };
    let mut events = Vec::new();
    let mut seen = BTreeSet::new();
    let mut next_cursor = None;
    for (read, key) in objects.iter().enumerate().skip(first) {
        if read - first >= MAX_OBJECTS {
            next_cursor = Some(format!("{key}~0"));
            break;
        }
        let theirs: Vec<shared::event::CanonicalEvent> = if key.starts_with(crate::lake::EVENTS) {
            let Some(part) = parts.get(key.as_str()) else { continue };
            crate::lake::find(api.store(), part, &keys).await?.into_iter().map(|(event, _)| event).collect()
        } else {
            let Some(object) = read_object(api.store(), key).await? else { continue };
            object.events.into_iter().filter(|e| e.identifier_keys().any(|k| keys.contains(&k))).collect()
        };
        let skip = match &start {
            Some((at, skip)) if at == key => *skip,
            _ => 0,
        };
        for (i, event) in theirs.iter().rev().enumerate().skip(skip) {
            if events.len() == limit {
                next_cursor = Some(format!("{key}~{i}"));
                break;
            }
            if seen.insert(event.dedup_key()) {
                let mut event = event.clone();
                disclosure.event(&mut event);
                events.push(serde_json::to_value(event).map_err(crate::Error::encoding)?);
            }
        }
        if next_cursor.is_some() {
            break;
        }
    }
    Ok(json_body(&TimelinePage { id: stored.node.id, events, next_cursor }).into_response())
}
