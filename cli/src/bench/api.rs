//! `cdp bench api`: profile lookups by identifier through the API's router, in process — a warm function on
//! local storage — with latency percentiles; optionally beside DuckDB answering the same lookups from a table
//! of the same profiles keyed by identifier (primary-key index), in the same run.

use std::io::Write as _;
use std::time::Instant;

use anyhow::{Context as _, bail};
use axum::body::Body;
use axum::http::Request;
use functions::api::{Api, router, update_keys};
use functions::storage::FsStore;
use shared::access::Scope;
use shared::ids::{Entropy, sha256_hex};
use tower_service::Service as _;

use super::kit::Xorshift;

/// The identifier a lookup uses: the three kinds in turn, as a caller would type them, and as the graph keys
/// them (for the peer's table).
fn identifier(i: usize, person: u64) -> (String, String) {
    match i % 3 {
        0 => (format!("user_id:user-{person}"), format!("user_id:user-{person}")),
        1 => (format!("anonymous_id:anon-{person}"), format!("anonymous_id:anon-{person}")),
        _ => {
            let email = format!("person{person}@example.com");
            (format!("email:{email}"), format!("email:{}", sha256_hex(&email)))
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub(crate) fn run(people: u64, lookups: usize, duckdb: bool) -> anyhow::Result<()> {
    if people == 0 || lookups == 0 {
        bail!("need --people ≥ 1 and --lookups ≥ 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let store = FsStore::open(dir.path())?;
    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
    let picks: Vec<(String, String, u64)> = (0..lookups)
        .map(|i| {
            let person = random.below(people);
            let (typed, key) = identifier(i, person);
            (typed, key, person)
        })
        .collect();
    let latencies = runtime.block_on(async {
        let start = Instant::now();
        super::ingest::build_base(&store, people).await?;
        println!(
            "cdp bench api: state of {people} people / {} identifiers built in {:.1} s",
            people * 3,
            start.elapsed().as_secs_f64()
        );
        let key = update_keys(&store, |keys| {
            keys.create(
                "bench",
                [Scope::ProfilesRead].into(),
                "bench",
                crate::now(),
                &mut Entropy::from_seed(crate::seed()),
            )
            .map_err(functions::api::ApiError::invalid)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .key;
        let auth = format!("Bearer {key}");
        let mut app = router(Api::new(store.clone()));
        let mut call = async |typed: &str| -> anyhow::Result<(f64, serde_json::Value)> {
            let request =
                Request::get(format!("/v1/profiles/{typed}")).header("authorization", &auth).body(Body::empty())?;
            let start = Instant::now();
            let response = app.call(request).await?;
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            if !status.is_success() {
                bail!("{typed}: {status} {}", String::from_utf8_lossy(&body));
            }
            Ok((ms, serde_json::from_slice(&body)?))
        };
        // Warm: the first lookups read the manifest and base table.
        for (typed, _, _) in picks.iter().take(100) {
            call(typed).await?;
        }
        let mut latencies = Vec::with_capacity(lookups);
        for (typed, _, person) in &picks {
            let (ms, profile) = call(typed).await?;
            let expected = format!("user_id:user-{person}");
            if !profile["identities"].as_array().is_some_and(|ids| ids.iter().any(|i| i == expected.as_str())) {
                bail!("{typed} answered another profile: {profile}");
            }
            latencies.push(ms);
        }
        anyhow::Ok(latencies)
    })?;
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let total: f64 = latencies.iter().sum();
    println!();
    println!(
        "| {lookups} lookups, {people} people | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | lookups/s (one at a time) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| API router, folder store (warm) | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        percentile(&sorted, 0.99),
        sorted[sorted.len() - 1],
        lookups as f64 / (total / 1e3)
    );
    if duckdb {
        // The same profiles as a table keyed by identifier, and the same lookups.
        let scan = runtime.block_on(functions::state::scan(&store))?;
        let table = dir.path().join("profiles.ndjson");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&table)?);
        for (identifier, id) in &scan.ids {
            let profile = scan.profiles.get(id).context("an identifier without its profile")?;
            let row = serde_json::json!({"key": identifier, "profile": serde_json::to_string(profile)?});
            writeln!(out, "{row}")?;
        }
        out.flush()?;
        drop(out);
        let keys = dir.path().join("keys.txt");
        std::fs::write(&keys, picks.iter().map(|(_, key, _)| key.as_str()).collect::<Vec<_>>().join("\n"))?;
        let peer = super::kit::duckdb_peer("duckdb_lookup.py", &[table.as_os_str(), keys.as_os_str()])?;
        println!(
            "| DuckDB {} (table with primary key, in process) | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            peer["duckdb"].as_str().unwrap_or("?"),
            peer["p50"].as_f64().unwrap_or(f64::NAN),
            peer["p90"].as_f64().unwrap_or(f64::NAN),
            peer["p99"].as_f64().unwrap_or(f64::NAN),
            peer["max"].as_f64().unwrap_or(f64::NAN),
            peer["per_second"].as_f64().unwrap_or(f64::NAN),
        );
        if peer["found"].as_u64() != Some(lookups as u64) {
            bail!("DuckDB found {} of {lookups}", peer["found"]);
        }
    }
    Ok(())
}
