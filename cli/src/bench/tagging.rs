//! `cdp bench tagging`: the tagging function's whole full recompute (`functions::tagging::full_recompute`:
//! read the state and every event, evaluate the 20 tags of `cdp bench tags` and two audiences, write values,
//! snapshots, diffs, insight and the report) on the folder store, reading its events from the lake, side by
//! side in the same run with the same recompute reading the same events from raw objects (the store it read
//! before the lake). The two must write the same tag values.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use functions::storage::{FsStore, ObjectStore, PutOptions};
use serde_json::{Value, json};
use shared::event::{CanonicalEvent, EventType};
use shared::storage::keys;
use shared::time::UtcTime;

/// Events per raw object (a collector's request) and per lake part.
const PER_OBJECT: usize = 500;
const PER_PART: usize = 500_000;

/// The moment the recompute runs at (two years after the synthetic history starts).
fn now() -> anyhow::Result<UtcTime> {
    UtcTime::from_unix_millis(super::ingest::at(0).unix_millis() + 730 * 86_400_000).context("time")
}

/// Writes the data set into `dir`: the state of `people` people, the definitions, and every event both as raw
/// objects and as lake parts (the watermark past every raw object). Run in a process of its own, so the
/// measuring process's memory holds nothing of it.
pub(crate) fn generate(dir: &Path, people: u64, events: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let store = FsStore::open(dir)?;
    let now = now()?;
    let now_ms = now.unix_millis();
    runtime.block_on(async {
        let start = Instant::now();
        super::ingest::build_base(&store, people).await?;
        let tags: Vec<Value> =
            super::tags::twenty_tags()?.tags().iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
        let audiences = json!([
            {"id": "buyers", "status": "active", "when": {"field": "tag:active_buyer", "op": "eq", "value": true}},
            {"id": "vip", "status": "active", "when": {"field": "tag:tier", "op": "eq", "value": "high"}}
        ]);
        store.put("config/tags.json", serde_json::to_vec(&tags)?, PutOptions::json()).await?;
        store.put("config/audiences.json", audiences.to_string().into_bytes(), PutOptions::json()).await?;

        // The same events twice: as raw objects, and as lake parts with the watermark past every raw object.
        let rules = shared::identity::IdentityRules::default();
        let mut rng = super::kit::Xorshift(0x2545_f491_4f6c_dd1d);
        let (mut object, mut part, mut last_raw, mut total) = (Vec::new(), Vec::new(), String::new(), 0usize);
        let (mut n, mut objects) = (0u64, 0i64);
        let mut entropy = shared::ids::Entropy::from_seed([7; 32]);
        for person in 0..people {
            for (kind, name, at, id, properties) in super::tags::history(person, events, now_ms, &mut rng) {
                n += 1;
                let kind = if kind == "page" { EventType::Page } else { EventType::Track };
                let at = UtcTime::from_unix_millis(at).context("time")?;
                let mut event: CanonicalEvent =
                    super::ingest::event(n, person, kind, at, person % 2 == 0 || n % 3 == 0);
                (event.message_id, event.event, event.properties) = (id, name.map(String::from), Some(properties));
                let keys = rules.every_key(&event);
                object.push(event.clone());
                part.push((event, keys));
                total += 1;
            }
            if object.len() >= PER_OBJECT || person + 1 == people {
                // Named a millisecond apart, an hour before now: in receipt order, all settled.
                objects += 1;
                let named = UtcTime::from_unix_millis(now_ms - 3_600_000 + objects).context("time")?;
                last_raw = shared::storage::object_key(shared::storage::ObjectKind::Raw, named, entropy.ulid(named));
                let mut ndjson = Vec::new();
                for event in object.drain(..) {
                    serde_json::to_writer(&mut ndjson, &event)?;
                    ndjson.push(b'\n');
                }
                store.put(&last_raw, shared::storage::gzip(&ndjson), PutOptions::ndjson_gz()).await?;
            }
            if part.len() >= PER_PART || person + 1 == people {
                let key = format!("{}dt=2026-01-01/part-{n:012}.parquet", functions::lake::EVENTS);
                store.put(&key, functions::lake::encode(&part)?, functions::lake::part_options()).await?;
                part.clear();
            }
        }
        let manifest =
            functions::lake::Manifest { watermark: Some(last_raw), compacted_at: now_ms, events: total as u64 };
        store.put(functions::lake::MANIFEST, serde_json::to_vec(&manifest)?, PutOptions::json()).await?;
        println!(
            "cdp bench tagging: {people} people, {total} events (raw objects and lake parts) built in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        Ok(())
    })
}

/// One full recompute of the data in `dir`, in this (fresh) process: prints `{"seconds", "peakBytes",
/// "events", "profiles"}`.
pub(crate) fn measure(dir: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let store = FsStore::open(dir)?;
    let now = now()?;
    let start = Instant::now();
    let report = runtime.block_on(functions::tagging::full_recompute(&store, now))?;
    let seconds = start.elapsed().as_secs_f64();
    let peak = super::kit::peak_rss_bytes().unwrap_or(0);
    println!(
        "{}",
        json!({"seconds": seconds, "peakBytes": peak, "events": report.events, "profiles": report.profiles})
    );
    Ok(())
}

/// Runs this benchmark's command in a child process with `args`, with the malloc arenas the tagging function
/// runs with (unless `MALLOC_ARENA_MAX` is set already); its last line of output, as JSON when asked.
fn child(args: &[&std::ffi::OsStr]) -> anyhow::Result<String> {
    let arenas = std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| functions::tagging::MALLOC_ARENAS.into());
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "tagging"])
        .args(args)
        .env("MALLOC_ARENA_MAX", arenas)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !output.status.success() {
        bail!("cdp bench tagging {args:?} failed");
    }
    Ok(String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default().to_string())
}

