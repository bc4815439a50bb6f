//! The tables analyses and SQL read, built from the stored data: `events` (the lake's parts and the raw tail,
//! each event once, with the profile it belongs to now), `profiles` (one column per trait), `tags` (one column
//! per tag the last full recompute computed), `memberships` (audience, profile) and `identities` (profile,
//! identifier type and value).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde_json::{Map, Value};
use shared::storage::keys;

use crate::Error;
use crate::snapshot::RunConfig;
use crate::storage::ObjectStore;
use crate::tagging::profiles::{Profiles, Reading};

/// Rows per record batch of a table.
const BATCH_ROWS: usize = 65_536;

/// Most trait or tag columns a table gets (the most common names first); the others stay in `traits` (JSON).
const MAX_COLUMNS: usize = 256;

/// What was loaded: rows per table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Loaded {
    /// Events (each once).
    pub events: usize,
    /// Events whose identifiers belong to no profile (`profile_id` is null).
    pub unresolved: usize,
    /// Profiles.
    pub profiles: usize,
    /// Audience memberships.
    pub memberships: usize,
    /// Identifiers of live profiles.
    pub identities: usize,
    /// The latest event's time (ms): where the data ends.
    pub last_event_ms: Option<i64>,
    /// The version of the data: what the tables were built from (equal versions, equal answers).
    pub version: String,
}

/// What loading found besides the tables: the track event names and the audiences with members.
#[derive(Debug, Default)]
pub(super) struct Found {
    pub(super) events: BTreeSet<String>,
    pub(super) audiences: BTreeSet<String>,
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn internal(what: &'static str) -> impl Fn(datafusion::error::DataFusionError) -> Error {
    move |e| Error::Internal(format!("{what}: {e}"))
}

fn arrow(what: &'static str) -> impl Fn(arrow_schema::ArrowError) -> Error {
    move |e| Error::Internal(format!("{what}: {e}"))
}

/// Registers the tables in `ctx`; without `personal`, personal traits and event properties (the profile
/// rules' personal data) are left out of them.
pub(super) async fn register<S: ObjectStore + Clone>(
    ctx: &SessionContext,
    store: &S,
    config: &RunConfig,
    personal: bool,
) -> Result<(Loaded, Found), Error> {
    let profiles = Profiles::read(store, config.snapshot.vault.clone(), Reading::Recompute(&[])).await?;
    // Without personal data, message ids are keyed hashes: a profile's id is derived from its first event's
    // message id and identifier, which would let a reader confirm a guessed email address.
    let message_ids = if personal { None } else { Some(crate::suppression::hash_key(store).await?) };
    let mut loaded = Loaded { profiles: profiles.len(), ..Loaded::default() };
    let mut found = Found::default();
    let events =
        events(store, config, personal, message_ids.as_ref(), &profiles, &mut loaded, &mut found.events).await?;
    ctx.register_table("events", Arc::new(events)).map_err(internal("the events table"))?;

    let rules = &config.snapshot.profiles;
    let mut traits = Vec::with_capacity(profiles.len());
    for n in 0..profiles.len() as u32 {
        let mut values = profiles.traits(n)?;
        if !personal {
            values.retain(|name, _| !rules.is_personal(name));
        }
        traits.push((profiles.id(n).to_string(), values));
    }
    ctx.register_table("profiles", Arc::new(wide(&traits, true)?)).map_err(internal("the profiles table"))?;

    let (mut values, tags_etag) = tag_values(store).await?;
    if !personal {
        let safe = safe_tags(config);
        for (_, tags) in &mut values {
            tags.retain(|id, _| safe.contains(id.as_str()));
            for value in tags.values_mut() {
                if let Value::Object(map) = value {
                    leave_out_personal(map, &config.snapshot.profiles);
                } else if let Value::Array(items) = value {
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        leave_out_personal(item, &config.snapshot.profiles);
                    }
                }
            }
        }
    }
    ctx.register_table("tags", Arc::new(wide(&values, false)?)).map_err(internal("the tags table"))?;

    let (table, count) = identities(store, &profiles, personal, &config.snapshot.profiles).await?;
    loaded.identities = count;
    ctx.register_table("identities", Arc::new(table)).map_err(internal("the identities table"))?;

