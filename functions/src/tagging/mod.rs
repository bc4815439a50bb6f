//! The tagging handler: computes every active tag and audience for every profile from the stored events and
//! the identity state, writes the values, each audience's snapshot and its diff (entered, exited), and a
//! report with coverage and sizes.
//!
//! Definitions are `config/tags.json` and `config/audiences.json` (arrays; see `docs/schemas/`). Tags are
//! evaluated by the columnar engine ([`shared::tags::TagSet::evaluate_columns`]) a chunk of profiles at a time, which gives
//! the reference values; the incremental path on ingest gives the same.
//!
//! Objects written:
//! - `tags/v1/values.json.gz`: `{"computedAt": ms, "profiles": {profile id: {tag id: value}}}`;
//! - `audiences/v1/<id>/snapshot.json.gz`: the members and the size history ([`Snapshot`]);
//! - `audiences/v1/<id>/diffs/<computedAt>.json`: `{"computedAt", "entered", "exited"}`, when anything changed;
//! - `audiences/v1/<id>/insight.json`: the trait and tag values most over-represented among the members against
//!   every profile (lift, share; personal traits and values fewer than five members hold are left out);
//! - `products/v1/tags.json.gz`: product tags (category, counts, revenue, popularity; `config/products.json`
//!   says which properties and events, with defaults);
//! - `tags/v1/models/<tag id>.json`: each population tag's fitted model (propensity weights with their
//!   evaluation, RFM thresholds);
//! - `tags/v1/report.json`: [`Report`];
//! - `deliveries/v1/synced.json`: which audiences each destination has been sent in full ([`sync`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::audiences::{InsightCounts, Snapshot};
use shared::profile::CleaningRules;
use shared::storage::keys::{self, TAGS_REPORT};
use shared::tags::{EventView, ProductTags, event_table, profile_table};
use shared::time::UtcTime;

pub use backfill::backfill;
pub use forget::forget;
pub use sync::SYNCED;

use crate::Error;
use crate::lake::TagEvent;
use crate::raw::read_object;
use crate::snapshot::{Checked, RunConfig};
use crate::storage::{ObjectStore, PutOptions};
use profiles::{ProfileIds, Profiles, Reading};
use spill::{Scratch, Spill};

/// Over-represented values kept per audience (`audiences/v1/<id>/insight.json`).
const INSIGHTS: usize = 10;

/// Profiles evaluated together by the columnar engine.
const RECOMPUTE_CHUNK: usize = 10_000;

/// What a computation found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// When (ms since the epoch).
    pub computed_at: i64,
    /// Profiles computed.
    pub profiles: usize,
    /// Distinct events read.
    pub events: usize,
    /// Events whose identifiers are not (yet) in the identity state.
    pub unresolved_events: usize,
    /// Per tag: profiles with a value.
    pub tags: BTreeMap<String, TagReport>,
    /// Per audience: size and the last change.
    pub audiences: BTreeMap<String, AudienceReport>,
    /// Statistical tags whose new version was backfilled by this computation (served by ingest from now on).
    #[serde(default)]
    pub backfilled: Vec<String>,
    /// Products tagged (`products/v1/tags.json.gz`).
    #[serde(default)]
    pub products: usize,
    /// Per population tag (propensity, RFM, affinity): the model fitted, with its evaluation, or why none was.
    #[serde(default)]
    pub models: BTreeMap<String, crate::predict::Fitted>,
    /// Audience entries and exits recorded on profiles by this computation (and delivered to subscribed
    /// destinations).
    #[serde(default)]
    pub membership_changes: usize,
    /// Audience entries sent to destinations newly subscribed to an audience (its current members).
    #[serde(default)]
    pub initial_sync: usize,
    /// Bytes of events the computation kept in temporary files, by chunk of profiles (what the tagging
    /// function's ephemeral storage must hold).
    #[serde(default)]
    pub spilled_bytes: u64,
}

/// One tag's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagReport {
    /// Its version computed.
    pub version: u32,
    /// Profiles with a value.
    pub with_value: usize,
    /// `with_value / profiles`.
    pub coverage: f64,
}

