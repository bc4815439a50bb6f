//! What a reader may see of personal data: personal traits (and the personal identifiers and properties of
//! events) in clear only for keys with `pii:read`, masked ([`crate::vault::mask`]) for the others.

use axum::http::HeaderMap;
use serde_json::{Map, Value};
use shared::access::Scope;
use shared::event::CanonicalEvent;
use shared::profile::ProfileRules;
use shared::storage::keys;

use super::{Api, ApiError};
use crate::storage::ObjectStore;

/// How much of personal data one caller sees.
pub(crate) struct Disclosure {
    reveal: bool,
    rules: ProfileRules,
}

impl Disclosure {
    /// For the caller of `headers` (already authorized for its route).
    pub(crate) async fn for_caller<S: ObjectStore + Clone>(
        api: &Api<S>,
        headers: &HeaderMap,
    ) -> Result<Self, ApiError> {
        let reveal = api.also_allows(headers, Scope::PiiRead).await?;
        let rules = crate::config::read(api.store(), keys::CONFIG_PROFILES).await?.unwrap_or_default();
        Ok(Self { reveal, rules })
    }

    /// Whether personal data is shown in clear (recorded with the read in the audit log).
    pub(crate) fn reveals(&self) -> bool {
        self.reveal
    }

    /// `values` with the personal ones masked; returns the names masked.
    pub(crate) fn values(&self, values: &mut Map<String, Value>) -> Vec<String> {
        if self.reveal {
            return Vec::new();
        }
        let mut masked = Vec::new();
        for (name, value) in values.iter_mut() {
            if self.rules.is_personal(name) && !value.is_null() {
                *value = crate::vault::mask(value);
                masked.push(name.clone());
            }
        }
        masked
    }

    /// `event` with its personal traits, properties, context traits and identifiers masked.
    pub(crate) fn event(&self, event: &mut CanonicalEvent) {
        if self.reveal {
            return;
        }
        for values in [event.traits.as_mut(), event.properties.as_mut()].into_iter().flatten() {
            self.values(values);
        }
        if let Some(Value::Object(traits)) = event.context.get_mut("traits") {
            self.values(traits);
        }
        for identifier in &mut event.identifiers {
            if identifier.sha256.is_some() || self.rules.is_personal(&identifier.kind) {
                identifier.value =
                    crate::vault::mask(&Value::String(identifier.value.clone())).as_str().unwrap_or("***").to_string();
            }
        }
    }
}
