//! `cdp sql` and `cdp analyze`: read-only SQL and the analyses (trends, funnels, retention, paths, audience
//! comparison, value models) over the data folder.

use std::time::Duration;

use anyhow::{Context as _, bail};
use functions::analysis::{
    Answer, Breakdown, Compare, CompareResult, Direction, Engine, Exclusion, Filter, Funnel, FunnelResult, Limits,
    Measure, Order, Paths, PathsResult, Period, Retention, RetentionResult, StepFilter, Trends, TrendsResult, Value,
    ValueResult,
};
use functions::snapshot::RunConfig;
use functions::storage::FsStore;
use shared::time::UtcTime;

use crate::DataArgs;

const DAY_MS: i64 = functions::analysis::period::DAY_MS;

#[derive(Debug, clap::Args)]
pub(crate) struct SqlArgs {
    #[command(flatten)]
    data: DataArgs,
    /// One SELECT over the tables `events`, `profiles`, `tags`, `memberships` and `identities` (read-only).
    query: String,
    /// Rows printed at most (1 to 100000; the output says when there were more).
    #[arg(long, default_value_t = 1000)]
    max_rows: usize,
    /// Seconds the query may take.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// The answer as JSON: `columns` (name and type), `rows`, `truncated`.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AnalyzeCommand {
    /// A measure of events per day, week or month, optionally broken down by a property, trait or tag.
    Trends(TrendsArgs),
    /// Persons who did a sequence of events within a conversion window, per step.
    Funnel(FunnelArgs),
    /// Cohorts by the period of a first event, and how many came back in each period after.
    Retention(RetentionArgs),
    /// The most frequent events after (or before) an event, step by step (nodes and links for a Sankey chart).
    Paths(PathsArgs),
    /// What sets an audience apart from the rest of the population or from another audience (显著特征).
    Compare(CompareArgs),
    /// RFM segments and their movement between two dates; lifetime value observed and predicted (BG/NBD and
    /// Gamma-Gamma), evaluated on the last horizon held out.
    Value(ValueArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ValueArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The event that is a purchase.
    #[arg(long, default_value = "Order Completed")]
    purchase_event: String,
    /// The purchase's property that is its revenue.
    #[arg(long, default_value = "revenue")]
    revenue: String,
    /// The last day of data read (UTC, included): the second RFM date, and where predictions start; default
    /// today.
    #[arg(long)]
    at: Option<String>,
    /// The first RFM date (its data up to the end of that day): segments then, and how buyers moved since.
    #[arg(long)]
    since: Option<String>,
    /// Days predicted, and held out to evaluate the model (7 to 365).
    #[arg(long, default_value_t = 90)]
    horizon: u32,
    /// The result as JSON: `rfm`, `movement`, `lifetimeValue`.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PathsArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The event paths start from (or, with --direction before, lead to).
    #[arg(long)]
    event: String,
    /// `after` (the events that follow it) or `before` (those that lead to it).
    #[arg(long, value_enum, default_value = "after")]
    direction: DirectionArg,
    /// Steps followed (1 to 5).
    #[arg(long, default_value_t = 3)]
    depth: u32,
    /// Events within this long of the event count: `1d`, `30m` (at most 30 days).
    #[arg(long, default_value = "1d")]
    window: String,
    /// Events with a node of their own per step, the most frequent first (1 to 50); the rest are `(other)`.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// First day a person's first occurrence of the event may be in (UTC); default 30 days before --to.
    #[arg(long)]
    from: Option<String>,
    /// Last day (included); default today.
    #[arg(long)]
    to: Option<String>,
    /// The result as JSON: `nodes` (step, event, persons, ended) and `links` (source, target, persons).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DirectionArg {
    After,
    Before,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CompareArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The audience described.
    #[arg(long)]
    audience: String,
    /// The audience it is compared with (default: the rest of the population).
    #[arg(long)]
    against: Option<String>,
    /// First day of the events counted (UTC); default 30 days before --to.
    #[arg(long)]
    from: Option<String>,
    /// Last day (included); default today.
    #[arg(long)]
    to: Option<String>,
    /// The false discovery rate significant features are held to (0.001 to 0.2).
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Features printed at most (the JSON holds them all).
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// The result as JSON: `features` (effect, test, p- and q-value each) and `skipped`.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TrendsArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The track event measured (default: every track event).
    #[arg(long)]
    event: Option<String>,
    /// `events`, `persons`, `sum` or `average` (the last two of --property).
    #[arg(long, value_enum, default_value = "events")]
    measure: MeasureArg,
    /// The numeric property summed or averaged.
    #[arg(long)]
    property: Option<String>,
    /// `day`, `week` (from Monday) or `month`, in UTC.
    #[arg(long, value_enum, default_value = "day")]
    period: PeriodArg,
    /// First day (UTC); default 30 days before --to.
    #[arg(long)]
    from: Option<String>,
    /// Last day (included); default today.
    #[arg(long)]
    to: Option<String>,
    /// A breakdown: `property:NAME`, `trait:NAME` or `tag:NAME`.
    #[arg(long)]
    breakdown: Option<String>,
    /// Series kept of a breakdown, the largest first; the rest are one `(other)` series (1 to 50).
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Only persons in this audience.
    #[arg(long)]
    audience: Option<String>,
    /// Only events meeting this condition (repeatable): on a property `revenue>=100`, `plan=pro`,
    /// `coupon~SUMMER`, `coupon?` (set), `coupon!` (not set); on a trait or tag `trait:plan=pro`, `tag:ltv>100`.
    #[arg(long = "where")]
    conditions: Vec<String>,
    /// The result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MeasureArg {
    Events,
    Persons,
    Sum,
    Average,
}

#[derive(Debug, clap::Args)]
pub(crate) struct FunnelArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The steps' events, in order, separated by commas (2 to 10).
    #[arg(long, value_delimiter = ',', required = true)]
    steps: Vec<String>,
    /// The conversion window: `7d`, `24h`, `30m` or `90s`.
    #[arg(long, default_value = "7d")]
    window: String,
    /// `ordered` (other events may come between), `strict` (none may) or `any` (in any order).
    #[arg(long, value_enum, default_value = "ordered")]
    order: OrderArg,
    /// First day persons may enter (UTC, `2026-01-01`); default 30 days before --to.
    #[arg(long)]
    from: Option<String>,
    /// Last day persons may enter (included); default today.
    #[arg(long)]
    to: Option<String>,
    /// A condition on a step's event, `STEP:FILTER` (repeatable): `3:revenue>=100`, `1:plan=pro`,
    /// `2:coupon~SUMMER` (contains), `2:coupon?` (set), `2:coupon!` (not set).
    #[arg(long = "where")]
    conditions: Vec<String>,
    /// An exclusion step, `EVENT` or `EVENT:FROM-TO` (repeatable): a person who does it after step FROM and
    /// before step TO (default: the first and the last) drops out after FROM.
    #[arg(long = "exclude")]
    exclusions: Vec<String>,
    /// A breakdown: `property:NAME` (of the first step's event), `trait:NAME` or `tag:NAME`.
    #[arg(long)]
    breakdown: Option<String>,
    /// Values of the breakdown kept, the most persons first; the rest are one `(other)` (1 to 50).
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// The result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RetentionArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The event whose first occurrence makes the cohort (default: a person's first event).
    #[arg(long)]
    cohort_event: Option<String>,
    /// The event that counts as coming back (default: any event).
    #[arg(long)]
    return_event: Option<String>,
    /// `day`, `week` (from Monday) or `month`.
    #[arg(long, value_enum, default_value = "week")]
    period: PeriodArg,
    /// Periods per cohort, the cohort's own first (1 to 60).
    #[arg(long, default_value_t = 8)]
    periods: u32,
    /// First day of the first cohort (UTC); default --periods periods before --to.
    #[arg(long)]
    from: Option<String>,
    /// Last day a cohort may start (included); default today.
    #[arg(long)]
    to: Option<String>,
    /// A breakdown: `trait:NAME` or `tag:NAME`.
    #[arg(long)]
    breakdown: Option<String>,
    /// Values of the breakdown kept, the most persons first; the rest are one `(other)` (1 to 50).
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// The result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OrderArg {
    Ordered,
    Strict,
    Any,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PeriodArg {
    Day,
    Week,
    Month,
}

pub(crate) fn sql(args: SqlArgs) -> anyhow::Result<()> {
    let (runtime, engine) = load(&args.data)?;
    let limits = Limits { rows: args.max_rows, time: Duration::from_secs(args.timeout) };
    let answer = runtime.block_on(engine.sql(&args.query, limits))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", table(&answer));
    }
    Ok(())
}