/// One audience's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudienceReport {
    /// Members.
    pub size: usize,
    /// Profiles that entered since the previous computation.
    pub entered: usize,
    /// Profiles that exited.
    pub exited: usize,
}

/// Every stored event, with its identity keys, to `each`: the lake's parts (the columns tags and audiences use;
/// an event resolves by the identity keys stored with it), then the raw objects not compacted yet. An event
/// can come twice (a compaction finishing meanwhile, or retried): callers keep each messageId once.
pub(crate) async fn read_events<S: ObjectStore>(
    store: &S,
    identity: &shared::identity::IdentityRules,
    mut each: impl FnMut(TagEvent, &[String]) -> Result<(), Error>,
) -> Result<(), Error> {
    // The manifest first: a compaction finishing meanwhile moves events from the tail into parts read after.
    let (manifest, _) = crate::lake::manifest(store).await?;
    let tail = crate::lake::raw_tail(store, &manifest).await?;
    for part in crate::lake::parts(store).await? {
        let Some(object) = store.get(&part.key).await? else { continue };
        crate::lake::for_tags(object.body.into(), &mut each)?;
    }
    for key in tail {
        let Some(read) = read_object(store, &key).await? else { continue };
        for event in read.events {
            each(TagEvent::of(&event), &identity.keys(&event))?;
        }
    }
    Ok(())
}

/// A chunk's events with their properties decoded (what the evaluators' views borrow).
struct ChunkEvents {
    rows: Vec<(u32, TagEvent)>,
    properties: Vec<Map<String, Value>>,
}

impl ChunkEvents {
    /// Chunk `chunk`'s events with the properties `wanted` (sorted) decoded: what tags, audiences and product
    /// tags read.
    fn read(spill: &Spill, chunk: usize, wanted: &[String], cleaning: &CleaningRules) -> Result<Self, Error> {
        let rows = spill.read(chunk)?;
        let properties = rows.iter().map(|(_, e)| e.clean_properties_of(wanted, cleaning)).collect::<Result<_, _>>()?;
        Ok(Self { rows, properties })
    }

    /// Views in profile order, with their profile numbers.
    fn views(&self) -> Vec<(u32, EventView<'_>)> {
        self.rows.iter().zip(&self.properties).map(|((n, e), p)| (*n, e.view(p))).collect()
    }
}

/// A chunk evaluated: its events, its event table (for product tags), and per profile its traits, its tag
/// values and the audiences it is a member of.
struct Evaluated {
    events: usize,
    table: arrow_array::RecordBatch,
    profiles: Vec<EvaluatedProfile>,
}

/// One profile of an [`Evaluated`] chunk.
struct EvaluatedProfile {
    traits: Map<String, Value>,
    tags: BTreeMap<String, Value>,
    member_of: BTreeSet<String>,
}

/// Runs `work` on chunks `0..chunks` on `threads` threads of their own (thread `t` takes chunks `t`, `t +
/// threads`, …), and hands each result to `then` on this thread, in chunk order, while the threads go on. A
/// thread keeps at most one result waiting; an error stops every thread.
fn in_order<T: Send>(
    chunks: usize,
    threads: usize,
    work: impl Fn(usize) -> Result<T, Error> + Sync,
    mut then: impl FnMut(usize, T) -> Result<(), Error>,
) -> Result<(), Error> {
    let threads = threads.clamp(1, chunks.max(1));
    let work = &work;
    std::thread::scope(|scope| {
        let (mut results, mut handles) = (Vec::with_capacity(threads), Vec::with_capacity(threads));
        for t in 0..threads {
            let (send, receive) = std::sync::mpsc::sync_channel(1);
            results.push(receive);
            handles.push(scope.spawn(move || {
                for c in (t..chunks).step_by(threads) {
                    let result = work(c);
                    let failed = result.is_err();
                    // Sending fails once this thread's results are no longer wanted (an error elsewhere).
                    if send.send(result).is_err() || failed {
                        return;
                    }
                }
            }));
        }
        let mut handed = || -> Result<(), Error> {
            for c in 0..chunks {
                let result = results[c % threads]
                    .recv()
                    .unwrap_or_else(|_| Err(Error::Machine("a recompute thread stopped".into())));
                then(c, result?)?;
            }
            Ok(())
        };
        let outcome = handed();
        // The receivers go before the threads are joined, so that none waits to send.
        drop(results);
        let panicked = handles.into_iter().map(|h| h.join()).filter(Result::is_err).count();
        match (outcome, panicked) {
            (_, 1..) => Err(Error::Machine(format!("{panicked} recompute thread(s) panicked"))),
            (outcome, _) => outcome,
        }
    })
}

