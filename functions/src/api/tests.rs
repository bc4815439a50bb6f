//! The router, called without a socket on the folder store.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use serde_json::{Value, json};
use shared::access::Scope;
use shared::ids::Entropy;
use shared::time::UtcTime;
use tower::ServiceExt as _;

use super::*;
use crate::ingest::ingest;
use crate::snapshot::RunConfig;
use crate::storage::{FsStore, PutOptions};
use crate::testing::put_batch;

fn now() -> UtcTime {
    UtcTime::parse("2026-11-29T12:00:00Z").unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: FsStore,
    router: Router,
    admin: String,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let admin = key(&store, "bootstrap", &[Scope::Admin]).await;
        let router = router(Api::new(store.clone()));
        Self { _dir: dir, store, router, admin }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
        let response = self.router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 10 << 20).await.unwrap();
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (parts.status, parts.headers, value)
    }

    async fn get(&self, uri: &str, key: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.call("GET", uri, Some(key), None).await;
        (status, body)
    }

    /// Collects `events` as one request received `seed` seconds after [`now`], and ingests it.
    async fn ingest(&self, seed: u8, events: Value) {
        let received = UtcTime::from_unix_millis(now().unix_millis() + i64::from(seed) * 1000).unwrap();
        let object = put_batch(&self.store, seed, events, received).await;
        ingest(&self.store, &[object], &RunConfig::default(), now()).await.unwrap();
    }
}

/// A key made the way `cdp api-key create` makes the first one.
async fn key(store: &FsStore, name: &str, scopes: &[Scope]) -> String {
    let scopes: BTreeSet<Scope> = scopes.iter().copied().collect();
    let mut entropy = Entropy::from_seed(crate::config::random_seed().unwrap());
    let new = update_keys(store, |keys| {
        keys.create(name, scopes.clone(), "test", now(), &mut entropy).map_err(ApiError::invalid)
    })
    .await
    .unwrap();
    new.key
}

