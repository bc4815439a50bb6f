//! `POST /v1/sql` and `POST /v1/analyze/{trends,funnel,retention,paths,compare,value}`: read-only SQL and the analyses
//! over all the data ([`crate::analysis`]), with the scope `analysis:read`. Personal traits and properties are
//! in the tables only for keys that also hold `pii:read`. Each call is audited (`analysis.run`; a query or a
//! definition by a keyed hash, never its text). One analysis runs at a time per instance: each may use up to 2 GiB.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shared::access::{Actor, Scope};
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::{Api, ApiError, Change, json_body, parse_body};
use crate::analysis::{Compare, Engine, Funnel, Limits, MAX_ROWS, Paths, Retention, Trends, Value};
use crate::snapshot::RunConfig;
use crate::storage::ObjectStore;

/// Analyses running at once in one instance.
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// How long a call waits for the analysis before it to finish before it answers 503.
const QUEUE: Duration = Duration::from_secs(60);

/// A query.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SqlRequest {
    /// One `SELECT` (or `WITH … SELECT`, `EXPLAIN`, `SHOW`, `DESCRIBE`) over `events`, `profiles`, `tags`,
    /// `memberships` and `identities`.
    query: String,
    /// Rows answered at most (1 to 100000; default 1000); `truncated` says when there were more.
    max_rows: Option<usize>,
    /// Seconds the query may take (1 to 300; default 30).
    timeout_seconds: Option<u64>,
}

/// The engine over the data `actor` may see (personal data only with `pii:read`), once no other analysis runs
/// here; the call audited as `what` with `detail`.
pub(super) async fn engine<S: ObjectStore + Clone>(
    api: &Api<S>,
    headers: &HeaderMap,
    actor: Actor,
    what: &str,
    detail: serde_json::Value,
) -> Result<Loaded, ApiError> {
    let personal = api.also_allows(headers, Scope::PiiRead).await?;
    let permit = tokio::time::timeout(QUEUE, RUNNING.acquire())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "another analysis is running in this instance; try again in a minute",
            )
        })?
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "analyses are shutting down"))?;
    let mut detail = detail;
    detail["personal"] = serde_json::Value::Bool(personal);
    api.audit(actor, "analysis.run", what, Change { detail: Some(detail), ..Default::default() }).await?;
    let config = RunConfig::load(api.store()).await?;
    let engine = if personal {
        Engine::load(api.store(), &config).await?
    } else {
        Engine::load_without_personal_data(api.store(), &config).await?
    };
    Ok(Loaded { engine, personal, _permit: permit })
}

/// An engine loaded for a caller.
pub(super) struct Loaded {
    /// The engine.
    pub(super) engine: Engine,
    /// Whether its tables hold personal data.
    pub(super) personal: bool,
    /// Held while it runs: one analysis at a time.
    _permit: tokio::sync::SemaphorePermit<'static>,
}