pub(crate) fn run(people: u64, events: usize, data: Option<PathBuf>) -> anyhow::Result<()> {
    if people == 0 {
        bail!("need --people ≥ 1");
    }
    let temporary = tempfile::tempdir()?;
    let dir = data.unwrap_or_else(|| temporary.path().join("data"));
    let (lake, aside) = (dir.join("lake"), dir.join("lake-aside"));
    if aside.exists() {
        // An earlier run stopped while the lake was out of the way.
        std::fs::rename(&aside, &lake)?;
    }
    if !dir.join(functions::lake::MANIFEST).exists() {
        let (people, events) = (people.to_string(), events.to_string());
        println!(
            "{}",
            child(&[
                "--people".as_ref(),
                people.as_ref(),
                "--events".as_ref(),
                events.as_ref(),
                "--generate".as_ref(),
                dir.as_os_str()
            ])?
        );
    }
    let store = FsStore::open(&dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let total = runtime.block_on(functions::lake::manifest(&store))?.0.events as usize;
    let values = || -> anyhow::Result<Value> {
        let object = runtime.block_on(store.get(keys::TAG_VALUES))?.context("no tag values written")?;
        Ok(serde_json::from_slice(&shared::storage::gunzip(&object.body)?)?)
    };
    let measure = |from: &str| -> anyhow::Result<f64> {
        let line = child(&["--measure".as_ref(), dir.as_os_str()])?;
        let result: Value = serde_json::from_str(&line).with_context(|| format!("the measurement said {line:?}"))?;
        let seconds = result["seconds"].as_f64().context("seconds")?;
        if result["events"].as_u64() != Some(total as u64) || result["profiles"].as_u64() != Some(people) {
            bail!(
                "{from}: read {} events of {total} for {} profiles of {people}",
                result["events"],
                result["profiles"]
            );
        }
        println!(
            "  from {from:<4}  {seconds:>7.2} s  {:>9.0} events/s  {:>8.1} µs/profile  peak {:.0} MB",
            total as f64 / seconds,
            seconds * 1e6 / people as f64,
            result["peakBytes"].as_f64().unwrap_or(0.0) / 1e6
        );
        Ok(seconds)
    };
    // The first recompute also backfills the new tags' state on every profile: once, apart.
    let line = child(&["--measure".as_ref(), dir.as_os_str()])?;
    println!("  first recompute (with the backfill of every tag's state): {line}");
    let lake_seconds = measure("lake")?;
    let from_lake = values()?;
    // The lake out of the way: the recompute reads every raw object, as before the lake.
    std::fs::rename(&lake, &aside)?;
    let raw = measure("raw");
    std::fs::rename(&aside, &lake)?;
    let raw_seconds = raw?;
    if values()? != from_lake {
        bail!("the two recomputes wrote different tag values");
    }
    println!(
        "  same tag values from both; reading the lake takes {:.2}× the time of raw objects",
        lake_seconds / raw_seconds
    );
    Ok(())
}
