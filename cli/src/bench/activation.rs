//! `cdp bench deliveries`: signed webhook deliveries per second through the real dispatcher (outbox, lanes,
//! batching, Standard Webhooks signing, stored lane state and delivery log) to a local receiver process, beside
//! the same number of requests of the same size posted bare (no lanes, no signing, nothing stored) through the
//! same HTTP client: the transport's ceiling. Also the share of the dispatcher's CPU that signing takes.
//!
//! `cdp bench activation`: event posted → webhook received, through a real `cdp up` (collector, ingest,
//! trigger, outbox, dispatcher) at a steady rate, to a receiver in this process; p50/p99 latency.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use functions::activation::http::Sender;
use functions::activation::outbox::enqueue;
use functions::activation::{AttemptRecord, Dispatcher, Settings};
use functions::storage::{FsStore, ObjectStore, PutOptions};
use serde_json::json;
use shared::activation::lane::Message;
use shared::activation::payload::{AudienceRef, body};
use shared::activation::{DestinationDefinition, Detail, Item, ProfileBlock, Reach};
use shared::ids::Entropy;
use shared::storage::keys;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// CPU seconds this process has used (user + system, Linux).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn item(n: usize, profiles: usize) -> Item {
    Item {
        id: format!("itm_bench_{n:09}"),
        occurred_at: "2026-11-28T12:00:00.000Z".into(),
        profile: ProfileBlock {
            id: format!("prof_{:012}", n % profiles),
            identifiers: vec![shared::activation::payload::IdentifierOut {
                kind: "user_id".into(),
                value: Some(format!("user-{}", n % profiles)),
                sha256: None,
            }],
            traits: serde_json::from_value(json!({"plan": "pro", "country": "DE"})).unwrap_or_default(),
            tags: serde_json::from_value(json!({"tier": "high", "ltv": 412.5})).unwrap_or_default(),
        },
        detail: Detail::AudienceEntered {
            audience: AudienceRef { id: "big_spenders".into(), name: "Big spenders".into() },
        },
    }
}

