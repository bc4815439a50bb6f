//! The API function: profiles by any identifier, management of the platform, access control and the audit
//! log — one axum [`Router`], served by `lambda_http` in the cloud (`src/bin/api.rs`, behind a function URL)
//! and by `cdp up` locally, and tested without a socket.
//!
//! Every route but `/openapi.json` and `/health` needs an API key (`Authorization: Bearer cdp_sk_…`) with the
//! route's scope: no key, an unknown or revoked key, or a source's write key → 401; a key without the scope →
//! 403. Errors are JSON: `{"error": {"code": "…", "message": "…"}}`.

#[cfg(feature = "analysis")]
mod analysis;
mod audit;
mod catalog;
mod disclosure;
mod error;
mod feedback;
#[cfg(feature = "analysis")]
mod insights;
mod keys;
mod manage;
mod openapi;
mod privacy;
mod profiles;
mod sources;
#[cfg(feature = "analysis")]
mod themes;
mod timeline;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::routing::{delete, get, post};
use shared::access::{Actor, ApiKeys, AuthError, Scope};
use tokio::sync::RwLock;

pub use error::ApiError;
pub use openapi::document as openapi_document;

use crate::Error;
use crate::audit::{Change, record};
use crate::storage::ObjectStore;

/// How long a warm function trusts its copy of the API keys. A revocation through this function applies at
/// once; one made through another instance within this time.
const KEYS_TTL: Duration = Duration::from_secs(2);
/// How old the copy may be before an unknown key makes this instance read the keys again.
const KEYS_RECHECK: Duration = Duration::from_millis(250);

