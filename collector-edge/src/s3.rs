//! S3 over `fetch` with SigV4-presigned URLs (`rusty-s3` signs; it has no HTTP client of its own, so it fits
//! in a Worker). Credentials never leave this module: errors name keys and statuses only.

use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use shared::time::UtcTime;
use worker::{Env, Fetch, Headers, Method, Request, RequestInit};

/// A bucket and the credentials to sign for it.
pub(crate) struct S3 {
    bucket: Bucket,
    credentials: Credentials,
}

/// How long a signed URL is valid: long enough for one request, short enough to be useless if logged.
const SIGNATURE_TTL: Duration = Duration::from_secs(60);

impl S3 {
    pub(crate) fn from_env(env: &Env) -> Result<Self, String> {
        let var = |name: &str| env.var(name).ok().map(|v| v.to_string()).filter(|v| !v.is_empty());
        let secret = |name: &str| {
            env.secret(name)
                .ok()
                .map(|v| v.to_string())
                .or_else(|| var(name))
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("secret {name} is not set (wrangler secret put {name})"))
        };
        let region = var("S3_REGION").ok_or("var S3_REGION is not set")?;
        let bucket = var("S3_BUCKET").ok_or("var S3_BUCKET is not set")?;
        let custom = var("S3_ENDPOINT");
        let style = match var("S3_URL_STYLE").as_deref() {
            Some("path") => UrlStyle::Path,
            Some("virtual") => UrlStyle::VirtualHost,
            Some(other) => return Err(format!("var S3_URL_STYLE must be path or virtual, not {other:?}")),
            None if custom.is_some() => UrlStyle::Path,
            None => UrlStyle::VirtualHost,
        };
        let endpoint = custom.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = endpoint.parse().map_err(|e| format!("var S3_ENDPOINT is not a URL: {e}"))?;
        let bucket =
            Bucket::new(endpoint, style, bucket, region).map_err(|e| format!("invalid bucket settings: {e}"))?;
        let credentials = Credentials::new(secret("S3_ACCESS_KEY_ID")?, secret("S3_SECRET_ACCESS_KEY")?);
        Ok(Self { bucket, credentials })
    }

    /// Creates `key` (never overwrites: `If-None-Match: *`, signed) and returns once S3 has it.
    pub(crate) async fn put_new(&self, key: &str, body: Vec<u8>, now: UtcTime) -> Result<(), String> {
        let mut action = self.bucket.put_object(Some(&self.credentials), key);
        action.headers_mut().insert("if-none-match", "*");
        let url = action.sign_with_time(SIGNATURE_TTL, &timestamp(now));
        let headers = Headers::new();
        headers.set("if-none-match", "*").map_err(|e| e.to_string())?;
        headers.set("content-type", "application/x-ndjson+gzip").map_err(|e| e.to_string())?;
        let mut init = RequestInit::new();
        init.with_method(Method::Put)
            .with_headers(headers)
            .with_body(Some(worker::js_sys::Uint8Array::from(body.as_slice()).into()));
        let request = Request::new_with_init(url.as_str(), &init).map_err(|e| e.to_string())?;
        let mut response = Fetch::Request(request).send().await.map_err(|e| format!("PUT {key}: {e}"))?;
        let status = response.status_code();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            let text = response.text().await.unwrap_or_default();
            Err(format!("PUT {key}: HTTP {status}: {}", text.chars().take(300).collect::<String>()))
        }
    }

    /// Reads `key`; `Ok(None)` when it does not exist.
    pub(crate) async fn get(&self, key: &str, now: UtcTime) -> Result<Option<Vec<u8>>, String> {
        let action = self.bucket.get_object(Some(&self.credentials), key);
        let url = action.sign_with_time(SIGNATURE_TTL, &timestamp(now));
        let request = Request::new(url.as_str(), Method::Get).map_err(|e| e.to_string())?;
        let mut response = Fetch::Request(request).send().await.map_err(|e| format!("GET {key}: {e}"))?;
        match response.status_code() {
            200 => response.bytes().await.map(Some).map_err(|e| format!("GET {key}: {e}")),
            404 => Ok(None),
            status => Err(format!("GET {key}: HTTP {status}")),
        }
    }
}

fn timestamp(now: UtcTime) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(now.unix_millis()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}