/// The tag values of every profile, written as they are computed:
/// `{"computedAt": ms, "profiles": {profile id: {tag id: value}}}`, gzipped, profiles in the recompute's
/// order (profile shard, then id).
struct ValuesWriter {
    /// Buffered: the encoder works per write, and values come in small pieces.
    out: std::io::BufWriter<flate2::write::GzEncoder<Vec<u8>>>,
    first: bool,
}

impl ValuesWriter {
    fn new(now_ms: i64) -> Result<Self, Error> {
        // The fastest level: values of every profile are many megabytes, and this is on the recompute's path.
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut out = std::io::BufWriter::with_capacity(1 << 16, encoder);
        write!(out, r#"{{"computedAt":{now_ms},"profiles":{{"#).map_err(write_error)?;
        Ok(Self { out, first: true })
    }

    fn add(&mut self, id: &str, values: &BTreeMap<String, Value>) -> Result<(), Error> {
        if !std::mem::take(&mut self.first) {
            self.out.write_all(b",").map_err(write_error)?;
        }
        serde_json::to_writer(&mut self.out, id).map_err(Error::encoding)?;
        self.out.write_all(b":").map_err(write_error)?;
        serde_json::to_writer(&mut self.out, values).map_err(Error::encoding)
    }

    fn finish(mut self) -> Result<Vec<u8>, Error> {
        self.out.write_all(b"}}").map_err(write_error)?;
        self.out.into_inner().map_err(|e| write_error(e.into_error()))?.finish().map_err(write_error)
    }
}

/// Each profile's tag values written as they are computed (compact JSON, one after another in a temporary
/// file), for the backfill to store on the profiles: memory keeps only where each ends.
struct Keeping {
    scratch: Scratch,
    out: std::io::BufWriter<std::fs::File>,
    ends: Vec<u64>,
    written: u64,
}

impl Keeping {
    fn new() -> Result<Self, Error> {
        let scratch = Scratch::new()?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(scratch.dir.join("values.json"))
            .map_err(write_error)?;
        Ok(Self { scratch, out: std::io::BufWriter::with_capacity(1 << 16, file), ends: Vec::new(), written: 0 })
    }

    /// The next profile's values (profiles in number order).
    fn push(&mut self, values: &BTreeMap<String, Value>) -> Result<(), Error> {
        let json = serde_json::to_vec(values).map_err(Error::encoding)?;
        self.out.write_all(&json).map_err(write_error)?;
        self.written += json.len() as u64;
        self.ends.push(self.written);
        Ok(())
    }

