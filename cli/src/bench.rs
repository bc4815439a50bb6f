//! `cdp bench collect`: events/s through a real `cdp up` on loopback, driven from this (second) process, side
//! by side in the same run with a bare HTTP sink (reads the body, answers 200, stores nothing): the transport's
//! ceiling on this machine.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use functions::storage::FsStore;
use shared::collect::{CollectRequest, Collected, Endpoint};
use shared::ids::Entropy;
use shared::sample::batch_body;
use shared::source::{Sources, new_source};

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Events/s through `cdp up` (a child process) with batched requests from this process.
    Collect {
        /// Events to send in total (per target).
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Events per batch request.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Concurrent connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Collect-pipeline throughput against a bare `serde_json` parse of the same bytes, interleaved round by
    /// round so both see the same machine conditions; reports medians and their ratio.
    Normalize {
        /// Rounds; each times every variant once.
        #[arg(long, default_value_t = 40)]
        rounds: usize,
        /// Iterations per variant per round.
        #[arg(long, default_value_t = 20)]
        iterations: usize,
        /// Events per batch.
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
    /// Batch ID resolution (connected components with the user_id rule) on synthetic links, optionally side
    /// by side with DuckDB's iterative SQL stitching of the same links (`pip install duckdb`).
    Identity {
        /// Identifiers.
        #[arg(long, default_value_t = 10_000_000)]
        identifiers: usize,
        /// Links per identifier.
        #[arg(long, default_value_t = 2.0)]
        links_per_identifier: f64,
        /// Also run DuckDB on the same links and compare components.
        #[arg(long)]
        duckdb: bool,
    },
    /// Applying one batch of events to an existing state on the folder store: time, shards and bytes written.
    Ingest {
        /// Identifiers in the base state (people × 3: user id, anonymous id, email).
        #[arg(long, default_value_t = 1_000_000)]
        identifiers: u64,
        /// Events in the measured batch.
        #[arg(long, default_value_t = 10_000)]
        batch: u64,
    },
    /// Keeping 20 tags up to date per changed profile (incremental state) beside re-evaluating its history.
    Tags {
        /// Changed profiles.
        #[arg(long, default_value_t = 100_000)]
        profiles: u64,
        /// Events of history per profile (spread over two years).
        #[arg(long, default_value_t = 200)]
        events: usize,
    },
    /// The tagging function's whole full recompute on the folder store (20 tags, two audiences), reading its
    /// events from the lake, beside the same recompute reading them from raw objects; tag values compared.
    Tagging {
        /// People (each with a profile).
        #[arg(long, default_value_t = 100_000)]
        people: u64,
        /// Events per person (spread over two years).
        #[arg(long, default_value_t = 10)]
        events: usize,
        /// Keep the generated data here and reuse it (default: a temporary folder).
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        /// Only write the data set into this folder (the benchmark runs this in a process of its own).
        #[arg(long, hide = true)]
        generate: Option<std::path::PathBuf>,
        /// Only run one recompute of this folder and print what it took (in a process of its own).
        #[arg(long, hide = true)]
        measure: Option<std::path::PathBuf>,
    },
    /// The columnar full recompute of 20 tags for every profile from Parquet, optionally side by side with
    /// DuckDB computing the same definitions in SQL from the same files (`pip install duckdb`); compares the
    /// results value by value.
    Recompute {
        /// Profiles.
        #[arg(long, default_value_t = 10_000_000)]
        profiles: u32,
        /// Mean events per profile (uniform 0..=2×mean).
        #[arg(long, default_value_t = 10)]
        events_per_profile: u64,
        /// Profiles per row group (a chunk evaluated by one thread).
        #[arg(long, default_value_t = 100_000)]
        chunk: u32,
        /// Keep the generated tables here and reuse them (default: a temporary folder).
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        /// Also run DuckDB and compare.
        #[arg(long)]
        duckdb: bool,
    },
    /// Signed webhook deliveries per second through the dispatcher to a local receiver, beside bare posts of
    /// the same requests; and signing's share of the CPU.
    Deliveries {
        /// Items to deliver.
        #[arg(long, default_value_t = 100_000)]
        items: usize,
        /// Items per request (the destination's maxEvents).
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Distinct profiles (spread over the lanes).
        #[arg(long, default_value_t = 10_000)]
        profiles: usize,
    },
    /// Event posted → webhook received through a real `cdp up` at a steady rate: p50/p99.
    Activation {
        /// Events per second.
        #[arg(long, default_value_t = 5_000)]
        rate: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Distinct users.
        #[arg(long, default_value_t = 10_000)]
        users: usize,
    },
    /// Profile lookups by identifier through the API's router in process (a warm function on the folder
    /// store): p50/p90/p99; optionally beside DuckDB answering the same lookups from a keyed table.
    Api {
        /// People in the state (each with a user id, an anonymous id and an email).
        #[arg(long, default_value_t = 1_000_000)]
        people: u64,
        /// Lookups to time.
        #[arg(long, default_value_t = 10_000)]
        lookups: usize,
        /// Also run DuckDB on the same lookups.
        #[arg(long)]
        duckdb: bool,
    },
    /// `cdp up` killed (SIGKILL) again and again while clients post: every acknowledged event must end on a
    /// profile exactly once.
    Crash {
        /// Kills.
        #[arg(long, default_value_t = 9)]
        kills: usize,
        /// Mean seconds between kills (each wait is drawn from 0.5× to 1.5× of it).
        #[arg(long, default_value_t = 3.0)]
        interval: f64,
        /// Events per request.
        #[arg(long, default_value_t = 20)]
        batch: usize,
        /// Clients posting at once.
        #[arg(long, default_value_t = 2)]
        connections: usize,
    },
    /// A real `cdp up` with few files while idle connections are held to it: real requests still served,
    /// idle sockets closed, the runner never out of files.
    Idle {
        /// Idle connections to hold (this process needs as many files: raise `ulimit -n`).
        #[arg(long, default_value_t = 1500)]
        sockets: usize,
        /// Requests sent while they are held.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// The runner's open-file limit.
        #[arg(long, default_value_t = 1024)]
        files: u64,
    },
    /// A bare HTTP sink for the benchmark's comparison: reads each body, answers 200, stores nothing.
    #[command(hide = true)]
    Sink {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
}

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Collect { events, batch, connections } => collect(events, batch, connections),
        BenchCommand::Normalize { rounds, iterations, batch } => normalize(rounds, iterations, batch),
        BenchCommand::Identity { identifiers, links_per_identifier, duckdb } => {
            crate::bench_identity::run(identifiers, links_per_identifier, duckdb)
        }
        BenchCommand::Ingest { identifiers, batch } => crate::bench_ingest::run(identifiers, batch),
        BenchCommand::Tags { profiles, events } => crate::bench_tags::run(profiles, events),
        BenchCommand::Tagging { people, events, data, generate, measure } => match (generate, measure) {
            (Some(dir), _) => crate::bench_tagging::generate(&dir, people, events),
            (None, Some(dir)) => crate::bench_tagging::measure(&dir),
            (None, None) => crate::bench_tagging::run(people, events, data),
        },
        BenchCommand::Recompute { profiles, events_per_profile, chunk, data, duckdb } => {
            crate::bench_recompute::run(profiles, events_per_profile, chunk, data, duckdb)
        }
        BenchCommand::Deliveries { items, batch, profiles } => {
            crate::bench_activation::deliveries(items, batch, profiles)
        }
        BenchCommand::Activation { rate, seconds, users } => crate::bench_activation::activation(rate, seconds, users),
        BenchCommand::Api { people, lookups, duckdb } => crate::bench_api::run(people, lookups, duckdb),
        BenchCommand::Crash { kills, interval, batch, connections } => {
            crate::bench_crash::run(kills, interval, batch, connections)
        }
        BenchCommand::Idle { sockets, requests, files } => crate::bench_idle::run(sockets, requests, files),
        BenchCommand::Sink { listen } => sink(listen),
    }
}

