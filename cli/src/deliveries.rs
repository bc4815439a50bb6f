//! `cdp destination add|list` and `cdp deliveries list|replay|enable`, and what `cdp up` runs for activation:
//! the dispatcher (restarted when `config/destinations.json` changes) and the demo partner endpoint.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use functions::activation::Settings;
use functions::activation::dispatch::Dispatcher;
use functions::definitions::{Checking, Kind};
use functions::storage::{FsStore, ObjectStore};
use serde_json::{Value, json};
use shared::access::Actor;
use shared::activation::signing::{Secret, verify};
use shared::activation::{DestinationDefinition, Lane, Reach};
use shared::storage::keys::{self, CONFIG_DESTINATIONS};

use crate::DataArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum DestinationCommand {
    /// Add a partner webhook; its signing secret is printed once as the last line (give it to the partner).
    Add {
        /// Destination id ([a-z0-9_], ≤ 64).
        id: String,
        /// The partner's https URL.
        #[arg(long)]
        url: String,
        /// Send this audience's entries and exits (repeatable).
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// Send events with this name as they arrive (repeatable).
        #[arg(long = "event")]
        events: Vec<String>,
        /// Include this trait in each item (repeatable; personal data needs --allow-pii).
        #[arg(long = "field-trait")]
        traits: Vec<String>,
        /// Include this tag in each item (repeatable).
        #[arg(long = "field-tag")]
        tags: Vec<String>,
        /// The partner may receive personal data.
        #[arg(long)]
        allow_pii: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List destinations (never their secrets).
    List {
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeliveriesCommand {
    /// Per destination: enabled or disabled (by a 410), queued items, the request being retried, dead letters.
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Send dead letters again, same id and bytes (the running `cdp up`, or the next activation run, sends them).
    Replay {
        /// The destination.
        destination: String,
        /// The dead letter's webhook-id; all of the destination's with --all.
        webhook_id: Option<String>,
        /// Every dead letter of the destination.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Re-enable a destination that a 410 disabled; its waiting items are sent.
    Enable {
        /// The destination.
        destination: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

/// The destinations with their secrets (`functions::activation::secrets`).
async fn destinations(store: &FsStore) -> anyhow::Result<Vec<DestinationDefinition>> {
    Ok(functions::activation::secrets::load_destinations(store).await?)
}

/// A new signing secret (32 random bytes).
pub(crate) fn new_secret() -> Secret {
    Secret::from_bytes(&crate::seed())
}

pub(crate) fn destination(command: DestinationCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            DestinationCommand::Add { id, url, audiences, events, traits, tags, allow_pii, data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let filters: Vec<Value> = events.iter().map(|e| json!({"events": [e]})).collect();
                let definition = json!({
                    "url": url, "send": {"audiences": audiences, "events": filters},
                    "fields": {"traits": traits, "tags": tags}, "allowPii": allow_pii
                });
                let secret = add(&store, &id, definition, crate::access::operator()).await?;
                println!(
                    "added destination {id:?}; its signing secret (shown once here, stored in {}):",
                    shared::activation::DESTINATION_SECRETS
                );
                println!("{}", secret.expose());
                Ok(())
            }
            DestinationCommand::List { data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                for d in destinations(&store).await? {
                    println!(
                        "{}\t{}\t{}\taudiences: {}\ttriggers: {}",
                        d.id,
                        d.url,
                        if d.enabled { "enabled" } else { "turned off" },
                        d.send.audiences.join(" "),
                        d.send.events.len()
                    );
                }
                Ok(())
            }
        }
    })
}

/// Adds the destination `id` (`definition` without its id and secret) with a new signing secret, as the API
/// does (`functions::definitions::put`: checked against the whole configuration, under compare-and-swap, in
/// the audit log as `actor`'s); returns the secret. An existing destination is not replaced. The new URL must
/// be public; destinations already on loopback (`cdp up`'s demo partner) stay as they are.
async fn add<S: ObjectStore>(store: &S, id: &str, mut definition: Value, actor: Actor) -> anyhow::Result<Secret> {
    if let Some(url) = definition["url"].as_str() {
        shared::activation::destination::check_url(url, false)
            .map_err(|problem| anyhow::anyhow!("--url: {problem}"))?;
    }
    let secret = new_secret();
    definition["secret"] = json!(secret.expose());
    let checking = Checking { loopback: true, create_only: true };
    match functions::definitions::put(store, Kind::Destinations, id, definition, actor, checking).await {
        Ok(_) => Ok(secret),
        Err(functions::definitions::Refused::Exists(_)) => {
            bail!("destination {id:?} exists; change it through the API (PUT /v1/destinations/{id})")
        }
        Err(refused) => Err(refused.into()),
    }
}

pub(crate) fn deliveries(command: DeliveriesCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            DeliveriesCommand::List { data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                for d in destinations(&store).await? {
                    let disabled: Option<functions::activation::stored::Disabled> =
                        functions::config::read(&store, &functions::activation::stored::status_key(&d.id)).await?;
                    let (mut queued, mut retrying) = (0, Vec::new());
                    for meta in store.list(&format!("deliveries/v1/lanes/{}/", d.id)).await? {
                        let Some(object) = store.get(&meta.key).await? else { continue };
                        let lane: Lane = serde_json::from_slice(&object.body)?;
                        queued += lane.pending.len();
                        if let Some(current) = lane.current {
                            retrying.push(current);
                        }
                    }
                    let dead = functions::activation::stored::dead_letters(&store, &d.id).await?;
                    let state = match (&disabled, d.enabled) {
                        (Some(off), _) => format!("DISABLED ({})", off.reason),
                        (None, false) => "turned off".to_string(),
                        (None, true) => "enabled".to_string(),
                    };
                    println!(
                        "{}\t{state}\tqueued {queued}\tin flight {}\tdead letters {}",
                        d.id,
                        retrying.len(),
                        dead.len()
                    );
                    for r in retrying {
                        println!(
                            "  in flight {}: {} items, attempt {} next at {}, last error: {}",
                            r.webhook_id,
                            r.item_ids.len(),
                            r.attempts + 1,
                            shared::time::UtcTime::from_unix_millis(r.due_at)
                                .map(|t| t.to_string())
                                .unwrap_or_default(),
                            r.last_error.as_deref().unwrap_or("none")
                        );
                    }
                    for letter in dead {
                        println!(
                            "  dead {}: {} items, {} attempts, {}",
                            letter.request.webhook_id,
                            letter.request.item_ids.len(),
                            letter.request.attempts,
                            letter.reason
                        );
                    }
                }
                Ok(())
            }
            DeliveriesCommand::Replay { destination, webhook_id, all, data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                let ids: Vec<String> = match (webhook_id, all) {
                    (Some(id), false) => vec![id],
                    (None, true) => functions::activation::stored::dead_letters(&store, &destination)
                        .await?
                        .into_iter()
                        .map(|d| d.request.webhook_id)
                        .collect(),
                    _ => bail!("give one webhook-id, or --all"),
                };
                for id in &ids {
                    functions::activation::stored::request_replay(&store, &destination, id).await?;
                    println!("replay requested: {destination} {id}");
                }
                if ids.is_empty() {
                    println!("{destination} has no dead letters");
                }
                Ok(())
            }
            DeliveriesCommand::Enable { destination, data } => {
                let store = FsStore::open(&data.data).context("opening the data folder")?;
                functions::activation::stored::enable(&store, &destination).await?;
                println!("{destination} enabled");
                Ok(())
            }
        }
    })
}

