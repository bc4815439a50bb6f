//! The webhook payload, version 1 (`docs/schemas/webhook-payload-v1.schema.json`): one request carries a batch
//! of items for one destination, each about one profile, in the order they happened for that profile.
//!
//! ```json
//! {"type": "cdp.batch", "version": 1, "timestamp": "2026-11-28T12:00:00.000Z",
//!  "data": {"destination": "crm", "items": [
//!    {"id": "…", "type": "audience.entered", "occurredAt": "…", "audience": {"id": "vip"},
//!     "profile": {"id": "prof_…", "identifiers": [{"type": "email", "sha256": "…"}], "traits": {}, "tags": {}}}]}}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::destination::DestinationDefinition;
use crate::time::UtcTime;

/// The payload version this module writes.
pub const VERSION: u32 = 1;
/// The envelope's `type`.
pub const BATCH_TYPE: &str = "cdp.batch";
/// Identifier types whose values are personal data: sent as their SHA-256 (the form the identity graph keeps).
pub const HASHED_IDENTIFIERS: [&str; 2] = ["email", "phone"];

/// The body of one webhook request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    /// Always [`BATCH_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// When the batch was formed (ISO-8601 UTC).
    pub timestamp: String,
    /// The items.
    pub data: BatchData,
}

/// A batch's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchData {
    /// The destination's id.
    pub destination: String,
    /// Items, oldest first per profile.
    pub items: Vec<Item>,
}

/// One thing that happened to one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// Unique and stable: the partner's key for this item (the same item delivered twice has the same id).
    pub id: String,
    /// When it happened (ISO-8601 UTC).
    pub occurred_at: String,
    /// The profile, with the fields the destination may receive.
    pub profile: ProfileBlock,
    /// What happened.
    #[serde(flatten)]
    pub detail: Detail,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Detail {
    /// The profile entered an audience.
    #[serde(rename = "audience.entered")]
    AudienceEntered {
        /// Which.
        audience: AudienceRef,
    },
    /// The profile left an audience.
    #[serde(rename = "audience.exited")]
    AudienceExited {
        /// Which.
        audience: AudienceRef,
    },
    /// An event passed one of the destination's trigger filters.
    #[serde(rename = "event.triggered")]
    EventTriggered {
        /// The event.
        event: TriggeredEvent,
    },
    /// Subscribed traits or tags changed.
    #[serde(rename = "profile.updated")]
    ProfileUpdated {
        /// `trait:NAME` / `tag:ID` → before and after (`null` when absent).
        changes: BTreeMap<String, Change>,
    },
    /// The profile was deleted on request (GDPR/CCPA): delete what you hold about it.
    #[serde(rename = "profile.deleted")]
    ProfileDeleted {},
}

/// An audience named in an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AudienceRef {
    /// Its id.
    pub id: String,
    /// Its display name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// The event of a trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggeredEvent {
    /// Its messageId.
    pub message_id: String,
    /// `track`, `page`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// A track's event name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Its properties.
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// When it happened (ISO-8601 UTC).
    pub timestamp: String,
}

/// A value before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// Before.
    pub before: Value,
    /// After.
    pub after: Value,
}

/// A profile as a destination sees it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileBlock {
    /// The profile id.
    pub id: String,
    /// Identifiers (personal ones as SHA-256), when the destination asks for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifiers: Vec<IdentifierOut>,
    /// The traits the destination asks for and may receive.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub traits: Map<String, Value>,
    /// The tags the destination asks for.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub tags: Map<String, Value>,
}

/// One identifier: plain `value`, or `sha256` for personal data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifierOut {
    /// `user_id`, `anonymous_id`, `email`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The value, for identifiers that are not personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// SHA-256 (hex) of the normalized value, for personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The profile block for `destination`: its id; identifiers from the identity keys (`kind:value`, personal
/// ones already hashed by the collector) when asked for; the asked-for traits it may receive; the asked-for tags.
pub fn profile_block<'k>(
    destination: &DestinationDefinition,
    id: &str,
    keys: impl IntoIterator<Item = &'k str>,
    traits: &Map<String, Value>,
    tags: &BTreeMap<String, Value>,
) -> ProfileBlock {
    let identifiers = if destination.fields.identifiers {
        keys.into_iter()
            .filter_map(|key| key.split_once(':'))
            .map(|(kind, value)| {
                let hashed = HASHED_IDENTIFIERS.contains(&kind);
                IdentifierOut {
                    kind: kind.to_string(),
                    value: (!hashed).then(|| value.to_string()),
                    sha256: hashed.then(|| value.to_string()),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let traits = destination
        .fields
        .traits
        .iter()
        .filter(|name| destination.may_send_trait(name))
        .filter_map(|name| traits.get(name.as_str()).map(|v| (name.clone(), v.clone())))
        .collect();
    let tags = destination.fields.tags.iter().filter_map(|t| tags.get(t).map(|v| (t.clone(), v.clone()))).collect();
    ProfileBlock { id: id.to_string(), identifiers, traits, tags }
}

/// The body for a batch of items formed at `at`: the exact bytes that are signed and sent (and kept for retries).
pub fn body(destination: &str, items: Vec<Item>, at: UtcTime) -> Vec<u8> {
    let envelope = Envelope {
        kind: BATCH_TYPE.to_string(),
        version: VERSION,
        timestamp: at.to_string(),
        data: BatchData { destination: destination.to_string(), items },
    };
    serde_json::to_vec(&envelope).unwrap_or_else(|_| unreachable!("the envelope has string keys and JSON values"))
}
