//! The demo page (`/demo`, the snippet with a write key) and the demo partner (`/demo/partner`, webhooks
//! received and their signatures checked).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use shared::collect::Answer;

use super::AppState;
use super::collector::to_response;

/// The demo partner (`--demo-partner`): `POST` receives a webhook (200 when its signature verifies, 401
/// otherwise); `GET` shows what arrived (JSON with `?format=json`).
pub(super) async fn partner(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(partner) = &state.demo else { return to_response(Answer::not_found()) };
    if parts.method == axum::http::Method::POST {
        let Ok(bytes) = axum::body::to_bytes(body, 6 << 20).await else {
            return to_response(Answer::error(413, "too_large", "webhook body over 6 MiB"));
        };
        let status = partner.receive(&state.store, &parts.headers, &bytes).await;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        return response;
    }
    let received = partner.list();
    if parts.uri.query().is_some_and(|q| q.split('&').any(|p| p == "format=json")) {
        let mut response = Response::new(Body::from(serde_json::to_vec(&received).unwrap_or_default()));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
    }
    let mut rows = String::new();
    for entry in &received {
        let items = entry["payload"]["data"]["items"].as_array().cloned().unwrap_or_default();
        for item in items {
            let what = match item["type"].as_str().unwrap_or_default() {
                "audience.entered" | "audience.exited" => {
                    format!(
                        "{} {}",
                        item["type"].as_str().unwrap_or_default(),
                        item["audience"]["id"].as_str().unwrap_or_default()
                    )
                }
                "event.triggered" => format!("event {}", item["event"]["event"].as_str().unwrap_or_default()),
                other => other.to_string(),
            };
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(entry["receivedAt"].as_str().unwrap_or_default()),
                if entry["verified"] == true { "✔ verified" } else { "✘ bad signature" },
                escape(entry["webhookId"].as_str().unwrap_or_default()),
                escape(&what),
                escape(item["profile"]["id"].as_str().unwrap_or_default()),
            ));
        }
    }
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>cdp demo partner</title><style>body{{font:15px system-ui;margin:2rem}}td{{padding:.2rem .6rem}}</style>\
         </head><body><h1>Demo partner</h1><p>Webhooks received by this partner, newest first; each signature is \
         checked with the destination's secret (Standard Webhooks).</p><table><tr><th>received</th><th>signature</th>\
         <th>webhook-id</th><th>what</th><th>profile</th></tr>{rows}</table></body></html>"
    );
    let mut response = Response::new(Body::from(page));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `GET /demo?writeKey=KEY`: a page with the snippet, to watch events and profiles form.
pub(super) async fn page(RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let key = query.split('&').find_map(|pair| pair.strip_prefix("writeKey=")).unwrap_or("");
    let valid =
        !key.is_empty() && key.len() <= 100 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let body = if valid {
        DEMO_PAGE.replace("{{SNIPPET}}", &shared::snippet::snippet("", key))
    } else {
        DEMO_PAGE.replace("{{SNIPPET}}", "").replace(
            "<main>",
            "<main><p class=\"warn\">Open this page as <code>/demo?writeKey=KEY</code> with a source's write key \
             (<code>cdp source add NAME</code> prints one).</p>",
        )
    };
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

const DEMO_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cdp demo shop</title>
<script>{{SNIPPET}}</script>
<style>body{font:16px system-ui;margin:2rem;max-width:40rem}button{margin:.25rem}.warn{color:#a00}</style>
</head>
<body>
<main>
<h1>cdp demo shop</h1>
<p>This page carries the snippet: it sent a page view when it loaded. Click to send more events, then look
them up with <code>cdp profile user_id:demo-user</code>.</p>
<button id="view" onclick="cdp.track('Product Viewed', {sku: 'tee-01', price: 18.5, category: 'shirts'})">View a product</button>
<button id="buy" onclick="cdp.track('Order Completed', {revenue: 18.5, currency: 'EUR'})">Buy it</button>
<button id="login" onclick="cdp.identify('demo-user', {email: 'demo@example.com', plan: 'free'})">Log in</button>
<button id="logout" onclick="cdp.reset()">Log out</button>
<p>anonymousId: <code id="aid">(loading)</code></p>
<script>cdp.ready(function () { document.getElementById('aid').textContent = cdp.user().anonymousId(); });</script>
</main>
</body>
</html>
"#;
