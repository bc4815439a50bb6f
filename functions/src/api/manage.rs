//! `/v1/tags`, `/v1/audiences`, `/v1/destinations`: the definitions in `config/`, listed with how they are
//! doing, and changed one at a time — each change checked against the whole configuration (an audience naming
//! a missing tag, a destination naming a missing audience, a bad webhook URL are refused with every problem
//! named), written under compare-and-swap, recorded in the audit log with before and after, and picked up by
//! the pipeline on its next run without a redeploy.
//!
//! Destination secrets are write-only: listings and the audit log never show them. A definition sent without
//! `secret` keeps the stored one; a new `secret` rotates: the old one keeps signing beside it for 24 hours
//! unless `previousSecrets` is given.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use shared::access::Scope;
use shared::activation::{DestinationDefinition, DestinationSet};
use shared::audiences::{AudienceDefinition, Snapshot};
use shared::tags::{Catalog, TagDefinition};

use super::{Api, ApiError, Change, json_body, parse_body};
use crate::Error;
use crate::activation::dispatch::{DESTINATIONS_CONFIG, dead_letters, enable, request_replay, status_key};
use crate::storage::ObjectStore;
use crate::tagging::{AUDIENCES_CONFIG, Report, TAGS_CONFIG, latest_report};

/// How long a rotated-out destination secret keeps signing.
const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;

/// One kind of definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tags,
    Audiences,
    Destinations,
}

impl Kind {
    fn file(self) -> &'static str {
        match self {
            Kind::Tags => TAGS_CONFIG,
            Kind::Audiences => AUDIENCES_CONFIG,
            Kind::Destinations => DESTINATIONS_CONFIG,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Tags => "tag",
            Kind::Audiences => "audience",
            Kind::Destinations => "destination",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Tags => "tags",
            Kind::Audiences => "audiences",
            Kind::Destinations => "destinations",
        }
    }
}

/// The three definition files, as JSON arrays.
#[derive(Debug, Clone, Default)]
struct Definitions {
    tags: Vec<Value>,
    audiences: Vec<Value>,
    destinations: Vec<Value>,
}

impl Definitions {
    async fn load<S: ObjectStore>(store: &S) -> Result<Self, ApiError> {
        Ok(Self {
            tags: read_array(store, TAGS_CONFIG).await?,
            audiences: read_array(store, AUDIENCES_CONFIG).await?,
            destinations: read_array(store, DESTINATIONS_CONFIG).await?,
        })
    }

    /// These definitions with `kind`'s file as `bytes` (as read for a compare-and-swap; none when absent).
    fn with(&self, kind: Kind, bytes: Option<&[u8]>) -> Result<Self, Error> {
        let mut all = self.clone();
        *all.of(kind) = match bytes {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| Error::Config(shared::Error::Config(format!("{}: {e}", kind.file()))))?,
            None => Vec::new(),
        };
        Ok(all)
    }

    fn of(&mut self, kind: Kind) -> &mut Vec<Value> {
        match kind {
            Kind::Tags => &mut self.tags,
            Kind::Audiences => &mut self.audiences,
            Kind::Destinations => &mut self.destinations,
        }
    }

    /// Checks the whole configuration as the pipeline will read it; every problem in one message.
    fn check(&self, loopback: bool) -> Result<(), String> {
        let tags: Vec<TagDefinition> = typed(&self.tags, TAGS_CONFIG)?;
        let audiences: Vec<AudienceDefinition> = typed(&self.audiences, AUDIENCES_CONFIG)?;
        let destinations: Vec<DestinationDefinition> = typed(&self.destinations, DESTINATIONS_CONFIG)?;
        let catalog = Catalog::default();
        let (tag_set, audience_set) = crate::tagging::check(&tags, &audiences, &catalog).map_err(|e| match e {
            Error::Config(problem) => problem.to_string(),
            other => other.to_string(),
        })?;
        DestinationSet::check(&destinations, &audience_set, &tag_set, &catalog, loopback).map_err(|errors| {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("{DESTINATIONS_CONFIG}: {}", list.join("; "))
        })?;
        Ok(())
    }
}

/// The definitions of one array, typed, or the problem naming the entry.
fn typed<T: DeserializeOwned>(values: &[Value], file: &str) -> Result<Vec<T>, String> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let id = v.get("id").and_then(Value::as_str).unwrap_or("?");
            serde_json::from_value(v.clone()).map_err(|e| format!("{file}[{i}] ({id}): {e}"))
        })
        .collect()
}

async fn read_array<S: ObjectStore>(store: &S, key: &str) -> Result<Vec<Value>, ApiError> {
    Ok(crate::config::read::<_, Vec<Value>>(store, key).await?.unwrap_or_default())
}

fn id_of(value: &Value) -> Option<&str> {
    value.get("id").and_then(Value::as_str)
}

