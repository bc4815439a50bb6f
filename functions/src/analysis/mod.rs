//! Analysis (分析): read-only SQL and the analyses marketers and analysts run — trends, funnels, retention, paths,
//! audience comparison and value models — over the stored data, with Apache DataFusion (the same arrow-rs the
//! lake is written with) as the engine.
//!
//! [`Engine::load`] builds the tables from the store ([`tables`]): `events` (the lake's parts and the raw
//! tail, each event once, resolved to the profile it belongs to now, properties cleaned as tags read them),
//! `profiles` (one column per trait), `tags` (one column per tag of the last full recompute), `memberships`
//! (audience, profile) and `identities` (profile, identifier); [`Engine::load_without_personal_data`] leaves
//! personal data out of them. SQL reads them as they are ([`Engine::sql`], with limits on rows, time, memory
//! and answer size); trends run as SQL ([`trends`]); funnels, retention and paths take their events sorted by
//! person and time, with a mask of the conditions each meets, and count in a pass over each person's events
//! ([`funnel`], [`retention`], [`paths`]); audience comparison tests every feature ([`compare`], [`stats`]);
//! the value models fit BG/NBD and Gamma-Gamma off the async workers ([`value`]). Properties are JSON text:
//! `property(properties, 'name')` gives a value as text and `property_number(properties, 'name')` as a number.

use std::collections::BTreeSet;

use arrow_array::cast::AsArray as _;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use shared::time::UtcTime;

use crate::Error;
use crate::snapshot::RunConfig;
use crate::storage::ObjectStore;

pub mod compare;
pub mod filter;
pub mod funnel;
pub mod paths;
pub mod period;
pub mod retention;
pub mod saved;
mod sql;
pub mod stats;
mod tables;
pub mod themes;
pub mod trends;
mod udf;
pub mod value;

pub use compare::{Compare, CompareResult};
pub use filter::{Filter, Of, Op};
pub use funnel::{Exclusion, Funnel, FunnelResult, Order, StepFilter};
pub use paths::{Direction, Paths, PathsResult};
pub use period::Period;
pub use retention::{Retention, RetentionResult};
pub use sql::{Answer, Limits, MAX_ANSWER_BYTES, MAX_ROWS};
pub use tables::Loaded;
pub use trends::{Breakdown, Measure, Trends, TrendsResult};
pub use value::{Value, ValueResult};

/// Memory a query may use before it fails (bytes).
pub const MEMORY_LIMIT: usize = 2 << 30;

/// The tables of one moment of the data, ready for queries and analyses.
pub struct Engine {
    ctx: SessionContext,
    /// The track event names the data holds (what analyses may name).
    event_names: BTreeSet<String>,
    /// The traits that are columns of `profiles`.
    traits: BTreeSet<String>,
    /// The tags that are columns of `tags`.
    tags: BTreeSet<String>,
    /// The audiences with a computed snapshot.
    audiences: BTreeSet<String>,
    /// Which traits are personal data.
    rules: shared::profile::ProfileRules,
    /// The tags whose values cannot hold personal data ([`tables::safe_tags`]).
    safe_tags: BTreeSet<String>,
    /// What was loaded.
    pub loaded: Loaded,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("loaded", &self.loaded).finish_non_exhaustive()
    }
}

impl Engine {
    /// Loads the tables from `store` as they are now.
    pub async fn load<S: ObjectStore + Clone>(store: &S, config: &RunConfig) -> Result<Self, Error> {
        Self::load_with(store, config, true).await
    }

    /// [`Engine::load`] without personal data: the profile rules' personal traits and event properties are
    /// not in the tables (for a reader who may not see them in clear).
    pub async fn load_without_personal_data<S: ObjectStore + Clone>(
        store: &S,
        config: &RunConfig,
    ) -> Result<Self, Error> {
        Self::load_with(store, config, false).await
    }

