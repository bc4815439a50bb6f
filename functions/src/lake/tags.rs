//! What the full recompute reads of the lake: each event's columns that tags use, and the properties asked for.

use arrow_array::Array;
use shared::event::{CanonicalEvent, EventType};
use shared::tags::EventView;

use super::format::{arrow_error, batches, key_lists, open, strings, times};
use crate::Error;

/// An event as tags and audiences read it: its id, type, name, times and properties, the properties kept as
/// JSON text until a chunk of profiles needs them (a tenth of the memory of a decoded canonical event).
#[derive(Debug, Clone, PartialEq)]
pub struct TagEvent {
    /// Its source and messageId, as deduplication keys it ([`shared::event::dedup_key`]).
    pub dedup_key: Box<str>,
    /// Which call.
    pub kind: EventType,
    /// A track's event name.
    pub event: Option<Box<str>>,
    /// When it happened (ms since the epoch).
    pub at: i64,
    /// When it was received (ms since the epoch).
    pub received_at: i64,
    /// The properties as JSON text, if any.
    pub properties: Option<Box<str>>,
}

impl TagEvent {
    /// The parts of a canonical event tags read.
    pub fn of(event: &CanonicalEvent) -> Self {
        Self {
            dedup_key: event.dedup_key().into(),
            kind: event.kind,
            event: event.event.as_deref().map(Into::into),
            at: event.timestamp.unix_millis(),
            received_at: event.received_at.unix_millis(),
            // A map of JSON values always serializes.
            properties: event.properties.as_ref().and_then(|p| serde_json::to_string(p).ok()).map(Into::into),
        }
    }

    /// The properties, decoded (empty without).
    pub fn properties(&self) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        match &self.properties {
            None => Ok(serde_json::Map::new()),
            Some(text) => serde_json::from_str(text)
                .map_err(|e| Error::Corrupt(format!("the properties of {} do not decode: {e}", self.dedup_key))),
        }
    }

    /// Only the properties named in `wanted` (sorted), decoded; the others are skipped without being kept.
    pub fn properties_of(&self, wanted: &[String]) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        use serde::de::DeserializeSeed as _;
        let Some(text) = &self.properties else { return Ok(serde_json::Map::new()) };
        let mut reader = serde_json::Deserializer::from_str(text);
        Picked(wanted)
            .deserialize(&mut reader)
            .and_then(|picked| reader.end().map(|()| picked))
            .map_err(|e| Error::Corrupt(format!("the properties of {} do not decode: {e}", self.dedup_key)))
    }

    /// Only the properties named in `wanted` (sorted), decoded and cleaned by `cleaning`: what tags, audiences
    /// and product tags read (the lake keeps them as sent).
    pub fn clean_properties_of(
        &self,
        wanted: &[String],
        cleaning: &shared::profile::CleaningRules,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        let properties = self.properties_of(wanted)?;
        Ok(cleaning.clean_properties(&properties).unwrap_or(properties))
    }

    /// The evaluators' view, with the properties decoded by [`TagEvent::properties`].
    pub fn view<'a>(&'a self, properties: &'a serde_json::Map<String, serde_json::Value>) -> EventView<'a> {
        EventView {
            kind: self.kind.as_str(),
            event: self.event.as_deref(),
            at: self.at,
            id: shared::event::message_id_of(&self.dedup_key),
            properties,
        }
    }
}

/// A part's events as tags read them ([`TagEvent`]), with their identity keys, to `each`, a row group at a time
/// (only those columns are read; one row group is decoded at once).
pub fn for_tags(
    bytes: bytes::Bytes,
    mut each: impl FnMut(TagEvent, &[String]) -> Result<(), Error>,
) -> Result<(), Error> {
    let columns =
        ["message_id", "type", "event", "timestamp", "received_at", "source_id", "identity_keys", "properties"];
    for batch in batches(open(bytes)?, None, &columns)? {
        let batch = batch.map_err(arrow_error("part"))?;
        let (ids, sources, kinds, names, properties) = (
            strings(&batch, "message_id")?,
            strings(&batch, "source_id")?,
            strings(&batch, "type")?,
            strings(&batch, "event")?,
            strings(&batch, "properties")?,
        );
        let (at, received) = (times(&batch, "timestamp")?, times(&batch, "received_at")?);
        for (i, keys) in key_lists(&batch)?.into_iter().enumerate() {
            let kind = EventType::ALL
                .into_iter()
                .find(|k| k.as_str() == kinds.value(i))
                .ok_or_else(|| Error::Corrupt(format!("lake part: unknown type {:?}", kinds.value(i))))?;
            let event = TagEvent {
                dedup_key: shared::event::dedup_key(sources.value(i), ids.value(i)).into(),
                kind,
                event: (!names.is_null(i)).then(|| names.value(i).into()),
                at: at.value(i),
                received_at: received.value(i),
                properties: (!properties.is_null(i)).then(|| properties.value(i).into()),
            };
            each(event, &keys)?;
        }
    }
    Ok(())
}

/// Decodes a JSON object keeping only the members named in a sorted list.
pub(super) struct Picked<'w>(&'w [String]);

impl<'de> serde::de::DeserializeSeed<'de> for Picked<'_> {
    type Value = serde_json::Map<String, serde_json::Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Picked<'_> {
    type Value = serde_json::Map<String, serde_json::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of properties")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(PropertyName(name)) = map.next_key()? {
            if self.0.binary_search_by(|w| w.as_str().cmp(&name)).is_ok() {
                out.insert(name.into_owned(), map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// A member's name, borrowed from the text unless escaped.
pub(super) struct PropertyName<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for PropertyName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> serde::de::Visitor<'de> for Name {
            type Value = PropertyName<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a property name")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(PropertyName(std::borrow::Cow::Borrowed(name)))
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
                Ok(PropertyName(std::borrow::Cow::Owned(name.to_string())))
            }
        }
        deserializer.deserialize_str(Name)
    }
}
