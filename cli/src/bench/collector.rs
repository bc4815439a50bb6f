//! `cdp bench collect`: events/s through a real `cdp up` on loopback, driven from this (second) process, side
//! by side in the same run with a bare HTTP sink (reads the body, answers 200, stores nothing): the transport's
//! ceiling on this machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use functions::storage::FsStore;
use shared::collect::{CollectRequest, Collected, Endpoint};
use shared::ids::Entropy;
use shared::sample::batch_body;
use shared::source::{Sources, new_source};

use super::kit::{agent, free_addr, spawn, wait_healthy};

struct Run {
    events: usize,
    requests: usize,
    elapsed: Duration,
}

/// Sends `bodies` round-robin over `connections` threads until `requests` are answered; every answer must be
/// 200 and (when `expect_accepted` is set) report that many accepted events.
fn drive(
    url: &str,
    bodies: &[String],
    requests: usize,
    connections: usize,
    expect_accepted: Option<usize>,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..connections)
            .map(|_| {
                let next = next.clone();
                scope.spawn(move || -> anyhow::Result<()> {
                    let agent = agent();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= requests {
                            return Ok(());
                        }
                        let body = &bodies[n % bodies.len()];
                        let mut response = agent
                            .post(&format!("{url}/v1/batch"))
                            .header("content-type", "application/json")
                            .send(body.as_bytes())?;
                        let status = response.status().as_u16();
                        let text = response.body_mut().read_to_string()?;
                        if status != 200 {
                            bail!("answer {status}: {text}");
                        }
                        if let Some(expected) = expect_accepted {
                            let answer: serde_json::Value = serde_json::from_str(&text)?;
                            if answer["accepted"] != expected {
                                bail!("expected {expected} accepted events, got {text}");
                            }
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("load thread panicked")))).collect()
    });
    let elapsed = start.elapsed();
    for result in results {
        result?;
    }
    Ok(elapsed)
}

pub(super) fn collect(events: usize, batch: usize, connections: usize) -> anyhow::Result<()> {
    if batch == 0 || events < batch || connections == 0 {
        bail!("need --batch ≥ 1, --events ≥ --batch and --connections ≥ 1");
    }
    let requests = events / batch;
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = FsStore::open(dir.path())?;
    let (_, key) = runtime.block_on(crate::source::create(&store, "bench", "Bench", Vec::new()))?;
    let mut entropy = Entropy::from_seed(crate::seed());
    let bodies: Vec<String> = (0..connections.max(8)).map(|_| batch_body(&mut entropy, batch, Some(&key))).collect();
    let bytes_per_request = bodies.iter().map(String::len).sum::<usize>() / bodies.len();
    println!(
        "cdp bench collect: {requests} requests × {batch} events (~{} bytes/event), {connections} connections, loopback",
        bytes_per_request / batch
    );

    let sink_addr = free_addr()?;
    let sink = spawn(&["bench", "sink", "--listen", &sink_addr.to_string()])?;
    let sink_url = format!("http://{sink_addr}");
    wait_healthy(&sink_url)?;
    drive(&sink_url, &bodies, requests.min(connections * 4), connections, None)?; // warm-up
    let sink_elapsed = drive(&sink_url, &bodies, requests, connections, None)?;
    drop(sink);
    let sink_run = Run { events: requests * batch, requests, elapsed: sink_elapsed };

    let up_addr = free_addr()?;
    let data = dir.path().to_string_lossy().to_string();
    let up = spawn(&["up", "--data", &data, "--listen", &up_addr.to_string()])?;
    let up_url = format!("http://{up_addr}");
    wait_healthy(&up_url)?;
    let up_elapsed = drive(&up_url, &bodies, requests, connections, Some(batch))?;
    drop(up);
    let up_run = Run { events: requests * batch, requests, elapsed: up_elapsed };

    // Everything answered 200 must be on disk: one raw object per request.
    let stored = runtime.block_on(functions::storage::ObjectStore::list(&store, "raw/"))?;
    if stored.len() != up_run.requests {
        bail!("{} requests were accepted but {} raw objects are stored", up_run.requests, stored.len());
    }

    let rate = |r: &Run| r.events as f64 / r.elapsed.as_secs_f64();
    println!("| target | events | time (s) | events/s | requests/s |");
    println!("|---|---:|---:|---:|---:|");
    for (name, r) in [
        ("bare HTTP sink (reads body, stores nothing)", &sink_run),
        ("cdp up (collect + gzip + fsync'd file)", &up_run),
    ] {
        println!(
            "| {name} | {} | {:.2} | {:.0} | {:.0} |",
            r.events,
            r.elapsed.as_secs_f64(),
            rate(r),
            r.requests as f64 / r.elapsed.as_secs_f64()
        );
    }
    println!(
        "cdp up reaches {:.2}× the bare sink; target ≥ 50000 events/s: {}",
        rate(&up_run) / rate(&sink_run),
        if rate(&up_run) >= 50_000.0 { "met" } else { "NOT met" }
    );
    Ok(())
}

