//! `cdp bench idle`: a real `cdp up` (its open-file limit lowered to `--files`) while this process holds
//! `--sockets` idle connections to it, more than it may keep open. Measured: how many of `--requests` real
//! requests (posted events, API reads) are served and how fast, how many idle sockets the runner closed, its
//! open files at most, and whether its log ever says it ran out of files. Fails if a request is not served or
//! the runner ran out of files.

use std::io::Read as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Open files of process `pid` now (Linux).
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

pub(crate) fn run(sockets: usize, requests: usize, files: u64) -> anyhow::Result<()> {
    let own = crate::serve::open_file_limit().unwrap_or(1024);
    if (sockets as u64) + 64 > own {
        bail!(
            "this process may open {own} files; raise `ulimit -n` to at least {} for {sockets} sockets",
            sockets + 64
        );
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_string_lossy().to_string();
    let store = functions::storage::FsStore::open(dir.path())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (_, key) = runtime.block_on(crate::source::create(&store, "idle", "Idle", Vec::new()))?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let log = dir.path().join("cdp-up.log");
    let exe = std::env::current_exe().context("locating the cdp binary")?;
    // The runner with a lowered open-file limit, as a small machine or a container would give it.
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n \"$0\" && exec \"$@\"")
        .arg(files.to_string())
        .arg(&exe)
        .args(["up", "--data", &data, "--listen", &addr.to_string()])
        .env("CDP_LOG", "cdp=info,functions=info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let pid = child.id();
    let _child = super::kit::ChildGuard(child);
    let url = format!("http://{addr}");
    super::kit::wait_healthy(&url)?;
    println!(
        "cdp bench idle: {sockets} idle connections held against cdp up (open files limited to {files}), {requests} requests meanwhile"
    );

    let start = Instant::now();
    let mut idle = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        idle.push(std::net::TcpStream::connect(addr).context("opening an idle connection")?);
    }
    let opened_in = start.elapsed();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut latencies = Vec::with_capacity(requests);
    let mut served = 0;
    let mut peak_files = open_files(pid);
    for n in 0..requests {
        let body = serde_json::json!({"writeKey": key, "batch": [
            {"type": "track", "event": "Idle Test", "userId": format!("idle-{n}"), "messageId": format!("idle-{n}")}
        ]})
        .to_string();
        let sent = Instant::now();
        let ok = agent
            .post(&format!("{url}/v1/batch"))
            .header("content-type", "application/json")
            .send(body.as_bytes())
            .is_ok_and(|r| r.status().as_u16() == 200);
        latencies.push(sent.elapsed());
        served += usize::from(ok);
        peak_files = peak_files.max(open_files(pid));
    }
    // Past the header time every idle socket is closed by the runner.
    std::thread::sleep(Duration::from_secs(12));
    let mut closed = 0;
    for mut socket in idle {
        socket.set_read_timeout(Some(Duration::from_millis(5)))?;
        let mut buf = [0u8; 64];
        // End of stream or a reset: closed by the runner; a read timing out: still open.
        let open = matches!(socket.read(&mut buf),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        closed += usize::from(!open);
    }
    let exhausted = std::fs::read_to_string(&log).unwrap_or_default().matches("Too many open files").count();
    latencies.sort_unstable();
    let quantile = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    println!(
        "| idle sockets | opened in | requests served | p50 | p99 | max | idle closed by the runner after 12 s | runner's open files at most (limit) | \"Too many open files\" in its log |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {sockets} | {:.2} s | {served} of {requests} | {:.1} ms | {:.1} ms | {:.1} ms | {closed} | {peak_files} ({files}) | {exhausted} |",
        opened_in.as_secs_f64(),
        quantile(0.5).as_secs_f64() * 1e3,
        quantile(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    if served < requests {
        bail!("{} of {requests} requests were not served while idle sockets were held", requests - served);
    }
    if exhausted > 0 {
        bail!("the runner ran out of files {exhausted} times");
    }
    Ok(())
}
