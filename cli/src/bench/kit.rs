//! What the benchmarks share: a deterministic generator, peak memory, the DuckDB peer, and child processes of
//! this binary (started, health-checked, killed on drop).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// A deterministic generator for synthetic data (xorshift64).
pub(crate) struct Xorshift(pub(crate) u64);

impl Xorshift {
    /// The next number below `n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The process's peak resident memory so far (Linux), in bytes.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs a DuckDB peer script of `scripts/bench/` with `args`; its one line of JSON output.
pub(crate) fn duckdb_peer(script: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<serde_json::Value> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench").join(script);
    let output =
        Command::new("python3").arg(&script).args(args).output().context("running python3 (pip install duckdb)")?;
    if !output.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Kills the child on drop.
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts this binary with `args`; its log goes to the file `CDP_BENCH_CHILD_LOG` names, if set.
pub(crate) fn spawn(args: &[&str]) -> anyhow::Result<ChildGuard> {
    let exe = std::env::current_exe().context("locating the cdp binary")?;
    let stderr = match std::env::var_os("CDP_BENCH_CHILD_LOG") {
        Some(path) => Stdio::from(std::fs::File::create(path).context("CDP_BENCH_CHILD_LOG")?),
        None => Stdio::null(),
    };
    let child = Command::new(exe).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn()?;
    Ok(ChildGuard(child))
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Waits until `url/health` answers 200 (10 s at most).
pub(crate) fn wait_healthy(url: &str) -> anyhow::Result<()> {
    let agent = agent();
    for _ in 0..200 {
        if agent.get(&format!("{url}/health")).call().is_ok_and(|r| r.status().as_u16() == 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{url} did not become healthy within 10 s")
}