    let configured: Vec<String> = match &config.snapshot.definitions.audiences {
        Ok(audiences) => audiences.iter().map(|a| a.id.clone()).collect(),
        Err(problem) => {
            tracing::warn!(%problem, "the audience definitions do not read: the memberships table is empty");
            Vec::new()
        }
    };
    let (table, members, audiences, members_digest) = memberships(store, &configured).await?;
    loaded.memberships = members;
    // What the tables were built from: the identity state's version, the tag values, the events seen and where
    // they end, the members.
    let mut audiences_seen: Vec<&String> = audiences.iter().collect();
    audiences_seen.sort();
    // The configuration that shapes the tables too: the profile rules (personal traits, cleaning), the identity
    // rules, the tags and audiences defined.
    let shaping =
        serde_json::to_string(&(&config.snapshot.profiles, &config.snapshot.identity, safe_tags(config), &configured))
            .map_err(Error::encoding)?;
    loaded.version = shared::ids::sha256_hex(&format!(
        "{}|{tags_etag}|{}|{}|{:?}|{members_digest}|{:?}|{personal}|{shaping}",
        profiles.version, loaded.events, loaded.unresolved, loaded.last_event_ms, audiences_seen
    ))[..20]
        .to_string();
    found.audiences = audiences;
    ctx.register_table("memberships", Arc::new(table)).map_err(internal("the memberships table"))?;
    Ok((loaded, found))
}

/// The `events` table: every stored event once, its properties cleaned as tags read them.
async fn events<S: ObjectStore>(
    store: &S,
    config: &RunConfig,
    personal: bool,
    message_ids: Option<&shared::access::IdentifierKey>,
    profiles: &Profiles,
    loaded: &mut Loaded,
    names: &mut BTreeSet<String>,
) -> Result<MemTable, Error> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("message_id", DataType::Utf8, false),
        Field::new("source_id", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, true),
        Field::new("timestamp", timestamp(), false),
        Field::new("received_at", timestamp(), false),
        Field::new("profile_id", DataType::Utf8, true),
        Field::new("properties", DataType::Utf8, true),
    ]));
    let (rules, cleaning) = (&config.snapshot.profiles, &config.snapshot.profiles.cleaning);
    let mut seen: HashSet<Box<str>> = HashSet::new();
    let (mut latest_event, mut latest_receipt) = (i64::MIN, i64::MIN);
    let mut batches = Vec::new();
    let mut rows = EventRows::default();
    crate::tagging::read_events(store, &config.snapshot.identity, |event, keys| {
        if !seen.insert(event.dedup_key.clone()) {
            return Ok(());
        }
        let (source, message) = event.dedup_key.split_once('/').unwrap_or(("", &event.dedup_key));
        let profile = keys.iter().find_map(|key| profiles.resolve(key)).map(|n| profiles.id(n));
        if profile.is_none() {
            loaded.unresolved += 1;
        }
        let properties = match event.properties.as_deref() {
            None => None,
            Some(text) => {
                let sent = event.properties()?;
                let mut clean = cleaning.clean_properties(&sent);
                if !personal && holds_personal(&sent, rules) {
                    let mut kept = clean.take().unwrap_or(sent);
                    leave_out_personal(&mut kept, rules);
                    clean = Some(kept);
                }
                Some(match clean {
                    Some(clean) => serde_json::to_string(&clean).map_err(Error::encoding)?,
                    None => text.to_string(),
                })
            }
        };
        match message_ids {
            Some(key) => rows.message_id.append_value(&key.hash(&format!("analysis-message-id:{message}"))[..32]),
            None => rows.message_id.append_value(message),
        }
        rows.source_id.append_value(source);
        rows.kind.append_value(event.kind.as_str());
        if let Some(name) = event.event.as_deref()
            && !names.contains(name)
        {
            names.insert(name.to_string());
        }
        // Where the data ends: the persons' own latest event, no later than the latest receipt (a client's
        // clock in the future does not move it).
        let own = source != shared::activation::feedback::SYSTEM_SOURCE && !source.starts_with("partner:");
        if own {
            latest_event = latest_event.max(event.at);
        }
        latest_receipt = latest_receipt.max(event.received_at);
        rows.event.append_option(event.event.as_deref());
        rows.timestamp.append_value(event.at);
        rows.received_at.append_value(event.received_at);
        rows.profile_id.append_option(profile);
        rows.properties.append_option(properties);
        rows.len += 1;
        loaded.events += 1;
        if rows.len >= BATCH_ROWS {
            batches.push(std::mem::take(&mut rows).finish(&schema)?);
        }
        Ok(())
    })
    .await?;
    if rows.len > 0 || batches.is_empty() {
        batches.push(rows.finish(&schema)?);
    }
    loaded.last_event_ms = (latest_event > i64::MIN).then(|| latest_event.min(latest_receipt));
    MemTable::try_new(schema, vec![batches]).map_err(internal("the events table"))
}