pub(crate) fn analyze(command: AnalyzeCommand) -> anyhow::Result<()> {
    match command {
        AnalyzeCommand::Trends(args) => {
            let property = || args.property.clone().context("--property: the property to sum or average");
            let measure = match args.measure {
                MeasureArg::Events => Measure::Events,
                MeasureArg::Persons => Measure::Persons,
                MeasureArg::Sum => Measure::Sum { property: property()? },
                MeasureArg::Average => Measure::Average { property: property()? },
            };
            let breakdown = breakdown_of(args.breakdown.as_deref())?;
            let (from, to) = last_30_days(args.from.as_deref(), args.to.as_deref())?;
            let trends = Trends {
                event: args.event,
                measure,
                period: period_of(args.period),
                from,
                to,
                breakdown,
                top: args.top,
                audience: args.audience,
                filters: args
                    .conditions
                    .iter()
                    .map(|f| Filter::parse(f).map_err(|e| anyhow::anyhow!("--where: {e}")))
                    .collect::<anyhow::Result<_>>()?,
            };
            let (runtime, engine) = load(&args.data)?;
            let result = runtime.block_on(engine.trends(&trends))?;
            show(args.json, &result, trends_text)?;
        }
        AnalyzeCommand::Funnel(args) => {
            let order = match args.order {
                OrderArg::Ordered => Order::Ordered,
                OrderArg::Strict => Order::Strict,
                OrderArg::Any => Order::Any,
            };
            let (from, to) = last_30_days(args.from.as_deref(), args.to.as_deref())?;
            let steps = args.steps.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            let mut filters = Vec::new();
            for condition in &args.conditions {
                let (step, filter) = condition
                    .split_once(':')
                    .and_then(|(step, filter)| Some((step.trim().parse::<usize>().ok()?, filter)))
                    .with_context(|| format!("--where: `{condition}` is not `STEP:FILTER` (3:revenue>=100)"))?;
                let filter = Filter::parse(filter).map_err(|e| anyhow::anyhow!("--where: {e}"))?;
                filters.push(StepFilter { step, filter });
            }
            let mut exclusions = Vec::new();
            for text in &args.exclusions {
                let bad = || format!("--exclude: `{text}` is not `EVENT` or `EVENT:FROM-TO` (Coupon Removed:1-2)");
                let (event, between) = match text.rsplit_once(':') {
                    // A name with a colon in it, not a range.
                    Some((_, range)) if !range.trim().starts_with(|c: char| c.is_ascii_digit()) => {
                        (text.as_str(), None)
                    }
                    Some((event, range)) => {
                        let (a, b) = range.split_once('-').with_context(bad)?;
                        let (a, b) = (a.trim().parse::<usize>(), b.trim().parse::<usize>());
                        let (Ok(a), Ok(b)) = (a, b) else { bail!(bad()) };
                        (event, Some((a, b)))
                    }
                    None => (text.as_str(), None),
                };
                exclusions.push(Exclusion {
                    event: event.trim().to_string(),
                    from_step: between.map(|b| b.0),
                    to_step: between.map(|b| b.1),
                });
            }
            let funnel = Funnel {
                steps,
                window_ms: window(&args.window)?,
                order,
                from,
                to,
                filters,
                exclusions,
                breakdown: breakdown_of(args.breakdown.as_deref())?,
                top: args.top,
            };
            let (runtime, engine) = load(&args.data)?;
            let result = runtime.block_on(engine.funnel(&funnel))?;
            show(args.json, &result, funnel_text)?;
        }
        AnalyzeCommand::Retention(args) => {
            let period = period_of(args.period);
            let to = end_of(args.to.as_deref(), "--to")?;
            let from = match args.from.as_deref() {
                Some(day) => start_of(day, "--from")?,
                None => {
                    let index = period.index(to.unix_millis() - 1) - i64::from(args.periods.max(1)) + 1;
                    at(period.start(index))?
                }
            };
            let retention = Retention {
                cohort_event: args.cohort_event,
                return_event: args.return_event,
                period,
                periods: args.periods,
                from,
                to,
                breakdown: breakdown_of(args.breakdown.as_deref())?,
                top: args.top,
            };
            let (runtime, engine) = load(&args.data)?;
            let result = runtime.block_on(engine.retention(&retention))?;
            show(args.json, &result, retention_text)?;
        }
        AnalyzeCommand::Paths(args) => {
            let direction = match args.direction {
                DirectionArg::After => Direction::After,
                DirectionArg::Before => Direction::Before,
            };
            let (from, to) = last_30_days(args.from.as_deref(), args.to.as_deref())?;
            let paths = Paths {
                event: args.event,
                direction,
                depth: args.depth,
                window_ms: window(&args.window)?,
                top: args.top,
                from,
                to,
            };
            let (runtime, engine) = load(&args.data)?;
            let result = runtime.block_on(engine.paths(&paths))?;
            show(args.json, &result, paths_text)?;
        }
        AnalyzeCommand::Value(args) => {
            let since = match args.since.as_deref() {
                Some(day) => Some(end_of(Some(day), "--since")?),
                None => None,
            };
            let value = Value {
                purchase_event: args.purchase_event,
                revenue_property: args.revenue,
                at: end_of(args.at.as_deref(), "--at")?,
                since,
                horizon_days: args.horizon,
            };
            let (runtime, engine) = load(&args.data)?;
            let result = runtime.block_on(engine.value(&value))?;
            show(args.json, &result, value_text)?;
        }
        AnalyzeCommand::Compare(args) => {
            let (from, to) = last_30_days(args.from.as_deref(), args.to.as_deref())?;
            let compare = Compare { audience: args.audience, against: args.against, from, to, alpha: args.alpha };
            let (runtime, engine) = load(&args.data)?;
            let result = runtime.block_on(engine.compare(&compare))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                print!("{}", compare_text(&result, args.limit));
            }
        }
    }
    Ok(())
}