/// A deterministic generator for synthetic data (xorshift64).
pub(crate) struct Xorshift(pub(crate) u64);

impl Xorshift {
    /// The next number below `n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The process's peak resident memory so far (Linux), in bytes.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs a DuckDB peer script of `scripts/bench/` with `args`; its one line of JSON output.
pub(crate) fn duckdb_peer(script: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<serde_json::Value> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench").join(script);
    let output =
        Command::new("python3").arg(&script).args(args).output().context("running python3 (pip install duckdb)")?;
    if !output.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Kills the child on drop.
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts this binary with `args`; its log goes to the file `CDP_BENCH_CHILD_LOG` names, if set.
pub(crate) fn spawn(args: &[&str]) -> anyhow::Result<ChildGuard> {
    let exe = std::env::current_exe().context("locating the cdp binary")?;
    let stderr = match std::env::var_os("CDP_BENCH_CHILD_LOG") {
        Some(path) => Stdio::from(std::fs::File::create(path).context("CDP_BENCH_CHILD_LOG")?),
        None => Stdio::null(),
    };
    let child = Command::new(exe).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn()?;
    Ok(ChildGuard(child))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Waits until `url/health` answers 200 (10 s at most).
pub(crate) fn wait_healthy(url: &str) -> anyhow::Result<()> {
    let agent = agent();
    for _ in 0..200 {
        if agent.get(&format!("{url}/health")).call().is_ok_and(|r| r.status().as_u16() == 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{url} did not become healthy within 10 s")
}

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

fn collect(events: usize, batch: usize, connections: usize) -> anyhow::Result<()> {
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

fn sink(listen: SocketAddr) -> anyhow::Result<()> {
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

fn normalize(rounds: usize, iterations: usize, batch: usize) -> anyhow::Result<()> {
    if rounds == 0 || iterations == 0 || batch == 0 {
        bail!("--rounds, --iterations and --batch must be at least 1");
    }
    let (source, key) = new_source("bench", "Bench", &mut Entropy::from_seed(crate::seed()));
    let mut sources = Sources::default();
    sources.add(source)?;
    let body = batch_body(&mut Entropy::from_seed(crate::seed()), batch, Some(&key));
    let now = crate::now();
    let ip = "198.51.100.7".parse().ok();
    let run_collect = |encode: bool| -> anyhow::Result<usize> {
        let mut request = CollectRequest::new(Endpoint::Batch, body.as_bytes());
        request.client_ip = ip;
        match shared::collect::collect(&request, &sources, now, &mut Entropy::from_seed([7; 32])) {
            Collected::Kept(kept) if kept.failed.is_empty() => Ok(if encode {
                kept.accepted_object().map_or(0, |(_, bytes)| bytes.len())
            } else {
                kept.accepted.len()
            }),
            Collected::Kept(kept) => bail!("{} sample events failed: {:?}", kept.failed.len(), kept.failed.first()),
            Collected::Rejected(answer) => bail!("sample batch rejected: {}", answer.body),
        }
    };
    let mut parse = Vec::with_capacity(rounds);
    let mut pipeline = Vec::with_capacity(rounds);
    let mut encoded = Vec::with_capacity(rounds);
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
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (parse, pipeline, encoded) = (median(&mut parse), median(&mut pipeline), median(&mut encoded));
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
    Ok(())
}