pub(crate) fn deliveries(items: usize, batch: usize, profiles: usize) -> anyhow::Result<()> {
    if items == 0 || batch == 0 || profiles == 0 {
        bail!("--items, --batch and --profiles must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let store = FsStore::open(dir.path())?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let _receiver = super::kit::spawn(&["bench", "sink", "--listen", &addr.to_string()])?;
    super::kit::wait_healthy(&format!("http://{addr}"))?;
    let url = format!("http://{addr}/v1/batch");
    let destination: DestinationDefinition = serde_json::from_value(json!({
        "id": "bench", "url": url, "secret": SECRET, "send": {"audiences": ["big_spenders"]},
        "batching": {"maxEvents": batch, "maxWaitMs": 20}, "rateLimitPerSecond": 10000
    }))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!(
        "cdp bench deliveries: {items} items ({profiles} profiles) in requests of up to {batch}, one destination, 8 lanes, receiver process on loopback"
    );

    // The outbox, as producers write it.
    let now = crate::now();
    runtime.block_on(async {
        let mut entropy = Entropy::from_seed(crate::seed());
        let mut messages = Vec::with_capacity(10_000);
        for n in 0..items {
            let subject = Some(format!("user_id:user-{}", n % profiles));
            messages.push(Message {
                destination: "bench".into(),
                item: item(n, profiles),
                enqueued_at: now.unix_millis(),
                subject,
            });
            if messages.len() == 10_000 || n + 1 == items {
                enqueue(&store, &messages, now, &mut entropy).await?;
                messages.clear();
            }
        }
        anyhow::Ok(())
    })?;

    // The dispatcher, until every item is delivered.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<AttemptRecord>();
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let (requests, delivered) = runtime.block_on(async {
        let settings = Settings { reach: Reach::PublicAndLoopback, ingest: None };
        let mut dispatcher =
            Dispatcher::start(store.clone(), std::slice::from_ref(&destination), settings, Some(tx), None).await?;
        dispatcher.intake().await?;
        let (mut requests, mut delivered) = (0usize, 0usize);
        let deadline = Instant::now() + Duration::from_secs(600);
        while delivered < items {
            let Ok(Some(record)) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await else {
                bail!("no delivery for 30 s ({delivered} of {items} delivered)");
            };
            if record.result != "delivered" {
                bail!("an attempt ended {}: {:?}", record.result, record.outcome);
            }
            requests += 1;
            delivered += record.item_ids.len();
            if Instant::now() > deadline {
                bail!("not done within 10 minutes");
            }
        }
        dispatcher.stop().await?;
        anyhow::Ok((requests, delivered))
    })?;
    let elapsed = start.elapsed();
    let cpu = cpu_seconds() - cpu_before;

    // Signing alone: the same number of requests of the same size, signed.
    let sample = body("bench", (0..batch.min(items)).map(|n| item(n, profiles)).collect(), now);
    let secret = shared::activation::Secret::parse(SECRET).map_err(anyhow::Error::msg)?;
    let sign_start = Instant::now();
    for n in 0..requests {
        std::hint::black_box(secret.sign(&format!("msg_{n}"), 1_795_000_000, std::hint::black_box(&sample)));
    }
    let signing = sign_start.elapsed().as_secs_f64();

    // The peer: bare posts of a body of that size, 8 at a time, through the same client.
    let sender = Sender::new(Reach::PublicAndLoopback);
    let bare_start = Instant::now();
    runtime.block_on(async {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let body = bytes::Bytes::from(sample.clone());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (sender, next, body, url) = (sender.clone(), next.clone(), body.clone(), url.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                        let attempt = sender.post(&url, &[], body.clone(), Duration::from_secs(10), false).await;
                        if !matches!(attempt.outcome, shared::activation::Outcome::Status { status: 200, .. }) {
                            return Err(anyhow::anyhow!("bare post: {:?}", attempt.outcome));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await.context("bare post task")??;
        }
        anyhow::Ok(())
    })?;
    let bare = bare_start.elapsed();

    let rate = |n: usize, t: Duration| n as f64 / t.as_secs_f64();
    println!("| path | items | requests | time (s) | items/s | requests/s | CPU (s) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| dispatcher: outbox → lanes → signed POST → lane stored, log | {delivered} | {requests} | {:.2} | {:.0} | {:.0} | {cpu:.2} |",
        elapsed.as_secs_f64(),
        rate(delivered, elapsed),
        rate(requests, elapsed)
    );
    println!(
        "| bare POST of the same bodies (same client, 8 at a time) | {delivered} | {requests} | {:.2} | {:.0} | {:.0} | |",
        bare.as_secs_f64(),
        rate(delivered, bare),
        rate(requests, bare)
    );
    let share = signing / cpu.max(1e-9);
    println!(
        "signing {requests} requests of {} bytes: {:.3} s, {:.1} % of the dispatcher's CPU ({:.2} µs per item)",
        sample.len(),
        signing,
        share * 100.0,
        signing * 1e6 / delivered as f64
    );
    println!(
        "signed deliveries: {:.0}/s; target ≥ 5000/s: {}; signing ≤ 5 % of CPU: {}",
        rate(delivered, elapsed),
        if rate(delivered, elapsed) >= 5000.0 { "met" } else { "NOT met" },
        if share <= 0.05 { "met" } else { "NOT met" }
    );
    Ok(())
}

/// Latencies seen by the receiver, ms.
type Latencies = Arc<Mutex<Vec<i64>>>;

pub(crate) fn activation(rate: usize, seconds: u64, users: usize) -> anyhow::Result<()> {
    if rate == 0 || seconds == 0 || users == 0 {
        bail!("--rate, --seconds and --users must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let store = FsStore::open(dir.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // The receiver: each item's latency from the sentAtMs the event carries.
    let latencies: Latencies = Arc::default();
    let receiver_addr = {
        let latencies = latencies.clone();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        runtime.spawn(async move {
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move |body: bytes::Bytes| {
                    let latencies = latencies.clone();
                    async move {
                        let received = crate::now().unix_millis();
                        if let Ok(envelope) = serde_json::from_slice::<shared::activation::Envelope>(&body)
                            && let Ok(mut all) = latencies.lock()
                        {
                            for item in envelope.data.items {
                                if let Detail::EventTriggered { event } = item.detail
                                    && let Some(sent) = event.properties.get("sentAtMs").and_then(|v| v.as_i64())
                                {
                                    all.push(received - sent);
                                }
                            }
                        }
                        "ok"
                    }
                }),
            );
            let _ = axum::serve(listener, app.layer(axum::extract::DefaultBodyLimit::max(8 << 20))).await;
        });
        addr
    };
    let (_, key) = runtime.block_on(crate::source::create(&store, "bench", "Bench", Vec::new()))?;
    let destinations = json!([{
        "id": "bench", "url": format!("http://{receiver_addr}/hook"), "secret": SECRET,
        "send": {"events": [{"events": ["Order Completed"]}]},
        "batching": {"maxEvents": 500, "maxWaitMs": 20}, "rateLimitPerSecond": 10000
    }]);
    runtime.block_on(store.put(
        keys::CONFIG_DESTINATIONS,
        destinations.to_string().into_bytes(),
        PutOptions::json(),
    ))?;
    let up_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let data = dir.path().to_string_lossy().to_string();
    let _up = super::kit::spawn(&["up", "--data", &data, "--listen", &up_addr.to_string(), "--webhooks-loopback"])?;
    let up_url = format!("http://{up_addr}");
    super::kit::wait_healthy(&up_url)?;
    std::thread::sleep(Duration::from_millis(1500)); // the dispatcher reads its configuration
    println!(
        "cdp bench activation: {rate} events/s for {seconds} s through cdp up (collector → ingest → trigger → outbox → dispatcher → webhook), {users} users, batches of 50 every 10 ms"
    );
    // The load: batches every 10 ms, each event stamped with its send time.
    let per_tick = (rate / 100).max(1);
    let total_ticks = seconds as usize * 100;
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build();
    let agent: ureq::Agent = agent.into();
    let mut sent = 0usize;
    let mut seq = 0usize;
    let start = Instant::now();
    let mut behind = Duration::ZERO;
    for tick in 0..total_ticks {
        let due = start + Duration::from_millis(10 * tick as u64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            behind = behind.max(now - due);
        }
        let sent_at = crate::now().unix_millis();
        let events: Vec<serde_json::Value> = (0..per_tick)
            .map(|_| {
                seq += 1;
                json!({"type": "track", "event": "Order Completed", "userId": format!("user-{}", seq % users),
                       "messageId": format!("bench-{seq}"), "properties": {"revenue": 10.0, "sentAtMs": sent_at}})
            })
            .collect();
        let body = json!({"batch": events, "writeKey": key}).to_string();
        let mut response = agent
            .post(&format!("{up_url}/v1/batch"))
            .header("content-type", "application/json")
            .send(body.as_bytes())?;
        let status = response.status().as_u16();
        let _ = response.body_mut().read_to_string();
        if status != 200 {
            bail!("the collector answered {status}");
        }
        sent += per_tick;
    }
    let load = start.elapsed();
    // Stragglers: up to 30 s.
    let wait = Instant::now();
    while latencies.lock().map(|l| l.len()).unwrap_or(0) < sent && wait.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut all = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    all.sort_unstable();
    if all.is_empty() {
        bail!("no webhook arrived");
    }
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    let mut by_second: BTreeMap<i64, usize> = BTreeMap::new();
    for l in &all {
        *by_second.entry(l / 1000).or_default() += 1;
    }
    println!(
        "| sent | received by the partner | achieved rate (events/s) | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {sent} | {} | {:.0} | {} | {} | {} | {} |",
        all.len(),
        sent as f64 / load.as_secs_f64(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        all[all.len() - 1]
    );
    println!("load generator fell behind its schedule by at most {} ms", behind.as_millis());
    println!(
        "event → webhook p99 {} ms at {:.0} events/s; target ≤ 1000 ms at 5000 events/s: {}",
        pct(0.99),
        sent as f64 / load.as_secs_f64(),
        if all.len() == sent && pct(0.99) <= 1000 && sent as f64 / load.as_secs_f64() >= 4900.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
