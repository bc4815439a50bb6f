//! Wrapping the data key: a local master key file, or AWS KMS.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_sdk_kms::error::DisplayErrorContext;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use serde::{Deserialize, Serialize};
use shared::storage::keys;

use super::KeySource;
use crate::Error;
use crate::storage::aws::{AwsAccess, optional_env, timeouts};

/// Bound into every wrapping (AES-GCM associated data; KMS encryption context), so a wrapped key cannot be
/// passed off as anything else.
const PURPOSE: &str = "cdp-personal-traits";

/// How the stored data key is wrapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub(super) enum Wrap {
    /// By a local master key file; `fingerprint` names the key (a hash, not the key).
    #[serde(rename_all = "camelCase")]
    File { path: String, fingerprint: String },
    /// By a KMS key.
    #[serde(rename_all = "camelCase")]
    Kms { key_id: String },
}

/// A KMS key and how to reach it.
#[derive(Debug, Clone)]
pub struct KmsSettings {
    /// Key id or ARN.
    pub key_id: String,
    /// Custom endpoint (a KMS-compatible server on 127.0.0.1 in tests); `None` for AWS.
    pub endpoint: Option<String>,
    /// Region and credentials.
    pub access: AwsAccess,
}

impl KmsSettings {
    /// `key_id` with the optional `AWS_ENDPOINT_URL_KMS` and [`AwsAccess::from_env`].
    pub fn from_env(key_id: String) -> Result<Self, shared::Invalid> {
        Ok(Self { key_id, endpoint: optional_env("AWS_ENDPOINT_URL_KMS"), access: AwsAccess::from_env()? })
    }

    fn client(&self) -> aws_sdk_kms::Client {
        let mut config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.access.region.clone()))
            .credentials_provider(self.access.credentials())
            .timeout_config(timeouts());
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint);
        }
        aws_sdk_kms::Client::from_conf(config.build())
    }
}

fn kms_error(what: &str, error: impl std::error::Error) -> Error {
    Error::Store(crate::storage::StoreError::Unavailable(format!("KMS {what}: {}", DisplayErrorContext(error))))
}

/// A new data key and its wrapped form.
pub(super) async fn generate(source: &KeySource) -> Result<(Wrap, [u8; 32], Vec<u8>), Error> {
    match source {
        KeySource::File(path) => {
            let master = master_key(path, true)?;
            let key = crate::config::random_seed()?;
            let wrapped = seal_with(&master, &key)?;
            let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            Ok((Wrap::File { path: path.display().to_string(), fingerprint: fingerprint(&master) }, key, wrapped))
        }
        KeySource::Kms(settings) => {
            let output = settings
                .client()
                .generate_data_key()
                .key_id(&settings.key_id)
                .key_spec(DataKeySpec::Aes256)
                .encryption_context("purpose", PURPOSE)
                .send()
                .await
                .map_err(|e| kms_error("GenerateDataKey", e))?;
            let plain = output.plaintext().map(|b| b.as_ref().to_vec()).unwrap_or_default();
            let key: [u8; 32] = plain
                .try_into()
                .map_err(|_| Error::Corrupt("KMS GenerateDataKey answered a key that is not 32 bytes".into()))?;
            let wrapped = output.ciphertext_blob().map(|b| b.as_ref().to_vec()).unwrap_or_default();
            // Recorded by ARN where KMS gives it, so any function can unwrap it whatever alias it was given.
            let key_id = output.key_id().unwrap_or(&settings.key_id).to_string();
            Ok((Wrap::Kms { key_id }, key, wrapped))
        }
    }
}