/// What listings and the audit log show of a definition: destinations without their secrets.
fn shown(kind: Kind, definition: &Value) -> Value {
    let mut definition = definition.clone();
    if kind == Kind::Destinations
        && let Some(object) = definition.as_object_mut()
    {
        object.remove("secret");
        if let Some(Value::Array(previous)) = object.get_mut("previousSecrets") {
            for entry in previous {
                if let Some(entry) = entry.as_object_mut() {
                    entry.remove("secret");
                }
            }
        }
    }
    definition
}

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
        out["insight"] = match api.store().get(&format!("audiences/v1/{id}/insight.json")).await? {
            Some(object) => serde_json::from_slice(&object.body).unwrap_or(Value::Null),
            None => Value::Null,
        };
    }
    Ok(json_body(&out).into_response())
}

/// An audience's size over time and its last changes (counts, with up to 100 profile ids each).
async fn audience_history<S: ObjectStore>(store: &S, id: &str) -> Result<Value, ApiError> {
    let sizes = match store.get(&format!("audiences/v1/{id}/snapshot.json.gz")).await? {
        Some(object) => shared::storage::gunzip(&object.body)
            .ok()
            .and_then(|json| serde_json::from_slice::<Snapshot>(&json).ok())
            .map(|s| s.sizes.iter().map(|(at, size)| json!({"at": millis(*at), "size": size})).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut diffs = Vec::new();
    let mut keys = store.list(&format!("audiences/v1/{id}/diffs/")).await?;
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
    let mut definition: Value = parse_body(&body)?;
    let Some(object) = definition.as_object_mut() else {
        return Err(ApiError::invalid(format!("a {} definition is a JSON object", kind.noun())));
    };
    // A destination that receives personal data, pointed anywhere, reads every person's: its own scope.
    if kind == Kind::Destinations && object.get("allowPii") == Some(&Value::Bool(true)) {
        api.authorize(&headers, Scope::PiiSend).await?;
    }
    match object.get("id") {
        None => {
            object.insert("id".into(), Value::String(id.clone()));
        }
        Some(Value::String(given)) if *given == id => {}
        Some(given) => return Err(ApiError::invalid(format!("id: {given} differs from the path's {id:?}"))),
    }
    let now = crate::config::now()?;
    // A destination's secrets go to their own file, written first: a definition never lacks its secret.
    let rotated = match kind {
        Kind::Destinations => store_secrets(api.store(), &id, object, now.unix_millis()).await?,
        _ => false,
    };
    let others = Definitions::load(api.store()).await?;
    let loopback = api.loopback;
    let (before, after) = crate::config::update(api.store(), kind.file(), "application/json", |bytes| {
        let mut all = others.with(kind, bytes)?;
        let list = all.of(kind);
        let position = list.iter().position(|d| id_of(d) == Some(id.as_str()));
        let before = position.map(|i| list[i].clone());
        let mut next = definition.clone();
        if let Some(before) = &before {
            carry_over(kind, before, &mut next);
        }
        match position {
            Some(i) => list[i] = next.clone(),
            None => list.push(next.clone()),
        }
        all.check(loopback).map_err(ApiError::invalid)?;
        if kind == Kind::Destinations {
            // Definitions written before secrets were kept apart lose theirs here (store_secrets moved them).
            for definition in all.of(kind).iter_mut() {
                strip_secrets(definition);
            }
        }
        let bytes = serde_json::to_vec_pretty(all.of(kind)).map_err(|e| Error::Corrupt(e.to_string()))?;
        Ok::<_, ApiError>((bytes, (before, next)))
    })
    .await?;
    let status = if before.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    let action = format!("{}.{}", kind.noun(), if before.is_some() { "update" } else { "create" });
    let detail = rotated.then(|| json!({"secretRotated": true}));
    let change = Change { before: before.as_ref().map(|b| shown(kind, b)), after: Some(shown(kind, &after)), detail };
    api.audit(actor, &action, &format!("{}:{id}", kind.noun()), change).await?;
    let report = latest_report(api.store()).await?;
    let out = described(api.store(), kind, &after, report.as_ref()).await?;
    Ok((status, json_body(&out)).into_response())
}

/// Takes the secrets out of a destination definition `object` and stores them in
/// `secrets/v1/destinations.json`, with those other definitions still hold inline (written before secrets were
/// kept apart). Without a new secret the stored one stays; a new one rotates: the old keeps signing beside it
/// for a day (unless `previousSecrets` is given). A new destination needs a secret. Returns whether it
/// rotated.
async fn store_secrets<S: ObjectStore>(
    store: &S,
    id: &str,
    object: &mut serde_json::Map<String, Value>,
    now_ms: i64,
) -> Result<bool, ApiError> {
    let parse = |field: &str, value: Value| -> Result<Value, ApiError> {
        match field {
            "secret" => serde_json::from_value::<shared::activation::Secret>(value.clone()).map(|_| value),
            _ => serde_json::from_value::<Vec<shared::activation::PreviousSecret>>(value.clone()).map(|_| value),
        }
        .map_err(|e| ApiError::invalid(format!("{field}: {e}")))
    };
    let secret = object.remove("secret").map(|v| parse("secret", v)).transpose()?;
    let previous = object.remove("previousSecrets").map(|v| parse("previousSecrets", v)).transpose()?;
    let inline: Vec<DestinationDefinition> = crate::config::read(store, DESTINATIONS_CONFIG).await?.unwrap_or_default();
    crate::activation::secrets::update_secrets(store, |stored| {
        let mut moved = shared::activation::DestinationSecrets::default();
        crate::activation::secrets::take_inline(&mut inline.clone(), &mut moved);
        for (other, entry) in moved.0 {
            stored.0.entry(other).or_insert(entry);
        }
        let current = stored.0.get(id).cloned();
        let (entry, rotated) = match (&secret, current) {
            (None, None) => {
                return Err(ApiError::invalid("secret: a new destination needs a signing secret (whsec_…)"));
            }
            (None, Some(mut entry)) => {
                if let Some(previous) = &previous {
                    entry.previous_secrets = from_json(previous)?;
                }
                (entry, false)
            }
            (Some(new), current) => {
                let new: shared::activation::Secret = from_json(new)?;
                let (previous, rotated) = match (&previous, current) {
                    (Some(given), _) => (from_json(given)?, false),
                    (None, Some(old)) if old.secret != new => {
                        let mut kept: Vec<_> = old.previous_secrets.into_iter().filter(|p| p.until > now_ms).collect();
                        kept.push(shared::activation::PreviousSecret {
                            secret: old.secret,
                            until: now_ms + ROTATION_OVERLAP_MS,
                        });
                        (kept, true)
                    }
                    (None, Some(old)) => (old.previous_secrets, false),
                    (None, None) => (Vec::new(), false),
                };
                (shared::activation::SecretEntry { secret: new, previous_secrets: previous }, rotated)
            }
        };
        stored.0.insert(id.to_string(), entry);
        Ok(rotated)
    })
    .await
}

fn from_json<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_json::from_value(value.clone()).map_err(|e| ApiError::invalid(e.to_string()))
}

/// A destination definition (JSON) without secrets.
fn strip_secrets(definition: &mut Value) {
    if let Some(object) = definition.as_object_mut() {
        object.remove("secret");
        object.remove("previousSecrets");
    }
}

/// What a new version of a definition keeps from the stored one: a tag whose computation changed gets the next
/// version (so it is backfilled while the old keeps serving). (A destination's secrets: `store_secrets`.)
fn carry_over(kind: Kind, before: &Value, next: &mut Value) {
    let Some(next) = next.as_object_mut() else { return };
    match kind {
        Kind::Tags => {
            let computation = |v: &Value| {
                let mut v = v.as_object().cloned().unwrap_or_default();
                for meta in ["name", "description", "owner", "version", "status"] {
                    v.remove(meta);
                }
                v
            };
            let old_version = before.get("version").and_then(Value::as_u64).unwrap_or(1);
            let new_version = next.get("version").and_then(Value::as_u64).unwrap_or(old_version);
            let changed = computation(before) != computation(&Value::Object(next.clone()));
            let version = if changed && new_version <= old_version { old_version + 1 } else { new_version };
            next.insert("version".into(), json!(version));
        }
        // A destination's secrets are in their own file (`store_secrets`).
        Kind::Destinations | Kind::Audiences => {}
    }
}

pub(crate) async fn delete_definition<S: ObjectStore + Clone>(
    kind: Kind,
    api: Arc<Api<S>>,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ConfigWrite).await?;
    let others = Definitions::load(api.store()).await?;
    let loopback = api.loopback;
    let before = crate::config::update(api.store(), kind.file(), "application/json", |bytes| {
        let mut all = others.with(kind, bytes)?;
        let list = all.of(kind);
        let Some(position) = list.iter().position(|d| id_of(d) == Some(id.as_str())) else {
            return Err(ApiError::not_found(format!("no {} {id:?}", kind.noun())));
        };
        let before = list.remove(position);
        all.check(loopback).map_err(|problem| ApiError::conflict(format!("still in use: {problem}")))?;
        let bytes = serde_json::to_vec_pretty(all.of(kind)).map_err(|e| Error::Corrupt(e.to_string()))?;
        Ok::<_, ApiError>((bytes, before))
    })
    .await?;
    if kind == Kind::Destinations {
        crate::activation::secrets::update_secrets(api.store(), |stored| {
            stored.0.remove(&id);
            Ok::<_, ApiError>(())
        })
        .await?;
    }
    let change = Change { before: Some(shown(kind, &before)), after: None, detail: None };
    api.audit(actor, &format!("{}.delete", kind.noun()), &format!("{}:{id}", kind.noun()), change).await?;
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
    let destinations = read_array(store, DESTINATIONS_CONFIG).await?;
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
