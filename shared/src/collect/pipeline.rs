//! `collect`: one request in, decisions out.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::enrich::Enricher;
use super::normalize::{Rejection, Shared, normalize, type_name};
use super::wire::WireEvent;
use super::{Answer, CollectRequest, Endpoint, basic_auth_user};
use crate::event::{CanonicalEvent, FailedEvent, FailureCode};
use crate::ids::Entropy;
use crate::source::{SourceConfig, Sources};
use crate::storage::{self, ObjectKind};
use crate::time::UtcTime;

/// Largest event accepted, in bytes (Segment's limit).
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Largest request accepted, in bytes (Segment's batch limit).
pub const MAX_REQUEST_BYTES: usize = 500 * 1024;
/// Most events accepted in one batch.
pub const MAX_BATCH_EVENTS: usize = 2500;

/// The pipeline's decision on one request.
#[derive(Debug)]
pub enum Collected {
    /// Refused as a whole (bad key, bad JSON, too large): answer this and store nothing.
    Rejected(Answer),
    /// Authenticated and read: store the batch's objects, then answer [`Batch::answer`].
    Kept(Batch),
}

/// The events of one authenticated request, split into accepted and failed.
#[derive(Debug)]
pub struct Batch {
    /// Id of this request; names its stored objects and sorts by arrival.
    pub request_id: ulid::Ulid,
    /// The source that sent it.
    pub source_id: String,
    /// When it arrived.
    pub received_at: UtcTime,
    /// Events that passed validation, normalized and enriched.
    pub accepted: Vec<CanonicalEvent>,
    /// Events that did not, with reasons and original bytes.
    pub failed: Vec<FailedEvent>,
    /// The browser origin to allow in the answer, when the request came from an allowed one.
    pub cors_origin: Option<String>,
    /// Events of suppressed people, dropped before storage ([`Batch::drop_suppressed`]).
    pub suppressed: usize,
}

impl Batch {
    /// Drops the accepted events of people on the suppression list (they were asked not to be tracked): they
    /// are never stored. Returns how many. The answer still counts them as accepted: the sender did nothing
    /// wrong, and whether a person is suppressed is not the sender's to learn.
    pub fn drop_suppressed(&mut self, list: &crate::access::SuppressionCheck) -> usize {
        if list.is_empty() {
            return 0;
        }
        let before = self.accepted.len();
        self.accepted.retain(|event| !list.drops_event(event));
        let dropped = before - self.accepted.len();
        self.suppressed += dropped;
        dropped
    }

    /// Key and gzip NDJSON body of the accepted events' object, if there are any.
    pub fn accepted_object(&self) -> Option<(String, Vec<u8>)> {
        (!self.accepted.is_empty()).then(|| {
            let key = storage::object_key(ObjectKind::Raw, self.received_at, self.request_id);
            (key, storage::encode_ndjson_gz(&self.accepted))
        })
    }

    /// Key and gzip NDJSON body of the failed events' object, if there are any.
    pub fn failed_object(&self) -> Option<(String, Vec<u8>)> {
        (!self.failed.is_empty()).then(|| {
            let key = storage::object_key(ObjectKind::Failed, self.received_at, self.request_id);
            (key, storage::encode_ndjson_gz(&self.failed))
        })
    }

    /// The answer once both objects are stored: 200 like Segment, with counts and each failure's reason.
    pub fn answer(&self) -> Answer {
        let errors: Vec<Value> =
            self.failed.iter().map(|f| json!({ "index": f.index, "code": f.code, "message": f.reason })).collect();
        let accepted = self.accepted.len() + self.suppressed;
        let mut body = json!({ "success": true, "accepted": accepted, "failed": self.failed.len() });
        if !errors.is_empty() {
            body["errors"] = Value::Array(errors);
        }
        let answer = Answer::json(200, &body);
        match &self.cors_origin {
            Some(origin) => answer.with_cors(origin),
            None => answer,
        }
    }

    /// The answer when storing failed: 503, so the client retries. Nothing is reported as accepted.
    pub fn storage_failed(&self) -> Answer {
        let answer = Answer::storage_unavailable();
        match &self.cors_origin {
            Some(origin) => answer.with_cors(origin),
            None => answer,
        }
    }
}

/// The batch endpoint's envelope. Events stay raw until each is read on its own, so one bad event cannot
/// spoil the rest and each keeps its exact original bytes.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    batch: Option<&'a RawValue>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
    context: Option<Value>,
    integrations: Option<Value>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
}

