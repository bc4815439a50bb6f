//! `cdp up`: the collector on a local folder, through the same core and handler as the cloud.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use functions::collect::{SourcesCache, handle};
use functions::ingest::ingest;
use functions::snapshot::RunConfig;
use functions::storage::FsStore;
use shared::collect::{Answer, CollectRequest, MAX_REQUEST_BYTES, Route, preflight, route};
use shared::storage::keys;

use crate::DataArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, env = "CDP_LISTEN", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Header carrying the client's IP when behind a trusted proxy (e.g. X-Forwarded-For); by default the
    /// socket's peer address is used, since any header could be forged by the client.
    #[arg(long)]
    trusted_ip_header: Option<String>,
    /// Seconds between full recomputes of tags and audiences (windowed tags change as time passes); they are
    /// also recomputed a few seconds after new events and at once when their definitions change.
    #[arg(long, default_value_t = 60)]
    tag_interval: u64,
    /// A folder of your own pages (HTML, JS, CSS, images) to serve beside the collector, e.g. pages carrying
    /// the snippet with an empty host: `GET /shop/index.html` serves `DIR/shop/index.html`.
    #[arg(long)]
    site: Option<std::path::PathBuf>,
    /// Local development: let webhooks reach loopback addresses (127.0.0.0/8, ::1), e.g. a partner receiver on
    /// this machine. Private, link-local and metadata addresses stay refused. Never use it in production.
    #[arg(long, env = "CDP_WEBHOOKS_LOOPBACK")]
    webhooks_loopback: bool,
    /// The master key file that wraps the data key sealing personal traits (email, phone, name, address, …)
    /// in the profile state; made (0600) on first start. Default: `.cdp-master.key` in the data folder. Keep
    /// it with the folder (a backup without it cannot read personal traits), or apart from it to hold the two
    /// separately.
    #[arg(long, env = "CDP_MASTER_KEY_FILE")]
    master_key: Option<std::path::PathBuf>,
    /// Serve a demo partner at /demo/partner that verifies each webhook's signature and shows what arrived, and
    /// add it to config/destinations.json (every audience, and orders). Implies --webhooks-loopback.
    #[arg(long)]
    demo_partner: bool,
}

/// What every request handler shares.
pub(crate) struct AppState {
    store: FsStore,
    sources: SourcesCache,
    trusted_ip_header: Option<HeaderName>,
    site: Option<std::path::PathBuf>,
    /// New raw objects for the ingest task: the local stand-in for S3 → SQS → Lambda.
    ingest: tokio::sync::mpsc::UnboundedSender<String>,
    /// The demo partner, with `--demo-partner`.
    demo: Option<crate::deliveries::DemoPartner>,
    /// Destinations may point at loopback addresses (`--webhooks-loopback`).
    loopback: bool,
}

/// The whole local app: the API's routes (the same router as the API Lambda), and every other path through
/// the collector core's router, as in the edge worker.
pub(crate) fn app(state: Arc<AppState>) -> Router {
    let api = functions::api::Api::local(state.store.clone(), state.loopback, state.ingest.clone());
    functions::api::routes(api).fallback_service(Router::new().fallback(serve).with_state(state))
}