/// `--breakdown property:NAME`, `trait:NAME` or `tag:NAME`.
fn breakdown_of(text: Option<&str>) -> anyhow::Result<Option<Breakdown>> {
    Ok(match text.map(|b| b.split_once(':')) {
        None => None,
        Some(Some(("property", name))) => Some(Breakdown::Property(name.to_string())),
        Some(Some(("trait", name))) => Some(Breakdown::Trait(name.to_string())),
        Some(Some(("tag", name))) => Some(Breakdown::Tag(name.to_string())),
        Some(_) => bail!("--breakdown: `property:NAME`, `trait:NAME` or `tag:NAME`"),
    })
}

/// The result as JSON, or as text.
fn show<T: serde::Serialize>(json: bool, result: &T, text: fn(&T) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(result)?);
    } else {
        print!("{}", text(result));
    }
    Ok(())
}

/// `--from` and `--to` as a range: by default the 30 days up to the end of today.
fn last_30_days(from: Option<&str>, to: Option<&str>) -> anyhow::Result<(UtcTime, UtcTime)> {
    let to = end_of(to, "--to")?;
    let from = match from {
        Some(day) => start_of(day, "--from")?,
        None => at(to.unix_millis() - 30 * DAY_MS)?,
    };
    Ok((from, to))
}

