//! Personal traits sealed at rest (envelope encryption).
//!
//! The values of personal traits (email, phone, name, address and those the operator lists in
//! `config/profiles.json` `personal`) are stored in the profile state sealed with AES-256-GCM under one data
//! key per deployment, bound to the trait's name. The data key is never stored in clear: `keys/v1/traits.json`
//! holds it wrapped — by AWS KMS in the cloud (`CDP_KMS_KEY_ID`, with the encryption context
//! `purpose=cdp-personal-traits`), or by a local master key file for `cdp up` (`DIR/.cdp-master.key`, 0600,
//! outside the objects). Whoever reads the bucket or the folder without the wrapping key sees only sealed
//! values.
//!
//! The storage layer seals on write and opens on read ([`crate::state`]); in memory, and for every rule,
//! values are clear. What leaves through the API is masked unless the caller's key has `pii:read`.

mod wrap;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::profile::{ProfileRules, TraitValue};
use shared::storage::keys::{self, TRAITS_DATA_KEY};

pub use wrap::KmsSettings;

use crate::Error;
use crate::storage::{Condition, ObjectStore, PutOptions, StoreError};

/// Prefix of a sealed value: format version 1 (nonce ‖ ciphertext ‖ tag, base64url).
const SEALED_PREFIX: &str = "v1.";

/// What wraps the data key.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A local file of 32 random bytes (hex), made on first use with mode 0600.
    File(PathBuf),
    /// An AWS KMS key.
    Kms(KmsSettings),
}

impl KeySource {
    /// From the environment: `CDP_KMS_KEY_ID` (with `AWS_REGION`, the role's credentials and optionally
    /// `AWS_ENDPOINT_URL_KMS`), else `CDP_MASTER_KEY_FILE`; `None` when neither is set.
    pub fn from_env() -> Result<Option<Self>, shared::Invalid> {
        if let Some(key_id) = std::env::var("CDP_KMS_KEY_ID").ok().filter(|s| !s.is_empty()) {
            return Ok(Some(Self::Kms(KmsSettings::from_env(key_id)?)));
        }
        Ok(std::env::var_os("CDP_MASTER_KEY_FILE").filter(|s| !s.is_empty()).map(|p| Self::File(p.into())))
    }

    /// The key source a deployed function must have: personal traits are never stored in clear in the cloud.
    pub fn required_from_env() -> Result<Self, shared::Invalid> {
        Self::from_env()?.ok_or_else(|| {
            "personal traits are stored sealed: set CDP_KMS_KEY_ID (the Terraform module does) or \
             CDP_MASTER_KEY_FILE"
                .into()
        })
    }
}

/// The wrapped data key as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StoredKey {
    version: u32,
    wrap: wrap::Wrap,
    /// The wrapped data key, base64url.
    wrapped: String,
}

/// Data keys already unwrapped in this process, by their wrapped form (KMS is asked once per process).
fn unwrapped() -> &'static Mutex<HashMap<String, [u8; 32]>> {
    static CACHE: std::sync::OnceLock<Mutex<HashMap<String, [u8; 32]>>> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Seals and opens personal trait values with the deployment's data key.
pub struct Vault {
    key: LessSafeKey,
    rules: ProfileRules,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

impl Vault {
    fn new(key: &[u8; 32], rules: ProfileRules) -> Result<Self, Error> {
        let key = UnboundKey::new(&AES_256_GCM, key).map_err(|_| Error::Internal("data key rejected".into()))?;
        Ok(Self { key: LessSafeKey::new(key), rules })
    }

    /// Whether `name` is a personal trait here.
    pub fn is_personal(&self, name: &str) -> bool {
        self.rules.is_personal(name)
    }

    /// `value` of trait `name`, sealed.
    pub fn seal(&self, name: &str, value: &Value) -> Result<String, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| Error::Machine(format!("no randomness for a nonce: {e}")))?;
        let mut data = serde_json::to_vec(value).map_err(Error::encoding)?;
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(name.as_bytes()), &mut data)
            .map_err(|_| Error::Internal(format!("sealing trait {name}")))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{SEALED_PREFIX}{}", B64.encode(out)))
    }

    /// The value `sealed` holds for trait `name`; an error if it was sealed under another key or name.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Value, Error> {
        let bad = || Error::Corrupt(format!("trait {name}: the sealed value does not open with this deployment's key"));
        let bytes = sealed.strip_prefix(SEALED_PREFIX).and_then(|b| B64.decode(b).ok()).ok_or_else(bad)?;
        if bytes.len() < NONCE_LEN {
            return Err(bad());
        }
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut data = data.to_vec();
        let clear = self.key.open_in_place(nonce, Aad::from(name.as_bytes()), &mut data).map_err(|_| bad())?;
        serde_json::from_slice(clear).map_err(|_| bad())
    }

    /// Seals every personal trait of `traits` still in clear.
    pub fn seal_traits<'a>(
        &self,
        traits: impl IntoIterator<Item = (&'a String, &'a mut TraitValue)>,
    ) -> Result<(), Error> {
        for (name, t) in traits {
            if t.sealed.is_none() && self.is_personal(name) {
                t.sealed = Some(self.seal(name, &t.value)?);
                t.value = Value::Null;
            }
        }
        Ok(())
    }

    /// Opens every sealed trait of `traits`.
    pub fn open_traits<'a>(
        &self,
        traits: impl IntoIterator<Item = (&'a String, &'a mut TraitValue)>,
    ) -> Result<(), Error> {
        for (name, t) in traits {
            if let Some(sealed) = t.sealed.take() {
                t.value = self.open(name, &sealed)?;
            }
        }
        Ok(())
    }
}

