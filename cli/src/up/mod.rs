//! `cdp up`: the collector and the API on a local folder, through the same core and handlers as the cloud, with
//! the pipeline's loops beside it.

mod collector;
mod demo;
mod loops;

pub(crate) use loops::local_state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::HeaderName;
use functions::collect::SourcesCache;
use functions::storage::FsStore;

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

/// The whole local app: the API's routes (the same router as the API Lambda), the demo page and partner, and
/// every other path through the collector core's router, as in the edge worker.
pub(crate) fn app(state: Arc<AppState>) -> Router {
    use axum::routing::{any, get};
    let api = functions::api::Api::local(state.store.clone(), state.loopback, state.ingest.clone());
    let mut local = Router::new().route("/demo", get(demo::page).fallback(collector::serve));
    if state.demo.is_some() {
        local = local.route("/demo/partner", any(demo::partner));
    }
    functions::api::routes(api).fallback_service(local.fallback(collector::serve).with_state(state))
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
        tokio::spawn(loops::ingest_loop(store.clone(), queue, ingested.clone()));
        let interval = Duration::from_secs(args.tag_interval.max(1));
        tokio::spawn(loops::tagging_loop(store.clone(), ingested, interval));
        tokio::spawn(loops::upkeep_loop(store.clone()));
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
            // A configuration that does not check (an audience naming a missing tag…) must not stop `cdp up`: the
            // demo partner waits until it is fixed, as deliveries do.
            let url = format!("http://{addr}/demo/partner");
            if let Err(error) = crate::deliveries::ensure_demo_partner(&store, &url).await {
                println!("cdp: the demo partner is not configured until this is fixed: {error:#}");
            }
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
