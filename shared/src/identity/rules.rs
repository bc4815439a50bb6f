//! Identifier types and the rules that govern linking.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::CanonicalEvent;
use crate::ids::sha256_hex;

/// An identifier as the graph keys it: `type:value`, where personal data (email, phone) is the SHA-256 of the
/// normalized value, so the graph never holds it in clear.
pub type IdKey = String;

/// One kind of identifier and its rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentifierType {
    /// Name used in keys (`user_id`, `email`, `crm_id`, ...).
    pub name: String,
    /// Lower is stronger: the event attaches to the profile of its strongest identifier when a merge is refused.
    pub priority: u32,
    /// At most this many distinct values of this type in one profile; a link or merge that would exceed it is
    /// refused (`user_id`: 1, so two different user ids never merge).
    pub max_per_profile: usize,
    /// Values of this type that never link anything (besides the rules' common blocked values).
    #[serde(default)]
    pub blocked: Vec<String>,
    /// Where custom identifiers are read from: dotted paths in the event (`traits.crmId`,
    /// `context.traits.crmId`, `properties.customer_number`).
    #[serde(default)]
    pub paths: Vec<String>,
}

/// The identity rules: types in any order, and values blocked for every type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityRules {
    /// Identifier types.
    pub types: Vec<IdentifierType>,
    /// Values blocked for every type (compared trimmed and case-insensitively), on top of the built-in ones:
    /// empty, `null`, `undefined`, `anonymous`, `-1`, `0`, and runs of zeros or dashes.
    #[serde(default)]
    pub blocked: Vec<String>,
}

fn kind(name: &str, priority: u32, max_per_profile: usize) -> IdentifierType {
    IdentifierType { name: name.to_string(), priority, max_per_profile, blocked: Vec::new(), paths: Vec::new() }
}

impl Default for IdentityRules {
    /// `user_id` (1 per profile) > `email` > `phone` > `device_id` > `advertising_id` > `anonymous_id` (5 each),
    /// as Segment; the customer ids of the built-in webhook sources (`shopify_customer_id`,
    /// `stripe_customer_id`; 5 per profile, as one person may be several customers of a store) just below
    /// `user_id`.
    fn default() -> Self {
        Self {
            types: vec![
                kind("user_id", 0, 1),
                kind("shopify_customer_id", 5, 5),
                kind("stripe_customer_id", 6, 5),
                kind("email", 10, 5),
                kind("phone", 20, 5),
                kind("device_id", 30, 5),
                kind("advertising_id", 35, 5),
                kind("anonymous_id", 40, 5),
            ],
            blocked: Vec::new(),
        }
    }
}

impl IdentityRules {
    /// The type named `name`.
    pub fn kind(&self, name: &str) -> Option<&IdentifierType> {
        self.types.iter().find(|t| t.name == name)
    }

