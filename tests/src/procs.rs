//! Child processes under test: `cdp up` and `wrangler dev`. Each runs in its own process group and is
//! stopped (group and all) when its guard is dropped; output goes to `target/e2e-logs/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, repo_root};

/// A child process, killed with its process group on drop.
pub struct Proc {
    child: Child,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `command` in its own process group, its output going to `target/e2e-logs/NAME-*.log`.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        let dir = repo_root().join("target/e2e-logs");
        std::fs::create_dir_all(&dir).expect("log folder");
        let log = dir.join(format!("{name}-{}.log", free_port()));
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        use std::os::unix::process::CommandExt as _;
        command.process_group(0).stdin(Stdio::null()).stdout(file).stderr(err);
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self { child, log }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("process exited with {status}; log:\n{}", self.log_tail())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The last lines of its output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Its whole output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).stderr(Stdio::null()).status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }
}

/// The `cdp` binary: `$CDP_BIN`, else `target/debug/cdp` (the test command builds it first).
pub fn cdp_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CDP_BIN") {
        return PathBuf::from(bin);
    }
    let bin = repo_root().join("target/debug/cdp");
    assert!(bin.exists(), "{} is missing: run `cargo build -p cdp` first (the test command does)", bin.display());
    bin
}

/// Runs `cdp source add NAME --data DIR` and returns the new write key (the output's last line).
pub fn cdp_source_add(data: &Path, name: &str) -> String {
    let output = Command::new(cdp_bin())
        .args(["source", "add", name, "--data"])
        .arg(data)
        .output()
        .expect("running cdp source add");
    assert!(output.status.success(), "cdp source add failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().last().expect("a write key line").trim().to_string()
}

/// `cdp api-key create NAME --scope …`: the key (the output's last line).
pub fn cdp_api_key(data: &Path, name: &str, scopes: &[&str]) -> String {
    let mut command = Command::new(cdp_bin());
    command.args(["api-key", "create", name, "--data"]).arg(data);
    for scope in scopes {
        command.args(["--scope", scope]);
    }
    let output = command.output().expect("running cdp api-key create");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().last().expect("a key").trim().to_string()
}

/// A running `cdp up`.
pub struct CdpUp {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl CdpUp {
    /// Starts `cdp up --data DIR --listen 127.0.0.1:PORT` and waits until it is healthy.
    pub fn start(data: &Path) -> Self {
        Self::start_with(data, &[])
    }

    /// [`CdpUp::start`] with more flags.
    pub fn start_with(data: &Path, flags: &[&str]) -> Self {
        let port = free_port();
        let mut command = Command::new(cdp_bin());
        command.args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data"]).arg(data).args(flags);
        let mut proc = Proc::spawn("cdp-up", command);
        let url = format!("http://127.0.0.1:{port}");
        crate::http::wait_healthy(&format!("{url}/health"), Duration::from_secs(30), || proc.alive())
            .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_tail()));
        Self { proc, url }
    }
}

/// A running `wrangler dev` serving the real worker.
pub struct Wrangler {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Wrangler {
    /// Starts `wrangler dev` on 127.0.0.1 with `vars` and waits (up to 10 minutes: it may build the worker)
    /// until `/health` answers.
    pub fn start(vars: &[(&str, &str)]) -> Self {
        let root = repo_root();
        let wrangler = root.join("node_modules/.bin/wrangler");
        assert!(wrangler.exists(), "{} is missing: run `npm ci` first (the test command does)", wrangler.display());
        let port = free_port();
        let inspector = free_port();
        let mut command = Command::new(wrangler);
        command
            .current_dir(&root)
            .args(["dev", "--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--inspector-port", &inspector.to_string(), "--show-interactive-dev-session=false"])
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CI", "true")
            .env("NO_COLOR", "1");
        if std::env::var_os("WASM_BINDGEN_BIN").is_none() {
            command.env("WASM_BINDGEN_BIN", "wasm-bindgen");
        }
        for (name, value) in vars {
            command.args(["--var", &format!("{name}:{value}")]);
        }
        let mut proc = Proc::spawn("wrangler-dev", command);
        let url = format!("http://127.0.0.1:{port}");
        crate::http::wait_healthy(&format!("{url}/health"), Duration::from_secs(600), || proc.alive())
            .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_tail()));
        Self { proc, url }
    }
}
