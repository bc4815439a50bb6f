//! The collect pipeline: request bytes + source config + clock + randomness in, decisions out.
//!
//! `route` says what a request is; `collect` authenticates, checks limits, parses, validates, normalizes and
//! enriches, and returns either a request-level rejection or a [`Batch`] of accepted and failed events that the
//! shell stores before it answers with [`Batch::answer`].

mod answer;
mod auth;
mod encoding;
mod enrich;
mod normalize;
mod pipeline;
pub mod pixel;
pub mod plan;
mod request;
mod route;
pub mod webhook;
mod wire;

pub use answer::Answer;
pub use auth::basic_auth_user;
pub use enrich::{anonymize_ip, campaign_from_url, normalize_email, normalize_phone};
pub use pipeline::{
    Batch, Collected, MAX_BATCH_EVENTS, MAX_EVENT_BYTES, MAX_REQUEST_BYTES, collect, collect_events, preflight,
};
pub use request::{CollectRequest, Endpoint};
pub use route::{Route, route};
