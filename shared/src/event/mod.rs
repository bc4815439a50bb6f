//! The event model: the Segment spec's calls as they arrive, and the canonical event every later stage reads.

mod canonical;
mod failed;
mod kind;

pub use canonical::{CanonicalEvent, Enrichment, Geo, Identifier, UserAgentInfo, dedup_key, key_of, message_id_of};
pub use failed::{FailedEvent, FailureCode};
pub use kind::EventType;