/// What every handler shares: the store and a short-lived copy of the API keys.
pub struct Api<S> {
    store: S,
    keys: RwLock<Option<(Instant, Arc<ApiKeys>)>>,
    /// Whether destinations may point at loopback addresses (local development only).
    loopback: bool,
    /// Where to announce raw objects this API writes (partners' feedback), for `cdp up`'s ingest; in the cloud
    /// the objects' notifications do it.
    ingest: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl<S: ObjectStore + Clone> Api<S> {
    /// The API over `store`.
    pub fn new(store: S) -> Arc<Self> {
        Self::with_loopback(store, false)
    }

    /// The API over `store`, accepting destinations on loopback addresses when `loopback` (`cdp up
    /// --webhooks-loopback`, `CDP_WEBHOOKS_LOOPBACK` for a function).
    pub fn with_loopback(store: S, loopback: bool) -> Arc<Self> {
        Arc::new(Self { store, keys: RwLock::new(None), loopback, ingest: None })
    }

    /// The API as `cdp up` serves it: [`Api::with_loopback`], announcing the raw objects it writes to `ingest`.
    pub fn local(store: S, loopback: bool, ingest: tokio::sync::mpsc::UnboundedSender<String>) -> Arc<Self> {
        Arc::new(Self { store, keys: RwLock::new(None), loopback, ingest: Some(ingest) })
    }

    /// The store it serves.
    pub fn store(&self) -> &S {
        &self.store
    }

    async fn keys(&self, max_age: Duration) -> Result<Arc<ApiKeys>, Error> {
        if let Some((at, keys)) = self.keys.read().await.as_ref()
            && at.elapsed() < max_age
        {
            return Ok(keys.clone());
        }
        let keys = Arc::new(load_keys(&self.store).await?);
        *self.keys.write().await = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// Forgets the cached keys (after this instance changed them).
    async fn keys_changed(&self) {
        *self.keys.write().await = None;
    }

    /// The caller, if its key is valid and allows `scope`.
    async fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<Actor, ApiError> {
        let authorization = headers.get(AUTHORIZATION).map(|v| v.to_str().unwrap_or("?"));
        let mut keys = self.keys(KEYS_TTL).await?;
        if keys.authenticate(authorization) == Err(AuthError::Invalid) {
            // Perhaps a key made since the copy was read (by `cdp api-key create` or another instance): read
            // again, at most four times a second whatever callers send.
            keys = self.keys(KEYS_RECHECK).await?;
        }
        let key = keys.authenticate(authorization).map_err(ApiError::unauthorized)?;
        if !key.allows(scope) {
            return Err(ApiError::forbidden(format!(
                "this API key (id {}) lacks the scope {scope} that this route needs",
                key.id
            )));
        }
        Ok(Actor::api_key(&key.id, &key.name))
    }

    /// Whether the caller, already authorized for its route, also holds `scope` (for what a route shows, not
    /// whether it answers: `pii:read` unmasks personal traits).
    async fn also_allows(&self, headers: &HeaderMap, scope: Scope) -> Result<bool, ApiError> {
        let authorization = headers.get(AUTHORIZATION).map(|v| v.to_str().unwrap_or("?"));
        let keys = self.keys(KEYS_TTL).await?;
        Ok(keys.authenticate(authorization).is_ok_and(|key| key.allows(scope)))
    }

    /// Appends one record to the audit log (`audit/v1/…`, written create-only: the log is never rewritten).
    async fn audit(&self, actor: Actor, action: &str, target: &str, change: Change) -> Result<(), ApiError> {
        record(&self.store, actor, action, target, change).await?;
        Ok(())
    }
}

/// The API keys file, or no keys.
pub async fn load_keys<S: ObjectStore>(store: &S) -> Result<ApiKeys, Error> {
    match store.get(ApiKeys::KEY).await? {
        None => Ok(ApiKeys::default()),
        Some(object) => Ok(ApiKeys::from_json(&object.body)?),
    }
}

/// Changes the API keys file under compare-and-swap (two admins creating keys at once both succeed).
pub async fn update_keys<S: ObjectStore, R>(
    store: &S,
    mut change: impl FnMut(&mut ApiKeys) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    crate::config::update(store, ApiKeys::KEY, "application/json", |bytes| {
        let mut keys = match bytes {
            Some(bytes) => ApiKeys::from_json(bytes).map_err(Error::from)?,
            None => ApiKeys::default(),
        };
        let result = change(&mut keys)?;
        Ok((keys.to_json(), result))
    })
    .await
}

/// The API function's whole router: [`routes`], `GET /health`, and JSON 404/405 answers for everything else.
pub fn router<S: ObjectStore + Clone>(api: Arc<Api<S>>) -> Router {
    routes(api).route("/health", get(health)).fallback(not_found).method_not_allowed_fallback(method_not_allowed)
}

/// The API's routes alone, for a host that serves other paths beside them (`cdp up` serves the collector at
/// every path these do not match).
pub fn routes<S: ObjectStore + Clone>(api: Arc<Api<S>>) -> Router {
    analysis_routes(sources::routes(manage::routes(Router::new())))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/profiles/{identifier}", get(profiles::get::<S>))
        .route("/v1/profiles/{identifier}/history", get(profiles::history::<S>))
        .route("/v1/profiles/{identifier}/events", get(timeline::events::<S>))
        .route("/v1/profiles/{identifier}/unlink", post(profiles::unlink::<S>))
        .route("/v1/api-keys", get(keys::list::<S>).post(keys::create::<S>))
        .route("/v1/api-keys/{id}", delete(keys::revoke::<S>))
        .route("/v1/audit", get(audit::list::<S>))
        .route("/v1/catalog", get(catalog::get::<S>))
        .route("/v1/feedback/{destination}", post(feedback::feedback::<S>))
        .route("/v1/privacy/requests", post(privacy::create::<S>))
        .route("/v1/privacy/requests/{id}", get(privacy::status::<S>))
        .route("/v1/privacy/suppressions", get(privacy::suppressions::<S>))
        .with_state(api)
}

/// `/v1/sql`, `/v1/analyze/…`, `/v1/insights`, `/v1/dashboards` and `/v1/themes`, where the crate is built with its analysis
/// engine (`cdp up`).
#[cfg(feature = "analysis")]
fn analysis_routes<S: ObjectStore + Clone>(router: Router<Arc<Api<S>>>) -> Router<Arc<Api<S>>> {
    router
        .route("/v1/sql", post(analysis::sql::<S>))
        .route("/v1/analyze/trends", post(analysis::trends::<S>))
        .route("/v1/analyze/funnel", post(analysis::funnel::<S>))
        .route("/v1/analyze/retention", post(analysis::retention::<S>))
        .route("/v1/analyze/paths", post(analysis::paths::<S>))
        .route("/v1/analyze/compare", post(analysis::compare::<S>))
        .route("/v1/analyze/value", post(analysis::value::<S>))
        .route("/v1/insights", get(insights::list_insights::<S>))
        .route(
            "/v1/insights/{id}",
            axum::routing::put(insights::put_insight::<S>).delete(insights::delete_insight::<S>),
        )
        .route("/v1/insights/{id}/run", post(insights::run_insight::<S>))
        .route("/v1/dashboards", get(insights::list_dashboards::<S>))
        .route(
            "/v1/dashboards/{id}",
            axum::routing::put(insights::put_dashboard::<S>).delete(insights::delete_dashboard::<S>),
        )
        .route("/v1/dashboards/{id}/run", post(insights::run_dashboard::<S>))
        .route("/v1/themes", get(themes::list_themes::<S>))
        .route("/v1/themes/{theme}", post(themes::assemble_theme::<S>))
}

#[cfg(not(feature = "analysis"))]
fn analysis_routes<S: ObjectStore + Clone>(router: Router<Arc<Api<S>>>) -> Router<Arc<Api<S>>> {
    router
}

async fn health() -> &'static str {
    "ok"
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route (see /openapi.json)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        ApiError::unauthorized(error)
    }
}

#[cfg(test)]
mod tests;

/// A JSON answer's headers and body.
pub(crate) fn json_body<T: serde::Serialize>(value: &T) -> ([(axum::http::HeaderName, &'static str); 1], Vec<u8>) {
    // Our answer types always serialize (string keys, finite numbers).
    ([(axum::http::header::CONTENT_TYPE, "application/json")], serde_json::to_vec(value).unwrap_or_default())
}

/// A request's JSON body, or a 400 naming what is wrong with it.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid("this route needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}
