//! `/v1/profiles/{identifier}`: the unified profile behind any identifier, its merge history, and unlinking.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use shared::access::Scope;
use shared::identity::identifier_key;
use utoipa::ToSchema;

use super::disclosure::Disclosure;
use super::error::ErrorBody;
use super::{Api, ApiError, Change, json_body, parse_body};
use crate::state::{StoredProfile, lookup};
use crate::storage::ObjectStore;

/// A unified profile.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProfileView {
    /// The profile's id (`prof_…`); ids of profiles merged into it redirect here.
    id: String,
    /// Its identifiers, as the graph keys them (`user_id:u1`; emails and phones as `email:<sha256>`).
    identities: Vec<String>,
    /// Profile ids merged into this one.
    merged_ids: Vec<String>,
    /// Traits by name. Personal ones (email, phone, name, address, those listed in `config/profiles.json`
    /// `personal`) are masked (`j***@example.com`) unless the key has `pii:read`.
    #[schema(value_type = Object)]
    traits: Map<String, Value>,
    /// The traits masked in this answer (the key lacks `pii:read`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    masked: Vec<String>,
    /// Tag values by tag id, as of `tagsAt`.
    #[schema(value_type = Object)]
    tags: Map<String, Value>,
    /// When the tags were computed.
    tags_at: Option<String>,
    /// Audiences it is in now.
    audiences: Vec<AudienceView>,
    /// Groups (accounts) it joined.
    groups: Vec<String>,
    /// Earliest event time.
    first_seen: Option<String>,
    /// Latest event time.
    last_seen: Option<String>,
    /// Event counts by event name.
    events: BTreeMap<String, EventCountView>,
}

/// Membership of one audience.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AudienceView {
    /// The audience's id.
    id: String,
    /// Since when (ISO 8601).
    since: String,
}

/// How often, and when first and last, a profile did one event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventCountView {
    /// How many.
    count: u64,
    /// The first one's time.
    first_at: Option<String>,
    /// The last one's time.
    last_at: Option<String>,
}

/// A profile's identity history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HistoryView {
    /// The profile's id.
    id: String,
    /// Oldest first: creation, links, merges (with the absorbed id), refusals, unlinks and splits.
    entries: Vec<HistoryEntry>,
}

/// One line of a profile's identity history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HistoryEntry {
    /// Event (or request) time.
    at: String,
    /// The event that caused it, or the operator request's id.
    message_id: String,
    /// What happened: `{"type": "merged", "absorbed": "prof_…", "via": "email:…"}`, `created`, `linked`,
    /// `merge_refused`, `link_refused`, `unlinked`, `split_off`, `split_from`.
    #[schema(value_type = Object)]
    kind: Value,
}

/// Unlinking an identifier from a profile.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UnlinkRequest {
    /// The identifier to remove (`type:value`, as for lookups).
    identifier: String,
    /// Why (e.g. a ticket id): kept in the profile's history and the audit log.
    #[serde(default)]
    reason: Option<String>,
}

/// What an unlink did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UnlinkResult {
    /// The profile that kept its id.
    profile: String,
    /// Profiles split off because nothing connected them to it any more.
    split_off: Vec<String>,
}

/// The stored profile behind `identifier`, or the answer to give instead (400, 404, or 308 to the survivor
/// for an absorbed profile id, keeping `suffix`).
pub(crate) async fn resolve<S: ObjectStore + Clone>(
    api: &Api<S>,
    identifier: &str,
    suffix: &str,
) -> Result<Result<StoredProfile, Response>, ApiError> {
    let key = identifier_key(identifier).map_err(ApiError::invalid)?;
    let Some(stored) = lookup(api.store(), &key).await? else {
        return Err(ApiError::not_found(format!("no profile has the identifier {identifier:?}")));
    };
    if shared::identity::is_profile_id(&key) && stored.node.id != key {
        let location = format!("/v1/profiles/{}{suffix}", stored.node.id);
        let body = json!({"mergedInto": stored.node.id});
        let mut response = (StatusCode::PERMANENT_REDIRECT, json_body(&body)).into_response();
        if let Ok(value) = location.parse() {
            response.headers_mut().insert(header::LOCATION, value);
        }
        return Ok(Err(response));
    }
    Ok(Ok(stored))
}

