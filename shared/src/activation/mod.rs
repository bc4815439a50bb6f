//! Activation: what partners receive and how it is signed, retried and kept safe.
//!
//! - [`destination`]: destination definitions (URL, secrets, subscriptions, fields, batching, limits) and their
//!   checks.
//! - [`payload`]: the versioned webhook payload and the profile fields a destination may receive.
//! - [`signing`]: Standard Webhooks signatures over the exact bytes sent, with secret rotation.
//! - [`retry`]: the verdict after an attempt (retry on the spec's schedule, dead letter, disable).
//! - [`produce`]: the items each destination receives when a profile changes or an event arrives.
//! - [`feedback`]: delivery outcomes and partners' results as events tied to the profile.
//! - [`lane`]: per-profile ordering and batching of a destination's messages.
//! - [`ssrf`]: which addresses a webhook may reach.
//!
//! Everything here decides; the shells send (functions::activation).

pub mod destination;
pub mod feedback;
pub mod lane;
pub mod payload;
pub mod produce;
pub mod retry;
pub mod signing;
pub mod ssrf;
#[cfg(test)]
mod tests;

pub use destination::{
    Batching, DESTINATION_SECRETS, DestinationDefinition, DestinationSecrets, DestinationSet, Fields, PreviousSecret,
    SecretEntry, Subscriptions, Url,
};
pub use lane::{InFlight, LANES, Lane, Message, Settled, lane_of};
pub use payload::{Detail, Envelope, Item, ProfileBlock};
pub use produce::ProfileNow;
pub use retry::{Outcome, RetryPolicy, Verdict};
pub use signing::Secret;
pub use ssrf::{Reach, refused};

/// Audiences and destinations, checked: what ingest and the full recompute produce deliveries with.
#[derive(Debug, Clone)]
pub struct Activation {
    /// The computed audiences.
    pub audiences: crate::audiences::AudienceSet,
    /// Audience display names, for payloads.
    pub names: std::collections::BTreeMap<String, String>,
    /// The destinations.
    pub destinations: DestinationSet,
}
