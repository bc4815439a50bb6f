//! The webhook sources' signing secrets (`secrets/v1/sources.json`), kept apart from the sources file: the
//! collectors read them only to verify an inbound webhook, and no listing, answer or audit record holds them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Signing secrets by source id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSecrets {
    /// The file's version (1).
    #[serde(default = "one")]
    version: u32,
    /// Source id → its sender's signing secret.
    #[serde(default)]
    secrets: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

impl Default for SourceSecrets {
    fn default() -> Self {
        Self { version: 1, secrets: BTreeMap::new() }
    }
}

impl std::fmt::Debug for SourceSecrets {
    /// The sources that have a secret; never a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSecrets").field("sources", &self.secrets.keys().collect::<Vec<_>>()).finish()
    }
}

impl SourceSecrets {
    /// Parses the file.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let secrets: Self = serde_json::from_slice(bytes)
            .map_err(|e| Error::Config(format!("{}: {e}", crate::storage::keys::SOURCE_SECRETS)))?;
        if secrets.version != 1 {
            return Err(Error::Config(format!(
                "{}: version {} is not supported (expected 1)",
                crate::storage::keys::SOURCE_SECRETS,
                secrets.version
            )));
        }
        Ok(secrets)
    }

    /// The file's JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The secret of source `id`.
    pub fn get(&self, id: &str) -> Option<&str> {
        self.secrets.get(id).map(String::as_str)
    }

    /// Sets (or replaces) the secret of source `id`.
    pub fn set(&mut self, id: &str, secret: &str) {
        self.secrets.insert(id.to_string(), secret.trim().to_string());
    }

    /// Forgets the secret of source `id`; whether there was one.
    pub fn remove(&mut self, id: &str) -> bool {
        self.secrets.remove(id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_never_prints_a_secret() {
        let mut secrets = SourceSecrets::default();
        secrets.set("shop", " shpss_0123456789abcdef ");
        assert_eq!(secrets.get("shop"), Some("shpss_0123456789abcdef"));
        let again = SourceSecrets::from_json(&secrets.to_json()).unwrap();
        assert_eq!(again, secrets);
        assert!(!format!("{secrets:?}").contains("shpss"), "{secrets:?}");
        assert!(secrets.remove("shop") && !secrets.remove("shop"));
        assert!(SourceSecrets::from_json(br#"{"version":2}"#).unwrap_err().to_string().contains("version 2"));
    }
}
