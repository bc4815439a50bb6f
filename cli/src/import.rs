//! `cdp import FILE --source ID --mapping MAPPING.json`: a CSV, NDJSON or Parquet file (also gzipped) as
//! events of a source, through the collect pipeline into `raw/`, then applied to profiles (unless
//! `--no-ingest`: a running `cdp up` or the cloud's ingest applies them). A progress line on a terminal, a
//! summary at the end.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use functions::import::{Import, Imported, import_file};
use functions::snapshot::RunConfig;
use functions::storage::FsStore;
use shared::import::Mapping;

use crate::DataArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The file: `.csv` (with a header line), `.ndjson`/`.jsonl` or `.parquet`, each also `.gz`.
    file: PathBuf,
    /// The source the rows are events of (its id or its name).
    #[arg(long)]
    source: String,
    /// What each row becomes (docs/data.md, "File imports").
    #[arg(long)]
    mapping: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Only store the events in raw/; a running `cdp up` (or the cloud's ingest) applies them.
    #[arg(long)]
    no_ingest: bool,
    /// The summary as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: ImportArgs) -> anyhow::Result<()> {
    let mapping_bytes = std::fs::read(&args.mapping).with_context(|| format!("reading {}", args.mapping.display()))?;
    let mapping = Mapping::parse(&mapping_bytes).map_err(|e| anyhow::anyhow!("{}: {e}", args.mapping.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = FsStore::open(&args.data.data).context("opening the data folder")?;
    runtime.block_on(async move {
        let (source, suppression) = source_named(&store, &args.source).await?;
        let size = std::fs::metadata(&args.file).map(|m| m.len()).unwrap_or(0);
        let terminal = std::io::stderr().is_terminal();
        let start = Instant::now();
        let mut progress = |rows: u64, read: u64| {
            if terminal {
                eprint!("\r{}", progress_line(rows, read, size, start.elapsed().as_secs_f64()));
                let _ = std::io::stderr().flush();
            }
        };
        let run = Import::whole(&source, suppression.as_ref(), crate::now(), crate::seed());
        let imported = import_file(&store, &args.file, mapping, &run, &mut progress).await;
        if terminal {
            eprintln!();
        }
        let imported = imported.map_err(|e| anyhow::anyhow!("{e}"))?;
        let seconds = start.elapsed().as_secs_f64();
        let applied = match args.no_ingest {
            true => None,
            false => Some(apply(&store, &imported).await?),
        };
        if args.json {
            let mut summary = serde_json::to_value(&imported)?;
            summary["seconds"] = serde_json::json!(seconds);
            if let Some((applied, duplicates)) = applied {
                summary["applied"] = applied.into();
                summary["duplicates"] = duplicates.into();
            }
            println!("{summary}");
        } else {
            print!("{}", summary(&args.file, &source.id, &imported, seconds, applied));
        }
        Ok(())
    })
}

/// The enabled source `name` (its id or its name) rows are imported into, and the suppression list.
pub(crate) async fn source_named(
    store: &FsStore,
    name: &str,
) -> anyhow::Result<(shared::source::SourceConfig, Option<shared::access::SuppressionCheck>)> {
    let sources = functions::collect::load_sources(store).await?;
    let Some(source) = sources.list().iter().find(|s| s.id == name || s.name == name).cloned() else {
        let known: Vec<&str> = sources.list().iter().map(|s| s.id.as_str()).collect();
        bail!("no source {name:?} (sources: {}); create it with `cdp source add`", known.join(", "));
    };
    if !source.enabled {
        bail!("source {:?} is disabled", source.id);
    }
    Ok((source, functions::suppression::load_suppression_check(store).await?))
}

/// Applies the import's raw objects to profiles, a few objects per commit; (events applied, duplicates).
pub(crate) async fn apply(store: &FsStore, imported: &Imported) -> anyhow::Result<(usize, usize)> {
    let config = RunConfig::load(store).await?;
    let config = RunConfig { state: crate::up::local_state(), ..config };
    let (mut applied, mut duplicates) = (0, 0);
    for keys in imported.objects.chunks(10) {
        let report = functions::ingest::ingest(store, keys, &config, crate::now()).await?;
        applied += report.applied;
        duplicates += report.duplicates;
    }
    Ok((applied, duplicates))
}

/// `1,234,567 rows  212,345 rows/s  40%  ETA 0:12`.
fn progress_line(rows: u64, read: u64, size: u64, seconds: f64) -> String {
    let rate = if seconds > 0.0 { rows as f64 / seconds } else { 0.0 };
    let mut line = format!("{} rows  {} rows/s", thousands(rows), thousands(rate as u64));
    if size > 0 && read > 0 {
        let share = (read as f64 / size as f64).min(1.0);
        let left = if share > 0.0 { (seconds * (1.0 - share) / share).round() as u64 } else { 0 };
        line.push_str(&format!("  {:>3.0}%  ETA {}:{:02}", share * 100.0, left / 60, left % 60));
    }
    line
}

fn summary(
    file: &std::path::Path,
    source: &str,
    imported: &Imported,
    seconds: f64,
    applied: Option<(usize, usize)>,
) -> String {
    let rate = if seconds > 0.0 { imported.rows as f64 / seconds } else { 0.0 };
    let mut out = format!(
        "{}: {} rows in {seconds:.1} s ({} rows/s) as events of source {source}: {} stored in {} raw objects, {} failed",
        file.display(),
        thousands(imported.rows),
        thousands(rate as u64),
        thousands(imported.accepted),
        imported.objects.len(),
        thousands(imported.failed),
    );
    if imported.failed > 0 {
        out.push_str(&format!(" (with their row and reason under {})", imported.failed_prefix));
    }
    if imported.suppressed > 0 {
        out.push_str(&format!(", {} of suppressed people dropped", thousands(imported.suppressed)));
    }
    out.push('\n');
    match applied {
        Some((applied, duplicates)) => out.push_str(&format!(
            "applied to profiles: {} events ({} already there from an earlier import)\n",
            thousands(applied as u64),
            thousands(duplicates as u64)
        )),
        None => out.push_str("not applied yet (--no-ingest): a running `cdp up` applies them\n"),
    }
    out
}

pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_and_summary_lines() {
        assert_eq!(progress_line(1_234_567, 40, 100, 6.0), "1,234,567 rows  205,761 rows/s   40%  ETA 0:09");
        assert_eq!(progress_line(10, 0, 0, 0.0), "10 rows  0 rows/s");
        let imported = Imported {
            rows: 5,
            accepted: 2,
            failed: 3,
            objects: vec!["raw/v1/x".into()],
            failed_prefix: "failed/imports/crm/ab/".into(),
            ..Imported::default()
        };
        let text = summary(std::path::Path::new("c.csv"), "crm", &imported, 2.0, Some((2, 0)));
        assert_eq!(
            text,
            "c.csv: 5 rows in 2.0 s (2 rows/s) as events of source crm: 2 stored in 1 raw objects, 3 failed (with \
             their row and reason under failed/imports/crm/ab/)\napplied to profiles: 2 events (0 already there from \
             an earlier import)\n"
        );
    }
}