fn view(stored: StoredProfile, disclosure: &Disclosure) -> ProfileView {
    let (node, profile) = (stored.node, stored.profile);
    let time = |t: Option<shared::time::UtcTime>| t.map(|t| t.to_string());
    let mut traits = profile.traits.into_iter().map(|(k, v)| (k, v.value)).collect();
    let masked = disclosure.values(&mut traits);
    ProfileView {
        id: node.id,
        identities: node.identities.into_iter().collect(),
        merged_ids: profile.merged_ids.into_iter().collect(),
        traits,
        masked,
        tags: profile.tags.into_iter().collect(),
        tags_at: time(profile.tags_at),
        audiences: profile
            .memberships
            .into_iter()
            .filter(|(_, m)| m.member)
            .map(|(id, m)| AudienceView {
                id,
                since: shared::time::UtcTime::from_unix_millis(m.since).map(|t| t.to_string()).unwrap_or_default(),
            })
            .collect(),
        groups: profile.groups.into_iter().collect(),
        first_seen: time(profile.first_seen),
        last_seen: time(profile.last_seen),
        events: profile
            .events
            .into_iter()
            .map(|(name, s)| {
                (name, EventCountView { count: s.count, first_at: time(s.first_at), last_at: time(s.last_at) })
            })
            .collect(),
    }
}

/// The unified profile behind any of its identifiers.
#[utoipa::path(
    get,
    path = "/v1/profiles/{identifier}",
    tag = "profiles",
    params(("identifier" = String, Path, description = "`type:value` (`user_id:u1`, `email:jane@example.com`, `anonymous_id:…`, `phone:+4930…`; emails and phones may be given as their SHA-256) or a profile id; an absorbed profile id answers 308 to the survivor")),
    responses(
        (status = 200, description = "The profile", body = ProfileView),
        (status = 308, description = "The profile id was merged into another; `Location` names it"),
        (status = 400, description = "Not an identifier", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `profiles:read`", body = ErrorBody),
        (status = 404, description = "No profile has this identifier", body = ErrorBody),
    ),
    security(("apiKey" = ["profiles:read"]))
)]
pub(crate) async fn get<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ProfilesRead).await?;
    let disclosure = Disclosure::for_caller(&api, &headers).await?;
    Ok(match resolve(&api, &identifier, "").await? {
        Ok(stored) => {
            let what = if disclosure.reveals() { "profile+pii" } else { "profile" };
            audit_read(&api, actor, what, &stored.node.id, &identifier).await?;
            json_body(&view(stored, &disclosure)).into_response()
        }
        Err(redirect) => redirect,
    })
}

/// Records a read of a person's data in the audit log (`profile.read`): who, which profile, which view, and
/// the identifier asked by — the profile id and the identifier hashed, so that the append-only log holds
/// nothing of a person erased later. The read is not answered unless its record is stored.
pub(crate) async fn audit_read<S: ObjectStore + Clone>(
    api: &Api<S>,
    actor: shared::access::Actor,
    view: &str,
    profile: &str,
    asked_by: &str,
) -> Result<(), ApiError> {
    let key = crate::suppression::hash_key(api.store()).await?;
    let detail = serde_json::json!({"view": view, "by": key.hash(asked_by)});
    let change = super::Change { detail: Some(detail), ..Default::default() };
    api.audit(actor, "profile.read", &format!("profile:{}", key.hash(profile)), change).await
}