/// Runs one read-only SQL query.
#[utoipa::path(
    post, path = "/v1/sql", tag = "analysis",
    request_body = SqlRequest,
    responses(
        (status = 200, description = "`{\"columns\": [{\"name\", \"type\"}], \"rows\": [[…]], \"truncated\": bool}`", body = Object),
        (status = 400, description = "Bad SQL, a statement that writes, or a query over its time or memory limit: the message names the problem", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:read`", body = ErrorBody),
        (status = 503, description = "Another analysis is running", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:read"]))
)]
pub(crate) async fn sql<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::AnalysisRead).await?;
    let request: SqlRequest = parse_body(&body)?;
    let rows = request.max_rows.unwrap_or(1000);
    if !(1..=MAX_ROWS).contains(&rows) {
        return Err(ApiError::invalid(format!("maxRows: 1 to {MAX_ROWS}, not {rows}")));
    }
    let seconds = request.timeout_seconds.unwrap_or(30);
    if !(1..=300).contains(&seconds) {
        return Err(ApiError::invalid(format!("timeoutSeconds: 1 to 300, not {seconds}")));
    }
    let key = crate::suppression::hash_key(api.store()).await?;
    let detail = serde_json::json!({"query": key.hash(&format!("analysis-query:{}", request.query))});
    let loaded = engine(&api, &headers, actor, "sql", detail).await?;
    let answer = loaded.engine.sql(&request.query, Limits { rows, time: Duration::from_secs(seconds) }).await?;
    Ok(json_body(&answer).into_response())
}

/// Runs one analysis of a kind: its definition from the body, its result as JSON.
async fn analyze<S, D, R, F>(
    api: &Api<S>,
    headers: &HeaderMap,
    body: &[u8],
    kind: &str,
    run: F,
) -> Result<Response, ApiError>
where
    S: ObjectStore + Clone,
    D: serde::de::DeserializeOwned + serde::Serialize,
    R: serde::Serialize,
    F: AsyncFnOnce(&Engine, &D) -> Result<R, crate::Error>,
{
    let actor = api.authorize(headers, Scope::AnalysisRead).await?;
    let definition: D = parse_body(body)?;
    // By its keyed hash (not to be confirmed by guessing): a definition's filters may hold a person's data
    // (`email = …`), which the log must not.
    let text = serde_json::to_string(&definition).unwrap_or_default();
    let key = crate::suppression::hash_key(api.store()).await?;
    let detail = serde_json::json!({"definition": crate::analysis::saved::definition_hash(&key, &text)});
    let loaded = engine(api, headers, actor, &format!("analyze:{kind}"), detail).await?;
    let result = run(&loaded.engine, &definition).await?;
    Ok(json_body(&result).into_response())
}

/// A trend: a measure per period, optionally broken down.
#[utoipa::path(
    post, path = "/v1/analyze/trends", tag = "analysis",
    request_body(content = Object, description = "`{\"event\"?, \"measure\": {\"op\": \"events\"|\"persons\"|\"sum\"|\"average\", \"property\"?}, \"period\": \"day\"|\"week\"|\"month\", \"from\", \"to\", \"breakdown\"?: {\"property\"|\"trait\"|\"tag\": name}, \"top\", \"audience\"?, \"filters\"?: [{\"of\"?: \"property\"|\"trait\"|\"tag\", \"property\", \"op\", \"value\"?}]}`"),
    responses(
        (status = 200, description = "`{\"series\": [{\"key\", \"total\", \"points\": [{\"start\", \"value\"}]}], …}`", body = Object),
        (status = 400, description = "A bad definition: the message names the field (and the closest known name)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:read`", body = ErrorBody),
        (status = 503, description = "Another analysis is running", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:read"]))
)]
pub(crate) async fn trends<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    analyze(&api, &headers, &body, "trends", async |engine: &Engine, d: &Trends| engine.trends(d).await).await
}

/// A funnel: persons per step within a conversion window.
#[utoipa::path(
    post, path = "/v1/analyze/funnel", tag = "analysis",
    request_body(content = Object, description = "`{\"steps\": [event, …] (2 to 10), \"windowMs\", \"order\": \"ordered\"|\"strict\"|\"any\", \"from\", \"to\", \"filters\"?: [{\"step\", \"filter\"}], \"exclusions\"?: [{\"event\", \"fromStep\"?, \"toStep\"?}], \"breakdown\"?: {\"property\"|\"trait\"|\"tag\": name}, \"top\"?}`"),
    responses(
        (status = 200, description = "`{\"steps\": [{\"event\", \"persons\", \"conversionFromFirst\", \"conversionFromPrevious\", \"medianSeconds\", \"averageSeconds\"}], …}`", body = Object),
        (status = 400, description = "A bad definition: the message names the field (and the closest known name)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:read`", body = ErrorBody),
        (status = 503, description = "Another analysis is running", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:read"]))
)]
pub(crate) async fn funnel<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    analyze(&api, &headers, &body, "funnel", async |engine: &Engine, d: &Funnel| engine.funnel(d).await).await
}

