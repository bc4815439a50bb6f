//! Tags: definitions (statistical, rule, buckets) with their lifecycle, checked at definition time, and their
//! reference evaluation for one profile.
//!
//! Semantics, shared by every way of computing tags:
//! - a statistical tag aggregates the profile's events that pass its filter (event names, types, property
//!   conditions) within its window; the window ends now and an event exactly at its start is inside;
//!   events are ordered by time, then messageId (for first, last, ties); sums are exact, then rounded once,
//!   so they do not depend on the order events arrive in;
//!   events without the aggregated property are skipped (a sum of nothing is 0; an average, minimum or
//!   maximum of nothing has no value);
//! - a rule is true or false; a condition on an absent or null field is false, except `ne` (true) and
//!   `exists: false` (true); numbers compare by value (1 equals 1.0); comparing a number with a string is
//!   false (and an error at definition time where the field's kind is known);
//! - a buckets tag labels a number by the first bucket with `min ≤ x < max`, else `otherwise`; no number, no
//!   value;
//! - tags read other tags: they are evaluated in dependency order, and cycles are definition errors.

mod check;
#[cfg(feature = "columnar")]
mod columnar;
#[cfg(all(test, feature = "columnar"))]
mod columnar_tests;
mod conditions;
mod definition;
mod eval;
mod names;
#[cfg(feature = "columnar")]
mod predict;
#[cfg(all(test, feature = "columnar"))]
mod predict_tests;
#[cfg(feature = "columnar")]
mod products;
mod state;
#[cfg(test)]
mod state_tests;
mod summary;
#[cfg(test)]
mod tests;

pub use check::TagSet;
#[cfg(feature = "columnar")]
pub use columnar::{
    Column, ColumnarError, JSON_METADATA, NO_VALUE, TagColumns, event_table, profile_table, traits_of, value_array,
};
pub use conditions::EventView;
pub use definition::{
    AggregateOp, Aggregation, Bucket, Catalog, CompareOp, Condition, DefinitionError, EventFilter, Expr, Lifecycle,
    Operand, RfmOutput, TagDefinition, TagKind, UNIQUE_LIST_MAX, ValueKind, Window,
};
pub use names::{Expected, closest};
#[cfg(feature = "columnar")]
pub use predict::{Evaluation, FEATURES, FeatureRow, LogisticModel, Model, Population, RfmModel};
#[cfg(feature = "columnar")]
pub use products::{ProductConfig, ProductTag, ProductTags};
pub use state::{ProfileTagState, StatState};
pub use summary::{Seen, Stamp, Stamped, Summary};

pub(crate) use check::{Checker, TagsById};
pub(crate) use conditions::{Patterns, compare, operand, passes};
pub(crate) use definition::single_key;
pub(crate) use eval::statistical;
