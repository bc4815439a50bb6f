//! `cdp bench import`: a CSV of CRM contacts through `cdp import` into `raw/` (rows/s, peak memory, in a
//! process of its own), beside DuckDB's `read_csv` of the same file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use functions::import::{Import, import_file};
use functions::storage::FsStore;
use serde_json::json;
use shared::ids::Entropy;
use shared::import::Mapping;
use shared::source::{Sources, new_source};

use super::kit::Xorshift;

/// The mapping of the contacts file: an identify per row, the CRM id as the user id, email and phone as
/// identifiers, six traits.
const MAPPING: &str = r#"{"type": "identify", "userId": {"column": "crm_id"},
  "traits": {"name": {"column": "name"}, "city": {"column": "city"}, "plan": {"column": "plan"},
             "signedUpAt": {"column": "signup", "type": "date"}, "age": {"column": "age", "type": "number"},
             "vip": {"column": "vip", "type": "boolean"}},
  "identifiers": {"email": {"column": "email"}, "phone": {"column": "phone"}}}"#;

/// Writes `rows` synthetic CRM contacts as CSV.
fn generate(path: &Path, rows: u64) -> anyhow::Result<()> {
    const CITIES: [&str; 8] = ["Shanghai", "Beijing", "Shenzhen", "Hangzhou", "Chengdu", "Berlin", "London", "Austin"];
    const PLANS: [&str; 4] = ["free", "pro", "team", "enterprise"];
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(out, "crm_id,name,email,phone,city,plan,signup,age,vip")?;
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    for i in 0..rows {
        let month = 1 + rng.below(12);
        let day = 1 + rng.below(28);
        writeln!(
            out,
            "C{i:08},\"Customer {i}\",customer{i}@example.com,+86 138 {:04} {:04},{},{},2024-{month:02}-{day:02},{},{}",
            rng.below(10_000),
            rng.below(10_000),
            CITIES[rng.below(8) as usize],
            PLANS[rng.below(4) as usize],
            18 + rng.below(60),
            if rng.below(10) == 0 { "yes" } else { "no" },
        )?;
    }
    // On disk before the import is timed: the kernel would otherwise write the freshly generated file back in
    // the middle of the import (dirty pages older than 30 s), charging the generator's I/O to the import.
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// One import of `file` into the folder `data` (source `crm`), in this fresh process: prints `{"seconds",
/// "rows", "accepted", "peakBytes"}`.
pub(crate) fn measure(file: &Path, data: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = FsStore::open(data)?;
    let sources = runtime.block_on(functions::collect::load_sources(&store))?;
    let source = sources.list().iter().find(|s| s.id == "crm").cloned().context("source crm")?;
    let mapping = Mapping::parse(MAPPING.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let run = Import::whole(&source, None, crate::now(), crate::seed());
    let start = Instant::now();
    let imported = runtime
        .block_on(import_file(&store, file, mapping, &run, &mut |_, _| {}))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let peak = super::kit::peak_rss_bytes().unwrap_or(0);
    println!(
        "{}",
        json!({"seconds": seconds, "rows": imported.rows, "accepted": imported.accepted, "failed": imported.failed,
               "objects": imported.objects.len(), "peakBytes": peak})
    );
    Ok(())
}

pub(crate) fn run(rows: u64, duckdb: bool, dir: Option<PathBuf>) -> anyhow::Result<()> {
    if rows == 0 {
        bail!("need --rows ≥ 1");
    }
    let temporary = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("contacts.csv");
    let start = Instant::now();
    generate(&file, rows)?;
    let size = std::fs::metadata(&file)?.len();
    println!(
        "cdp bench import: {rows} CRM contacts, {:.1} MB of CSV, written in {:.1} s",
        size as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    let data = dir.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let store = FsStore::open(&data)?;
    let (source, _) = new_source("crm", "CRM", &mut Entropy::from_seed(crate::seed()));
    let mut sources = Sources::default();
    sources.add(source).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(data.join("config"))?;
    std::fs::write(data.join(shared::storage::keys::CONFIG_SOURCES), sources.to_json())?;
    drop(store);

    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "import", "--measure"])
        .arg(&file)
        .arg("--data")
        .arg(&data)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !output.status.success() {
        bail!("cdp bench import --measure failed");
    }
    let ours: serde_json::Value =
        serde_json::from_slice(String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or("{}").as_bytes())?;
    let seconds = ours["seconds"].as_f64().unwrap_or(0.0);
    if ours["accepted"].as_u64() != Some(rows) {
        bail!("not every row was imported: {ours}");
    }
    println!(
        "  cdp import   {seconds:>7.2} s  {:>9.0} rows/s  {:>6.1} MB/s  peak {:.0} MB  ({} raw objects)",
        rows as f64 / seconds,
        size as f64 / 1e6 / seconds,
        ours["peakBytes"].as_f64().unwrap_or(0.0) / 1e6,
        ours["objects"]
    );
    if duckdb {
        let peer = super::kit::duckdb_peer("duckdb_import.py", &[file.as_os_str()])?;
        let peer_seconds = peer["seconds"].as_f64().unwrap_or(0.0);
        println!(
            "  duckdb       {peer_seconds:>7.2} s  {:>9.0} rows/s  {:>6.1} MB/s  peak {:.0} MB  (read_csv into a table, DuckDB {})",
            peer["rowsPerSecond"].as_f64().unwrap_or(0.0),
            size as f64 / 1e6 / peer_seconds,
            peer["peakBytes"].as_f64().unwrap_or(0.0) / 1e6,
            peer["duckdb"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}
