//! Carrying out erasures: see the module documentation of [`super`].

use std::collections::BTreeSet;

use serde_json::Value;
use shared::access::Actor;
use shared::activation::payload::{Detail, Item, ProfileBlock};
use shared::activation::{DestinationDefinition, Message};
use shared::event::CanonicalEvent;
use shared::storage::keys;
use shared::time::UtcTime;

use super::{Erasure, PrivacyRequest, REQUESTS, RequestKind, Status, save};
use crate::Error;
use crate::activation::outbox::{OUTBOX, stage};
use crate::activation::stored::{FORGET, Forget, forget_stored};
use crate::state::{Compaction, Settings, ShardCounts, Transaction, collect_garbage, lookup};
use crate::storage::{ObjectStore, PutOptions};

/// Advances every open erasure as far as it can go now; returns how many requests changed (an error when
/// none could and one failed). `grace_ms` is how
/// long state objects that held an erased person stay for readers of the previous state before deletion.
pub async fn process<S: ObjectStore + Clone>(store: &S, grace_ms: i64, now: UtcTime) -> Result<usize, Error> {
    let mut changed = 0;
    let mut failed = None;
    for meta in store.list(REQUESTS).await? {
        let Some(object) = store.get(&meta.key).await? else { continue };
        let mut request: PrivacyRequest = match serde_json::from_slice(&object.body) {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(key = %meta.key, %error, "unreadable privacy request");
                continue;
            }
        };
        if request.kind != RequestKind::Delete {
            continue;
        }
        let before = request.clone();
        let step = match request.status {
            Status::Pending => erase(store, &mut request, now).await,
            Status::Erasing => finish(store, &mut request, grace_ms, now).await,
            Status::Completed if !request.notices_pending.is_empty() => follow_notices(store, &mut request).await,
            Status::Completed => continue,
        };
        // One request that cannot advance now (storage trouble, a corrupt object) does not hold up the others;
        // it is tried again on the next pass, and every step is safe to repeat.
        if let Err(error) = step {
            tracing::error!(request = %request.id, %error, "privacy request not advanced; retried on the next pass");
            failed = Some(error);
            continue;
        }
        if request != before {
            request.updated_at = now;
            save(store, &request).await?;
            changed += 1;
        }
    }
    match failed {
        Some(error) if changed == 0 => Err(error),
        _ => Ok(changed),
    }
}

/// Step one: find the person, hold their events at ingest, erase events, state and derived data, and tell
/// deliveries.
async fn erase<S: ObjectStore + Clone>(store: &S, request: &mut PrivacyRequest, now: UtcTime) -> Result<(), Error> {
    let mut erasure = Erasure { erased_at: now.unix_millis(), ..Erasure::default() };
    for key in &request.keys {
        if !shared::identity::is_profile_id(key) {
            erasure.keys.insert(key.clone());
        }
        if let Some(stored) = lookup(store, key).await? {
            erasure.profiles.insert(stored.node.id.clone());
            erasure.profiles.extend(stored.profile.merged_ids.iter().cloned());
            erasure.keys.extend(stored.node.identities.iter().cloned());
        }
    }
    let key = crate::suppression::hash_key(store).await?;
    let held: BTreeSet<String> = erasure.keys.iter().map(|k| key.hash(k)).collect();
    let id = request.id.clone();
    crate::suppression::update_suppression(store, |list| {
        list.erasing.insert(id.clone(), held.clone());
    })
    .await?;

    let needles = needles(&erasure.keys, &request.identifiers);
    scrub_events(store, &erasure, &needles, &mut request.outcome).await?;
    erasure.state_version = erase_state(store, &erasure, &mut request.outcome).await?;
    request.outcome.objects += crate::tagging::forget(store, &erasure.profiles).await?;
    scrub_outbox(store, &erasure.profiles, &mut request.outcome).await?;

    let destinations: Vec<DestinationDefinition> =
        crate::config::read(store, keys::CONFIG_DESTINATIONS).await?.unwrap_or_default();
    if destinations.is_empty() {
        forget_stored(store, &erasure.profiles, &BTreeSet::new()).await?;
    } else {
        let key = format!("{FORGET}{}.json", request.id);
        let body = serde_json::to_vec(&Forget { profiles: erasure.profiles.clone() }).map_err(Error::encoding)?;
        store.put(&key, body, PutOptions::json()).await?;
        erasure.forget = Some(key);
        let mut messages = Vec::new();
        for destination in destinations.iter().filter(|d| d.enabled) {
            for profile in &erasure.profiles {
                let item_id =
                    format!("itm_{}", &shared::ids::sha256_hex(&format!("deleted\n{}\n{profile}", request.id))[..32]);
                let item = Item {
                    id: item_id.clone(),
                    occurred_at: now.to_string(),
                    profile: ProfileBlock { id: profile.clone(), ..ProfileBlock::default() },
                    detail: Detail::ProfileDeleted {},
                };
                messages.push(Message {
                    destination: destination.id.clone(),
                    item,
                    enqueued_at: now.unix_millis(),
                    subject: None,
                });
                erasure.notices.insert(format!("{}\n{profile}", destination.id), item_id);
            }
            request.outcome.notified.push(destination.id.clone());
        }
        stage(store, &messages, now).await?;
    }
    request.outcome.profiles = erasure.profiles.len();
    request.outcome.identifiers = erasure.keys.len();
    request.erasure = Some(erasure);
    request.status = Status::Erasing;
    Ok(())
}

