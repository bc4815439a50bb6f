//! The sources file (`config/sources.json`) and lookups on it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::ids::{Entropy, hex, sha256_hex};

/// One source of events (a website, an app, a server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceConfig {
    /// Stable id, `[a-z0-9][a-z0-9_-]{0,63}`; stored with every event.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// SHA-256 (hex) of the write key. The key itself is never stored.
    pub write_key_sha256: String,
    /// Origins allowed to send from a browser: exact (`https://shop.example`), a subdomain wildcard
    /// (`https://*.shop.example`), or `*` for any. Requests without an `Origin` header (servers, apps) are
    /// not restricted by this list.
    #[serde(default = "any_origin")]
    pub allowed_origins: Vec<String>,
    /// How events from this source are treated.
    #[serde(default)]
    pub settings: SourceSettings,
    /// A disabled source's key is refused like an unknown one.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What its events must look like ([`super::TrackingPlan`]); none: anything goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_plan: Option<super::TrackingPlan>,
    /// What sends to it: SDKs and servers with the write key (`http`, the default), or a SaaS system's signed
    /// webhooks to `POST /v1/webhooks/<id>` (`shopify`, `stripe`, `webhook`).
    #[serde(default, skip_serializing_if = "SourceKind::is_http")]
    pub kind: SourceKind,
    /// The `webhook` kind's mapping: what a payload becomes, its fields JSON pointers into the payload
    /// (`{"column": "/customer/email"}`), read as a file import's mapping reads columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<crate::import::Mapping>,
}

/// What sends to a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// SDKs, servers and the pixel, authenticated by the write key.
    #[default]
    Http,
    /// Shopify's webhooks (`X-Shopify-Hmac-Sha256`).
    Shopify,
    /// Stripe's webhooks (`Stripe-Signature`).
    Stripe,
    /// Any sender signing as Standard Webhooks do (`webhook-id`, `webhook-timestamp`, `webhook-signature`),
    /// its payloads read through the source's mapping.
    Webhook,
}

impl SourceKind {
    /// Every kind, as written.
    pub const NAMES: [&str; 4] = ["http", "shopify", "stripe", "webhook"];

    /// The default kind (serde's test for leaving it out).
    pub fn is_http(&self) -> bool {
        *self == SourceKind::Http
    }

    /// A kind that receives signed webhooks.
    pub fn is_webhook(&self) -> bool {
        !self.is_http()
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "http" => Some(SourceKind::Http),
            "shopify" => Some(SourceKind::Shopify),
            "stripe" => Some(SourceKind::Stripe),
            "webhook" => Some(SourceKind::Webhook),
            _ => None,
        }
    }

    /// As written.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Whether `secret` can be this kind's signing secret (a Shopify app's secret; Stripe's `whsec_…`; Standard
    /// Webhooks' `whsec_` and base64 of 24 to 64 bytes).
    pub fn check_secret(self, secret: &str) -> Result<(), crate::error::Invalid> {
        use base64::Engine as _;
        let secret = secret.trim();
        if self.is_http() {
            return Err("only webhook sources (shopify, stripe, webhook) have a signing secret".into());
        }
        if secret.len() < 16 || secret.len() > 256 || secret.chars().any(char::is_whitespace) {
            return Err("a signing secret is 16 to 256 characters without spaces".into());
        }
        match self {
            SourceKind::Stripe if !secret.starts_with("whsec_") => {
                Err("a Stripe signing secret starts with `whsec_` (the endpoint's secret in Stripe's dashboard)".into())
            }
            SourceKind::Webhook => {
                let key = secret
                    .strip_prefix("whsec_")
                    .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
                match key {
                    Some(key) if (24..=64).contains(&key.len()) => Ok(()),
                    _ => Err("a Standard Webhooks secret is `whsec_` and the base64 of 24 to 64 random bytes".into()),
                }
            }
            _ => Ok(()),
        }
    }
}

/// Per-source treatment of events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSettings {
    /// Keep the client's IP address in `context.ip` at all.
    #[serde(default = "yes")]
    pub collect_ip: bool,
    /// Zero the host part of the IP (last octet of IPv4, last 80 bits of IPv6) before storing it.
    #[serde(default = "yes")]
    pub anonymize_ip: bool,
    /// Country calling code (`49`, `1`, `86`) for phone numbers written nationally: with it, `030 1234567`
    /// becomes `+49301234567`, so the same phone matches across sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_calling_code: Option<String>,
}