/// The `identities` table: each identifier of the identity state (`type`, `value` as ID-Mapping keys it: a
/// personal type's value is its SHA-256) with the live profile it belongs to now; without `personal`, the
/// values of personal types are null (a plain hash confirms a guessed email address).
async fn identities<S: ObjectStore + Clone>(
    store: &S,
    profiles: &Profiles,
    personal: bool,
    rules: &shared::profile::ProfileRules,
) -> Result<(MemTable, usize), Error> {
    use crate::state::{IdsShard, ShardCounts, Transaction};
    let schema = Arc::new(Schema::new(vec![
        Field::new("profile_id", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, true),
    ]));
    let txn = Transaction::begin_sealed(store, ShardCounts::default(), None).await?;
    let decode = |_: u32, shard: IdsShard| -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::with_capacity(shard.index.len());
        for (key, raw) in shard.index {
            let id: String =
                serde_json::from_str(raw.get()).map_err(|e| Error::Corrupt(format!("identifier {key}: {e}")))?;
            out.push((key, id));
        }
        Ok(out)
    };
    let (mut ids, mut kinds, mut values) = (StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
    let mut count = 0;
    txn.each_shard(decode, |_, pairs: Vec<(String, String)>| {
        for (key, id) in pairs {
            let Some(n) = profiles.resolve(&id) else { continue };
            let (kind, value) = key.split_once(':').unwrap_or((key.as_str(), ""));
            ids.append_value(profiles.id(n));
            kinds.append_value(kind);
            let hidden = !personal && (rules.is_personal(kind) || kind == "email" || kind == "phone");
            values.append_option((!hidden).then_some(value));
            count += 1;
        }
        Ok(())
    })
    .await?;
    let columns: Vec<ArrayRef> = vec![Arc::new(ids.finish()), Arc::new(kinds.finish()), Arc::new(values.finish())];
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(arrow("the identities table"))?;
    Ok((MemTable::try_new(schema, vec![vec![batch]]).map_err(internal("the identities table"))?, count))
}

/// Whether `properties` hold a personal one, at any depth.
fn holds_personal(properties: &Map<String, Value>, rules: &shared::profile::ProfileRules) -> bool {
    fn any(value: &Value, rules: &shared::profile::ProfileRules) -> bool {
        match value {
            Value::Object(map) => holds_personal(map, rules),
            Value::Array(items) => items.iter().any(|v| any(v, rules)),
            _ => false,
        }
    }
    properties.iter().any(|(name, value)| rules.is_personal(name) || any(value, rules))
}

/// `properties` without the personal ones, at any depth.
fn leave_out_personal(properties: &mut Map<String, Value>, rules: &shared::profile::ProfileRules) {
    fn walk(value: &mut Value, rules: &shared::profile::ProfileRules) {
        match value {
            Value::Object(map) => leave_out_personal(map, rules),
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, rules)),
            _ => {}
        }
    }
    properties.retain(|name, _| !rules.is_personal(name));
    properties.values_mut().for_each(|v| walk(v, rules));
}

