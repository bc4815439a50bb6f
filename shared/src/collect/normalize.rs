//! One event: validate its fields and normalize it into a [`CanonicalEvent`].

use serde_json::{Map, Value};

use super::wire::WireEvent;
use crate::event::{CanonicalEvent, Enrichment, EventType, FailureCode};
use crate::ids::Entropy;
use crate::time::UtcTime;

/// Longest `messageId` accepted, as Segment's.
pub(crate) const MAX_MESSAGE_ID_CHARS: usize = 100;

/// Why an event failed: code, human reason, and the client's messageId when it could be read.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) code: FailureCode,
    pub(crate) reason: String,
    pub(crate) message_id: Option<String>,
}

/// What every event of one request shares.
pub(crate) struct Shared<'a> {
    pub(crate) source_id: &'a str,
    pub(crate) received_at: UtcTime,
    /// Set for single-call endpoints: the type comes from the path.
    pub(crate) kind: Option<EventType>,
    pub(crate) batch_context: Option<&'a Map<String, Value>>,
    pub(crate) batch_integrations: Option<&'a Map<String, Value>>,
    pub(crate) batch_sent_at: Option<UtcTime>,
    /// A reader the platform trusts (a file import) may name a person by an email or phone in
    /// `context.traits` or an external id alone, without a userId or anonymousId.
    pub(crate) identifiers_suffice: bool,
}

type Checked<T> = Result<T, (FailureCode, String)>;

/// Whether a context names a person without ids: an email address or phone number in its traits (one that
/// makes an identifier), or an external id.
fn names_someone(context: &Option<Map<String, Value>>) -> bool {
    let Some(context) = context else { return false };
    let traits = context.get("traits").and_then(Value::as_object);
    let text = |key: &str| traits.and_then(|t| t.get(key)).and_then(Value::as_str);
    let personal = text("email").and_then(super::normalize_email).is_some()
        || text("phone").and_then(|p| super::normalize_phone(p, None)).is_some();
    personal || context.get("externalIds").and_then(Value::as_array).is_some_and(|ids| !ids.is_empty())
}

