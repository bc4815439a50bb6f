//! Standard Webhooks signing (<https://www.standardwebhooks.com>): `webhook-signature: v1,<base64 of
//! HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}")>` over the exact bytes sent. Several
//! signatures, space-separated, while a secret is being rotated.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The fewest random bytes a signing secret may hold.
pub const SECRET_MIN_BYTES: usize = 24;
/// How far a receiver lets `webhook-timestamp` be from its clock (the spec's recommendation).
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

/// A signing secret, `whsec_<base64 of at least 24 random bytes>`. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    text: String,
    key: Vec<u8>,
}

impl Secret {
    /// Parses `whsec_<base64>`, refusing other forms and keys shorter than [`SECRET_MIN_BYTES`].
    pub fn parse(text: &str) -> Result<Self, crate::Invalid> {
        let Some(encoded) = text.strip_prefix(SECRET_PREFIX) else {
            return Err(format!("a signing secret starts with `{SECRET_PREFIX}`").into());
        };
        let key = STANDARD.decode(encoded).map_err(|_| "the part after `whsec_` is not base64".to_string())?;
        if key.len() < SECRET_MIN_BYTES {
            return Err(format!("the secret holds {} bytes; at least {SECRET_MIN_BYTES} are needed", key.len()).into());
        }
        Ok(Self { text: text.to_string(), key })
    }

    /// A new secret from `bytes` random bytes (callers pass at least [`SECRET_MIN_BYTES`]).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self { text: format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)), key: bytes.to_vec() }
    }

    /// The `whsec_…` text, for storing the configuration. Never log it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_…)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_…")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Secret::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The `webhook-signature` header: one signature per secret, space-separated (during a rotation the partner
/// accepts the message with either secret).
pub fn signature_header<'s>(
    secrets: impl IntoIterator<Item = &'s Secret>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets.into_iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// Why a received message does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The timestamp is not a number of seconds.
    #[error("webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    /// The timestamp is further than the tolerance from the receiver's clock.
    #[error("webhook-timestamp is {0} s away from now (tolerance {TOLERANCE_SECONDS} s)")]
    Stale(i64),
    /// No `v1` signature matches.
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies a received message as a partner would: the timestamp within the tolerance of `now` (seconds), and
/// one of the header's `v1` signatures made with `secret` over exactly `body` (compared in constant time).
pub fn verify(
    secret: &Secret,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let at: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if (now - at).abs() > TOLERANCE_SECONDS {
        return Err(VerifyError::Stale(now - at));
    }
    let expected = secret.mac(id, at, body);
    let matches = signatures.split(' ').filter_map(|s| s.strip_prefix("v1,")).any(|b64| {
        let Ok(given) = STANDARD.decode(b64) else { return false };
        given.len() == expected.len() && given.iter().zip(&expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if matches { Ok(()) } else { Err(VerifyError::NoMatch) }
}