/// What the body holds once read: the events' raw texts and the batch-level fields.
struct Parsed<'a> {
    events: Vec<&'a RawValue>,
    write_key: Option<String>,
    context: Option<Map<String, Value>>,
    integrations: Option<Map<String, Value>>,
    sent_at: Option<UtcTime>,
}

fn bad_request(code: &str, message: &str) -> Collected {
    Collected::Rejected(Answer::error(400, code, message))
}

fn unauthorized() -> Collected {
    Collected::Rejected(Answer::error(
        401,
        "unauthorized",
        "unknown or missing write key; send it as Basic auth user (empty password) or as writeKey in the body",
    ))
}

/// Runs the collect pipeline on one request.
///
/// Order: size limits (400) → the body's `Content-Encoding` (gzip and deflate inflated within the size limit,
/// others 415) → a write key in the header, if any (401) → JSON (400) → a write key in the body
/// (401) → origin (403) → batch length (400) → each event on its own: size, parse, validate, normalize, enrich.
pub fn collect(req: &CollectRequest<'_>, sources: &Sources, now: UtcTime, entropy: &mut Entropy) -> Collected {
    let limit = match req.endpoint {
        Endpoint::Batch => MAX_REQUEST_BYTES,
        Endpoint::Single(_) => MAX_EVENT_BYTES,
    };
    if req.body.len() > limit {
        return bad_request(
            "request_too_large",
            &format!("request body is {} bytes; at most {limit} are allowed on this endpoint", req.body.len()),
        );
    }
    let decoded = match super::encoding::decode(req.body, req.content_encoding, limit) {
        Ok(decoded) => decoded,
        Err(answer) => return Collected::Rejected(answer),
    };
    let body = decoded.as_deref().unwrap_or(req.body);

    let header_key = req.authorization.and_then(basic_auth_user);
    let header_source = match &header_key {
        Some(key) => match sources.authenticate(key) {
            Some(source) => Some(source),
            None => return unauthorized(),
        },
        None => None,
    };

    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(_) => return bad_request("invalid_json", "request body is not UTF-8 JSON"),
    };
    let parsed = match parse(text, req.endpoint) {
        Ok(parsed) => parsed,
        Err(answer) => return Collected::Rejected(answer),
    };

    let source = match header_source {
        Some(source) => source,
        None => match parsed.write_key.as_deref().and_then(|key| sources.authenticate(key)) {
            Some(source) => source,
            None => return unauthorized(),
        },
    };

    let cors_origin = match req.origin {
        Some(origin) if !source.allows_origin(origin) => {
            return Collected::Rejected(Answer::error(
                403,
                "origin_not_allowed",
                &format!("origin {origin} may not send events for this source"),
            ));
        }
        Some(origin) => Some(origin.to_string()),
        None => None,
    };

    if parsed.events.len() > MAX_BATCH_EVENTS {
        return bad_request(
            "too_many_events",
            &format!("batch has {} events; at most {MAX_BATCH_EVENTS} are allowed", parsed.events.len()),
        );
    }

    let (accepted, failed) = events(req, source, &parsed, now, entropy);
    Collected::Kept(Batch {
        request_id: entropy.ulid(now),
        source_id: source.id.clone(),
        received_at: now,
        accepted,
        failed,
        cors_origin,
        suppressed: 0,
    })
}