    async fn load_with<S: ObjectStore + Clone>(store: &S, config: &RunConfig, personal: bool) -> Result<Self, Error> {
        // Nothing spills to disk: a query that needs more memory than the limit fails.
        let disk = DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(MEMORY_LIMIT, 1.0)
            .with_disk_manager_builder(disk)
            .build_arc()
            .map_err(|e| Error::Internal(format!("the query engine: {e}")))?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let session = SessionConfig::new().with_target_partitions(threads).with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(session, runtime);
        udf::register(&ctx);
        let (loaded, found) = tables::register(&ctx, store, config, personal).await?;
        let columns = |table: &'static str| {
            let ctx = ctx.clone();
            async move {
                let frame = ctx.table(table).await.map_err(|e| Error::Internal(format!("the {table} table: {e}")))?;
                let names: BTreeSet<String> = frame
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .filter(|n| n != "profile_id" && n != "traits")
                    .collect();
                Ok::<_, Error>(names)
            }
        };
        let (traits, tags) = (columns("profiles").await?, columns("tags").await?);
        Ok(Self {
            ctx,
            event_names: found.events,
            traits,
            tags,
            audiences: found.audiences,
            rules: config.snapshot.profiles.clone(),
            safe_tags: tables::safe_tags(config),
            loaded,
        })
    }

    /// Runs one read-only query ([`sql::run`]).
    pub async fn sql(&self, query: &str, limits: Limits) -> Result<Answer, Error> {
        sql::run(&self.ctx, query, limits).await
    }

    /// Runs a funnel.
    pub async fn funnel(&self, funnel: &Funnel) -> Result<FunnelResult, Error> {
        within(funnel::run(self, funnel)).await
    }

    /// Runs a trend.
    pub async fn trends(&self, trends: &Trends) -> Result<TrendsResult, Error> {
        within(trends::run(self, trends)).await
    }

    /// Runs a paths analysis.
    pub async fn paths(&self, paths: &Paths) -> Result<PathsResult, Error> {
        within(paths::run(self, paths)).await
    }

    /// Compares an audience with the rest of the population or another audience.
    pub async fn compare(&self, compare: &Compare) -> Result<CompareResult, Error> {
        within(compare::run(self, compare)).await
    }

    /// Runs the value models: RFM segments and their movement, lifetime value observed and predicted.
    pub async fn value(&self, value: &Value) -> Result<ValueResult, Error> {
        within(value::run(self, value)).await
    }

    /// Runs a retention analysis.
    pub async fn retention(&self, retention: &Retention) -> Result<RetentionResult, Error> {
        within(retention::run(self, retention)).await
    }

    /// The track events of resolved persons from `from` (when given) to `end` (excluded), sorted by person,
    /// then time, then messageId: of `names` only, when given; otherwise the persons' own (not the platform's
    /// delivery records nor partners' feedback) and those `named` (which an analysis asks for by name).
    async fn person_events(
        &self,
        names: Option<&[String]>,
        named: &[String],
        from: Option<i64>,
        end: i64,
    ) -> Result<Sorted, Error> {
        self.person_events_matching(names, named, from, end, &[], None).await
    }

    /// [`Engine::person_events`], each event with a mask: bit k set when `conditions[k]` (SQL over the
    /// `events` table as `e`; at most 63) holds for it; and its key of `breakdown` (checked first).
    async fn person_events_matching(
        &self,
        names: Option<&[String]>,
        named: &[String],
        from: Option<i64>,
        end: i64,
        conditions: &[String],
        breakdown: Option<&Breakdown>,
    ) -> Result<Sorted, Error> {
        let failed = |e: datafusion::error::DataFusionError| Error::Internal(format!("reading events: {e}"));
        let listed = |names: &[String]| {
            let names: Vec<String> = names.iter().map(|n| trends::literal(n)).collect();
            format!("e.event IN ({})", names.join(", "))
        };
        let mut filter =
            format!("e.profile_id IS NOT NULL AND e.event IS NOT NULL AND e.timestamp < to_timestamp_millis({end})");
        if let Some(from) = from {
            filter.push_str(&format!(" AND e.timestamp >= to_timestamp_millis({from})"));
        }
        match names {
            Some([]) => filter.push_str(" AND FALSE"),
            Some(names) => filter.push_str(&format!(" AND {}", listed(names))),
            None if named.is_empty() => filter.push_str(&format!(" AND {PERSONS_OWN_SQL}")),
            None => filter.push_str(&format!(" AND (({PERSONS_OWN_SQL}) OR {})", listed(named))),
        }
        let mask = if conditions.is_empty() {
            "CAST(0 AS BIGINT)".to_string()
        } else {
            let bits: Vec<String> = conditions
                .iter()
                .take(63)
                .enumerate()
                .map(|(k, c)| format!("CASE WHEN {c} THEN CAST({} AS BIGINT) ELSE CAST(0 AS BIGINT) END", 1i64 << k))
                .collect();
            format!("({})", bits.join(" + "))
        };
        let (key, joins) = match breakdown {
            None => ("CAST(NULL AS VARCHAR)".to_string(), ""),
            Some(Breakdown::Property(name)) => (format!("property(e.properties, {})", trends::literal(name)), ""),
            Some(Breakdown::Trait(name)) => (
                format!("CAST(bp.{} AS VARCHAR)", trends::identifier(name)),
                " LEFT JOIN profiles bp ON e.profile_id = bp.profile_id",
            ),
            Some(Breakdown::Tag(name)) => (
                format!("CAST(bt.{} AS VARCHAR)", trends::identifier(name)),
                " LEFT JOIN tags bt ON e.profile_id = bt.profile_id",
            ),
        };
        let query = format!(
            "SELECT e.profile_id, e.event, e.timestamp, e.message_id, {mask} AS mask, arrow_cast({key}, 'Utf8') AS k \
             FROM events e{joins} \
             WHERE {filter} ORDER BY e.profile_id, e.timestamp, e.message_id"
        );
        let frame = self.ctx.sql(&query).await.map_err(failed)?;
        Ok(Sorted(frame.collect().await.map_err(failed)?))
    }
}

