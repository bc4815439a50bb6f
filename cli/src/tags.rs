//! `cdp tags` and `cdp audiences`: the definitions in `config/`, checked, with coverage and sizes from the
//! latest computation; `cdp tags compute` runs the full recompute now.

use anyhow::Context as _;
use clap::Subcommand;
use functions::predict::Fitted;
use functions::snapshot::{check, load_definitions, ready};
use functions::storage::FsStore;
use functions::tagging::{full_recompute, latest_report};
use shared::tags::{Catalog, TagKind};

use crate::DataArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum TagsCommand {
    /// List the tag definitions (config/tags.json) with state, version and coverage.
    List(DataArgs),
    /// Check the tag and audience definitions; print every problem.
    Check(DataArgs),
    /// Compute every active tag and audience now (the full recompute) and print the report.
    Compute(DataArgs),
}

pub(crate) fn run(command: TagsCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match command {
            TagsCommand::List(data) => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let (tags, _) = load_definitions(&store).await?;
                let report = latest_report(&store).await?;
                if tags.is_empty() {
                    println!("no tags: write definitions to {}/config/tags.json", data.data.display());
                }
                // The profile rules leniently: a file that does not parse leaves the defaults (tags still list).
                let rules: shared::profile::ProfileRules =
                    functions::config::read(&store, shared::storage::keys::CONFIG_PROFILES).await.ok().flatten().unwrap_or_default();
                let ready = ready(&store, &rules.cleaning).await?;
                let stored: std::collections::BTreeMap<String, u32> =
                    functions::config::read(&store, shared::storage::keys::TAGS_READY).await?.unwrap_or_default();
                println!("{:<24} {:<11} {:>7} {:<12} {:>9}  notes", "id", "status", "version", "kind", "coverage");
                for tag in &tags {
                    let kind = match tag.kind {
                        TagKind::Statistical { .. } => "statistical",
                        TagKind::Rule { .. } => "rule",
                        TagKind::Buckets { .. } => "buckets",
                        TagKind::Propensity { .. } => "propensity",
                        TagKind::Rfm { .. } => "rfm",
                        TagKind::Affinity { .. } => "affinity",
                    };
                    let coverage = report
                        .as_ref()
                        .and_then(|r| r.tags.get(&tag.id))
                        .map_or("-".to_string(), |t| format!("{:.1} %", 100.0 * t.coverage));
                    let status = format!("{:?}", tag.status).to_lowercase();
                    let notes = match (&tag.kind, report.as_ref().and_then(|r| r.models.get(&tag.id))) {
                        (TagKind::Statistical { .. }, _) if tag.status.computed() => match ready.get(&tag.id) {
                            Some(v) if *v == tag.version => String::new(),
                            Some(v) => format!("version {} waits for its backfill; version {v} serves", tag.version),
                            None => match stored.get(&tag.id) {
                                Some(v) => format!(
                                    "rebuilt at the next full recompute (the cleaning rules changed); version {v} serves"
                                ),
                                None => "waits for its first backfill (the next full recompute)".to_string(),
                            },
                        },
                        (_, Some(Fitted::Propensity(e))) => format!(
                            "AUC {:.3} on {} held-out profiles (random scores: {:.3})",
                            e.auc, e.holdout_profiles, e.random_auc
                        ),
                        (_, Some(Fitted::Rfm { profiles })) => format!("quintiles of {profiles} buyers"),
                        (_, Some(Fitted::Affinity { products })) => format!("{products} products with a category"),
                        (_, Some(Fitted::NotFitted { reason })) => format!("no model: {reason}"),
                        _ => String::new(),
                    };
                    println!("{:<24} {:<11} {:>7} {:<12} {:>9}  {notes}", tag.id, status, tag.version, kind, coverage);
                }
                if let Some(report) = report {
                    println!("last computed at {} over {} profiles", at(report.computed_at), report.profiles);
                }
                Ok(())
            }
            TagsCommand::Check(data) => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let (tags, audiences) = load_definitions(&store).await?;
                check(&tags, &audiences, &Catalog::default())?;
                println!("{} tags and {} audiences: no problems", tags.len(), audiences.len());
                Ok(())
            }
            TagsCommand::Compute(data) => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let report = full_recompute(&store, crate::now()).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
        }
    })
}

/// `cdp audiences`: the audience definitions with their size and last change.
pub(crate) fn audiences(data: DataArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let store = FsStore::open(&data.data).context("opening the data folder")?;
        let (_, audiences) = load_definitions(&store).await?;
        let report = latest_report(&store).await?;
        if audiences.is_empty() {
            println!("no audiences: write definitions to {}/config/audiences.json", data.data.display());
        }
        println!("{:<24} {:<11} {:>8} {:>8} {:>8}", "id", "status", "size", "entered", "exited");
        for audience in &audiences {
            let status = format!("{:?}", audience.status).to_lowercase();
            match report.as_ref().and_then(|r| r.audiences.get(&audience.id)) {
                Some(a) => {
                    println!("{:<24} {:<11} {:>8} {:>8} {:>8}", audience.id, status, a.size, a.entered, a.exited)
                }
                None => println!("{:<24} {:<11} {:>8} {:>8} {:>8}", audience.id, status, "-", "-", "-"),
            }
        }
        Ok(())
    })
}

fn at(ms: i64) -> String {
    shared::time::UtcTime::from_unix_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_string())
}