/// The data key inside `wrapped`, with `source` where given (else the recorded path, or KMS with the
/// environment's credentials).
pub(super) async fn unwrap(wrap: &Wrap, wrapped: &[u8], source: Option<&KeySource>) -> Result<[u8; 32], Error> {
    match (wrap, source) {
        (Wrap::File { path, fingerprint: expected }, source) => {
            let path = match source {
                Some(KeySource::File(given)) => given.clone(),
                _ => PathBuf::from(path),
            };
            let master = master_key(&path, false)?;
            if &fingerprint(&master) != expected {
                return Err(Error::Corrupt(format!(
                    "{}: this master key is not the one that wrapped the data key in {} (fingerprint {expected})",
                    path.display(),
                    keys::TRAITS_DATA_KEY
                )));
            }
            open_with(&master, wrapped)
        }
        (Wrap::Kms { key_id }, source) => {
            let settings = match source {
                Some(KeySource::Kms(settings)) => settings.clone(),
                Some(KeySource::File(path)) => {
                    return Err(Error::Corrupt(format!(
                        "the data key in {} is wrapped by KMS key {key_id}, not by the master key file {}",
                        keys::TRAITS_DATA_KEY,
                        path.display()
                    )));
                }
                None => KmsSettings::from_env(key_id.clone()).map_err(|e| Error::Config(shared::Error::Config(e.0)))?,
            };
            let output = settings
                .client()
                .decrypt()
                .key_id(key_id)
                .ciphertext_blob(Blob::new(wrapped.to_vec()))
                .encryption_context("purpose", PURPOSE)
                .send()
                .await
                .map_err(|e| kms_error("Decrypt", e))?;
            let plain = output.plaintext().map(|b| b.as_ref().to_vec()).unwrap_or_default();
            plain.try_into().map_err(|_| Error::Corrupt("KMS Decrypt answered a key that is not 32 bytes".into()))
        }
    }
}

/// The wrap to record when `source` is the same master key at another path (a folder moved); `None` otherwise.
pub(super) fn moved(wrap: &Wrap, source: &KeySource) -> Option<Wrap> {
    let (Wrap::File { path, fingerprint }, KeySource::File(given)) = (wrap, source) else { return None };
    let given = std::path::absolute(given).ok()?.display().to_string();
    (&given != path).then(|| Wrap::File { path: given, fingerprint: fingerprint.clone() })
}

fn fingerprint(master: &[u8; 32]) -> String {
    let mut tagged = b"cdp master key fingerprint\n".to_vec();
    tagged.extend_from_slice(master);
    shared::ids::sha256_hex_bytes(&tagged)[..16].to_string()
}

/// Reads the master key at `path` (64 hex characters), making it (0600) when `create` and it is missing. A key
/// others may read is refused, as ssh refuses such a private key.
fn master_key(path: &Path, create: bool) -> Result<[u8; 32], Error> {
    let unreadable = |e: std::io::Error| Error::Corrupt(format!("master key {}: {e}", path.display()));
    if create && !path.exists() {
        let key = crate::config::random_seed()?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => std::io::Write::write_all(&mut file, format!("{hex}\n").as_bytes()).map_err(unreadable)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(unreadable(e)),
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(unreadable)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::Corrupt(format!(
                "master key {}: others may read it (mode {:o}); make it 0600",
                path.display(),
                mode & 0o777
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    let text = text.trim();
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<_>>()
        .unwrap_or_default();
    bytes.try_into().map_err(|_| {
        Error::Config(shared::Error::Config(format!("master key {}: not 64 hexadecimal characters", path.display())))
    })
}

fn cipher(master: &[u8; 32]) -> Result<LessSafeKey, Error> {
    let key = UnboundKey::new(&AES_256_GCM, master).map_err(|_| Error::Internal("master key rejected".into()))?;
    Ok(LessSafeKey::new(key))
}

fn seal_with(master: &[u8; 32], key: &[u8; 32]) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| Error::Machine(format!("no randomness for a nonce: {e}")))?;
    let mut data = key.to_vec();
    cipher(master)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(PURPOSE.as_bytes()), &mut data)
        .map_err(|_| Error::Internal("wrapping the data key".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Ok(out)
}

fn open_with(master: &[u8; 32], wrapped: &[u8]) -> Result<[u8; 32], Error> {
    let bad =
        || Error::Corrupt(format!("{}: the wrapped data key does not open with the master key", keys::TRAITS_DATA_KEY));
    if wrapped.len() < NONCE_LEN {
        return Err(bad());
    }
    let (nonce, data) = wrapped.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
    let mut data = data.to_vec();
    let key = cipher(master)?.open_in_place(nonce, Aad::from(PURPOSE.as_bytes()), &mut data).map_err(|_| bad())?;
    key.try_into().map_err(|_| bad())
}
