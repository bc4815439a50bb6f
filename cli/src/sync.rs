//! `cdp sync postgres`: the rows of a PostgreSQL table or query as events of a source, incrementally by a
//! cursor: columns that only grow (`updated_at,id`). Each run reads the rows past the cursor stored in the
//! bucket (`sync/v1/<source>/<name>.json`), in batches ordered by the cursor; each batch goes through the
//! mapping and the collect pipeline into one raw object (as a file import's chunk), and the cursor moves past
//! it only once that object is stored. A run that stops part-way resumes from the last stored batch; a row read
//! again is the same event (its `messageId` is a hash of the row), a changed row a new one.
//!
//! Rows come back as JSON (`row_to_json`), so PostgreSQL's own conversion gives numbers, booleans, ISO dates,
//! arrays and JSON columns their JSON types; the cursor's values are kept as text and compared in PostgreSQL
//! as the column's type.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use functions::import::{Import, Imported, Origin, store_rows};
use functions::storage::{FsStore, ObjectStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::import::Mapping;
use shared::storage::keys;

use crate::DataArgs;

/// Databases `cdp sync` reads.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SyncCommand {
    /// A PostgreSQL table or query, incrementally by a cursor (docs/data.md, "Database sync").
    Postgres(PostgresArgs),
}

#[derive(clap::Args)]
pub(crate) struct PostgresArgs {
    /// `postgres://user:password@host:port/database` (default: the CDP_SYNC_URL environment variable, which
    /// keeps the password out of shell history). Never printed.
    #[arg(long)]
    url: Option<String>,
    /// The rows: a table's name or a `select` (a query of its own: ordered and limited by the sync).
    #[arg(long)]
    query: String,
    /// The cursor: one or more columns, comma-separated, whose values only grow (`updated_at,id`: a time and
    /// a unique tiebreaker, so rows sharing a time are never skipped).
    #[arg(long)]
    cursor: String,
    /// The source the rows are events of (its id or its name).
    #[arg(long)]
    source: String,
    /// What each row becomes: a file import's mapping, its columns the query's (docs/data.md).
    #[arg(long)]
    mapping: PathBuf,
    /// Rows per batch (one raw object each).
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// The sync's name, `[a-z0-9_-]{1,40}` (default: from the query and the cursor): its cursor is kept under it.
    #[arg(long)]
    name: Option<String>,
    /// Only store the events in raw/; a running `cdp up` (or the cloud's ingest) applies them.
    #[arg(long)]
    no_ingest: bool,
    /// The summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataArgs,
}

impl std::fmt::Debug for PostgresArgs {
    /// Everything but the URL, which may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresArgs")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("query", &self.query)
            .field("cursor", &self.cursor)
            .field("source", &self.source)
            .field("mapping", &self.mapping)
            .field("batch", &self.batch)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Where a sync stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    /// The cursor's columns.
    columns: Vec<String>,
    /// The last row's cursor values, as PostgreSQL writes them as text.
    cursor: Vec<String>,
    /// Rows read by all runs (numbers the rows, in failed rows' records).
    rows: u64,
    /// When it last moved (ms).
    updated_at: i64,
}

