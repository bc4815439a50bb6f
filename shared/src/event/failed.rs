//! Events the collector could not accept, kept with their reason and original bytes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::UtcTime;

/// Why one event was rejected. Each is the sender's fault; the rest of the batch is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureCode {
    /// The batch element is not a JSON object.
    NotAnObject,
    /// The batch element is not valid JSON on its own (e.g. a lone UTF-16 surrogate in an escape).
    InvalidJson,
    /// The event is larger than 32 KB.
    EventTooLarge,
    /// `type` is missing or not one of the six calls.
    UnknownType,
    /// Neither `userId` nor `anonymousId` is present.
    MissingIdentity,
    /// A track without `event`.
    MissingEvent,
    /// An alias without `previousId` or `userId`.
    MissingAliasIds,
    /// A group without `groupId`.
    MissingGroupId,
    /// `messageId` is longer than 100 characters.
    MessageIdTooLong,
    /// A field has the wrong JSON type (e.g. `properties` is not an object).
    InvalidField,
    /// A timestamp field is not an ISO-8601 date-time.
    InvalidTimestamp,
    /// The event breaks its source's tracking plan, which blocks such events.
    ViolatesTrackingPlan,
    /// A verified inbound webhook whose payload no mapping turns into events (a topic or type without a built-in
    /// mapping, a body that is not JSON): kept here, whole, with what was missing.
    UnmappedPayload,
}

impl FailureCode {
    /// The wire name, as stored and answered.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::NotAnObject => "not_an_object",
            FailureCode::InvalidJson => "invalid_json",
            FailureCode::EventTooLarge => "event_too_large",
            FailureCode::UnknownType => "unknown_type",
            FailureCode::MissingIdentity => "missing_identity",
            FailureCode::MissingEvent => "missing_event",
            FailureCode::MissingAliasIds => "missing_alias_ids",
            FailureCode::MissingGroupId => "missing_group_id",
            FailureCode::MessageIdTooLong => "message_id_too_long",
            FailureCode::InvalidField => "invalid_field",
            FailureCode::InvalidTimestamp => "invalid_timestamp",
            FailureCode::ViolatesTrackingPlan => "violates_tracking_plan",
            FailureCode::UnmappedPayload => "unmapped_payload",
        }
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rejected event, as stored under `failed/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedEvent {
    /// The source whose write key sent it.
    pub source_id: String,
    /// When our collector received it.
    pub received_at: UtcTime,
    /// Its position in the request's batch (0 for single calls).
    pub index: usize,
    /// Machine-readable reason.
    pub code: FailureCode,
    /// Human-readable reason, naming the field.
    pub reason: String,
    /// The client's `messageId`, when one could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The event's original bytes, exactly as received (JSON text).
    pub original: String,
}