fn parse(text: &str, endpoint: Endpoint) -> Result<Parsed<'_>, Answer> {
    let invalid =
        |e: serde_json::Error| Answer::error(400, "invalid_json", &format!("request body is not valid JSON: {e}"));
    match endpoint {
        Endpoint::Single(_) => {
            let raw: &RawValue = serde_json::from_str(text).map_err(invalid)?;
            // The write key may sit in the event itself; it is removed from the stored event later.
            #[derive(Deserialize)]
            struct KeyOnly {
                #[serde(rename = "writeKey")]
                write_key: Option<Value>,
            }
            let write_key = serde_json::from_str::<KeyOnly>(raw.get())
                .ok()
                .and_then(|k| k.write_key)
                .and_then(|v| v.as_str().map(str::to_string));
            Ok(Parsed { events: vec![raw], write_key, context: None, integrations: None, sent_at: None })
        }
        Endpoint::Batch => {
            let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
                let detail = e.to_string();
                if detail.starts_with("duplicate field") {
                    let field = detail.split('`').nth(1).unwrap_or("a field");
                    Answer::error(400, "invalid_batch", &format!("request body has `{field}` more than once ({e})"))
                } else if e.is_data() {
                    Answer::error(
                        400,
                        "invalid_batch",
                        &format!("request body must be an object with a `batch` array: {e}"),
                    )
                } else {
                    invalid(e)
                }
            })?;
            let events: Vec<&RawValue> = match envelope.batch {
                Some(raw) => serde_json::from_str(raw.get())
                    .map_err(|_| Answer::error(400, "invalid_batch", "`batch` must be an array of events"))?,
                None => return Err(Answer::error(400, "invalid_batch", "request body has no `batch` array")),
            };
            let object = |name: &str, v: Option<Value>| match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Object(o)) => Ok(Some(o)),
                Some(other) => Err(Answer::error(
                    400,
                    "invalid_batch",
                    &format!("batch-level {name} must be an object, got {}", type_name(&other)),
                )),
            };
            let sent_at = match envelope.sent_at {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(UtcTime::parse(&s).ok_or_else(|| {
                    Answer::error(
                        400,
                        "invalid_batch",
                        &format!("batch-level sentAt is not an ISO-8601 date-time: {s:?}"),
                    )
                })?),
                Some(other) => {
                    return Err(Answer::error(
                        400,
                        "invalid_batch",
                        &format!("batch-level sentAt must be a string, got {}", type_name(&other)),
                    ));
                }
            };
            Ok(Parsed {
                events,
                write_key: envelope.write_key.and_then(|v| v.as_str().map(str::to_string)),
                context: object("context", envelope.context)?,
                integrations: object("integrations", envelope.integrations)?,
                sent_at,
            })
        }
    }
}

fn events(
    req: &CollectRequest<'_>,
    source: &SourceConfig,
    parsed: &Parsed<'_>,
    now: UtcTime,
    entropy: &mut Entropy,
) -> (Vec<CanonicalEvent>, Vec<FailedEvent>) {
    let shared = Shared {
        source_id: &source.id,
        received_at: now,
        kind: match req.endpoint {
            Endpoint::Single(kind) => Some(kind),
            Endpoint::Batch => None,
        },
        batch_context: parsed.context.as_ref(),
        batch_integrations: parsed.integrations.as_ref(),
        batch_sent_at: parsed.sent_at,
        identifiers_suffice: false,
    };
    let mut enricher = Enricher::new(&source.settings, req.client_ip, req.user_agent, req.geo.as_ref());
    each(parsed.events.iter().map(|raw| raw.get()), &shared, &mut enricher, source, now, entropy)
}

/// Events from a source authenticated by other means (a file import, a verified webhook): each event's JSON
/// text through the same checks, normalization and enrichment as a request's, with no request around them (no
/// client address, user agent, origin or batch-level fields). A person may be named by an email or phone in
/// `context.traits` or an external id alone (a campaign's results by recipient), without a userId or
/// anonymousId. A failed event's `index` is its position in `texts`.
pub fn collect_events(source: &SourceConfig, texts: &[String], now: UtcTime, entropy: &mut Entropy) -> Batch {
    let shared = Shared {
        source_id: &source.id,
        received_at: now,
        kind: None,
        batch_context: None,
        batch_integrations: None,
        batch_sent_at: None,
        identifiers_suffice: true,
    };
    let mut enricher = Enricher::new(&source.settings, None, None, None);
    let (accepted, failed) = each(texts.iter().map(String::as_str), &shared, &mut enricher, source, now, entropy);
    Batch {
        request_id: entropy.ulid(now),
        source_id: source.id.clone(),
        received_at: now,
        accepted,
        failed,
        cors_origin: None,
        suppressed: 0,
    }
}

