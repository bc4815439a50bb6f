//! Destination definitions (`config/destinations.json`, schema `docs/schemas/destination-definition.schema.json`):
//! where to send, what, with which profile fields, how batched, how fast, and signed with which secrets.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::retry::RetryPolicy;
use super::signing::Secret;
use crate::audiences::AudienceSet;
use crate::profile::is_pii_trait;
use crate::tags::{Catalog, DefinitionError, EventFilter, Expected, TagSet};

/// Headers a destination may not set: the ones the delivery itself owns.
const RESERVED_HEADERS: [&str; 8] = [
    "host",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "user-agent",
    "te",
];

/// One partner endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationDefinition {
    /// Stable id (`[a-z0-9_]`, ≤ 64 chars).
    pub id: String,
    /// Trait and event names it sends that the data has not carried yet (the data dictionary would refuse
    /// them).
    #[serde(default, skip_serializing_if = "Expected::is_none")]
    pub expected: Expected,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Who answers for it.
    #[serde(default)]
    pub owner: String,
    /// Whether it receives anything (a 410 from the partner turns this off in the destination's status).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `https://…` (`http://` only for loopback during local development).
    pub url: String,
    /// The current signing secret (`whsec_…`). Kept apart from the definitions, in [`DESTINATION_SECRETS`]
    /// ([`DestinationSecrets::apply`] gives it back to the components that sign or verify): a definition read
    /// from `config/` has none. Definitions written before keep theirs inline, which is still honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Secrets being rotated out: messages are signed with these too until their time (ms since the epoch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_secrets: Vec<PreviousSecret>,
    /// What to send.
    pub send: Subscriptions,
    /// Which profile fields each message carries.
    #[serde(default)]
    pub fields: Fields,
    /// Whether personal data (PII traits, raw emails and phone numbers) may be sent; hashed otherwise.
    #[serde(default)]
    pub allow_pii: bool,
    /// The purposes this destination serves (`marketing`, `advertising`, …, as consent tools name them in
    /// `context.consent.categoryPreferences`): nothing about a person whose latest choice denies one of them is
    /// sent. A later grant sends nothing retroactively. Empty: no purpose is checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purposes: Vec<String>,
    /// How messages are grouped into requests.
    #[serde(default)]
    pub batching: Batching,
    /// At most this many requests per second (default 50).
    #[serde(default = "default_rate")]
    pub rate_limit_per_second: u32,
    /// Extra request headers (e.g. the partner's own authorization).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Seconds to wait before each attempt (default: the Standard Webhooks schedule).
    #[serde(default)]
    pub retry_schedule: RetryPolicy,
    /// How long one attempt may take (ms, default 10,000).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Follow up to 3 redirects (each target checked like the URL); off by default.
    #[serde(default)]
    pub follow_redirects: bool,
}

/// Where the destinations' signing secrets are kept: `secrets/v1/destinations.json`, apart from the definitions
/// (`config/destinations.json`), so that what reads configuration — ingest, the recompute, a `config:read`
/// key, an export — never holds them; in the cloud only the activation and API functions may read it.
pub const DESTINATION_SECRETS: &str = "secrets/v1/destinations.json";

/// Every destination's secrets, by destination id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationSecrets(pub BTreeMap<String, SecretEntry>);

/// One destination's secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretEntry {
    /// The current signing secret.
    pub secret: Secret,
    /// Secrets being rotated out, each until its time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_secrets: Vec<PreviousSecret>,
}

impl DestinationSecrets {
    /// Gives each definition its stored secrets (they win over any a definition still holds inline).
    pub fn apply(&self, definitions: &mut [DestinationDefinition]) {
        for definition in definitions {
            if let Some(entry) = self.0.get(&definition.id) {
                definition.secret = Some(entry.secret.clone());
                definition.previous_secrets = entry.previous_secrets.clone();
            }
        }
    }
}

/// A secret still signing until a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreviousSecret {
    /// The old secret.
    pub secret: Secret,
    /// Until when it signs too (ms since the epoch).
    pub until: i64,
}

/// What a destination receives.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subscriptions {
    /// Audience ids whose entries and exits are sent.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Events sent as they arrive (real-time triggers), each filter by name, type and properties.
    #[serde(default)]
    pub events: Vec<EventFilter>,
    /// Trait names whose changes are sent.
    #[serde(default)]
    pub traits: Vec<String>,
    /// Tag ids whose changes are sent.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Profile fields in each message.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fields {
    /// Traits to include.
    #[serde(default)]
    pub traits: Vec<String>,
    /// Tags to include.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Include the profile's identifiers (emails and phones hashed unless `allowPii`).
    #[serde(default = "yes")]
    pub identifiers: bool,
}

