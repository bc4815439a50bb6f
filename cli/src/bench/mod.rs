//! `cdp bench`: the benchmarks, each run side by side with a peer in the same run (a bare HTTP sink, DuckDB,
//! the previous way) and recorded in docs/benchmarks.md with the command that made them. This file is the
//! dispatcher; each benchmark is a module of its own, and what several share is in [`kit`].

mod activation;
mod api;
mod collector;
mod crash;
mod identity;
mod idle;
mod import;
mod ingest;
mod kit;
mod recompute;
mod tagging;
mod tags;

use std::net::SocketAddr;

use clap::Subcommand;

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
    /// A CSV of CRM contacts through `cdp import` into raw/ (rows/s and peak memory, in a process of its own),
    /// optionally beside DuckDB's `read_csv` of the same file (`pip install duckdb`).
    Import {
        /// Rows (contacts).
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Also time DuckDB reading the same file into a table.
        #[arg(long)]
        duckdb: bool,
        /// Keep the file and the data folder here (default: a temporary folder).
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        /// Only import this file into `--data` and print what it took (the benchmark runs this in a process
        /// of its own).
        #[arg(long, hide = true)]
        measure: Option<std::path::PathBuf>,
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
        BenchCommand::Collect { events, batch, connections } => collector::collect(events, batch, connections),
        BenchCommand::Normalize { rounds, iterations, batch } => collector::normalize(rounds, iterations, batch),
        BenchCommand::Identity { identifiers, links_per_identifier, duckdb } => {
            identity::run(identifiers, links_per_identifier, duckdb)
        }
        BenchCommand::Ingest { identifiers, batch } => ingest::run(identifiers, batch),
        BenchCommand::Import { rows, duckdb, data, measure } => match (measure, data) {
            (Some(file), Some(data)) => import::measure(&file, &data),
            (Some(_), None) => anyhow::bail!("--measure needs --data"),
            (None, data) => import::run(rows, duckdb, data),
        },
        BenchCommand::Tags { profiles, events } => tags::run(profiles, events),
        BenchCommand::Tagging { people, events, data, generate, measure } => match (generate, measure) {
            (Some(dir), _) => tagging::generate(&dir, people, events),
            (None, Some(dir)) => tagging::measure(&dir),
            (None, None) => tagging::run(people, events, data),
        },
        BenchCommand::Recompute { profiles, events_per_profile, chunk, data, duckdb } => {
            recompute::run(profiles, events_per_profile, chunk, data, duckdb)
        }
        BenchCommand::Deliveries { items, batch, profiles } => activation::deliveries(items, batch, profiles),
        BenchCommand::Activation { rate, seconds, users } => activation::activation(rate, seconds, users),
        BenchCommand::Api { people, lookups, duckdb } => api::run(people, lookups, duckdb),
        BenchCommand::Crash { kills, interval, batch, connections } => crash::run(kills, interval, batch, connections),
        BenchCommand::Idle { sockets, requests, files } => idle::run(sockets, requests, files),
        BenchCommand::Sink { listen } => collector::sink(listen),
    }
}