    /// The type of a key (`user_id:u1` → `user_id`).
    pub fn kind_of<'a>(&self, key: &'a str) -> &'a str {
        key.split_once(':').map_or(key, |(kind, _)| kind)
    }

    /// Priority of a key's type; unknown types rank last.
    pub fn priority(&self, key: &str) -> u32 {
        self.kind(self.kind_of(key)).map_or(u32::MAX, |t| t.priority)
    }

    /// Limit of a key's type; unknown types allow one value.
    pub fn limit(&self, key: &str) -> usize {
        self.kind(self.kind_of(key)).map_or(1, |t| t.max_per_profile)
    }

    /// Whether `value` may never link anything as a `kind`.
    pub fn is_blocked(&self, kind: &str, value: &str) -> bool {
        let v = value.trim().to_ascii_lowercase();
        let builtin = v.is_empty()
            || matches!(v.as_str(), "null" | "undefined" | "anonymous" | "-1" | "0" | "nan" | "none")
            || v.bytes().all(|b| b == b'0')
            || v.bytes().all(|b| b == b'-');
        builtin
            || self.blocked.iter().any(|b| b.trim().eq_ignore_ascii_case(&v))
            || self.kind(kind).is_some_and(|t| t.blocked.iter().any(|b| b.trim().eq_ignore_ascii_case(&v)))
    }

    /// Every identity key of an event: [`IdentityRules::keys`] (those that link, strongest first), then any other
    /// identifier it names ([`CanonicalEvent::identifier_keys`]), so that finding a person's events does not
    /// depend on how the rules stand.
    pub fn every_key(&self, event: &CanonicalEvent) -> Vec<IdKey> {
        let mut keys = self.keys(event);
        for key in event.identifier_keys() {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }

    /// The keys of an event's identifiers that may link: those the collector extracted (personal data by its
    /// hash), custom types from their paths, and Segment's `context.externalIds`; blocked values and
    /// unconfigured types left out; sorted strongest first, without repeats.
    pub fn keys(&self, event: &CanonicalEvent) -> Vec<IdKey> {
        let mut keys: Vec<IdKey> = Vec::new();
        let mut push = |kind: &str, value: &str, hashed: Option<&str>| {
            if self.kind(kind).is_none() || self.is_blocked(kind, value) {
                return;
            }
            let key = crate::event::key_of(kind, value, hashed);
            if !keys.contains(&key) {
                keys.push(key);
            }
        };
        for id in &event.identifiers {
            push(&id.kind, &id.value, id.sha256.as_deref());
        }
        // Custom paths read the event as JSON; build that only when some type has paths (not in the defaults).
        let with_paths = self.types.iter().any(|t| !t.paths.is_empty());
        let root = if with_paths { serde_json::to_value(event).unwrap_or(Value::Null) } else { Value::Null };
        for kind in self.types.iter().filter(|_| with_paths) {
            for path in &kind.paths {
                let found = path.split('.').try_fold(&root, |v, part| v.get(part));
                let text = match found {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                if let Some(text) = text {
                    push(&kind.name, &text, None);
                }
            }
        }
        if let Some(Value::Array(external)) = event.context.get("externalIds") {
            for item in external {
                if let (Some(kind), Some(id)) = (item.get("type").and_then(Value::as_str), item.get("id")) {
                    let text = match id {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        _ => continue,
                    };
                    let hashed = (kind == "email" || kind == "phone").then(|| sha256_hex(&text.trim().to_lowercase()));
                    push(kind, &text, hashed.as_deref());
                }
            }
        }
        keys.sort_by_key(|k| (self.priority(k), k.clone()));
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_blocked_values() {
        let rules = IdentityRules::default();
        for v in ["", " ", "null", "NULL", "undefined", "anonymous", "-1", "0", "0000", "---"] {
            assert!(rules.is_blocked("user_id", v), "{v:?} must be blocked");
        }
        for v in ["u1", "10", "a-b", "0a"] {
            assert!(!rules.is_blocked("user_id", v), "{v:?} must not be blocked");
        }
    }

    #[test]
    fn configured_blocked_values() {
        let mut rules = IdentityRules { blocked: vec!["test@example.com".into()], ..IdentityRules::default() };
        rules.types[0].blocked.push("qa-user".into());
        assert!(rules.is_blocked("email", "TEST@example.com"));
        assert!(rules.is_blocked("user_id", "qa-user"));
        assert!(!rules.is_blocked("anonymous_id", "qa-user"));
    }

    #[test]
    fn custom_identifiers_from_paths_and_external_ids() {
        let mut rules = IdentityRules::default();
        rules.types.push(IdentifierType {
            name: "crm_id".into(),
            priority: 5,
            max_per_profile: 1,
            blocked: vec![],
            paths: vec!["traits.crmId".into(), "properties.customer_number".into()],
        });
        rules.types.push(IdentifierType {
            name: "wechat_unionid".into(),
            priority: 6,
            max_per_profile: 1,
            blocked: vec![],
            paths: vec![],
        });
        let event: CanonicalEvent = serde_json::from_value(serde_json::json!({
            "messageId": "m", "type": "identify", "sourceId": "crm", "receivedAt": "2026-11-28T12:00:00.000Z",
            "timestamp": "2026-11-28T12:00:00.000Z", "userId": "u1",
            "traits": {"crmId": 12345},
            "context": {"externalIds": [
                {"id": "oU7x-unionid", "type": "wechat_unionid", "collection": "users", "encoding": "none"},
                {"id": "Jane@Example.com", "type": "email", "collection": "users", "encoding": "none"},
                {"id": "x", "type": "not_configured", "collection": "users", "encoding": "none"}
            ]},
            "identifiers": [{"type": "user_id", "value": "u1"}]
        }))
        .unwrap();
        let keys = rules.keys(&event);
        assert_eq!(
            keys,
            vec![
                "user_id:u1".to_string(),
                "crm_id:12345".to_string(),
                "wechat_unionid:oU7x-unionid".to_string(),
                format!("email:{}", sha256_hex("jane@example.com")),
            ]
        );
    }

    #[test]
    fn priorities_and_limits() {
        let rules = IdentityRules::default();
        assert!(rules.priority("user_id:u") < rules.priority("email:x"));
        assert!(rules.priority("email:x") < rules.priority("anonymous_id:a"));
        assert_eq!(rules.limit("user_id:u"), 1);
        assert_eq!(rules.limit("anonymous_id:a"), 5);
    }
}
