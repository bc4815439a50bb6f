//! API keys: generation, the stored (hashed) records and authentication.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::Error;
use crate::ids::{Entropy, hex, sha256_hex};
use crate::time::UtcTime;

/// Every API key starts with this, so a leaked key is recognisable by secret scanners.
const PREFIX: &str = "cdp_sk_";
/// Hex digits of a key's public id.
const ID_HEX: usize = 16;
/// Hex digits of a key's secret (256 bits).
const SECRET_HEX: usize = 64;

/// What a key may do. `admin` includes every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Read profiles, their timelines and merge histories.
    #[serde(rename = "profiles:read")]
    ProfilesRead,
    /// Change identity: unlink an identifier from a profile.
    #[serde(rename = "profiles:write")]
    ProfilesWrite,
    /// Privacy requests: delete, suppress and unsuppress people.
    #[serde(rename = "profiles:delete")]
    ProfilesDelete,
    /// Read configuration: sources, tags, audiences, destinations and their delivery status.
    #[serde(rename = "config:read")]
    ConfigRead,
    /// Change configuration, rotate write keys, replay deliveries.
    #[serde(rename = "config:write")]
    ConfigWrite,
    /// Read the audit log.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// Send personal data to partners: create or change a destination with `allowPii` (with `config:write`).
    /// Apart from `config:write` because such a destination, pointed at any URL, reads every person's data.
    #[serde(rename = "pii:send")]
    PiiSend,
    /// Read personal traits (email, phone, name, address and those the operator marks) in clear; without it
    /// the API masks them. Apart from `profiles:read` so that most readers never see them.
    #[serde(rename = "pii:read")]
    PiiRead,
    /// Run read-only SQL and the analyses (trends, funnels, retention, paths, audience comparison) over all
    /// the data. Apart from `profiles:read`: it reads every person's events and traits at once.
    #[serde(rename = "analysis:read")]
    AnalysisRead,
    /// Save and delete insights and dashboards (their definitions; running them needs `analysis:read`).
    #[serde(rename = "analysis:write")]
    AnalysisWrite,
    /// Everything, including creating and revoking API keys.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Every scope, in a stable order.
    pub const ALL: [Scope; 11] = [
        Scope::ProfilesRead,
        Scope::ProfilesWrite,
        Scope::ProfilesDelete,
        Scope::ConfigRead,
        Scope::ConfigWrite,
        Scope::AuditRead,
        Scope::PiiSend,
        Scope::PiiRead,
        Scope::AnalysisRead,
        Scope::AnalysisWrite,
        Scope::Admin,
    ];

    /// The scope's name, as in keys' records and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Scope::ProfilesRead => "profiles:read",
            Scope::ProfilesWrite => "profiles:write",
            Scope::ProfilesDelete => "profiles:delete",
            Scope::ConfigRead => "config:read",
            Scope::ConfigWrite => "config:write",
            Scope::AuditRead => "audit:read",
            Scope::PiiSend => "pii:send",
            Scope::PiiRead => "pii:read",
            Scope::AnalysisRead => "analysis:read",
            Scope::AnalysisWrite => "analysis:write",
            Scope::Admin => "admin",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key's stored record: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKey {
    /// Public id (16 hex digits), part of the key; shown in listings and the audit log.
    pub id: String,
    /// What the key is for.
    pub name: String,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
    /// SHA-256 (hex) of the whole key.
    pub sha256: String,
    /// When it was created.
    pub created_at: UtcTime,
    /// Who created it (a key id, or `cli` for keys made with `cdp api-key create`).
    pub created_by: String,
    /// When it was revoked; a revoked key authenticates nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<UtcTime>,
}

impl ApiKey {
    /// Whether the key may act in `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

/// A freshly generated key: the record to store and the key to show once.
#[derive(Clone)]
pub struct NewKey {
    /// The record (hash only).
    pub record: ApiKey,
    /// The key itself: shown to its creator once, then only its hash exists.
    pub key: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey").field("record", &self.record).field("key", &"[redacted]").finish()
    }
}

