//! The audit log: one immutable object per recorded operation.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::UtcTime;

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Actor {
    /// `api_key` (through the API), `cli` (a `cdp` command on the data folder) or `system`.
    pub kind: String,
    /// The API key's id, or the operator's name for `cli`.
    pub id: String,
    /// The API key's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Actor {
    /// A request authenticated with an API key.
    pub fn api_key(id: &str, name: &str) -> Self {
        Self { kind: "api_key".into(), id: id.into(), name: Some(name.into()) }
    }

    /// A `cdp` command run on the data folder (its user has the folder, so no key).
    pub fn cli(user: &str) -> Self {
        Self { kind: "cli".into(), id: user.into(), name: None }
    }
}

/// One recorded operation. Identifiers of people appear only keyed-hashed ([`super::IdentifierKey::hash`]),
/// so that the log can stay append-only and still hold nothing of a person who was deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditRecord {
    /// ULID: sorts by time.
    pub id: String,
    /// When.
    pub at: UtcTime,
    /// Who.
    pub actor: Actor,
    /// What, as `<thing>.<verb>`: `api_key.create`, `source.update`, `profile.unlink`, `privacy.delete`, ...
    pub action: String,
    /// What it was done to: `source:web`, `api_key:0123…`, `profile:prof_…`, `privacy_request:…`.
    pub target: String,
    /// Configuration before the change (secrets redacted), for configuration changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// Configuration after the change (secrets redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// Further detail (e.g. hashed identifiers, counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// `audit/v1/dt=YYYY-MM-DD/<ulid>.json`: partitioned by day, listed in time order.
pub fn audit_key(at: UtcTime, id: &str) -> String {
    let (date, _) = at.date_and_hour();
    format!("audit/v1/dt={date}/{id}.json")
}