    /// Done writing; `ids` are the profiles' ids, numbered as the values were pushed.
    fn finish(self, ids: ProfileIds) -> Result<Kept, Error> {
        let file = self.out.into_inner().map_err(|e| write_error(e.into_error()))?;
        Ok(Kept { _scratch: self.scratch, file, ends: self.ends, ids })
    }
}

/// The values [`Keeping`] wrote, by profile id.
struct Kept {
    _scratch: Scratch,
    file: std::fs::File,
    ends: Vec<u64>,
    ids: ProfileIds,
}

impl Kept {
    /// A profile's values (none for a profile created since they were computed: ingest gives it its own).
    fn get(&self, id: &str) -> Result<BTreeMap<String, Value>, Error> {
        let Some(n) = self.ids.number(id).map(|n| n as usize).filter(|n| *n < self.ends.len()) else {
            return Ok(BTreeMap::new());
        };
        let start = if n == 0 { 0 } else { self.ends[n - 1] };
        let mut json = vec![0; (self.ends[n] - start) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut json, start)
            .map_err(|e| Error::Machine(format!("reading the kept tag values: {e}")))?;
        serde_json::from_slice(&json).map_err(|e| Error::Corrupt(format!("kept tag values: {e}")))
    }
}

fn write_error(e: std::io::Error) -> Error {
    Error::Machine(format!("writing the tag values: {e}"))
}

/// Computes every tag and audience for every profile at `now` and writes the results.
///
/// The profiles are read into compact columns (`tagging::profiles`), the events once and spilled by chunk of
/// profiles ([`Spill`]); then chunks, one per core: their event and profile tables, the columnar evaluation
/// and audiences per profile; in profile order, the outputs add up as they go (tag values, members, insight
/// counts, product tags). Memory holds the profiles' columns, a chunk per core, the members (profile numbers),
/// and the values written so far (compressed; also to a temporary file when a tag version is to be backfilled).
pub async fn full_recompute<S: ObjectStore + Clone>(store: &S, now: UtcTime) -> Result<Report, Error> {
    full_recompute_with(store, &RunConfig::load(store).await?, now).await
}

/// [`full_recompute`] with the configuration a run has loaded.
pub async fn full_recompute_with<S: ObjectStore + Clone>(
    store: &S,
    config: &RunConfig,
    now: UtcTime,
) -> Result<Report, Error> {
    recompute_by(store, config, now, RECOMPUTE_CHUNK, BATCH).await
}

/// The C library's malloc arenas the tagging function runs with (`MALLOC_ARENA_MAX`, set by the Terraform
/// module; `cdp bench tagging` measures with it). With one arena per thread (glibc's default is eight per
/// core), memory the recompute frees on one thread is not reused by the backfill's work on others, and the
/// first recompute with a backfill peaked about a third higher (`cdp bench tagging`, docs/benchmarks.md).
pub const MALLOC_ARENAS: &str = "2";

/// Profiles per state transaction of the full recompute's writers (the backfill, the memberships recorded,
/// the initial sync), about: a transaction holds its profiles whole.
pub(crate) const BATCH: usize = 10_000;

/// How the full recompute's writers (the memberships recorded, the initial sync) write to the state: to which
/// store, with the run's configuration, at what time, and about how many profiles per transaction.
pub(crate) struct Writes<'a, S> {
    store: &'a S,
    config: &'a RunConfig,
    now: UtcTime,
    batch: usize,
}

impl<S> Clone for Writes<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Writes<'_, S> {}

