//! Inbound webhooks from SaaS systems: `POST /v1/webhooks/<source id>` for sources of kind `shopify`, `stripe`
//! and `webhook` (any sender that signs as Standard Webhooks do).
//!
//! Order: the source (404 unless an enabled webhook source) → size and `Content-Encoding` (as the collect
//! endpoints) → its signing secret (503 while none is stored, so the sender retries) → the sender's signature
//! and, where signed, its timestamp (401; nothing stored) → the payload through its mapping (a payload no
//! mapping reads is kept in `failed/` with the reason, and the sender is answered 200: a retry cannot mend it)
//! → the calls through the same checks, normalization and enrichment as an HTTP event
//! ([`super::collect_events`]). The sender's event id becomes the `messageId`, so its retries deduplicate.

mod shape;
mod shopify;
mod stripe;
pub mod verify;

use serde_json::Value;

use super::{Answer, Batch, Collected, MAX_REQUEST_BYTES, collect_events};
use crate::event::{FailedEvent, FailureCode};
use crate::ids::Entropy;
use crate::source::{SourceConfig, SourceKind, SourceSecrets, Sources};
use crate::time::UtcTime;

pub use shopify::TOPICS as SHOPIFY_TOPICS;
pub use stripe::TYPES as STRIPE_TYPES;

/// The request headers the webhook kinds read (lower case).
pub const HEADERS: [&str; 13] = [
    "content-encoding",
    "x-shopify-hmac-sha256",
    "x-shopify-topic",
    "x-shopify-webhook-id",
    "x-shopify-event-id",
    "stripe-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "user-agent",
];

/// What a shell hands the pipeline about one webhook request.
#[derive(Debug, Clone)]
pub struct WebhookRequest<'a> {
    /// The source id from the path.
    pub source_id: &'a str,
    /// The raw body.
    pub body: &'a [u8],
    /// The [`HEADERS`] the request has.
    pub headers: Vec<(&'static str, String)>,
}

impl<'a> WebhookRequest<'a> {
    /// A request to `source_id` with `body`, reading the [`HEADERS`] through `header` (by lower-case name).
    pub fn new(source_id: &'a str, body: &'a [u8], header: impl Fn(&str) -> Option<String>) -> Self {
        let headers = HEADERS.iter().filter_map(|name| header(name).map(|value| (*name, value))).collect();
        Self { source_id, body, headers }
    }

    /// The header `name` (lower case), if the request has it.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, value)| value.clone())
    }
}

/// Runs one webhook request: a rejection to answer, or the events to store before answering.
pub fn receive(
    req: &WebhookRequest<'_>,
    sources: &Sources,
    secrets: &SourceSecrets,
    now: UtcTime,
    entropy: &mut Entropy,
) -> Collected {
    let Some(source) = sources.webhook(req.source_id) else {
        return Collected::Rejected(Answer::error(
            404,
            "unknown_source",
            &format!("no enabled webhook source {:?}", req.source_id),
        ));
    };
    if req.body.len() > MAX_REQUEST_BYTES {
        return Collected::Rejected(Answer::error(
            400,
            "request_too_large",
            &format!("request body is {} bytes; at most {MAX_REQUEST_BYTES} are allowed", req.body.len()),
        ));
    }
    let encoding = req.header("content-encoding");
    let decoded = match super::encoding::decode(req.body, encoding.as_deref(), MAX_REQUEST_BYTES) {
        Ok(decoded) => decoded,
        Err(answer) => return Collected::Rejected(answer),
    };
    let body = decoded.as_deref().unwrap_or(req.body);
    let Some(secret) = secrets.get(&source.id) else {
        return Collected::Rejected(Answer::error(
            503,
            "signing_secret_missing",
            "this source has no signing secret yet; the operator sets it (`cdp source secret`), and retries then pass",
        ));
    };
    let header = |name: &str| req.header(name);
    let checked = match source.kind {
        SourceKind::Shopify => verify::shopify(secret, body, header("x-shopify-hmac-sha256").as_deref()),
        SourceKind::Stripe => verify::stripe(secret, body, header("stripe-signature").as_deref(), now),
        SourceKind::Webhook => {
            let either = |name: &str| header(&format!("webhook-{name}")).or_else(|| header(&format!("svix-{name}")));
            let (id, timestamp, signature) = (either("id"), either("timestamp"), either("signature"));
            verify::standard(secret, body, id.as_deref(), timestamp.as_deref(), signature.as_deref(), now)
        }
        SourceKind::Http => Err(crate::error::Invalid::from("not a webhook source")),
    };
    if let Err(reason) = checked {
        return Collected::Rejected(Answer::error(401, "invalid_signature", &reason.0));
    }
    let calls = serde_json::from_slice::<Value>(body)
        .map_err(|e| format!("the payload is not JSON: {e}"))
        .and_then(|payload| calls(source, &header, &payload, now));
    match calls {
        Ok(calls) => {
            let texts: Vec<String> = calls.iter().map(Value::to_string).collect();
            Collected::Kept(collect_events(source, &texts, now, entropy))
        }
        Err(reason) => Collected::Kept(unmapped(source, body, reason, now, entropy)),
    }
}

/// The calls a verified payload becomes.
fn calls(
    source: &SourceConfig,
    header: &dyn Fn(&str) -> Option<String>,
    payload: &Value,
    now: UtcTime,
) -> Result<Vec<Value>, String> {
    // A delivery without the sender's id is named by its content, so a retry of it is still one event.
    let delivery = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| header(name))
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(|| crate::ids::sha256_hex(&payload.to_string())[..32].to_string())
    };
    match source.kind {
        SourceKind::Shopify => {
            let id = delivery(&["x-shopify-webhook-id", "x-shopify-event-id"]);
            shopify::events(header("x-shopify-topic").as_deref(), &id, payload)
        }
        SourceKind::Stripe => stripe::events(payload),
        SourceKind::Webhook => {
            let mapping = source.mapping.as_ref().ok_or("the source has no mapping")?;
            let pointers = mapping.columns_named();
            let compiled = mapping.clone().check(&pointers).map_err(|problem| format!("mapping: {problem}"))?;
            let cells: Vec<Option<Value>> = pointers.iter().map(|p| payload.pointer(p).cloned()).collect();
            let id = delivery(&["webhook-id", "svix-id"]);
            let text = compiled.event(&cells, &id, now).map_err(|problem| problem.0)?;
            let mut call: Value = serde_json::from_str(&text).map_err(|e| format!("mapping made no JSON: {e}"))?;
            call["context"]["library"] = serde_json::json!({"name": "cdp-webhook"});
            Ok(vec![call])
        }
        SourceKind::Http => Err("not a webhook source".into()),
    }
}

/// A verified payload no mapping reads: kept whole in `failed/` with the reason.
fn unmapped(source: &SourceConfig, body: &[u8], reason: String, now: UtcTime, entropy: &mut Entropy) -> Batch {
    let mut batch = collect_events(source, &[], now, entropy);
    batch.failed.push(FailedEvent {
        source_id: source.id.clone(),
        received_at: now,
        index: 0,
        code: FailureCode::UnmappedPayload,
        reason,
        message_id: None,
        original: String::from_utf8_lossy(body).into_owned(),
    });
    batch
}

#[cfg(test)]
mod tests;
