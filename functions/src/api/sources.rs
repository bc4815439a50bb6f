//! `/v1/sources`: who may send events. A source's write key is made here, shown once in the answer that
//! creates or rotates it, and stored only as its SHA-256; collectors pick changes up within seconds.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::access::Scope;
use shared::ids::Entropy;
use shared::source::{SourceConfig, SourceKind, SourceSettings, Sources, new_source, slug};

use super::{Api, ApiError, Change, json_body, parse_body};
use crate::storage::ObjectStore;

/// A source to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NewSource {
    /// `[a-z0-9][a-z0-9_-]{0,63}`; derived from the name when absent.
    id: Option<String>,
    /// Display name, 1 to 200 characters.
    name: String,
    /// Browser origins allowed to send (`https://shop.example`, `https://*.shop.example`, `*`); default any.
    allowed_origins: Option<Vec<String>>,
    /// `{"collectIp": bool, "anonymizeIp": bool, "defaultCallingCode": "49"}`.
    #[schema(value_type = Option<Object>)]
    settings: Option<SourceSettings>,
    /// `http` (default: SDKs and servers with a write key), or a SaaS system's signed webhooks to
    /// `POST /v1/webhooks/<id>`: `shopify`, `stripe`, `webhook` (Standard Webhooks).
    #[schema(value_type = Option<String>)]
    kind: Option<SourceKind>,
    /// A webhook source's signing secret (required for those kinds; stored apart, never shown).
    #[schema(value_type = Option<String>)]
    signing_secret: Option<SigningSecret>,
    /// A `webhook` source's mapping (docs/data.md): a file import's mapping whose columns are JSON pointers.
    #[schema(value_type = Option<Object>)]
    mapping: Option<shared::import::Mapping>,
}

/// Changes to a source; absent fields stay.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SourcePatch {
    /// Display name, 1 to 200 characters.
    name: Option<String>,
    /// Browser origins allowed to send.
    allowed_origins: Option<Vec<String>>,
    /// `{"collectIp": bool, "anonymizeIp": bool, "defaultCallingCode": "49"}`.
    #[schema(value_type = Option<Object>)]
    settings: Option<SourceSettings>,
    /// A disabled source's key is refused.
    enabled: Option<bool>,
    /// The tracking plan (docs/data.md): `{"events": {name: JSON Schema of properties}, "identify": JSON
    /// Schema of traits, "unplanned": "allow"|"flag"|"block", "violations": "allow"|"flag"|"block"}`; `null`
    /// removes it.
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "present")]
    tracking_plan: Option<Option<shared::source::TrackingPlan>>,
    /// A webhook source's new signing secret (rotation: the old one stops verifying within seconds).
    #[schema(value_type = Option<String>)]
    signing_secret: Option<SigningSecret>,
    /// A `webhook` source's new mapping.
    #[schema(value_type = Option<Object>)]
    mapping: Option<shared::import::Mapping>,
}

/// A signing secret as given: its `Debug` never shows it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub(crate) struct SigningSecret(String);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// A field that may be given as `null` (`Some(None)`), apart from absent (`None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A source as shown: without its key's hash (nor, for a webhook source, its secret, which is stored apart).
fn shown(source: &SourceConfig) -> Value {
    let mut shown = json!({"id": source.id, "name": source.name, "kind": source.kind,
           "allowedOrigins": source.allowed_origins, "settings": source.settings, "enabled": source.enabled,
           "trackingPlan": source.tracking_plan});
    if source.kind.is_webhook() {
        shown["webhookPath"] = format!("/v1/webhooks/{}", source.id).into();
        shown["mapping"] = json!(source.mapping);
    }
    shown
}

/// Stores a webhook source's signing secret after checking it suits the kind.
async fn set_secret<S: ObjectStore>(
    store: &S,
    id: &str,
    kind: SourceKind,
    secret: &SigningSecret,
) -> Result<(), ApiError> {
    let secret = secret.0.as_str();
    kind.check_secret(secret).map_err(|problem| ApiError::invalid(format!("signingSecret: {problem}")))?;
    crate::collect::update_source_secrets(store, |secrets| {
        secrets.set(id, secret);
        Ok::<_, ApiError>(())
    })
    .await
}