/// Step two: once readers of the old state are done, deliveries forgot the person and the notices went out,
/// delete the old state objects, sweep once more, and keep only hashes.
async fn finish<S: ObjectStore + Clone>(
    store: &S,
    request: &mut PrivacyRequest,
    grace_ms: i64,
    now: UtcTime,
) -> Result<(), Error> {
    let Some(erasure) = request.erasure.clone() else {
        request.status = Status::Completed;
        return Ok(());
    };
    if now.unix_millis() - erasure.erased_at < grace_ms {
        request.waiting_for = Some("readers of the previous state (grace period)".into());
        return Ok(());
    }
    if let Some(forget) = &erasure.forget
        && store.get(forget).await?.is_some()
    {
        request.waiting_for = Some("deliveries to forget the person (the activation function's next run)".into());
        return Ok(());
    }
    // Deletion notices are not waited for: a partner may take days (its retry schedule), while the person's
    // data must be gone within the grace period. They are followed on their own (`follow_notices`).
    // An ingest that read the person's events before they were held may have committed them since: erase again
    // and wait another grace period.
    let mut again = erasure.clone();
    for key in &erasure.keys {
        if let Some(stored) = lookup(store, key).await? {
            again.profiles.insert(stored.node.id.clone());
            again.profiles.extend(stored.profile.merged_ids.iter().cloned());
            again.keys.extend(stored.node.identities.iter().cloned());
        }
    }
    if again != erasure {
        again.state_version = erase_state(store, &again, &mut request.outcome).await?;
        again.erased_at = now.unix_millis();
        request.erasure = Some(again);
        request.waiting_for = Some("readers of the previous state (grace period, after a second pass)".into());
        return Ok(());
    }
    request.outcome.state_objects += collect_garbage(store, erasure.state_version).await?;
    // Events that arrived while the erasure ran were dropped at ingest but are stored: sweep again.
    let needles = needles(&erasure.keys, &request.identifiers);
    scrub_events(store, &erasure, &needles, &mut request.outcome).await?;
    request.outcome.objects += crate::tagging::forget(store, &erasure.profiles).await?;
    let id = request.id.clone();
    crate::suppression::update_suppression(store, |list| {
        list.erasing.remove(&id);
    })
    .await?;
    request.keys.clear();
    request.identifiers.clear();
    request.notices_pending = erasure.notices.clone();
    request.erasure = None;
    request.waiting_for = None;
    request.status = Status::Completed;
    request.completed_at = Some(now);
    let detail = serde_json::json!({"request": request.id, "identifiers": request.hashed_identifiers, "outcome": request.outcome});
    let change = crate::audit::Change { detail: Some(detail), ..crate::audit::Change::default() };
    crate::audit::record(
        store,
        Actor { kind: "system".into(), id: "privacy".into(), name: None },
        "privacy.delete.completed",
        &format!("privacy_request:{}", request.id),
        change,
    )
    .await?;
    Ok(())
}