impl Default for SourceSettings {
    fn default() -> Self {
        Self { collect_ip: true, anonymize_ip: true, default_calling_code: None }
    }
}

fn any_origin() -> Vec<String> {
    vec!["*".to_string()]
}

fn yes() -> bool {
    true
}

impl SourceConfig {
    /// Whether a browser at `origin` may send events for this source.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        self.allowed_origins.iter().any(|allowed| origin_matches(allowed, &origin))
    }
}

fn origin_matches(allowed: &str, origin: &str) -> bool {
    let allowed = allowed.trim_end_matches('/').to_ascii_lowercase();
    if allowed == "*" || allowed == origin {
        return true;
    }
    // `https://*.shop.example` matches `https://www.shop.example` and `https://a.b.shop.example`,
    // not `https://shop.example` nor `https://evilshop.example`.
    match allowed.split_once("://*.") {
        Some((scheme, domain)) => origin
            .strip_prefix(scheme)
            .and_then(|rest| rest.strip_prefix("://"))
            .is_some_and(|host| host.len() > domain.len() && host.ends_with(&format!(".{domain}"))),
        None => false,
    }
}

/// On-disk shape of `config/sources.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourcesFile {
    version: u32,
    sources: Vec<SourceConfig>,
}

/// All sources, indexed by write-key hash.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    list: Vec<SourceConfig>,
    by_key_hash: HashMap<String, usize>,
}

impl Sources {
    /// Parses and checks `config/sources.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let file: SourcesFile =
            serde_json::from_slice(bytes).map_err(|e| Error::Config(format!("config/sources.json: {e}")))?;
        if file.version != 1 {
            return Err(Error::Config(format!(
                "config/sources.json: version {} is not supported (expected 1)",
                file.version
            )));
        }
        let mut sources = Sources::default();
        for source in file.sources {
            sources.add(source)?;
        }
        Ok(sources)
    }

    /// The file's JSON, pretty-printed (operators read it).
    pub fn to_json(&self) -> Vec<u8> {
        let file = SourcesFile { version: 1, sources: self.list.clone() };
        let mut out = serde_json::to_vec_pretty(&file).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Adds a source after checking its id, key hash and origins.
    pub fn add(&mut self, source: SourceConfig) -> Result<(), Error> {
        let id_ok = source.id.len() <= 64
            && source.id.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && source.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(Error::Config(format!("source id {:?} must match [a-z0-9][a-z0-9_-]{{0,63}}", source.id)));
        }
        if self.list.iter().any(|s| s.id == source.id) {
            return Err(Error::Config(format!("source id {:?} is used twice", source.id)));
        }
        let hash = source.write_key_sha256.to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Config(format!(
                "source {:?}: writeKeySha256 must be 64 hex digits (the SHA-256 of the key, not the key)",
                source.id
            )));
        }
        if self.by_key_hash.contains_key(&hash) {
            return Err(Error::Config(format!(
                "source {:?}: its write key is already used by another source",
                source.id
            )));
        }
        if let Some(code) = &source.settings.default_calling_code
            && !((1..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Error::Config(format!(
                "source {:?}: defaultCallingCode must be 1 to 3 digits (e.g. \"49\"), not {code:?}",
                source.id
            )));
        }
        for origin in &source.allowed_origins {
            let ok = origin == "*" || origin.starts_with("https://") || origin.starts_with("http://");
            if !ok {
                return Err(Error::Config(format!(
                    "source {:?}: allowed origin {origin:?} must be \"*\" or start with http:// or https://",
                    source.id
                )));
            }
        }
        match (source.kind, &source.mapping) {
            (SourceKind::Webhook, None) => {
                return Err(Error::Config(format!(
                    "source {:?}: a webhook source needs a mapping (what its payloads become)",
                    source.id
                )));
            }
            (SourceKind::Webhook, Some(mapping)) => {
                let pointers = mapping.columns_named();
                if let Some(bad) = pointers.iter().find(|p| !p.starts_with('/')) {
                    return Err(Error::Config(format!(
                        "source {:?}: mapping column {bad:?} must be a JSON pointer into the payload (`/customer/email`)",
                        source.id
                    )));
                }
                mapping
                    .clone()
                    .check(&pointers)
                    .map_err(|problem| Error::Config(format!("source {:?}: mapping: {problem}", source.id)))?;
            }
            (_, Some(_)) => {
                return Err(Error::Config(format!(
                    "source {:?}: only a source of kind `webhook` takes a mapping (shopify and stripe have theirs built in)",
                    source.id
                )));
            }
            (_, None) => {}
        }
        self.by_key_hash.insert(hash, self.list.len());
        self.list.push(source);
        Ok(())
    }

    /// The enabled source whose write key this is.
    pub fn authenticate(&self, write_key: &str) -> Option<&SourceConfig> {
        let write_key = write_key.trim();
        if write_key.is_empty() {
            return None;
        }
        let index = *self.by_key_hash.get(&sha256_hex(write_key))?;
        self.list.get(index).filter(|s| s.enabled && s.kind.is_http())
    }

    /// The enabled webhook source `id` (inbound webhooks name their source in the path).
    pub fn webhook(&self, id: &str) -> Option<&SourceConfig> {
        self.list.iter().find(|s| s.id == id && s.enabled && s.kind.is_webhook())
    }

    /// Whether any enabled source accepts browsers from `origin` (CORS preflights carry no key).
    pub fn any_allows_origin(&self, origin: &str) -> bool {
        self.list.iter().any(|s| s.enabled && s.allows_origin(origin))
    }

    /// All sources, in file order.
    pub fn list(&self) -> &[SourceConfig] {
        &self.list
    }

    /// Whether there are no sources.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// A new source named `name` with a fresh 128-bit write key. Returns the source (holding only the key's hash)
