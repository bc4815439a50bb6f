use std::collections::BTreeMap;

use serde_json::json;
use shared::profile::TraitValue;
use shared::storage::keys;
use shared::time::UtcTime;

use super::*;
use crate::storage::FsStore;

fn trait_value(value: Value) -> TraitValue {
    TraitValue {
        value,
        sealed: None,
        at: UtcTime::parse("2026-01-01T00:00:00Z").unwrap(),
        source: "web".into(),
        message_id: "m1".into(),
    }
}

#[tokio::test]
async fn personal_traits_are_sealed_bound_to_their_name_and_open_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path().join("data")).unwrap();
    assert!(for_store(&store).await.unwrap().is_none(), "no key made yet: no vault");
    ensure(&store, &KeySource::File(dir.path().join("master.key"))).await.unwrap();
    let vault = for_store(&store).await.unwrap().expect("a vault");

    let mut traits: BTreeMap<String, TraitValue> = [
        ("email".to_string(), trait_value(json!("jane@example.com"))),
        ("Phone".to_string(), trait_value(json!("+49 30 1234567"))),
        ("plan".to_string(), trait_value(json!("pro"))),
    ]
    .into();
    vault.seal_traits(traits.iter_mut()).unwrap();
    let stored = serde_json::to_string(&traits).unwrap();
    assert!(!stored.contains("jane") && !stored.contains("1234567"), "{stored}");
    assert!(stored.contains("\"pro\""), "other traits stay clear: {stored}");
    assert_eq!(traits["email"].value, Value::Null);

    // Sealing is randomized: the same value twice gives two texts (no equality leaks).
    assert_ne!(vault.seal("email", &json!("a@b.c")).unwrap(), vault.seal("email", &json!("a@b.c")).unwrap());
    // A sealed value moved to another trait does not open.
    let email = traits["email"].sealed.clone().unwrap();
    assert!(vault.open("name", &email).is_err());
    // Nor a tampered one.
    let mut tampered = email.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    assert!(vault.open("email", std::str::from_utf8(&tampered).unwrap()).is_err());

    let mut read: BTreeMap<String, TraitValue> = serde_json::from_str(&stored).unwrap();
    vault.open_traits(read.iter_mut()).unwrap();
    assert_eq!(read["email"].value, json!("jane@example.com"));
    assert_eq!(read["Phone"].value, json!("+49 30 1234567"));
    assert!(read.values().all(|t| t.sealed.is_none()));

    // Without the key, a sealed value is an error, never a silent null.
    let mut read: BTreeMap<String, TraitValue> = serde_json::from_str(&stored).unwrap();
    assert!(open_traits(None, read.iter_mut()).unwrap_err().to_string().contains("sealed"));
}

#[tokio::test]
async fn operator_marked_traits_are_personal_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path().join("data")).unwrap();
    store.put("config/profiles.json", br#"{"personal": ["nationalId"]}"#.to_vec(), PutOptions::json()).await.unwrap();
    ensure(&store, &KeySource::File(dir.path().join("master.key"))).await.unwrap();
    let vault = for_store(&store).await.unwrap().unwrap();
    assert!(vault.is_personal("nationalid") && vault.is_personal("email") && !vault.is_personal("plan"));
}

#[tokio::test]
async fn the_data_key_is_stored_wrapped_and_needs_its_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path().join("data")).unwrap();
    let master = dir.path().join("master.key");
    ensure(&store, &KeySource::File(master.clone())).await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&master).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let stored: StoredKey =
        serde_json::from_slice(&store.get(keys::TRAITS_DATA_KEY).await.unwrap().unwrap().body).unwrap();
    let key = data_key(&stored, None).await.unwrap();
    let wrapped = B64.decode(&stored.wrapped).unwrap();
    assert!(!wrapped.windows(32).any(|w| w == key), "the data key is not stored in clear");
    // Making it again keeps the one key (create-only).
    ensure(&store, &KeySource::File(master.clone())).await.unwrap();
    let again: StoredKey =
        serde_json::from_slice(&store.get(keys::TRAITS_DATA_KEY).await.unwrap().unwrap().body).unwrap();
    assert_eq!(again.wrapped, stored.wrapped);

    // Another master key is refused by name, before anything is written with it.
    let other = dir.path().join("other.key");
    let error = wrap::unwrap(&stored.wrap, &wrapped, Some(&KeySource::File(other.clone()))).await;
    assert!(error.is_err());
    // `ensure` with a missing key file, or with another key: refused, nothing made.
    unwrapped().lock().unwrap().clear();
    let error = ensure(&store, &KeySource::File(other.clone())).await.unwrap_err().to_string();
    assert!(error.contains("No such file"), "{error}");
    assert!(!other.exists(), "no new master key made beside an existing data key");
    wrap::generate(&KeySource::File(other.clone())).await.unwrap();
    let error = ensure(&store, &KeySource::File(other)).await.unwrap_err().to_string();
    assert!(error.contains("not the one that wrapped"), "{error}");

    // A master key others may read is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = wrap::unwrap(&stored.wrap, &wrapped, None).await.unwrap_err().to_string();
        assert!(error.contains("others may read it"), "{error}");
        std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // The folder and its key moved: the new path is recorded.
    let moved = dir.path().join("moved.key");
    std::fs::rename(&master, &moved).unwrap();
    ensure(&store, &KeySource::File(moved.clone())).await.unwrap();
    let after: StoredKey =
        serde_json::from_slice(&store.get(keys::TRAITS_DATA_KEY).await.unwrap().unwrap().body).unwrap();
    let wrap::Wrap::File { path, .. } = after.wrap else { panic!("file wrap") };
    assert_eq!(path, std::path::absolute(&moved).unwrap().display().to_string());
    unwrapped().lock().unwrap().clear();
    assert!(for_store(&store).await.unwrap().is_some(), "opens from the recorded path");
}

#[test]
fn masks_keep_little() {
    assert_eq!(mask(&json!("jane@example.com")), json!("j***@example.com"));
    assert_eq!(mask(&json!("+49 30 1234567")), json!("+***"));
    assert_eq!(mask(&json!("J")), json!("***"));
    assert_eq!(mask(&json!({"street": "Main 1"})), json!("***"));
    assert_eq!(mask(&Value::Null), Value::Null);
}