/// [`full_recompute`] with `per_chunk` profiles per chunk and state transactions of about `batch` profiles
/// (the results depend on neither).
async fn recompute_by<S: ObjectStore + Clone>(
    store: &S,
    config: &RunConfig,
    now: UtcTime,
    per_chunk: usize,
    batch: usize,
) -> Result<Report, Error> {
    let checked = config.snapshot.checked()?;
    let audience_ids: Vec<String> = checked.audiences.audiences().iter().map(|a| a.id.clone()).collect();
    let profiles = Profiles::read(store, config.snapshot.vault.clone(), Reading::Recompute(&audience_ids)).await?;
    let now_ms = now.unix_millis();
    let mut report = Report { computed_at: now_ms, profiles: profiles.len(), ..Report::default() };
    let reads = Reads::of(&checked);
    let spill = spill_events(store, &config.snapshot.identity, &profiles, &reads, per_chunk, &mut report).await?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunks = Chunks {
        checked: &checked,
        cleaning: &config.snapshot.profiles.cleaning,
        profiles: &profiles,
        spill: &spill,
        reads: &reads,
        per_chunk,
        threads,
        now_ms,
    };
    let population = fit_models(store, &chunks, &mut report).await?;
    // With tag versions to backfill, each profile's values are kept for it (in a temporary file).
    let keeping = match backfill::pending(store, &checked.tags, &config.snapshot.profiles.cleaning).await?.is_empty() {
        true => None,
        false => Some(Keeping::new()?),
    };
    let totals = evaluate_chunks(&chunks, &population, &audience_ids, keeping, &mut report)?;
    drop(spill);
    let body = serde_json::to_vec(&serde_json::json!({"computedAt": now_ms, "products": totals.products}))
        .map_err(Error::encoding)?;
    store.put(keys::PRODUCT_TAGS, shared::storage::gzip(&body), gz()).await?;
    store.put(keys::TAG_VALUES, totals.values, gz()).await?;
    let writes = Writes { store, config, now, batch };
    match config.snapshot.activation_with(&checked) {
        Ok(activation) => {
            if let Some(activation) = &activation {
                report.initial_sync = sync::initial(writes, activation, &profiles).await?;
            }
            report.membership_changes =
                memberships::record(writes, &checked.audiences, &totals.members, &profiles, activation.as_ref())
                    .await?;
        }
        // Recording changes now would leave them undelivered: they are recorded once the file is fixed.
        Err(problem) => tracing::warn!(%problem, "destinations do not load; audience memberships wait"),
    }
    write_audiences(store, &audience_ids, totals.members, &totals.insight, &profiles, now_ms, &mut report).await?;
    // New tag versions: rebuild their incremental state on every profile, so ingest can serve them.
    if let Some(kept) = totals.kept {
        // Of the profiles, only their ids stay: to find each one's values.
        let kept = kept.finish(profiles.into_ids())?;
        report.backfilled = backfill::backfill_by(store, config, &checked.tags, &|id| kept.get(id), now, batch).await?;
    }
    let body = serde_json::to_vec_pretty(&report).map_err(Error::encoding)?;
    store.put(keys::TAGS_REPORT, body, PutOptions::json()).await?;
    Ok(report)
}

/// What the recompute reads of traits and events: the traits and properties its tables hold, and the
/// properties decoded for them, for product tags and for the audiences' behaviour conditions (and, of long
/// properties, all the spill keeps).
struct Reads {
    traits: Vec<String>,
    properties: Vec<String>,
    wanted: Vec<String>,
}

impl Reads {
    fn of(checked: &Checked) -> Self {
        let products = &checked.products;
        let mut properties = checked.tags.properties();
        for p in [&products.product, &products.category, &products.revenue, &products.quantity] {
            if !properties.contains(p) {
                properties.push(p.clone());
            }
        }
        let mut wanted = properties.clone();
        wanted.extend(checked.audiences.properties());
        wanted.sort();
        wanted.dedup();
        Self { traits: checked.tags.traits(), properties, wanted }
    }
}

/// Phase 1: every stored event to its profile's chunk of the spill; events whose identifiers resolve to no
/// profile are counted.
async fn spill_events<S: ObjectStore>(
    store: &S,
    identity: &shared::identity::IdentityRules,
    profiles: &Profiles,
    reads: &Reads,
    per_chunk: usize,
    report: &mut Report,
) -> Result<Spill, Error> {
    let mut spill = Spill::new(profiles.len(), per_chunk)?.keeping(reads.wanted.clone());
    let mut unresolved = HashSet::new();
    read_events(store, identity, |event, keys| match keys.iter().find_map(|key| profiles.resolve(key)) {
        Some(n) => spill.push(n, &event),
        None => {
            unresolved.insert(event.dedup_key);
            Ok(())
        }
    })
    .await?;
    spill.seal()?;
    report.spilled_bytes = spill.spilled;
    report.unresolved_events = unresolved.len();
    Ok(spill)
}

/// The chunks of profiles the passes over the spill work on, on `threads` threads.
struct Chunks<'a> {
    checked: &'a Checked,
    cleaning: &'a CleaningRules,
    profiles: &'a Profiles,
    spill: &'a Spill,
    reads: &'a Reads,
    per_chunk: usize,
    threads: usize,
    now_ms: i64,
}

