//! `/v1/insights` and `/v1/dashboards`: saved analyses and dashboards ([`crate::analysis::saved`]). Listing
//! and running them needs `analysis:read`; saving and deleting them `analysis:write`. Every change and every
//! run is audited.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shared::access::Scope;

use super::analysis::engine;
use super::error::ErrorBody;
use super::{Api, ApiError, Change, json_body, parse_body};
use crate::analysis::saved::{
    DASHBOARDS, Dashboard, Dashboards, INSIGHTS, Insight, Insights, forget_results, load, remove, run, summary, update,
    upsert,
};
use crate::storage::ObjectStore;

/// Ids starting `theme-` are saved only by assembling a theme (which replaces them): refused here, so that no
/// one's own insight or dashboard is replaced by a theme.
fn theme_owned(id: &str) -> Result<(), ApiError> {
    match crate::analysis::themes::is_theme_id(id) {
        true => Err(ApiError::invalid(format!(
            "id: ids starting `theme-` belong to theme dashboards (POST /v1/themes/{{theme}}); save a copy under an id of your own, not {id:?}"
        ))),
        false => Ok(()),
    }
}

/// Lists the saved insights.
#[utoipa::path(
    get, path = "/v1/insights", tag = "analysis",
    responses(
        (status = 200, description = "`{\"insights\": [{\"id\", \"name\", \"description\", \"analysis\": {\"kind\", \"definition\"}, \"chart\"}]}`", body = Object),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:read`", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:read"]))
)]
pub(crate) async fn list_insights<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.authorize(&headers, Scope::AnalysisRead).await?;
    let insights: Insights = load(api.store(), INSIGHTS).await?;
    Ok(json_body(&insights).into_response())
}

/// Saves an insight (created, or replaced whole).
#[utoipa::path(
    put, path = "/v1/insights/{id}", tag = "analysis",
    params(("id" = String, Path, description = "The insight's id (a-z, 0-9, _ and -)")),
    request_body(content = Object, description = "`{\"id\", \"name\", \"description\"?, \"analysis\": {\"kind\": \"trends\"|\"funnel\"|\"retention\"|\"paths\"|\"compare\"|\"value\"|\"sql\", \"definition\": {…}}, \"chart\"?: \"line\"|\"bar\"|\"table\"|\"number\"|\"funnel\"|\"cohorts\"|\"sankey\"}`: the definition as the `/v1/analyze/…` route of its kind takes it (`{\"query\"}` for SQL)"),
    responses(
        (status = 200, description = "Saved", body = Object),
        (status = 400, description = "A bad insight: the message names the field", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:write`", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:write"]))
)]
pub(crate) async fn put_insight<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::AnalysisWrite).await?;
    let insight: Insight = parse_body(&body)?;
    if insight.id != id {
        return Err(ApiError::invalid(format!("id: the body's id {:?} is not the path's {id:?}", insight.id)));
    }
    theme_owned(&id)?;
    insight.check()?;
    let saved = insight.clone();
    let before =
        update(api.store(), INSIGHTS, |insights: &mut Insights| upsert(&mut insights.insights, &saved, "insights"))
            .await?;
    if before.as_ref().is_some_and(|b| b.analysis != insight.analysis) {
        forget_results(api.store(), &id).await;
    }
    let key = crate::suppression::hash_key(api.store()).await?;
    let change =
        Change { before: before.map(|b| summary(&b, &key)), after: Some(summary(&insight, &key)), detail: None };
    api.audit(actor, "insight.put", &format!("insight:{id}"), change).await?;
    Ok(json_body(&insight).into_response())
}

/// Deletes an insight (refused while a dashboard shows it).
#[utoipa::path(
    delete, path = "/v1/insights/{id}", tag = "analysis",
    params(("id" = String, Path, description = "The insight's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:write`", body = ErrorBody),
        (status = 404, description = "No such insight", body = ErrorBody),
        (status = 409, description = "A dashboard shows it (the message names them)", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:write"]))
)]
pub(crate) async fn delete_insight<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::AnalysisWrite).await?;
    let dashboards: Dashboards = load(api.store(), DASHBOARDS).await?;
    let showing: Vec<&str> =
        dashboards.dashboards.iter().filter(|d| d.insights.contains(&id)).map(|d| d.id.as_str()).collect();
    if !showing.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            match showing.iter().any(|d| crate::analysis::themes::is_theme_id(d)) {
                // A theme's dashboard is changed only by assembling the theme again.
                true => format!(
                    "insight {id:?} is on the dashboards {}; take it off them first (a theme's dashboard: delete it, \
                     or assemble the theme again with POST /v1/themes/{{theme}})",
                    showing.join(", ")
                ),
                false => format!("insight {id:?} is on the dashboards {}; take it off them first", showing.join(", ")),
            },
        ));
    }
    let removed =
        update(api.store(), INSIGHTS, |insights: &mut Insights| Ok(remove(&mut insights.insights, &id))).await?;
    let Some(removed) = removed else { return Err(ApiError::not_found(format!("no insight {id:?}"))) };
    let key = crate::suppression::hash_key(api.store()).await?;
    let change = Change { before: Some(summary(&removed, &key)), ..Default::default() };
    api.audit(actor, "insight.delete", &format!("insight:{id}"), change).await?;
    forget_results(api.store(), &id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Runs an insight: its result, kept with the data version it was computed on and answered from there while the
/// data has not moved on (results with personal data are never kept).
#[utoipa::path(
    post, path = "/v1/insights/{id}/run", tag = "analysis",
    params(("id" = String, Path, description = "The insight's id")),
    responses(
        (status = 200, description = "`{\"insight\", \"computedAt\", \"dataVersion\", \"definition\", \"cached\", \"result\"}`: `result` is the `/v1/analyze/…` answer of its kind", body = Object),
        (status = 400, description = "Its definition does not fit the data (the message names the field)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:read`", body = ErrorBody),
        (status = 404, description = "No such insight", body = ErrorBody),
        (status = 503, description = "Another analysis is running", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:read"]))
)]
pub(crate) async fn run_insight<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::AnalysisRead).await?;
    let insights: Insights = load(api.store(), INSIGHTS).await?;
    let Some(insight) = insights.insights.into_iter().find(|i| i.id == id) else {
        return Err(ApiError::not_found(format!("no insight {id:?}")));
    };
    let key = crate::suppression::hash_key(api.store()).await?;
    let detail = summary(&insight, &key);
    let loaded = engine(&api, &headers, actor, &format!("insight:{id}"), detail).await?;
    let now = crate::config::now()?;
    let result = run(api.store(), &loaded.engine, &insight, None, now, !loaded.personal, &key).await?;
    Ok(json_body(&result).into_response())
}