fn period_of(period: PeriodArg) -> Period {
    match period {
        PeriodArg::Day => Period::Day,
        PeriodArg::Week => Period::Week,
        PeriodArg::Month => Period::Month,
    }
}

fn load(data: &DataArgs) -> anyhow::Result<(tokio::runtime::Runtime, Engine)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let store = FsStore::open(&data.data).context("opening the data folder")?;
    let engine = engine(&runtime, &store)?;
    Ok((runtime, engine))
}

/// The analysis engine over the data folder's `store`, with every column (the folder is the operator's).
pub(crate) fn engine(runtime: &tokio::runtime::Runtime, store: &FsStore) -> anyhow::Result<Engine> {
    Ok(runtime.block_on(async {
        let config = RunConfig::load(store).await?;
        Engine::load(store, &config).await
    })?)
}

fn at(ms: i64) -> anyhow::Result<UtcTime> {
    UtcTime::from_unix_millis(ms).context("a time out of range")
}

/// The start of a day `YYYY-MM-DD` (UTC), or an exact RFC 3339 time.
fn start_of(text: &str, flag: &str) -> anyhow::Result<UtcTime> {
    let text = text.trim();
    let parsed = if text.len() == 10 { UtcTime::parse(&format!("{text}T00:00:00Z")) } else { UtcTime::parse(text) };
    parsed.with_context(|| format!("{flag}: `{text}` is not a date (2026-01-31) or an RFC 3339 time"))
}

