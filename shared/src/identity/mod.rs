//! ID-Mapping: every identifier a person uses resolves to one profile, and two people are never merged into
//! one when a rule forbids it.
//!
//! - [`rules`]: identifier types, priorities, per-profile limits, blocked values; extraction from events.
//! - [`graph`]: the identity graph — linking, merging (the older profile survives, the absorbed id redirects),
//!   refusals, the audit trail, and unlinking with splits.

mod graph;
mod rules;

pub use graph::{AuditEntry, AuditKind, IdentityGraph, Linked, ProfileId, ProfileNode};
pub use rules::{IdKey, IdentifierType, IdentityRules};