/// Validates and normalizes one event object.
pub(crate) fn normalize(
    mut m: WireEvent,
    shared: &Shared<'_>,
    entropy: &mut Entropy,
) -> Result<CanonicalEvent, Rejection> {
    // The messageId first, so a failure can still name the message.
    let client_message_id = match m.remove("messageId") {
        Some(Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        None | Some(Value::Null) => None,
        Some(other) => {
            return Err(Rejection {
                code: FailureCode::InvalidField,
                reason: format!("messageId must be a string, got {}", type_name(&other)),
                message_id: None,
            });
        }
    };
    let fail =
        |(code, reason): (FailureCode, String)| Rejection { code, reason, message_id: client_message_id.clone() };
    if let Some(id) = &client_message_id {
        let chars = id.chars().count();
        if chars > MAX_MESSAGE_ID_CHARS {
            return Err(fail((
                FailureCode::MessageIdTooLong,
                format!("messageId is {chars} characters; at most {MAX_MESSAGE_ID_CHARS} are allowed"),
            )));
        }
    }
    let event = build(&mut m, shared).map_err(fail)?;
    let mut event = event;
    event.message_id = client_message_id.unwrap_or_else(|| entropy.uuid_v4());
    // Whatever is left is not part of the spec: keep it, as sent.
    event.extras.extend(m.extras);
    Ok(event)
}

fn build(m: &mut WireEvent, shared: &Shared<'_>) -> Checked<CanonicalEvent> {
    // Fields that are ours to set, or only meaningful at the request level.
    m.remove("writeKey");
    m.remove("receivedAt");
    let kind = match shared.kind {
        Some(kind) => {
            m.remove("type");
            kind
        }
        None => match m.remove("type") {
            Some(Value::String(name)) => EventType::parse(name.trim()).ok_or_else(|| {
                (
                    FailureCode::UnknownType,
                    format!("type {name:?} is not one of identify, track, page, screen, group, alias"),
                )
            })?,
            None | Some(Value::Null) => return Err((FailureCode::UnknownType, "type is missing".to_string())),
            Some(other) => {
                return Err((FailureCode::UnknownType, format!("type must be a string, got {}", type_name(&other))));
            }
        },
    };

    let user_id = id_field(m, "userId")?;
    let anonymous_id = id_field(m, "anonymousId")?;
    let previous_id = id_field(m, "previousId")?;
    let group_id = id_field(m, "groupId")?;
    let event_name = text_field(m, "event")?;
    let name = text_field(m, "name")?;
    let category = text_field(m, "category")?;
    let properties = object_field(m, "properties")?;
    let traits = object_field(m, "traits")?;
    let context = object_field(m, "context")?;
    let integrations = object_field(m, "integrations")?;
    let client_time = match time_field(m, "originalTimestamp")? {
        Some(t) => Some(t),
        None => time_field(m, "timestamp")?,
    };
    // A client's `timestamp` was read above; drop a second copy when both were sent.
    m.remove("timestamp");
    let sent_at = time_field(m, "sentAt")?.or(shared.batch_sent_at);

    match kind {
        EventType::Alias if previous_id.is_none() || user_id.is_none() => {
            return Err((FailureCode::MissingAliasIds, "alias needs both previousId and userId".to_string()));
        }
        _ if user_id.is_none()
            && anonymous_id.is_none()
            && !(shared.identifiers_suffice && names_someone(&context)) =>
        {
            return Err((FailureCode::MissingIdentity, "userId or anonymousId is required".to_string()));
        }
        EventType::Track if event_name.is_none() => {
            return Err((FailureCode::MissingEvent, "track needs a non-empty event name in `event`".to_string()));
        }
        EventType::Group if group_id.is_none() => {
            return Err((FailureCode::MissingGroupId, "group needs a groupId".to_string()));
        }
        _ => {}
    }

    let received_at = shared.received_at;
    let (timestamp, note) = event_time(received_at, client_time, sent_at);

    let mut context = context.unwrap_or_default();
    if let Some(batch) = shared.batch_context {
        merge_missing(&mut context, batch);
    }
    let mut integrations = integrations.unwrap_or_default();
    if let Some(batch) = shared.batch_integrations {
        merge_missing(&mut integrations, batch);
    }

    // Properties belong to track/page/screen, traits to identify/group; a misplaced one is kept in extras.
    let mut extras = Map::new();
    let (properties, traits) = match kind {
        EventType::Track | EventType::Page | EventType::Screen => {
            if let Some(t) = traits {
                extras.insert("traits".to_string(), Value::Object(t));
            }
            (Some(properties.unwrap_or_default()), None)
        }
        EventType::Identify | EventType::Group => {
            if let Some(p) = properties {
                extras.insert("properties".to_string(), Value::Object(p));
            }
            (None, Some(traits.unwrap_or_default()))
        }
        EventType::Alias => {
            if let Some(p) = properties {
                extras.insert("properties".to_string(), Value::Object(p));
            }
            if let Some(t) = traits {
                extras.insert("traits".to_string(), Value::Object(t));
            }
            (None, None)
        }
    };
    let (event_name, name, category) = match kind {
        EventType::Track => (event_name, keep(&mut extras, "name", name), keep(&mut extras, "category", category)),
        EventType::Page => (keep(&mut extras, "event", event_name), name, category),
        // Segment's mobile SDKs send a screen's category (analytics-swift's `screen(title:category:)`).
        EventType::Screen => (keep(&mut extras, "event", event_name), name, category),
        _ => (
            keep(&mut extras, "event", event_name),
            keep(&mut extras, "name", name),
            keep(&mut extras, "category", category),
        ),
    };
    let group_id = if kind == EventType::Group { group_id } else { keep(&mut extras, "groupId", group_id) };
    let previous_id = if kind == EventType::Alias { previous_id } else { keep(&mut extras, "previousId", previous_id) };

    Ok(CanonicalEvent {
        message_id: String::new(),
        kind,
        source_id: shared.source_id.to_string(),
        received_at,
        timestamp,
        original_timestamp: client_time,
        sent_at,
        user_id,
        anonymous_id,
        event: event_name,
        name,
        category,
        group_id,
        previous_id,
        properties,
        traits,
        context,
        integrations,
        identifiers: Vec::new(),
        enrichment: Enrichment { notes: note.into_iter().collect(), ..Enrichment::default() },
        extras,
    })
}

/// How far ahead of receipt a client's time may be (without `sentAt` to correct it) before it is taken as a
/// wrong clock: a day covers every time zone mistake.
const MAX_AHEAD_MS: i64 = 24 * 3_600_000;

/// When the event happened, corrected for the client's clock: `receivedAt − (sentAt − originalTimestamp)`
/// when both client times are known; the client's time when only it is (historical imports); else receipt.
/// Never later than receipt when corrected (a client clock that says "sent before it happened" cannot move
/// events into the future), never before the epoch, and never more than a day after receipt: a time outside
/// those bounds (a `sentAt` in year 2999, an `originalTimestamp` in year 0000) is replaced by the time of
/// receipt, and the note says so (kept in the event's enrichment; the times as sent stay in the event).
pub(crate) fn event_time(
    received_at: UtcTime,
    client_time: Option<UtcTime>,
    sent_at: Option<UtcTime>,
) -> (UtcTime, Option<String>) {
    let (time, what) = match (client_time, sent_at) {
        (Some(original), Some(sent)) => {
            let delay = sent.unix_millis().saturating_sub(original.unix_millis());
            let corrected = received_at.add_millis(-delay).map(|t| t.min(received_at));
            (corrected, "receivedAt − (sentAt − originalTimestamp)")
        }
        (Some(original), None) => (Some(original), "originalTimestamp"),
        (None, _) => return (received_at, None),
    };
    match time {
        Some(time) if time.unix_millis() >= 0 && time.unix_millis() <= received_at.unix_millis() + MAX_AHEAD_MS => {
            (time, None)
        }
        _ => {
            let shown = time.map_or_else(|| "out of range".to_string(), |t| t.to_string());
            (
                received_at,
                Some(format!(
                    "timestamp: {what} is {shown}, before 1970 or more than a day after receipt; the time of receipt is used"
                )),
            )
        }
    }
}

fn keep(extras: &mut Map<String, Value>, key: &str, value: Option<String>) -> Option<String> {
    if let Some(v) = value {
        extras.insert(key.to_string(), Value::String(v));
    }
    None
}

/// Inserts the batch-level keys the event does not set itself (the event's own values win).
fn merge_missing(target: &mut Map<String, Value>, batch: &Map<String, Value>) {
    for (k, v) in batch {
        if !target.contains_key(k) {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// An id: a string (trimmed; empty means absent) or a number (as its decimal text), as Segment accepts.
fn id_field(m: &mut WireEvent, key: &str) -> Checked<Option<String>> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(trimmed(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => {
            Err((FailureCode::InvalidField, format!("{key} must be a string or a number, got {}", type_name(&other))))
        }
    }
}

/// `s` without surrounding whitespace (reusing its allocation when there is none); empty means absent.
fn trimmed(s: String) -> Option<String> {
    let t = s.trim();
    if t.is_empty() {
        None
    } else if t.len() == s.len() {
        Some(s)
    } else {
        Some(t.to_string())
    }
}

fn text_field(m: &mut WireEvent, key: &str) -> Checked<Option<String>> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(trimmed(s)),
        Some(other) => Err((FailureCode::InvalidField, format!("{key} must be a string, got {}", type_name(&other)))),
    }
}

fn object_field(m: &mut WireEvent, key: &str) -> Checked<Option<Map<String, Value>>> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err((FailureCode::InvalidField, format!("{key} must be an object, got {}", type_name(&other)))),
    }
}

