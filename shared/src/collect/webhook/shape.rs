//! What the built-in mappings make: Segment-spec track and identify calls, the person named by the identifiers
//! the payload holds.

use serde_json::{Map, Value, json};

use crate::time::UtcTime;

/// Who a payload is about.
#[derive(Debug, Default)]
pub(super) struct Person {
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Identifier type and value (`shopify_customer_id`, `stripe_customer_id`).
    pub external: Vec<(&'static str, String)>,
}

impl Person {
    fn context(&self, library: &str) -> Value {
        let mut context = json!({"library": {"name": library}});
        let mut traits = Map::new();
        if let Some(email) = &self.email {
            traits.insert("email".into(), email.clone().into());
        }
        if let Some(phone) = &self.phone {
            traits.insert("phone".into(), phone.clone().into());
        }
        if !traits.is_empty() {
            context["traits"] = Value::Object(traits);
        }
        if !self.external.is_empty() {
            context["externalIds"] = self
                .external
                .iter()
                .map(|(kind, id)| json!({"id": id, "type": kind, "collection": "users", "encoding": "none"}))
                .collect();
        }
        context
    }
}

/// A track call.
pub(super) fn track(
    event: &str,
    message_id: String,
    timestamp: Option<String>,
    properties: Map<String, Value>,
    person: &Person,
    library: &str,
) -> Value {
    let mut call = json!({"type": "track", "event": event, "messageId": message_id, "properties": properties,
                          "context": person.context(library)});
    if let Some(timestamp) = timestamp {
        call["timestamp"] = timestamp.into();
    }
    call
}

/// An identify call: the person's email and phone among the traits too.
pub(super) fn identify(
    message_id: String,
    timestamp: Option<String>,
    mut traits: Map<String, Value>,
    person: &Person,
    library: &str,
) -> Value {
    for (name, value) in [("email", &person.email), ("phone", &person.phone)] {
        if let Some(value) = value {
            traits.entry(name).or_insert_with(|| value.clone().into());
        }
    }
    let mut call = json!({"type": "identify", "messageId": message_id, "traits": traits,
                          "context": person.context(library)});
    if let Some(timestamp) = timestamp {
        call["timestamp"] = timestamp.into();
    }
    call
}

/// A text value: a non-blank string, or a number written out (ids are numbers in Shopify's payloads).
pub(super) fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A number: a JSON number, or a decimal string (`"403.00"`, as Shopify writes prices).
pub(super) fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok().filter(|n: &f64| n.is_finite()),
        _ => None,
    }
}

/// Inserts `name` when there is a value.
pub(super) fn put(map: &mut Map<String, Value>, name: &str, value: Option<impl Into<Value>>) {
    if let Some(value) = value {
        map.insert(name.to_string(), value.into());
    }
}

/// An RFC 3339 time from Unix seconds.
pub(super) fn from_unix(seconds: Option<&Value>) -> Option<String> {
    let seconds = seconds?.as_i64()?;
    UtcTime::from_unix_millis(seconds.checked_mul(1000)?).map(|t| t.to_string())
}

/// A sender's RFC 3339 time (`2024-05-17T10:00:00-04:00`) as UTC; `None` when it does not read.
pub(super) fn from_rfc3339(text: &str) -> Option<String> {
    UtcTime::parse(text).map(|t| t.to_string())
}
