//! `cdp insights` and `cdp dashboards`: the saved insights and dashboards (`/v1/insights`, `/v1/dashboards`),
//! listed and run over the data folder. Runs are computed with every column (the data folder is the operator's),
//! so they are never kept.

use anyhow::{Context as _, bail};
use functions::analysis::saved::{DASHBOARDS, Dashboards, INSIGHTS, Insights, load, run, run_dashboard};
use functions::storage::FsStore;

use crate::DataArgs;
use crate::analyze::engine;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum InsightsCommand {
    /// List the saved insights (id, kind, chart, name).
    List(ListArgs),
    /// Run one over its own range and print its result as JSON (as `POST /v1/insights/{id}/run` answers).
    Run(RunArgs),
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum DashboardsCommand {
    /// List the saved dashboards (id, insights, range, name).
    List(ListArgs),
    /// Run one (each insight over the dashboard's last days of the data) and print it as JSON (as `POST
    /// /v1/dashboards/{id}/run` answers).
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    data: DataArgs,
    /// As JSON (as `GET /v1/insights` or `/v1/dashboards` answers).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The insight's or dashboard's id.
    id: String,
}

fn open(data: &DataArgs) -> anyhow::Result<(tokio::runtime::Runtime, FsStore)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let store = FsStore::open(&data.data).context("opening the data folder")?;
    Ok((runtime, store))
}

pub(crate) fn insights(command: InsightsCommand) -> anyhow::Result<()> {
    match command {
        InsightsCommand::List(args) => {
            let (runtime, store) = open(&args.data)?;
            let saved: Insights = runtime.block_on(load(&store, INSIGHTS))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&saved)?);
            } else if saved.insights.is_empty() {
                println!("no insights saved (PUT /v1/insights/{{id}}, or `cdp themes THEME --save`)");
            } else {
                for insight in &saved.insights {
                    let kind = serde_json::to_value(&insight.analysis)?["kind"].as_str().unwrap_or("?").to_string();
                    let chart = serde_json::to_value(insight.chart)?.as_str().unwrap_or("?").to_string();
                    println!("{:<40} {kind:<10} {chart:<8} {}", insight.id, insight.name);
                }
            }
        }
        InsightsCommand::Run(args) => {
            let (runtime, store) = open(&args.data)?;
            let saved: Insights = runtime.block_on(load(&store, INSIGHTS))?;
            let Some(insight) = saved.insights.iter().find(|i| i.id == args.id) else {
                bail!("no insight {:?}{}", args.id, closest(&args.id, saved.insights.iter().map(|i| i.id.as_str())));
            };
            let engine = engine(&runtime, &store)?;
            let key = runtime.block_on(functions::suppression::hash_key(&store))?;
            let result = runtime.block_on(run(&store, &engine, insight, None, crate::now(), false, &key))?;
            println!("{}", serde_json::to_string_pretty(&result)?);
        }
    }
    Ok(())
}

pub(crate) fn dashboards(command: DashboardsCommand) -> anyhow::Result<()> {
    match command {
        DashboardsCommand::List(args) => {
            let (runtime, store) = open(&args.data)?;
            let saved: Dashboards = runtime.block_on(load(&store, DASHBOARDS))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&saved)?);
            } else if saved.dashboards.is_empty() {
                println!("no dashboards saved (PUT /v1/dashboards/{{id}}, or `cdp themes THEME --save`)");
            } else {
                for board in &saved.dashboards {
                    let range = board.last_days.map_or("own ranges".to_string(), |d| format!("last {d} days"));
                    println!("{:<24} {:>2} insights  {range:<14} {}", board.id, board.insights.len(), board.name);
                }
            }
        }
        DashboardsCommand::Run(args) => {
            let (runtime, store) = open(&args.data)?;
            let saved: Dashboards = runtime.block_on(load(&store, DASHBOARDS))?;
            let Some(board) = saved.dashboards.iter().find(|d| d.id == args.id) else {
                bail!(
                    "no dashboard {:?}{}",
                    args.id,
                    closest(&args.id, saved.dashboards.iter().map(|d| d.id.as_str()))
                );
            };
            let insights: Insights = runtime.block_on(load(&store, INSIGHTS))?;
            let engine = engine(&runtime, &store)?;
            let key = runtime.block_on(functions::suppression::hash_key(&store))?;
            let shown = runtime.block_on(run_dashboard(
                &store,
                &engine,
                board,
                &insights.insights,
                crate::now(),
                false,
                &key,
            ))?;
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
    }
    Ok(())
}

/// `; did you mean …?` for the closest id, or nothing.
fn closest<'a>(id: &str, ids: impl Iterator<Item = &'a str>) -> String {
    shared::tags::closest(id, ids).map_or(String::new(), |c| format!("; did you mean `{c}`?"))
}