/// Runs the dispatcher for `cdp up`: takes the outbox every 50 ms, restarts when `config/destinations.json`
/// changes (checked every second). Lanes are stored after every change, so stopping at any point loses nothing.
pub(crate) async fn activation_loop(store: FsStore, reach: Reach, ingest: tokio::sync::mpsc::UnboundedSender<String>) {
    let mut last: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut dispatcher: Option<Dispatcher<FsStore>> = None;
    let mut checked = tokio::time::Instant::now() - Duration::from_secs(2);
    loop {
        if checked.elapsed() >= Duration::from_secs(1) {
            checked = tokio::time::Instant::now();
            // The definitions and their secrets: a rotated secret restarts deliveries too.
            let read = |key: &'static str| {
                let store = store.clone();
                async move { store.get(key).await.ok().flatten().map(|o| o.body).unwrap_or_default() }
            };
            let config = (read(keys::CONFIG_DESTINATIONS).await, read(shared::activation::DESTINATION_SECRETS).await);
            if last.as_ref() != Some(&config) {
                if let Some(running) = dispatcher.take()
                    && let Err(error) = running.stop().await
                {
                    tracing::error!(%error, "stopping deliveries");
                }
                last = Some(config.clone());
                let (definitions, secrets) = config;
                let parsed = (|| -> Result<Vec<DestinationDefinition>, serde_json::Error> {
                    let mut list: Vec<DestinationDefinition> =
                        if definitions.is_empty() { Vec::new() } else { serde_json::from_slice(&definitions)? };
                    let secrets: shared::activation::DestinationSecrets =
                        if secrets.is_empty() { Default::default() } else { serde_json::from_slice(&secrets)? };
                    secrets.apply(&mut list);
                    Ok(list)
                })();
                match parsed {
                    Ok(list) if list.is_empty() => {}
                    Ok(list) => match Dispatcher::start(
                        store.clone(),
                        &list,
                        Settings { reach, ingest: Some(ingest.clone()) },
                        None,
                        None,
                    )
                    .await
                    {
                        Ok(running) => {
                            tracing::info!(destinations = list.len(), "delivering to partners");
                            dispatcher = Some(running);
                        }
                        Err(error) => tracing::error!(%error, "deliveries not started"),
                    },
                    Err(error) => {
                        tracing::error!(%error, "{CONFIG_DESTINATIONS} or its secrets are invalid; deliveries wait")
                    }
                }
            }
        }
        if let Some(running) = dispatcher.as_mut() {
            if let Err(error) = running.intake().await {
                tracing::error!(%error, "taking the delivery outbox");
            }
            // Messages for a destination added since: read the configuration again now, not in a second.
            if running.is_stale() {
                checked = tokio::time::Instant::now() - Duration::from_secs(2);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The demo partner's id in `config/destinations.json`.
pub(crate) const DEMO_PARTNER: &str = "demo_partner";

/// What the demo partner received (the last 200 requests).
#[derive(Default)]
pub(crate) struct DemoPartner {
    received: Mutex<VecDeque<Value>>,
}

impl DemoPartner {
    /// Verifies a request as a partner would (with the secrets of the `demo_partner` destination) and keeps it.
    pub(crate) async fn receive(&self, store: &FsStore, headers: &axum::http::HeaderMap, body: &[u8]) -> u16 {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let (id, timestamp, signature) =
            (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
        let now = crate::now().unix_millis() / 1000;
        let secrets: Vec<Secret> = destinations(store)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d.id == DEMO_PARTNER)
            .flat_map(|d| d.secret.into_iter().chain(d.previous_secrets.into_iter().map(|p| p.secret)))
            .collect();
        let verified = secrets.iter().any(|s| verify(s, &id, &timestamp, &signature, body, now).is_ok());
        let payload: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let entry =
            json!({"webhookId": id, "verified": verified, "receivedAt": crate::now().to_string(), "payload": payload});
        if let Ok(mut received) = self.received.lock() {
            received.push_back(entry);
            while received.len() > 200 {
                received.pop_front();
            }
        }
        if verified { 200 } else { 401 }
    }

    /// Everything kept, newest first.
    pub(crate) fn list(&self) -> Vec<Value> {
        self.received.lock().map(|r| r.iter().rev().cloned().collect()).unwrap_or_default()
    }
}

/// Makes sure `config/destinations.json` holds the demo partner, pointing at `url`, subscribed to every
/// audience defined and to orders; keeps its secret when it exists. Written as any change is (checked, under
/// compare-and-swap, audited), and only when it differs.
pub(crate) async fn ensure_demo_partner(store: &FsStore, url: &str) -> anyhow::Result<()> {
    let (_, audiences) = functions::snapshot::load_definitions(store).await?;
    let audience_ids: Vec<String> = audiences.iter().map(|a| a.id.clone()).collect();
    let mut definition = json!({
        "id": DEMO_PARTNER, "name": "Demo partner (cdp up)", "url": url,
        "send": {"audiences": audience_ids, "events": [{"events": ["Order Completed"]}]},
        "fields": {"tags": []}, "batching": {"maxEvents": 100, "maxWaitMs": 50},
        "retrySchedule": [0, 1, 5, 30, 300]
    });
    let current = functions::definitions::read_array(store, CONFIG_DESTINATIONS).await?;
    let same = current.contains(&definition);
    let has_secret = destinations(store).await?.iter().any(|d| d.id == DEMO_PARTNER && d.secret.is_some());
    if same && has_secret {
        return Ok(());
    }
    if !has_secret {
        definition["secret"] = json!(new_secret().expose());
    }
    let actor = Actor::cli("cdp up");
    let checking = Checking { loopback: true, create_only: false };
    functions::definitions::put(store, Kind::Destinations, DEMO_PARTNER, definition, actor, checking).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use functions::storage::PutOptions;
    use functions::storage::conformance::Gated;
    use shared::access::Scope;
    use shared::ids::Entropy;
    use tower_service::Service as _;

    use super::*;

    /// `PUT /v1/destinations/<id>` through the API's router, as an operator's console or script sends it.
    async fn api_put<S: ObjectStore + Clone>(store: S, key: &str, id: &str, body: Value) -> (u16, Value) {
        let mut router = functions::api::router(functions::api::Api::new(store));
        let request = axum::http::Request::builder()
            .method("PUT")
            .uri(format!("/v1/destinations/{id}"))
            .header("authorization", format!("Bearer {key}"))
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let response = router.call(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn subscribed_to(audience: &str) -> Value {
        json!({"url": "https://hooks.partner.example/cdp", "send": {"audiences": [audience]}})
    }

    #[tokio::test]
    async fn a_cli_change_racing_an_api_change_of_another_destination_keeps_both_checked_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let audiences = json!([
            {"id": "buyers", "status": "active", "when": {"field": "trait:plan", "op": "exists"}},
            {"id": "vips", "status": "active", "when": {"field": "trait:plan", "op": "eq", "value": "vip"}}
        ]);
        store.put(keys::CONFIG_AUDIENCES, audiences.to_string().into_bytes(), PutOptions::json()).await.unwrap();
        let now = functions::config::now().unwrap();
        let mut entropy = Entropy::from_seed([7; 32]);
        let admin = functions::api::update_keys(&store, |keys| {
            keys.create("admin", [Scope::Admin].into(), "test", now, &mut entropy)
                .map_err(functions::api::ApiError::invalid)
        })
        .await
        .unwrap()
        .key;

        // Both editors read the file before either writes: the second write is fenced and re-applied.
        let racing = Gated::new(store.clone(), CONFIG_DESTINATIONS, 2);
        let mut api_body = subscribed_to("buyers");
        api_body["secret"] = json!(new_secret().expose());
        let both = async {
            tokio::join!(
                api_put(racing.clone(), &admin, "crm", api_body),
                add(&racing, "ads", subscribed_to("vips"), Actor::cli("ops"))
            )
        };
        let (api, cli) =
            tokio::time::timeout(Duration::from_secs(60), both).await.expect("both writers reach the gate");
        assert_eq!(api.0, 201, "{api:?}");
        cli.expect("the CLI's change");
        let stored = functions::definitions::read_array(&store, CONFIG_DESTINATIONS).await.unwrap();
        let mut ids: Vec<&str> = stored.iter().filter_map(functions::definitions::id_of).collect();
        ids.sort();
        assert_eq!(ids, ["ads", "crm"], "both changes survive: {stored:?}");
        let with_secrets = destinations(&store).await.unwrap();
        assert!(with_secrets.iter().all(|d| d.secret.is_some()), "each keeps its signing secret");
        assert!(
            !String::from_utf8_lossy(&store.get(CONFIG_DESTINATIONS).await.unwrap().unwrap().body).contains("whsec_")
        );

        // Both are in the audit log, each with its actor.
        let mut audited = Vec::new();
        for meta in store.list("audit/v1/").await.unwrap() {
            let record: Value = serde_json::from_slice(&store.get(&meta.key).await.unwrap().unwrap().body).unwrap();
            audited.push((record["action"].clone(), record["target"].clone(), record["actor"]["kind"].clone()));
        }
        audited.sort_by_key(|r| r.1.to_string());
        assert_eq!(
            audited,
            [
                (json!("destination.create"), json!("destination:ads"), json!("cli")),
                (json!("destination.create"), json!("destination:crm"), json!("api_key")),
            ]
        );

        // Both are checked against the whole configuration: an audience that does not exist is refused by
        // either, naming it, and nothing is written.
        let error = add(&store, "ghosts", subscribed_to("ghosts"), Actor::cli("ops")).await.expect_err("checked");
        assert!(error.to_string().contains("ghosts"), "{error}");
        let mut api_body = subscribed_to("ghosts");
        api_body["secret"] = json!(new_secret().expose());
        let (status, body) = api_put(store.clone(), &admin, "phantom", api_body).await;
        assert_eq!(status, 400, "{body}");
        let stored = functions::definitions::read_array(&store, CONFIG_DESTINATIONS).await.unwrap();
        assert_eq!(stored.len(), 2, "{stored:?}");
    }

    #[tokio::test]
    async fn a_destination_added_beside_the_loopback_demo_partner_is_checked_created_once_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let audiences = json!([{"id": "vips", "status": "active", "when": {"field": "trait:plan", "op": "exists"}}]);
        store.put(keys::CONFIG_AUDIENCES, audiences.to_string().into_bytes(), PutOptions::json()).await.unwrap();
        let audit = || async { store.list("audit/v1/").await.unwrap().len() };
        ensure_demo_partner(&store, "http://127.0.0.1:9/demo/partner").await.expect("the demo partner, on loopback");
        ensure_demo_partner(&store, "http://127.0.0.1:9/demo/partner").await.expect("unchanged");
        assert_eq!(audit().await, 1, "an unchanged demo partner is not written again");

        add(&store, "ads", subscribed_to("vips"), Actor::cli("ops")).await.expect("beside a loopback destination");
        let again = add(&store, "ads", subscribed_to("vips"), Actor::cli("ops")).await.expect_err("created once");
        assert!(again.to_string().contains("exists"), "{again}");
        let local = json!({"url": "http://127.0.0.1:8080/hook", "send": {"audiences": ["vips"]}});
        let refused = add(&store, "local", local, Actor::cli("ops")).await.expect_err("a new URL must be public");
        assert!(refused.to_string().contains("--url"), "{refused}");
        assert_eq!(audit().await, 2, "one record for the one change made");
        let ids: Vec<String> = destinations(&store).await.unwrap().into_iter().map(|d| d.id).collect();
        assert_eq!(ids, [DEMO_PARTNER, "ads"]);
    }
}