pub(crate) fn run(args: UpArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let store = FsStore::open(&args.data.data).context("opening the data folder")?;
        let root = std::fs::canonicalize(store.root()).unwrap_or_else(|_| store.root().to_path_buf());
        let _lock = crate::lock::lock(&root)?;
        println!("cdp: data in {}", root.display());
        let master = args.master_key.clone().unwrap_or_else(|| root.join(".cdp-master.key"));
        functions::vault::ensure(&store, &functions::vault::KeySource::File(master.clone()))
            .await
            .context("the key that seals personal traits")?;
        println!("cdp: personal traits sealed with the master key {}", master.display());

        let sources = functions::collect::load_sources(&store).await?;
        if sources.is_empty() {
            let (source, key) = crate::source::create(&store, "demo", "Demo", Vec::new()).await?;
            println!("cdp: no sources yet; created source {:?}. Its write key (shown once):", source.id);
            println!("{key}");
        } else {
            let ids: Vec<&str> = sources.list().iter().map(|s| s.id.as_str()).collect();
            println!("cdp: sources: {} (add one with `cdp source add NAME`)", ids.join(", "));
        }

        if functions::api::load_keys(&store).await?.list().is_empty() {
            let key = crate::access::create(&store, "cdp up (first start)", &["admin"]).await?;
            println!("cdp: no API keys yet; created an admin key (shown once, stored hashed):");
            println!("{key}");
        }

        let trusted_ip_header = args
            .trusted_ip_header
            .as_deref()
            .map(|h| HeaderName::try_from(h.to_ascii_lowercase()))
            .transpose()
            .context("--trusted-ip-header is not a valid header name")?;
        let (ingest, queue) = tokio::sync::mpsc::unbounded_channel();
        let ingested = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(ingest_loop(store.clone(), queue, ingested.clone()));
        tokio::spawn(tagging_loop(store.clone(), ingested, Duration::from_secs(args.tag_interval.max(1))));
        tokio::spawn(upkeep_loop(store.clone()));
        let site =
            args.site.map(|dir| std::fs::canonicalize(&dir).with_context(|| format!("--site {}", dir.display())));
        let site = site.transpose()?;
        let sources = SourcesCache::new(Duration::from_secs(2));
        let demo = args.demo_partner.then(crate::deliveries::DemoPartner::default);
        let outcome_ingest = ingest.clone();
        let loopback = args.webhooks_loopback || args.demo_partner;
        let state =
            Arc::new(AppState { store: store.clone(), sources, trusted_ip_header, site, ingest, demo, loopback });

        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        if args.demo_partner {
            crate::deliveries::ensure_demo_partner(&store, &format!("http://{addr}/demo/partner")).await?;
        }
        let reach = if args.webhooks_loopback || args.demo_partner {
            shared::activation::Reach::PublicAndLoopback
        } else {
            shared::activation::Reach::Public
        };
        tokio::spawn(crate::deliveries::activation_loop(store.clone(), reach, outcome_ingest));
        println!("cdp: collector listening on http://{addr} (POST /v1/batch, /v1/track, ...; GET /cdp.js, /health)");
        println!("cdp: demo page with the snippet: http://{addr}/demo?writeKey=<a source's write key>");
        if let Some(site) = &state.site {
            println!("cdp: serving your pages from {} (e.g. http://{addr}/index.html)", site.display());
        }
        println!(
            "cdp: API on http://{addr}/v1/ (OpenAPI: http://{addr}/openapi.json; `Authorization: Bearer <API key>`)"
        );
        println!("cdp: raw events under {}/raw/, failed events under {}/failed/", root.display(), root.display());
        println!("cdp: profiles form as events arrive: `cdp profile user_id:<id> --data {}`", args.data.data.display());
        if args.demo_partner {
            println!("cdp: demo partner (verifies webhook signatures): http://{addr}/demo/partner");
        }
        println!("cdp: press Ctrl-C to stop");

        let limits = crate::serve::Limits::for_this_process();
        tracing::debug!(?limits, "serving limits");
        crate::serve::serve(listener, app(state), limits, async {
            let _ = tokio::signal::ctrl_c().await;
            println!("cdp: stopping");
        })
        .await?;
        println!("cdp: stopped");
        Ok(())
    })
}

