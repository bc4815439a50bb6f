//! What must hold when things go wrong around the real `cdp up`: a crash loses no acknowledged event, a second
//! runner on the same folder is refused.

use std::process::Command;
use std::time::{Duration, Instant};

use cdp_e2e::procs::{CdpUp, cdp_bin};
use cdp_e2e::wall_clock;
use functions::storage::{FsStore, ObjectStore, PutOptions};
use shared::collect::{CollectRequest, Collected, Endpoint, collect};
use shared::ids::Entropy;
use shared::source::{Sources, new_source};

/// Writes a raw object into `data` as the collector does just before a crash takes the process (and with it
/// the queue that would have told ingest about it).
fn raw_object_left_by_a_crash(data: &std::path::Path, user: &str) {
    let (source, key) = new_source("web", "Web", &mut Entropy::from_seed([3; 32]));
    let mut sources = Sources::default();
    sources.add(source).expect("source");
    let body = serde_json::json!({"writeKey": key, "batch": [
        {"type": "track", "event": "Order Completed", "userId": user, "messageId": format!("{user}-1")}
    ]})
    .to_string();
    let now = wall_clock().add_millis(-5_000).expect("time");
    let Collected::Kept(batch) = collect(
        &CollectRequest::new(Endpoint::Batch, body.as_bytes()),
        &sources,
        now,
        &mut Entropy::from_seed([4; 32]),
    ) else {
        panic!("rejected")
    };
    let (object_key, bytes) = batch.accepted_object().expect("accepted");
    let store = FsStore::open(data).expect("store");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(store.put(&object_key, bytes, PutOptions::ndjson_gz())).expect("put");
}

fn orders(data: &std::path::Path, user: &str) -> Option<u64> {
    let out = Command::new(cdp_bin())
        .args(["profile", &format!("user_id:{user}"), "--json", "--data"])
        .arg(data)
        .output()
        .expect("cdp profile");
    let profile: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    profile["events"]["Order Completed"]["count"].as_u64()
}

#[test]
fn events_stored_before_a_crash_are_applied_when_cdp_up_starts_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The first run: started, then killed.
    drop(CdpUp::start(dir.path()));
    raw_object_left_by_a_crash(dir.path(), "u-before-crash");
    let _up = CdpUp::start(dir.path());
    let start = Instant::now();
    while orders(dir.path(), "u-before-crash").is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "the stored event never reached its profile");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(orders(dir.path(), "u-before-crash"), Some(1), "applied exactly once");
}

#[test]
fn repeated_kills_lose_no_acknowledged_event_and_apply_none_twice() {
    let out = Command::new(cdp_bin())
        .args(["bench", "crash", "--kills", "3", "--interval", "1.5", "--batch", "10"])
        .output()
        .expect("cdp bench crash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every acknowledged event is on its profile exactly once"), "{stdout}");
}

#[test]
fn a_second_cdp_up_on_the_same_folder_is_refused_and_names_the_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = CdpUp::start(dir.path());
    let out = Command::new(cdp_bin())
        .args(["up", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .expect("cdp up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second runner must not start");
    assert!(stderr.contains("is in use by another `cdp up`"), "{stderr}");
    assert!(stderr.contains(&format!("process {}", first.proc.id())), "{stderr}");
}

#[test]
fn output_into_a_closed_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    cdp_e2e::procs::cdp_source_add(dir.path(), "site");
    // `cdp source list | head -0`: the reader is gone before the command writes.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(cdp_bin())
        .args(["source", "list", "--data"])
        .arg(dir.path())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("cdp source list");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "the status of a program stopped by SIGPIPE; {stderr}");
}

#[test]
fn idle_connections_cannot_exhaust_the_runner() {
    // More idle sockets than the runner (limited to 1024 files) may keep; this process raises its own limit.
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n \"$(ulimit -Hn)\" && exec \"$0\" bench idle --sockets 1500 --requests 50 --files 1024")
        .arg(cdp_bin())
        .output()
        .expect("cdp bench idle");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("| 50 of 50 |"), "every request served: {stdout}");
}