/// The tags a reader without personal data may see: those defined now whose values cannot hold a personal
/// property's value — rules, buckets, propensity and RFM scores, counts, and aggregates and affinities of
/// properties that are not personal. Fails closed: a tag no longer defined (its last values still stored), or
/// every tag when the definitions do not read, is left out.
pub(super) fn safe_tags(config: &RunConfig) -> BTreeSet<String> {
    use shared::tags::{AggregateOp, TagKind};
    let rules = &config.snapshot.profiles;
    let personal = |property: &str| rules.is_personal(property.rsplit('.').next().unwrap_or(property));
    let Some(tags) = &config.snapshot.tags else { return BTreeSet::new() };
    tags.tags()
        .iter()
        .filter(|tag| match &tag.kind {
            TagKind::Statistical { aggregate, .. } => {
                matches!(aggregate.op, AggregateOp::Count | AggregateOp::DistinctCount)
                    || aggregate.property.as_deref().is_none_or(|p| !personal(p))
            }
            TagKind::Rule { .. } | TagKind::Buckets { .. } | TagKind::Propensity { .. } | TagKind::Rfm { .. } => true,
            TagKind::Affinity { product, category, .. } => !personal(product) && !personal(category),
            #[allow(unreachable_patterns)]
            _ => false,
        })
        .map(|tag| tag.id.clone())
        .collect()
}

#[derive(Default)]
struct EventRows {
    message_id: StringBuilder,
    source_id: StringBuilder,
    kind: StringBuilder,
    event: StringBuilder,
    timestamp: TimestampMillisecondBuilder,
    received_at: TimestampMillisecondBuilder,
    profile_id: StringBuilder,
    properties: StringBuilder,
    len: usize,
}

impl EventRows {
    fn finish(mut self, schema: &Arc<Schema>) -> Result<RecordBatch, Error> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.message_id.finish()),
            Arc::new(self.source_id.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.event.finish()),
            Arc::new(self.timestamp.finish().with_timezone("UTC")),
            Arc::new(self.received_at.finish().with_timezone("UTC")),
            Arc::new(self.profile_id.finish()),
            Arc::new(self.properties.finish()),
        ];
        RecordBatch::try_new(schema.clone(), columns).map_err(arrow("the events table"))
    }
}

/// The last full recompute's tag values, by profile.
/// The last full recompute's tag values by profile, and a digest of them (not of the object, which a recompute
/// rewrites with its time however little changed).
async fn tag_values<S: ObjectStore>(store: &S) -> Result<(Vec<(String, Map<String, Value>)>, String), Error> {
    let Some(object) = store.get(keys::TAG_VALUES).await? else { return Ok((Vec::new(), String::new())) };
    let body = shared::storage::gunzip(&object.body).map_err(|e| Error::Corrupt(format!("tag values: {e}")))?;
    #[derive(serde::Deserialize)]
    struct Values {
        profiles: BTreeMap<String, Map<String, Value>>,
    }
    let values: Values =
        serde_json::from_slice(&body).map_err(|e| Error::Corrupt(format!("{}: {e}", keys::TAG_VALUES)))?;
    let digest = digest(values.profiles.iter().map(|(id, tags)| format!("{id}={}", Value::Object(tags.clone()))));
    Ok((values.profiles.into_iter().collect(), digest))
}

/// SHA-256 (hex) of `parts`, each ended by a newline.
fn digest(parts: impl Iterator<Item = String>) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `memberships` table from the last snapshots of the audiences `configured` (a deleted audience's
/// snapshot is left out; one that does not decode is logged and left out), with its rows, the audiences' ids
/// and a digest of who is in which.
async fn memberships<S: ObjectStore>(
    store: &S,
    configured: &[String],
) -> Result<(MemTable, usize, BTreeSet<String>, String), Error> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("audience", DataType::Utf8, false),
        Field::new("profile_id", DataType::Utf8, false),
        Field::new("computed_at", timestamp(), false),
    ]));
    let (mut audience, mut profile, mut at) =
        (StringBuilder::new(), StringBuilder::new(), TimestampMillisecondBuilder::new());
    let (mut count, mut ids) = (0, BTreeSet::new());
    let mut members_seen: Vec<String> = Vec::new();
    for id in configured {
        let key = keys::audience(id, "snapshot.json.gz");
        let Some(object) = store.get(&key).await? else { continue };
        let decoded = shared::storage::gunzip(&object.body)
            .map_err(|e| e.to_string())
            .and_then(|body| serde_json::from_slice::<shared::audiences::Snapshot>(&body).map_err(|e| e.to_string()));
        let snapshot = match decoded {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::error!(%key, %error, "an audience snapshot does not decode; its members are left out");
                continue;
            }
        };
        ids.insert(id.clone());
        for member in &snapshot.members {
            audience.append_value(id);
            profile.append_value(member);
            members_seen.push(format!("{id}\t{member}"));
            at.append_value(snapshot.computed_at);
            count += 1;
        }
    }
    let columns: Vec<ArrayRef> =
        vec![Arc::new(audience.finish()), Arc::new(profile.finish()), Arc::new(at.finish().with_timezone("UTC"))];
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(arrow("the memberships table"))?;
    members_seen.sort_unstable();
    let members_digest = digest(members_seen.into_iter());
    Ok((
        MemTable::try_new(schema, vec![vec![batch]]).map_err(internal("the memberships table"))?,
        count,
        ids,
        members_digest,
    ))
}