/// A profile's identity history: creation, links, merges, refusals, unlinks and splits.
#[utoipa::path(
    get,
    path = "/v1/profiles/{identifier}/history",
    tag = "profiles",
    params(("identifier" = String, Path, description = "As for the profile lookup")),
    responses(
        (status = 200, description = "The history, oldest first", body = HistoryView),
        (status = 308, description = "The profile id was merged into another; `Location` names it"),
        (status = 400, description = "Not an identifier", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `profiles:read`", body = ErrorBody),
        (status = 404, description = "No profile has this identifier", body = ErrorBody),
    ),
    security(("apiKey" = ["profiles:read"]))
)]
pub(crate) async fn history<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ProfilesRead).await?;
    let stored = match resolve(&api, &identifier, "/history").await? {
        Ok(stored) => stored,
        Err(redirect) => return Ok(redirect),
    };
    audit_read(&api, actor, "history", &stored.node.id, &identifier).await?;
    let entries = stored
        .node
        .audit
        .into_iter()
        .map(|e| HistoryEntry {
            at: e.at.to_string(),
            message_id: e.message_id,
            kind: serde_json::to_value(&e.kind).unwrap_or(Value::Null),
        })
        .collect();
    Ok(json_body(&HistoryView { id: stored.node.id, entries }).into_response())
}

/// Removes an identifier from a profile; identifiers no longer connected to the rest split off into new
/// profiles (the identity graph's split). Recorded in the profile's history and the audit log.
#[utoipa::path(
    post,
    path = "/v1/profiles/{identifier}/unlink",
    tag = "profiles",
    params(("identifier" = String, Path, description = "The profile, by any of its identifiers or its id")),
    request_body = UnlinkRequest,
    responses(
        (status = 200, description = "Unlinked", body = UnlinkResult),
        (status = 308, description = "The profile id was merged into another; `Location` names it"),
        (status = 400, description = "Bad body or identifier", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "The key lacks `profiles:write`", body = ErrorBody),
        (status = 404, description = "No such profile, or the identifier is not on it", body = ErrorBody),
        (status = 409, description = "The identifier is the profile's only one", body = ErrorBody),
    ),
    security(("apiKey" = ["profiles:write"]))
)]
pub(crate) async fn unlink<S: ObjectStore + Clone>(
    State(api): State<Arc<Api<S>>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = api.authorize(&headers, Scope::ProfilesWrite).await?;
    let request: UnlinkRequest = parse_body(&body)?;
    let stored = match resolve(&api, &identifier, "/unlink").await? {
        Ok(stored) => stored,
        Err(redirect) => return Ok(redirect),
    };
    let key = identifier_key(&request.identifier).map_err(ApiError::invalid)?;
    if !stored.node.identities.contains(&key) {
        return Err(ApiError::not_found(format!(
            "{:?} is not an identifier of {}",
            request.identifier, stored.node.id
        )));
    }
    if stored.node.identities.len() == 1 {
        return Err(ApiError::conflict(format!(
            "{:?} is the only identifier of {}; delete the person instead",
            request.identifier, stored.node.id
        )));
    }
    let reason = request.reason.filter(|r| !r.trim().is_empty()).unwrap_or_else(|| "api-unlink".to_string());
    if reason.len() > 200 {
        return Err(ApiError::invalid("reason: at most 200 characters"));
    }
    let config = crate::snapshot::RunConfig::load(api.store()).await?;
    let parts = crate::ingest::unlink(api.store(), &key, &reason, &config, crate::config::now()?).await?;
    let Some((kept, split)) = parts.split_first() else {
        return Err(ApiError::not_found(format!("no profile has {:?} any more", request.identifier)));
    };
    let result = UnlinkResult { profile: kept.clone(), split_off: split.to_vec() };
    // The append-only log keeps only keyed hashes of the person: identifier and profile ids alike.
    let hash = crate::suppression::hash_key(api.store()).await?;
    let split_off: Vec<String> = result.split_off.iter().map(|id| hash.hash(id)).collect();
    let detail = json!({"identifier": hash.hash(&key), "reason": reason, "splitOff": split_off});
    api.audit(
        actor,
        "profile.unlink",
        &format!("profile:{}", hash.hash(kept)),
        Change { detail: Some(detail), ..Change::default() },
    )
    .await?;
    Ok(json_body(&result).into_response())
}
