//! Sending one signed request to a partner, safely: every address a host name resolves to is checked against
//! the SSRF rules before connecting (so a name that resolves to 169.254.169.254 is never dialled), literal
//! addresses are checked before resolving, redirects are off unless the destination turns them on (then each
//! hop is checked the same way), each attempt has a deadline, and the answer's body is read only up to 64 KiB.
//! Nothing secret is logged or returned: errors name the host and what failed.

use std::error::Error as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use shared::activation::destination::{Url, check_url};
use shared::activation::{Outcome, Reach, refused};

/// Redirects followed at most, when a destination allows them.
const MAX_REDIRECTS: usize = 3;
/// The most of a partner's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A resolved address the SSRF rules refuse.
#[derive(Debug)]
struct RefusedAddress(String);

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RefusedAddress {}

/// Resolves with the system resolver and keeps only addresses the rules allow; none left is an error.
#[derive(Clone)]
struct CheckedResolver {
    reach: Reach,
}

impl tower_service::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let reach = self.reach;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut allowed = Vec::new();
            let mut why = None;
            for address in resolved {
                match refused(address.ip(), reach) {
                    None => allowed.push(address),
                    Some(reason) => why = Some(format!("{host} resolves to {} ({reason})", address.ip())),
                }
            }
            if allowed.is_empty() {
                let reason = why.unwrap_or_else(|| format!("{host} resolves to no address"));
                return Err(std::io::Error::other(RefusedAddress(reason)));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// What one attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub elapsed: Duration,
}

/// An HTTP client for webhooks (cheap to clone; connections are pooled per host).
#[derive(Clone)]
pub struct Sender {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector<CheckedResolver>>, Full<Bytes>>,
    reach: Reach,
}

impl Sender {
    /// A client that reaches public addresses only, or public and loopback (`cdp up`'s local switch).
    pub fn new(reach: Reach) -> Self {
        let mut http = HttpConnector::new_with_resolver(CheckedResolver { reach });
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_nodelay(true);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let tls = match builder.with_provider_and_native_roots(provider.clone()) {
            Ok(builder) => builder,
            Err(error) => {
                // No CA roots on this machine: https destinations will fail to connect, with this reason.
                tracing::warn!("no native CA roots for webhook TLS: {error}");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .unwrap_or_else(|_| unreachable!("aws-lc supports the default versions"))
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Self { client, reach }
    }

    /// Posts `body` to `url` with `headers`, within `timeout`, following up to 3 redirects (307/308, same
    /// method and body) when `follow_redirects`.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
        timeout: Duration,
        follow_redirects: bool,
    ) -> Attempt {
        let start = Instant::now();
        let outcome = match tokio::time::timeout(timeout, self.post_inner(url, headers, body, follow_redirects)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Timeout,
        };
        Attempt { outcome, elapsed: start.elapsed() }
    }

    async fn post_inner(&self, url: &str, headers: &[(String, String)], body: Bytes, follow: bool) -> Outcome {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            if let Err(reason) = check_url(&url, self.reach == Reach::PublicAndLoopback) {
                return Outcome::Refused { reason: reason.0 };
            }
            let parsed = match Url::parse(&url) {
                Ok(parsed) => parsed,
                Err(reason) => return Outcome::Refused { reason: reason.0 },
            };
            let mut request = hyper::Request::post(&url);
            for (name, value) in headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let request = match request.body(Full::new(body.clone())) {
                Ok(request) => request,
                Err(error) => return Outcome::Refused { reason: format!("bad request for {}: {error}", parsed.host) },
            };
            let response = match self.client.request(request).await {
                Ok(response) => response,
                Err(error) => return connect_failure(&parsed.host, &error),
            };
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(retry_after);
            let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
            // Read (a bounded part of) the answer so the connection can be reused.
            let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect().await;
            match (status, location) {
                (307 | 308, Some(location)) if follow => url = absolute(&parsed, &location),
                _ => return Outcome::Status { status, retry_after },
            }
        }
        Outcome::Refused { reason: format!("more than {MAX_REDIRECTS} redirects") }
    }
}

fn connect_failure(host: &str, error: &hyper_util::client::legacy::Error) -> Outcome {
    let mut source = error.source();
    while let Some(cause) = source {
        // The resolver's refusal travels inside an io::Error, whose `source` skips it: look inside too.
        let inner = cause.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref);
        let refusal = cause.downcast_ref::<RefusedAddress>().or_else(|| inner.and_then(|e| e.downcast_ref()));
        if let Some(refused) = refusal {
            return Outcome::Refused { reason: refused.0.clone() };
        }
        source = cause.source();
    }
    let mut text = error.to_string();
    if let Some(cause) = error.source() {
        text = format!("{text}: {cause}");
    }
    Outcome::Connect { error: format!("{host}: {text}") }
}

/// `Retry-After` as seconds: a number of seconds, or an HTTP date (seconds from now, at least 0).
fn retry_after(value: &str) -> Option<u64> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(seconds);
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(value.trim()).ok()?;
    let now = jiff::Timestamp::now();
    Some(at.as_second().saturating_sub(now.as_second()).max(0) as u64)
}

/// A redirect target made absolute against the URL that answered.
fn absolute(base: &Url, location: &str) -> String {
    if location.contains("://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{}://{}:{}{location}", base.scheme, base.host, base.port)
    } else {
        let dir = base.path.rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{}://{}:{}{dir}/{location}", base.scheme, base.host, base.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(retry_after("120"), Some(120));
        assert_eq!(retry_after(" 7 "), Some(7));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0), "a past date means now");
        assert_eq!(retry_after("soon"), None);
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        use std::str::FromStr as _;
        use tower_service::Service as _;
        // `localhost` is refused where a destination is defined too; here the resolver's own check is tested.
        let name = Name::from_str("localhost").unwrap();
        let error = CheckedResolver { reach: Reach::Public }.call(name.clone()).await.unwrap_err();
        assert!(error.to_string().contains("localhost resolves to"), "{error}");
        let allowed: Vec<SocketAddr> =
            CheckedResolver { reach: Reach::PublicAndLoopback }.call(name).await.unwrap().collect();
        assert!(allowed.iter().all(|a| a.ip().is_loopback()) && !allowed.is_empty());
    }

    #[test]
    fn redirect_targets_are_made_absolute() {
        let base = Url::parse("https://p.example/a/b?x").unwrap();
        assert_eq!(absolute(&base, "https://q.example/z"), "https://q.example/z");
        assert_eq!(absolute(&base, "/z"), "https://p.example:443/z");
        assert_eq!(absolute(&base, "c"), "https://p.example:443/a/c");
    }
}