/// After completion: drops from `noticesPending` each deletion notice its destination took (delivered or
/// given up on), and those of destinations no longer configured.
async fn follow_notices<S: ObjectStore>(store: &S, request: &mut PrivacyRequest) -> Result<(), Error> {
    let configured: BTreeSet<String> =
        crate::config::read::<_, Vec<DestinationDefinition>>(store, keys::CONFIG_DESTINATIONS)
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.id)
            .collect();
    let mut settled_now = Vec::new();
    for (at, item) in &request.notices_pending {
        let destination = at.split('\n').next().unwrap_or_default();
        if !configured.contains(destination) || settled(store, destination, item).await? {
            settled_now.push(at.clone());
        }
    }
    for at in settled_now {
        request.notices_pending.remove(&at);
        request.outcome.notices_settled += 1;
    }
    Ok(())
}

/// Whether the delivery log shows `item` delivered or given up at `destination`.
async fn settled<S: ObjectStore>(store: &S, destination: &str, item: &str) -> Result<bool, Error> {
    for meta in store.list(&format!("deliveries/v1/log/{destination}/")).await? {
        let Some(object) = store.get(&meta.key).await? else { continue };
        let records: Vec<Value> = shared::storage::decode_ndjson_gz(&object.body).unwrap_or_default();
        if records.iter().any(|r| {
            matches!(r["result"].as_str(), Some("delivered" | "dead" | "disabled"))
                && r["itemIds"].as_array().is_some_and(|ids| ids.iter().any(|i| i == item))
        }) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Plain strings that name the person in text (rejected events keep the original bytes): identifier values
/// that are not hashes, as given and as keyed, and the hashes of emails and phones.
fn needles(keys: &BTreeSet<String>, identifiers: &[String]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for key in keys {
        if let Some((_, value)) = key.split_once(':') {
            out.insert(value.to_string());
        }
    }
    for identifier in identifiers {
        if let Some((_, value)) = identifier.split_once(':') {
            out.insert(value.trim().to_string());
            out.insert(value.trim().to_ascii_lowercase());
        }
    }
    out.into_iter().filter(|n| n.chars().count() >= 3).collect()
}

/// Whether `text` holds `needle` as a whole token (not inside a longer word or number).
fn names(text: &str, needle: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.' || c == '@');
    let mut from = 0;
    while let Some(found) = text[from..].find(needle) {
        let start = from + found;
        let end = start + needle.len();
        if !word(text[..start].chars().next_back()) && !word(text[end..].chars().next()) {
            return true;
        }
        from = start + needle.len().max(1);
    }
    false
}

/// Removes the person's events from `raw/` (and ingest's quarantine) and the lake, and their lines from
/// `failed/`.
async fn scrub_events<S: ObjectStore>(
    store: &S,
    erasure: &Erasure,
    needles: &[String],
    outcome: &mut super::Outcome,
) -> Result<(), Error> {
    for prefix in ["raw/", "failed/"] {
        for meta in store.list(prefix).await? {
            let Some(object) = store.get(&meta.key).await? else { continue };
            let Ok(text) = shared::storage::gunzip(&object.body) else {
                tracing::warn!(key = %meta.key, "not gzip; skipped by the erasure");
                continue;
            };
            let text = String::from_utf8_lossy(&text);
            let (mut kept, mut removed) = (Vec::new(), 0);
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let theirs = match serde_json::from_str::<CanonicalEvent>(line) {
                    Ok(event) => {
                        event.identifier_keys().any(|k| erasure.keys.contains(&k))
                            || event.user_id.as_ref().is_some_and(|u| erasure.keys.contains(&format!("user_id:{u}")))
                    }
                    Err(_) => {
                        needles.iter().any(|n| names(line, n))
                            || erasure.profiles.iter().any(|p| line.contains(p.as_str()))
                    }
                };
                if theirs {
                    removed += 1;
                } else {
                    kept.push(line);
                }
            }
            if removed == 0 {
                continue;
            }
            if prefix == "raw/" && !meta.key.starts_with("failed/") {
                outcome.events += removed;
            } else {
                outcome.failed_lines += removed;
            }
            outcome.objects += 1;
            if kept.is_empty() {
                store.delete(&meta.key).await?;
            } else {
                let mut ndjson = kept.join("\n");
                ndjson.push('\n');
                let body = shared::storage::gzip(ndjson.as_bytes());
                let options = PutOptions { content_type: Some("application/x-ndjson+gzip"), ..PutOptions::json() };
                store.put(&meta.key, body, options).await?;
            }
        }
    }
    // The lake: parts whose bloom filters rule the person out are not read past their footer.
    for part in crate::lake::parts(store).await? {
        if crate::lake::find(store, &part, &erasure.keys).await?.is_empty() {
            continue;
        }
        let part = part.key;
        let Some(object) = store.get(&part).await? else { continue };
        let Some(scrubbed) = crate::lake::without(object.body.into(), &erasure.keys)? else { continue };
        outcome.events += scrubbed.removed;
        outcome.objects += 1;
        match scrubbed.rest {
            None => store.delete(&part).await?,
            Some(bytes) => {
                store.put(&part, bytes, crate::lake::part_options()).await?;
            }
        }
    }
    Ok(())
}

/// Removes the person from the identity graph and profiles in one commit that folds every delta into new
/// shard objects (so no current object holds them); returns the state version after it.
async fn erase_state<S: ObjectStore + Clone>(
    store: &S,
    erasure: &Erasure,
    outcome: &mut super::Outcome,
) -> Result<u64, Error> {
    let mut attempts = crate::state::Attempts::new(&Settings::default(), "the erasure");
    loop {
        attempts.next().await?;
        let mut txn = Transaction::begin(store, ShardCounts::default()).await?.with_compaction(Compaction::always());
        for key in &erasure.keys {
            txn.remove_identifier(key).await?;
        }
        txn.remove_profiles(&erasure.profiles).await?;
        if !txn.is_dirty() {
            return Ok(txn.manifest().version);
        }
        if let Some(stats) = crate::state::fenced(txn.commit().await)? {
            outcome.objects += stats.shards_written;
            return Ok(stats.version);
        }
    }
}

/// Removes messages about the person from the delivery outbox (deletion notices stay).
async fn scrub_outbox<S: ObjectStore>(
    store: &S,
    profiles: &BTreeSet<String>,
    outcome: &mut super::Outcome,
) -> Result<(), Error> {
    for meta in store.list(OUTBOX).await? {
        let Some(object) = store.get(&meta.key).await? else { continue };
        let Ok(messages) = shared::storage::decode_ndjson_gz::<Message>(&object.body) else { continue };
        let before = messages.len();
        let kept: Vec<Message> = messages
            .into_iter()
            .filter(|m| !profiles.contains(&m.item.profile.id) || matches!(m.item.detail, Detail::ProfileDeleted {}))
            .collect();
        if kept.len() == before {
            continue;
        }
        outcome.objects += 1;
        if kept.is_empty() {
            store.delete(&meta.key).await?;
        } else {
            let options = PutOptions { content_type: Some("application/x-ndjson+gzip"), ..PutOptions::json() };
            store.put(&meta.key, shared::storage::encode_ndjson_gz(&kept), options).await?;
        }
    }
    Ok(())
}
