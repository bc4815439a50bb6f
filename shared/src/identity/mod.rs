//! ID-Mapping: every identifier a person uses resolves to one profile, and two people are never merged into
//! one when a rule forbids it.
//!
//! - [`rules`]: identifier types, priorities, per-profile limits, blocked values; extraction from events.
//! - [`batch`]: connected components of a whole graph at once (backfills, rebuilds, benchmarks).
//! - [`graph`]: the identity graph — linking, merging (the older profile survives, the absorbed id redirects),
//!   refusals, the audit trail, and unlinking with splits.

pub mod batch;
mod graph;
mod rules;

pub use graph::{
    AuditEntry, AuditKind, IdentityGraph, Linked, MAX_REDIRECTS, PROFILE_ID_PREFIX, ProfileId, ProfileNode,
    follow_redirects, is_profile_id, keys_to_link,
};
pub use rules::{IdKey, IdentifierType, IdentityRules};

use crate::collect::{normalize_email, normalize_phone};
use crate::ids::sha256_hex;

/// The graph's key for an identifier as a person types it (`email:Jane@Example.com`, `user_id:u1`,
/// `phone:+49 30 1234567`) or a profile id (`prof_…`): personal data is keyed by the SHA-256 of its normalized
/// form, as ingest keys it; an email or phone already given as a 64-hex-digit hash is taken as is.
pub fn identifier_key(identifier: &str) -> Result<String, crate::Invalid> {
    let identifier = identifier.trim();
    if is_profile_id(identifier) {
        return Ok(identifier.to_string());
    }
    let Some((kind, value)) = identifier.split_once(':') else {
        return Err("expected <type>:<value> (e.g. user_id:u1, email:jane@example.com) or a profile id".into());
    };
    let (kind, value) = (kind.trim(), value.trim());
    if kind.is_empty() || value.is_empty() {
        return Err(format!("{identifier:?}: both the type and the value are needed").into());
    }
    let is_hash = value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit());
    Ok(match kind {
        "email" if !is_hash => match normalize_email(value) {
            Some(email) => format!("email:{}", sha256_hex(&email)),
            None => return Err(format!("{value:?} is not an email address").into()),
        },
        "phone" if !is_hash => match normalize_phone(value, None) {
            Some(phone) => format!("phone:{}", sha256_hex(&phone)),
            None => return Err(format!("{value:?} is not a phone number (7 to 15 digits, international form)").into()),
        },
        "email" | "phone" => format!("{kind}:{}", value.to_ascii_lowercase()),
        _ => format!("{kind}:{value}"),
    })
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn personal_data_is_hashed_like_the_graph() {
        assert_eq!(
            identifier_key("email: Jane@Example.com").unwrap(),
            format!("email:{}", sha256_hex("jane@example.com"))
        );
        assert_eq!(identifier_key("phone:+49 30 1234567").unwrap(), format!("phone:{}", sha256_hex("+49301234567")));
        let hash = sha256_hex("jane@example.com");
        assert_eq!(identifier_key(&format!("email:{}", hash.to_uppercase())).unwrap(), format!("email:{hash}"));
        assert_eq!(identifier_key("user_id:u1").unwrap(), "user_id:u1");
        assert_eq!(identifier_key("prof_abc").unwrap(), "prof_abc");
        assert!(identifier_key("nonsense").is_err());
        assert!(identifier_key("user_id:").is_err());
        assert!(identifier_key("email:not-an-email").unwrap_err().contains("not an email"));
    }
}