impl Chunks<'_> {
    /// Chunk `c`'s profile numbers.
    fn profiles(&self, c: usize) -> std::ops::Range<u32> {
        (c * self.per_chunk) as u32..((c + 1) * self.per_chunk).min(self.profiles.len()) as u32
    }

    /// Chunk `c`'s events, with the properties wanted decoded.
    fn events(&self, c: usize) -> Result<ChunkEvents, Error> {
        ChunkEvents::read(self.spill, c, &self.reads.wanted, self.cleaning)
    }
}

/// Phase 2, only for population tags (propensity, RFM, affinity): a pass over every chunk's events fits their
/// models, which are stored beside the tags.
async fn fit_models<S: ObjectStore>(
    store: &S,
    chunks: &Chunks<'_>,
    report: &mut Report,
) -> Result<shared::tags::Population, Error> {
    let mut trainer = crate::predict::Trainer::new(&chunks.checked.tags, chunks.now_ms);
    if trainer.needed() {
        let table = |c: usize| Ok(event_table(chunks.events(c)?.views(), &chunks.reads.properties));
        in_order(chunks.spill.chunks(), chunks.threads, table, |c, table| {
            trainer.observe(chunks.profiles(c).start, chunks.profiles(c).len(), &table)
        })?;
    }
    let (population, fitted) = trainer.finish();
    for (id, model) in &population.models {
        let body = serde_json::to_vec_pretty(model).map_err(Error::encoding)?;
        store.put(&keys::tag_model(id), body, PutOptions::json()).await?;
    }
    report.models = fitted;
    Ok(population)
}

/// What phase 3 adds up over every profile.
struct Totals {
    /// `tags/v1/values.json.gz`, written.
    values: Vec<u8>,
    /// Each audience's members, by profile number (ascending).
    members: Vec<Vec<u32>>,
    insight: InsightCounts,
    products: BTreeMap<String, shared::tags::ProductTag>,
    /// Each profile's values, for the backfill.
    kept: Option<Keeping>,
}

/// Phase 3: every tag and audience of a chunk's profiles (chunks on every core), then in profile order what
/// adds up — product tags, values, members, insight — and each tag's coverage in `report`.
fn evaluate_chunks(
    chunks: &Chunks<'_>,
    population: &shared::tags::Population,
    audience_ids: &[String],
    mut kept: Option<Keeping>,
    report: &mut Report,
) -> Result<Totals, Error> {
    let (tags, audiences, now_ms) = (&chunks.checked.tags, &chunks.checked.audiences, chunks.now_ms);
    let evaluate = |c: usize| -> Result<Evaluated, Error> {
        let first = chunks.profiles(c).start;
        let traits: Vec<Map<String, Value>> =
            chunks.profiles(c).map(|n| chunks.profiles.traits(n)).collect::<Result<_, _>>()?;
        let events = chunks.events(c)?;
        let views = events.views();
        let table = event_table(views.clone(), &chunks.reads.properties);
        let profile_table = profile_table(first, &traits.iter().collect::<Vec<_>>(), &chunks.reads.traits);
        let columns = tags
            .evaluate_columns_with(&profile_table, first, &table, now_ms, population)
            .map_err(|e| Error::Internal(format!("the chunk's tables: {e}")))?;
        let mut evaluated = Vec::with_capacity(traits.len());
        let mut next = 0;
        for (i, traits) in traits.into_iter().enumerate() {
            let start = next;
            while next < views.len() && views[next].0 == first + i as u32 {
                next += 1;
            }
            let own: Vec<EventView<'_>> = views[start..next].iter().map(|(_, view)| *view).collect();
            let tag_values = columns.row(i);
            let member_of = audiences.members(&traits, &tag_values, &own, now_ms);
            evaluated.push(EvaluatedProfile { traits, tags: tag_values, member_of });
        }
        Ok(Evaluated { events: events.rows.len(), table, profiles: evaluated })
    };
    let mut values = ValuesWriter::new(now_ms)?;
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); audience_ids.len()];
    let mut insight = InsightCounts::default();
    let mut products = ProductTags::new(chunks.checked.products.clone());
    in_order(chunks.spill.chunks(), chunks.threads, evaluate, |c, evaluated| {
        let chunk = chunks.profiles(c);
        report.events += evaluated.events;
        products.observe(chunk.start, chunk.len(), &evaluated.table).map_err(|e| Error::Internal(e.to_string()))?;
        for (n, EvaluatedProfile { traits, tags: tag_values, member_of }) in chunk.zip(evaluated.profiles) {
            for audience in &member_of {
                if let Some(a) = audience_ids.iter().position(|id| id == audience) {
                    members[a].push(n);
                }
            }
            insight.observe(&traits, &tag_values, member_of.iter().map(String::as_str));
            for tag in tag_values.keys() {
                report.tags.entry(tag.clone()).or_default().with_value += 1;
            }
            if !tag_values.is_empty() {
                values.add(chunks.profiles.id(n), &tag_values)?;
            }
            if let Some(kept) = kept.as_mut() {
                kept.push(&tag_values)?;
            }
        }
        Ok(())
    })?;
    for tag in tags.tags() {
        let entry = report.tags.entry(tag.id.clone()).or_default();
        entry.version = tag.version;
        entry.coverage = entry.with_value as f64 / report.profiles.max(1) as f64;
    }
    let products = products.finish();
    report.products = products.len();
    Ok(Totals { values: values.finish()?, members, insight, products, kept })
}