fn time_field(m: &mut WireEvent, key: &str) -> Checked<Option<UtcTime>> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => UtcTime::parse(&s)
            .map(Some)
            .ok_or_else(|| (FailureCode::InvalidTimestamp, format!("{key} is not an ISO-8601 date-time: {s:?}"))),
        Some(other) => Err((
            FailureCode::InvalidTimestamp,
            format!("{key} must be an ISO-8601 date-time string, got {}", type_name(&other)),
        )),
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn t(text: &str) -> UtcTime {
        UtcTime::parse(text).unwrap()
    }

    fn shared(kind: Option<EventType>) -> Shared<'static> {
        Shared {
            source_id: "web",
            received_at: t("2026-11-28T12:00:10.000Z"),
            kind,
            batch_context: None,
            identifiers_suffice: false,
            batch_integrations: None,
            batch_sent_at: None,
        }
    }

    fn run(value: Value, kind: Option<EventType>) -> Result<CanonicalEvent, Rejection> {
        let Value::Object(m) = value else { panic!("test input must be an object") };
        normalize(WireEvent::from_map(m), &shared(kind), &mut Entropy::from_seed([0; 32]))
    }

    fn code(value: Value) -> FailureCode {
        run(value, None).unwrap_err().code
    }

    #[test]
    fn clock_skew_is_corrected_from_sent_at() {
        // The client's clock is 1 hour fast; the event happened 2 s before the client sent it.
        let ts = event_time(
            t("2026-11-28T12:00:10.000Z"),
            Some(t("2026-11-28T13:00:08.000Z")),
            Some(t("2026-11-28T13:00:10.000Z")),
        );
        assert_eq!(ts, (t("2026-11-28T12:00:08.000Z"), None));
    }

    #[test]
    fn event_time_without_sent_at_or_client_time() {
        let received = t("2026-11-28T12:00:10.000Z");
        let historical = t("2020-01-01T00:00:00.000Z");
        assert_eq!(event_time(received, Some(historical), None), (historical, None));
        assert_eq!(event_time(received, None, Some(historical)), (received, None));
        // sentAt before originalTimestamp would put the event in the future: clamp to receipt.
        let ts = event_time(received, Some(t("2026-11-28T12:00:20.000Z")), Some(t("2026-11-28T12:00:00.000Z")));
        assert_eq!(ts, (received, None));
    }

    #[test]
    fn client_times_out_of_bounds_give_the_time_of_receipt_with_a_note() {
        let received = t("2026-11-28T12:00:10.000Z");
        let year_zero = t("0000-01-01T00:00:00.000Z");
        // A sentAt in 2999 would correct the event into year 0997.
        let (ts, note) = event_time(received, Some(t("2026-11-28T12:00:00.000Z")), Some(t("2999-01-01T00:00:00Z")));
        assert_eq!(ts, received);
        assert!(note.unwrap().contains("before 1970 or more than a day after receipt"));
        let (ts, note) = event_time(received, Some(year_zero), None);
        assert_eq!((ts, note.is_some()), (received, true));
        let (ts, note) = event_time(received, Some(t("2031-01-01T00:00:00.000Z")), None);
        assert_eq!((ts, note.is_some()), (received, true), "years ahead without sentAt: a wrong clock");
        // Within bounds nothing changes: a historical import, a client a few hours ahead.
        let ahead = t("2026-11-28T20:00:00.000Z");
        assert_eq!(event_time(received, Some(ahead), None), (ahead, None));
        let epoch = t("1970-01-01T00:00:00.000Z");
        assert_eq!(event_time(received, Some(epoch), None), (epoch, None));
        // Both client times from a clock reset to 0000: the delay between them still holds.
        let (ts, note) = event_time(received, Some(year_zero), Some(t("0000-01-01T00:00:02.000Z")));
        assert_eq!((ts, note), (t("2026-11-28T12:00:08.000Z"), None));
    }

    #[test]
    fn normalizes_a_track() {
        let e = run(
            json!({
                "type": "track", "event": " Order Completed ", "userId": "  u1 ", "anonymousId": 42,
                "messageId": " m-1 ", "properties": {"revenue": 10},
                "timestamp": "2026-11-28T13:00:08Z", "sentAt": "2026-11-28T13:00:10Z",
                "version": 2, "writeKey": "secret"
            }),
            None,
        )
        .unwrap();
        assert_eq!(e.kind, EventType::Track);
        assert_eq!(e.event.as_deref(), Some("Order Completed"));
        assert_eq!(e.user_id.as_deref(), Some("u1"));
        assert_eq!(e.anonymous_id.as_deref(), Some("42"));
        assert_eq!(e.message_id, "m-1");
        assert_eq!(e.timestamp, t("2026-11-28T12:00:08.000Z"));
        assert_eq!(e.original_timestamp, Some(t("2026-11-28T13:00:08Z")));
        assert_eq!(e.properties.unwrap()["revenue"], 10);
        assert_eq!(e.extras["version"], 2, "unknown fields are kept");
        assert!(!e.extras.contains_key("writeKey"), "the write key is never stored");
    }

    #[test]
    fn generates_a_message_id_when_absent_or_empty() {
        let a = run(json!({"type": "page", "anonymousId": "a"}), None).unwrap();
        let b = run(json!({"type": "page", "anonymousId": "a", "messageId": "  "}), None).unwrap();
        assert_eq!(a.message_id.len(), 36);
        assert_eq!(b.message_id.len(), 36);
    }

    #[test]
    fn the_path_sets_the_type_of_a_single_call() {
        let e = run(json!({"type": "identify", "event": "X", "userId": "u"}), Some(EventType::Track)).unwrap();
        assert_eq!(e.kind, EventType::Track);
    }

    #[test]
    fn validation_rules() {
        assert_eq!(code(json!({"event": "x", "userId": "u"})), FailureCode::UnknownType);
        assert_eq!(code(json!({"type": "purchase", "userId": "u"})), FailureCode::UnknownType);
        assert_eq!(code(json!({"type": "track", "event": "x"})), FailureCode::MissingIdentity);
        assert_eq!(code(json!({"type": "track", "event": "x", "userId": "  "})), FailureCode::MissingIdentity);
        assert_eq!(code(json!({"type": "track", "userId": "u"})), FailureCode::MissingEvent);
        assert_eq!(code(json!({"type": "track", "userId": "u", "event": ""})), FailureCode::MissingEvent);
        assert_eq!(code(json!({"type": "alias", "userId": "u"})), FailureCode::MissingAliasIds);
        assert_eq!(code(json!({"type": "alias", "previousId": "p", "anonymousId": "a"})), FailureCode::MissingAliasIds);
        assert_eq!(code(json!({"type": "group", "userId": "u"})), FailureCode::MissingGroupId);
        assert_eq!(
            code(json!({"type": "track", "event": "x", "userId": "u", "messageId": "m".repeat(101)})),
            FailureCode::MessageIdTooLong
        );
        assert!(
            run(json!({"type": "alias", "userId": "u", "previousId": "p", "messageId": "m".repeat(100)}), None).is_ok()
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let r = run(json!({"type": "track", "event": "x", "userId": "u", "properties": "nope"}), None).unwrap_err();
        assert_eq!(r.code, FailureCode::InvalidField);
        assert_eq!(r.reason, "properties must be an object, got a string");
        let r = run(json!({"type": "identify", "userId": {"a": 1}, "messageId": "m9"}), None).unwrap_err();
        assert_eq!(r.reason, "userId must be a string or a number, got an object");
        assert_eq!(r.message_id.as_deref(), Some("m9"), "the failure keeps the client's messageId");
        let r = run(json!({"type": "track", "event": "x", "userId": "u", "timestamp": "tuesday"}), None).unwrap_err();
        assert_eq!(r.code, FailureCode::InvalidTimestamp);
        assert_eq!(code(json!({"type": "track", "event": 5, "userId": "u"})), FailureCode::InvalidField);
        assert_eq!(
            code(json!({"type": "track", "event": "x", "userId": "u", "context": []})),
            FailureCode::InvalidField
        );
        assert_eq!(
            code(json!({"type": "track", "event": "x", "userId": "u", "messageId": 7})),
            FailureCode::InvalidField
        );
    }

    #[test]
    fn batch_context_and_integrations_are_merged_event_first() {
        let batch_ctx = json!({"library": {"name": "batch"}, "locale": "en-US"});
        let batch_int = json!({"All": false});
        let shared = Shared {
            batch_context: batch_ctx.as_object(),
            identifiers_suffice: false,
            batch_integrations: batch_int.as_object(),
            batch_sent_at: Some(t("2026-11-28T13:00:10Z")),
            ..shared(None)
        };
        let Value::Object(m) = json!({
            "type": "identify", "userId": "u", "traits": {"plan": "pro"},
            "context": {"library": {"name": "event"}}, "timestamp": "2026-11-28T13:00:09Z"
        }) else {
            unreachable!()
        };
        let e = normalize(WireEvent::from_map(m), &shared, &mut Entropy::from_seed([0; 32])).unwrap();
        assert_eq!(e.context["library"]["name"], "event");
        assert_eq!(e.context["locale"], "en-US");
        assert_eq!(e.integrations["All"], false);
        assert_eq!(e.timestamp, t("2026-11-28T12:00:09.000Z"), "the batch's sentAt corrects the skew");
        assert_eq!(e.traits.unwrap()["plan"], "pro");
        assert!(e.properties.is_none());
    }

    #[test]
    fn misplaced_fields_go_to_extras() {
        let e = run(json!({"type": "identify", "userId": "u", "properties": {"a": 1}, "event": "x"}), None).unwrap();
        assert_eq!(e.extras["properties"]["a"], 1);
        assert_eq!(e.extras["event"], "x");
        assert!(e.event.is_none());
    }
}
