//! File imports: what each row of a CSV, NDJSON or Parquet file becomes. A [`Mapping`] names, for an identify
//! or track call, where each field comes from (a column, with a type and a default, or a literal); it is
//! checked against the file's columns before any row is read, then turns each row into the JSON of one event,
//! which goes through the same collect pipeline as an HTTP event (`collect::collect_events`).
//!
//! A row's `messageId` is derived from the file's content hash and the row's number, so importing the same file
//! again changes nothing (ingest drops what it has seen; the source is part of the key it remembers).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Invalid;
use crate::time::UtcTime;

/// What each row becomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mapping {
    /// `identify` or `track`.
    #[serde(rename = "type")]
    pub kind: CallKind,
    /// Track: the event name (a literal, or a column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Field>,
    /// The user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Field>,
    /// The anonymous id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<Field>,
    /// When it happened (absent: when imported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Field>,
    /// Identify: traits by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traits: BTreeMap<String, Field>,
    /// Track: properties by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Field>,
    /// Identifiers by type (`email`, `phone`, or a custom type of `config/identity.json`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub identifiers: BTreeMap<String, Field>,
}

/// The call a row becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// Traits of a person.
    Identify,
    /// Something a person did.
    Track,
}

/// Where a field's value comes from: `{"column": "…", "type": "…", "format": "…", "default": …}`, or a
/// literal value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Field {
    /// A column of the row.
    Column(Column),
    /// The same value for every row.
    Literal(Value),
}

/// A column, read as a type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// The column's name (a CSV header, an NDJSON key, a Parquet column).
    pub column: String,
    /// What the value is read as (default: as the file holds it — text in a CSV).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<ValueType>,
    /// A date's format (strftime, `%Y-%m-%d %H:%M:%S`; `unix` seconds, `unix_ms`); default ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The value when the cell is empty or missing (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

/// The types a column is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Text.
    String,
    /// A number (`12.5`, `1,299`).
    Number,
    /// `true`/`false`, `1`/`0`, `yes`/`no`, `y`/`n`.
    Boolean,
    /// A date-time, as ISO 8601 UTC.
    Date,
}

/// A checked mapping: each field resolved to its column's position.
#[derive(Debug, Clone)]
pub struct Compiled {
    kind: CallKind,
    event: Option<Slot>,
    user_id: Option<Slot>,
    anonymous_id: Option<Slot>,
    timestamp: Option<Slot>,
    traits: Vec<(String, Slot)>,
    properties: Vec<(String, Slot)>,
    identifiers: Vec<(String, Slot)>,
}

/// One field, resolved.
#[derive(Debug, Clone)]
struct Slot {
    /// Where it is in the mapping (`traits.age`), for messages.
    at: String,
    field: Field,
    /// The column's position (for a column).
    index: usize,
}

impl Mapping {
    /// SHA-256 of the mapping's canonical JSON (its maps are sorted): what it makes of rows, whatever the
    /// file's spacing.
    pub fn sha256(&self) -> String {
        crate::ids::sha256_hex(&serde_json::to_string(self).unwrap_or_default())
    }

    /// Parses a mapping file.
    pub fn parse(json: &[u8]) -> Result<Self, Invalid> {
        serde_json::from_slice(json).map_err(|e| Invalid(format!("the mapping does not parse: {e}")))
    }

    /// Every field with where it is (`traits.plan`).
    /// The columns the mapping names, each once, in the order first named.
    pub fn columns_named(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (_, field) in self.fields() {
            if let Field::Column(column) = field
                && !names.contains(&column.column)
            {
                names.push(column.column.clone());
            }
        }
        names
    }

    fn fields(&self) -> Vec<(String, &Field)> {
        let mut out = Vec::new();
        let single = [("event", &self.event), ("userId", &self.user_id), ("anonymousId", &self.anonymous_id)];
        for (name, field) in single.into_iter().chain([("timestamp", &self.timestamp)]) {
            if let Some(field) = field {
                out.push((name.to_string(), field));
            }
        }
        for (group, fields) in
            [("traits", &self.traits), ("properties", &self.properties), ("identifiers", &self.identifiers)]
        {
            out.extend(fields.iter().map(|(name, field)| (format!("{group}.{name}"), field)));
        }
        out
    }