/// and the key, which the caller shows once.
pub fn new_source(id: &str, name: &str, entropy: &mut Entropy) -> (SourceConfig, String) {
    let key = hex(&entropy.next_16());
    let source = SourceConfig {
        id: id.to_string(),
        name: name.to_string(),
        write_key_sha256: sha256_hex(&key),
        allowed_origins: any_origin(),
        settings: SourceSettings::default(),
        enabled: true,
        tracking_plan: None,
        kind: SourceKind::Http,
        mapping: None,
    };
    (source, key)
}

/// A source id from a display name: `My Web Shop!` → `my-web-shop` (`source` when nothing is left).
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-');
    let out: String = out.chars().take(64).collect();
    if out.is_empty() { "source".to_string() } else { out }
}

impl Sources {
    /// Replaces the source with `source.id` (checked as [`Sources::add`] checks); `false` if there is none.
    pub fn replace(&mut self, source: SourceConfig) -> Result<bool, Error> {
        let Some(position) = self.list.iter().position(|s| s.id == source.id) else { return Ok(false) };
        let mut list = self.list.clone();
        list[position] = source;
        *self = Self::from_list(list)?;
        Ok(true)
    }

    /// Removes the source `id`; returns it.
    pub fn remove(&mut self, id: &str) -> Option<SourceConfig> {
        let position = self.list.iter().position(|s| s.id == id)?;
        let mut list = self.list.clone();
        let removed = list.remove(position);
        // The rest were valid together, so they still are.
        *self = Self::from_list(list).unwrap_or_default();
        Some(removed)
    }

