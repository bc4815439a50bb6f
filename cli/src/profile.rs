//! `cdp profile <type>:<value>`: the unified profile behind any identifier.

use anyhow::{Context as _, bail};
use functions::state::lookup;
use functions::storage::FsStore;
use serde_json::json;
use shared::identity::AuditKind;

use crate::DataArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct ProfileArgs {
    /// `type:value` (emails and phones are hashed the way the graph keys them; give phones in international
    /// form, `+49…`), or a profile id (`prof_…`).
    identifier: String,
    /// Print one JSON object (top-level `id`, `identities`, `traits`, `events`, `history`, ...).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataArgs,
}

/// The graph's key for what the user typed: personal data by the SHA-256 of its normalized form.
fn key_of(identifier: &str) -> anyhow::Result<String> {
    shared::identity::identifier_key(identifier).map_err(anyhow::Error::msg)
}

pub(crate) fn run(args: ProfileArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = FsStore::open(&args.data.data).context("opening the data folder")?;
    let key = key_of(&args.identifier)?;
    let Some(stored) = runtime.block_on(lookup(&store, &key))? else {
        bail!("no profile for {key} in {}", args.data.data.display());
    };
    let (node, profile) = (stored.node, stored.profile);
    if args.json {
        let out = json!({
            "id": node.id,
            "identities": node.identities,
            "mergedIds": profile.merged_ids,
            "traits": profile.traits.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect::<serde_json::Map<_, _>>(),
            "firstSeen": profile.first_seen,
            "lastSeen": profile.last_seen,
            "events": profile.events,
            "groups": profile.groups,
            "tags": profile.tags,
            "tagsAt": profile.tags_at,
            "audiences": profile.memberships.iter().filter(|(_, m)| m.member).map(|(a, m)| (a.clone(), json!({"since": m.since}))).collect::<serde_json::Map<_, _>>(),
            "history": node.audit,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("profile {}", node.id);
    if let (Some(first), Some(last)) = (profile.first_seen, profile.last_seen) {
        println!("  seen        {first} .. {last}");
    }
    println!("  identities");
    for id in &node.identities {
        println!("    {id}");
    }
    if !profile.traits.is_empty() {
        println!("  traits");
        for (name, value) in &profile.traits {
            println!("    {name} = {} (from {} at {})", value.value, value.source, value.at);
        }
    }
    if !profile.events.is_empty() {
        println!("  events");
        for (name, stats) in &profile.events {
            println!("    {name}: {}", stats.count);
        }
    }
    if let Some(at) = profile.tags_at {
        println!("  tags (as of {at})");
        for (id, value) in &profile.tags {
            println!("    {id} = {value}");
        }
    }
    let audiences: Vec<&String> = profile.memberships.iter().filter(|(_, m)| m.member).map(|(a, _)| a).collect();
    if !audiences.is_empty() {
        println!("  audiences   {}", audiences.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "));
    }
    println!("  history");
    for entry in &node.audit {
        let what = match &entry.kind {
            AuditKind::Created { identifiers } => format!("created with {}", identifiers.join(", ")),
            AuditKind::Linked { identifiers } => format!("linked {}", identifiers.join(", ")),
            AuditKind::Merged { absorbed, via } => format!("merged {absorbed} (via {via})"),
            AuditKind::MergeRefused { other, via, reason } => format!("refused merge with {other} via {via}: {reason}"),
            AuditKind::LinkRefused { identifier, reason } => format!("refused {identifier}: {reason}"),
            AuditKind::Unlinked { identifier } => format!("unlinked {identifier}"),
            AuditKind::SplitOff { into, identifiers } => format!("split off {} into {into}", identifiers.join(", ")),
            AuditKind::SplitFrom { from } => format!("split from {from}"),
        };
        println!("    {} {}  ({})", entry.at, what, entry.message_id);
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(crate) struct UnlinkArgs {
    /// The identifier to remove, `type:value` as for `cdp profile`.
    identifier: String,
    /// Who asks and why, kept in the profile's history (e.g. a ticket id).
    #[arg(long, default_value = "cdp-unlink")]
    request_id: String,
    #[command(flatten)]
    data: DataArgs,
}

/// `cdp unlink`: removes an identifier and splits its profile where nothing else connects it. Safe beside a
/// running `cdp up` (the state's compare-and-swap fences either writer).
pub(crate) fn unlink(args: UnlinkArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = FsStore::open(&args.data.data).context("opening the data folder")?;
    let key = key_of(&args.identifier)?;
    let parts = runtime.block_on(async {
        let config = functions::snapshot::RunConfig::load(&store).await?;
        functions::ingest::unlink(&store, &key, &args.request_id, &config, crate::now()).await
    })?;
    if let Some((kept, split)) = parts.split_first() {
        // The append-only log keeps only keyed hashes of the person: identifier and profile ids alike.
        let hash = runtime.block_on(functions::suppression::hash_key(&store))?;
        let split_off: Vec<String> = split.iter().map(|id| hash.hash(id)).collect();
        let detail = serde_json::json!({
            "identifier": hash.hash(&key),
            "reason": args.request_id,
            "splitOff": split_off,
        });
        let change = functions::audit::Change { detail: Some(detail), ..Default::default() };
        let target = format!("profile:{}", hash.hash(kept));
        runtime.block_on(functions::audit::record(
            &store,
            crate::access::operator(),
            "profile.unlink",
            &target,
            change,
        ))?;
    }
    match parts.as_slice() {
        [] => bail!("no profile has {key}"),
        [one] => println!("unlinked {key} from {one}; the profile stays whole"),
        [kept, split @ ..] => println!("unlinked {key} from {kept}; split off {}", split.join(", ")),
    }
    Ok(())
}
