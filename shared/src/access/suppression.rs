//! The suppression list: hashes of identity keys whose events the platform does not keep. Read by the
//! collectors (the edge worker and `cdp up`), which drop a suppressed person's new events before they are
//! stored, and by ingest and the lake, which drop what arrived before.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{IdentifierKey, legacy_hashed_identifier};
use crate::event::CanonicalEvent;

/// Where the list is: `privacy/v1/suppressed.json`.
pub const SUPPRESSED_KEY: &str = "privacy/v1/suppressed.json";
/// Where counts of dropped events go: `privacy/v1/dropped/dt=YYYY-MM-DD/<ulid>.json`, each `{"at", "dropped"}`.
pub const DROPPED_PREFIX: &str = "privacy/v1/dropped/";

/// The list as stored: identifiers keyed-hashed with the deployment's [`IdentifierKey`] (`hmac:…`; lists
/// written before the key hold `sha256:…`, still matched).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suppression {
    /// Suppressed by request.
    #[serde(default)]
    pub suppressed: BTreeSet<String>,
    /// Held while an erasure runs, by request id.
    #[serde(default)]
    pub erasing: BTreeMap<String, BTreeSet<String>>,
}

impl Suppression {
    /// Reads the stored list.
    pub fn from_json(bytes: &[u8]) -> Result<Self, crate::Error> {
        serde_json::from_slice(bytes).map_err(|e| crate::Error::Config(format!("{SUPPRESSED_KEY}: {e}")))
    }

    /// Whether nothing is suppressed.
    pub fn is_empty(&self) -> bool {
        self.suppressed.is_empty() && self.erasing.values().all(BTreeSet::is_empty)
    }

    /// Whether the list holds `hash`.
    fn holds(&self, hash: &str) -> bool {
        self.suppressed.contains(hash) || self.erasing.values().any(|set| set.contains(hash))
    }

    /// Whether an event with these identity keys is to be dropped.
    pub fn drops<'k>(&self, key: &IdentifierKey, keys: impl IntoIterator<Item = &'k String>) -> bool {
        let legacy = self.suppressed.iter().chain(self.erasing.values().flatten()).any(|h| h.starts_with("sha256:"));
        keys.into_iter().any(|k| self.holds(&key.hash(k)) || legacy && self.holds(&legacy_hashed_identifier(k)))
    }

    /// Whether `event` carries a suppressed identifier (any identifier it has, linkable or not).
    pub fn drops_event(&self, key: &IdentifierKey, event: &CanonicalEvent) -> bool {
        !self.is_empty() && self.drops(key, event.identifier_keys().collect::<Vec<_>>().iter())
    }
}

/// The suppression list with the key its hashes are made with: what the collectors and ingest check events
/// against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionCheck {
    /// The list.
    pub list: Suppression,
    /// The deployment's identifier key.
    pub key: IdentifierKey,
}

impl SuppressionCheck {
    /// Whether nothing is suppressed.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether `event` carries a suppressed identifier.
    pub fn drops_event(&self, event: &CanonicalEvent) -> bool {
        self.list.drops_event(&self.key, event)
    }
}

/// The record of events dropped at one place and time: its key under [`DROPPED_PREFIX`] and its body.
pub fn dropped_record(count: usize, at: crate::time::UtcTime, id: ulid::Ulid) -> (String, Vec<u8>) {
    let (date, _) = at.date_and_hour();
    let body = serde_json::json!({"at": at, "dropped": count}).to_string().into_bytes();
    (format!("{DROPPED_PREFIX}dt={date}/{id}.json"), body)
}