pub(super) fn sink(listen: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let app = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "{\"status\":\"ok\"}" }))
            .route(
                "/v1/batch",
                axum::routing::post(|body: bytes::Bytes| async move {
                    std::hint::black_box(body.len());
                    "{\"success\":true}"
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(1 << 20));
        let listener = tokio::net::TcpListener::bind(listen).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

pub(super) fn normalize(rounds: usize, iterations: usize, batch: usize) -> anyhow::Result<()> {
    if rounds == 0 || iterations == 0 || batch == 0 {
        bail!("--rounds, --iterations and --batch must be at least 1");
    }
    let (source, key) = new_source("bench", "Bench", &mut Entropy::from_seed(crate::seed()));
    let mut sources = Sources::default();
    sources.add(source.clone())?;
    let body = batch_body(&mut Entropy::from_seed(crate::seed()), batch, Some(&key));
    let now = crate::now();
    let ip = "198.51.100.7".parse().ok();
    let run_collect_with = |sources: &Sources, encode: bool| -> anyhow::Result<usize> {
        let mut request = CollectRequest::new(Endpoint::Batch, body.as_bytes());
        request.client_ip = ip;
        match shared::collect::collect(&request, sources, now, &mut Entropy::from_seed([7; 32])) {
            Collected::Kept(kept) if kept.failed.is_empty() => Ok(if encode {
                kept.accepted_object().map_or(0, |(_, bytes)| bytes.len())
            } else {
                kept.accepted.len()
            }),
            Collected::Kept(kept) => bail!("{} sample events failed: {:?}", kept.failed.len(), kept.failed.first()),
            Collected::Rejected(answer) => bail!("sample batch rejected: {}", answer.body),
        }
    };
    let run_collect = |encode: bool| run_collect_with(&sources, encode);
    // The same source with a 20-event tracking plan: the sample's events with their properties' types, the
    // rest of the 20 made up; identify traits with an email format. Every event is judged; none breaks it.
    let planned = {
        let plan = sample_plan(&sources, body.as_bytes(), now)?;
        let mut planned = Sources::default();
        planned.add(shared::source::SourceConfig { tracking_plan: Some(plan), ..source })?;
        planned
    };
    let mut parse = Vec::with_capacity(rounds);
    let mut pipeline = Vec::with_capacity(rounds);
    let mut encoded = Vec::with_capacity(rounds);
    let mut with_plan = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(serde_json::from_slice::<serde_json::Value>(std::hint::black_box(body.as_bytes()))?);
        }
        parse.push(start.elapsed() / iterations as u32);
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(run_collect(false)?);
        }
        pipeline.push(start.elapsed() / iterations as u32);
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(run_collect(true)?);
        }
        encoded.push(start.elapsed() / iterations as u32);
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(run_collect_with(&planned, false)?);
        }
        with_plan.push(start.elapsed() / iterations as u32);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (parse, pipeline, encoded) = (median(&mut parse), median(&mut pipeline), median(&mut encoded));
    let with_plan = median(&mut with_plan);
    let mib = body.len() as f64 / (1024.0 * 1024.0);
    println!(
        "cdp bench normalize: one {batch}-event batch of {} bytes (~{} bytes/event), {rounds} interleaved rounds × {iterations} iterations, medians",
        body.len(),
        body.len() / batch
    );
    println!("| variant | time per batch (ms) | MiB/s | events/s | vs bare parse |");
    println!("|---|---:|---:|---:|---:|");
    for (name, t) in [
        ("bare `serde_json::from_slice::<Value>`", parse),
        ("collect pipeline (auth, validate, normalize, enrich)", pipeline),
        ("collect pipeline + NDJSON + gzip", encoded),
        ("collect pipeline with a 20-event tracking plan", with_plan),
    ] {
        let s = t.as_secs_f64();
        println!(
            "| {name} | {:.3} | {:.1} | {:.0} | {:.2}× |",
            s * 1000.0,
            mib / s,
            batch as f64 / s,
            parse.as_secs_f64() / s
        );
    }
    let ratio = parse.as_secs_f64() / pipeline.as_secs_f64();
    println!(
        "collect pipeline throughput is {ratio:.2}× the bare parse; target ≥ 0.5×: {}",
        if ratio >= 0.5 { "met" } else { "NOT met" }
    );
    let ratio = parse.as_secs_f64() / with_plan.as_secs_f64();
    println!(
        "with a 20-event tracking plan: {ratio:.2}× the bare parse; target ≥ 0.45×: {}",
        if ratio >= 0.45 { "met" } else { "NOT met" }
    );
    Ok(())
}

/// A 20-event tracking plan the sample batch keeps: its track events with each property's observed type, made
/// up events to 20, and identify traits with `email` as an email address.
fn sample_plan(
    sources: &Sources,
    body: &[u8],
    now: shared::time::UtcTime,
) -> anyhow::Result<shared::source::TrackingPlan> {
    use serde_json::{Value, json};
    let Collected::Kept(kept) = shared::collect::collect(
        &CollectRequest::new(Endpoint::Batch, body),
        sources,
        now,
        &mut Entropy::from_seed([7; 32]),
    ) else {
        bail!("sample batch rejected");
    };
    let mut events: serde_json::Map<String, Value> = serde_json::Map::new();
    for event in kept.accepted.iter().filter(|e| e.kind == shared::event::EventType::Track) {
        let Some(name) = &event.event else { continue };
        let schema = events.entry(name.clone()).or_insert_with(|| json!({"type": "object", "properties": {}}));
        for (key, value) in event.properties.iter().flatten() {
            let kind = match value {
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "boolean",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
                Value::Null => "null",
            };
            schema["properties"][key] = json!({"type": [kind, "null"]});
        }
    }
    for i in events.len()..20 {
        events.insert(
            format!("Planned Event {i}"),
            json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}),
        );
    }
    let plan = json!({"events": events, "identify": {"properties": {"email": {"type": "string", "format": "email"}}},
                      "unplanned": "flag", "violations": "flag"});
    Ok(serde_json::from_value(plan)?)
}
