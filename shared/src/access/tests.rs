use std::collections::BTreeSet;

use super::*;
use crate::ids::Entropy;
use crate::time::UtcTime;

fn now() -> UtcTime {
    UtcTime::parse("2026-11-29T10:00:00.000Z").unwrap()
}

fn keys_with(scopes: &[Scope]) -> (ApiKeys, NewKey) {
    let mut keys = ApiKeys::default();
    let new =
        keys.create("ci", scopes.iter().copied().collect(), "cli", now(), &mut Entropy::from_seed([5; 32])).unwrap();
    (keys, new)
}

#[test]
fn a_key_is_stored_only_hashed_and_authenticates() {
    let (keys, new) = keys_with(&[Scope::ProfilesRead]);
    assert!(new.key.starts_with("cdp_sk_"), "{}", new.key);
    assert_eq!(new.key.len(), 7 + 16 + 1 + 64);
    let stored = String::from_utf8(keys.to_json()).unwrap();
    assert!(!stored.contains(&new.key[7..]), "the key's id and secret are not stored together");
    assert!(!stored.contains(&new.key[24..]), "the secret is not stored");
    assert!(!format!("{new:?}").contains(&new.key[24..]), "Debug redacts the key");
    let reread = ApiKeys::from_json(stored.as_bytes()).unwrap();
    let record = reread.authenticate(Some(&format!("Bearer {}", new.key))).unwrap();
    assert_eq!(record.id, new.record.id);
    assert!(record.allows(Scope::ProfilesRead));
    assert!(!record.allows(Scope::ConfigWrite));
    assert!(reread.authenticate(Some(&format!("bearer  {} ", new.key))).is_ok(), "scheme case-insensitive");
}

#[test]
fn admin_allows_every_scope() {
    let (keys, new) = keys_with(&[Scope::Admin]);
    let record = keys.authenticate(Some(&format!("Bearer {}", new.key))).unwrap();
    assert!(Scope::ALL.iter().all(|s| record.allows(*s)));
}

#[test]
fn refusals_say_why() {
    let (mut keys, new) = keys_with(&[Scope::ProfilesRead]);
    assert_eq!(keys.authenticate(None), Err(AuthError::Missing));
    assert_eq!(keys.authenticate(Some("")), Err(AuthError::Missing));
    assert_eq!(keys.authenticate(Some(&new.key)), Err(AuthError::Missing), "no scheme");
    // A write key, as Segment's SDKs send it (Basic, key as user) and as a bearer token.
    assert_eq!(keys.authenticate(Some("Basic MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY6")), Err(AuthError::WriteKey));
    assert_eq!(keys.authenticate(Some("Bearer 0123456789abcdef0123456789abcdef")), Err(AuthError::WriteKey));
    // Right id, wrong secret; unknown id; garbage.
    let mut forged = new.key.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(keys.authenticate(Some(&format!("Bearer {forged}"))), Err(AuthError::Invalid));
    let other = keys_with(&[Scope::Admin]).1.key.replace(&new.record.id, "ffffffffffffffff");
    assert_eq!(keys.authenticate(Some(&format!("Bearer {other}"))), Err(AuthError::Invalid));
    assert_eq!(keys.authenticate(Some("Bearer cdp_sk_nonsense")), Err(AuthError::Invalid));
    // Revoked.
    let before = keys.revoke(&new.record.id, now()).unwrap();
    assert!(before.revoked_at.is_none());
    assert_eq!(keys.authenticate(Some(&format!("Bearer {}", new.key))), Err(AuthError::Revoked));
    assert!(keys.revoke("ffffffffffffffff", now()).is_none());
}

#[test]
fn keys_need_a_name_and_a_scope_and_get_distinct_ids() {
    let mut keys = ApiKeys::default();
    let mut entropy = Entropy::from_seed([1; 32]);
    assert!(keys.create(" ", BTreeSet::from([Scope::Admin]), "cli", now(), &mut entropy).is_err());
    let error = keys.create("x", BTreeSet::new(), "cli", now(), &mut entropy).unwrap_err().to_string();
    assert!(error.contains("profiles:read"), "{error}");
    let a = keys.create("a", BTreeSet::from([Scope::Admin]), "cli", now(), &mut entropy).unwrap();
    let b = keys.create("b", BTreeSet::from([Scope::Admin]), "cli", now(), &mut entropy).unwrap();
    assert_ne!(a.record.id, b.record.id);
    assert_ne!(a.key, b.key);
}

#[test]
fn scopes_round_trip_by_name() {
    for scope in Scope::ALL {
        assert_eq!(Scope::parse(scope.name()), Some(scope));
        assert_eq!(serde_json::to_value(scope).unwrap(), scope.name());
    }
    assert_eq!(Scope::parse("root"), None);
    assert!(ApiKeys::from_json(br#"{"version":2,"keys":[]}"#).unwrap_err().to_string().contains("version 2"));
}

#[test]
fn audit_keys_and_hashed_identifiers() {
    assert_eq!(audit_key(now(), "01J"), "audit/v1/dt=2026-11-29/01J.json");
    let hashed = IdentifierKey::from_bytes([3; 32]).hash("user_id:u1");
    assert!(hashed.starts_with("hmac:") && !hashed.contains("u1"), "{hashed}");
}

#[test]
fn suppression_matches_keyed_hashes_and_the_unkeyed_ones_of_older_lists() {
    let key = IdentifierKey::from_bytes([3; 32]);
    let u1 = "user_id:u1".to_string();
    let keyed = Suppression { suppressed: [key.hash(&u1)].into(), ..Default::default() };
    assert!(keyed.drops(&key, [&u1]));
    assert!(!keyed.drops(&IdentifierKey::from_bytes([4; 32]), [&u1]), "another key, another hash");
    let older = Suppression { suppressed: [legacy_hashed_identifier(&u1)].into(), ..Default::default() };
    assert!(older.drops(&key, [&u1]), "a list written before the key still applies");
    assert!(!older.drops(&key, [&"user_id:u2".to_string()]));
}
