//! `cdp bench recompute`: the columnar full recompute of 20 tags (the same twenty as `cdp bench tags`) for
//! every profile from Parquet tables, side by side in the same run with DuckDB computing the same tag
//! definitions in SQL from the same Parquet files; the results are compared value by value.
//!
//! The data is synthetic but shaped like a store's: ~10 events per profile over a year (page views, product
//! views, orders with revenue and category), traits per profile. Revenues are multiples of 0.25, so every
//! summation order gives the same sum and the comparison with DuckDB can be exact.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::kit::Xorshift;
use anyhow::{Context as _, bail};
use arrow_array::types::Int8Type;
use arrow_array::{
    ArrayRef, DictionaryArray, Float64Array, Int8Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow_schema::{Field, Schema};
use functions::columnar::{Chunk, Table, recompute, results_batch, write_table};
use shared::tags::{AggregateOp, CompareOp, Condition, Expr, Operand, TagKind, TagSet};

const NOW: i64 = 1_795_000_000_000;
const DAY: i64 = 86_400_000;

const CATEGORIES: [&str; 5] = ["shoes", "shirts", "hats", "bags", "socks"];
const SOURCES: [&str; 4] = ["ads", "web", "email", "social"];
const PLANS: [&str; 4] = ["free", "pro", "team", "enterprise"];

fn dictionary(keys: Vec<Option<i8>>, values: &[&str]) -> ArrayRef {
    let keys = Int8Array::from(keys);
    Arc::new(
        DictionaryArray::<Int8Type>::try_new(keys, Arc::new(StringArray::from(values.to_vec())))
            .expect("keys in range"),
    )
}

/// One chunk of profiles `first..first + profiles`: the profile table and the event table.
fn chunk(first: u32, profiles: u32, events_per_profile: u64, rng: &mut Xorshift) -> (RecordBatch, RecordBatch) {
    let plans: Vec<Option<i8>> = (0..profiles).map(|_| Some(rng.below(PLANS.len() as u64) as i8)).collect();
    let traits = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("profile", arrow_schema::DataType::UInt32, false),
            Field::new(
                "traits.plan",
                arrow_schema::DataType::Dictionary(
                    Box::new(arrow_schema::DataType::Int8),
                    Box::new(arrow_schema::DataType::Utf8),
                ),
                true,
            ),
        ])),
        vec![Arc::new(UInt32Array::from_iter_values(first..first + profiles)), dictionary(plans, &PLANS)],
    )
    .expect("profile columns");

    let (mut profile, mut at, mut kind, mut event) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut revenue, mut category, mut source) = (Vec::new(), Vec::new(), Vec::new());
    let mut times = Vec::new();
    for p in first..first + profiles {
        times.clear();
        for _ in 0..rng.below(2 * events_per_profile + 1) {
            times.push(NOW - rng.below(365 * DAY as u64) as i64);
        }
        times.sort_unstable();
        for &t in &times {
            profile.push(p);
            at.push(t);
            let roll = rng.below(10);
            let cat = Some(rng.below(CATEGORIES.len() as u64) as i8);
            match roll {
                0 => {
                    kind.push(Some(0));
                    event.push(Some(0)); // Order Completed
                    revenue.push(Some((rng.below(2_400) + 20) as f64 / 4.0));
                    category.push(cat);
                    source.push(None);
                }
                1..=6 => {
                    kind.push(Some(0));
                    event.push(Some(1)); // Product Viewed
                    revenue.push(None);
                    category.push(cat);
                    source.push(Some(rng.below(SOURCES.len() as u64) as i8));
                }
                _ => {
                    kind.push(Some(1)); // page
                    event.push(None);
                    revenue.push(None);
                    category.push(None);
                    source.push(Some(rng.below(SOURCES.len() as u64) as i8));
                }
            }
        }
    }
    let dict = || {
        arrow_schema::DataType::Dictionary(
            Box::new(arrow_schema::DataType::Int8),
            Box::new(arrow_schema::DataType::Utf8),
        )
    };
    let events = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("profile", arrow_schema::DataType::UInt32, false),
            Field::new("at", arrow_schema::DataType::Int64, false),
            Field::new("type", dict(), false),
            Field::new("event", dict(), true),
            Field::new("properties.revenue", arrow_schema::DataType::Float64, true),
            Field::new("properties.category", dict(), true),
            Field::new("properties.source", dict(), true),
        ])),
        vec![
            Arc::new(UInt32Array::from(profile)),
            Arc::new(Int64Array::from(at)),
            dictionary(kind, &["track", "page"]),
            dictionary(event, &["Order Completed", "Product Viewed"]),
            Arc::new(Float64Array::from(revenue)),
            dictionary(category, &CATEGORIES),
            dictionary(source, &SOURCES),
        ],
    )
    .expect("event columns");
    (traits, events)
}