/// Retention: cohorts by the period of a first event and how many came back in each period after.
#[utoipa::path(
    post, path = "/v1/analyze/retention", tag = "analysis",
    request_body(content = Object, description = "`{\"cohortEvent\"?, \"returnEvent\"?, \"period\": \"day\"|\"week\"|\"month\", \"periods\" (1 to 60), \"from\", \"to\", \"breakdown\"?: {\"trait\"|\"tag\": name}, \"top\"?}`"),
    responses(
        (status = 200, description = "`{\"cohorts\": [{\"start\", \"size\", \"retained\": [n|null], \"rates\"}], \"period\", \"periods\"}`", body = Object),
        (status = 400, description = "A bad definition: the message names the field (and the closest known name)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:read`", body = ErrorBody),
        (status = 503, description = "Another analysis is running", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:read"]))
)]
pub(crate) async fn retention<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    analyze(&api, &headers, &body, "retention", async |engine: &Engine, d: &Retention| engine.retention(d).await).await
}

/// Paths: the most frequent events after (or before) an event, as nodes and links.
#[utoipa::path(
    post, path = "/v1/analyze/paths", tag = "analysis",
    request_body(content = Object, description = "`{\"event\", \"direction\": \"after\"|\"before\", \"depth\" (1 to 5), \"windowMs\", \"top\" (1 to 50), \"from\", \"to\"}`"),
    responses(
        (status = 200, description = "`{\"event\", \"direction\", \"persons\", \"nodes\": [{\"step\", \"event\", \"persons\", \"ended\"}], \"links\": [{\"source\", \"target\", \"persons\"}]}`", body = Object),
        (status = 400, description = "A bad definition: the message names the field (and the closest known name)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:read`", body = ErrorBody),
        (status = 503, description = "Another analysis is running", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:read"]))
)]
pub(crate) async fn paths<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    analyze(&api, &headers, &body, "paths", async |engine: &Engine, d: &Paths| engine.paths(d).await).await
}

/// Audience comparison: what sets an audience apart, feature by feature, with corrected significance.
#[utoipa::path(
    post, path = "/v1/analyze/compare", tag = "analysis",
    request_body(content = Object, description = "`{\"audience\", \"against\"?, \"from\", \"to\", \"alpha\"?}`"),
    responses(
        (status = 200, description = "`{\"audience\", \"against\", \"size\", \"sizeAgainst\", \"alpha\", \"features\": [{\"source\", \"name\", \"value\"?, \"test\", \"audience\", \"against\", \"lift\", \"difference\", \"effectSize\", \"statistic\", \"pValue\", \"qValue\", \"significant\"}], \"skipped\"}`", body = Object),
        (status = 400, description = "A bad definition: the message names the field (and the closest known name)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:read`", body = ErrorBody),
        (status = 503, description = "Another analysis is running", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:read"]))
)]
pub(crate) async fn compare<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    analyze(&api, &headers, &body, "compare", async |engine: &Engine, d: &Compare| engine.compare(d).await).await
}

/// Value models: RFM segments and their movement, lifetime value observed, predicted and evaluated.
#[utoipa::path(
    post, path = "/v1/analyze/value", tag = "analysis",
    request_body(content = Object, description = "`{\"purchaseEvent\"?, \"revenueProperty\"?, \"at\", \"since\"?, \"horizonDays\"? (7 to 365)}`"),
    responses(
        (status = 200, description = "`{\"rfm\": [{\"at\", \"buyers\", \"segments\"}], \"movement\": [{\"from\", \"to\", \"buyers\"}], \"lifetimeValue\": {\"buyers\", \"observedRevenue\", \"predictedRevenue\", \"bySegment\", \"parameters\", \"holdout\"} | null, \"horizonDays\"}`", body = Object),
        (status = 400, description = "A bad definition: the message names the field (and the closest known name)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:read`", body = ErrorBody),
        (status = 503, description = "Another analysis is running", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:read"]))
)]
pub(crate) async fn value<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    analyze(&api, &headers, &body, "value", async |engine: &Engine, d: &Value| engine.value(d).await).await
}
