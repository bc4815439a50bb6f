//! `cdp bench ingest`: the cost of applying one batch of events to an existing state — time, objects and
//! bytes written — on the folder store, as a delta commit beside a commit that rewrites whole shards.

use std::time::Instant;

use anyhow::bail;
use functions::ingest::ingest_events;
use functions::snapshot::RunConfig;
use functions::state::{Compaction, MANIFEST_KEY, Manifest};
use functions::storage::{FsStore, ObjectStore, PutOptions};
use shared::event::{CanonicalEvent, Enrichment, EventType, Identifier};
use shared::time::UtcTime;

pub(crate) fn event(n: u64, person: u64, kind: EventType, at: UtcTime, with_user: bool) -> CanonicalEvent {
    let id = |kind: &str, value: String| Identifier { kind: kind.into(), value, sha256: None };
    let anonymous = format!("anon-{person}");
    let user = format!("user-{person}");
    let mut identifiers = vec![id("anonymous_id", anonymous.clone())];
    if with_user {
        identifiers.insert(0, id("user_id", user.clone()));
        identifiers.push(Identifier {
            kind: "email".into(),
            value: format!("person{person}@example.com"),
            sha256: Some(shared::ids::sha256_hex(&format!("person{person}@example.com"))),
        });
    }
    CanonicalEvent {
        message_id: format!("bench-{n}"),
        kind,
        source_id: "bench".into(),
        received_at: at,
        timestamp: at,
        original_timestamp: None,
        sent_at: None,
        user_id: with_user.then_some(user),
        anonymous_id: Some(anonymous),
        event: (kind == EventType::Track).then(|| "Product Viewed".to_string()),
        name: None,
        category: None,
        group_id: None,
        previous_id: None,
        properties: (kind == EventType::Track).then(|| serde_json::Map::from_iter([("price".into(), 18.5.into())])),
        traits: (kind == EventType::Identify).then(|| serde_json::Map::from_iter([("plan".into(), "pro".into())])),
        context: Default::default(),
        integrations: Default::default(),
        identifiers,
        enrichment: Enrichment::default(),
        extras: Default::default(),
    }
}

fn human(bytes: usize) -> String {
    if bytes < 1_000_000 { format!("{:.1} KB", bytes as f64 / 1e3) } else { format!("{:.1} MB", bytes as f64 / 1e6) }
}

/// People per base-building commit (bounds memory while building).
const BUILD_CHUNK: u64 = 500_000;

/// The instant synthetic events are stamped from (second `sec` after it).
pub(crate) fn at(sec: u64) -> UtcTime {
    UtcTime::from_unix_millis(1_764_331_200_000 + sec as i64 * 1000).unwrap_or_else(|| unreachable!())
}

/// A fully compacted state of `people` people, each identified once with a user id, an anonymous id and an
/// email (`person{p}@example.com`); messageIds `bench-1` to `bench-{people}`.
pub(crate) async fn build_base(store: &FsStore, people: u64) -> anyhow::Result<()> {
    let build = RunConfig {
        state: functions::state::Settings { compaction: Compaction::always(), ..Default::default() },
        ..RunConfig::default()
    };
    let mut first = 0u64;
    while first < people {
        let last = (first + BUILD_CHUNK).min(people);
        let events: Vec<CanonicalEvent> =
            (first..last).map(|p| event(p + 1, p, EventType::Identify, at(p % 3600), true)).collect();
        ingest_events(store, events, &build, at(7200)).await?;
        first = last;
    }
    Ok(())
}

pub(crate) fn run(identifiers: u64, batch: u64) -> anyhow::Result<()> {
    if identifiers < 3 || batch == 0 {
        bail!("need --identifiers ≥ 3 and --batch ≥ 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let store = FsStore::open(dir.path())?;
    let people = identifiers / 3; // a user id, an anonymous id and an email each
    runtime.block_on(async {
        // The base: every person identified once, committed as whole shards (a fully compacted state).
        let start = Instant::now();
        build_base(&store, people).await?;
        let mut n = people;
        let base = store.get(MANIFEST_KEY).await?.map(|o| o.body).unwrap_or_default();
        let manifest: Manifest = serde_json::from_slice(&base)?;
        let state_bytes = manifest.base_bytes();
        println!(
            "cdp bench ingest: base state of {people} people / {} identifiers built in {:.1} s ({} shard objects, {:.1} MB gzipped)",
            people * 3,
            start.elapsed().as_secs_f64(),
            manifest.base.as_ref().map_or(0, |b| b.objects),
            state_bytes as f64 / 1e6
        );

        // The measured batch: 70 % returning known users, 30 % new anonymous visitors.
        let events: Vec<CanonicalEvent> = (0..batch)
            .map(|i| {
                n += 1;
                if i % 10 < 7 {
                    event(n, (i * 7919) % people, EventType::Track, at(8000 + i % 60), true)
                } else {
                    event(n, people + i, EventType::Track, at(8000 + i % 60), false)
                }
            })
            .collect();
        println!();
        println!("| {batch} events | commit | time (s) | events/s | objects written | bytes written | share of state |");
        println!("|---|---|---:|---:|---:|---:|---:|");
        // The same batch on the same base, once per policy: the manifest is put back in between (every other
        // object is immutable, so that restores the base exactly).
        let variants = [("delta (default policy)", Compaction::default()), ("whole shards", Compaction::always())];
        for (name, compaction) in variants {
            store.put(MANIFEST_KEY, base.clone(), PutOptions::json()).await?;
            let config = RunConfig {
                state: functions::state::Settings { compaction, ..Default::default() },
                ..RunConfig::default()
            };
            let start = Instant::now();
            let report = ingest_events(&store, events.clone(), &config, at(9000)).await?;
            let secs = start.elapsed().as_secs_f64();
            let commit = report.commit.unwrap_or_default();
            if report.applied as u64 != batch {
                bail!("applied {} of {batch} events", report.applied);
            }
            let objects = if commit.compacted { commit.shards_written } else { 1 };
            println!(
                "| {name} | {} | {secs:.2} | {:.0} | {objects} | {} | {:.2} % |",
                if commit.compacted { "folded" } else { "delta" },
                batch as f64 / secs,
                human(commit.bytes_written),
                100.0 * commit.bytes_written as f64 / state_bytes.max(1) as f64
            );
        }
        Ok(())
    })
}