/// Why a request's credentials were refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing API key: send `Authorization: Bearer cdp_sk_…`")]
    Missing,
    /// A source's write key: those only send events.
    #[error("a source's write key cannot call the API (write keys only send events); use an API key")]
    WriteKey,
    /// Not a key we issued, or its secret does not match.
    #[error("invalid API key")]
    Invalid,
    /// The key was revoked.
    #[error("this API key was revoked")]
    Revoked,
}

/// On-disk shape of the keys file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    version: u32,
    keys: Vec<ApiKey>,
}

/// All API keys (active and revoked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

impl ApiKeys {
    /// Where the keys live: beside, not inside, `config/` (a key to change configuration must not let one
    /// mint keys).
    pub const KEY: &'static str = "access/v1/api-keys.json";

    /// Parses the keys file.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let file: KeysFile = serde_json::from_slice(bytes).map_err(|e| Error::Config(format!("{}: {e}", Self::KEY)))?;
        if file.version != 1 {
            return Err(Error::Config(format!(
                "{}: version {} is not supported (expected 1)",
                Self::KEY,
                file.version
            )));
        }
        Ok(Self { keys: file.keys })
    }

    /// The file's JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let file = KeysFile { version: 1, keys: self.keys.clone() };
        serde_json::to_vec_pretty(&file).unwrap_or_default()
    }

    /// Every key's record, oldest first.
    pub fn list(&self) -> &[ApiKey] {
        &self.keys
    }

    /// The record with this id.
    pub fn get(&self, id: &str) -> Option<&ApiKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Makes a key: 64 bits of public id and 256 bits of secret from `entropy` (seeded from the platform's
    /// CSPRNG by the caller), and adds its record.
    pub fn create(
        &mut self,
        name: &str,
        scopes: BTreeSet<Scope>,
        created_by: &str,
        now: UtcTime,
        entropy: &mut Entropy,
    ) -> Result<NewKey, Error> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(Error::Config("an API key needs a name of 1 to 200 characters".into()));
        }
        if scopes.is_empty() {
            return Err(Error::Config(format!(
                "an API key needs at least one scope ({})",
                Scope::ALL.map(Scope::name).join(", ")
            )));
        }
        let mut id = hex(&entropy.next_16()[..ID_HEX / 2]);
        while self.get(&id).is_some() {
            id = hex(&entropy.next_16()[..ID_HEX / 2]);
        }
        let secret = format!("{}{}", hex(&entropy.next_16()), hex(&entropy.next_16()));
        let key = format!("{PREFIX}{id}_{secret}");
        let record = ApiKey {
            id,
            name: name.to_string(),
            scopes,
            sha256: sha256_hex(&key),
            created_at: now,
            created_by: created_by.to_string(),
            revoked_at: None,
        };
        self.keys.push(record.clone());
        Ok(NewKey { record, key })
    }

    /// Revokes the key `id`; returns its record as it was, or `None` if there is no such key. Revoking a
    /// revoked key keeps the first revocation time.
    pub fn revoke(&mut self, id: &str, now: UtcTime) -> Option<ApiKey> {
        let key = self.keys.iter_mut().find(|k| k.id == id)?;
        let before = key.clone();
        key.revoked_at.get_or_insert(now);
        Some(before)
    }

    /// The key a request presented (the value of `Authorization`), checked.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<&ApiKey, AuthError> {
        let Some(value) = authorization.map(str::trim).filter(|v| !v.is_empty()) else {
            return Err(AuthError::Missing);
        };
        let Some(token) = bearer(value) else {
            // Segment's SDKs send the write key as Basic auth.
            return Err(if value.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("basic ")) {
                AuthError::WriteKey
            } else {
                AuthError::Missing
            });
        };
        if looks_like_write_key(token) {
            return Err(AuthError::WriteKey);
        }
        let id = parse(token).ok_or(AuthError::Invalid)?;
        let record = self.get(id).ok_or(AuthError::Invalid)?;
        let presented = sha256_hex(token);
        if !bool::from(presented.as_bytes().ct_eq(record.sha256.as_bytes())) {
            return Err(AuthError::Invalid);
        }
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        Ok(record)
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The public id of a well-formed key.
fn parse(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, ID_HEX) && hex_of(secret, SECRET_HEX)).then_some(id)
}

/// Whether `token` has the shape of a source's write key (32 hex digits, as `cdp source add` makes them).
pub fn looks_like_write_key(token: &str) -> bool {
    token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit())
}