/// Writes the two tables unless `dir` already holds them for these parameters; returns (profiles, events).
fn generate(dir: &Path, profiles: u32, events_per_profile: u64, chunk_profiles: u32) -> anyhow::Result<(u64, u64)> {
    let params = format!("{profiles} {events_per_profile} {chunk_profiles} v1");
    let marker = dir.join("params");
    let counts = dir.join("counts");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(params.as_str())
        && let Some((p, e)) = std::fs::read_to_string(&counts).ok().and_then(|c| {
            let (p, e) = c.trim().split_once(' ')?;
            Some((p.parse().ok()?, e.parse().ok()?))
        })
    {
        println!("reusing the tables in {}", dir.display());
        return Ok((p, e));
    }
    std::fs::create_dir_all(dir)?;
    let start = Instant::now();
    let firsts: Vec<u32> = (0..profiles).step_by(chunk_profiles as usize).collect();
    let (schema_p, schema_e) = {
        let (p, e) = chunk(0, 1, 1, &mut Xorshift(1));
        (p.schema(), e.schema())
    };
    // Two passes with the same seed: the profile table, then the event table (one chunk in memory at a time).
    let mut events = 0u64;
    for pass in 0..2 {
        let mut rng_pass = Xorshift(0x9e37_79b9_7f4a_7c15);
        let path = dir.join(if pass == 0 { "profiles.parquet" } else { "events.parquet" });
        let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let batches = firsts.iter().map(|&first| {
            let (p, e) = chunk(first, chunk_profiles.min(profiles - first), events_per_profile, &mut rng_pass);
            if pass == 1 {
                events += e.num_rows() as u64;
            }
            if pass == 0 { p } else { e }
        });
        write_table(file, if pass == 0 { schema_p.clone() } else { schema_e.clone() }, batches)?;
    }
    std::fs::write(&counts, format!("{profiles} {events}"))?;
    std::fs::write(&marker, params)?;
    println!("generated {profiles} profiles, {events} events in {:.1} s", start.elapsed().as_secs_f64());
    Ok((u64::from(profiles), events))
}

/// A SQL literal of a JSON value (numbers, strings, booleans).
fn literal(value: &serde_json::Value) -> anyhow::Result<String> {
    Ok(match value {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        serde_json::Value::Bool(b) => b.to_string(),
        other => bail!("no SQL literal for {other}"),
    })
}

