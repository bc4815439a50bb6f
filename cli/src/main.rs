//! `cdp`: the whole CDP on one machine, on a data folder, with no cloud.
//!
//! `cdp up` serves the collector (the same core and handlers as the edge worker and the Lambda functions);
//! `cdp source` manages sources and their write keys; `cdp bench` runs the benchmarks (each beside a peer; see
//! docs/benchmarks.md).

mod access;
mod analyze;
/// A faster allocator than glibc's for the many small strings of events (docs/benchmarks.md, imports).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod catalog;
mod deliveries;
mod import;
mod insights;
mod lake;
mod lock;
mod profile;
mod serve;
mod source;
mod sync;
mod tags;
mod themes;
mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Serverless Customer Data Platform, run locally.
#[derive(Debug, Parser)]
#[command(name = "cdp", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector on a local data folder (the embedded default).
    ///
    /// Serves POST /v1/{track,identify,page,screen,group,alias,batch} (Segment's Tracking API) and GET /health.
    /// On first start with no source, creates a source "demo" and prints its write key.
    Up(up::UpArgs),
    /// Print the unified profile of an identifier (`user_id:u1`, `anonymous_id:…`, `email:jane@example.com`,
    /// `phone:+4930…`, `device_id:…`) or a profile id.
    Profile(profile::ProfileArgs),
    /// Remove an identifier from its profile (a bad link, an erasure request); the profile splits where
    /// nothing else connects it.
    Unlink(profile::UnlinkArgs),
    /// Tags: list the definitions with coverage, check them, compute them now.
    #[command(subcommand)]
    Tags(tags::TagsCommand),
    /// List the audience definitions with their size and last change (entered, exited).
    Audiences(DataArgs),
    /// The data dictionary: events, properties and traits each source sent, with types, examples, counts and
    /// data-quality issues (what tag, audience and destination definitions are checked against).
    Catalog(catalog::CatalogArgs),
    /// Read-only SQL over the tables `events`, `profiles`, `tags` and `memberships`.
    Sql(analyze::SqlArgs),
    /// Analyses over the data: trends, funnels and retention.
    #[command(subcommand)]
    Analyze(analyze::AnalyzeCommand),
    /// One-click theme dashboards: what each would hold given the data dictionary (and why the rest is left
    /// out); `--save` assembles one.
    Themes(themes::ThemesArgs),
    /// Saved insights: list them, run one.
    #[command(subcommand)]
    Insights(insights::InsightsCommand),
    /// Saved dashboards: list them, run one.
    #[command(subcommand)]
    Dashboards(insights::DashboardsCommand),
    /// Partner webhooks: add, list.
    #[command(subcommand)]
    Destination(deliveries::DestinationCommand),
    /// Deliveries to partners: status and dead letters, replay, re-enable.
    #[command(subcommand)]
    Deliveries(deliveries::DeliveriesCommand),
    /// The event lake (Parquet by day under lake/events/): compact raw objects into it, show its progress.
    #[command(subcommand)]
    Lake(lake::LakeCommand),
    /// API keys: create (shown once), list, revoke.
    #[command(subcommand, name = "api-key")]
    ApiKey(access::ApiKeyCommand),
    /// Import a CSV, NDJSON or Parquet file (also gzipped) as events of a source, row by row through a mapping.
    Import(import::ImportArgs),
    /// Sync a database table or query into a source incrementally, by a cursor kept in the data folder.
    #[command(subcommand)]
    Sync(sync::SyncCommand),
    /// Manage sources (who may send events, with which write key).
    #[command(subcommand)]
    Source(source::SourceCommand),
    /// Benchmarks, each beside a peer in the same run: collect, normalize, identity, ingest, import, tags, tagging,
    /// recompute, deliveries, activation, api, crash, idle.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// The data folder flag every command shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DataArgs {
    /// Folder holding all data (raw/, failed/, config/, ...), created if missing.
    #[arg(long, env = "CDP_DATA", default_value = ".cdp")]
    pub(crate) data: PathBuf,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CDP_LOG").unwrap_or_else(|_| "cdp=info,functions=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => up::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Unlink(args) => profile::unlink(args),
        Command::Source(command) => source::run(command),
        Command::ApiKey(command) => access::run(command),
        Command::Tags(command) => tags::run(command),
        Command::Audiences(data) => tags::audiences(data),
        Command::Catalog(args) => catalog::run(args),
        Command::Sql(args) => analyze::sql(args),
        Command::Analyze(command) => analyze::analyze(command),
        Command::Themes(args) => themes::run(args),
        Command::Insights(command) => insights::insights(command),
        Command::Dashboards(command) => insights::dashboards(command),
        Command::Import(args) => import::run(args),
        Command::Sync(command) => sync::run(command),
        Command::Lake(command) => lake::run(command),
        Command::Bench(command) => bench::run(command),
        Command::Destination(command) => deliveries::destination(command),
        Command::Deliveries(command) => deliveries::deliveries(command),
    }
}

/// Output into a pipe whose reader went away (`cdp deliveries list | head`) ends the command quietly, with
/// the status a shell gives a program stopped by SIGPIPE (128 + 13), instead of a panic: the standard library
/// ignores SIGPIPE, so `println!` panics on the broken pipe.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// 32 bytes from the operating system's CSPRNG.
pub(crate) fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    // The OS generator failing is not recoverable; ids must not be predictable.
    getrandom::fill(&mut seed).expect("the operating system's random number generator failed");
    seed
}

/// Now, as the core's time type.
pub(crate) fn now() -> shared::time::UtcTime {
    let ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    shared::time::UtcTime::from_unix_millis(ms).unwrap_or_else(|| unreachable!("the clock is within years 1970..9999"))
}