    /// Checks the mapping against the file's `columns` before any row is read: every problem named (a column
    /// the file does not have, with the columns it does have; a track without an event; nobody to attach a
    /// row to).
    pub fn check(self, columns: &[String]) -> Result<Compiled, Invalid> {
        let mut problems = Vec::new();
        match self.kind {
            CallKind::Track if self.event.is_none() => problems.push("a track mapping needs `event`".to_string()),
            CallKind::Identify if self.event.is_some() || !self.properties.is_empty() => {
                problems.push("an identify mapping takes traits, not `event` or `properties`".to_string())
            }
            CallKind::Track if !self.traits.is_empty() => {
                problems.push("a track mapping takes properties, not `traits`".to_string())
            }
            _ => {}
        }
        if self.user_id.is_none() && self.anonymous_id.is_none() && self.identifiers.is_empty() {
            problems.push("map `userId`, `anonymousId` or an identifier: a row must say whose it is".to_string());
        }
        let positions: BTreeMap<String, usize> = columns.iter().enumerate().map(|(i, c)| (c.clone(), i)).collect();
        for (at, field) in self.fields() {
            match field {
                Field::Column(column) => {
                    if !positions.contains_key(&column.column) {
                        problems.push(format!(
                            "{at}: the file has no column `{}` (it has: {})",
                            column.column,
                            columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                        ));
                    }
                    if column.format.is_some() && column.kind != Some(ValueType::Date) && at != "timestamp" {
                        problems.push(format!("{at}: `format` is for dates (`\"type\": \"date\"`)"));
                    }
                }
                Field::Literal(Value::Object(_)) => problems
                    .push(format!("{at}: an object is not a value: write `{{\"column\": \"…\"}}` to read a column")),
                Field::Literal(_) => {}
            }
        }
        if !problems.is_empty() {
            return Err(Invalid(problems.join("; ")));
        }
        let slot = |at: String, field: &Field| {
            let index = match field {
                Field::Column(c) => positions.get(&c.column).copied().unwrap_or_default(),
                Field::Literal(_) => 0,
            };
            Slot { at, field: field.clone(), index }
        };
        let one = |at: &str, field: &Option<Field>| field.as_ref().map(|f| slot(at.to_string(), f));
        let group = |name: &str, fields: &BTreeMap<String, Field>| {
            fields.iter().map(|(key, f)| (key.clone(), slot(format!("{name}.{key}"), f))).collect()
        };
        Ok(Compiled {
            kind: self.kind,
            event: one("event", &self.event),
            user_id: one("userId", &self.user_id),
            anonymous_id: one("anonymousId", &self.anonymous_id),
            timestamp: one("timestamp", &self.timestamp),
            traits: group("traits", &self.traits),
            properties: group("properties", &self.properties),
            identifiers: group("identifiers", &self.identifiers),
        })
    }
}

impl Compiled {
    fn slots(&self) -> impl Iterator<Item = &Slot> {
        [&self.event, &self.user_id, &self.anonymous_id, &self.timestamp]
            .into_iter()
            .flatten()
            .chain(self.traits.iter().chain(&self.properties).chain(&self.identifiers).map(|(_, slot)| slot))
    }

    /// The columns the mapping reads (others need not be decoded).
    pub fn columns(&self) -> Vec<usize> {
        let mut used: Vec<usize> =
            self.slots().filter(|slot| matches!(slot.field, Field::Column(_))).map(|slot| slot.index).collect();
        used.sort_unstable();
        used.dedup();
        used
    }

    /// The JSON of the event a row becomes (`cells` by column position; `None` or `""` is empty), with
    /// `message_id`; `now` is the timestamp when none is mapped. A cell that does not read as its type is the
    /// row's problem. Written as text directly: this runs once per row of files of millions.
    pub fn event(&self, cells: &[Option<Value>], message_id: &str, now: UtcTime) -> Result<String, Invalid> {
        self.write_event(cells, message_id, now).map_err(Invalid)
    }