/// Each event's text on its own: size, parse, validate, normalize, enrich.
fn each<'t>(
    texts: impl ExactSizeIterator<Item = &'t str>,
    shared: &Shared<'_>,
    enricher: &mut Enricher<'_>,
    source: &SourceConfig,
    now: UtcTime,
    entropy: &mut Entropy,
) -> (Vec<CanonicalEvent>, Vec<FailedEvent>) {
    let mut accepted = Vec::with_capacity(texts.len());
    let mut failed = Vec::new();
    for (index, text) in texts.enumerate() {
        let fail = |rejection: Rejection| FailedEvent {
            source_id: source.id.clone(),
            received_at: now,
            index,
            code: rejection.code,
            reason: rejection.reason,
            message_id: rejection.message_id,
            original: text.to_string(),
        };
        if text.len() > MAX_EVENT_BYTES {
            failed.push(fail(Rejection {
                code: FailureCode::EventTooLarge,
                reason: format!("event is {} bytes; at most {MAX_EVENT_BYTES} are allowed", text.len()),
                message_id: None,
            }));
            continue;
        }
        let object = match serde_json::from_str::<WireEvent>(text) {
            Ok(object) => object,
            Err(e) => {
                // Not an object (name what it is), or JSON the envelope's parse let through but that does not
                // decode (a lone surrogate in an escape, a key repeated in a way a slot cannot take).
                let (code, reason) = match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(_)) => (FailureCode::InvalidJson, format!("event does not decode: {e}")),
                    Ok(other) => {
                        (FailureCode::NotAnObject, format!("event must be a JSON object, got {}", type_name(&other)))
                    }
                    Err(e) => (FailureCode::InvalidJson, format!("event is not valid JSON: {e}")),
                };
                failed.push(fail(Rejection { code, reason, message_id: None }));
                continue;
            }
        };
        match normalize(object, shared, entropy) {
            Ok(mut event) => {
                enricher.enrich(&mut event);
                // Only the plan below says what an event's violations are.
                event.context.remove("violations");
                match source.tracking_plan.as_ref().map(|plan| super::plan::judge(plan, &event)) {
                    None | Some(super::plan::Verdict::Keep) => {}
                    Some(super::plan::Verdict::Flag(violations)) => {
                        event.context.insert("violations".into(), crate::source::violations_json(&violations));
                    }
                    Some(super::plan::Verdict::Block(violations)) => {
                        failed.push(fail(Rejection {
                            code: FailureCode::ViolatesTrackingPlan,
                            reason: crate::source::violations_text(&violations),
                            message_id: Some(event.message_id),
                        }));
                        continue;
                    }
                }
                accepted.push(event);
            }
            Err(rejection) => failed.push(fail(rejection)),
        }
    }
    (accepted, failed)
}

/// The answer to a CORS preflight: allowed when any enabled source accepts the origin (preflights carry no
/// write key; the real request is checked against its own source).
pub fn preflight(origin: Option<&str>, sources: &Sources) -> Answer {
    match origin {
        Some(origin) if sources.any_allows_origin(origin) => {
            let mut answer = Answer::text(204, String::new()).with_cors(origin);
            answer.headers.push(("access-control-allow-methods", "POST, OPTIONS".to_string()));
            answer.headers.push(("access-control-allow-headers", "Authorization, Content-Type".to_string()));
            answer.headers.push(("access-control-max-age", "86400".to_string()));
            answer
        }
        Some(origin) => Answer::error(403, "origin_not_allowed", &format!("origin {origin} is not allowed")),
        None => Answer::error(400, "not_a_preflight", "a CORS preflight needs an Origin header"),
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
