//! `cdp source add|list`.

use anyhow::{Context as _, bail};
use clap::Subcommand;
use functions::collect::load_sources;
use functions::storage::FsStore;
use shared::ids::Entropy;
use shared::source::{SourceConfig, new_source, slug};

use crate::DataArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum SourceCommand {
    /// Create a source; its new write key is printed as the last line (shown once, stored only hashed).
    Add {
        /// Display name; the id is derived from it unless --id is given.
        name: String,
        /// Source id ([a-z0-9][a-z0-9_-]{0,63}).
        #[arg(long)]
        id: Option<String>,
        /// Browser origin allowed to send (repeatable); default: any.
        #[arg(long = "origin")]
        origins: Vec<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Set a source's tracking plan from a JSON file (docs/data.md), or remove it with --clear; collectors
    /// enforce it within seconds.
    Plan {
        /// The source's id.
        id: String,
        /// The plan: `{"events": {…}, "identify": {…}, "unplanned": "…", "violations": "…"}`.
        file: Option<std::path::PathBuf>,
        /// Remove the plan.
        #[arg(long, conflicts_with = "file")]
        clear: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List sources (ids, names, origins; never keys).
    List {
        #[command(flatten)]
        data: DataArgs,
    },
}

pub(crate) fn run(command: SourceCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            SourceCommand::Add { name, id, origins, data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let id = id.unwrap_or_else(|| slug(&name));
                let (source, key) = create(&store, &id, &name, origins).await?;
                println!("created source {:?} ({}) in {}", source.id, source.name, data.data.display());
                println!("write key (shown once; only its hash is stored):");
                println!("{key}");
                Ok(())
            }
            SourceCommand::Plan { id, file, clear, data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let plan: Option<shared::source::TrackingPlan> = match (file, clear) {
                    (Some(file), false) => {
                        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                        Some(
                            serde_json::from_slice(&bytes)
                                .with_context(|| format!("{} is not a tracking plan", file.display()))?,
                        )
                    }
                    (None, true) => None,
                    _ => bail!("give the plan's file, or --clear"),
                };
                let (before, after) = functions::collect::update_sources(&store, |sources| {
                    let Some(before) = sources.list().iter().find(|s| s.id == id).cloned() else {
                        bail!("no source {id:?}");
                    };
                    let after = SourceConfig { tracking_plan: plan.clone(), ..before.clone() };
                    sources.replace(after.clone())?;
                    Ok((before, after))
                })
                .await?;
                let change = functions::audit::Change {
                    before: Some(serde_json::json!({"trackingPlan": before.tracking_plan})),
                    after: Some(serde_json::json!({"trackingPlan": after.tracking_plan})),
                    ..Default::default()
                };
                functions::audit::record(
                    &store,
                    crate::access::operator(),
                    "source.update",
                    &format!("source:{id}"),
                    change,
                )
                .await?;
                match &after.tracking_plan {
                    Some(plan) => println!("source {id}: tracking plan with {} events set", plan.events.len()),
                    None => println!("source {id}: tracking plan removed"),
                }
                Ok(())
            }
            SourceCommand::List { data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let sources = load_sources(&store).await?;
                for s in sources.list() {
                    println!(
                        "{}\t{}\t{}\torigins: {}",
                        s.id,
                        s.name,
                        if s.enabled { "enabled" } else { "disabled" },
                        s.allowed_origins.join(" ")
                    );
                }
                Ok(())
            }
        }
    })
}

/// Adds a source to the store's sources file; returns it and its write key.
pub(crate) async fn create(
    store: &FsStore,
    id: &str,
    name: &str,
    origins: Vec<String>,
) -> anyhow::Result<(SourceConfig, String)> {
    let (mut source, key) = new_source(id, name, &mut Entropy::from_seed(crate::seed()));
    if !origins.is_empty() {
        source.allowed_origins = origins;
    }
    // Under compare-and-swap: a source added through the API meanwhile is kept.
    functions::collect::update_sources(store, |sources| {
        if sources.list().iter().any(|s| s.id == id) {
            bail!("a source with id {id:?} already exists");
        }
        Ok(sources.add(source.clone())?)
    })
    .await?;
    let after = serde_json::to_value(&source)?;
    let change = functions::audit::Change { after: Some(after), ..Default::default() };
    functions::audit::record(store, crate::access::operator(), "source.create", &format!("source:{id}"), change)
        .await?;
    Ok((source, key))
}
