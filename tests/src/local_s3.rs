//! A real S3-compatible server (s3s-fs) on 127.0.0.1, embedded in the test process, with an outage switch.
//!
//! s3s-fs checks `If-Match`/`If-None-Match` and then writes, and writes the body before its ETag record: two
//! writers racing on one key can both pass the check, and a reader can pair an old body with a new ETag. Amazon S3
//! makes a conditional write atomic, so [`Atomic`] gives the embedded server the same guarantee by serializing
//! writes against each other and against reads (a read opens its file inside the lock and streams it after).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use functions::storage::{S3Settings, S3Store};
use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::SimpleAuth;
use s3s::dto::{
    DeleteObjectInput, DeleteObjectOutput, GetObjectInput, GetObjectOutput, HeadBucketInput, HeadBucketOutput,
    HeadObjectInput, HeadObjectOutput, ListObjectsV2Input, ListObjectsV2Output, PutObjectInput, PutObjectOutput,
};
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result};

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
        let mut builder = S3ServiceBuilder::new(Atomic { fs, lock: tokio::sync::RwLock::new(()) });
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
        S3Settings { endpoint: Some(self.endpoint.clone()), bucket: BUCKET.to_string(), access: access() }
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

/// s3s-fs with writes atomic against each other and against reads, as on Amazon S3.
struct Atomic {
    fs: s3s_fs::FileSystem,
    lock: tokio::sync::RwLock<()>,
}

#[async_trait::async_trait]
impl S3 for Atomic {
    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let _write = self.lock.write().await;
        self.fs.put_object(req).await
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let _write = self.lock.write().await;
        self.fs.delete_object(req).await
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let _read = self.lock.read().await;
        self.fs.get_object(req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let _read = self.lock.read().await;
        self.fs.head_object(req).await
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let _read = self.lock.read().await;
        self.fs.list_objects_v2(req).await
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The test region and credentials the local S3 server (and the local KMS) accept.
pub fn access() -> functions::storage::aws::AwsAccess {
    functions::storage::aws::AwsAccess {
        region: REGION.to_string(),
        access_key_id: ACCESS_KEY.to_string(),
        secret_access_key: SECRET_KEY.to_string(),
        session_token: None,
    }
}
