//! Activation: delivering audience changes, triggers and profile changes to partners' webhooks.
//!
//! - [`http`]: one signed request to a partner, SSRF-safe (every resolved address checked), with a deadline.
//! - [`outbox`]: where producers put messages, staged before their state commit and withdrawn without it.
//! - [`stored`]: dead letters, replay and forget requests, destinations disabled, the attempt records.
//! - [`dispatch`]: per-destination lanes (order per profile, batching, rate limits), retries on the
//!   Standard Webhooks schedule, dead letters and replay, the delivery log.
//! - [`feedback`]: the inbound endpoint where partners report results, as events tied to the profile.
//! - [`lambda`]: the activation Lambda's invocation (SQS notifications of outbox objects, or a schedule).
//! - [`secrets`]: the destinations' signing secrets, kept apart from their definitions.

pub mod dispatch;
mod engine;
pub mod feedback;
pub mod http;
pub mod lambda;
mod lane;
pub mod outbox;
mod records;
pub mod secrets;
pub mod stored;

pub use dispatch::Dispatcher;
pub use engine::{Observer, Settings};
pub use outbox::enqueue;
pub use stored::{AttemptRecord, DeadLetter};
