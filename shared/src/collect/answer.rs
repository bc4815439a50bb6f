//! HTTP answers, decided in the core so every shell answers the same.

use serde_json::{Value, json};

/// An HTTP response: status, headers, JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// Headers besides `Content-Type: application/json`, which every answer with a body has. Names are
    /// lower-case, as HTTP/2 and the `http` crate require.
    pub headers: Vec<(&'static str, String)>,
    /// JSON body.
    pub body: String,
    /// A binary body in place of `body` (the pixel's GIF), with its own `content-type` header.
    pub binary: Option<&'static [u8]>,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, body: &Value) -> Self {
        Self { status, headers: Vec::new(), body: body.to_string(), binary: None }
    }

    /// An answer with a text body (`body`) and no other header.
    pub fn text(status: u16, body: String) -> Self {
        Self { status, headers: Vec::new(), body, binary: None }
    }

    /// Whether the answer has no body.
    pub fn is_empty(&self) -> bool {
        self.binary.is_none() && self.body.is_empty()
    }

    /// Whether the body is JSON (a body, and no `content-type` header of its own).
    pub fn is_json(&self) -> bool {
        !self.is_empty() && !self.headers.iter().any(|(name, _)| *name == "content-type")
    }

    /// The body's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        match self.binary {
            Some(bytes) => bytes.to_vec(),
            None => self.body.into_bytes(),
        }
    }

    /// This answer as the pixel's: the same status, the 1×1 GIF as the body (an email client shows nothing
    /// either way), never cached; a refusal's code in `x-cdp-error`.
    pub fn pixel(self) -> Self {
        let mut headers = vec![("content-type", "image/gif".to_string()), ("cache-control", "no-store".to_string())];
        if self.status >= 400
            && let Ok(body) = serde_json::from_str::<Value>(&self.body)
            && let Some(code) = body["code"].as_str()
        {
            headers.push(("x-cdp-error", code.to_string()));
        }
        Self { status: self.status, headers, body: String::new(), binary: Some(super::pixel::GIF) }
    }

    /// An error answer like Segment's: `{"success":false,"code":..,"message":..}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(status, &json!({ "success": false, "code": code, "message": message }))
    }

    /// 503: the events could not be stored; the client must retry. Never claim success for unkept data.
    pub fn storage_unavailable() -> Self {
        let mut answer = Self::error(503, "storage_unavailable", "events could not be stored; retry the request later");
        answer.headers.push(("retry-after", "5".to_string()));
        answer
    }

    /// 503: the source configuration could not be loaded, so no key can be checked.
    pub fn config_unavailable() -> Self {
        let mut answer =
            Self::error(503, "config_unavailable", "source configuration is unavailable; retry the request later");
        answer.headers.push(("retry-after", "5".to_string()));
        answer
    }

    /// 200 for `GET /health`.
    pub fn health() -> Self {
        Self::json(200, &json!({ "status": "ok" }))
    }

    /// 404.
    pub fn not_found() -> Self {
        Self::error(404, "not_found", "no such endpoint; see /v1/{track,identify,page,screen,group,alias,batch}")
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::error(405, "method_not_allowed", "use POST for collect endpoints and GET for /health")
    }

    /// Adds the CORS headers that let a browser at `origin` read this answer. Never
    /// `Access-Control-Allow-Credentials`: the collector authenticates by write key, never by cookies, so a
    /// page's credentials are neither needed nor accepted (the browser library sends with `credentials:
    /// 'omit'`; a beacon's answer is not read).
    pub fn with_cors(mut self, origin: &str) -> Self {
        self.headers.push(("access-control-allow-origin", origin.to_string()));
        self.headers.push(("vary", "Origin".to_string()));
        self
    }
}