/// Request grouping: a request is sent when it holds `maxEvents` messages, would pass `maxBytes`, or its oldest
/// message has waited `maxWaitMs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Batching {
    /// Messages per request (1–1,000; default 100).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Body bytes per request (1 KiB–5 MiB; default 256 KiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Longest wait for more messages (0–60,000 ms; default 1,000).
    #[serde(default = "default_max_wait")]
    pub max_wait_ms: u64,
}

impl Default for Batching {
    fn default() -> Self {
        Self { max_events: default_max_events(), max_bytes: default_max_bytes(), max_wait_ms: default_max_wait() }
    }
}

fn yes() -> bool {
    true
}
fn default_rate() -> u32 {
    50
}
fn default_timeout() -> u64 {
    10_000
}
fn default_max_events() -> usize {
    100
}
fn default_max_bytes() -> usize {
    256 * 1024
}
fn default_max_wait() -> u64 {
    1_000
}

impl DestinationDefinition {
    /// The secrets that sign a message at `now` (ms): the current one and the previous ones not yet expired.
    pub fn signing_secrets(&self, now: i64) -> impl Iterator<Item = &Secret> {
        self.secret.iter().chain(self.previous_secrets.iter().filter(move |p| p.until > now).map(|p| &p.secret))
    }

    /// Whether a trait may be sent to this destination.
    pub fn may_send_trait(&self, name: &str) -> bool {
        self.allow_pii || !is_pii_trait(name)
    }
}

/// Checked destinations.
#[derive(Debug, Clone, Default)]
pub struct DestinationSet {
    destinations: Vec<DestinationDefinition>,
    patterns: crate::tags::Patterns,
}

impl DestinationSet {
    /// Checks definitions against the audiences and tags they name and what is known of the data; every
    /// problem is returned, each naming where it is. `loopback` allows `http://127.0.0.1`-style URLs (local
    /// development only).
    pub fn check(
        definitions: &[DestinationDefinition],
        audiences: &AudienceSet,
        tags: &TagSet,
        catalog: &Catalog,
        loopback: bool,
    ) -> Result<Self, Vec<DefinitionError>> {
        let mut checker = crate::tags::Checker::new(catalog);
        let audience_ids: BTreeSet<&str> = audiences.audiences().iter().map(|a| a.id.as_str()).collect();
        let tag_ids: BTreeSet<&str> = tags.tags().iter().map(|t| t.id.as_str()).collect();
        let mut seen = BTreeSet::new();
        for (i, d) in definitions.iter().enumerate() {
            let at = format!("destinations[{i}] ({})", d.id);
            checker.expecting(&d.expected);
            checker.id(&at, &d.id, &mut seen);
            if let Err(problem) = check_url(&d.url, loopback) {
                checker.error(&format!("{at}.url"), problem.0);
            }
            for (j, audience) in d.send.audiences.iter().enumerate() {
                if !audience_ids.contains(audience.as_str()) {
                    checker.error(&format!("{at}.send.audiences[{j}]"), format!("unknown audience `{audience}`"));
                }
            }
            for (j, filter) in d.send.events.iter().enumerate() {
                checker.filter(&format!("{at}.send.events[{j}]"), filter);
            }
            for (j, purpose) in d.purposes.iter().enumerate() {
                let name = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
                if purpose.is_empty() || purpose.len() > 64 || !purpose.bytes().all(name) {
                    checker.error(
                        &format!("{at}.purposes[{j}]"),
                        format!("`{purpose}` is not a purpose name (1 to 64 letters, digits, `_` or `-`)"),
                    );
                }
            }
            for (field, names) in [("send.tags", &d.send.tags), ("fields.tags", &d.fields.tags)] {
                for (j, tag) in names.iter().enumerate() {
                    if !tag_ids.contains(tag.as_str()) {
                        checker.error(&format!("{at}.{field}[{j}]"), format!("unknown tag `{tag}`"));
                    }
                }
            }
            for (field, names) in [("send.traits", &d.send.traits), ("fields.traits", &d.fields.traits)] {
                for (j, name) in names.iter().enumerate() {
                    let path = format!("{at}.{field}[{j}]");
                    let reported = checker.errors.len();
                    checker.trait_kind(&path, name);
                    if checker.errors.len() == reported && !d.may_send_trait(name) {
                        checker.error(
                            &path,
                            format!("trait `{name}` is personal data; set allowPii to send it to this destination"),
                        );
                    }
                }
            }
            let nothing = d.send.audiences.is_empty()
                && d.send.events.is_empty()
                && d.send.traits.is_empty()
                && d.send.tags.is_empty();
            if nothing {
                checker.error(
                    &format!("{at}.send"),
                    "subscribes to nothing: name audiences, events, traits or tags".into(),
                );
            }
            let b = d.batching;
            if !(1..=1000).contains(&b.max_events) {
                checker.error(&format!("{at}.batching.maxEvents"), format!("{} is outside 1–1000", b.max_events));
            }
            if !(1024..=5 * 1024 * 1024).contains(&b.max_bytes) {
                checker.error(&format!("{at}.batching.maxBytes"), format!("{} is outside 1 KiB–5 MiB", b.max_bytes));
            }
            if b.max_wait_ms > 60_000 {
                checker.error(&format!("{at}.batching.maxWaitMs"), format!("{} ms is over 60,000", b.max_wait_ms));
            }
            if !(1..=10_000).contains(&d.rate_limit_per_second) {
                checker.error(
                    &format!("{at}.rateLimitPerSecond"),
                    format!("{} is outside 1–10,000", d.rate_limit_per_second),
                );
            }
            if !(100..=60_000).contains(&d.timeout_ms) {
                checker.error(&format!("{at}.timeoutMs"), format!("{} ms is outside 100–60,000", d.timeout_ms));
            }
            let schedule = &d.retry_schedule.schedule;
            if schedule.is_empty() || schedule.len() > 20 || schedule.iter().any(|s| *s > 7 * 86400) {
                checker.error(
                    &format!("{at}.retrySchedule"),
                    "give 1–20 waits of at most 7 days (seconds), the first normally 0".into(),
                );
            }
            for name in d.headers.keys() {
                let lower = name.to_ascii_lowercase();
                let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !valid {
                    checker.error(&format!("{at}.headers.{name}"), "not a header name".into());
                } else if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("webhook-") {
                    checker.error(&format!("{at}.headers.{name}"), "set by the delivery itself".into());
                }
            }
            for (name, value) in &d.headers {
                if value.bytes().any(|b| b == b'\r' || b == b'\n') {
                    checker.error(&format!("{at}.headers.{name}"), "a header value may not hold a line break".into());
                }
            }
        }
        if !checker.errors.is_empty() {
            return Err(checker.errors);
        }
        Ok(Self { destinations: definitions.to_vec(), patterns: checker.patterns })
    }

