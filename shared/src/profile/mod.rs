//! Unified profiles: traits merged by policy, first/last seen, counters and the running aggregates that
//! tagging reads. Every update is commutative (last-write-wins by event time, first-write by event time,
//! source priority then event time; sums, minima, maxima, counts), so the result does not depend on the order
//! events arrive in — only on which events arrived (ingest drops duplicates by messageId).

mod clean;
mod policy;
mod record;

pub use crate::time::iso_date;
pub use clean::{Clean, Cleaned, CleaningRules, e164};
pub use policy::{PII_TRAITS, ProfileRules, TraitPolicy, is_pii_trait};
pub use record::{Aggregate, ConsentChoice, EventStats, Membership, Profile, TraitValue};