async fn load<S: ObjectStore>(store: &S) -> Result<Sources, ApiError> {
    Ok(crate::collect::load_sources(store).await?)
}

/// Changes the sources file under compare-and-swap.
async fn update<S: ObjectStore, R>(
    store: &S,
    change: impl FnMut(&mut Sources) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    crate::collect::update_sources(store, change).await
}

async fn list<S: ObjectStore + Clone>(api: Arc<Api<S>>, headers: HeaderMap) -> Result<Response, ApiError> {
    api.authorize(&headers, Scope::ConfigRead).await?;
    let sources = load(api.store()).await?;
    Ok(json_body(&json!({"sources": sources.list().iter().map(shown).collect::<Vec<_>>()})).into_response())
}

async fn get<S: ObjectStore + Clone>(api: Arc<Api<S>>, id: String, headers: HeaderMap) -> Result<Response, ApiError> {
    api.authorize(&headers, Scope::ConfigRead).await?;
    let sources = load(api.store()).await?;
    match sources.list().iter().find(|s| s.id == id) {
        Some(source) => Ok(json_body(&shown(source)).into_response()),
        None => Err(ApiError::not_found(format!("no source {id:?}"))),
    }
}

async fn create<S: ObjectStore + Clone>(
    api: Arc<Api<S>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ConfigWrite).await?;
    let request: NewSource = parse_body(&body)?;
    if request.name.trim().is_empty() || request.name.len() > 200 {
        return Err(ApiError::invalid("name: 1 to 200 characters"));
    }
    let id = request.id.clone().unwrap_or_else(|| slug(&request.name));
    let kind = request.kind.unwrap_or_default();
    match (kind.is_webhook(), &request.signing_secret) {
        (true, None) => {
            return Err(ApiError::invalid("signingSecret: a webhook source needs its sender's signing secret"));
        }
        (false, Some(_)) => return Err(ApiError::invalid("signingSecret: only webhook sources have one")),
        _ => {}
    }
    let mut entropy = Entropy::from_seed(crate::config::random_seed()?);
    let make = |entropy: &mut Entropy| {
        let (mut source, key) = new_source(&id, request.name.trim(), entropy);
        if let Some(origins) = &request.allowed_origins {
            source.allowed_origins = origins.clone();
        }
        if let Some(settings) = &request.settings {
            source.settings = settings.clone();
        }
        source.kind = kind;
        source.mapping = request.mapping.clone();
        (source, key)
    };
    // Checked whole before anything is stored: a refused source leaves no secret behind.
    let mut trial = load(api.store()).await?;
    if trial.list().iter().any(|s| s.id == id) {
        return Err(ApiError::conflict(format!("a source with id {id:?} exists")));
    }
    trial.add(make(&mut entropy).0).map_err(ApiError::invalid)?;
    if let Some(secret) = &request.signing_secret {
        // Before the source: it verifies from its first webhook.
        set_secret(api.store(), &id, kind, secret).await?;
    }
    let (source, key) = update(api.store(), |sources| {
        if sources.list().iter().any(|s| s.id == id) {
            return Err(ApiError::conflict(format!("a source with id {id:?} exists")));
        }
        let (source, key) = make(&mut entropy);
        sources.add(source.clone()).map_err(ApiError::invalid)?;
        Ok((source, key))
    })
    .await?;
    let change = Change { after: Some(shown(&source)), ..Change::default() };
    api.audit(actor, "source.create", &format!("source:{id}"), change).await?;
    // A webhook source authenticates by signature: its write key opens nothing and is not shown.
    let answer = if kind.is_webhook() {
        json!({"source": shown(&source)})
    } else {
        json!({"source": shown(&source), "writeKey": key})
    };
    Ok((StatusCode::CREATED, json_body(&answer)).into_response())
}

