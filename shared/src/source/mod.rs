//! Sources: who may send events, with which write key, from which origins, with which settings.
//!
//! Write keys are public (they sit in web pages) but are still stored only as SHA-256 hashes, so a leaked
//! configuration file cannot be replayed as a key list. The key itself is shown once, when it is made.

mod config;
mod plan;
mod secrets;

pub use config::{SourceConfig, SourceKind, SourceSettings, Sources, new_source, slug};
pub use plan::{
    Format, Mode, Schema, TrackingPlan, Type, Types, Violation, json_type, violations_json, violations_text,
};
pub use secrets::SourceSecrets;
