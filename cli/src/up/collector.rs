//! The collector's paths of `cdp up`, routed by the collector core's router as in the edge worker, and the
//! `--site` folder's files.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use functions::collect::{handle, handle_webhook};
use shared::collect::webhook::WebhookRequest;
use shared::collect::{Answer, CollectRequest, Endpoint, MAX_REQUEST_BYTES, Route, preflight, route};

use super::AppState;

pub(super) async fn serve(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let origin = header_str(headers, header::ORIGIN);
    let answer = match route(parts.method.as_str(), parts.uri.path()) {
        Route::Health => Answer::health(),
        Route::Library => shared::snippet::library(header_str(headers, header::IF_NONE_MATCH)),
        Route::NotFound if parts.method == axum::http::Method::GET && state.site.is_some() => {
            return site_file(state.site.as_deref().unwrap_or(std::path::Path::new(".")), parts.uri.path()).await;
        }
        Route::NotFound => Answer::not_found(),
        Route::MethodNotAllowed => Answer::method_not_allowed(),
        Route::Preflight => match state.sources.get(&state.store).await {
            Ok(sources) => preflight(origin, &sources),
            Err(error) => {
                tracing::error!(%error, "sources unavailable");
                Answer::config_unavailable()
            }
        },
        Route::Pixel(kind) => match shared::collect::pixel::body_of(parts.uri.query()) {
            Ok(body) => {
                // The write key is inside the event; the request has no body to decode.
                let request = CollectRequest {
                    user_agent: header_str(headers, header::USER_AGENT),
                    client_ip: client_ip(&state, headers, peer),
                    ..CollectRequest::new(Endpoint::Single(kind), &body)
                };
                collect(&state, &request).await.pixel()
            }
            Err(problem) => Answer::error(400, "invalid_pixel", &problem).pixel(),
        },
        Route::Webhook(source_id) => {
            let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES + 1024).await {
                Ok(body) => body,
                Err(error) if error.to_string().contains("did not arrive") => {
                    return to_response(Answer::error(408, "request_timeout", &error.to_string()));
                }
                Err(_) => Bytes::from(vec![b' '; MAX_REQUEST_BYTES + 1]),
            };
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            let request = WebhookRequest::new(source_id, &body, header);
            webhook(&state, &request).await
        }
        Route::Collect(endpoint) => {
            // Read a little past the limit so the core can name the size in its 400.
            let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES + 1024).await {
                Ok(body) => body,
                // The body's deadline (serve.rs) passed: the client is too slow, not the body too large.
                Err(error) if error.to_string().contains("did not arrive") => {
                    return to_response(Answer::error(408, "request_timeout", &error.to_string()));
                }
                Err(_) => Bytes::from(vec![b' '; MAX_REQUEST_BYTES + 1]),
            };
            let request = CollectRequest {
                endpoint,
                body: &body,
                authorization: header_str(headers, header::AUTHORIZATION),
                origin,
                user_agent: header_str(headers, header::USER_AGENT),
                client_ip: client_ip(&state, headers, peer),
                geo: None,
                content_encoding: header_str(headers, header::CONTENT_ENCODING),
            };
            collect(&state, &request).await
        }
    };
    to_response(answer)
}

/// Runs `request` through the collect pipeline, stores what it keeps and hands the raw object to ingest.
async fn collect(state: &AppState, request: &CollectRequest<'_>) -> Answer {
    // A suppression list that cannot be read keeps nothing: no suppressed person's event slips in.
    let config = tokio::try_join!(state.sources.get(&state.store), state.sources.suppression(&state.store));
    match config {
        Ok((sources, suppression)) => {
            let handled =
                handle(&state.store, &sources, suppression.as_ref().as_ref(), request, crate::now(), crate::seed())
                    .await;
            if let Some(key) = handled.raw_key {
                // The receiver lives as long as the server; a closed channel only happens at shutdown.
                let _ = state.ingest.send(key);
            }
            handled.answer
        }
        Err(error) => {
            tracing::error!(%error, "sources or the suppression list unavailable");
            Answer::config_unavailable()
        }
    }
}

/// Runs an inbound webhook through its source's check and mapping, stores what it keeps and hands the raw
/// object to ingest.
async fn webhook(state: &AppState, request: &WebhookRequest<'_>) -> Answer {
    let config = tokio::try_join!(
        state.sources.get(&state.store),
        state.sources.secrets(&state.store),
        state.sources.suppression(&state.store)
    );
    match config {
        Ok((sources, secrets, suppression)) => {
            let handled = handle_webhook(
                &state.store,
                &sources,
                &secrets,
                suppression.as_ref().as_ref(),
                request,
                crate::now(),
                crate::seed(),
            )
            .await;
            if let Some(key) = handled.raw_key {
                let _ = state.ingest.send(key);
            }
            handled.answer
        }
        Err(error) => {
            tracing::error!(%error, "sources, their secrets or the suppression list unavailable");
            Answer::config_unavailable()
        }
    }
}

/// A file of the `--site` folder, or 404. Paths with `..`, hidden names or escaping the folder are refused.
async fn site_file(root: &std::path::Path, path: &str) -> Response {
    let relative = path.trim_start_matches('/');
    let relative = if relative.is_empty() || relative.ends_with('/') {
        format!("{relative}index.html")
    } else {
        relative.to_string()
    };
    let safe = relative.split('/').all(|part| !part.is_empty() && !part.starts_with('.') && !part.contains('\\'));
    let file = root.join(&relative);
    let inside = tokio::fs::canonicalize(&file).await.is_ok_and(|real| real.starts_with(root));
    let body = match (safe && inside, tokio::fs::read(&file).await) {
        (true, Ok(body)) => body,
        _ => return to_response(Answer::not_found()),
    };
    let kind = match relative.rsplit('.').next().unwrap_or_default() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "application/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    };
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn client_ip(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Option<IpAddr> {
    match &state.trusted_ip_header {
        Some(name) => headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok()),
        None => Some(peer.ip()),
    }
}

pub(super) fn to_response(answer: Answer) -> Response {
    let json = answer.is_json();
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let answer_headers = answer.headers.clone();
    let mut response = Response::new(if answer.is_empty() { Body::empty() } else { Body::from(answer.into_bytes()) });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if json {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    for (name, value) in answer_headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(root: &std::path::Path, path: &str) -> (StatusCode, String) {
        let response = site_file(root, path).await;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_site_folder_serves_its_files_and_nothing_outside_it() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("site");
        std::fs::create_dir_all(root.join("shop")).unwrap();
        std::fs::write(root.join("index.html"), "home").unwrap();
        std::fs::write(root.join("shop/p.html"), "product").unwrap();
        std::fs::write(root.join(".env"), "secret").unwrap();
        std::fs::write(outer.path().join("outside.txt"), "secret").unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        assert_eq!(get(&root, "/").await, (StatusCode::OK, "home".into()));
        assert_eq!(get(&root, "/shop/p.html").await, (StatusCode::OK, "product".into()));
        for path in ["/../outside.txt", "/shop/../../outside.txt", "/.env", "/missing.html", "/shop//p.html"] {
            assert_eq!(get(&root, path).await.0, StatusCode::NOT_FOUND, "{path}");
        }
        let page = site_file(&root, "/shop/p.html").await;
        assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
    }
}