async fn serve(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let origin = header_str(headers, header::ORIGIN);
    if parts.uri.path() == "/demo" && parts.method == axum::http::Method::GET {
        return demo(parts.uri.query().unwrap_or(""));
    }
    if parts.uri.path() == "/demo/partner"
        && let Some(partner) = &state.demo
    {
        return demo_partner(&state, partner, &parts, body).await;
    }
    let answer = match route(parts.method.as_str(), parts.uri.path()) {
        Route::Health => Answer::health(),
        Route::Library => shared::snippet::library(header_str(headers, header::IF_NONE_MATCH)),
        Route::NotFound if parts.method == axum::http::Method::GET && state.site.is_some() => {
            return site_file(state.site.as_deref().unwrap_or(std::path::Path::new(".")), parts.uri.path()).await;
        }
        Route::NotFound => Answer::not_found(),
        Route::MethodNotAllowed => Answer::method_not_allowed(),
        Route::Preflight => match state.sources.get(&state.store).await {
            Ok(sources) => preflight(origin, &sources),
            Err(error) => {
                tracing::error!(%error, "sources unavailable");
                Answer::config_unavailable()
            }
        },
        Route::Collect(endpoint) => {
            // Read a little past the limit so the core can name the size in its 400.
            let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES + 1024).await {
                Ok(body) => body,
                // The body's deadline (serve.rs) passed: the client is too slow, not the body too large.
                Err(error) if error.to_string().contains("did not arrive") => {
                    return to_response(Answer::error(408, "request_timeout", &error.to_string()));
                }
                Err(_) => Bytes::from(vec![b' '; MAX_REQUEST_BYTES + 1]),
            };
            // A suppression list that cannot be read keeps nothing: no suppressed person's event slips in.
            let config = tokio::try_join!(state.sources.get(&state.store), state.sources.suppression(&state.store));
            match config {
                Ok((sources, suppression)) => {
                    let request = CollectRequest {
                        endpoint,
                        body: &body,
                        authorization: header_str(headers, header::AUTHORIZATION),
                        origin,
                        user_agent: header_str(headers, header::USER_AGENT),
                        client_ip: client_ip(&state, headers, peer),
                        geo: None,
                        content_encoding: header_str(headers, header::CONTENT_ENCODING),
                    };
                    let handled = handle(
                        &state.store,
                        &sources,
                        suppression.as_ref().as_ref(),
                        &request,
                        crate::now(),
                        crate::seed(),
                    )
                    .await;
                    if let Some(key) = handled.raw_key {
                        // The receiver lives as long as the server; a closed channel only happens at shutdown.
                        let _ = state.ingest.send(key);
                    }
                    handled.answer
                }
                Err(error) => {
                    tracing::error!(%error, "sources or the suppression list unavailable");
                    Answer::config_unavailable()
                }
            }
        }
    };
    to_response(answer)
}

