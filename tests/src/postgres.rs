//! A real PostgreSQL server (Debian's `postgresql` package, which the test command installs) on 127.0.0.1 and
//! a free port, in a temporary folder, stopped with its process group when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::free_port;
use crate::procs::Proc;

/// A running PostgreSQL server.
pub struct Postgres {
    /// `postgres://cdp:<PASSWORD>@127.0.0.1:PORT/postgres` (connections over TCP authenticate with
    /// SCRAM-SHA-256).
    pub url: String,
    bin: PathBuf,
    port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("postgres").exists()).collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().expect("PostgreSQL's server is missing: apt-get install postgresql (the test command does)")
}

/// `program` from `bin`, run as the `postgres` user when we are root (the server refuses to run as root), with
/// the real clock (libfaketime moves the tests' clock, not the database's).
fn command(bin: &Path, program: &str) -> Command {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut command = if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    };
    command.env_remove("LD_PRELOAD").env_remove("FAKETIME");
    command
}

/// The password of the server's user `cdp`.
pub const PASSWORD: &str = "not-a-real-password";

impl Postgres {
    /// Starts a fresh server (initdb, then postgres) and waits until it answers (at most 60 s).
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let pwfile = dir.path().join("password");
        std::fs::write(&pwfile, PASSWORD).expect("write the password file");
        if Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0") {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
            assert!(status.is_ok_and(|s| s.success()), "chown the server's folder to postgres");
        }
        let output = command(&bin, "initdb")
            .args(["-U", "cdp", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("-D")
            .arg(&data)
            .output()
            .expect("running initdb");
        assert!(output.status.success(), "initdb: {}", String::from_utf8_lossy(&output.stderr));
        let port = free_port();
        let mut server = command(&bin, "postgres");
        server.arg("-D").arg(&data).args(["-p", &port.to_string(), "-k"]).arg(dir.path()).args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ]);
        let mut proc = Proc::spawn("postgres", server);
        let start = Instant::now();
        while psql(&bin, port, "select 1").is_err() {
            if let Err(problem) = proc.alive() {
                panic!("postgres stopped: {problem}");
            }
            assert!(start.elapsed() < Duration::from_secs(60), "postgres did not answer in 60 s:\n{}", proc.log_tail());
            std::thread::sleep(Duration::from_millis(200));
        }
        Self { url: format!("postgres://cdp:{PASSWORD}@127.0.0.1:{port}/postgres"), bin, port, _proc: proc, _dir: dir }
    }

    /// Runs `sql` through psql; panics with the server's message if it fails. Returns psql's unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        psql(&self.bin, self.port, sql).unwrap_or_else(|problem| panic!("{sql}: {problem}"))
    }
}

fn psql(bin: &Path, port: u16, sql: &str) -> Result<String, String> {
    let output = command(bin, "psql")
        .env("PGPASSWORD", PASSWORD)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "cdp", "-d", "postgres"])
        .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .output()
        .map_err(|e| e.to_string())?;
    match output.status.success() {
        true => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}
