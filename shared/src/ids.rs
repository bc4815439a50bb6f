//! Identifiers the core mints: message ids (UUID v4 form) and request ids (ULIDs).
//!
//! Randomness is an argument. Shells draw a 32-byte seed from the platform's CSPRNG once per request;
//! [`Entropy`] stretches it with SHA-256 in counter mode, so ids are unpredictable yet the core stays pure and
//! tests are repeatable.

use sha2::{Digest, Sha256};

use crate::time::UtcTime;

/// A deterministic stream of random bytes from a seed (SHA-256 in counter mode).
#[derive(Debug, Clone)]
pub struct Entropy {
    seed: [u8; 32],
    counter: u64,
}

impl Entropy {
    /// A stream from a seed. Shells pass 32 bytes from the operating system's CSPRNG.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { seed, counter: 0 }
    }

    /// The next 16 random bytes.
    pub fn next_16(&mut self) -> [u8; 16] {
        let mut hasher = Sha256::new();
        hasher.update(self.seed);
        hasher.update(self.counter.to_le_bytes());
        self.counter += 1;
        let digest = hasher.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    /// A random UUID (version 4, RFC 9562), lower-case hyphenated.
    pub fn uuid_v4(&mut self) -> String {
        let mut b = self.next_16();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex = hex(&b);
        format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
    }

    /// A ULID for `now`: sorts by time, so object keys list in arrival order.
    pub fn ulid(&mut self, now: UtcTime) -> ulid::Ulid {
        let random = u128::from_le_bytes(self.next_16());
        ulid::Ulid::from_parts(now.unix_millis().max(0) as u64, random)
    }
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    out
}

/// SHA-256 of `text`, lower-case hex: the stored form of write keys and PII identifiers.
pub fn sha256_hex(text: &str) -> String {
    sha256_hex_bytes(text.as_bytes())
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_version_and_variant() {
        let mut e = Entropy::from_seed([7; 32]);
        let id = e.uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, e.uuid_v4(), "each call draws new bytes");
    }

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let a = Entropy::from_seed([1; 32]).uuid_v4();
        assert_eq!(a, Entropy::from_seed([1; 32]).uuid_v4());
        assert_ne!(a, Entropy::from_seed([2; 32]).uuid_v4());
    }

    #[test]
    fn ulid_carries_the_time() {
        let now = UtcTime::from_unix_millis(1_764_336_803_123).unwrap();
        let id = Entropy::from_seed([3; 32]).ulid(now);
        assert_eq!(id.timestamp_ms(), 1_764_336_803_123);
        assert_eq!(id.to_string().len(), 26);
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
