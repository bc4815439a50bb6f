//! `cdp bench crash`: `cdp up` killed with SIGKILL again and again while clients post steadily, then checked:
//! every event a client got a 200 for must be on a profile exactly once, and no event twice.
//!
//! Each event has a user id of its own, so its profile's event count says how often it was applied. Clients
//! behave as the browser library does: a request that fails (the process died under it) is sent again, same
//! messageIds, to the restarted process. After the last kill the runner is started once more, posting stops,
//! and the state is read until every acknowledged event is there (or a minute passes).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use functions::storage::FsStore;

/// What one run found.
#[derive(Debug, Default)]
struct Found {
    acknowledged: usize,
    exactly_once: usize,
    missing: Vec<usize>,
    doubled: Vec<usize>,
    unacknowledged_applied: usize,
}

fn body(key: &str, first: usize, batch: usize) -> String {
    let events: Vec<serde_json::Value> = (first..first + batch)
        .map(|n| {
            serde_json::json!({"type": "track", "event": "Crash Test", "userId": format!("crash-{n}"),
                               "messageId": format!("crash-{n}"), "properties": {"n": n}})
        })
        .collect();
    serde_json::json!({"batch": events, "writeKey": key}).to_string()
}

/// Starts `cdp up` on `data` at a free port; its URL.
fn start(data: &str) -> anyhow::Result<(super::kit::ChildGuard, String)> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let child = super::kit::spawn(&["up", "--data", data, "--listen", &addr.to_string()])?;
    let url = format!("http://{addr}");
    super::kit::wait_healthy(&url)?;
    Ok((child, url))
}

pub(crate) fn run(kills: usize, interval: f64, batch: usize, connections: usize) -> anyhow::Result<()> {
    if batch == 0 || connections == 0 || !interval.is_finite() || interval <= 0.0 {
        bail!("need --batch ≥ 1, --connections ≥ 1 and --interval > 0");
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_string_lossy().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let store = FsStore::open(dir.path())?;
    let (_, key) = runtime.block_on(crate::source::create(&store, "crash", "Crash", Vec::new()))?;
    println!(
        "cdp bench crash: {kills} kills (SIGKILL) of cdp up about every {interval} s, {connections} clients posting \
         {batch} events a request, each event its own user"
    );

    let (mut child, url) = start(&data)?;
    let url = Arc::new(Mutex::new(url));
    let next = Arc::new(AtomicUsize::new(0));
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            let (url, next, acknowledged, stop, key) =
                (url.clone(), next.clone(), acknowledged.clone(), stop.clone(), key.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .into();
                while !stop.load(Ordering::Relaxed) {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    let body = body(&key, first, batch);
                    // Sent again until answered 200 (or the run ends), like the browser library's retries.
                    while !stop.load(Ordering::Relaxed) {
                        let target = url.lock().map(|u| u.clone()).unwrap_or_default();
                        let answered = agent
                            .post(&format!("{target}/v1/batch"))
                            .header("content-type", "application/json")
                            .send(body.as_bytes())
                            .is_ok_and(|r| r.status().as_u16() == 200);
                        if answered {
                            if let Ok(mut set) = acknowledged.lock() {
                                set.extend(first..first + batch);
                            }
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();

    let mut rng = super::kit::Xorshift(0x9E37_79B9_7F4A_7C15 ^ crate::now().unix_millis() as u64);
    for _ in 0..kills {
        let wait = interval * (0.5 + rng.below(1000) as f64 / 1000.0);
        std::thread::sleep(Duration::from_secs_f64(wait));
        drop(child); // SIGKILL, then reaped
        let (restarted, new_url) = start(&data)?;
        child = restarted;
        if let Ok(mut current) = url.lock() {
            *current = new_url;
        }
    }
    std::thread::sleep(Duration::from_secs_f64(interval));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
    }
    let acknowledged = acknowledged.lock().map(|set| set.clone()).map_err(|_| anyhow::anyhow!("poisoned"))?;
    let sent = next.load(Ordering::Relaxed);

    // Every acknowledged event on a profile, exactly once; what was sent but never acknowledged at most once.
    let started = Instant::now();
    let found = loop {
        let found = runtime.block_on(check(&store, &acknowledged, sent))?;
        if found.missing.is_empty() || started.elapsed() > Duration::from_secs(60) {
            break found;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(child);
    println!(
        "| kills | events acknowledged | on a profile exactly once | missing | applied twice | sent, not acknowledged, applied once |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {kills} | {} | {} | {} | {} | {} |",
        found.acknowledged,
        found.exactly_once,
        found.missing.len(),
        found.doubled.len(),
        found.unacknowledged_applied
    );
    if !found.missing.is_empty() || !found.doubled.is_empty() {
        bail!(
            "events lost or doubled: missing {:?}…, doubled {:?}…",
            &found.missing[..found.missing.len().min(10)],
            &found.doubled[..found.doubled.len().min(10)]
        );
    }
    if found.acknowledged == 0 {
        bail!("no event was acknowledged");
    }
    println!("every acknowledged event is on its profile exactly once");
    Ok(())
}

async fn check(store: &FsStore, acknowledged: &BTreeSet<usize>, sent: usize) -> anyhow::Result<Found> {
    let mut found = Found { acknowledged: acknowledged.len(), ..Found::default() };
    let state = functions::state::scan(store).await.context("reading the state")?;
    for n in 0..sent {
        let count = state
            .resolve(&format!("user_id:crash-{n}"))
            .and_then(|id| state.profiles.get(id))
            .and_then(|p| p.profile.events.get("Crash Test").map(|e| e.count))
            .unwrap_or(0);
        match (acknowledged.contains(&n), count) {
            (_, c) if c > 1 => found.doubled.push(n),
            (true, 1) => found.exactly_once += 1,
            (true, _) => found.missing.push(n),
            (false, 1) => found.unacknowledged_applied += 1,
            (false, _) => {}
        }
    }
    Ok(found)
}