async fn patch<S: ObjectStore + Clone>(
    api: Arc<Api<S>>,
    id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ConfigWrite).await?;
    let request: SourcePatch = parse_body(&body)?;
    if request.name.as_ref().is_some_and(|n| n.trim().is_empty() || n.len() > 200) {
        return Err(ApiError::invalid("name: 1 to 200 characters"));
    }
    if let Some(secret) = &request.signing_secret {
        // First, and checked: a secret that does not suit the source changes nothing.
        let sources = load(api.store()).await?;
        let source = sources.list().iter().find(|s| s.id == id);
        let kind = source.ok_or_else(|| ApiError::not_found(format!("no source {id:?}")))?.kind;
        set_secret(api.store(), &id, kind, secret).await?;
        api.audit(actor.clone(), "source.rotate_secret", &format!("source:{id}"), Change::default()).await?;
    }
    let (before, after) = update(api.store(), |sources| {
        let Some(before) = sources.list().iter().find(|s| s.id == id).cloned() else {
            return Err(ApiError::not_found(format!("no source {id:?}")));
        };
        let mut after = before.clone();
        if let Some(name) = &request.name {
            after.name = name.trim().to_string();
        }
        if let Some(origins) = &request.allowed_origins {
            after.allowed_origins = origins.clone();
        }
        if let Some(settings) = &request.settings {
            after.settings = settings.clone();
        }
        if let Some(enabled) = request.enabled {
            after.enabled = enabled;
        }
        if let Some(plan) = &request.tracking_plan {
            after.tracking_plan = plan.clone();
        }
        if let Some(mapping) = &request.mapping {
            after.mapping = Some(mapping.clone());
        }
        sources.replace(after.clone()).map_err(ApiError::invalid)?;
        Ok((before, after))
    })
    .await?;

    let change = Change { before: Some(shown(&before)), after: Some(shown(&after)), detail: None };
    api.audit(actor, "source.update", &format!("source:{id}"), change).await?;
    Ok(json_body(&shown(&after)).into_response())
}

async fn delete<S: ObjectStore + Clone>(
    api: Arc<Api<S>>,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ConfigWrite).await?;
    // The secret first: a source whose deletion failed part-way leaves no secret behind a retry's 404.
    crate::collect::update_source_secrets(api.store(), |secrets| Ok::<_, ApiError>(secrets.remove(&id))).await?;
    let before = update(api.store(), |sources| {
        sources.remove(&id).ok_or_else(|| ApiError::not_found(format!("no source {id:?}")))
    })
    .await?;
    let change = Change { before: Some(shown(&before)), ..Change::default() };
    api.audit(actor, "source.delete", &format!("source:{id}"), change).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A new write key for the source; the old one stops working when collectors re-read the sources (seconds).
async fn rotate<S: ObjectStore + Clone>(
    api: Arc<Api<S>>,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ConfigWrite).await?;
    let mut entropy = Entropy::from_seed(crate::config::random_seed()?);
    let (source, key) = update(api.store(), |sources| {
        let Some(mut source) = sources.list().iter().find(|s| s.id == id).cloned() else {
            return Err(ApiError::not_found(format!("no source {id:?}")));
        };
        let (fresh, key) = new_source(&id, &source.name, &mut entropy);
        source.write_key_sha256 = fresh.write_key_sha256;
        sources.replace(source.clone()).map_err(ApiError::invalid)?;
        Ok((source, key))
    })
    .await?;
    api.audit(actor, "source.rotate_key", &format!("source:{id}"), Change::default()).await?;
    Ok(json_body(&json!({"source": shown(&source), "writeKey": key})).into_response())
}

/// The routes.
pub(crate) fn routes<S: ObjectStore + Clone>(router: axum::Router<Arc<Api<S>>>) -> axum::Router<Arc<Api<S>>> {
    use axum::routing::{get as get_route, post};
    type Api_<S> = State<Arc<Api<S>>>;
    router
        .route(
            "/v1/sources",
            get_route(|State(api): Api_<S>, headers: HeaderMap| list(api, headers))
                .post(|State(api): Api_<S>, headers: HeaderMap, body: Bytes| create(api, headers, body)),
        )
        .route(
            "/v1/sources/{id}",
            get_route(|State(api): Api_<S>, Path(id): Path<String>, headers: HeaderMap| get(api, id, headers))
                .patch(|State(api): Api_<S>, Path(id): Path<String>, headers: HeaderMap, body: Bytes| {
                    patch(api, id, headers, body)
                })
                .delete(|State(api): Api_<S>, Path(id): Path<String>, headers: HeaderMap| delete(api, id, headers)),
        )
        .route(
            "/v1/sources/{id}/rotate-key",
            post(|State(api): Api_<S>, Path(id): Path<String>, headers: HeaderMap| rotate(api, id, headers)),
        )
}