/// A file of the `--site` folder, or 404. Paths with `..`, hidden names or escaping the folder are refused.
async fn site_file(root: &std::path::Path, path: &str) -> Response {
    let relative = path.trim_start_matches('/');
    let relative = if relative.is_empty() || relative.ends_with('/') {
        format!("{relative}index.html")
    } else {
        relative.to_string()
    };
    let safe = relative.split('/').all(|part| !part.is_empty() && !part.starts_with('.') && !part.contains('\\'));
    let file = root.join(&relative);
    let inside = tokio::fs::canonicalize(&file).await.is_ok_and(|real| real.starts_with(root));
    let body = match (safe && inside, tokio::fs::read(&file).await) {
        (true, Ok(body)) => body,
        _ => return to_response(Answer::not_found()),
    };
    let kind = match relative.rsplit('.').next().unwrap_or_default() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "application/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    };
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The demo partner: `POST` receives a webhook (200 when its signature verifies, 401 otherwise); `GET` shows
/// what arrived (JSON with `?format=json`).
async fn demo_partner(
    state: &AppState,
    partner: &crate::deliveries::DemoPartner,
    parts: &axum::http::request::Parts,
    body: Body,
) -> Response {
    if parts.method == axum::http::Method::POST {
        let Ok(bytes) = axum::body::to_bytes(body, 6 << 20).await else {
            return to_response(Answer::error(413, "too_large", "webhook body over 6 MiB"));
        };
        let status = partner.receive(&state.store, &parts.headers, &bytes).await;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        return response;
    }
    let received = partner.list();
    if parts.uri.query().is_some_and(|q| q.split('&').any(|p| p == "format=json")) {
        let mut response = Response::new(Body::from(serde_json::to_vec(&received).unwrap_or_default()));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
    }
    let mut rows = String::new();
    for entry in &received {
        let items = entry["payload"]["data"]["items"].as_array().cloned().unwrap_or_default();
        for item in items {
            let what = match item["type"].as_str().unwrap_or_default() {
                "audience.entered" | "audience.exited" => {
                    format!(
                        "{} {}",
                        item["type"].as_str().unwrap_or_default(),
                        item["audience"]["id"].as_str().unwrap_or_default()
                    )
                }
                "event.triggered" => format!("event {}", item["event"]["event"].as_str().unwrap_or_default()),
                other => other.to_string(),
            };
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(entry["receivedAt"].as_str().unwrap_or_default()),
                if entry["verified"] == true { "✔ verified" } else { "✘ bad signature" },
                escape(entry["webhookId"].as_str().unwrap_or_default()),
                escape(&what),
                escape(item["profile"]["id"].as_str().unwrap_or_default()),
            ));
        }
    }
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>cdp demo partner</title><style>body{{font:15px system-ui;margin:2rem}}td{{padding:.2rem .6rem}}</style>\
         </head><body><h1>Demo partner</h1><p>Webhooks received by this partner, newest first; each signature is \
         checked with the destination's secret (Standard Webhooks).</p><table><tr><th>received</th><th>signature</th>\
         <th>webhook-id</th><th>what</th><th>profile</th></tr>{rows}</table></body></html>"
    );
    let mut response = Response::new(Body::from(page));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