pub(crate) fn run(command: SyncCommand) -> anyhow::Result<()> {
    let SyncCommand::Postgres(args) = command;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(postgres(args))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn postgres(args: PostgresArgs) -> anyhow::Result<()> {
    let url = args
        .url
        .clone()
        .or_else(|| std::env::var("CDP_SYNC_URL").ok())
        .context("give the database: --url postgres://user:password@host:port/database, or CDP_SYNC_URL")?;
    let config: tokio_postgres::Config =
        url.parse().map_err(|e| anyhow::anyhow!("--url is not a PostgreSQL connection string: {e}"))?;
    let place = place(&config);
    let mapping_bytes = std::fs::read(&args.mapping).with_context(|| format!("reading {}", args.mapping.display()))?;
    let mapping = Mapping::parse(&mapping_bytes).map_err(|e| anyhow::anyhow!("{}: {e}", args.mapping.display()))?;
    let cursor: Vec<String> = args.cursor.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
    if cursor.is_empty() {
        bail!("--cursor names one or more columns whose values only grow (`updated_at,id`)");
    }
    if args.batch == 0 || args.batch > 100_000 {
        bail!("--batch is 1 to 100000 rows");
    }
    let query = args.query.trim().trim_end_matches(';').trim();
    let simple_name =
        !query.is_empty() && query.split('.').all(|part| part.chars().all(|c| c.is_alphanumeric() || c == '_'));
    let from =
        if simple_name { query.split('.').map(quote).collect::<Vec<_>>().join(".") } else { format!("({query})") };
    let name = match &args.name {
        Some(name) => {
            let ok = (1..=40).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !ok {
                bail!("--name {name:?} must match [a-z0-9_-]{{1,40}}");
            }
            name.clone()
        }
        None => format!("pg-{}", &shared::ids::sha256_hex(&format!("{query}\n{}", cursor.join(",")))[..12]),
    };

    let store = FsStore::open(&args.data.data).context("opening the data folder")?;
    let (source, suppression) = crate::import::source_named(&store, &args.source).await?;

    let connecting = tokio::time::timeout(Duration::from_secs(15), config.connect(tokio_postgres::NoTls));
    let (client, connection) = match connecting.await {
        Ok(Ok(connected)) => connected,
        // The error names the server's complaint or the socket's, never the password.
        Ok(Err(error)) => bail!("could not connect to PostgreSQL at {place}: {}", db_error(&error)),
        Err(_) => bail!("could not connect to PostgreSQL at {place}: no answer in 15 s"),
    };
    let connection = tokio::spawn(connection);

    let described = client
        .prepare(&format!("SELECT * FROM {from} AS cdp_sync LIMIT 0"))
        .await
        .map_err(|e| anyhow::anyhow!("the query does not run on {place}: {}", db_error(&e)))?;
    let columns: Vec<String> = described.columns().iter().map(|c| c.name().to_string()).collect();
    let mut types = Vec::new();
    for column in &cursor {
        let Some(found) = described.columns().iter().find(|c| c.name() == column) else {
            bail!("--cursor: the query has no column `{column}` (it has: {})", listed(&columns));
        };
        types.push(found.type_().name().to_string());
    }
    let mapping_sha256 = mapping.sha256();
    let compiled = mapping.check(&columns).map_err(|e| anyhow::anyhow!("{}: {e}", args.mapping.display()))?;

    let key = keys::sync_cursor(&source.id, &name);
    let mut stored: Stored = match store.get(&key).await? {
        Some(object) => serde_json::from_slice(&object.body).with_context(|| format!("{key} does not decode"))?,
        None => Stored { columns: cursor.clone(), ..Stored::default() },
    };
    if stored.columns != cursor {
        bail!(
            "the sync {name:?} kept its cursor on ({}), not ({}): give another --name, or delete {key} to start over",
            stored.columns.join(", "),
            cursor.join(", ")
        );
    }

    let listed_cursor = cursor.iter().map(|c| format!("cdp_sync.{}", quote(c))).collect::<Vec<_>>().join(", ");
    let not_null =
        cursor.iter().map(|c| format!("cdp_sync.{} IS NOT NULL", quote(c))).collect::<Vec<_>>().join(" AND ");
    let texts = cursor.iter().map(|c| format!("cdp_sync.{}::text", quote(c))).collect::<Vec<_>>().join(", ");
    let past = cursor
        .iter()
        .zip(&types)
        .enumerate()
        .map(|(i, (_, kind))| format!("${}::text::{}", i + 1, quote(kind)))
        .collect::<Vec<_>>()
        .join(", ");
    let select = |resume: bool| {
        let past = if resume { format!(" AND ({listed_cursor}) > ({past})") } else { String::new() };
        format!(
            "SELECT row_to_json(cdp_sync)::text, {texts} FROM {from} AS cdp_sync WHERE {not_null}{past} ORDER BY {listed_cursor} LIMIT {}",
            args.batch + 1
        )
    };

    let mut out =
        Imported { failed_prefix: format!("failed/imports/{}/sync-{name}/", source.id), ..Imported::default() };
    let terminal = std::io::stderr().is_terminal();
    let start = Instant::now();
    let before = stored.rows;
    for number in 0.. {
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            stored.cursor.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let resume = !stored.cursor.is_empty();
        let rows = client
            .query(&select(resume), if resume { &params } else { &[] })
            .await
            .map_err(|e| anyhow::anyhow!("reading rows from {place}: {}", db_error(&e)))?;
        if rows.is_empty() {
            break;
        }
        // One row more than the batch is read: if it shares the batch's last cursor value (a cursor without a
        // unique tiebreaker), the rows with that value are left for the next batch, which starts after the
        // value before them, so none is skipped.
        let full = rows.len() > args.batch;
        let cursors = rows
            .iter()
            .map(|row| (1..=cursor.len()).map(|i| row.try_get::<_, String>(i)).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()?;
        let mut take = rows.len().min(args.batch);
        if full {
            let next = &cursors[args.batch];
            while take > 0 && &cursors[take - 1] == next {
                take -= 1;
            }
            if take == 0 {
                bail!(
                    "more than {} rows share the cursor value ({}) = ({}): give a larger --batch, or a unique \
                     tiebreaker column (`--cursor {},id`)",
                    args.batch,
                    cursor.join(", "),
                    next.join(", "),
                    cursor.join(",")
                );
            }
        }
        let mut batch = Vec::with_capacity(take);
        for (i, row) in rows.iter().take(take).enumerate() {
            let json: String = row.try_get(0).context("a row without its JSON")?;
            let number = stored.rows + i as u64 + 1;
            let cells = match serde_json::from_str::<serde_json::Map<String, Value>>(&json) {
                Ok(mut object) => Ok(columns
                    .iter()
                    .map(|c| object.remove(c).filter(|v| !v.is_null()))
                    .collect::<Vec<Option<Value>>>()),
                Err(e) => Err(format!("the row does not read as JSON: {e}")),
            };
            batch.push((number, cells));
        }
        let last = cursors[take - 1].clone();
        let run = Import::whole(&source, suppression.as_ref(), crate::now(), crate::seed());
        // The mapping is part of each row's id: a corrected mapping makes new events of rows read again.
        let (label, id_prefix) = (format!("{place} ({name})"), format!("sync-{name}-{}", &mapping_sha256[..8]));
        let origin = Origin { name: &label, id_prefix: &id_prefix };
        store_rows(&store, &compiled, &run, origin, number, batch, &mut out).await?;
        // The cursor moves only past rows that are stored; under compare-and-swap, so two runs of one sync
        // cannot both move it.
        let moved = Stored {
            cursor: last,
            rows: stored.rows + take as u64,
            updated_at: crate::now().unix_millis(),
            ..stored.clone()
        };
        let expected = stored.clone();
        functions::config::update(&store, &key, "application/json", |bytes| {
            let current: Option<Stored> = bytes.map(serde_json::from_slice).transpose().map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            if current.as_ref().is_some_and(|c| *c != expected) {
                bail!("another run of the sync {name:?} moved its cursor meanwhile; this one stops (its rows are stored, and the other run read past them)");
            }
            Ok((serde_json::to_vec_pretty(&moved)?, ()))
        })
        .await?;
        stored = moved;
        if terminal {
            let rate = out.rows as f64 / start.elapsed().as_secs_f64().max(1e-9);
            eprint!("\r{} rows  {} rows/s", crate::import::thousands(out.rows), crate::import::thousands(rate as u64));
            let _ = std::io::stderr().flush();
        }
        if !full {
            break;
        }
    }
    if terminal {
        eprintln!();
    }
    // Rows whose cursor is NULL can never be read past: counted, so they are not lost unseen.
    let without_cursor: i64 = client
        .query_one(&format!("SELECT count(*) FROM {from} AS cdp_sync WHERE NOT ({not_null})"), &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| anyhow::anyhow!("counting rows without a cursor on {place}: {}", db_error(&e)))?;
    drop(client);
    let _ = connection.await;
    let seconds = start.elapsed().as_secs_f64();
    let applied = match args.no_ingest || out.objects.is_empty() {
        true => None,
        false => Some(crate::import::apply(&store, &out).await?),
    };
    if args.json {
        let mut summary = serde_json::to_value(&out)?;
        summary["name"] = name.clone().into();
        summary["cursor"] = serde_json::json!(stored.cursor);
        summary["seconds"] = seconds.into();
        summary["withoutCursor"] = without_cursor.into();
        if let Some((applied, duplicates)) = applied {
            summary["applied"] = applied.into();
            summary["duplicates"] = duplicates.into();
        }
        println!("{summary}");
        return Ok(());
    }
    println!(
        "{place}: {} new rows (of {} synced so far) in {seconds:.1} s as events of source {}: {} stored in {} raw objects, {} failed{}",
        crate::import::thousands(out.rows),
        crate::import::thousands(stored.rows.max(before)),
        source.id,
        crate::import::thousands(out.accepted),
        out.objects.len(),
        crate::import::thousands(out.failed),
        if out.failed > 0 {
            format!(" (with their row and reason under {})", out.failed_prefix)
        } else {
            String::new()
        }
    );
    if let Some((applied, duplicates)) = applied {
        println!("applied to profiles: {applied} events ({duplicates} already there)");
    }
    if without_cursor > 0 {
        println!(
            "{} rows have no value in ({}) and are never read: set it on every row (a default, a trigger)",
            crate::import::thousands(without_cursor as u64),
            cursor.join(", ")
        );
    }
    match stored.cursor.is_empty() {
        true => println!("sync {name}: nothing to read yet"),
        false => println!("sync {name}: cursor at ({}) = ({})", cursor.join(", "), stored.cursor.join(", ")),
    }
    Ok(())
}

/// `host:port/database`, without the user or the password.
fn place(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("postgres"))
}

/// The server's message for a database error (what `Display` leaves out), else the error.
fn db_error(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
    }
}

fn listed(columns: &[String]) -> String {
    columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
}
