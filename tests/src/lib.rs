//! Harness for the cross-component end-to-end tests: a real S3-compatible server on loopback, the real worker
//! under `wrangler dev`, the real `cdp up`, and the scenarios all collectors must pass alike.
//!
//! Every server listens on 127.0.0.1 only; every wait is bounded.

pub mod http;
pub mod lambda_api;
pub mod local_kms;
pub mod local_s3;
pub mod partner;
pub mod postgres;
pub mod procs;
pub mod scenarios;

use std::path::PathBuf;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// Now, by the operating system's clock: the clock the binaries under test read. Fixtures that a binary
/// compares with its own clock are dated relative to this, so no test depends on today's date (the test
/// command also runs with the clock moved forward, see `scripts/test`).
pub fn wall_clock() -> shared::time::UtcTime {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .expect("the clock is after 1970");
    shared::time::UtcTime::from_unix_millis(ms).expect("the clock is within years 1970..9999")
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A fixture from `tests/fixtures/`.
pub fn fixture(name: &str) -> String {
    let path = repo_root().join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
