//! `/v1/tags`, `/v1/audiences`, `/v1/destinations`: the definitions in `config/`, listed with how they are
//! doing, and changed one at a time through [`crate::definitions`] (checked, compare-and-swap, audited), as
//! `cdp` changes them too.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use shared::access::Scope;
use shared::audiences::Snapshot;
use shared::storage::keys;

use super::{Api, ApiError, Change, json_body, parse_body};
use crate::Error;
use crate::activation::stored::{dead_letters, enable, request_replay, status_key};
use crate::definitions::{Checking, Definitions, Kind, id_of, read_array, shown};
use crate::storage::ObjectStore;
use crate::tagging::{Report, latest_report};

/// The answer for one definition: it (shown) with how it is doing.
async fn described<S: ObjectStore>(
    store: &S,
    kind: Kind,
    definition: &Value,
    report: Option<&Report>,
) -> Result<Value, ApiError> {
    let id = id_of(definition).unwrap_or_default();
    let mut out = json!({"definition": shown(kind, definition)});
    match kind {
        Kind::Tags => {
            if let Some(report) = report
                && let Some(tag) = report.tags.get(id)
            {
                out["computed"] = json!({"computedAt": millis(report.computed_at), "version": tag.version,
                                         "withValue": tag.with_value, "coverage": tag.coverage});
            }
        }
        Kind::Audiences => {
            if let Some(report) = report
                && let Some(audience) = report.audiences.get(id)
            {
                out["computed"] = json!({"computedAt": millis(report.computed_at), "size": audience.size,
                                         "entered": audience.entered, "exited": audience.exited});
            }
        }
        Kind::Destinations => {
            let status = match store.get(&status_key(id)).await? {
                Some(object) => serde_json::from_slice(&object.body).unwrap_or(Value::Null),
                None => Value::Null,
            };
            out["delivery"] = json!({"disabled": !status.is_null(), "status": status});
        }
    }
    Ok(out)
}

fn millis(ms: i64) -> String {
    shared::time::UtcTime::from_unix_millis(ms).map(|t| t.to_string()).unwrap_or_default()
}

pub(crate) async fn list_definitions<S: ObjectStore + Clone>(
    kind: Kind,
    api: Arc<Api<S>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.authorize(&headers, Scope::ConfigRead).await?;
    let mut definitions = Definitions::load(api.store()).await?;
    let report = latest_report(api.store()).await?;
    let mut items = Vec::new();
    for definition in definitions.of(kind).iter() {
        items.push(described(api.store(), kind, definition, report.as_ref()).await?);
    }
    let mut body = Map::new();
    body.insert(kind.plural().to_string(), Value::Array(items));
    Ok(json_body(&body).into_response())
}

pub(crate) async fn get_definition<S: ObjectStore + Clone>(
    kind: Kind,
    api: Arc<Api<S>>,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.authorize(&headers, Scope::ConfigRead).await?;
    let mut definitions = Definitions::load(api.store()).await?;
    let Some(definition) = definitions.of(kind).iter().find(|d| id_of(d) == Some(id.as_str())).cloned() else {
        return Err(ApiError::not_found(format!("no {} {id:?}", kind.noun())));
    };
    let report = latest_report(api.store()).await?;
    let mut out = described(api.store(), kind, &definition, report.as_ref()).await?;
    if kind == Kind::Audiences {
        out["history"] = audience_history(api.store(), &id).await?;
        out["insight"] = match api.store().get(&keys::audience(&id, "insight.json")).await? {
            Some(object) => serde_json::from_slice(&object.body).unwrap_or(Value::Null),
            None => Value::Null,
        };
    }
    Ok(json_body(&out).into_response())
}