fn ev(kind: &str, msg: &str, sec: u32, fields: Value) -> Value {
    let mut e = json!({"type": kind, "messageId": msg, "timestamp": format!("2026-11-29T11:00:{sec:02}Z")});
    for (k, v) in fields.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

#[tokio::test]
async fn every_identifier_and_an_absorbed_id_give_the_same_profile() {
    let f = Fixture::new().await;
    f.ingest(
        1,
        json!([
            ev("page", "m1", 1, json!({"anonymousId": "a1", "name": "Home"})),
            ev(
                "identify",
                "m2",
                2,
                json!({"anonymousId": "a1", "userId": "u1", "traits": {"email": "Jane@Example.com", "plan": "pro"}})
            ),
            ev("track", "m3", 3, json!({"anonymousId": "a2", "event": "Viewed"})),
        ]),
    )
    .await;
    let (status, second) = f.get("/v1/profiles/anonymous_id:a2", &f.admin).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let absorbed = second["id"].as_str().unwrap().to_string();
    // The second device logs in: its profile merges into the first.
    f.ingest(2, json!([ev("identify", "m4", 4, json!({"anonymousId": "a2", "userId": "u1"}))])).await;

    let (status, profile) = f.get("/v1/profiles/user_id:u1", &f.admin).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    let id = profile["id"].as_str().unwrap();
    assert_ne!(id, absorbed);
    assert_eq!(profile["traits"]["plan"], "pro");
    assert_eq!(profile["mergedIds"], json!([absorbed]));
    assert_eq!(profile["events"]["Viewed"]["count"], 1);
    for identifier in
        ["anonymous_id:a1", "anonymous_id:a2", "email:jane@example.com", "email:%20JANE@example.com%20", id]
    {
        let (status, same) = f.get(&format!("/v1/profiles/{identifier}"), &f.admin).await;
        assert_eq!(status, StatusCode::OK, "{identifier}: {same}");
        assert_eq!(same, profile, "{identifier}");
    }
    // The absorbed id redirects to the survivor (308, so a POST stays a POST).
    let (status, headers, body) = f.call("GET", &format!("/v1/profiles/{absorbed}"), Some(&f.admin), None).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], format!("/v1/profiles/{id}"));
    assert_eq!(body["mergedInto"], id);
    let (status, headers, _) = f.call("GET", &format!("/v1/profiles/{absorbed}/history"), Some(&f.admin), None).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], format!("/v1/profiles/{id}/history"));

    let (status, history) = f.get(&format!("/v1/profiles/{id}/history"), &f.admin).await;
    assert_eq!(status, StatusCode::OK);
    let merged = history["entries"].as_array().unwrap().iter().find(|e| e["kind"]["type"] == "merged").unwrap();
    assert_eq!(merged["kind"]["absorbed"], absorbed.as_str());
    assert_eq!(merged["messageId"], "m4");

    let (status, missing) = f.get("/v1/profiles/user_id:nobody", &f.admin).await;
    assert_eq!((status, missing["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, bad) = f.get("/v1/profiles/nonsense", &f.admin).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["error"]["message"].as_str().unwrap().contains("<type>:<value>"), "{bad}");
}

#[tokio::test]
async fn keys_without_the_scope_are_refused_and_bad_credentials_are_401() {
    let f = Fixture::new().await;
    f.ingest(1, json!([ev("identify", "m1", 1, json!({"userId": "u1"}))])).await;
    let config_only = key(&f.store, "config reader", &[Scope::ConfigRead]).await;
    let reader = key(&f.store, "profile reader", &[Scope::ProfilesRead]).await;

    assert_eq!(f.get("/v1/profiles/user_id:u1", &reader).await.0, StatusCode::OK);
    let (status, body) = f.get("/v1/profiles/user_id:u1", &config_only).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"]["message"].as_str().unwrap().contains("profiles:read"), "{body}");
    assert_eq!(f.get("/v1/api-keys", &reader).await.0, StatusCode::FORBIDDEN, "only admin manages keys");
    assert_eq!(f.get("/v1/audit", &reader).await.0, StatusCode::FORBIDDEN);

    let (status, headers, body) = f.call("GET", "/v1/profiles/user_id:u1", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(f.get("/v1/profiles/user_id:u1", "cdp_sk_0123456789abcdef_00").await.0, StatusCode::UNAUTHORIZED);
    let mut forged = reader.clone();
    forged.replace_range(forged.len() - 4.., "0000");
    assert_eq!(f.get("/v1/profiles/user_id:u1", &forged).await.0, StatusCode::UNAUTHORIZED);

    // A source's write key, as SDKs send it (Basic) and as a bearer token.
    let (_, write_key) = shared::source::new_source("web", "Web", &mut Entropy::from_seed([3; 32]));
    let (status, body) = f.get("/v1/profiles/user_id:u1", &write_key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"]["message"].as_str().unwrap().contains("write key"), "{body}");
    let request = Request::get("/v1/profiles/user_id:u1")
        .header("authorization", format!("Basic {}", base64_of(&format!("{write_key}:"))))
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.router.clone().oneshot(request).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Revoked through the API: refused at once.
    let id = reader.split('_').nth(2).unwrap();
    let (status, _, revoked) = f.call("DELETE", &format!("/v1/api-keys/{id}"), Some(&f.admin), None).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revokedAt"].is_string());
    let (status, body) = f.get("/v1/profiles/user_id:u1", &reader).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"]["message"].as_str().unwrap().contains("revoked"), "{body}");
    assert_eq!(f.call("DELETE", "/v1/api-keys/ffffffffffffffff", Some(&f.admin), None).await.0, StatusCode::NOT_FOUND);
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn keys_are_created_once_listed_without_secrets_and_audited() {
    let f = Fixture::new().await;
    let (status, _, created) = f
        .call(
            "POST",
            "/v1/api-keys",
            Some(&f.admin),
            Some(json!({"name": "personalization", "scopes": ["profiles:read"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let new_key = created["key"].as_str().unwrap().to_string();
    assert_eq!(f.get("/v1/api-keys", &new_key).await.0, StatusCode::FORBIDDEN);
    let (status, listed) = f.get("/v1/api-keys", &f.admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);
    let text = listed.to_string();
    assert!(!text.contains(&new_key[24..]) && !text.contains("sha256"), "no secret or hash listed: {text}");
    let stored = String::from_utf8(f.store.get(shared::access::ApiKeys::KEY).await.unwrap().unwrap().body).unwrap();
    assert!(!stored.contains(&new_key[24..]), "only the hash is stored");

    let (status, _, bad) =
        f.call("POST", "/v1/api-keys", Some(&f.admin), Some(json!({"name": "x", "scopes": ["root"]}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["error"]["message"].as_str().unwrap().contains("unknown scope \"root\""), "{bad}");
    let (status, _, bad) = f.call("POST", "/v1/api-keys", Some(&f.admin), Some(json!({"name": "x"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert!(bad["error"]["message"].as_str().unwrap().contains("scopes"), "{bad}");

    let id = created["apiKey"]["id"].as_str().unwrap();
    assert_eq!(f.call("DELETE", &format!("/v1/api-keys/{id}"), Some(&f.admin), None).await.0, StatusCode::OK);
    let (status, log) = f.get("/v1/audit", &f.admin).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let actions: Vec<&str> = log["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["api_key.revoke", "api_key.create"], "newest first");
    let revoke = &log["records"][0];
    assert_eq!(revoke["target"], format!("api_key:{id}"));
    assert!(revoke["before"]["revokedAt"].is_null() && revoke["after"]["revokedAt"].is_string(), "{revoke}");
    assert_eq!(revoke["actor"]["kind"], "api_key");
    assert!(!log.to_string().contains(&new_key[24..]), "the audit log holds no secret");

    // Filters and pages.
    let (_, only) = f.get("/v1/audit?action=api_key.create", &f.admin).await;
    assert_eq!(only["records"].as_array().unwrap().len(), 1);
    let (_, page) = f.get("/v1/audit?limit=1", &f.admin).await;
    assert_eq!(page["records"][0]["action"], "api_key.revoke");
    let cursor = page["nextCursor"].as_str().unwrap();
    let (_, next) = f.get(&format!("/v1/audit?limit=1&cursor={cursor}"), &f.admin).await;
    assert_eq!(next["records"][0]["action"], "api_key.create");
    assert!(next["nextCursor"].is_null(), "{next}");
    assert_eq!(f.get("/v1/audit?limit=0", &f.admin).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(f.get("/v1/audit?limit=x", &f.admin).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unlink_splits_the_profile_and_is_audited_without_the_identifier() {
    let f = Fixture::new().await;
    f.ingest(
        1,
        json!([
            ev("identify", "m1", 1, json!({"anonymousId": "tablet", "userId": "u1"})),
            ev("identify", "m2", 2, json!({"anonymousId": "tablet", "traits": {"email": "jane@example.com"}})),
        ]),
    )
    .await;
    let writer = key(&f.store, "support", &[Scope::ProfilesWrite]).await;
    let body = json!({"identifier": "anonymous_id:tablet", "reason": "TICKET-7"});
    let (status, _, denied) = f.call("POST", "/v1/profiles/user_id:u1/unlink", Some(&f.admin), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{denied}");
    let (status, _, result) = f.call("POST", "/v1/profiles/user_id:u1/unlink", Some(&writer), Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    let kept = result["profile"].as_str().unwrap();
    let split = result["splitOff"][0].as_str().unwrap();
    // Only the tablet connected the user id and the email: they are two profiles now, and the tablet's
    // identifier belongs to neither.
    let (_, person) = f.get("/v1/profiles/user_id:u1", &f.admin).await;
    let (_, email) = f.get("/v1/profiles/email:jane@example.com", &f.admin).await;
    let mut ids = [person["id"].as_str().unwrap(), email["id"].as_str().unwrap()];
    ids.sort();
    let mut expected = [kept, split];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(f.get("/v1/profiles/anonymous_id:tablet", &f.admin).await.0, StatusCode::NOT_FOUND);
    // Again: the identifier is not on the profile any more; and a profile's only identifier stays.
    let (status, _, _) = f.call("POST", "/v1/profiles/user_id:u1/unlink", Some(&writer), Some(body)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let only = json!({"identifier": "user_id:u1"});
    let (status, _, body) = f.call("POST", "/v1/profiles/user_id:u1/unlink", Some(&writer), Some(only)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (_, log) = f.get("/v1/audit?action=profile.unlink", &f.admin).await;
    let record = &log["records"][0];
    let key = crate::suppression::hash_key(&f.store).await.unwrap();
    assert_eq!(record["target"], format!("profile:{}", key.hash(kept)));
    assert!(!log.to_string().contains(kept) && !log.to_string().contains(split), "profile ids only hashed: {log}");
    assert_eq!(record["detail"]["reason"], "TICKET-7");
    assert_eq!(record["detail"]["identifier"], key.hash("anonymous_id:tablet"));
    assert!(!log.to_string().contains("tablet"), "{log}");
}

#[tokio::test]
async fn every_documented_route_exists_and_needs_a_key() {
    let f = Fixture::new().await;
    let (status, _, document) = f.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 16, "{paths:?}");
    for (path, operations) in paths {
        let uri = path.replace("{identifier}", "user_id:u1").replace("{id}", "web").replace("{webhook_id}", "msg_1");
        for method in operations.as_object().unwrap().keys() {
            if operations[method]["security"] == json!([{}]) {
                continue; // Signed by the partner instead (feedback); tested in tests/tests/activation.rs.
            }
            let (status, _, body) = f.call(&method.to_uppercase(), &uri, None, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            let documented = &operations[method]["responses"]["401"];
            assert!(documented.is_object(), "{method} {path} documents its 401");
        }
    }
    assert!(document["components"]["securitySchemes"]["apiKey"].is_object());
    let (status, _, body) = f.call("GET", "/v1/nothing", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _, body) = f.call("PUT", "/v1/api-keys", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_c2VjcmV0LXR3by0xMjM0NTY3ODkwMTIzNA==";

#[tokio::test]
async fn definitions_are_checked_against_the_whole_configuration_and_audited() {
    let f = Fixture::new().await;
    let writer = key(&f.store, "config", &[Scope::ConfigWrite, Scope::ConfigRead]).await;
    let reader = key(&f.store, "viewer", &[Scope::ConfigRead]).await;
    let tag =
        json!({"status": "active", "kind": "statistical", "filter": {"types": ["page"]}, "aggregate": {"op": "count"}});
    assert_eq!(f.call("PUT", "/v1/tags/views", Some(&reader), Some(tag.clone())).await.0, StatusCode::FORBIDDEN);
    let (status, _, created) = f.call("PUT", "/v1/tags/views", Some(&writer), Some(tag.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["definition"]["id"], "views");
    let (status, _, same) = f.call("PUT", "/v1/tags/views", Some(&writer), Some(tag.clone())).await;
    assert_eq!((status, &same["definition"]["version"]), (StatusCode::OK, &json!(1)), "unchanged: same version");

    // An audience on a tag that does not exist: refused, naming it; on the tag: accepted.
    let audience =
        |tag: &str| json!({"status": "active", "when": {"field": format!("tag:{tag}"), "op": "gte", "value": 1}});
    let (status, _, bad) = f.call("PUT", "/v1/audiences/viewers", Some(&writer), Some(audience("nope"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["error"]["message"].as_str().unwrap().contains("nope"), "{bad}");
    assert_eq!(
        f.call("PUT", "/v1/audiences/viewers", Some(&writer), Some(audience("views"))).await.0,
        StatusCode::CREATED
    );
    let (status, _, in_use) = f.call("DELETE", "/v1/tags/views", Some(&writer), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{in_use}");
    let (status, _, bad) = f.call("PUT", "/v1/tags/other", Some(&writer), Some(json!({"id": "views"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (status, _, bad) = f.call("PUT", "/v1/tags/broken", Some(&writer), Some(json!({"kind": "statistical"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["error"]["message"].as_str().unwrap().contains("config/tags.json"), "{bad}");

    // A new computation is a new version (backfilled while the old serves).
    let mut changed = tag.clone();
    changed["filter"] = json!({"types": ["page", "screen"]});
    let (_, _, updated) = f.call("PUT", "/v1/tags/views", Some(&writer), Some(changed)).await;
    assert_eq!(updated["definition"]["version"], 2, "{updated}");
    let stored: Value = serde_json::from_slice(&f.store.get("config/tags.json").await.unwrap().unwrap().body).unwrap();
    assert_eq!(stored[0]["version"], 2);
    let (status, listed) = f.get("/v1/tags", &reader).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["tags"].as_array().unwrap().len(), 1);
    assert_eq!(f.get("/v1/audiences/viewers", &reader).await.1["definition"]["id"], "viewers");
    assert_eq!(f.get("/v1/audiences/nobody", &reader).await.0, StatusCode::NOT_FOUND);

    assert_eq!(f.call("DELETE", "/v1/audiences/viewers", Some(&writer), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(f.call("DELETE", "/v1/tags/views", Some(&writer), None).await.0, StatusCode::NO_CONTENT);
    let (_, log) = f.get("/v1/audit?limit=500", &f.admin).await;
    let actions: Vec<&str> = log["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["tag.delete", "audience.delete", "tag.update", "audience.create", "tag.update", "tag.create"]);
    let update = &log["records"][2];
    assert_eq!((&update["before"]["version"], &update["after"]["version"]), (&json!(1), &json!(2)));
}

#[tokio::test]
async fn destination_secrets_are_write_only_and_rotate() {
    let f = Fixture::new().await;
    let destination = json!({"url": "https://partner.example/hook", "secret": SECRET, "send": {"events": [{"events": ["Order Completed"]}]}});
    let (status, _, created) = f.call("PUT", "/v1/destinations/crm", Some(&f.admin), Some(destination)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["definition"].get("secret").is_none(), "{created}");
    let (_, listed) = f.get("/v1/destinations", &f.admin).await;
    assert!(!listed.to_string().contains(&SECRET[6..]), "{listed}");
    assert_eq!(listed["destinations"][0]["delivery"]["disabled"], false);

    // Without a secret: the stored one stays. With a new one: the old signs beside it for a day.
    let renamed = json!({"url": "https://partner.example/v2", "send": {"events": [{"events": ["Order Completed"]}]}});
    assert_eq!(f.call("PUT", "/v1/destinations/crm", Some(&f.admin), Some(renamed)).await.0, StatusCode::OK);
    // Secrets live apart from the definitions: the configuration never holds one.
    let read = |f: &Fixture, key: &'static str| {
        let store = f.store.clone();
        async move { serde_json::from_slice::<Value>(&store.get(key).await.unwrap().unwrap().body).unwrap() }
    };
    let config = read(&f, "config/destinations.json").await;
    assert!(!config.to_string().contains("whsec_"), "{config}");
    assert_eq!(read(&f, "secrets/v1/destinations.json").await["crm"]["secret"], SECRET);
    let rotated = json!({"url": "https://partner.example/v2", "secret": NEW_SECRET, "send": {"events": [{"events": ["Order Completed"]}]}});
    assert_eq!(f.call("PUT", "/v1/destinations/crm", Some(&f.admin), Some(rotated)).await.0, StatusCode::OK);
    let file = read(&f, "secrets/v1/destinations.json").await;
    assert_eq!(file["crm"]["secret"], NEW_SECRET);
    assert_eq!(file["crm"]["previousSecrets"][0]["secret"], SECRET);
    let until = file["crm"]["previousSecrets"][0]["until"].as_i64().unwrap();
    let now = crate::config::now().unwrap().unix_millis();
    assert!((now + 23 * 3600 * 1000..=now + 25 * 3600 * 1000).contains(&until), "{until}");

    // Loopback and private addresses are refused in the cloud.
    let local = json!({"url": "http://127.0.0.1:9/hook", "secret": SECRET, "send": {"events": [{"events": ["x"]}]}});
    let (status, _, refused) = f.call("PUT", "/v1/destinations/local", Some(&f.admin), Some(local)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(refused["error"]["message"].as_str().unwrap().contains("url"), "{refused}");

    let (_, log) = f.get("/v1/audit", &f.admin).await;
    assert!(!log.to_string().contains(&SECRET[6..]) && !log.to_string().contains(&NEW_SECRET[6..]), "{log}");
    assert_eq!(log["records"].as_array().unwrap().len(), 3);
    assert_eq!(log["records"][0]["detail"]["secretRotated"], true, "{log}");
    // A new destination without a secret is refused; one written before secrets were kept apart (inline)
    // keeps signing, and loses it from the configuration at the next write.
    let bare = json!({"url": "https://partner.example/h", "send": {"events": [{"events": ["x"]}]}});
    let (status, _, refused) = f.call("PUT", "/v1/destinations/nosecret", Some(&f.admin), Some(bare)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(refused.to_string().contains("needs a signing secret"), "{refused}");
    let mut legacy = read(&f, "config/destinations.json").await;
    legacy.as_array_mut().unwrap().push(json!({"id": "old", "url": "https://old.partner.example/h",
        "secret": NEW_SECRET, "send": {"events": [{"events": ["x"]}]}}));
    f.store.put("config/destinations.json", legacy.to_string().into_bytes(), PutOptions::json()).await.unwrap();
    let signing = crate::activation::secrets::load_destinations(&f.store).await.unwrap();
    assert!(signing.iter().all(|d| d.secret.is_some()), "inline secrets still sign");
    let renamed = json!({"url": "https://partner.example/v3", "send": {"events": [{"events": ["Order Completed"]}]}});
    assert_eq!(f.call("PUT", "/v1/destinations/crm", Some(&f.admin), Some(renamed)).await.0, StatusCode::OK);
    assert!(!read(&f, "config/destinations.json").await.to_string().contains("whsec_"));
    assert_eq!(read(&f, "secrets/v1/destinations.json").await["old"]["secret"], NEW_SECRET);
    let signing = crate::activation::secrets::load_destinations(&f.store).await.unwrap();
    assert!(signing.iter().all(|d| d.secret.is_some()), "every destination keeps its secret");
    let (status, dead) = f.get("/v1/destinations/crm/dead-letters", &f.admin).await;
    assert_eq!((status, dead["deadLetters"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    let (status, _, _) = f.call("POST", "/v1/destinations/crm/dead-letters/msg_1/replay", Some(&f.admin), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sources_get_keys_shown_once_that_collectors_accept() {
    let f = Fixture::new().await;
    let body = json!({"name": "Web Shop", "allowedOrigins": ["https://shop.example"]});
    let (status, _, created) = f.call("POST", "/v1/sources", Some(&f.admin), Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["source"]["id"], "web-shop");
    let key = created["writeKey"].as_str().unwrap().to_string();
    let sources = || async { crate::collect::load_sources(&f.store).await.unwrap() };
    assert_eq!(sources().await.authenticate(&key).unwrap().id, "web-shop");
    assert_eq!(f.call("POST", "/v1/sources", Some(&f.admin), Some(body)).await.0, StatusCode::CONFLICT);
    let (status, listed) = f.get("/v1/sources", &f.admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!listed.to_string().contains(&key) && !listed.to_string().contains("writeKeySha256"), "{listed}");

    let (status, _, bad) =
        f.call("PATCH", "/v1/sources/web-shop", Some(&f.admin), Some(json!({"allowedOrigins": ["ftp://x"]}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (status, _, patched) =
        f.call("PATCH", "/v1/sources/web-shop", Some(&f.admin), Some(json!({"enabled": false}))).await;
    assert_eq!((status, &patched["enabled"]), (StatusCode::OK, &json!(false)));
    assert!(sources().await.authenticate(&key).is_none(), "a disabled source's key is refused");
    f.call("PATCH", "/v1/sources/web-shop", Some(&f.admin), Some(json!({"enabled": true}))).await;

    let (status, _, rotated) = f.call("POST", "/v1/sources/web-shop/rotate-key", Some(&f.admin), None).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_key = rotated["writeKey"].as_str().unwrap();
    assert!(sources().await.authenticate(&key).is_none());
    assert!(sources().await.authenticate(new_key).is_some());
    assert_eq!(f.call("DELETE", "/v1/sources/web-shop", Some(&f.admin), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(f.call("DELETE", "/v1/sources/web-shop", Some(&f.admin), None).await.0, StatusCode::NOT_FOUND);
    let (_, log) = f.get("/v1/audit?action=source.", &f.admin).await;
    let actions: Vec<&str> = log["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["source.delete", "source.rotate_key", "source.update", "source.update", "source.create"]);
    assert!(!log.to_string().contains(new_key), "{log}");
}

#[tokio::test]
async fn webhook_sources_take_a_checked_secret_kept_apart_and_never_shown() {
    const SECRET: &str = "shpss_2f7c1b0e9a8d4c6b";
    const ROTATED: &str = "shpss_9e8d7c6b5a4f3e2d";
    let f = Fixture::new().await;
    let secrets = || async { crate::collect::load_source_secrets(&f.store).await.unwrap() };
    let missing = json!({"name": "Shop", "kind": "shopify"});
    let (status, _, problem) = f.call("POST", "/v1/sources", Some(&f.admin), Some(missing)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let stripe = json!({"name": "Billing", "kind": "stripe", "signingSecret": "not-a-stripe-secret"});
    let (status, _, problem) = f.call("POST", "/v1/sources", Some(&f.admin), Some(stripe)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem.to_string().contains("whsec_"), "{problem}");
    let unmapped = json!({"name": "CRM", "kind": "webhook", "signingSecret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"});
    let (status, _, problem) = f.call("POST", "/v1/sources", Some(&f.admin), Some(unmapped)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem.to_string().contains("needs a mapping"), "{problem}");
    assert_eq!(secrets().await.get("crm"), None, "a refused source leaves no secret behind");

    let body = json!({"name": "Shop", "id": "shop", "kind": "shopify", "signingSecret": SECRET});
    let (status, _, created) = f.call("POST", "/v1/sources", Some(&f.admin), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (created["source"]["kind"].as_str(), created["source"]["webhookPath"].as_str()),
        (Some("shopify"), Some("/v1/webhooks/shop"))
    );
    assert!(created.get("writeKey").is_none(), "a webhook source authenticates by signature: {created}");
    assert_eq!(secrets().await.get("shop"), Some(SECRET));
    let stored = f.store.get("config/sources.json").await.unwrap().unwrap().body;
    assert!(!String::from_utf8_lossy(&stored).contains(SECRET), "kept apart");

    let http = json!({"name": "Web"});
    assert_eq!(f.call("POST", "/v1/sources", Some(&f.admin), Some(http)).await.0, StatusCode::CREATED);
    let (status, _, _) = f
        .call("PATCH", "/v1/sources/web", Some(&f.admin), Some(json!({"signingSecret": SECRET, "name": "Renamed"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an HTTP source has no secret");
    assert_eq!(f.get("/v1/sources/web", &f.admin).await.1["name"], "Web", "a refused change changes nothing");
    let (status, _, _) =
        f.call("PATCH", "/v1/sources/shop", Some(&f.admin), Some(json!({"signingSecret": ROTATED}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(secrets().await.get("shop"), Some(ROTATED));

    let (_, listed) = f.get("/v1/sources", &f.admin).await;
    let (_, log) = f.get("/v1/audit?action=source.", &f.admin).await;
    for text in [listed.to_string(), log.to_string()] {
        assert!(!text.contains(SECRET) && !text.contains(ROTATED), "{text}");
    }
    let actions: Vec<&str> = log["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"source.rotate_secret"), "{actions:?}");
    assert_eq!(f.call("DELETE", "/v1/sources/shop", Some(&f.admin), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(secrets().await.get("shop"), None, "a deleted source's secret goes with it");
}

#[tokio::test]
async fn the_timeline_pages_through_the_profile_s_events_newest_first() {
    let f = Fixture::new().await;
    f.ingest(
        1,
        json!([
            ev("page", "t1", 1, json!({"anonymousId": "a1", "name": "Home"})),
            ev("page", "o1", 2, json!({"anonymousId": "other", "name": "Home"})),
            ev("identify", "t2", 3, json!({"anonymousId": "a1", "userId": "u1"})),
        ]),
    )
    .await;
    // The first batch in the lake, the second still raw: pages run across both.
    let compacted = crate::lake::compact(&f.store, 0, UtcTime::parse("2030-01-01T00:00:00Z").unwrap()).await.unwrap();
    assert_eq!(compacted.events, 3);
    f.ingest(
        2,
        json!([
            ev("track", "t3", 4, json!({"userId": "u1", "event": "Order Completed"})),
            ev("track", "t4", 5, json!({"userId": "u1", "event": "Viewed"})),
        ]),
    )
    .await;
    let reader = key(&f.store, "config", &[Scope::ConfigRead]).await;
    let ids = |page: &Value| {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["messageId"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (status, first) = f.get("/v1/profiles/user_id:u1/events?limit=3", &f.admin).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(ids(&first), ["t4", "t3", "t2"], "newest received first");
    let cursor = first["nextCursor"].as_str().unwrap();
    assert!(cursor.starts_with("lake/events/dt="), "{cursor}");
    let (_, second) = f.get(&format!("/v1/profiles/anonymous_id:a1/events?limit=3&cursor={cursor}"), &f.admin).await;
    assert_eq!(ids(&second), ["t1"], "the other person's event is not in the timeline");
    assert!(second["nextCursor"].is_null(), "{second}");
    let (_, all) = f.get("/v1/profiles/user_id:u1/events", &f.admin).await;
    assert_eq!(ids(&all), ["t4", "t3", "t2", "t1"]);
    assert_eq!(all["events"][0]["event"], "Viewed");
    assert_eq!(f.get("/v1/profiles/user_id:u1/events?cursor=nonsense", &f.admin).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(f.get("/v1/profiles/user_id:u1/events?limit=0", &f.admin).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(f.get("/v1/profiles/user_id:u1/events", &reader).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn personal_data_needs_its_own_scope_to_leave_and_every_read_of_a_profile_is_audited() {
    let f = Fixture::new().await;
    let config = key(&f.store, "integrations", &[Scope::ConfigWrite]).await;
    let trusted = key(&f.store, "privacy officer", &[Scope::ConfigWrite, Scope::PiiSend]).await;
    let reader = key(&f.store, "support", &[Scope::ProfilesRead]).await;
    let with_pii = json!({"url": "https://partner.example/hook", "secret": SECRET, "allowPii": true,
                          "send": {"events": [{"events": ["Order Completed"]}]}, "fields": {"traits": ["email"]}});
    let (status, _, refused) = f.call("PUT", "/v1/destinations/crm", Some(&config), Some(with_pii.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(refused.to_string().contains("pii:send"), "{refused}");
    let without = json!({"url": "https://partner.example/hook", "secret": SECRET,
                         "send": {"events": [{"events": ["Order Completed"]}]}});
    assert_eq!(f.call("PUT", "/v1/destinations/crm", Some(&config), Some(without)).await.0, StatusCode::CREATED);
    assert_eq!(f.call("PUT", "/v1/destinations/crm", Some(&trusted), Some(with_pii)).await.0, StatusCode::OK);

    f.ingest(1, json!([ev("identify", "m1", 1, json!({"userId": "u1", "traits": {"email": "jane@example.com"}}))]))
        .await;
    let (status, profile) = f.get("/v1/profiles/email:jane@example.com", &reader).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(f.get("/v1/profiles/user_id:u1/history", &reader).await.0, StatusCode::OK);
    assert_eq!(f.get("/v1/profiles/user_id:u1/events", &reader).await.0, StatusCode::OK);
    let (_, log) = f.get("/v1/audit?action=profile.read", &f.admin).await;
    let records = log["records"].as_array().unwrap();
    assert_eq!(records.len(), 3, "{log}");
    let views: BTreeSet<&str> = records.iter().filter_map(|r| r["detail"]["view"].as_str()).collect();
    assert_eq!(views, BTreeSet::from(["profile", "history", "events"]));
    let key = crate::suppression::hash_key(&f.store).await.unwrap();
    let target = format!("profile:{}", key.hash(profile["id"].as_str().unwrap()));
    assert!(records.iter().all(|r| r["target"] == target), "{log}");
    assert!(!log.to_string().contains(profile["id"].as_str().unwrap()), "the profile id only hashed: {log}");
    assert!(records.iter().any(|r| r["detail"]["by"] == key.hash("email:jane@example.com")));
    assert!(!log.to_string().contains("jane"), "no identifier in clear: {log}");
}

/// Every file under `dir`, gunzipped where it is gzip, as text.
fn texts_under(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            texts_under(&path, out);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text).unwrap();
            text
        } else {
            bytes
        };
        out.push((path.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
    }
}

#[tokio::test]
async fn personal_traits_are_sealed_at_rest_and_masked_for_readers_without_pii_read() {
    let f = Fixture::new().await;
    let keys = tempfile::tempdir().unwrap();
    crate::vault::ensure(&f.store, &crate::vault::KeySource::File(keys.path().join("master.key"))).await.unwrap();
    f.store
        .put("config/profiles.json", json!({"personal": ["nationalId"]}).to_string().into_bytes(), PutOptions::json())
        .await
        .unwrap();
    let traits = json!({"email": "jane@example.com", "nationalId": "X1234567", "plan": "pro"});
    f.ingest(1, json!([ev("identify", "m1", 1, json!({"userId": "u1", "traits": traits}))])).await;
    f.ingest(2, json!([ev("track", "m2", 2, json!({"userId": "u1", "event": "Viewed"}))])).await;

    // At rest: the profile state holds neither value in clear.
    let mut files = Vec::new();
    texts_under(&f.store.root().join("state"), &mut files);
    assert!(!files.is_empty());
    for (path, text) in &files {
        assert!(!text.contains("jane@example.com") && !text.contains("X1234567"), "{path} holds them in clear");
    }

    // Keys made before the first request (the API re-reads its keys at most four times a second).
    let reader = key(&f.store, "support", &[Scope::ProfilesRead]).await;
    let officer = key(&f.store, "privacy officer", &[Scope::ProfilesRead, Scope::PiiRead]).await;
    let pii_only = key(&f.store, "nothing else", &[Scope::PiiRead]).await;
    let (status, masked) = f.get("/v1/profiles/user_id:u1", &reader).await;
    assert_eq!(status, StatusCode::OK, "{masked}");
    assert_eq!(masked["traits"], json!({"email": "j***@example.com", "nationalId": "X***", "plan": "pro"}));
    assert_eq!(masked["masked"], json!(["email", "nationalId"]));
    let (_, timeline) = f.get("/v1/profiles/user_id:u1/events", &reader).await;
    assert!(!timeline.to_string().contains("jane@example.com"), "{timeline}");
    assert!(!timeline.to_string().contains("X1234567"), "{timeline}");
    assert!(timeline.to_string().contains("j***@example.com"), "{timeline}");

    for key in [&officer, &f.admin] {
        let (status, clear) = f.get("/v1/profiles/user_id:u1", key).await;
        assert_eq!(status, StatusCode::OK, "{clear}");
        assert_eq!(clear["traits"], traits);
        assert!(clear.get("masked").is_none(), "{clear}");
        let (_, timeline) = f.get("/v1/profiles/user_id:u1/events", key).await;
        assert!(timeline.to_string().contains("jane@example.com"), "{timeline}");
    }
    // `pii:read` alone reads no profile.
    assert_eq!(f.get("/v1/profiles/user_id:u1", &pii_only).await.0, StatusCode::FORBIDDEN);
    // The audit log tells the clear reads apart.
    let (_, log) = f.get("/v1/audit?action=profile.read", &f.admin).await;
    let views: Vec<&str> =
        log["records"].as_array().unwrap().iter().filter_map(|r| r["detail"]["view"].as_str()).collect();
    assert_eq!(views.iter().filter(|v| v.ends_with("+pii")).count(), 4, "{log}");
    assert_eq!(views.iter().filter(|v| !v.ends_with("+pii")).count(), 2, "{log}");
}

#[cfg(feature = "analysis")]
#[tokio::test]
async fn sql_and_analyses_need_their_own_scope_leave_out_personal_data_without_pii_read_and_are_audited() {
    let f = Fixture::new().await;
    f.ingest(
        1,
        json!([
            ev("identify", "m1", 1, json!({"userId": "u1", "traits": {"email": "ann@example.com", "plan": "pro"}})),
            ev("track", "m2", 2, json!({"userId": "u1", "event": "Product Viewed"})),
            ev(
                "track",
                "m3",
                3,
                json!({"userId": "u1", "event": "Order Completed",
                                         "properties": {"email": "ann@example.com", "total": 20}})
            ),
            ev(
                "track",
                "m4",
                4,
                json!({"userId": "u2", "event": "Product Viewed",
                                         "properties": {"customer": {"email": "bo@example.com", "tier": "gold"}}})
            ),
        ]),
    )
    .await;
    // A tag copying a personal property, and one that does not.
    let tags = json!([
        {"id": "last_email", "status": "active", "kind": "statistical", "expected": true,
         "aggregate": {"op": "last", "property": "email"}},
        {"id": "orders", "status": "active", "kind": "statistical", "filter": {"events": ["Order Completed"]},
         "aggregate": {"op": "count"}},
        {"id": "customer_last", "status": "active", "kind": "statistical", "expected": true,
         "aggregate": {"op": "last", "property": "customer"}}
    ]);
    f.store.put("config/tags.json", tags.to_string().into_bytes(), PutOptions::json()).await.unwrap();
    crate::tagging::full_recompute(&f.store, now()).await.unwrap();
    let analyst = key(&f.store, "analyst", &[Scope::AnalysisRead]).await;
    let reader = key(&f.store, "reader", &[Scope::ProfilesRead, Scope::PiiRead]).await;
    let query = json!({"query": "SELECT p.plan, p.traits, e.properties FROM events e JOIN profiles p \
                                 ON e.profile_id = p.profile_id WHERE e.event = 'Order Completed'"});
    let (status, _, body) = f.call("POST", "/v1/sql", Some(&reader), Some(query.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("analysis:read"), "{body}");

    // Without pii:read: the plan, not the email, in traits and in properties.
    let (status, _, body) = f.call("POST", "/v1/sql", Some(&analyst), Some(query.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"][0][0], "pro");
    assert!(!body.to_string().contains("ann@example.com"), "{body}");
    assert!(body["rows"][0][2].as_str().unwrap().contains("\"total\":20"), "{body}");
    // Nor in a tag copying it, nor nested in a property; message ids are keyed hashes (a profile's id is
    // derived from its first event's, which would confirm a guessed identifier).
    let everything = json!({"query": "SELECT t.*, e.properties, e.message_id FROM events e \
                                      LEFT JOIN tags t ON e.profile_id = t.profile_id"});
    let (status, _, body) = f.call("POST", "/v1/sql", Some(&analyst), Some(everything.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = body.to_string();
    assert!(!text.contains("@example.com") && !text.contains("last_email"), "{body}");
    assert!(text.contains("\"orders\"") && text.contains("gold"), "{body}");
    assert!(!text.contains("\"m3\""), "{body}");
    // Identifiers: an email's type, not its hash (which would confirm a guessed address); with pii:read, the hash.
    let emails = json!({"query": "SELECT value FROM identities WHERE type = 'email'"});
    let (_, _, body) = f.call("POST", "/v1/sql", Some(&analyst), Some(emails.clone())).await;
    assert_eq!(body["rows"], json!([[null]]), "{body}");
    let (_, _, body) = f.call("POST", "/v1/sql", Some(&f.admin), Some(emails)).await;
    assert_eq!(body["rows"][0][0].as_str().map(str::len), Some(64), "{body}");
    // A tag holding an object keeps what is not personal in it.
    let customer = json!({"query": "SELECT customer_last FROM tags WHERE customer_last IS NOT NULL"});
    let (_, _, body) = f.call("POST", "/v1/sql", Some(&analyst), Some(customer.clone())).await;
    assert_eq!(body["rows"], json!([["{\"tier\":\"gold\"}"]]), "{body}");
    // With it (admin holds every scope): in clear.
    let (status, _, body) = f.call("POST", "/v1/sql", Some(&f.admin), Some(query)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.to_string().contains("ann@example.com"), "{body}");
    let (_, _, body) = f.call("POST", "/v1/sql", Some(&f.admin), Some(everything.clone())).await;
    let text = body.to_string();
    assert!(text.contains("bo@example.com") && text.contains("last_email") && text.contains("\"m3\""), "{body}");
    // A tag no longer defined (its last values still stored) is not shown without pii:read: nothing says
    // what it holds.
    let now_defined = json!([tags[1].clone()]);
    f.store.put("config/tags.json", now_defined.to_string().into_bytes(), PutOptions::json()).await.unwrap();
    let (_, _, body) = f.call("POST", "/v1/sql", Some(&analyst), Some(everything)).await;
    let text = body.to_string();
    assert!(text.contains("\"orders\"") && !text.contains("customer_last"), "{body}");

    let funnel = json!({"steps": ["Product Viewed", "Order Completed"], "windowMs": 3_600_000,
                        "from": "2026-11-29T00:00:00Z", "to": "2026-11-30T00:00:00Z"});
    let (status, _, body) = f.call("POST", "/v1/analyze/funnel", Some(&analyst), Some(funnel.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["steps"][0]["persons"].as_u64(), body["steps"][1]["persons"].as_u64()), (Some(2), Some(1)));
    let paths = json!({"event": "Product Viewed", "depth": 2, "windowMs": 3_600_000,
                       "from": "2026-11-29T00:00:00Z", "to": "2026-11-30T00:00:00Z"});
    let (status, _, body) = f.call("POST", "/v1/analyze/paths", Some(&analyst), Some(paths)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["nodes"][1]["event"], "Order Completed", "{body}");

    // Bad input: a 400 naming the field.
    let typo = json!({"steps": ["Product Viewd", "Order Completed"], "windowMs": 3_600_000,
                      "from": "2026-11-29T00:00:00Z", "to": "2026-11-30T00:00:00Z"});
    let (status, _, body) = f.call("POST", "/v1/analyze/funnel", Some(&analyst), Some(typo)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("did you mean `Product Viewed`"), "{body}");
    let (status, _, body) =
        f.call("POST", "/v1/sql", Some(&analyst), Some(json!({"query": "DELETE FROM events"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) =
        f.call("POST", "/v1/sql", Some(&analyst), Some(json!({"query": "SELECT 1", "maxRows": 0}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("maxRows"), "{body}");
    let (status, _, body) =
        f.call("POST", "/v1/analyze/compare", Some(&analyst), Some(json!({"audience": "x", "extra": 1}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Audited: who ran what, a query or a definition by its hash, never its text.
    let (_, audit) = f.get("/v1/audit", &f.admin).await;
    let runs: Vec<&Value> =
        audit["records"].as_array().unwrap().iter().filter(|r| r["action"] == "analysis.run").collect();
    assert!(runs.len() >= 5, "{audit}");
    assert!(!audit.to_string().contains("Order Completed"), "neither a query's text nor a definition is kept");
    let document: Value = serde_json::from_str(&openapi_document()).unwrap();
    for path in ["/v1/sql", "/v1/analyze/funnel", "/v1/analyze/compare"] {
        assert!(document["paths"][path]["post"].is_object(), "{path} documented");
    }
}

#[cfg(feature = "analysis")]
#[tokio::test]
async fn insights_and_dashboards_are_saved_run_kept_with_the_data_version_and_audited() {
    let f = Fixture::new().await;
    f.ingest(
        1,
        json!([
            ev("track", "m1", 1, json!({"userId": "u1", "event": "Product Viewed"})),
            ev("track", "m2", 2, json!({"userId": "u1", "event": "Order Completed", "properties": {"revenue": 20}})),
            ev("track", "m3", 3, json!({"userId": "u2", "event": "Product Viewed"})),
        ]),
    )
    .await;
    let analyst = key(&f.store, "analyst", &[Scope::AnalysisRead]).await;
    let editor = key(&f.store, "editor", &[Scope::AnalysisRead, Scope::AnalysisWrite]).await;
    let funnel = json!({"id": "checkout", "name": "Checkout", "chart": "funnel",
        "analysis": {"kind": "funnel", "definition": {"steps": ["Product Viewed", "Order Completed"],
            "windowMs": 3_600_000, "from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}}});
    // Saving needs analysis:write.
    let (status, _, body) = f.call("PUT", "/v1/insights/checkout", Some(&analyst), Some(funnel.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _, body) = f.call("PUT", "/v1/insights/checkout", Some(&editor), Some(funnel.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let orders = json!({"id": "orders", "name": "Orders", "chart": "number",
        "analysis": {"kind": "sql", "definition": {"query": "SELECT count(*) AS n FROM events WHERE event = 'Order Completed'"}}});
    let (status, _, body) = f.call("PUT", "/v1/insights/orders", Some(&editor), Some(orders)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, listed) = f.get("/v1/insights", &analyst).await;
    assert_eq!(listed["insights"].as_array().map(Vec::len), Some(2), "{listed}");

    // Bad input names the field; nothing is saved.
    let mut bad = funnel.clone();
    bad["analysis"]["kind"] = json!("funnels");
    let (status, _, body) = f.call("PUT", "/v1/insights/checkout", Some(&editor), Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = f.call("PUT", "/v1/insights/other", Some(&editor), Some(funnel.clone())).await;
    assert!(status == StatusCode::BAD_REQUEST && body.to_string().contains("is not the path's"), "{body}");
    let mut unnamed = funnel.clone();
    unnamed["name"] = json!(" ");
    let (status, _, body) = f.call("PUT", "/v1/insights/checkout", Some(&editor), Some(unnamed)).await;
    assert!(status == StatusCode::BAD_REQUEST && body.to_string().contains("name: 1 to 200"), "{body}");

    // Its own range: the events are on 2026-11-29, not in November's first day.
    let (status, _, run) = f.call("POST", "/v1/insights/checkout/run", Some(&analyst), None).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!((run["cached"].as_bool(), run["result"]["steps"][0]["persons"].as_u64()), (Some(false), Some(0)));
    // The same data again: answered from the kept result.
    let (_, _, again) = f.call("POST", "/v1/insights/checkout/run", Some(&analyst), None).await;
    assert_eq!((again["cached"].as_bool(), &again["dataVersion"]), (Some(true), &run["dataVersion"]), "{again}");
    // With personal data in the tables (admin holds pii:read): computed each time, never kept.
    for _ in 0..2 {
        let (_, _, admin_run) = f.call("POST", "/v1/insights/checkout/run", Some(&f.admin), None).await;
        assert_eq!(admin_run["cached"], false, "{admin_run}");
    }

    // A dashboard over the last 7 days of the data runs each insight there.
    let board = json!({"id": "sales", "name": "Sales", "insights": ["checkout", "orders"], "lastDays": 7});
    let (status, _, body) = f.call("PUT", "/v1/dashboards/sales", Some(&editor), Some(board)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, shown) = f.call("POST", "/v1/dashboards/sales/run", Some(&analyst), None).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["to"], "2026-11-30T00:00:00.000Z", "{shown}");
    let steps: Vec<u64> = shown["insights"][0]["run"]["result"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["persons"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [2, 1], "{shown}");
    assert_eq!(shown["insights"][1]["run"]["result"]["rows"], json!([[1]]), "{shown}");
    // New data moves the version on: computed again.
    f.ingest(2, json!([ev("track", "m4", 4, json!({"userId": "u2", "event": "Order Completed"}))])).await;
    let (_, _, moved) = f.call("POST", "/v1/dashboards/sales/run", Some(&analyst), None).await;
    assert_eq!(moved["insights"][1]["run"]["cached"], false, "{moved}");
    assert_eq!(moved["insights"][1]["run"]["result"]["rows"], json!([[2]]), "{moved}");
    assert_ne!(moved["insights"][1]["run"]["dataVersion"], shown["insights"][1]["run"]["dataVersion"]);

    // A dashboard names saved insights; one on a dashboard cannot be deleted.
    let typo = json!({"id": "typo", "name": "Typo", "insights": ["chekout"]});
    let (status, _, body) = f.call("PUT", "/v1/dashboards/typo", Some(&editor), Some(typo)).await;
    assert!(status == StatusCode::BAD_REQUEST && body.to_string().contains("did you mean `checkout`?"), "{body}");
    let (status, _, body) = f.call("DELETE", "/v1/insights/checkout", Some(&editor), None).await;
    assert!(status == StatusCode::CONFLICT && body.to_string().contains("sales"), "{body}");
    let (status, _, _) = f.call("DELETE", "/v1/dashboards/sales", Some(&editor), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!f.store.list("analysis/v1/results/checkout/").await.unwrap().is_empty(), "results kept");
    let (status, _, _) = f.call("DELETE", "/v1/insights/checkout", Some(&editor), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(f.store.list("analysis/v1/results/checkout/").await.unwrap().is_empty(), "results removed with it");
    let (status, _, _) = f.call("POST", "/v1/insights/checkout/run", Some(&analyst), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, audit) = f.get("/v1/audit", &f.admin).await;
    let actions: Vec<&str> = audit["records"].as_array().unwrap().iter().filter_map(|r| r["action"].as_str()).collect();
    for action in ["insight.put", "dashboard.put", "dashboard.delete", "insight.delete", "analysis.run"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let targets: Vec<&str> = audit["records"].as_array().unwrap().iter().filter_map(|r| r["target"].as_str()).collect();
    assert!(targets.contains(&"insight:checkout") && targets.contains(&"dashboard:sales"), "{targets:?}");
    assert!(!audit.to_string().contains("SELECT count"), "a definition's text is never in the log");
}

#[cfg(feature = "analysis")]
#[tokio::test]
async fn a_theme_dashboard_is_assembled_from_the_data_dictionary_and_runs() {
    let f = Fixture::new().await;
    f.ingest(
        1,
        json!([
            ev(
                "track",
                "m1",
                1,
                json!({"userId": "u1", "event": "Product Viewed", "properties": {"utm_source": "ads"}})
            ),
            ev("track", "m2", 2, json!({"userId": "u1", "event": "Order Completed", "properties": {"revenue": 20}})),
            ev(
                "track",
                "m3",
                3,
                json!({"userId": "u2", "event": "Product Viewed", "properties": {"utm_source": "mail"}})
            ),
        ]),
    )
    .await;
    let analyst = key(&f.store, "analyst", &[Scope::AnalysisRead]).await;
    let editor = key(&f.store, "editor", &[Scope::AnalysisRead, Scope::AnalysisWrite]).await;
    let (status, listed) = f.get("/v1/themes", &analyst).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let themes: Vec<&str> = listed["themes"].as_array().unwrap().iter().filter_map(|t| t["theme"].as_str()).collect();
    assert_eq!(themes, ["acquisition", "ecommerce", "retention", "value", "audiences"]);
    let audiences = &listed["themes"][4];
    assert!(audiences["dashboard"].is_null(), "{audiences}");
    assert_eq!(audiences["leftOut"][0]["reason"], "no computed audiences (active or deprecated)", "{audiences}");

    // Assembling needs analysis:write.
    let (status, _, body) = f.call("POST", "/v1/themes/ecommerce", Some(&analyst), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _, made) = f.call("POST", "/v1/themes/ecommerce", Some(&editor), None).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    assert_eq!(made["dashboard"]["id"], "theme-ecommerce", "{made}");
    let left: Vec<&str> = made["leftOut"].as_array().unwrap().iter().filter_map(|l| l["insight"].as_str()).collect();
    assert!(left.is_empty(), "{made}");
    let (status, _, shown) = f.call("POST", "/v1/dashboards/theme-ecommerce/run", Some(&analyst), None).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let runs = shown["insights"].as_array().unwrap();
    let ids: Vec<&str> = runs.iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "theme-ecommerce-funnel",
            "theme-ecommerce-orders",
            "theme-ecommerce-revenue",
            "theme-ecommerce-order-value",
            "theme-ecommerce-after-view"
        ]
    );
    assert!(runs.iter().all(|i| i["error"].is_null()), "every insight runs: {shown}");
    let steps: Vec<u64> =
        runs[0]["run"]["result"]["steps"].as_array().unwrap().iter().map(|s| s["persons"].as_u64().unwrap()).collect();
    assert_eq!(steps, [2, 1], "{shown}");
    assert_eq!(runs[2]["run"]["result"]["series"][0]["total"], 20.0, "{shown}");
    // The other themes the data supports assemble and run whole as well.
    for theme in ["acquisition", "retention", "value"] {
        let (status, _, made) = f.call("POST", &format!("/v1/themes/{theme}"), Some(&editor), None).await;
        assert_eq!(status, StatusCode::OK, "{made}");
        let (status, _, shown) =
            f.call("POST", &format!("/v1/dashboards/theme-{theme}/run"), Some(&analyst), None).await;
        assert_eq!(status, StatusCode::OK, "{shown}");
        let runs = shown["insights"].as_array().unwrap();
        assert!(!runs.is_empty() && runs.iter().all(|i| i["error"].is_null() && i["run"].is_object()), "{shown}");
    }

    // A theme's ids are its own: saving one by hand is refused, so a theme never replaces anyone's work.
    let copy = json!({"id": "theme-ecommerce-orders", "name": "Mine", "analysis": made["insights"][1]["analysis"]});
    let (status, _, body) = f.call("PUT", "/v1/insights/theme-ecommerce-orders", Some(&editor), Some(copy)).await;
    assert!(status == StatusCode::BAD_REQUEST && body.to_string().contains("belong to theme dashboards"), "{body}");
    let board = json!({"id": "theme-mine", "name": "Mine", "insights": ["theme-ecommerce-orders"]});
    let (status, _, body) = f.call("PUT", "/v1/dashboards/theme-mine", Some(&editor), Some(board)).await;
    assert!(status == StatusCode::BAD_REQUEST && body.to_string().contains("belong to theme dashboards"), "{body}");

    let (status, _, body) = f.call("DELETE", "/v1/insights/theme-ecommerce-orders", Some(&editor), None).await;
    assert!(status == StatusCode::CONFLICT && body.to_string().contains("assemble the theme again"), "{body}");

    // A theme the data supports none of, or that does not exist: 400 naming why.
    let (status, _, body) = f.call("POST", "/v1/themes/audiences", Some(&editor), None).await;
    assert!(
        status == StatusCode::BAD_REQUEST && body.to_string().contains("no computed audiences (active or deprecated)"),
        "{body}"
    );
    let (status, _, body) = f.call("POST", "/v1/themes/shop", Some(&editor), None).await;
    assert!(status == StatusCode::BAD_REQUEST && body.to_string().contains("one of acquisition"), "{body}");
    let (_, audit) = f.get("/v1/audit", &f.admin).await;
    assert!(
        audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "theme.assemble" && r["target"] == "theme:ecommerce"),
        "{audit}"
    );
    assert!(!audit.to_string().contains("\"steps\""), "definitions are kept as keyed hashes, never as text");
    let document: Value = serde_json::from_str(&openapi_document()).unwrap();
    assert!(document["paths"]["/v1/themes/{theme}"]["post"].is_object());
}
