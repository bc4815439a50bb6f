//! Access to the management and profile API: API keys with scopes, the audit log's records, and the
//! suppression list of people whose events are not kept.
//!
//! An API key is `cdp_sk_<id>_<secret>`: a public 16-hex-digit id that finds the key's record, and 256 bits of
//! secret. Only the SHA-256 of the whole key is stored; a presented key is hashed and compared with the stored
//! hash in constant time. Write keys (the sources' public keys, in web pages) have another shape and are never
//! API keys.

mod audit;
mod identifier_key;
mod keys;
mod suppression;

pub use audit::{Actor, AuditRecord, audit_key};
pub use identifier_key::{IDENTIFIER_KEY_OBJECT, IdentifierKey, legacy_hashed_identifier};
pub use keys::{ApiKey, ApiKeys, AuthError, NewKey, Scope, looks_like_write_key};
pub use suppression::{DROPPED_PREFIX, SUPPRESSED_KEY, Suppression, SuppressionCheck, dropped_record};

#[cfg(test)]
mod tests;
