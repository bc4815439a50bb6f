//! The canonical event: what the collector stores and every later stage reads (camelCase JSON, one per line).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::EventType;
use crate::time::UtcTime;

/// The key deduplication remembers an event by: its source and its messageId. A messageId is the client's
/// choice, so it is unique only within its source: an event sent through one source (a public browser key)
/// must never make another source's event with the same messageId be dropped. Source ids hold no `/`
/// ([`crate::source`] checks them), so the key is unambiguous; the edge, ingest, the lake, the recompute
/// and imports all use this one rule.
pub fn dedup_key(source_id: &str, message_id: &str) -> String {
    let mut key = String::with_capacity(source_id.len() + 1 + message_id.len());
    key.push_str(source_id);
    key.push('/');
    key.push_str(message_id);
    key
}

/// The messageId within a [`dedup_key`].
pub fn message_id_of(dedup_key: &str) -> &str {
    dedup_key.split_once('/').map_or(dedup_key, |(_, message_id)| message_id)
}

/// One normalized, enriched event.
///
/// Field names and meanings follow the Segment spec, so anything that reads Segment data reads this; what we
/// derive ourselves is kept apart in [`identifiers`](Self::identifiers) and [`enrichment`](Self::enrichment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanonicalEvent {
    /// Id of the message: the client's (trimmed, ≤ 100 chars) or one we generated. Unique within its
    /// source: deduplication is by [`dedup_key`](Self::dedup_key).
    pub message_id: String,
    /// Which call this is.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The source whose write key sent it.
    pub source_id: String,
    /// When our collector received it.
    pub received_at: UtcTime,
    /// When it happened, corrected for the client's clock skew.
    pub timestamp: UtcTime,
    /// When it happened by the client's clock, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_timestamp: Option<UtcTime>,
    /// When the client sent it, by the client's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<UtcTime>,
    /// The known user's id (trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The anonymous visitor's id (trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    /// Track: the event name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Page and screen: the page or screen name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Page and screen: the category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Group: the group's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Alias: the id the user had before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    /// Track, page, screen: what the event carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
    /// Identify, group: traits of the user or group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traits: Option<Map<String, Value>>,
    /// The client's context, with the batch's context merged in, `ip` and `campaign` filled in.
    #[serde(default)]
    pub context: Map<String, Value>,
    /// Destinations the client asked to include or exclude.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub integrations: Map<String, Value>,
    /// Identifiers found in the event, normalized, for ID-Mapping.
    #[serde(default)]
    pub identifiers: Vec<Identifier>,
    /// What we derived from the request: geo, parsed user agent, bot flag.
    #[serde(default)]
    pub enrichment: Enrichment,
    /// Top-level fields the spec does not name, kept as sent (nothing is lost).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extras: Map<String, Value>,
}

impl CanonicalEvent {
    /// This event's [`dedup_key`].
    pub fn dedup_key(&self) -> String {
        dedup_key(&self.source_id, &self.message_id)
    }

    /// The identity keys of every identifier the event names (linkable or not), as the graph keys them.
    pub fn identifier_keys(&self) -> impl Iterator<Item = String> + '_ {
        self.identifiers.iter().map(Identifier::key)
    }
}

impl Identifier {
    /// Its identity key: `type:value`, with a personal value by its hash (the one form ID-Mapping, suppression
    /// and the lake key a person by).
    pub fn key(&self) -> String {
        key_of(&self.kind, &self.value, self.sha256.as_deref())
    }
}

/// The identity key of an identifier of type `kind` with `value` (by `hashed`, its hash, when it is personal).
pub fn key_of(kind: &str, value: &str, hashed: Option<&str>) -> String {
    format!("{kind}:{}", hashed.unwrap_or(value.trim()))
}

/// One identifier of a person, in the form ID-Mapping keys on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identifier {
    /// `anonymous_id`, `user_id`, `email`, `phone`, `device_id`, or a configured custom type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The normalized value (emails trimmed and lower-cased, phones reduced to `+` and digits).
    pub value: String,
    /// SHA-256 (hex) of `value`, for types that are personal data: the form used as a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// What the collector derived from the request rather than the client's payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrichment {
    /// Where the request came from, from the edge's request metadata (absent locally). Shared by the
    /// request's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<Arc<Geo>>,
    /// The user agent, parsed. Shared by the events with the same agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<Arc<UserAgentInfo>>,
    /// Whether the user agent is a known crawler or bot.
    #[serde(default)]
    pub bot: bool,
    /// What the collector changed in the event and why (a client time out of bounds replaced by the time of
    /// receipt, ...); the values as sent stay in the event (`originalTimestamp`, `sentAt`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Geolocation of the request, as the edge reports it (Cloudflare's `request.cf`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Geo {
    /// ISO 3166-1 alpha-2 country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Region (state, province) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Region code (ISO 3166-2 subdivision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_code: Option<String>,
    /// City name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// Continent code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continent: Option<String>,
    /// Latitude, as the edge reports it (city precision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<String>,
    /// Longitude, as the edge reports it (city precision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<String>,
    /// IANA time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// A parsed user agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAgentInfo {
    /// Browser or client name (`Chrome`, `Safari`, `Googlebot`, ...).
    pub browser: String,
    /// Browser version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub browser_version: String,
    /// Operating system (`Windows 10`, `Mac OSX`, `iPhone`, `Android`, ...).
    pub os: String,
    /// Operating system version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os_version: String,
    /// Device class: `pc`, `smartphone`, `mobilephone`, `appliance`, `crawler`, `misc` or `UNKNOWN`.
    pub device_type: String,
}
