//! How traits from different events combine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::clean::CleaningRules;

/// How a trait's competing values are decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum TraitPolicy {
    /// The value from the latest event (by event time; ties by messageId) wins.
    LastWrite,
    /// The value from the earliest event wins (e.g. `createdAt`, first touch).
    FirstWrite,
    /// The value from the source listed first wins; among equals, the latest.
    SourcePriority {
        /// Source ids, most trusted first; unlisted sources rank after all listed ones.
        sources: Vec<String>,
    },
}

/// Profile rules: trait policies and which event properties get running aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileRules {
    /// Policy for traits without their own.
    #[serde(default = "last_write")]
    pub default_policy: TraitPolicy,
    /// Per-trait policies.
    #[serde(default)]
    pub traits: BTreeMap<String, TraitPolicy>,
    /// Numeric event properties aggregated per event name (sum, min, max, count, last).
    #[serde(default = "default_aggregated")]
    pub aggregated_properties: Vec<String>,
    /// Traits that are personal data on top of the built-in ones (email, phone, name, address, …:
    /// [`PII_TRAITS`]): stored sealed, masked for readers without `pii:read`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub personal: Vec<String>,
    /// How trait values are cleaned before the profile holds them (defaults: trimmed, emails case-folded,
    /// …: [`CleaningRules::defaults_for`]).
    #[serde(default)]
    pub cleaning: CleaningRules,
}

fn last_write() -> TraitPolicy {
    TraitPolicy::LastWrite
}

fn default_aggregated() -> Vec<String> {
    ["revenue", "total", "value", "price", "quantity"].into_iter().map(str::to_string).collect()
}

impl Default for ProfileRules {
    fn default() -> Self {
        Self {
            default_policy: last_write(),
            traits: BTreeMap::new(),
            aggregated_properties: default_aggregated(),
            personal: Vec::new(),
            cleaning: CleaningRules::default(),
        }
    }
}

impl ProfileRules {
    /// Whether the trait `name` is personal data: a built-in one or one the operator marked (either case).
    pub fn is_personal(&self, name: &str) -> bool {
        is_pii_trait(name) || self.personal.iter().any(|p| p.eq_ignore_ascii_case(name))
    }

    /// The policy of trait `name`.
    pub fn policy(&self, name: &str) -> &TraitPolicy {
        self.traits.get(name).unwrap_or(&self.default_policy)
    }
}

/// Traits that are personal data: sealed at rest, masked without `pii:read`, sent only to destinations with
/// `allowPii`.
pub const PII_TRAITS: [&str; 14] = [
    "email",
    "phone",
    "name",
    "firstName",
    "lastName",
    "address",
    "street",
    "postalCode",
    "birthday",
    "birthDate",
    "ip",
    "username",
    "first_name",
    "last_name",
];

/// Whether a trait name is personal data.
pub fn is_pii_trait(name: &str) -> bool {
    PII_TRAITS.iter().any(|p| p.eq_ignore_ascii_case(name))
}
