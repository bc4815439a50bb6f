//! Where things live in the bucket (or the local data folder). Every component uses these functions, so the
//! layout is written down once.

use crate::time::UtcTime;

/// The sources file, read by the collectors.
pub const CONFIG_SOURCES: &str = "config/sources.json";
/// The webhook sources' signing secrets, kept apart from the sources file.
pub const SOURCE_SECRETS: &str = "secrets/v1/sources.json";
/// Identifier types and linking rules.
pub const CONFIG_IDENTITY: &str = "config/identity.json";
/// Trait policies, aggregated properties and the operator's personal traits.
pub const CONFIG_PROFILES: &str = "config/profiles.json";
/// Tag definitions (an array).
pub const CONFIG_TAGS: &str = "config/tags.json";
/// Audience definitions (an array).
pub const CONFIG_AUDIENCES: &str = "config/audiences.json";
/// Destination definitions (an array; their signing secrets are kept apart).
pub const CONFIG_DESTINATIONS: &str = "config/destinations.json";
/// How product tags are read from events.
pub const CONFIG_PRODUCTS: &str = "config/products.json";

/// Every profile's tag values of the latest full recompute: `{"computedAt": ms, "profiles": {id: {tag: value}}}`.
pub const TAG_VALUES: &str = "tags/v1/values.json.gz";
/// The tag versions whose incremental state is complete: `{tag id: version}`.
pub const TAGS_READY: &str = "tags/v1/ready.json";
/// The latest full recompute's report.
pub const TAGS_REPORT: &str = "tags/v1/report.json";
/// Saved insights' kept results (`<insight>/<definition>.json`): any may hold profile ids, so an erasure removes
/// them all (they are computed again when next run).
pub const ANALYSIS_RESULTS: &str = "analysis/v1/results/";
/// Product tags: `{"computedAt": ms, "products": {product id: tag}}`.
pub const PRODUCT_TAGS: &str = "products/v1/tags.json.gz";
/// The data key that seals personal traits, wrapped.
pub const TRAITS_DATA_KEY: &str = "keys/v1/traits.json";

/// The data dictionary, folded: `{"dictionary": …, "folded": {pending key: ms}}`, gzipped JSON.
pub const CATALOG: &str = "catalog/v1/dictionary.json.gz";
/// What ingest observed of each raw object, until folded into [`CATALOG`].
pub const CATALOG_PENDING: &str = "catalog/v1/pending/";

/// `catalog/v1/pending/<raw key, / as ~>.json`: what ingest observed of the raw object at `raw_key`.
pub fn catalog_pending(raw_key: &str) -> String {
    format!("{CATALOG_PENDING}{}.json", raw_key.replace('/', "~"))
}

/// Files put here (`imports/<source id>/<file>`) are imported as events of the source by the import function,
/// through the mapping at `imports/<source id>/mapping.json`.
pub const IMPORTS: &str = "imports/";

/// `ingest/imports/<source>/<file sha256 16>-<mapping sha256 8>.json`: which chunks of a file the import
/// function stored, so a run that stops resumes.
pub fn import_checkpoint(source: &str, file_sha256: &str, mapping_sha256: &str) -> String {
    let file = &file_sha256[..file_sha256.len().min(16)];
    let mapping = &mapping_sha256[..mapping_sha256.len().min(8)];
    format!("ingest/imports/{source}/{file}-{mapping}.json")
}

/// `sync/v1/<source>/<name>.json`: where a database sync of `source` stopped (its cursor), so the next run
/// reads only newer rows.
pub fn sync_cursor(source: &str, name: &str) -> String {
    format!("sync/v1/{source}/{name}.json")
}

/// `tags/v1/models/<tag id>.json`: a population tag's fitted model.
pub fn tag_model(tag: &str) -> String {
    format!("tags/v1/models/{tag}.json")
}

/// `audiences/v1/<id>/<file>`: an audience's snapshot, insight or diffs.
pub fn audience(id: &str, file: &str) -> String {
    format!("audiences/v1/{id}/{file}")
}

/// The two kinds of objects the collector writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// Accepted canonical events: `raw/v1/…`.
    Raw,
    /// Rejected events with reasons: `failed/v1/…`.
    Failed,
}

impl ObjectKind {
    /// The top-level prefix, with a trailing slash.
    pub fn prefix(self) -> &'static str {
        match self {
            ObjectKind::Raw => "raw/",
            ObjectKind::Failed => "failed/",
        }
    }
}

/// `raw/v1/dt=YYYY-MM-DD/hr=HH/<ulid>.ndjson.gz` (or `failed/…`): Hive-style partitions by the UTC receipt
/// hour, so lake tools prune by date, and a ULID name, so a listing is in arrival order and names never collide.
pub fn object_key(kind: ObjectKind, received_at: UtcTime, request_id: ulid::Ulid) -> String {
    let (date, hour) = received_at.date_and_hour();
    format!("{}v1/dt={date}/hr={hour}/{request_id}.ndjson.gz", kind.prefix())
}

/// `raw/v1/dt=YYYY-MM-DD/hr=HH/`: the partition of the raw objects received in `at`'s hour.
pub fn raw_hour_prefix(at: UtcTime) -> String {
    let (date, hour) = at.date_and_hour();
    format!("{}v1/dt={date}/hr={hour}/", ObjectKind::Raw.prefix())
}

/// When an object of [`object_key`]'s layout was named (ms since the epoch), from the ULID in its name; `None`
/// for any other name.
pub fn object_named_at(key: &str) -> Option<i64> {
    let name = key.rsplit('/').next()?.strip_suffix(".ndjson.gz")?;
    Some(ulid::Ulid::from_string(name).ok()?.timestamp_ms() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout() {
        let t = UtcTime::parse("2026-11-28T09:05:00.000Z").unwrap();
        let id = ulid::Ulid::from_parts(t.unix_millis() as u64, 1);
        assert_eq!(object_key(ObjectKind::Raw, t, id), format!("raw/v1/dt=2026-11-28/hr=09/{id}.ndjson.gz"));
        assert_eq!(object_key(ObjectKind::Failed, t, id), format!("failed/v1/dt=2026-11-28/hr=09/{id}.ndjson.gz"));
        assert_eq!(raw_hour_prefix(t), "raw/v1/dt=2026-11-28/hr=09/");
        assert_eq!(object_named_at(&object_key(ObjectKind::Raw, t, id)), Some(t.unix_millis()));
        assert_eq!(object_named_at("raw/v1/dt=2026-11-28/hr=09/BADLINE.ndjson.gz"), None);
    }
}
