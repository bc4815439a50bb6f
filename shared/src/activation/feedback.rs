//! The feedback loop: what happened to deliveries, and what partners did with them, flows back in as events
//! tied to the profile, so tags and audiences can use it.
//!
//! - Outcomes: each delivered item becomes a `Webhook Delivered` event (`Audience Delivered` for audience
//!   entries and exits), each dead-lettered item a `Webhook Failed` event, from the source
//!   [`SYSTEM_SOURCE`]. Those events never trigger webhooks themselves (no loops).
//! - Partner results: a partner posts `{"results": [{"result": "opened", "profileId": "prof_…", …}]}` to
//!   `/v1/feedback/<destination>`, signed like our webhooks with the destination's secret; each result becomes
//!   a `Partner Feedback` event from the source `partner:<destination>`.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::payload::{Detail, HASHED_IDENTIFIERS, Item};
use crate::event::{CanonicalEvent, EventType, Identifier};
use crate::time::UtcTime;

/// The source of outcome events.
pub const SYSTEM_SOURCE: &str = "cdp-activation";
/// The event partners' results become.
pub const FEEDBACK_EVENT: &str = "Partner Feedback";
/// The most results one feedback request may carry.
pub const MAX_RESULTS: usize = 1000;

/// The identity key an event about a profile is tied to: its user id, else an anonymous or device id, else
/// any key it has (personal ones are already hashed).
pub fn subject_of<'k>(keys: impl IntoIterator<Item = &'k String>) -> Option<String> {
    let keys: Vec<&String> = keys.into_iter().collect();
    ["user_id:", "anonymous_id:", "device_id:"]
        .iter()
        .find_map(|prefix| keys.iter().find(|k| k.starts_with(prefix)))
        .or_else(|| keys.first())
        .map(|k| k.to_string())
}

fn event_about(
    subject: &str,
    message_id: String,
    source: String,
    name: &str,
    properties: Map<String, Value>,
    at: UtcTime,
    received: UtcTime,
) -> Option<CanonicalEvent> {
    let (kind, value) = subject.split_once(':')?;
    let hashed = HASHED_IDENTIFIERS.contains(&kind);
    Some(CanonicalEvent {
        message_id,
        kind: EventType::Track,
        source_id: source,
        received_at: received,
        timestamp: at,
        original_timestamp: None,
        sent_at: None,
        user_id: (kind == "user_id").then(|| value.to_string()),
        anonymous_id: (kind == "anonymous_id").then(|| value.to_string()),
        event: Some(name.to_string()),
        name: None,
        category: None,
        group_id: None,
        previous_id: None,
        properties: Some(properties),
        traits: None,
        context: Map::new(),
        integrations: Map::new(),
        identifiers: vec![Identifier {
            kind: kind.to_string(),
            value: value.to_string(),
            sha256: hashed.then(|| value.to_string()),
        }],
        enrichment: Default::default(),
        extras: Map::new(),
    })
}

/// The outcome event of one item of a settled request: delivered (`reason` none) or failed.
pub fn outcome_event(
    destination: &str,
    webhook_id: &str,
    item: &Item,
    subject: &str,
    attempts: u32,
    reason: Option<&str>,
    at: UtcTime,
) -> Option<CanonicalEvent> {
    let audience = match &item.detail {
        Detail::AudienceEntered { audience } | Detail::AudienceExited { audience } => Some(audience.id.clone()),
        _ => None,
    };
    let name = match (reason, &audience) {
        (Some(_), _) => "Webhook Failed",
        (None, Some(_)) => "Audience Delivered",
        (None, None) => "Webhook Delivered",
    };
    let item_type = serde_json::to_value(&item.detail).ok().and_then(|v| v["type"].as_str().map(String::from));
    let mut properties = Map::new();
    properties.insert("destination".into(), json!(destination));
    properties.insert("webhookId".into(), json!(webhook_id));
    properties.insert("itemId".into(), json!(item.id));
    properties.insert("itemType".into(), json!(item_type));
    properties.insert("attempts".into(), json!(attempts));
    if let Some(audience) = audience {
        properties.insert("audience".into(), json!(audience));
    }
    if let Some(reason) = reason {
        properties.insert("reason".into(), json!(reason));
    }
    let outcome = if reason.is_some() { "failed" } else { "delivered" };
    let id = format!("out_{}", &crate::ids::sha256_hex(&[destination, webhook_id, &item.id, outcome].join("\n"))[..32]);
    event_about(subject, id, SYSTEM_SOURCE.to_string(), name, properties, at, at)
}

