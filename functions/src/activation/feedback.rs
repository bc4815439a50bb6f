//! The inbound feedback endpoint (`POST /v1/feedback/<destination>`): partners report what they did with our
//! deliveries (sent, opened, clicked, converted, ...). A request is signed like our webhooks — Standard
//! Webhooks headers, HMAC with the destination's secret — so only that partner can post for it. Each result
//! becomes a `Partner Feedback` event tied to the profile (by the profile id the partner received, or an
//! identifier) and is stored as a raw object for ingest; a result that cannot be used is stored under
//! `failed/` with its reason, and the others are kept.

use serde_json::{Value, json};
use shared::activation::DestinationDefinition;
use shared::activation::feedback::{FeedbackBody, MAX_RESULTS, PartnerResult, subject_of};
use shared::activation::signing::verify;
use shared::event::{FailedEvent, FailureCode};
use shared::ids::Entropy;
use shared::storage::{ObjectKind, encode_ndjson_gz, object_key};
use shared::time::UtcTime;

use crate::Error;
use crate::storage::{ObjectStore, PutOptions};

/// The largest feedback request body.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

/// The answer to a feedback request, and the raw object written (for `cdp up` to hand to ingest).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackAnswer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// The raw object holding the accepted results' events.
    pub raw_key: Option<String>,
}

fn refuse(status: u16, code: &str, message: &str) -> FeedbackAnswer {
    FeedbackAnswer { status, body: json!({"success": false, "code": code, "message": message}), raw_key: None }
}

/// The Standard Webhooks headers of a request.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp`.
    pub timestamp: &'a str,
    /// `webhook-signature`.
    pub signature: &'a str,
}

/// Handles one feedback request for `destination`.
pub async fn receive<S: ObjectStore + Clone>(
    store: &S,
    destination: &str,
    signed: Signed<'_>,
    body: &[u8],
    now: UtcTime,
    seed: [u8; 32],
) -> Result<FeedbackAnswer, Error> {
    if body.len() > MAX_BODY_BYTES {
        return Ok(refuse(413, "too_large", &format!("the body is over {MAX_BODY_BYTES} bytes")));
    }
    let destinations: Vec<DestinationDefinition> = super::secrets::load_destinations(store).await?;
    let Some(definition) = destinations.iter().find(|d| d.id == destination) else {
        return Ok(refuse(404, "unknown_destination", "no such destination"));
    };
    let now_s = now.unix_millis() / 1000;
    let verified = definition
        .signing_secrets(now.unix_millis())
        .any(|secret| verify(secret, signed.id, signed.timestamp, signed.signature, body, now_s).is_ok());
    if !verified || signed.id.is_empty() {
        return Ok(refuse(401, "unauthorized", "sign the request with the destination's secret (Standard Webhooks)"));
    }
    let parsed: FeedbackBody = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(error) => return Ok(refuse(400, "invalid_json", &format!("expected {{\"results\": [...]}}: {error}"))),
    };
    if parsed.results.len() > MAX_RESULTS {
        return Ok(refuse(400, "too_many", &format!("at most {MAX_RESULTS} results per request")));
    }
    let source = format!("partner:{destination}");
    let (mut events, mut failed) = (Vec::new(), Vec::new());
    for (index, raw) in parsed.results.iter().enumerate() {
        let outcome = match serde_json::from_value::<PartnerResult>(raw.clone()) {
            Err(error) => Err(error.to_string()),
            Ok(result) => match result.check() {
                Err(problem) => Err(problem.0),
                Ok(key) => {
                    // Feedback is about profiles we sent: an identifier we do not know creates nothing.
                    let subject = match (key, &result.profile_id) {
                        (Some(key), _) => crate::state::lookup(store, &key).await?.map(|_| key),
                        (None, Some(profile)) => crate::state::lookup(store, profile)
                            .await?
                            .and_then(|p| subject_of(p.profile.identities.iter())),
                        (None, None) => None,
                    };
                    match subject {
                        None => Err("unknown profile".to_string()),
                        Some(subject) => result
                            .event(destination, signed.id, index, &subject, now)
                            .ok_or_else(|| "the profile has no usable identifier".to_string()),
                    }
                }
            },
        };
        match outcome {
            Ok(event) => events.push(event),
            Err(reason) => failed.push(FailedEvent {
                source_id: source.clone(),
                received_at: now,
                index,
                code: FailureCode::InvalidField,
                reason,
                message_id: None,
                original: raw.to_string(),
            }),
        }
    }
    let mut entropy = Entropy::from_seed(seed);
    let request = entropy.ulid(now);
    let mut raw_key = None;
    if !events.is_empty() {
        let key = object_key(ObjectKind::Raw, now, request);
        store.put(&key, encode_ndjson_gz(&events), PutOptions::ndjson_gz()).await?;
        raw_key = Some(key);
    }
    if !failed.is_empty() {
        let key = object_key(ObjectKind::Failed, now, request);
        store.put(&key, encode_ndjson_gz(&failed), PutOptions::ndjson_gz()).await?;
    }
    let errors: Vec<Value> = failed.iter().map(|f| json!({"index": f.index, "message": f.reason})).collect();
    Ok(FeedbackAnswer {
        status: 200,
        body: json!({"success": true, "accepted": events.len(), "failed": failed.len(), "errors": errors}),
        raw_key,
    })
}
