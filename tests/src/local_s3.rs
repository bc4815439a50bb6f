//! A real S3-compatible server (s3s-fs) on 127.0.0.1, embedded in the test process, with an outage switch.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use functions::storage::{S3Settings, S3Store};
use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// Test credentials of the local server (not secrets: the server lives only as long as the test).
pub const ACCESS_KEY: &str = "cdp-test-access-key";
/// See [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "cdp-test-secret-key";
/// The bucket every test uses.
pub const BUCKET: &str = "cdp-events";
/// Region the clients sign for.
pub const REGION: &str = "us-east-1";

/// A running server; stopped when dropped.
pub struct LocalS3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The folder holding the buckets.
    pub root: tempfile::TempDir,
    failing: Arc<AtomicBool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl LocalS3 {
    /// Starts the server on a free port with one bucket, [`BUCKET`].
    pub fn start() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(root.path().join(BUCKET)).expect("bucket folder");
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let failing = Arc::new(AtomicBool::new(false));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));

        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs root");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let switch = failing.clone();
        runtime.spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let service = service.clone();
                let switch = switch.clone();
                let handler = hyper::service::service_fn(move |request| {
                    let service = service.clone();
                    let failing = switch.load(Ordering::SeqCst);
                    async move {
                        if failing {
                            let mut response = hyper::Response::new(s3s::Body::from("injected outage".to_string()));
                            *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                            return Ok::<_, Infallible>(response);
                        }
                        match hyper::service::Service::call(&service, request).await {
                            Ok(response) => Ok(response),
                            Err(_) => {
                                let mut response = hyper::Response::new(s3s::Body::from("server error".to_string()));
                                *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                                Ok(response)
                            }
                        }
                    }
                });
                let connection = http.serve_connection(TokioIo::new(socket), handler).into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        Self { endpoint, root, failing, runtime: Some(runtime) }
    }

    /// Makes every request answer 500 (`true`) or be served again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Settings for the project's S3 adapter pointed at this server.
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint.clone()),
            region: REGION.to_string(),
            bucket: BUCKET.to_string(),
            access_key_id: ACCESS_KEY.to_string(),
            secret_access_key: SECRET_KEY.to_string(),
            session_token: None,
        }
    }

    /// The project's S3 adapter pointed at this server.
    pub fn store(&self) -> S3Store {
        S3Store::new(self.settings())
    }

    /// Runs `future` on this server's runtime (the S3 adapter is async).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.as_ref().expect("runtime").block_on(future)
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