/// Where SQL over `events` (as `e`) keeps the events the persons did themselves: not the platform's records of
/// deliveries (source `cdp-activation`) nor partners' feedback (sources `partner:…`).
const PERSONS_OWN_SQL: &str = "e.source_id <> 'cdp-activation' AND e.source_id NOT LIKE 'partner:%'";

/// Events sorted by person and time ([`Engine::person_events`]).
struct Sorted(Vec<RecordBatch>);

/// One person's events: (event name, time in ms), in time order, and each one's mask and breakdown key
/// ([`Engine::person_events_matching`]).
struct PersonEvents<'a> {
    events: Vec<(&'a str, i64)>,
    masks: Vec<i64>,
    keys: Vec<Option<&'a str>>,
}

impl Sorted {
    /// Each person's events.
    fn people(&self) -> Vec<PersonEvents<'_>> {
        let mut people = Vec::new();
        let mut current: Option<(&str, PersonEvents<'_>)> = None;
        for batch in &self.0 {
            let (ids, names, times, masks, keys) = (
                batch.column(0).as_string::<i32>(),
                batch.column(1).as_string::<i32>(),
                batch.column(2).as_primitive::<TimestampMillisecondType>(),
                batch.column(4).as_primitive::<Int64Type>(),
                batch.column(5).as_string::<i32>(),
            );
            for row in 0..batch.num_rows() {
                let (id, name, at, mask) = (ids.value(row), names.value(row), times.value(row), masks.value(row));
                let key = (!keys.is_null(row)).then(|| keys.value(row));
                match &mut current {
                    Some((person, events)) if *person == id => {
                        events.events.push((name, at));
                        events.masks.push(mask);
                        events.keys.push(key);
                    }
                    _ => {
                        if let Some((_, done)) = current.take() {
                            people.push(done);
                        }
                        let events = PersonEvents { events: vec![(name, at)], masks: vec![mask], keys: vec![key] };
                        current = Some((id, events));
                    }
                }
                debug_assert!(!ids.is_null(row));
            }
        }
        people.extend(current.map(|(_, events)| events));
        people
    }
}

