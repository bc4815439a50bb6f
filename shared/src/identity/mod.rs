//! ID-Mapping: every identifier a person uses resolves to one profile, and two people are never merged into
//! one when a rule forbids it.
//!
//! - [`rules`]: identifier types, priorities, per-profile limits, blocked values; extraction from events.
//! - [`batch`]: connected components of a whole graph at once (backfills, rebuilds, benchmarks).
//! - [`graph`]: the identity graph — linking, merging (the older profile survives, the absorbed id redirects),
//!   refusals, the audit trail, and unlinking with splits.

pub mod batch;
mod graph;
mod rules;

pub use graph::{AuditEntry, AuditKind, IdentityGraph, Linked, ProfileId, ProfileNode};
pub use rules::{IdKey, IdentifierType, IdentityRules};
