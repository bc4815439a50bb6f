//! `cdp source add|plan|secret|list`.

use anyhow::{Context as _, bail};
use clap::Subcommand;
use functions::collect::load_sources;
use functions::storage::FsStore;
use shared::ids::Entropy;
use shared::source::{SourceConfig, SourceKind, new_source, slug};

use crate::DataArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum SourceCommand {
    /// Create a source; its new write key is printed as the last line (shown once, stored only hashed).
    Add {
        /// Display name; the id is derived from it unless --id is given.
        name: String,
        /// Source id ([a-z0-9][a-z0-9_-]{0,63}).
        #[arg(long)]
        id: Option<String>,
        /// Browser origin allowed to send (repeatable); default: any.
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// What sends to it: `http` (SDKs, servers, the pixel; a write key is made) or a SaaS system's signed
        /// webhooks to POST /v1/webhooks/<id>: `shopify`, `stripe`, `webhook` (Standard Webhooks).
        #[arg(long, default_value = "http")]
        kind: String,
        /// A webhook source's signing secret (the sender's: Shopify's app secret, Stripe's `whsec_…`, a
        /// Standard Webhooks `whsec_…`); default: the CDP_SIGNING_SECRET environment variable.
        #[arg(long)]
        signing_secret: Option<Secret>,
        /// A `webhook` source's mapping: JSON as a file import's, its columns JSON pointers into the payload.
        #[arg(long)]
        mapping: Option<std::path::PathBuf>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Set or rotate a webhook source's signing secret (from --signing-secret or CDP_SIGNING_SECRET); the
    /// collectors verify with it within seconds.
    Secret {
        /// The source's id.
        id: String,
        /// The new secret.
        #[arg(long)]
        signing_secret: Option<Secret>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Set a source's tracking plan from a JSON file (docs/data.md), or remove it with --clear; collectors
    /// enforce it within seconds.
    Plan {
        /// The source's id.
        id: String,
        /// The plan: `{"events": {…}, "identify": {…}, "unplanned": "…", "violations": "…"}`.
        file: Option<std::path::PathBuf>,
        /// Remove the plan.
        #[arg(long, conflicts_with = "file")]
        clear: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Delete a source (and a webhook source's signing secret): its key or webhooks are refused within seconds;
    /// its events stay.
    Delete {
        /// The source's id.
        id: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List sources (ids, names, origins; never keys).
    List {
        #[command(flatten)]
        data: DataArgs,
    },
}

pub(crate) fn run(command: SourceCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            SourceCommand::Add { name, id, origins, kind, signing_secret, mapping, data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let id = id.unwrap_or_else(|| slug(&name));
                let kind = SourceKind::parse(&kind)
                    .with_context(|| format!("--kind {kind:?}: one of {}", SourceKind::NAMES.join(", ")))?;
                if kind.is_webhook() {
                    if !origins.is_empty() {
                        bail!("--origin is for browsers; a webhook source takes its sender's signed requests only");
                    }
                    let secret = secret_given(signing_secret)?;
                    let mapping = match mapping {
                        Some(file) => {
                            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                            Some(
                                shared::import::Mapping::parse(&bytes)
                                    .with_context(|| format!("{} is not a mapping", file.display()))?,
                            )
                        }
                        None => None,
                    };
                    let source = create_webhook(&store, &id, &name, kind, &secret, mapping).await?;
                    println!(
                        "created {} source {:?} ({}) in {}",
                        kind.as_str(),
                        source.id,
                        source.name,
                        data.data.display()
                    );
                    println!(
                        "senders post to /v1/webhooks/{} on the collector (its signing secret is stored apart)",
                        source.id
                    );
                    return Ok(());
                }
                if signing_secret.is_some() || mapping.is_some() {
                    bail!("--signing-secret and --mapping are for webhook sources (--kind shopify|stripe|webhook)");
                }
                let (source, key) = create(&store, &id, &name, origins).await?;
                println!("created source {:?} ({}) in {}", source.id, source.name, data.data.display());
                println!("write key (shown once; only its hash is stored):");
                println!("{key}");
                Ok(())
            }
            SourceCommand::Plan { id, file, clear, data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let plan: Option<shared::source::TrackingPlan> = match (file, clear) {
                    (Some(file), false) => {
                        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                        Some(
                            serde_json::from_slice(&bytes)
                                .with_context(|| format!("{} is not a tracking plan", file.display()))?,
                        )
                    }
                    (None, true) => None,
                    _ => bail!("give the plan's file, or --clear"),
                };
                let (before, after) = functions::collect::update_sources(&store, |sources| {
                    let Some(before) = sources.list().iter().find(|s| s.id == id).cloned() else {
                        bail!("no source {id:?}");
                    };
                    let after = SourceConfig { tracking_plan: plan.clone(), ..before.clone() };
                    sources.replace(after.clone())?;
                    Ok((before, after))
                })
                .await?;
                let change = functions::audit::Change {
                    before: Some(serde_json::json!({"trackingPlan": before.tracking_plan})),
                    after: Some(serde_json::json!({"trackingPlan": after.tracking_plan})),
                    ..Default::default()
                };
                functions::audit::record(
                    &store,
                    crate::access::operator(),
                    "source.update",
                    &format!("source:{id}"),
                    change,
                )
                .await?;
                match &after.tracking_plan {
                    Some(plan) => println!("source {id}: tracking plan with {} events set", plan.events.len()),
                    None => println!("source {id}: tracking plan removed"),
                }
                Ok(())
            }
            SourceCommand::Secret { id, signing_secret, data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let secret = secret_given(signing_secret)?;
                let sources = load_sources(&store).await?;
                let source = sources.list().iter().find(|s| s.id == id).with_context(|| format!("no source {id:?}"))?;
                source.kind.check_secret(&secret).map_err(|problem| anyhow::anyhow!("--signing-secret: {problem}"))?;
                functions::collect::update_source_secrets(&store, |secrets| {
                    secrets.set(&id, &secret);
                    Ok::<_, anyhow::Error>(())
                })
                .await?;
                functions::audit::record(
                    &store,
                    crate::access::operator(),
                    "source.rotate_secret",
                    &format!("source:{id}"),
                    functions::audit::Change::default(),
                )
                .await?;
                println!("source {id}: signing secret set");
                Ok(())
            }
            SourceCommand::Delete { id, data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                // The secret first: a deletion that fails part-way leaves no secret behind.
                functions::collect::update_source_secrets(&store, |secrets| {
                    Ok::<_, anyhow::Error>(secrets.remove(&id))
                })
                .await?;
                let before = functions::collect::update_sources(&store, |sources| {
                    sources.remove(&id).with_context(|| format!("no source {id:?}"))
                })
                .await?;
                let change =
                    functions::audit::Change { before: Some(serde_json::to_value(&before)?), ..Default::default() };
                functions::audit::record(
                    &store,
                    crate::access::operator(),
                    "source.delete",
                    &format!("source:{id}"),
                    change,
                )
                .await?;
                println!("source {id} deleted (its events stay)");
                Ok(())
            }
            SourceCommand::List { data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let sources = load_sources(&store).await?;
                for s in sources.list() {
                    let reach = match s.kind {
                        SourceKind::Http => format!("origins: {}", s.allowed_origins.join(" ")),
                        kind => format!("{} webhooks to /v1/webhooks/{}", kind.as_str(), s.id),
                    };
                    println!("{}\t{}\t{}\t{reach}", s.id, s.name, if s.enabled { "enabled" } else { "disabled" });
                }
                Ok(())
            }
        }
    })
}

/// Adds a source to the store's sources file; returns it and its write key.
pub(crate) async fn create(
    store: &FsStore,
    id: &str,
    name: &str,
    origins: Vec<String>,
) -> anyhow::Result<(SourceConfig, String)> {
    let (mut source, key) = new_source(id, name, &mut Entropy::from_seed(crate::seed()));
    if !origins.is_empty() {
        source.allowed_origins = origins;
    }
    // Under compare-and-swap: a source added through the API meanwhile is kept.
    functions::collect::update_sources(store, |sources| {
        if sources.list().iter().any(|s| s.id == id) {
            bail!("a source with id {id:?} already exists");
        }
        Ok(sources.add(source.clone())?)
    })
    .await?;
    let after = serde_json::to_value(&source)?;
    let change = functions::audit::Change { after: Some(after), ..Default::default() };
    functions::audit::record(store, crate::access::operator(), "source.create", &format!("source:{id}"), change)
        .await?;
    Ok((source, key))
}

/// A signing secret given on the command line: its `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The signing secret from the flag, else from `CDP_SIGNING_SECRET` (kept out of shell history).
fn secret_given(flag: Option<Secret>) -> anyhow::Result<String> {
    flag.map(|secret| secret.0)
        .or_else(|| std::env::var("CDP_SIGNING_SECRET").ok())
        .filter(|s| !s.trim().is_empty())
        .context("a webhook source needs its sender's signing secret: --signing-secret, or CDP_SIGNING_SECRET")
}

/// Adds a webhook source (its write key made but never shown: webhooks authenticate by signature) and stores
/// its signing secret apart; both changes under compare-and-swap and audited (the secret never in the record).
pub(crate) async fn create_webhook(
    store: &FsStore,
    id: &str,
    name: &str,
    kind: SourceKind,
    secret: &str,
    mapping: Option<shared::import::Mapping>,
) -> anyhow::Result<SourceConfig> {
    kind.check_secret(secret).map_err(|problem| anyhow::anyhow!("--signing-secret: {problem}"))?;
    let (mut source, _) = new_source(id, name, &mut Entropy::from_seed(crate::seed()));
    source.kind = kind;
    source.mapping = mapping;
    // Checked whole before anything is stored: a refused source leaves no secret behind.
    let mut trial = load_sources(store).await?;
    if trial.list().iter().any(|s| s.id == id) {
        bail!("a source with id {id:?} already exists");
    }
    trial.add(source.clone())?;
    // The secret first: a source that exists can verify from its first webhook.
    functions::collect::update_source_secrets(store, |secrets| {
        secrets.set(id, secret);
        Ok::<_, anyhow::Error>(())
    })
    .await?;
    functions::collect::update_sources(store, |sources| {
        if sources.list().iter().any(|s| s.id == id) {
            bail!("a source with id {id:?} already exists");
        }
        Ok(sources.add(source.clone())?)
    })
    .await?;
    let change = functions::audit::Change { after: Some(serde_json::to_value(&source)?), ..Default::default() };
    functions::audit::record(store, crate::access::operator(), "source.create", &format!("source:{id}"), change)
        .await?;
    Ok(source)
}