    /// Every checked destination (enabled or not).
    pub fn destinations(&self) -> &[DestinationDefinition] {
        &self.destinations
    }

    pub(crate) fn patterns(&self) -> &crate::tags::Patterns {
        &self.patterns
    }

    /// One destination by id.
    pub fn get(&self, id: &str) -> Option<&DestinationDefinition> {
        self.destinations.iter().find(|d| d.id == id)
    }
}

/// A destination URL: absolute, `https` (or `http` to loopback when allowed), a host, no credentials. Literal
/// addresses — in every spelling a resolver accepts ([`super::ssrf::literal_address`]) — and `localhost` names
/// are checked here; other names are checked after resolution, at send time.
pub fn check_url(url: &str, loopback: bool) -> Result<(), crate::Invalid> {
    let parsed = Url::parse(url)?;
    let reach = if loopback { super::ssrf::Reach::PublicAndLoopback } else { super::ssrf::Reach::Public };
    let literal = super::ssrf::literal_address(&parsed.host)?;
    if let Some(ip) = literal
        && let Some(reason) = super::ssrf::refused(ip, reach)
    {
        let shown = if ip.to_string() == parsed.host.trim_matches(['[', ']']) {
            parsed.host.clone()
        } else {
            format!("{} ({ip})", parsed.host)
        };
        return Err(format!("{shown} is a {reason}; webhooks go to public addresses").into());
    }
    let local_name = literal.is_none() && is_localhost_name(&parsed.host);
    if local_name && !loopback {
        return Err(format!("{} is a loopback name; webhooks go to public addresses", parsed.host).into());
    }
    match parsed.scheme.as_str() {
        "https" => Ok(()),
        "http" if loopback && (local_name || literal.is_some_and(|ip| ip.is_loopback())) => Ok(()),
        "http" => Err("use https (http is allowed only for loopback during local development)".into()),
        other => Err(format!("scheme `{other}` is not https").into()),
    }
}

/// `localhost` and its subdomains, which resolvers answer with loopback (RFC 6761).
fn is_localhost_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    host == "localhost" || host.ends_with(".localhost")
}

/// The parts of an absolute URL a delivery needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https` or `http`, lower-cased.
    pub scheme: String,
    /// Host name or address (IPv6 in brackets), lower-cased.
    pub host: String,
    /// Port (default for the scheme when absent).
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Url {
    /// Parses `scheme://host[:port][/path][?query]`, refusing user info and fragments.
    pub fn parse(url: &str) -> Result<Self, crate::Invalid> {
        let (scheme, rest) = url.split_once("://").ok_or("not an absolute URL")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            other => return Err(format!("scheme `{other}` is not https").into()),
        };
        if url.contains('#') {
            return Err("a webhook URL has no fragment".into());
        }
        if url.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err("a URL holds no spaces or control characters".into());
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err("credentials in the URL are not allowed; use headers".into());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().map_err(|_| format!("port `{port}` is not a number"))?)
            }
            _ => (authority, default_port),
        };
        if host.is_empty() || host == "[]" {
            return Err("the URL has no host".into());
        }
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Self { scheme, host: host.to_ascii_lowercase(), port, path })
    }
}
