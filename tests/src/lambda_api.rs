//! A Lambda Runtime API emulator on 127.0.0.1: the same HTTP interface AWS gives a function's runtime
//! (`/2018-06-01/runtime/invocation/next`, `…/{id}/response`, `…/{id}/error`), so a real Lambda binary runs
//! its real `lambda_runtime` loop against it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

type Pending = Arc<Mutex<VecDeque<(String, Vec<u8>)>>>;
type Results = Arc<Mutex<HashMap<String, Result<String, String>>>>;

/// A running emulator; stopped when dropped.
pub struct RuntimeApi {
    /// `127.0.0.1:PORT`: the value of `AWS_LAMBDA_RUNTIME_API` for the function.
    pub addr: String,
    pending: Pending,
    results: Results,
    counter: Mutex<u64>,
    runtime: Option<tokio::runtime::Runtime>,
}

fn reply(status: u16, body: Vec<u8>, headers: &[(&str, String)]) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) =
            (hyper::header::HeaderName::try_from(*name), hyper::header::HeaderValue::try_from(value.as_str()))
        {
            response.headers_mut().insert(n, v);
        }
    }
    response
}

impl RuntimeApi {
    /// Starts the emulator on a free port.
    pub fn start() -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("addr").to_string();
        let pending: Pending = Arc::default();
        let results: Results = Arc::default();
        let (p, r) = (pending.clone(), results.clone());
        runtime.spawn(crate::http::serve(listener, move |request| route(request, p.clone(), r.clone()), |_| {}));
        Self { addr, pending, results, counter: Mutex::new(0), runtime: Some(runtime) }
    }

    /// Invokes the function with `payload` and waits (at most `timeout`) for its response (`Ok`) or the error
    /// it reported (`Err`).
    pub fn invoke(&self, payload: &serde_json::Value, timeout: Duration) -> Result<Result<String, String>, String> {
        let id = {
            let mut n = self.counter.lock().map_err(|e| e.to_string())?;
            *n += 1;
            format!("req-{n:04}")
        };
        self.pending.lock().map_err(|e| e.to_string())?.push_back((id.clone(), payload.to_string().into_bytes()));
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(result) = self.results.lock().map_err(|e| e.to_string())?.remove(&id) {
                return Ok(result);
            }
            if let Some(init) = self.results.lock().map_err(|e| e.to_string())?.get("init") {
                return Err(format!("the function failed to start: {init:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("no response to {id} within {timeout:?}"))
    }
}

async fn route(
    request: hyper::Request<hyper::body::Incoming>,
    pending: Pending,
    results: Results,
) -> hyper::Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let body = request.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let text = String::from_utf8_lossy(&body).into_owned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["2018-06-01", "runtime", "invocation", "next"]) => {
            // Long poll, as AWS does, until an invocation is queued (the runtime shuts down with the test).
            loop {
                let next = pending.lock().ok().and_then(|mut q| q.pop_front());
                if let Some((id, payload)) = next {
                    let deadline = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() + 60_000)
                        .unwrap_or(0);
                    return reply(
                        200,
                        payload,
                        &[
                            ("lambda-runtime-aws-request-id", id),
                            ("lambda-runtime-deadline-ms", deadline.to_string()),
                            (
                                "lambda-runtime-invoked-function-arn",
                                "arn:aws:lambda:us-east-1:000000000000:function:ingest".into(),
                            ),
                            ("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000;Sampled=0".into()),
                            ("content-type", "application/json".into()),
                        ],
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        ("POST", ["2018-06-01", "runtime", "invocation", id, "response"]) => {
            if let Ok(mut r) = results.lock() {
                r.insert((*id).to_string(), Ok(text));
            }
            reply(202, b"{\"status\":\"OK\"}".to_vec(), &[])
        }
        ("POST", ["2018-06-01", "runtime", "invocation", id, "error"]) => {
            if let Ok(mut r) = results.lock() {
                r.insert((*id).to_string(), Err(text));
            }
            reply(202, b"{\"status\":\"OK\"}".to_vec(), &[])
        }
        ("POST", ["2018-06-01", "runtime", "init", "error"]) => {
            if let Ok(mut r) = results.lock() {
                r.insert("init".to_string(), Err(text));
            }
            reply(202, b"{\"status\":\"OK\"}".to_vec(), &[])
        }
        _ => reply(404, b"{\"message\":\"unknown runtime API path\"}".to_vec(), &[]),
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
