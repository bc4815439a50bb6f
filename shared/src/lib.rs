//! The pure domain core of the CDP.
//!
//! Everything here is a decision, never an action: no I/O, no clock reads, no threads. Time, randomness and
//! configuration come in as arguments, so the same code runs inside the Cloudflare Worker (wasm32), the AWS
//! Lambda functions and the local `cdp` runner, and is tested without any of them.
//!
//! - [`event`]: the Segment-compatible wire model and the canonical event every later stage reads.
//! - [`collect`]: the collect pipeline, from request bytes to accepted and failed events and an HTTP answer.
//! - [`identity`]: ID-Mapping — the identity graph and its rules.
//! - [`import`]: file imports — what each row of a CSV, NDJSON or Parquet file becomes.
//! - [`profile`]: unified profiles — traits by policy, counters, running aggregates.
//! - [`source`]: sources, their write keys (stored hashed) and settings.
//! - [`tags`]: tag definitions, their check, and their evaluation — for one profile, incrementally, and by
//!   columns for many (feature `columnar`), with the predictive and product tags.
//! - [`audiences`]: audience definitions, membership, snapshots and diffs, insight.
//! - [`catalog`]: the data dictionary — events, properties and traits seen, and the catalog definitions are
//!   checked against.
//! - [`activation`]: destinations, what partners receive, lanes, signing, retries, SSRF rules.
//! - [`apply`]: a batch of events applied to the graph and profiles it touches, with what partners receive.
//! - [`storage`]: the object key layout (every key, in one place) and the gzip NDJSON codec.
//! - [`access`]: API keys with scopes (stored hashed), the audit log's records, the suppression list.
//! - [`snippet`]: the browser library and the snippet that loads it.
//! - [`error`]: the core's errors, and [`Invalid`] for what is wrong with something given.
//! - [`ids`]: ids, hashes and seeded randomness; [`time`]: instants in UTC.
//! - [`sample`]: synthetic, realistic traffic for benchmarks and load tests.

pub mod access;
pub mod activation;
pub mod apply;
pub mod audiences;
pub mod catalog;
pub mod collect;
pub mod error;
pub mod event;
pub mod identity;
pub mod ids;
pub mod import;
pub mod profile;
pub mod sample;
pub mod snippet;
pub mod source;
pub mod storage;
pub mod tags;
pub mod time;

pub use error::{Error, Invalid};