/// Time an analysis may take.
pub const ANALYSIS_TIME: std::time::Duration = std::time::Duration::from_secs(300);

/// `work`, or an error when it takes longer than [`ANALYSIS_TIME`].
async fn within<T>(work: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::time::timeout(ANALYSIS_TIME, work).await.map_err(|_| {
        Error::Invalid(format!("the analysis took longer than its limit of {} s; narrow it", ANALYSIS_TIME.as_secs()))
    })?
}

/// `breakdown` names a trait or tag the data holds (or a property), naming the field otherwise.
fn check_breakdown(engine: &Engine, breakdown: &Breakdown) -> Result<(), Error> {
    match breakdown {
        Breakdown::Trait(name) => check_name("breakdown.trait", "trait", name, &engine.traits),
        Breakdown::Tag(name) => check_name("breakdown.tag", "tag", name, &engine.tags),
        Breakdown::Property(name) if name.trim().is_empty() => {
            Err(Error::Invalid("breakdown.property: a property name".into()))
        }
        Breakdown::Property(_) => Ok(()),
    }
}

/// Persons' `items` grouped by their breakdown key: the `top` keys with the most persons (ties by key) each a
/// group of its own, the others together as `(other)`; a person without a value is `(none)`, ranked like any
/// value. Groups in that order, by name.
fn breakdown_groups<'i, T>(items: &'i [(Option<&str>, T)], top: usize) -> Vec<(String, Vec<&'i T>)> {
    let mut counts: std::collections::BTreeMap<Option<&str>, u64> = std::collections::BTreeMap::new();
    for (key, _) in items {
        *counts.entry(*key).or_default() += 1;
    }
    let mut ranked: Vec<(Option<&str>, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let kept: Vec<Option<&str>> = ranked.into_iter().take(top).map(|(k, _)| k).collect();
    let mut groups: Vec<(String, Vec<&T>)> = kept
        .iter()
        .map(|key| {
            let name = key.map_or_else(|| "(none)".to_string(), str::to_string);
            (name, items.iter().filter(|(k, _)| k == key).map(|(_, item)| item).collect())
        })
        .collect();
    let rest: Vec<&T> = items.iter().filter(|(k, _)| !kept.contains(k)).map(|(_, item)| item).collect();
    if !rest.is_empty() {
        groups.push((trends::OTHER.to_string(), rest));
    }
    groups
}

/// `from` before `to`, at most ten years apart.
fn check_range(from: UtcTime, to: UtcTime) -> Result<(), Error> {
    if to <= from {
        return Err(Error::Invalid(format!("from, to: the range {from} to {to} is empty")));
    }
    if to.unix_millis() - from.unix_millis() > 3_660 * period::DAY_MS {
        return Err(Error::Invalid("from, to: a range spans at most ten years".into()));
    }
    Ok(())
}

/// `name` is an event the data holds; otherwise an error naming `field` and the closest known name.
fn check_event(field: &str, name: &str, known: &BTreeSet<String>) -> Result<(), Error> {
    check_name(field, "event", name, known)
}

/// `name` is one of `known` (the data's `what`s); otherwise an error naming `field` and the closest one.
fn check_name(field: &str, what: &str, name: &str, known: &BTreeSet<String>) -> Result<(), Error> {
    if known.contains(name) {
        return Ok(());
    }
    let mut message = format!("{field}: no {what} `{name}` in the data");
    if let Some(close) = shared::tags::closest(name, known.iter().map(String::as_str)) {
        message.push_str(&format!("; did you mean `{close}`?"));
    }
    Err(Error::Invalid(message))
}

#[cfg(test)]
mod tests;