/// Lists the dashboards.
#[utoipa::path(
    get, path = "/v1/dashboards", tag = "analysis",
    responses(
        (status = 200, description = "`{\"dashboards\": [{\"id\", \"name\", \"description\", \"insights\": [id], \"lastDays\"}]}`", body = Object),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:read`", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:read"]))
)]
pub(crate) async fn list_dashboards<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api.authorize(&headers, Scope::AnalysisRead).await?;
    let dashboards: Dashboards = load(api.store(), DASHBOARDS).await?;
    Ok(json_body(&dashboards).into_response())
}

/// Saves a dashboard (created, or replaced whole); its insights must be saved.
#[utoipa::path(
    put, path = "/v1/dashboards/{id}", tag = "analysis",
    params(("id" = String, Path, description = "The dashboard's id (a-z, 0-9, _ and -)")),
    request_body(content = Object, description = "`{\"id\", \"name\", \"description\"?, \"insights\": [insight id] (1 to 50, in order), \"lastDays\"?: 1 to 3650}`"),
    responses(
        (status = 200, description = "Saved", body = Object),
        (status = 400, description = "A bad dashboard: the message names the field (an unknown insight with the closest one)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:write`", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:write"]))
)]
pub(crate) async fn put_dashboard<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::AnalysisWrite).await?;
    let dashboard: Dashboard = parse_body(&body)?;
    if dashboard.id != id {
        return Err(ApiError::invalid(format!("id: the body's id {:?} is not the path's {id:?}", dashboard.id)));
    }
    theme_owned(&id)?;
    let insights: Insights = load(api.store(), INSIGHTS).await?;
    dashboard.check(&insights.insights)?;
    let saved = dashboard.clone();
    let before = update(api.store(), DASHBOARDS, |dashboards: &mut Dashboards| {
        upsert(&mut dashboards.dashboards, &saved, "dashboards")
    })
    .await?;
    let change = Change {
        before: before.map(|b| serde_json::to_value(b).unwrap_or_default()),
        after: Some(serde_json::to_value(&dashboard).unwrap_or_default()),
        detail: None,
    };
    api.audit(actor, "dashboard.put", &format!("dashboard:{id}"), change).await?;
    Ok(json_body(&dashboard).into_response())
}