/// The end (excluded) of the day `YYYY-MM-DD` (so the day is included), an exact RFC 3339 time, or the end of
/// today when not given.
fn end_of(text: Option<&str>, flag: &str) -> anyhow::Result<UtcTime> {
    match text.map(str::trim) {
        None => at((crate::now().unix_millis().div_euclid(DAY_MS) + 1) * DAY_MS),
        Some(day) if day.len() == 10 => at(start_of(day, flag)?.unix_millis() + DAY_MS),
        Some(time) => start_of(time, flag),
    }
}

/// A window such as `7d`, `24h`, `30m` or `90s`, in ms.
fn window(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = number.parse().ok().filter(|n| *n > 0).with_context(|| {
        format!("--window: `{text}` is not a window (a positive number and d, h, m or s: 7d, 24h, 30m, 90s)")
    })?;
    let unit_ms = match unit {
        "d" => DAY_MS,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        _ => bail!("--window: `{text}` needs a unit: d, h, m or s (7d, 24h, 30m, 90s)"),
    };
    n.checked_mul(unit_ms).context("--window: too long")
}

/// An answer as an aligned text table.
fn table(answer: &Answer) -> String {
    let header: Vec<String> =
        answer.columns.iter().map(|c| c["name"].as_str().unwrap_or_default().to_string()).collect();
    let cells: Vec<Vec<String>> = answer
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String]| {
        let padded: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&header);
    for row in &cells {
        out.push_str(&line(row));
    }
    out.push_str(&format!(
        "({} row{}{})\n",
        cells.len(),
        if cells.len() == 1 { "" } else { "s" },
        if answer.truncated { ", more not shown: raise --max-rows" } else { "" }
    ));
    out
}

fn seconds(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0} s"),
        Some(s) if s < 7_200.0 => format!("{:.1} min", s / 60.0),
        Some(s) if s < 172_800.0 => format!("{:.1} h", s / 3_600.0),
        Some(s) => format!("{:.1} d", s / 86_400.0),
    }
}

