//! S3 (or any S3-compatible server) through `aws-sdk-s3`.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;

use super::aws::{AwsAccess, optional_env, required_env, timeouts};
use super::{Condition, Object, ObjectMeta, ObjectStore, PutOptions, StoreError, check_key};

/// Where the bucket is and how to sign for it.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Custom endpoint (`http://127.0.0.1:9000`) for S3-compatible servers; `None` for AWS.
    pub endpoint: Option<String>,
    /// Bucket name.
    pub bucket: String,
    /// Region and credentials.
    pub access: AwsAccess,
}

impl S3Settings {
    /// From the environment a Lambda function has: `CDP_BUCKET`, optionally `AWS_ENDPOINT_URL_S3`, and
    /// [`AwsAccess::from_env`].
    pub fn from_env() -> Result<Self, shared::Invalid> {
        Ok(Self {
            endpoint: optional_env("AWS_ENDPOINT_URL_S3"),
            bucket: required_env("CDP_BUCKET")?,
            access: AwsAccess::from_env()?,
        })
    }
}

/// An S3 bucket as an object store. Conditional writes map to `If-None-Match: *` and `If-Match: <etag>`,
/// which S3 (since 2024) and conforming servers answer with 412 when they do not hold.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

impl S3Store {
    /// The object (or the `range` of it) and its ETag; `None` when it does not exist. A range that starts
    /// past the end reads as empty.
    async fn read(&self, key: &str, range: Option<String>) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        check_key(key)?;
        let output = match self.client.get_object().bucket(&self.bucket).key(key).set_range(range).send().await {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => return Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => return Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                return Ok(Some((Vec::new(), String::new())));
            }
            Err(e) => return Err(store_error(e)),
        };
        let etag = output.e_tag().unwrap_or_default().to_string();
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading {key}: {e}")))?
            .into_bytes()
            .to_vec();
        Ok(Some((body, etag)))
    }

    /// A store for `settings`. Custom endpoints use path-style addressing (most S3-compatible servers need it).
    pub fn new(settings: S3Settings) -> Self {
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.access.region.clone()))
            .credentials_provider(settings.access.credentials())
            // Checksums only where S3 requires them: the bodies are small and integrity is TLS's job; this keeps
            // requests plain for S3-compatible servers that do not speak aws-chunked trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(timeouts());
        if let Some(endpoint) = settings.endpoint {
            config = config.endpoint_url(endpoint).force_path_style(true);
        }
        Self { client: Client::from_conf(config.build()), bucket: settings.bucket }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

fn store_error<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let status = e.raw_response().map(HasStatus::status);
    // 412: the condition did not hold. 409 ConditionalRequestConflict: a concurrent conditional write won.
    if matches!(status, Some(412 | 409)) || e.code() == Some("PreconditionFailed") {
        return StoreError::PreconditionFailed;
    }
    StoreError::Unavailable(DisplayErrorContext(&e).to_string())
}

/// The HTTP status of a raw response, whatever the SDK's response type.
trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Vec<u8>, options: PutOptions) -> Result<String, StoreError> {
        check_key(key)?;
        let mut request = self.client.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(body));
        if let Some(content_type) = options.content_type {
            request = request.content_type(content_type);
        }
        request = match options.condition {
            Condition::None => request,
            Condition::IfNoneMatch => request.if_none_match("*"),
            Condition::IfMatch(etag) => request.if_match(etag),
        };
        let output = request.send().await.map_err(store_error)?;
        Ok(output.e_tag().unwrap_or_default().to_string())
    }

    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        Ok(self.read(key, None).await?.map(|(body, etag)| Object { body, etag }))
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if len == 0 {
            return Ok(self.get(key).await?.map(|_| Vec::new()));
        }
        Ok(self.read(key, Some(format!("bytes={start}-{}", start + len - 1))).await?.map(|(body, _)| body))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut out = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(store_error)?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    out.push(ObjectMeta { key: key.to_string(), size: object.size().unwrap_or(0).max(0) as u64 });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.client.delete_object().bucket(&self.bucket).key(key).send().await.map_err(store_error)?;
        Ok(())
    }
}
