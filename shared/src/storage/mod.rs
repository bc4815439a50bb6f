//! The storage contract between components: object key layout and the gzip NDJSON codec.

mod codec;
pub mod keys;

pub use codec::{decode_ndjson_gz, encode_ndjson_gz, gunzip, gzip};
pub use keys::{CONFIG_SOURCES, ObjectKind, object_key, object_named_at, raw_hour_prefix};
