//! Taking a person's events out of a part (an erasure).

use std::collections::BTreeSet;

use super::{Row, decode, encode};
use crate::Error;

/// What is left of a part after an erasure.
#[derive(Debug, Clone, PartialEq)]
pub struct Scrubbed {
    /// The part's new bytes; `None` when no event is left (the part goes).
    pub rest: Option<Vec<u8>>,
    /// Events removed.
    pub removed: usize,
}

/// A part without the events that have one of `keys`; `None` when it holds none of them.
pub fn without(bytes: bytes::Bytes, keys: &BTreeSet<String>) -> Result<Option<Scrubbed>, Error> {
    if decode(bytes.clone(), Some(keys))?.is_empty() {
        return Ok(None);
    }
    let (gone, kept): (Vec<Row>, Vec<Row>) =
        decode(bytes, None)?.into_iter().partition(|(_, k)| k.iter().any(|k| keys.contains(k)));
    let rest = if kept.is_empty() { None } else { Some(encode(&kept)?) };
    Ok(Some(Scrubbed { rest, removed: gone.len() }))
}