/// The kind of column a name's values make: numbers, booleans, or text (strings as they are, anything else
/// as JSON).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Number,
    Boolean,
    Text,
}

fn kind_of<'a>(values: impl Iterator<Item = Option<&'a Value>>) -> Kind {
    let (mut numbers, mut booleans, mut others) = (0, 0, 0);
    for value in values.flatten() {
        match value {
            Value::Number(_) => numbers += 1,
            Value::Bool(_) => booleans += 1,
            Value::Null => {}
            _ => others += 1,
        }
    }
    match (numbers, booleans, others) {
        (n, 0, 0) if n > 0 => Kind::Number,
        (0, b, 0) if b > 0 => Kind::Boolean,
        _ => Kind::Text,
    }
}

/// A table of `profile_id` and one typed column per name (the most common first, at most [`MAX_COLUMNS`]);
/// with `all_json`, a `traits` column holding every value as JSON too.
fn wide(rows: &[(String, Map<String, Value>)], all_json: bool) -> Result<MemTable, Error> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, values) in rows {
        for name in values.keys() {
            *counts.entry(name).or_default() += 1;
        }
    }
    // `profile_id` and `traits` are the table's own columns: a trait so named stays in `traits` only.
    let mut names: Vec<(&str, usize)> =
        counts.into_iter().filter(|(n, _)| *n != "profile_id" && *n != "traits").collect();
    names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    names.truncate(MAX_COLUMNS);
    names.sort();
    let mut fields = vec![Field::new("profile_id", DataType::Utf8, false)];
    let mut ids = StringBuilder::new();
    for (id, _) in rows {
        ids.append_value(id);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(ids.finish())];
    for (name, _) in &names {
        let values = || rows.iter().map(|(_, v)| v.get(*name));
        let kind = kind_of(values());
        let (data_type, column): (DataType, ArrayRef) = match kind {
            Kind::Number => {
                let mut b = Float64Builder::with_capacity(rows.len());
                values().for_each(|v| b.append_option(v.and_then(Value::as_f64)));
                (DataType::Float64, Arc::new(b.finish()))
            }
            Kind::Boolean => {
                let mut b = BooleanBuilder::with_capacity(rows.len());
                values().for_each(|v| b.append_option(v.and_then(Value::as_bool)));
                (DataType::Boolean, Arc::new(b.finish()))
            }
            Kind::Text => {
                let mut b = StringBuilder::new();
                for v in values() {
                    match v {
                        None | Some(Value::Null) => b.append_null(),
                        Some(Value::String(s)) => b.append_value(s),
                        Some(other) => b.append_value(other.to_string()),
                    }
                }
                (DataType::Utf8, Arc::new(b.finish()))
            }
        };
        fields.push(Field::new(*name, data_type, true));
        columns.push(column);
    }
    if all_json {
        let mut b = StringBuilder::new();
        for (_, values) in rows {
            b.append_value(serde_json::to_string(values).map_err(Error::encoding)?);
        }
        fields.push(Field::new("traits", DataType::Utf8, false));
        columns.push(Arc::new(b.finish()));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(arrow("a profile table"))?;
    MemTable::try_new(schema, vec![vec![batch]]).map_err(internal("a profile table"))
}