/// Deletes a dashboard (its insights stay).
#[utoipa::path(
    delete, path = "/v1/dashboards/{id}", tag = "analysis",
    params(("id" = String, Path, description = "The dashboard's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:write`", body = ErrorBody),
        (status = 404, description = "No such dashboard", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:write"]))
)]
pub(crate) async fn delete_dashboard<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::AnalysisWrite).await?;
    let removed =
        update(api.store(), DASHBOARDS, |dashboards: &mut Dashboards| Ok(remove(&mut dashboards.dashboards, &id)))
            .await?;
    let Some(removed) = removed else { return Err(ApiError::not_found(format!("no dashboard {id:?}"))) };
    let change = Change { before: Some(serde_json::to_value(removed).unwrap_or_default()), ..Default::default() };
    api.audit(actor, "dashboard.delete", &format!("dashboard:{id}"), change).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Runs a dashboard: each insight over the dashboard's range, in order; one that fails says why and the others
/// are still answered.
#[utoipa::path(
    post, path = "/v1/dashboards/{id}/run", tag = "analysis",
    params(("id" = String, Path, description = "The dashboard's id")),
    responses(
        (status = 200, description = "`{\"dashboard\", \"from\", \"to\", \"insights\": [{\"id\", \"name\", \"chart\", \"run\"?: {…as /v1/insights/{id}/run}, \"error\"?}]}`", body = Object),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `analysis:read`", body = ErrorBody),
        (status = 404, description = "No such dashboard", body = ErrorBody),
        (status = 503, description = "Another analysis is running", body = ErrorBody),
    ),
    security(("apiKey" = ["analysis:read"]))
)]
pub(crate) async fn run_dashboard<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::AnalysisRead).await?;
    let dashboards: Dashboards = load(api.store(), DASHBOARDS).await?;
    let Some(dashboard) = dashboards.dashboards.into_iter().find(|d| d.id == id) else {
        return Err(ApiError::not_found(format!("no dashboard {id:?}")));
    };
    let insights: Insights = load(api.store(), INSIGHTS).await?;
    let detail = json!({"insights": dashboard.insights, "lastDays": dashboard.last_days});
    let loaded = engine(&api, &headers, actor, &format!("dashboard:{id}"), detail).await?;
    let now = crate::config::now()?;
    let key = crate::suppression::hash_key(api.store()).await?;
    let shown = crate::analysis::saved::run_dashboard(
        api.store(),
        &loaded.engine,
        &dashboard,
        &insights.insights,
        now,
        !loaded.personal,
        &key,
    )
    .await?;
    Ok(json_body(&shown).into_response())
}
