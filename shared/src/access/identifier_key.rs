//! The deployment's identifier key: where a person's identifier must outlive their data (the audit log,
//! privacy requests, the suppression list), it appears as `hmac:<HMAC-SHA256(key, graph key)>`. An unkeyed
//! hash of `user_id:…` or an email is recovered by hashing likely values; without the key, it is not.
//!
//! The key is 32 random bytes, stored hex-encoded at [`IDENTIFIER_KEY_OBJECT`]: in the cloud an object of the
//! bucket, encrypted with the deployment's KMS key and readable only by the roles that hash identifiers (the
//! Terraform module creates it); locally a `0600` file of the data folder, made on first use. Lists written
//! before the key existed hold `sha256:` hashes, which are still recognized ([`legacy_hashed_identifier`]).

use std::fmt;

use hmac::{KeyInit, Mac};

use crate::ids::sha256_hex;

/// Where the key is stored.
pub const IDENTIFIER_KEY_OBJECT: &str = "keys/v1/identifiers.key";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentifierKey([u8; 32]);

impl fmt::Debug for IdentifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentifierKey(..)")
    }
}

impl IdentifierKey {
    /// A key from 32 bytes of a CSPRNG.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads the stored form: 64 hex digits (surrounding whitespace ignored).
    pub fn from_stored(text: &[u8]) -> Result<Self, crate::Error> {
        let text = std::str::from_utf8(text).unwrap_or_default().trim();
        let bad = || crate::Error::Config(format!("{IDENTIFIER_KEY_OBJECT} must hold 64 hex digits"));
        if text.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }

    /// The stored form.
    pub fn to_stored(&self) -> Vec<u8> {
        let mut text: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        text.push('\n');
        text.into_bytes()
    }

    /// How `key` (a graph key, `type:value`) appears where it outlives the person's data:
    /// `hmac:<hex of HMAC-SHA256>`.
    pub fn hash(&self, key: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
        mac.update(key.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(5 + 64);
        out.push_str("hmac:");
        for b in digest {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// The unkeyed form older lists hold: `sha256:<hex of the graph key>`. Only recognized, never written.
pub fn legacy_hashed_identifier(key: &str) -> String {
    format!("sha256:{}", sha256_hex(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_hashes_differ_by_key_and_cannot_be_made_without_it() {
        let a = IdentifierKey::from_bytes([7; 32]);
        let b = IdentifierKey::from_bytes([8; 32]);
        let hash = a.hash("user_id:u1");
        assert!(hash.starts_with("hmac:") && hash.len() == 5 + 64, "{hash}");
        assert_eq!(hash, a.hash("user_id:u1"), "stable");
        assert_ne!(hash, b.hash("user_id:u1"), "another deployment's key gives another hash");
        assert_ne!(hash, legacy_hashed_identifier("user_id:u1"));
        assert!(!hash.contains(&sha256_hex("user_id:u1")), "not the guessable unkeyed hash");
        let stored = a.to_stored();
        assert_eq!(IdentifierKey::from_stored(&stored).unwrap(), a);
        assert!(IdentifierKey::from_stored(b"short").is_err());
        assert_eq!(format!("{a:?}"), "IdentifierKey(..)", "never printed");
    }
}