fn funnel_text(result: &FunnelResult) -> String {
    let mut out =
        format!("funnel from {} to {} (window {})\n", result.from, result.to, seconds(Some(result.window_seconds)));
    out.push_str(&steps_text(&result.steps));
    for series in &result.breakdown {
        out.push_str(&format!("{}\n", series.key));
        out.push_str(&steps_text(&series.steps));
    }
    out
}

fn steps_text(steps: &[functions::analysis::funnel::Step]) -> String {
    let mut out = String::new();
    for (k, step) in steps.iter().enumerate() {
        out.push_str(&format!(
            "  {}. {:<32} {:>9} reached  {:>6.1} % of the first  {:>6.1} % of the step before  median {}\n",
            k + 1,
            step.event,
            step.persons,
            step.conversion_from_first * 100.0,
            step.conversion_from_previous * 100.0,
            seconds(step.median_seconds),
        ));
    }
    out
}

fn trends_text(result: &TrendsResult) -> String {
    let mut out = format!("{:<12}", "period");
    for series in &result.series {
        out.push_str(&format!(" {:>14}", series.key.as_deref().unwrap_or("value")));
    }
    out.push('\n');
    let value = |v: Option<f64>| {
        v.map_or("-".to_string(), |v| if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.2}") })
    };
    for (k, point) in result.series.first().map(|s| s.points.as_slice()).unwrap_or_default().iter().enumerate() {
        out.push_str(&format!("{:<12}", &point.start.to_string()[..10]));
        for series in &result.series {
            out.push_str(&format!(" {:>14}", value(series.points.get(k).and_then(|p| p.value))));
        }
        out.push('\n');
    }
    out.push_str(&format!("{:<12}", "total"));
    for series in &result.series {
        out.push_str(&format!(" {:>14}", value(series.total)));
    }
    out.push('\n');
    out
}

fn retention_text(result: &RetentionResult) -> String {
    if result.cohorts.is_empty() {
        return "no cohort: nobody's first event is in the range\n".into();
    }
    let mut out = cohorts_text(&result.cohorts, result.periods);
    for series in &result.breakdown {
        out.push_str(&format!("{}\n", series.key));
        out.push_str(&cohorts_text(&series.cohorts, result.periods));
    }
    out
}

fn cohorts_text(cohorts: &[functions::analysis::retention::Cohort], periods: u32) -> String {
    let mut out = format!("{:<10} {:>8}", "cohort", "persons");
    for k in 0..periods {
        out.push_str(&format!(" {:>7}", format!("{k}")));
    }
    out.push('\n');
    for cohort in cohorts {
        out.push_str(&format!("{:<10} {:>8}", &cohort.start.to_string()[..10], cohort.size));
        for rate in &cohort.rates {
            match rate {
                Some(rate) => out.push_str(&format!(" {:>6.1}%", rate * 100.0)),
                None => out.push_str(&format!(" {:>7}", "-")),
            }
        }
        out.push('\n');
    }
    out
}

fn paths_text(result: &PathsResult) -> String {
    let way = match result.direction {
        Direction::After => "after",
        Direction::Before => "before",
    };
    let mut out = format!("paths {way} {} ({} persons)\n", result.event, result.persons);
    for (index, node) in result.nodes.iter().enumerate().skip(1) {
        let from: Vec<String> = result
            .links
            .iter()
            .filter(|l| l.target == index)
            .map(|l| format!("{} from {}", l.persons, result.nodes[l.source].event))
            .collect();
        out.push_str(&format!(
            "  step {} {:<32} {:>9} persons ({} ended here; {})\n",
            node.step,
            node.event,
            node.persons,
            node.ended,
            from.join(", ")
        ));
    }
    if let Some(first) = result.nodes.first() {
        out.push_str(&format!("  {} of {} went no further than {}\n", first.ended, first.persons, result.event));
    }
    out
}