/// `POST /v1/feedback/DESTINATION`: a partner's results, signed with the destination's secret.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `GET /demo?writeKey=KEY`: a page with the snippet, to watch events and profiles form.
fn demo(query: &str) -> Response {
    let key = query.split('&').find_map(|pair| pair.strip_prefix("writeKey=")).unwrap_or("");
    let valid =
        !key.is_empty() && key.len() <= 100 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let body = if valid {
        DEMO_PAGE.replace("{{SNIPPET}}", &shared::snippet::snippet("", key))
    } else {
        DEMO_PAGE.replace("{{SNIPPET}}", "").replace(
            "<main>",
            "<main><p class=\"warn\">Open this page as <code>/demo?writeKey=KEY</code> with a source's write key \
             (<code>cdp source add NAME</code> prints one).</p>",
        )
    };
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

const DEMO_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cdp demo shop</title>
<script>{{SNIPPET}}</script>
<style>body{font:16px system-ui;margin:2rem;max-width:40rem}button{margin:.25rem}.warn{color:#a00}</style>
</head>
<body>
<main>
<h1>cdp demo shop</h1>
<p>This page carries the snippet: it sent a page view when it loaded. Click to send more events, then look
them up with <code>cdp profile user_id:demo-user</code>.</p>
<button id="view" onclick="cdp.track('Product Viewed', {sku: 'tee-01', price: 18.5, category: 'shirts'})">View a product</button>
<button id="buy" onclick="cdp.track('Order Completed', {revenue: 18.5, currency: 'EUR'})">Buy it</button>
<button id="login" onclick="cdp.identify('demo-user', {email: 'demo@example.com', plan: 'free'})">Log in</button>
<button id="logout" onclick="cdp.reset()">Log out</button>
<p>anonymousId: <code id="aid">(loading)</code></p>
<script>cdp.ready(function () { document.getElementById('aid').textContent = cdp.user().anonymousId(); });</script>
</main>
</body>
</html>
"#;

/// Shard counts of a state `cdp up` creates: a laptop's state is smaller than the cloud's (sized for ten
/// million profiles), and each compaction rewrites (and `fsync`s) every shard it touches. A state keeps the
/// counts it was created with.
const LOCAL_SHARDS: functions::state::ShardCounts =
    functions::state::ShardCounts { ids: 128, profiles: 128, dedup: 32 };

/// Compaction of `cdp up`'s state: decoded deltas stay in memory between batches in this long-lived process,
/// so fold less often (each fold stalls ingest while it rewrites the shards).
const LOCAL_COMPACTION: functions::state::Compaction =
    functions::state::Compaction { max_deltas: 128, max_delta_ratio: 0.25, min_fold_bytes: 4 << 20 };

/// The state settings of `cdp up`: its shard counts and compaction, the rest as in the cloud.
fn local_state() -> functions::state::Settings {
    functions::state::Settings { shards: LOCAL_SHARDS, compaction: LOCAL_COMPACTION, ..Default::default() }
}

/// Reconciliation of `cdp up`: the collector is in this process and writes an object whole before queueing
/// it, so ten seconds cover any write; at start, nothing is left to a notification (the queue died with the
/// previous process).
const LOCAL_RECONCILE: functions::ingest::reconcile::Timing =
    functions::ingest::reconcile::Timing { grace_ms: 10_000, settle_ms: 10_000 };

/// The single writer of the state: ingests new raw objects in batches, in arrival order. A failed batch is
/// kept and retried (ingest is idempotent), so an event stored is an event applied. At start, and every half
/// minute when idle, it reconciles: applies the raw objects stored but never applied (a crash loses the
/// queue, not the objects).
async fn ingest_loop(
    store: FsStore,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<String>,
    ingested: Arc<tokio::sync::Notify>,
) {
    let mut pending: Vec<String> = Vec::new();
    let mut timing = functions::ingest::reconcile::Timing { grace_ms: 0, ..LOCAL_RECONCILE };
    let mut reconciled: Option<tokio::time::Instant> = None;
    loop {
        if reconciled.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
            match reconcile_once(&store, timing).await {
                Ok(report) => {
                    reconciled = Some(tokio::time::Instant::now());
                    timing = LOCAL_RECONCILE;
                    if report.missing > 0 {
                        ingested.notify_one();
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "raw objects not reconciled; retrying in 2 s");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            }
        }
        if pending.is_empty() {
            match tokio::time::timeout(Duration::from_secs(30), queue.recv()).await {
                Ok(Some(key)) => pending.push(key),
                Ok(None) => return,
                Err(_) => continue,
            }
        }
        while pending.len() < 256 {
            match queue.try_recv() {
                Ok(key) => pending.push(key),
                Err(_) => break,
            }
        }
        let result = match RunConfig::load(&store).await {
            Ok(config) => ingest(&store, &pending, &RunConfig { state: local_state(), ..config }, crate::now()).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(report) => {
                report.log();
                pending.clear();
                ingested.notify_one();
            }
            Err(error) => {
                tracing::error!(%error, objects = pending.len(), "ingest failed; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn reconcile_once(
    store: &FsStore,
    timing: functions::ingest::reconcile::Timing,
) -> Result<functions::ingest::reconcile::Reconciled, functions::Error> {
    let config = RunConfig::load(store).await?;
    let config = RunConfig { state: local_state(), ..config };
    let report = functions::ingest::reconcile::reconcile(store, &config, crate::now(), timing).await?;
    if report.missing > 0 || report.unverifiable > 0 {
        tracing::warn!(
            objects = report.missing,
            events = report.applied,
            unverifiable = report.unverifiable,
            "applied raw objects stored but never ingested"
        );
    }
    Ok(report)
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn client_ip(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Option<IpAddr> {
    match &state.trusted_ip_header {
        Some(name) => headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok()),
        None => Some(peer.ip()),
    }
}

fn to_response(answer: Answer) -> Response {
    let json = !answer.body.is_empty() && !answer.headers.iter().any(|(name, _)| *name == "content-type");
    let mut response = Response::new(if answer.body.is_empty() { Body::empty() } else { Body::from(answer.body) });
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    if json {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    response
}

/// Recomputes tags and audiences (when any are defined): after ingest (at most every 2 s), when
/// `config/tags.json`, `config/audiences.json` or `config/destinations.json` changes, and every `interval`.
/// Advances privacy requests every second (in the cloud, the tagging function's schedule does); locally the
/// state's readers are this process's own, so two seconds of grace are plenty. Every ten seconds, compacts
/// raw objects into the lake (here the collector is in this process, so a two-second settle is plenty).
/// One loop, so a compaction and an erasure never run at once.
async fn upkeep_loop(store: FsStore) {
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match functions::privacy::process(&store, 2_000, crate::now()).await {
            Ok(0) => {}
            Ok(advanced) => tracing::info!(requests = advanced, "privacy requests advanced"),
            Err(error) => tracing::error!(%error, "privacy requests not advanced"),
        }
        tick += 1;
        if tick.is_multiple_of(10) {
            match functions::lake::compact_all(&store, 2_000, crate::now(), 100).await {
                Ok(0) => {}
                Ok(events) => tracing::info!(events, "raw events compacted into the lake"),
                Err(error) => tracing::error!(%error, "raw events not compacted"),
            }
        }
    }
}

async fn tagging_loop(store: FsStore, ingested: Arc<tokio::sync::Notify>, interval: Duration) {
    use functions::storage::ObjectStore as _;
    let mut last_definitions: Option<(Vec<u8>, Vec<u8>, Vec<u8>)> = None;
    let mut last_run = tokio::time::Instant::now();
    let mut dirty = false;
    loop {
        tokio::select! {
            () = ingested.notified() => dirty = true,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let read = |key: &'static str| {
            let store = store.clone();
            async move { store.get(key).await.ok().flatten().map(|o| o.body).unwrap_or_default() }
        };
        // A destination's subscriptions count too: one newly subscribed to an audience gets its members.
        let definitions =
            (read(keys::CONFIG_TAGS).await, read(keys::CONFIG_AUDIENCES).await, read(keys::CONFIG_DESTINATIONS).await);
        if definitions.0.is_empty() && definitions.1.is_empty() {
            continue;
        }
        let changed = last_definitions.as_ref() != Some(&definitions);
        if !(changed || dirty || last_run.elapsed() >= interval) {
            continue;
        }
        last_definitions = Some(definitions);
        last_run = tokio::time::Instant::now();
        dirty = false;
        match functions::tagging::full_recompute(&store, crate::now()).await {
            Ok(report) => tracing::info!(
                profiles = report.profiles,
                tags = report.tags.len(),
                audiences = report.audiences.len(),
                "tags and audiences computed"
            ),
            Err(error) => tracing::error!(%error, "tags and audiences not computed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(root: &std::path::Path, path: &str) -> (StatusCode, String) {
        let response = site_file(root, path).await;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_site_folder_serves_its_files_and_nothing_outside_it() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("site");
        std::fs::create_dir_all(root.join("shop")).unwrap();
        std::fs::write(root.join("index.html"), "home").unwrap();
        std::fs::write(root.join("shop/p.html"), "product").unwrap();
        std::fs::write(root.join(".env"), "secret").unwrap();
        std::fs::write(outer.path().join("outside.txt"), "secret").unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        assert_eq!(get(&root, "/").await, (StatusCode::OK, "home".into()));
        assert_eq!(get(&root, "/shop/p.html").await, (StatusCode::OK, "product".into()));
        for path in ["/../outside.txt", "/shop/../../outside.txt", "/.env", "/missing.html", "/shop//p.html"] {
            assert_eq!(get(&root, path).await.0, StatusCode::NOT_FOUND, "{path}");
        }
        let page = site_file(&root, "/shop/p.html").await;
        assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
    }
}
