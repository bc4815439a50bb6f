//! One event's top-level fields as read off the wire: the spec's fields in slots, the rest kept as sent.
//!
//! Reading into slots instead of a generic JSON map saves allocating every top-level key and a map per event
//! (the collector's hottest loop); nested objects (`properties`, `context`, ...) are still generic JSON.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Declares the slots, their wire names, and the lookups between them.
macro_rules! slots {
    ($($field:ident = $name:literal),* $(,)?) => {
        /// An event's top-level fields: the spec's in slots, unknown ones in `extras`.
        #[derive(Debug, Default)]
        pub(crate) struct WireEvent {
            $($field: Option<Value>,)*
            /// Fields the spec does not name, as sent.
            pub(crate) extras: Map<String, Value>,
        }

        impl WireEvent {
            /// Sets a field (a repeated key: the last one wins, as in a JSON map).
            pub(crate) fn insert(&mut self, key: Cow<'_, str>, value: Value) {
                match key.as_ref() {
                    $($name => self.$field = Some(value),)*
                    _ => {
                        self.extras.insert(key.into_owned(), value);
                    }
                }
            }

            /// Takes a field out, by its wire name.
            pub(crate) fn remove(&mut self, key: &str) -> Option<Value> {
                match key {
                    $($name => self.$field.take(),)*
                    _ => self.extras.remove(key),
                }
            }
        }
    };
}

slots! {
    kind = "type",
    message_id = "messageId",
    user_id = "userId",
    anonymous_id = "anonymousId",
    previous_id = "previousId",
    group_id = "groupId",
    event = "event",
    name = "name",
    category = "category",
    properties = "properties",
    traits = "traits",
    context = "context",
    integrations = "integrations",
    timestamp = "timestamp",
    original_timestamp = "originalTimestamp",
    sent_at = "sentAt",
    received_at = "receivedAt",
    write_key = "writeKey",
}

impl WireEvent {
    /// From a JSON object already parsed.
    #[cfg(test)]
    pub(crate) fn from_map(map: Map<String, Value>) -> Self {
        let mut event = Self::default();
        for (key, value) in map {
            event.insert(Cow::Owned(key), value);
        }
        event
    }
}

impl<'de> Deserialize<'de> for WireEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventVisitor;

        impl<'de> Visitor<'de> for EventVisitor {
            type Value = WireEvent;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireEvent, A::Error> {
                let mut event = WireEvent::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let value: Value = if IDENTIFIERS.contains(&key.as_ref()) {
                        id_value(map.next_value::<&'de RawValue>()?).map_err(serde::de::Error::custom)?
                    } else {
                        map.next_value()?
                    };
                    event.insert(key, value);
                }
                Ok(event)
            }
        }

        deserializer.deserialize_map(EventVisitor)
    }
}

/// The top-level fields that identify someone: a number there is read by its text, not as a float.
const IDENTIFIERS: [&str; 4] = ["userId", "anonymousId", "previousId", "groupId"];

/// An identifier's value. A number keeps its exact text (as a string, which is what every id becomes):
/// parsed as a float, user ids `123456789012345678901234567890` and `…891` would both be
/// `1.2345678901234568e29`, and two people would merge into one profile.
fn id_value(raw: &RawValue) -> Result<Value, serde_json::Error> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => Ok(Value::String(text.to_string())),
        // The common case, a string without escapes, without parsing it again.
        Some(b'"') if text.len() >= 2 && !text.contains('\\') => Ok(Value::String(text[1..text.len() - 1].to_string())),
        _ => serde_json::from_str(text),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn known_fields_go_to_slots_and_the_rest_to_extras() {
        let mut e: WireEvent =
            serde_json::from_str(r#"{"type":"track","userId":5,"x":{"y":1},"type":"page","we\u0069rd":true}"#).unwrap();
        assert_eq!(e.remove("type"), Some(json!("page")), "the last repeated key wins");
        assert_eq!(e.remove("type"), None);
        assert_eq!(e.remove("userId"), Some(json!("5")), "an id number by its text");
        assert_eq!(Value::Object(e.extras), json!({"x": {"y": 1}, "weird": true}));
    }

    #[test]
    fn numbers_used_as_ids_keep_their_exact_text() {
        let text = r#"{"userId":123456789012345678901234567890,"anonymousId":"a\u0062c","groupId":-7.50,"previousId":{"x":1}}"#;
        let mut e: WireEvent = serde_json::from_str(text).unwrap();
        assert_eq!(e.remove("userId"), Some(json!("123456789012345678901234567890")));
        assert_eq!(e.remove("anonymousId"), Some(json!("abc")), "escapes decoded");
        assert_eq!(e.remove("groupId"), Some(json!("-7.50")));
        assert_eq!(e.remove("previousId"), Some(json!({"x": 1})), "anything else as JSON, for the checks to name");
    }

    #[test]
    fn non_objects_are_errors() {
        assert!(serde_json::from_str::<WireEvent>("[1]").is_err());
        assert!(serde_json::from_str::<WireEvent>("\"s\"").is_err());
    }
}