fn value_text(result: &ValueResult) -> String {
    let mut out = String::new();
    for rfm in &result.rfm {
        out.push_str(&format!("RFM segments of {} buyers up to {}\n", rfm.buyers, rfm.at));
        for (segment, buyers) in &rfm.segments {
            out.push_str(&format!("  {segment:<16} {buyers:>9}\n"));
        }
    }
    if !result.movement.is_empty() {
        out.push_str("moved\n");
        for moved in &result.movement {
            out.push_str(&format!("  {:<16} -> {:<16} {:>9}\n", moved.from, moved.to, moved.buyers));
        }
    }
    match &result.lifetime_value {
        None => out.push_str(&format!("lifetime value: {}\n", result.note.as_deref().unwrap_or("none"))),
        Some(ltv) => {
            out.push_str(&format!(
                "lifetime value of {} buyers: {:.2} to date ({:.2} each); {:.2} predicted in the next {} days ({:.2} \
                 each)\n",
                ltv.buyers,
                ltv.observed_revenue,
                ltv.observed_average,
                ltv.predicted_revenue,
                result.horizon_days,
                ltv.predicted_average
            ));
            for (segment, value) in &ltv.by_segment {
                out.push_str(&format!(
                    "  {segment:<16} {:>9} buyers  {:>10.2} to date  {:>10.2} predicted\n",
                    value.buyers, value.observed, value.predicted
                ));
            }
            if let Some(h) = &ltv.holdout {
                out.push_str(&format!(
                    "held out from {}: {:.0} purchases ({:.1} predicted), revenue {:.2} ({:.2} predicted); mean \
                     absolute error per buyer {:.2} (naive rate: {:.2})\n",
                    h.from,
                    h.purchases,
                    h.predicted_purchases,
                    h.revenue,
                    h.predicted_revenue,
                    h.revenue_mae,
                    h.naive_revenue_mae
                ));
            }
        }
    }
    out
}

fn compare_text(result: &CompareResult, limit: usize) -> String {
    let mut out = format!(
        "{} ({} profiles) against {} ({} profiles); significant at a false discovery rate of {}\n",
        result.audience, result.size, result.against, result.size_against, result.alpha
    );
    let significant = result.features.iter().filter(|f| f.significant).count();
    out.push_str(&format!("{significant} of {} features differ significantly\n", result.features.len()));
    for feature in result.features.iter().take(limit) {
        let name = match &feature.value {
            Some(value) => format!("{} = {value}", feature.name),
            None => feature.name.clone(),
        };
        let figures = match feature.value {
            Some(_) => format!("{:>6.1} % vs {:>6.1} %", feature.audience * 100.0, feature.against * 100.0),
            None => format!("{:>8.2} vs {:>8.2}", feature.audience, feature.against),
        };
        let lift = feature.lift.map_or("-".to_string(), |l| format!("{l:.2}x"));
        out.push_str(&format!(
            "  {} {:<40} {figures}  lift {lift:>7}  q {:.2e}\n",
            if feature.significant { "*" } else { " " },
            name,
            feature.q_value
        ));
    }
    for skipped in &result.skipped {
        out.push_str(&format!("  skipped {}: {}\n", skipped.name, skipped.reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_days_read_as_written() {
        assert_eq!(window("7d").unwrap(), 7 * DAY_MS);
        assert_eq!(window("30m").unwrap(), 1_800_000);
        assert!(window("7").unwrap_err().to_string().contains("needs a unit"));
        assert!(window("0d").unwrap_err().to_string().contains("not a window"));
        assert!(window("week").unwrap_err().to_string().contains("not a window"));
        assert_eq!(end_of(Some("2026-03-31"), "--to").unwrap().to_string(), "2026-04-01T00:00:00.000Z");
        assert_eq!(start_of("2026-01-01", "--from").unwrap().to_string(), "2026-01-01T00:00:00.000Z");
        assert!(start_of("01/02/2026", "--from").unwrap_err().to_string().starts_with("--from: `01/02/2026`"));
    }
}
