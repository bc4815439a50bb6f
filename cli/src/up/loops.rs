//! What `cdp up` runs beside the server: ingest of new raw objects (and reconciliation), the tag and
//! audience recompute, and upkeep (lake compaction, erasures).

use std::sync::Arc;
use std::time::Duration;

use functions::ingest::ingest;
use functions::snapshot::RunConfig;
use functions::storage::FsStore;
use shared::storage::keys;

/// Shard counts of a state `cdp up` creates: a laptop's state is smaller than the cloud's (sized for ten
/// million profiles), and each compaction rewrites (and `fsync`s) every shard it touches. A state keeps the
/// counts it was created with.
const LOCAL_SHARDS: functions::state::ShardCounts =
    functions::state::ShardCounts { ids: 128, profiles: 128, dedup: 32 };

/// Compaction of `cdp up`'s state: decoded deltas stay in memory between batches in this long-lived process,
/// so fold less often (each fold stalls ingest while it rewrites the shards).
const LOCAL_COMPACTION: functions::state::Compaction =
    functions::state::Compaction { max_deltas: 128, max_delta_ratio: 0.25, min_fold_bytes: 4 << 20 };

/// The state settings of `cdp up`: its shard counts and compaction, the rest as in the cloud.
pub(crate) fn local_state() -> functions::state::Settings {
    functions::state::Settings { shards: LOCAL_SHARDS, compaction: LOCAL_COMPACTION, ..Default::default() }
}

/// Reconciliation of `cdp up`: the collector is in this process and writes an object whole before queueing
/// it, so ten seconds cover any write; at start, nothing is left to a notification (the queue died with the
/// previous process).
const LOCAL_RECONCILE: functions::ingest::reconcile::Timing =
    functions::ingest::reconcile::Timing { grace_ms: 10_000, settle_ms: 10_000 };

/// The single writer of the state: ingests new raw objects in batches, in arrival order. A failed batch is
/// kept and retried (ingest is idempotent), so an event stored is an event applied. At start, and every half
/// minute when idle, it reconciles: applies the raw objects stored but never applied (a crash loses the
/// queue, not the objects).
pub(super) async fn ingest_loop(
    store: FsStore,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<String>,
    ingested: Arc<tokio::sync::Notify>,
) {
    let mut pending: Vec<String> = Vec::new();
    let mut timing = functions::ingest::reconcile::Timing { grace_ms: 0, ..LOCAL_RECONCILE };
    let mut reconciled: Option<tokio::time::Instant> = None;
    loop {
        if reconciled.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
            match reconcile_once(&store, timing).await {
                Ok(report) => {
                    reconciled = Some(tokio::time::Instant::now());
                    timing = LOCAL_RECONCILE;
                    if report.missing > 0 {
                        ingested.notify_one();
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "raw objects not reconciled; retrying in 2 s");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            }
        }
        if pending.is_empty() {
            match tokio::time::timeout(Duration::from_secs(30), queue.recv()).await {
                Ok(Some(key)) => pending.push(key),
                Ok(None) => return,
                Err(_) => continue,
            }
        }
        while pending.len() < 256 {
            match queue.try_recv() {
                Ok(key) => pending.push(key),
                Err(_) => break,
            }
        }
        let result = match RunConfig::load(&store).await {
            Ok(config) => ingest(&store, &pending, &RunConfig { state: local_state(), ..config }, crate::now()).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(report) => {
                report.log();
                pending.clear();
                ingested.notify_one();
            }
            Err(error) => {
                tracing::error!(%error, objects = pending.len(), "ingest failed; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn reconcile_once(
    store: &FsStore,
    timing: functions::ingest::reconcile::Timing,
) -> Result<functions::ingest::reconcile::Reconciled, functions::Error> {
    let config = RunConfig::load(store).await?;
    let config = RunConfig { state: local_state(), ..config };
    let report = functions::ingest::reconcile::reconcile(store, &config, crate::now(), timing).await?;
    if report.missing > 0 || report.unverifiable > 0 {
        tracing::warn!(
            objects = report.missing,
            events = report.applied,
            unverifiable = report.unverifiable,
            "applied raw objects stored but never ingested"
        );
    }
    Ok(report)
}

/// Recomputes tags and audiences (when any are defined): after ingest (at most every 2 s), when
/// `config/tags.json`, `config/audiences.json` or `config/destinations.json` changes, and every `interval`.
/// Advances privacy requests every second (in the cloud, the tagging function's schedule does); locally the
/// state's readers are this process's own, so two seconds of grace are plenty. Every ten seconds, compacts
/// raw objects into the lake (here the collector is in this process, so a two-second settle is plenty) and
/// folds the data dictionary.
/// One loop, so a compaction and an erasure never run at once.
pub(super) async fn upkeep_loop(store: FsStore) {
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match functions::privacy::process(&store, 2_000, crate::now()).await {
            Ok(0) => {}
            Ok(advanced) => tracing::info!(requests = advanced, "privacy requests advanced"),
            Err(error) => tracing::error!(%error, "privacy requests not advanced"),
        }
        tick += 1;
        if tick.is_multiple_of(10) {
            match functions::lake::compact_all(&store, 2_000, crate::now(), 100).await {
                Ok(0) => {}
                Ok(events) => tracing::info!(events, "raw events compacted into the lake"),
                Err(error) => tracing::error!(%error, "raw events not compacted"),
            }
            match functions::catalog::fold_all(&store, crate::now(), 10).await {
                Ok(0) => {}
                Ok(parts) => tracing::info!(parts, "data dictionary folded"),
                Err(error) => tracing::error!(%error, "data dictionary not folded"),
            }
        }
    }
}

pub(super) async fn tagging_loop(store: FsStore, ingested: Arc<tokio::sync::Notify>, interval: Duration) {
    use functions::storage::ObjectStore as _;
    let mut last_definitions: Option<(Vec<u8>, Vec<u8>, Vec<u8>)> = None;
    let mut last_run = tokio::time::Instant::now();
    let mut dirty = false;
    loop {
        tokio::select! {
            () = ingested.notified() => dirty = true,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let read = |key: &'static str| {
            let store = store.clone();
            async move { store.get(key).await.ok().flatten().map(|o| o.body).unwrap_or_default() }
        };
        // A destination's subscriptions count too: one newly subscribed to an audience gets its members.
        let definitions =
            (read(keys::CONFIG_TAGS).await, read(keys::CONFIG_AUDIENCES).await, read(keys::CONFIG_DESTINATIONS).await);
        if definitions.0.is_empty() && definitions.1.is_empty() {
            continue;
        }
        let changed = last_definitions.as_ref() != Some(&definitions);
        if !(changed || dirty || last_run.elapsed() >= interval) {
            continue;
        }
        last_definitions = Some(definitions);
        last_run = tokio::time::Instant::now();
        dirty = false;
        match functions::tagging::full_recompute(&store, crate::now()).await {
            Ok(report) => tracing::info!(
                profiles = report.profiles,
                tags = report.tags.len(),
                audiences = report.audiences.len(),
                "tags and audiences computed"
            ),
            Err(error) => tracing::error!(%error, "tags and audiences not computed"),
        }
    }
}