    fn write_event(&self, cells: &[Option<Value>], message_id: &str, now: UtcTime) -> Result<String, String> {
        let mut out = Json(Vec::with_capacity(384));
        out.raw(match self.kind {
            CallKind::Identify => r#"{"type":"identify","messageId":"#,
            CallKind::Track => r#"{"type":"track","messageId":"#,
        });
        out.string(message_id);
        for (name, slot) in [("event", &self.event), ("userId", &self.user_id), ("anonymousId", &self.anonymous_id)] {
            if let Some(slot) = slot
                && let Some(value) = value(slot, cells)?
            {
                out.key(name);
                match &*value {
                    Value::String(s) => out.string(s),
                    Value::Number(n) => out.string(&n.to_string()),
                    other => return Err(format!("{}: {other} is not text", slot.at)),
                }
            }
        }
        out.key("timestamp");
        match &self.timestamp {
            Some(slot) => match value(slot, cells)? {
                Some(value) => out.string(&timestamp(&value, &slot.field)?),
                None => out.string(&now.to_string()),
            },
            None => out.string(&now.to_string()),
        }
        let mut identifiers = Vec::with_capacity(self.identifiers.len());
        for (kind, slot) in &self.identifiers {
            if let Some(value) = value(slot, cells)? {
                let text = match &*value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => return Err(format!("{}: {other} is not an identifier", slot.at)),
                };
                identifiers.push((kind.as_str(), text));
            }
        }
        // Email and phone as the SDKs carry them (the collector extracts and hashes them; an identify's traits
        // hold them too); other types as Segment's external ids, which the identity rules read.
        let personal = |kind: &str| kind == "email" || kind == "phone";
        let carried: Vec<(&str, &str)> =
            identifiers.iter().filter(|(k, _)| personal(k)).map(|(k, v)| (*k, v.as_str())).collect();
        let (name, slots, extra) = match self.kind {
            CallKind::Identify => ("traits", &self.traits, carried.as_slice()),
            CallKind::Track => ("properties", &self.properties, &[][..]),
        };
        let mut open = false;
        for (key, slot) in slots {
            if let Some(value) = value(slot, cells)? {
                out.entry(name, &mut open, key);
                out.value(&value);
            }
        }
        for (key, text) in extra.iter().filter(|(key, _)| !slots.iter().any(|(k, _)| k == key)) {
            out.entry(name, &mut open, key);
            out.string(text);
        }
        if open {
            out.raw("}");
        }
        out.raw(r#","context":{"library":{"name":"cdp-import"}"#);
        if !carried.is_empty() {
            out.raw(r#","traits":{"#);
            for (i, (kind, text)) in carried.iter().enumerate() {
                out.raw(if i == 0 { "" } else { "," });
                out.string(kind);
                out.raw(":");
                out.string(text);
            }
            out.raw("}");
        }
        let external: Vec<&(&str, String)> = identifiers.iter().filter(|(k, _)| !personal(k)).collect();
        if !external.is_empty() {
            out.raw(r#","externalIds":["#);
            for (i, (kind, text)) in external.iter().enumerate() {
                out.raw(if i == 0 { r#"{"id":"# } else { r#",{"id":"# });
                out.string(text);
                out.raw(r#","type":"#);
                out.string(kind);
                out.raw(r#","collection":"users","encoding":"none"}"#);
            }
            out.raw("]");
        }
        out.raw("}}");
        String::from_utf8(out.0).map_err(|e| format!("the event is not UTF-8: {e}"))
    }
}

/// JSON text written piece by piece.
struct Json(Vec<u8>);

impl Json {
    fn raw(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
    }

    /// `,"key":` of the object `name`, opening it (`,"name":{`) before its first entry.
    fn entry(&mut self, name: &str, open: &mut bool, key: &str) {
        self.0.push(b',');
        if !*open {
            self.string(name);
            self.raw(":{");
            *open = true;
        }
        self.string(key);
        self.0.push(b':');
    }

    fn key(&mut self, name: &str) {
        self.0.push(b',');
        self.string(name);
        self.0.push(b':');
    }

    fn string(&mut self, text: &str) {
        // Writing to a Vec cannot fail, and a string always serializes.
        let _ = serde_json::to_writer(&mut self.0, text);
    }

    fn value(&mut self, value: &Value) {
        let _ = serde_json::to_writer(&mut self.0, value);
    }
}

/// A field's value for a row: the literal, or the cell read as its type (its default when empty); `None`
/// when there is nothing.
fn value<'a>(slot: &'a Slot, cells: &'a [Option<Value>]) -> Result<Option<Cow<'a, Value>>, String> {
    let column = match &slot.field {
        Field::Literal(value) => return Ok(Some(Cow::Borrowed(value))),
        Field::Column(column) => column,
    };
    let cell = match cells.get(slot.index).and_then(Option::as_ref) {
        None | Some(Value::Null) => return Ok(column.default.as_ref().map(Cow::Borrowed)),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(column.default.as_ref().map(Cow::Borrowed)),
        Some(cell) => cell,
    };
    let (at, name) = (&slot.at, &column.column);
    Ok(Some(Cow::Owned(match column.kind {
        None => return Ok(Some(Cow::Borrowed(cell))),
        Some(ValueType::String) => match cell {
            Value::String(_) => return Ok(Some(Cow::Borrowed(cell))),
            other => Value::String(other.to_string()),
        },
        Some(ValueType::Number) => match cell {
            Value::Number(_) => cell.clone(),
            Value::String(s) => {
                parse_number(s).ok_or_else(|| format!("{at}: `{s}` in column `{name}` is not a number"))?
            }
            other => return Err(format!("{at}: {other} in column `{name}` is not a number")),
        },
        Some(ValueType::Boolean) => match cell {
            Value::Bool(_) => return Ok(Some(Cow::Borrowed(cell))),
            Value::Number(n) if n.as_f64() == Some(1.0) => Value::Bool(true),
            Value::Number(n) if n.as_f64() == Some(0.0) => Value::Bool(false),
            Value::String(s) => match s.trim() {
                t if ["true", "1", "yes", "y", "t"].iter().any(|w| t.eq_ignore_ascii_case(w)) => Value::Bool(true),
                t if ["false", "0", "no", "n", "f"].iter().any(|w| t.eq_ignore_ascii_case(w)) => Value::Bool(false),
                _ => return Err(format!("{at}: `{s}` in column `{name}` is not true or false")),
            },
            other => return Err(format!("{at}: {other} in column `{name}` is not true or false")),
        },
        Some(ValueType::Date) => Value::String(timestamp(cell, &slot.field)?),
    })))
}

/// A number from text: `12.5`, `1,299.50` (thousands separators dropped).
fn parse_number(text: &str) -> Option<Value> {
    let text = text.trim();
    let parsed = match text.contains(',') {
        true => text.replace(',', "").parse::<f64>(),
        false => text.parse::<f64>(),
    };
    parsed.ok().filter(|x| x.is_finite()).map(number)
}

/// A whole number as an integer, else a float.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

/// A cell as an ISO 8601 UTC date-time, read with the field's format.
fn timestamp(cell: &Value, field: &Field) -> Result<String, String> {
    let (format, name) = match field {
        Field::Column(c) => (c.format.as_deref(), c.column.as_str()),
        Field::Literal(_) => (None, "a literal"),
    };
    let bad = |why: &str| format!("`{}` in column `{name}` is not a date{why}", short(cell));
    let text = match cell {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return Err(bad("")),
    };
    let millis = match format {
        Some("unix") => text.parse::<f64>().ok().map(|s| (s * 1000.0) as i64),
        Some("unix_ms") => text.parse::<f64>().ok().map(|ms| ms as i64),
        Some(format) => jiff::fmt::strtime::parse(format, &text)
            .ok()
            .and_then(|parsed| match parsed.to_timestamp() {
                Ok(ts) => Some(ts),
                Err(_) => parsed
                    .to_datetime()
                    .or_else(|_| parsed.to_date().map(|d| d.to_datetime(jiff::civil::Time::midnight())))
                    .ok()
                    .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
                    .map(|z| z.timestamp()),
            })
            .map(|ts| ts.as_millisecond()),
        None => UtcTime::parse(&text).map(UtcTime::unix_millis).or_else(|| {
            let date = crate::time::iso_date(&text)?;
            UtcTime::parse(&format!("{date}T00:00:00Z")).map(UtcTime::unix_millis)
        }),
    };
    let why = match format {
        Some(format) => format!(" in the format `{format}`"),
        None => " (ISO 8601 expected; give `format`)".to_string(),
    };
    millis.and_then(UtcTime::from_unix_millis).map(|t| t.to_string()).ok_or_else(|| bad(&why))
}

fn short(value: &Value) -> String {
    match value {
        Value::String(s) => s.chars().take(40).collect(),
        other => other.to_string().chars().take(40).collect(),
    }
}

/// A row's `messageId`: `import-`, the first 16 hex digits of the file's SHA-256, the first 8 of the
/// mapping's ([`Mapping::sha256`]), then the row's number. The same file through the same mapping gives the
/// same ids (ingest drops them); a corrected mapping gives new ones.
pub fn message_id(file_sha256: &str, mapping_sha256: &str, row: u64) -> String {
    let file = &file_sha256[..file_sha256.len().min(16)];
    let mapping = &mapping_sha256[..mapping_sha256.len().min(8)];
    format!("import-{file}-{mapping}-{row}")
}

#[cfg(test)]
mod tests;
