//! A partner's webhook receiver on 127.0.0.1, as a partner would write it: it verifies every request's
//! Standard Webhooks signature with its own implementation of the spec (HMAC-SHA256 over
//! `id.timestamp.body`, base64, any of the space-separated `v1,` signatures, timestamp within 5 minutes),
//! records what arrived, and answers as scripted per path: a status (with `Retry-After`), a redirect, or
//! never (a hanging partner). It can go down (listener closed, open connections cut) and come back on the
//! same port.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};

/// How the partner answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// This status, with `Retry-After` seconds if given.
    Status(u16, Option<u64>),
    /// 307 to this location.
    Redirect(String),
    /// Never answer.
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: String,
    /// The body as JSON.
    pub body: serde_json::Value,
    /// Whether a signature verified with the partner's secret.
    pub verified: bool,
    /// The status answered.
    pub answered: u16,
    /// When it arrived.
    pub at: Instant,
    /// Every header, lower-cased names.
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<Reply>>,
    received: Vec<Received>,
    connections: Vec<tokio::task::AbortHandle>,
    acceptor: Option<tokio::task::AbortHandle>,
}

/// A running partner; stopped when dropped.
pub struct Partner {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    secret: Vec<u8>,
    state: Arc<Mutex<State>>,
    runtime: tokio::runtime::Runtime,
}

/// The partner's own check of a Standard Webhooks signature.
pub fn verify(secret: &[u8], id: &str, timestamp: &str, header: &str, body: &[u8]) -> bool {
    let Ok(at) = timestamp.parse::<i64>() else { return false };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    if (now - at).abs() > 300 {
        return false;
    }
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else { return false };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    header.split(' ').any(|part| part.strip_prefix("v1,") == Some(expected.as_str()))
}

/// Signs as a partner posting back to us: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with the secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = STANDARD.decode(secret.trim_start_matches("whsec_")).expect("a whsec_ secret");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

impl Partner {
    /// Starts a partner that verifies with `secret` (`whsec_…`).
    pub fn start(secret: &str) -> Self {
        let secret = STANDARD.decode(secret.trim_start_matches("whsec_")).expect("a whsec_ secret");
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr").to_string();
        let partner = Self { addr, secret, state: Arc::default(), runtime };
        partner.serve(listener);
        partner
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (state, secret) = (self.state.clone(), self.secret.clone());
        let connections = state.clone();
        let handle = move |request| answer(request, state.clone(), secret.clone());
        let acceptor = self.runtime.spawn(crate::http::serve(listener, handle, move |connection| {
            if let Ok(mut st) = connections.lock() {
                st.connections.push(connection);
            }
        }));
        self.state.lock().expect("state").acceptor = Some(acceptor.abort_handle());
    }

    /// The URL of `path` on this partner.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Queues replies for the next requests to `path` (then 200).
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().expect("state").scripts.entry(path.to_string()).or_default().extend(replies);
    }

    /// Everything received on `path`, in arrival order.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state.lock().expect("state").received.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Goes down (listener closed, open connections cut) for `duration`, then listens on the same port again.
    pub fn down_for(&self, duration: Duration) {
        {
            let mut st = self.state.lock().expect("state");
            if let Some(acceptor) = st.acceptor.take() {
                acceptor.abort();
            }
            for connection in st.connections.drain(..) {
                connection.abort();
            }
        }
        let addr = self.addr.clone();
        let deadline = Instant::now() + duration;
        std::thread::sleep(duration);
        let listener = self.runtime.block_on(async move {
            // The old socket may linger briefly after the abort; bounded retries.
            for _ in 0..100 {
                if let Ok(listener) = tokio::net::TcpListener::bind(&addr).await {
                    return listener;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("could not listen on {addr} again");
        });
        assert!(Instant::now() >= deadline);
        self.serve(listener);
    }
}

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
    secret: Vec<u8>,
) -> hyper::Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let headers: HashMap<String, String> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
    let verified = verify(&secret, &id, &timestamp, &header("webhook-signature"), &body);
    let reply = state
        .lock()
        .ok()
        .and_then(|mut st| st.scripts.get_mut(&path).and_then(VecDeque::pop_front))
        .unwrap_or(Reply::Status(if verified { 200 } else { 401 }, None));
    let answered = match &reply {
        Reply::Status(status, _) => *status,
        Reply::Redirect(_) => 307,
        Reply::Hang => 0,
    };
    if let Ok(mut st) = state.lock() {
        st.received.push(Received {
            path,
            id,
            timestamp,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            verified,
            answered,
            at: Instant::now(),
            headers: headers.clone(),
        });
    }
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    match reply {
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Reply::Status(status, retry_after) => {
            *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
            if let Some(seconds) = retry_after {
                response.headers_mut().insert("retry-after", seconds.into());
            }
        }
        Reply::Redirect(location) => {
            *response.status_mut() = hyper::StatusCode::TEMPORARY_REDIRECT;
            if let Ok(value) = hyper::header::HeaderValue::try_from(location) {
                response.headers_mut().insert("location", value);
            }
        }
    }
    response
}
