//! Reading a `raw/` object tolerantly: every line that decodes is applied; the rest are quarantined.

use std::io::Read as _;

use serde::{Deserialize, Serialize};
use shared::event::CanonicalEvent;

use crate::Error;
use crate::storage::ObjectStore;

/// A line (or the tail of an object) that could not be read, kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quarantined {
    /// The object it came from.
    pub object: String,
    /// 1-based line number (0: the object as a whole).
    pub line: usize,
    /// Why it was not applied.
    pub reason: String,
    /// The line as read (empty when nothing could be read).
    pub original: String,
}

/// An object's events and what could not be read of it.
#[derive(Debug, Default)]
pub struct ReadObject {
    /// Events that decoded.
    pub events: Vec<CanonicalEvent>,
    /// What did not.
    pub quarantined: Vec<Quarantined>,
    /// Bytes of text the object inflated to (what decoding it costs in memory, roughly).
    pub text_bytes: usize,
}

/// Reads `key`; `None` if it does not exist.
pub async fn read_object<S: ObjectStore>(store: &S, key: &str) -> Result<Option<ReadObject>, Error> {
    let Some(object) = store.get(key).await? else { return Ok(None) };
    Ok(Some(decode(key, &object.body)))
}

/// Decodes gzip NDJSON as far as it goes: a truncated or corrupt stream keeps the complete lines before the
/// damage; a line that is not a canonical event is quarantined with the parser's reason.
pub(crate) fn decode(key: &str, bytes: &[u8]) -> ReadObject {
    let mut out = ReadObject::default();
    let mut text = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(bytes);
    let mut buf = [0u8; 64 * 1024];
    let mut damage = None;
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) => {
                damage = Some(e.to_string());
                break;
            }
        }
    }
    out.text_bytes = text.len();
    // With damage, the last line may be cut short: it is quarantined like any other bad line.
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<CanonicalEvent>(line) {
            Ok(event) => out.events.push(event),
            Err(e) => out.quarantined.push(Quarantined {
                object: key.to_string(),
                line: i + 1,
                reason: format!("not a canonical event: {e}"),
                original: String::from_utf8_lossy(line).into_owned(),
            }),
        }
    }
    if let Some(reason) = damage {
        out.quarantined.push(Quarantined {
            object: key.to_string(),
            line: 0,
            reason: format!("gzip stream damaged after {} bytes of text: {reason}", text.len()),
            original: String::new(),
        });
    }
    out
}