/// Phase 4: each audience's insight (what makes it distinct; the API serves it with the audience), its
/// snapshot and, when anything changed, its diff.
async fn write_audiences<S: ObjectStore>(
    store: &S,
    audience_ids: &[String],
    members: Vec<Vec<u32>>,
    insight: &InsightCounts,
    profiles: &Profiles,
    now_ms: i64,
    report: &mut Report,
) -> Result<(), Error> {
    for (audience, now_members) in audience_ids.iter().zip(&members) {
        let ranked = insight.top(audience, INSIGHTS);
        let body = serde_json::json!({"computedAt": now_ms, "size": now_members.len(), "values": ranked});
        store.put(&keys::audience(audience, "insight.json"), body.to_string().into_bytes(), PutOptions::json()).await?;
    }
    for (audience, now_members) in audience_ids.iter().zip(members) {
        let now_members: BTreeSet<String> = now_members.into_iter().map(|n| profiles.id(n).to_string()).collect();
        let key = keys::audience(audience, "snapshot.json.gz");
        let previous: Snapshot = match store.get(&key).await? {
            Some(object) => shared::storage::gunzip(&object.body)
                .ok()
                .and_then(|json| serde_json::from_slice(&json).ok())
                .ok_or_else(|| Error::Corrupt(format!("{key} does not decode")))?,
            None => Snapshot::default(),
        };
        let (next, diff) = previous.next(now_members, now_ms);
        report.audiences.insert(
            audience.clone(),
            AudienceReport { size: next.members.len(), entered: diff.entered.len(), exited: diff.exited.len() },
        );
        if !diff.is_empty() {
            let body =
                serde_json::to_vec(&forget::StoredDiff { computed_at: now_ms, diff }).map_err(Error::encoding)?;
            store.put(&keys::audience(audience, &format!("diffs/{now_ms:013}.json")), body, PutOptions::json()).await?;
        }
        let body = serde_json::to_vec(&next).map_err(Error::encoding)?;
        store.put(&key, shared::storage::gzip(&body), gz()).await?;
    }
    Ok(())
}

fn gz() -> PutOptions {
    PutOptions { content_type: Some("application/gzip"), ..PutOptions::json() }
}

/// The latest report, if any computation ran.
pub async fn latest_report<S: ObjectStore>(store: &S) -> Result<Option<Report>, Error> {
    match store.get(keys::TAGS_REPORT).await? {
        None => Ok(None),
        Some(object) => {
            serde_json::from_slice(&object.body).map(Some).map_err(|e| Error::Corrupt(format!("{TAGS_REPORT}: {e}")))
        }
    }
}

mod backfill;
mod forget;
mod memberships;
pub(crate) mod profiles;
mod spill;
mod sync;
#[cfg(test)]
mod tests;