    fn from_list(list: Vec<SourceConfig>) -> Result<Self, Error> {
        let mut sources = Sources::default();
        for source in list {
            sources.add(source)?;
        }
        Ok(sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources_with(origins: &[&str]) -> (Sources, String) {
        let (mut source, key) = new_source("web", "Web", &mut Entropy::from_seed([9; 32]));
        source.allowed_origins = origins.iter().map(|o| o.to_string()).collect();
        let mut sources = Sources::default();
        sources.add(source).unwrap();
        (sources, key)
    }

    #[test]
    fn authenticates_by_key_and_stores_only_the_hash() {
        let (sources, key) = sources_with(&["*"]);
        assert_eq!(key.len(), 32);
        assert_eq!(sources.authenticate(&key).unwrap().id, "web");
        assert!(sources.authenticate("not-the-key").is_none());
        assert!(sources.authenticate("").is_none());
        let json = String::from_utf8(sources.to_json()).unwrap();
        assert!(!json.contains(&key), "the key itself must never be stored");
        assert!(json.contains(&sha256_hex(&key)));
    }

    #[test]
    fn slugs_replace_and_remove() {
        assert_eq!(slug("My Web Shop!"), "my-web-shop");
        assert_eq!(slug("  iOS app "), "ios-app");
        assert_eq!(slug("网站"), "source");
        let (mut sources, key) = sources_with(&["*"]);
        let mut changed = sources.list()[0].clone();
        changed.name = "Renamed".into();
        assert!(sources.replace(changed.clone()).unwrap());
        assert_eq!(sources.authenticate(&key).unwrap().name, "Renamed");
        changed.id = "other".into();
        assert!(!sources.replace(changed).unwrap());
        let mut bad = sources.list()[0].clone();
        bad.allowed_origins = vec!["ftp://x".into()];
        assert!(sources.replace(bad).is_err());
        assert_eq!(sources.remove("web").unwrap().name, "Renamed");
        assert!(sources.authenticate(&key).is_none() && sources.remove("web").is_none());
    }

    #[test]
    fn disabled_source_is_refused() {
        let (sources, key) = sources_with(&["*"]);
        let mut json: serde_json::Value = serde_json::from_slice(&sources.to_json()).unwrap();
        json["sources"][0]["enabled"] = false.into();
        let sources = Sources::from_json(json.to_string().as_bytes()).unwrap();
        assert!(sources.authenticate(&key).is_none());
    }

    #[test]
    fn file_round_trips_and_defaults_apply() {
        let text = format!(
            r#"{{"version":1,"sources":[{{"id":"app","name":"App","writeKeySha256":"{}"}}]}}"#,
            sha256_hex("k")
        );
        let sources = Sources::from_json(text.as_bytes()).unwrap();
        let s = &sources.list()[0];
        assert_eq!(s.allowed_origins, vec!["*"]);
        assert!(s.enabled && s.settings.anonymize_ip && s.settings.collect_ip);
        let again = Sources::from_json(&sources.to_json()).unwrap();
        assert_eq!(again.list(), sources.list());
    }

    #[test]
    fn bad_files_name_the_problem() {
        let err = |text: &str| Sources::from_json(text.as_bytes()).unwrap_err().to_string();
        assert!(err("{").contains("config/sources.json"));
        assert!(err(r#"{"version":2,"sources":[]}"#).contains("version 2"));
        let h = sha256_hex("k");
        assert!(
            err(&format!(r#"{{"version":1,"sources":[{{"id":"Bad Id","name":"x","writeKeySha256":"{h}"}}]}}"#))
                .contains("source id")
        );
        assert!(err(r#"{"version":1,"sources":[{"id":"a","name":"x","writeKeySha256":"k"}]}"#).contains("64 hex"));
        assert!(err(&format!(
            r#"{{"version":1,"sources":[{{"id":"a","name":"x","writeKeySha256":"{h}"}},{{"id":"b","name":"y","writeKeySha256":"{h}"}}]}}"#
        ))
        .contains("already used"));
        assert!(err(&format!(
            r#"{{"version":1,"sources":[{{"id":"a","name":"x","writeKeySha256":"{h}","allowedOrigins":["shop.example"]}}]}}"#
        ))
        .contains("allowed origin"));
        assert!(
            err(&format!(r#"{{"version":1,"sources":[{{"id":"a","name":"x","writeKeySha256":"{h}","wat":1}}]}}"#))
                .contains("unknown field")
        );
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain_wildcard() {
        let (sources, _) = sources_with(&["https://shop.example", "https://*.blog.example"]);
        let s = &sources.list()[0];
        assert!(s.allows_origin("https://shop.example"));
        assert!(s.allows_origin("https://SHOP.example/"));
        assert!(!s.allows_origin("http://shop.example"));
        assert!(!s.allows_origin("https://evilshop.example"));
        assert!(s.allows_origin("https://www.blog.example"));
        assert!(s.allows_origin("https://a.b.blog.example"));
        assert!(!s.allows_origin("https://blog.example"));
        assert!(!s.allows_origin("https://evilblog.example"));
        assert!(sources.any_allows_origin("https://shop.example"));
        assert!(!sources.any_allows_origin("https://other.example"));
    }
}
