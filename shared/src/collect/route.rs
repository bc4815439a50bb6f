//! Which of the collector's routes a request is. Both shells route through this, so they agree.

use super::Endpoint;
use crate::event::EventType;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `POST` to a collect endpoint.
    Collect(Endpoint),
    /// `GET /v1/pixel/{track,page,identify}?data=…`: one event in the query, answered with a GIF.
    Pixel(EventType),
    /// `POST /v1/webhooks/<source id>`: a SaaS system's signed webhook ([`super::webhook`]).
    Webhook(&'a str),
    /// `OPTIONS` to a collect endpoint: a CORS preflight.
    Preflight,
    /// `GET /health` (also `HEAD`).
    Health,
    /// `GET /cdp.js` (also `HEAD`): the browser library.
    Library,
    /// A known path with the wrong method.
    MethodNotAllowed,
    /// Anything else.
    NotFound,
}

/// Routes `method` + `path` (path without query; a trailing slash is tolerated).
pub fn route<'a>(method: &str, path: &'a str) -> Route<'a> {
    let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    if path == "/health" || path == "/cdp.js" {
        return match method {
            "GET" | "HEAD" if path == "/health" => Route::Health,
            "GET" | "HEAD" => Route::Library,
            _ => Route::MethodNotAllowed,
        };
    }
    if let Some(kind) = path.strip_prefix("/v1/pixel/") {
        return match (EventType::parse(kind), method) {
            (Some(kind @ (EventType::Track | EventType::Page | EventType::Identify)), "GET") => Route::Pixel(kind),
            (Some(EventType::Track | EventType::Page | EventType::Identify), _) => Route::MethodNotAllowed,
            _ => Route::NotFound,
        };
    }
    if let Some(id) = path.strip_prefix("/v1/webhooks/") {
        return match method {
            _ if id.is_empty() || id.contains('/') => Route::NotFound,
            "POST" => Route::Webhook(id),
            _ => Route::MethodNotAllowed,
        };
    }
    let endpoint = match path.strip_prefix("/v1/") {
        // `b`, `t`, `i`, ... are the short paths Segment's analytics.js posts to.
        Some("batch" | "import" | "b") => Endpoint::Batch,
        Some("t") => Endpoint::Single(EventType::Track),
        Some("i") => Endpoint::Single(EventType::Identify),
        Some("p") => Endpoint::Single(EventType::Page),
        Some("s") => Endpoint::Single(EventType::Screen),
        Some("g") => Endpoint::Single(EventType::Group),
        Some("a") => Endpoint::Single(EventType::Alias),
        Some(name) => match EventType::parse(name) {
            Some(kind) => Endpoint::Single(kind),
            None => return Route::NotFound,
        },
        None => return Route::NotFound,
    };
    match method {
        "POST" => Route::Collect(endpoint),
        "OPTIONS" => Route::Preflight,
        _ => Route::MethodNotAllowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_every_endpoint() {
        assert_eq!(route("POST", "/v1/batch"), Route::Collect(Endpoint::Batch));
        assert_eq!(route("POST", "/v1/import/"), Route::Collect(Endpoint::Batch));
        for t in EventType::ALL {
            assert_eq!(route("POST", &format!("/v1/{t}")), Route::Collect(Endpoint::Single(t)));
        }
        assert_eq!(route("POST", "/v1/t"), Route::Collect(Endpoint::Single(EventType::Track)));
        assert_eq!(route("POST", "/v1/b"), Route::Collect(Endpoint::Batch));
        assert_eq!(route("OPTIONS", "/v1/track"), Route::Preflight);
        assert_eq!(route("GET", "/health"), Route::Health);
        assert_eq!(route("HEAD", "/health"), Route::Health);
        assert_eq!(route("GET", "/cdp.js"), Route::Library);
        assert_eq!(route("POST", "/cdp.js"), Route::MethodNotAllowed);
        assert_eq!(route("GET", "/v1/track"), Route::MethodNotAllowed);
        assert_eq!(route("POST", "/health"), Route::MethodNotAllowed);
        assert_eq!(route("POST", "/v1/nope"), Route::NotFound);
        assert_eq!(route("GET", "/"), Route::NotFound);
        assert_eq!(route("GET", "/v1/pixel/track"), Route::Pixel(EventType::Track));
        assert_eq!(route("GET", "/v1/pixel/page/"), Route::Pixel(EventType::Page));
        assert_eq!(route("HEAD", "/v1/pixel/page"), Route::MethodNotAllowed, "a HEAD would collect nothing");
        assert_eq!(route("GET", "/v1/pixel/identify"), Route::Pixel(EventType::Identify));
        assert_eq!(route("POST", "/v1/pixel/track"), Route::MethodNotAllowed);
        assert_eq!(route("GET", "/v1/pixel/alias"), Route::NotFound);
        assert_eq!(route("POST", "/v1/webhooks/shop"), Route::Webhook("shop"));
        assert_eq!(route("POST", "/v1/webhooks/shop/"), Route::Webhook("shop"));
        assert_eq!(route("GET", "/v1/webhooks/shop"), Route::MethodNotAllowed);
        assert_eq!(route("POST", "/v1/webhooks/"), Route::NotFound);
        assert_eq!(route("POST", "/v1/webhooks/a/b"), Route::NotFound);
    }
}