/// Opens sealed traits where a vault is at hand; without one a sealed value cannot be read (an error, never a
/// silent `null`).
pub fn open_traits<'a>(
    vault: Option<&Vault>,
    traits: impl IntoIterator<Item = (&'a String, &'a mut TraitValue)>,
) -> Result<(), Error> {
    match vault {
        Some(vault) => vault.open_traits(traits),
        None => match traits.into_iter().find(|(_, t)| t.sealed.is_some()) {
            Some((name, _)) => Err(Error::Corrupt(format!(
                "trait {name} is sealed but {TRAITS_DATA_KEY} is missing: the state and its key must be kept together"
            ))),
            None => Ok(()),
        },
    }
}

/// The vault of the state in `store`: `None` where no data key was ever made (personal traits are then stored
/// in clear: tests and benchmarks that never call [`ensure`]), an error where the key exists but cannot be
/// unwrapped here (a missing master key file or KMS permission), so nothing is ever written in clear beside
/// sealed values.
pub async fn for_store<S: ObjectStore>(store: &S) -> Result<Option<Arc<Vault>>, Error> {
    let Some(object) = store.get(TRAITS_DATA_KEY).await? else { return Ok(None) };
    let rules: ProfileRules = crate::config::read(store, keys::CONFIG_PROFILES).await?.unwrap_or_default();
    opened(&object.body, rules).await.map(Some)
}

/// [`for_store`] with the personal traits of `rules` (from a configuration already loaded): reads only the key.
pub async fn with_rules<S: ObjectStore>(store: &S, rules: &ProfileRules) -> Result<Option<Arc<Vault>>, Error> {
    let Some(object) = store.get(TRAITS_DATA_KEY).await? else { return Ok(None) };
    opened(&object.body, rules.clone()).await.map(Some)
}

/// The vault of the stored key `body`, for `rules`.
async fn opened(body: &[u8], rules: ProfileRules) -> Result<Arc<Vault>, Error> {
    let stored: StoredKey =
        serde_json::from_slice(body).map_err(|e| Error::Corrupt(format!("{TRAITS_DATA_KEY}: {e}")))?;
    let key = data_key(&stored, None).await?;
    Ok(Arc::new(Vault::new(&key, rules)?))
}

/// The data key of `stored`: unwrapped with `source` when given (which checks that `source` is its wrapping key),
/// else from this process's cache or with what `stored` records.
async fn data_key(stored: &StoredKey, source: Option<&KeySource>) -> Result<[u8; 32], Error> {
    if source.is_none()
        && let Some(key) = unwrapped().lock().unwrap_or_else(|e| e.into_inner()).get(&stored.wrapped)
    {
        return Ok(*key);
    }
    let wrapped = B64
        .decode(&stored.wrapped)
        .map_err(|e| Error::Corrupt(format!("{TRAITS_DATA_KEY}: the wrapped key is not base64url: {e}")))?;
    let key = wrap::unwrap(&stored.wrap, &wrapped, source).await?;
    unwrapped().lock().unwrap_or_else(|e| e.into_inner()).insert(stored.wrapped.clone(), key);
    Ok(key)
}

/// Makes the deployment's data key with `source` if there is none yet (create-only, so two processes starting
/// at once end with one key), and checks that an existing one opens with `source`. A local master key file
/// that moved with its folder is recorded at its new path.
pub async fn ensure<S: ObjectStore>(store: &S, source: &KeySource) -> Result<(), Error> {
    for _ in 0..3 {
        if let Some(object) = store.get(keys::TRAITS_DATA_KEY).await? {
            let stored: StoredKey =
                serde_json::from_slice(&object.body).map_err(|e| Error::Corrupt(format!("{TRAITS_DATA_KEY}: {e}")))?;
            data_key(&stored, Some(source)).await?;
            let Some(moved) = wrap::moved(&stored.wrap, source) else { return Ok(()) };
            let body = serde_json::to_vec_pretty(&StoredKey { wrap: moved, ..stored }).map_err(Error::encoding)?;
            let options = PutOptions { condition: Condition::IfMatch(object.etag), ..PutOptions::json() };
            match store.put(keys::TRAITS_DATA_KEY, body, options).await {
                Ok(_) => return Ok(()),
                Err(StoreError::PreconditionFailed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let (wrap, key, wrapped) = wrap::generate(source).await?;
        let stored = StoredKey { version: 1, wrap, wrapped: B64.encode(wrapped) };
        let body = serde_json::to_vec_pretty(&stored).map_err(Error::encoding)?;
        let options = PutOptions { condition: Condition::IfNoneMatch, ..PutOptions::json() };
        match store.put(keys::TRAITS_DATA_KEY, body, options).await {
            Ok(_) => {
                unwrapped().lock().unwrap_or_else(|e| e.into_inner()).insert(stored.wrapped, key);
                return Ok(());
            }
            Err(StoreError::PreconditionFailed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Corrupt(format!("{TRAITS_DATA_KEY} could not be read or made")))
}

/// A personal value as a reader without `pii:read` sees it: its first character and `***` (an email keeps its
/// domain: `j***@example.com`), `***` for anything else.
pub fn mask(value: &Value) -> Value {
    let Value::String(text) = value else {
        return if value.is_null() { Value::Null } else { Value::String("***".into()) };
    };
    let first: String = text.chars().take(1).collect();
    Value::String(match text.rsplit_once('@') {
        Some((_, domain)) if !first.is_empty() => format!("{first}***@{domain}"),
        _ if text.chars().count() > 1 => format!("{first}***"),
        _ => "***".to_string(),
    })
}

#[cfg(test)]
mod tests;