/// One result a partner reports.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartnerResult {
    /// What happened: a lower-case word such as `sent`, `delivered`, `opened`, `clicked`, `converted`,
    /// `bounced`, `unsubscribed`.
    pub result: String,
    /// The profile, as the item named it.
    #[serde(default)]
    pub profile_id: Option<String>,
    /// Or an identifier: `{"type": "user_id", "value": "…"}` or `{"type": "email", "sha256": "…"}`.
    #[serde(default)]
    pub identifier: Option<Value>,
    /// The item this result is about.
    #[serde(default)]
    pub item_id: Option<String>,
    /// When it happened (ISO-8601; default: when received).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Anything else the partner reports.
    #[serde(default)]
    pub properties: Map<String, Value>,
}

/// A feedback request's body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    /// The results.
    pub results: Vec<Value>,
}

impl PartnerResult {
    /// Checks the result; the identity key it names directly (an `identifier`), if any.
    pub fn check(&self) -> Result<Option<String>, crate::Invalid> {
        let word = !self.result.is_empty()
            && self.result.len() <= 32
            && self.result.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !word {
            return Err(format!("result `{}` is not a lower-case word (a-z, _; ≤ 32)", self.result).into());
        }
        if let Some(at) = &self.timestamp
            && UtcTime::parse(at).is_none()
        {
            return Err(format!("timestamp `{at}` is not ISO-8601").into());
        }
        match (&self.profile_id, &self.identifier) {
            (Some(_), Some(_)) => Err("give profileId or identifier, not both".into()),
            (None, None) => Err("name the profile: profileId or identifier".into()),
            (Some(_), None) => Ok(None),
            (None, Some(identifier)) => {
                let kind = identifier["type"].as_str().filter(|k| !k.is_empty()).ok_or("identifier.type is missing")?;
                let hashed = HASHED_IDENTIFIERS.contains(&kind);
                let value = match (hashed, identifier["value"].as_str(), identifier["sha256"].as_str()) {
                    (true, _, Some(sha)) if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        sha.to_lowercase()
                    }
                    (true, Some(raw), None) => match kind {
                        "email" => crate::ids::sha256_hex(&raw.trim().to_lowercase()),
                        _ => return Err(format!("send a {kind} as its sha256").into()),
                    },
                    (true, _, _) => return Err(format!("identifier.sha256 of a {kind} is 64 hex digits").into()),
                    (false, Some(value), None) if !value.trim().is_empty() => value.trim().to_string(),
                    (false, _, _) => return Err("identifier.value is missing".into()),
                };
                Ok(Some(format!("{kind}:{value}")))
            }
        }
    }

    /// The event for this result, tied to `subject`, received from `destination` at `now`; `index` and
    /// `request_id` (the request's `webhook-id`) make its messageId, so a repeated request is deduplicated.
    pub fn event(
        &self,
        destination: &str,
        request_id: &str,
        index: usize,
        subject: &str,
        now: UtcTime,
    ) -> Option<CanonicalEvent> {
        let at = self.timestamp.as_deref().and_then(UtcTime::parse).unwrap_or(now);
        let mut properties = self.properties.clone();
        properties.insert("result".into(), json!(self.result));
        properties.insert("destination".into(), json!(destination));
        if let Some(item) = &self.item_id {
            properties.insert("itemId".into(), json!(item));
        }
        let id =
            format!("fb_{}", &crate::ids::sha256_hex(&[destination, request_id, &index.to_string()].join("\n"))[..32]);
        event_about(subject, id, format!("partner:{destination}"), FEEDBACK_EVENT, properties, at, now)
    }
}