/// An audience's size over time and its last changes (counts, with up to 100 profile ids each).
async fn audience_history<S: ObjectStore>(store: &S, id: &str) -> Result<Value, ApiError> {
    let sizes = match store.get(&keys::audience(id, "snapshot.json.gz")).await? {
        Some(object) => shared::storage::gunzip(&object.body)
            .ok()
            .and_then(|json| serde_json::from_slice::<Snapshot>(&json).ok())
            .map(|s| s.sizes.iter().map(|(at, size)| json!({"at": millis(*at), "size": size})).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut diffs = Vec::new();
    let mut keys = store.list(&keys::audience(id, "diffs/")).await?;
    keys.reverse();
    for meta in keys.into_iter().take(10) {
        let Some(object) = store.get(&meta.key).await? else { continue };
        let Ok(diff) = serde_json::from_slice::<Value>(&object.body) else { continue };
        let sample = |name: &str| -> Value {
            let ids = diff[name].as_array().cloned().unwrap_or_default();
            json!({"count": ids.len(), "profiles": ids.into_iter().take(100).collect::<Vec<_>>()})
        };
        diffs.push(json!({"computedAt": diff["computedAt"].as_i64().map(millis), "entered": sample("entered"),
                          "exited": sample("exited")}));
    }
    Ok(json!({"sizes": Value::Array(sizes), "recentChanges": diffs}))
}

pub(crate) async fn put_definition<S: ObjectStore + Clone>(
    kind: Kind,
    api: Arc<Api<S>>,
    id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ConfigWrite).await?;
    let definition: Value = parse_body(&body)?;
    // A destination that receives personal data, pointed anywhere, reads every person's: its own scope.
    if kind == Kind::Destinations && definition.get("allowPii") == Some(&Value::Bool(true)) {
        api.authorize(&headers, Scope::PiiSend).await?;
    }
    let checking = Checking { loopback: api.loopback, create_only: false };
    let put = crate::definitions::put(api.store(), kind, &id, definition, actor, checking).await?;
    let status = if put.before.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    let report = latest_report(api.store()).await?;
    let out = described(api.store(), kind, &put.after, report.as_ref()).await?;
    Ok((status, json_body(&out)).into_response())
}

pub(crate) async fn delete_definition<S: ObjectStore + Clone>(
    kind: Kind,
    api: Arc<Api<S>>,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ConfigWrite).await?;
    let checking = Checking { loopback: api.loopback, create_only: false };
    crate::definitions::delete(api.store(), kind, &id, actor, checking).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A destination's dead letters (without their bodies, which may hold personal data).
pub(crate) async fn dead<S: ObjectStore + Clone>(
    api: Arc<Api<S>>,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.authorize(&headers, Scope::ConfigRead).await?;
    known_destination(api.store(), &id).await?;
    let letters = dead_letters(api.store(), &id).await?;
    let letters: Vec<Value> = letters
        .iter()
        .map(|d| {
            json!({"webhookId": d.request.webhook_id, "reason": d.reason, "deadAt": millis(d.dead_at),
                   "items": d.request.item_ids.len(), "attempts": d.request.attempts,
                   "lastError": d.request.last_error})
        })
        .collect();
    Ok(json_body(&json!({"deadLetters": letters})).into_response())
}

/// Sends a dead letter again, with the same id and bytes.
pub(crate) async fn replay<S: ObjectStore + Clone>(
    api: Arc<Api<S>>,
    (id, webhook_id): (String, String),
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ConfigWrite).await?;
    known_destination(api.store(), &id).await?;
    if !webhook_id.starts_with("msg_") || !webhook_id[4..].bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::not_found(format!("no dead letter {webhook_id:?} (webhook ids look like msg_…)")));
    }
    match request_replay(api.store(), &id, &webhook_id).await {
        Ok(()) => {}
        Err(Error::Config(problem)) => return Err(ApiError::not_found(problem)),
        Err(other) => return Err(other.into()),
    }
    let change = Change { detail: Some(json!({"webhookId": webhook_id})), ..Change::default() };
    api.audit(actor, "destination.replay", &format!("destination:{id}"), change).await?;
    Ok((StatusCode::ACCEPTED, json_body(&json!({"replay": webhook_id}))).into_response())
}

/// Re-enables a destination a partner's 410 disabled.
pub(crate) async fn reenable<S: ObjectStore + Clone>(
    api: Arc<Api<S>>,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ConfigWrite).await?;
    known_destination(api.store(), &id).await?;
    enable(api.store(), &id).await?;
    api.audit(actor, "destination.enable", &format!("destination:{id}"), Change::default()).await?;
    Ok(json_body(&json!({"enabled": id})).into_response())
}

/// 404 unless `id` is a configured destination (ids from paths become object keys only after this).
async fn known_destination<S: ObjectStore>(store: &S, id: &str) -> Result<(), ApiError> {
    let destinations = read_array(store, keys::CONFIG_DESTINATIONS).await?;
    if destinations.iter().any(|d| id_of(d) == Some(id)) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no destination {id:?}")))
    }
}

/// The routes, one set per kind.
pub(crate) fn routes<S: ObjectStore + Clone>(router: axum::Router<Arc<Api<S>>>) -> axum::Router<Arc<Api<S>>> {
    use axum::routing::{get, post};
    type Api_<S> = State<Arc<Api<S>>>;
    let mut router = router;
    for kind in [Kind::Tags, Kind::Audiences, Kind::Destinations] {
        router = router
            .route(
                &format!("/v1/{}", kind.plural()),
                get(move |State(api): Api_<S>, headers: HeaderMap| list_definitions(kind, api, headers)),
            )
            .route(
                &format!("/v1/{}/{{id}}", kind.plural()),
                get(move |State(api): Api_<S>, Path(id): Path<String>, headers: HeaderMap| {
                    get_definition(kind, api, id, headers)
                })
                .put(move |State(api): Api_<S>, Path(id): Path<String>, headers: HeaderMap, body: Bytes| {
                    put_definition(kind, api, id, headers, body)
                })
                .delete(move |State(api): Api_<S>, Path(id): Path<String>, headers: HeaderMap| {
                    delete_definition(kind, api, id, headers)
                }),
            );
    }
    router
        .route(
            "/v1/destinations/{id}/dead-letters",
            get(|State(api): Api_<S>, Path(id): Path<String>, headers: HeaderMap| dead(api, id, headers)),
        )
        .route(
            "/v1/destinations/{id}/dead-letters/{webhook_id}/replay",
            post(|State(api): Api_<S>, Path(ids): Path<(String, String)>, headers: HeaderMap| {
                replay(api, ids, headers)
            }),
        )
        .route(
            "/v1/destinations/{id}/enable",
            post(|State(api): Api_<S>, Path(id): Path<String>, headers: HeaderMap| reenable(api, id, headers)),
        )
}
