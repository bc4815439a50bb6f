//! `cdp api-key create|list|revoke`: API keys on the data folder (whoever holds the folder is its admin).

use std::collections::BTreeSet;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use functions::api::{ApiError, load_keys, update_keys};
use functions::audit::{Change, record};
use functions::storage::FsStore;
use shared::access::{Actor, Scope};
use shared::ids::Entropy;

use crate::DataArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum ApiKeyCommand {
    /// Create a key; it is printed as the last line, once (only its hash is stored).
    Create {
        /// What the key is for.
        name: String,
        /// A scope it gets (repeatable): profiles:read, profiles:write, profiles:delete, config:read,
        /// config:write, audit:read, pii:send, pii:read, analysis:read, analysis:write, admin.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List keys (ids, names, scopes, revocation; never secrets).
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Revoke a key by its id (the 16 hex digits after `cdp_sk_`).
    Revoke {
        /// The key's id.
        id: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

pub(crate) fn run(command: ApiKeyCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            ApiKeyCommand::Create { name, scopes, data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
                let key = create(&store, &name, &scopes).await?;
                println!("API key {name:?} (shown once; only its hash is stored):");
                println!("{key}");
            }
            ApiKeyCommand::List { data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                for key in load_keys(&store).await?.list() {
                    let scopes: Vec<&str> = key.scopes.iter().map(|s| s.name()).collect();
                    let state = key.revoked_at.map(|t| format!("revoked {t}")).unwrap_or_else(|| "active".into());
                    println!("{}\t{}\t{}\t{state}", key.id, key.name, scopes.join(" "));
                }
            }
            ApiKeyCommand::Revoke { id, data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let now = crate::now();
                let before = update_keys(&store, |keys| {
                    keys.revoke(&id, now).ok_or_else(|| ApiError::not_found(format!("no API key {id:?}")))
                })
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                let change = Change {
                    before: Some(serde_json::json!({"revokedAt": before.revoked_at})),
                    after: Some(serde_json::json!({"revokedAt": before.revoked_at.unwrap_or(now)})),
                    detail: None,
                };
                record(&store, operator(), "api_key.revoke", &format!("api_key:{id}"), change).await?;
                println!("revoked {id} ({})", before.name);
            }
        }
        Ok(())
    })
}

/// Creates an API key with the named scopes, records it in the audit log, and returns the key.
pub(crate) async fn create(store: &FsStore, name: &str, scopes: &[&str]) -> anyhow::Result<String> {
    let mut parsed = BTreeSet::new();
    for name in scopes {
        let Some(scope) = Scope::parse(name) else {
            bail!("unknown scope {name:?} (one of {})", Scope::ALL.map(Scope::name).join(", "));
        };
        parsed.insert(scope);
    }
    let actor = operator();
    let mut entropy = Entropy::from_seed(crate::seed());
    let now = crate::now();
    let new = update_keys(store, |keys| {
        keys.create(name, parsed.clone(), &format!("cli:{}", actor.id), now, &mut entropy).map_err(ApiError::invalid)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let after = serde_json::json!({"id": new.record.id, "name": new.record.name, "scopes": new.record.scopes});
    record(
        store,
        actor,
        "api_key.create",
        &format!("api_key:{}", new.record.id),
        Change { after: Some(after), ..Change::default() },
    )
    .await?;
    Ok(new.key)
}

/// The operator running a command: the OS user.
pub(crate) fn operator() -> Actor {
    Actor::cli(&std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}
