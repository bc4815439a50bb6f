//! A minimal blocking HTTP client for tests (ureq, no TLS: everything is on loopback).

use std::time::Duration;

use base64::Engine as _;

/// Status and body of an answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body as text (invalid UTF-8 replaced).
    pub body: String,
    /// Body as sent.
    pub bytes: Vec<u8>,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Reply {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// `Basic base64(key:)`.
pub fn basic(key: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:")))
}

/// Sends `method url` with `body` and extra headers.
pub fn send(method: &str, url: &str, body: &[u8], headers: &[(&str, &str)]) -> Result<Reply, String> {
    let agent = agent();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(body.to_vec()).map_err(|e| e.to_string())?;
    let mut response = agent.run(request).map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let bytes = response.body_mut().read_to_vec().map_err(|e| e.to_string())?;
    let body = String::from_utf8_lossy(&bytes).into_owned();
    Ok(Reply { status, body, bytes, headers })
}

/// `POST url` with a JSON body and optional Basic auth.
pub fn post(url: &str, body: &str, key: Option<&str>) -> Reply {
    let auth = key.map(basic);
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth));
    }
    send("POST", url, body.as_bytes(), &headers).unwrap_or_else(|e| panic!("{e}"))
}

/// `GET url` until it answers 200 or `timeout` passes.
pub fn wait_healthy(url: &str, timeout: Duration, mut alive: impl FnMut() -> Result<(), String>) -> Result<(), String> {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        alive()?;
        if let Ok(reply) = send("GET", url, b"", &[])
            && reply.status == 200
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("{url} did not become healthy within {timeout:?}"))
}

/// Serves connections accepted from `listener` with `handle`, until the task running this is dropped; each
/// connection's task is handed to `on_connection` (a test may cut it later).
pub async fn serve<F, Fut>(
    listener: tokio::net::TcpListener,
    handle: F,
    on_connection: impl Fn(tokio::task::AbortHandle) + Send + 'static,
) where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<http_body_util::Full<bytes::Bytes>>> + Send + 'static,
{
    let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    loop {
        let Ok((socket, _)) = listener.accept().await else { continue };
        let handle = handle.clone();
        let service = hyper::service::service_fn(move |request| {
            let answer = handle(request);
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        });
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service).into_owned();
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        on_connection(task.abort_handle());
    }
}