/// A condition on a SQL expression, true or false (never null), as the reference compares.
fn condition_sql(column: &str, c: &Condition) -> anyhow::Result<String> {
    let list =
        || -> anyhow::Result<Vec<String>> { c.value.as_array().context("a list")?.iter().map(literal).collect() };
    Ok(match c.op {
        CompareOp::Eq => format!("coalesce({column} = {}, false)", literal(&c.value)?),
        CompareOp::Ne => format!("({column} IS DISTINCT FROM {})", literal(&c.value)?),
        CompareOp::Gt => format!("coalesce({column} > {}, false)", literal(&c.value)?),
        CompareOp::Gte => format!("coalesce({column} >= {}, false)", literal(&c.value)?),
        CompareOp::Lt => format!("coalesce({column} < {}, false)", literal(&c.value)?),
        CompareOp::Lte => format!("coalesce({column} <= {}, false)", literal(&c.value)?),
        CompareOp::In => format!("coalesce({column} IN ({}), false)", list()?.join(", ")),
        CompareOp::Contains => format!("coalesce(contains({column}, {}), false)", literal(&c.value)?),
        CompareOp::Exists if c.value.as_bool().unwrap_or(true) => format!("({column} IS NOT NULL)"),
        CompareOp::Exists => format!("({column} IS NULL)"),
        CompareOp::Between => {
            let bounds = list()?;
            let [low, high] = bounds.as_slice() else { bail!("between takes two bounds") };
            format!("coalesce({column} BETWEEN {low} AND {high}, false)")
        }
        CompareOp::Regex => format!("coalesce(regexp_matches({column}, {}), false)", literal(&c.value)?),
    })
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The tag definitions as one DuckDB query over the two Parquet files: one row per profile, a column per
/// tag, with the reference semantics (counts of nothing are 0, sums of nothing 0, ties by row order).
fn duckdb_sql(tags: &TagSet, profiles: &Path, events: &Path) -> anyhow::Result<String> {
    let mut aggregates = Vec::new();
    let mut ctes = vec![format!(
        "e AS (SELECT *, file_row_number AS rn FROM read_parquet('{}', file_row_number = true))",
        events.display()
    )];
    let mut joins = Vec::new();
    let mut exprs: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let mut select = Vec::new();
    for tag in tags.tags() {
        let id = &tag.id;
        let expr = match &tag.kind {
            TagKind::Statistical { filter, aggregate, window } => {
                let mut parts = Vec::new();
                if let Some(ms) = window.millis() {
                    parts.push(format!("\"at\" >= {}", NOW - ms));
                }
                let names = |names: &[String]| {
                    names
                        .iter()
                        .map(|n| literal(&serde_json::Value::String(n.clone())))
                        .collect::<anyhow::Result<Vec<_>>>()
                };
                if !filter.types.is_empty() {
                    parts.push(format!("\"type\" IN ({})", names(&filter.types)?.join(", ")));
                }
                if !filter.events.is_empty() {
                    parts.push(format!("\"event\" IN ({})", names(&filter.events)?.join(", ")));
                }
                for c in &filter.properties {
                    parts.push(condition_sql(&quoted(&format!("properties.{}", c.field)), c)?);
                }
                let property = aggregate.property.as_ref().map(|p| quoted(&format!("properties.{p}")));
                if property.is_some() && aggregate.op != AggregateOp::Count {
                    parts.push(format!("{} IS NOT NULL", property.clone().unwrap_or_default()));
                }
                let filter = if parts.is_empty() { "true".to_string() } else { parts.join(" AND ") };
                let p = property.clone().unwrap_or_else(|| "*".into());
                let column = quoted(&format!("s_{id}"));
                let agg = match aggregate.op {
                    AggregateOp::Count => format!("count({p})"),
                    AggregateOp::Sum => format!("sum({p})"),
                    AggregateOp::Avg => format!("avg({p})"),
                    AggregateOp::Min => format!("min({p})"),
                    AggregateOp::Max => format!("max({p})"),
                    AggregateOp::First => format!("arg_min({p}, rn)"),
                    AggregateOp::Last => format!("arg_max({p}, rn)"),
                    AggregateOp::DistinctCount => format!("count(DISTINCT {p})"),
                    AggregateOp::MostFrequent => {
                        let cte = quoted(&format!("m_{id}"));
                        ctes.push(format!(
                            "{cte} AS (SELECT profile, arg_max(v, c * 1099511627776 + last) AS v FROM \
                             (SELECT profile, {p} AS v, count(*) AS c, max(rn) AS last FROM e WHERE {filter} \
                             GROUP BY profile, {p}) GROUP BY profile)"
                        ));
                        joins.push(format!("LEFT JOIN {cte} USING (profile)"));
                        exprs.insert(id.clone(), format!("{cte}.v"));
                        select.push(format!("{cte}.v AS {}", quoted(id)));
                        continue;
                    }
                    AggregateOp::UniqueList => bail!("tag {id}: unique_list has no SQL translation in this benchmark"),
                };
                aggregates.push(format!("{agg} FILTER (WHERE {filter}) AS {column}"));
                match aggregate.op {
                    AggregateOp::Count | AggregateOp::DistinctCount => format!("coalesce(s.{column}, 0)"),
                    AggregateOp::Sum => format!("coalesce(s.{column}, 0)::DOUBLE"),
                    AggregateOp::Avg | AggregateOp::Min | AggregateOp::Max => format!("s.{column}::DOUBLE"),
                    _ => format!("s.{column}"),
                }
            }
            TagKind::Propensity { .. } | TagKind::Rfm { .. } | TagKind::Affinity { .. } => {
                bail!("tag {id}: population tags have no SQL translation in this benchmark")
            }
            TagKind::Rule { when } => rule_sql(when, &exprs)?,
            TagKind::Buckets { of, buckets, otherwise } => {
                let x = operand_sql(of, &exprs)?;
                let mut case = format!("CASE WHEN {x} IS NULL THEN NULL");
                for b in buckets {
                    let mut tests = Vec::new();
                    if let Some(min) = b.min {
                        tests.push(format!("{x} >= {min}"));
                    }
                    if let Some(max) = b.max {
                        tests.push(format!("{x} < {max}"));
                    }
                    let test = if tests.is_empty() { "true".into() } else { tests.join(" AND ") };
                    write!(case, " WHEN {test} THEN {}", literal(&serde_json::Value::String(b.label.clone()))?)?;
                }
                match otherwise {
                    Some(label) => write!(case, " ELSE {} END", literal(&serde_json::Value::String(label.clone()))?)?,
                    None => case.push_str(" ELSE NULL END"),
                }
                case
            }
        };
        select.push(format!("{expr} AS {}", quoted(id)));
        exprs.insert(id.clone(), format!("({expr})"));
    }
    ctes.push(format!("s AS (SELECT profile, {} FROM e GROUP BY profile)", aggregates.join(", ")));
    Ok(format!(
        "WITH {} SELECT p.profile, {} FROM read_parquet('{}') p LEFT JOIN s USING (profile) {}",
        ctes.join(",\n"),
        select.join(",\n"),
        profiles.display(),
        joins.join(" ")
    ))
}

fn operand_sql(operand: &Operand, tags: &std::collections::BTreeMap<String, String>) -> anyhow::Result<String> {
    Ok(match operand {
        Operand::Trait(name) => format!("p.{}", quoted(&format!("traits.{name}"))),
        Operand::Tag(id) => {
            tags.get(id).cloned().with_context(|| format!("tag {id} is not computed before its use"))?
        }
    })
}

fn rule_sql(expr: &Expr, tags: &std::collections::BTreeMap<String, String>) -> anyhow::Result<String> {
    Ok(match expr {
        Expr::And(all) => {
            format!("({})", all.iter().map(|e| rule_sql(e, tags)).collect::<anyhow::Result<Vec<_>>>()?.join(" AND "))
        }
        Expr::Or(all) => {
            format!("({})", all.iter().map(|e| rule_sql(e, tags)).collect::<anyhow::Result<Vec<_>>>()?.join(" OR "))
        }
        Expr::Not(inner) => format!("(NOT {})", rule_sql(inner, tags)?),
        Expr::Condition(c) => {
            condition_sql(&operand_sql(&Operand::parse(&c.field).map_err(anyhow::Error::msg)?, tags)?, c)?
        }
    })
}

pub(crate) fn run(
    profiles: u32,
    events_per_profile: u64,
    chunk_profiles: u32,
    data: Option<PathBuf>,
    duckdb: bool,
) -> anyhow::Result<()> {
    if profiles == 0 || chunk_profiles == 0 {
        bail!("need --profiles ≥ 1 and --chunk ≥ 1");
    }
    let tags = super::tags::twenty_tags()?;
    let scratch = tempfile::tempdir()?;
    let dir = data.unwrap_or_else(|| scratch.path().to_path_buf());
    let (profile_count, event_count) = generate(&dir, profiles, events_per_profile, chunk_profiles)?;
    let profiles_path = dir.join("profiles.parquet");
    let events_path = dir.join("events.parquet");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
    println!(
        "cdp bench recompute: {profile_count} profiles, {event_count} events, {} tags; Parquet {:.0} MB events + {:.0} MB profiles, row groups of {chunk_profiles} profiles",
        tags.tags().len(),
        size(&events_path),
        size(&profiles_path)
    );

    // Peak memory of the recompute alone: reset the process's high-water mark first (Linux).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let start = Instant::now();
    let (chunks, _): (Vec<Chunk>, _) =
        recompute(&tags, Table::File(profiles_path.clone()), Table::File(events_path.clone()), NOW, 2)?;
    let ours = start.elapsed().as_secs_f64();
    let peak = super::kit::peak_rss_bytes().unwrap_or(0);
    println!("| engine | time (s) | peak memory (MB) | events/s |");
    println!("|---|---:|---:|---:|");
    println!(
        "| cdp columnar (Arrow, 2 threads) | {ours:.2} | {:.0}{} | {:.0} M |",
        peak as f64 / 1e6,
        if reset { "" } else { " (process peak)" },
        event_count as f64 / ours / 1e6
    );

    if duckdb {
        let ours_path = dir.join("cdp-results.parquet");
        let schema = results_batch(&chunks[0]).schema();
        write_table(
            std::io::BufWriter::new(std::fs::File::create(&ours_path)?),
            schema,
            chunks.iter().map(results_batch),
        )?;
        drop(chunks);
        let sql_path = dir.join("tags.sql");
        std::fs::write(&sql_path, duckdb_sql(&tags, &profiles_path, &events_path)?)?;
        let theirs = dir.join("duckdb-results.parquet");
        let peer = super::kit::duckdb_peer(
            "duckdb_tags.py",
            &[sql_path.as_os_str(), ours_path.as_os_str(), theirs.as_os_str()],
        )?;
        let seconds = peer["seconds"].as_f64().unwrap_or(f64::NAN);
        println!(
            "| DuckDB {} SQL (2 threads) | {seconds:.2} | {:.0} | {:.0} M |",
            peer["duckdb"].as_str().unwrap_or("?"),
            peer["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN) / 1e6,
            event_count as f64 / seconds / 1e6
        );
        let mismatches = peer["mismatches"].as_u64().unwrap_or(u64::MAX);
        println!(
            "results identical to DuckDB's ({} profiles × {} tags compared): {}; cdp is {:.1}× DuckDB's speed",
            peer["rows"],
            tags.tags().len(),
            if mismatches == 0 {
                "yes".to_string()
            } else {
                format!("NO, {mismatches} profiles differ: {}", peer["examples"])
            },
            seconds / ours
        );
        if mismatches != 0 || peer["rows"].as_u64() != Some(profile_count) {
            bail!("the results differ from DuckDB's");
        }
    }
    Ok(())
}
