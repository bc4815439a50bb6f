//! The full recompute on the folder store: values, coverage, audience snapshots and diffs over time.

use serde_json::{Value, json};
use shared::collect::{CollectRequest, Collected, Endpoint, collect};
use shared::ids::Entropy;
use shared::source::{Sources, new_source};
use shared::storage::keys;

use super::*;
use crate::ingest::ingest;
use crate::snapshot::{RunConfig, load_definitions};
use crate::storage::FsStore;
use shared::tags::{Catalog, TagDefinition, TagSet};

const DAY: i64 = 86_400_000;

fn at(ms: i64) -> UtcTime {
    UtcTime::from_unix_millis(ms).expect("time")
}

fn t0() -> i64 {
    UtcTime::parse("2026-11-28T12:00:00Z").expect("time").unix_millis()
}

fn stamp(days_ago: i64) -> String {
    at(t0() - days_ago * DAY).to_string()
}

async fn store_events(store: &FsStore, seed: u8, events: Value) -> String {
    let (source, key) = new_source("web", "Web", &mut Entropy::from_seed([1; 32]));
    let mut sources = Sources::default();
    sources.add(source).expect("source");
    let body = json!({"batch": events, "writeKey": key}).to_string();
    let request = CollectRequest::new(Endpoint::Batch, body.as_bytes());
    let collected = collect(&request, &sources, at(t0()), &mut Entropy::from_seed([seed; 32]));
    let Collected::Kept(batch) = collected else { panic!("rejected: {collected:?}") };
    let (object_key, bytes) = batch.accepted_object().expect("accepted");
    store.put(&object_key, bytes, PutOptions::ndjson_gz()).await.expect("put");
    object_key
}

async fn read_json(store: &FsStore, key: &str) -> Value {
    let body = store.get(key).await.expect("get").unwrap_or_else(|| panic!("{key} exists")).body;
    let body = if key.ends_with(".gz") { shared::storage::gunzip(&body).expect("gzip") } else { body };
    serde_json::from_slice(&body).expect("JSON")
}

#[tokio::test]
async fn tags_and_audiences_are_computed_and_diffs_follow_time() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    let order = |id: &str, user: &str, days: i64, revenue: f64| {
        json!({"type": "track", "event": "Order Completed", "userId": user, "messageId": id,
               "timestamp": stamp(days), "properties": {"revenue": revenue}})
    };
    let keys = vec![
        store_events(&store, 1, json!([
            order("o1", "ann", 40, 10.0), order("o2", "ann", 20, 20.0), order("o3", "ann", 2, 30.0),
            {"type": "identify", "userId": "ann", "messageId": "i1", "timestamp": stamp(40), "traits": {"plan": "pro"}},
            order("o4", "bob", 3, 5.0),
            {"type": "page", "anonymousId": "cyd-browser", "messageId": "p1", "timestamp": stamp(30)},
        ])).await,
        // A duplicate delivery of one order: counted once.
        store_events(&store, 2, json!([order("o3", "ann", 2, 30.0)])).await,
    ];
    ingest(&store, &keys, &RunConfig::default(), at(t0())).await.expect("ingest");
    store
        .put(keys::CONFIG_TAGS, json!([
            {"id": "orders", "status": "active", "kind": "statistical", "filter": {"events": ["Order Completed"]},
             "aggregate": {"op": "count"}},
            {"id": "ltv", "status": "active", "version": 2, "kind": "statistical",
             "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "sum", "property": "revenue"}},
            {"id": "tier", "status": "active", "kind": "buckets", "of": "tag:ltv",
             "buckets": [{"label": "high", "min": 50}], "otherwise": "low"},
            {"id": "is_pro", "status": "active", "kind": "rule", "when": {"field": "trait:plan", "op": "eq", "value": "pro"}},
            {"id": "draft_tag", "kind": "statistical", "aggregate": {"op": "count"}},
            {"id": "rfm", "status": "active", "kind": "rfm", "purchase": {"events": ["Order Completed"]}, "revenue": "revenue"},
            {"id": "buy", "status": "active", "kind": "propensity", "purchase": {"events": ["Order Completed"]}}
        ]).to_string().into_bytes(), PutOptions::json())
        .await
        .expect("tags config");
    store
        .put(
            keys::CONFIG_AUDIENCES,
            json!([
                {"id": "vips", "status": "active", "when": {"field": "tag:tier", "op": "eq", "value": "high"}},
                {"id": "active_week", "status": "active", "when": {"did": {"window": {"lastDays": 7}}}}
            ])
            .to_string()
            .into_bytes(),
            PutOptions::json(),
        )
        .await
        .expect("audiences config");

    store
        .put(
            keys::CONFIG_DESTINATIONS,
            json!([{"id": "crm", "url": "https://hooks.partner.example/cdp", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                    "send": {"audiences": ["active_week"]}}])
            .to_string()
            .into_bytes(),
            PutOptions::json(),
        )
        .await
        .expect("destinations config");
    let outbox = || async {
        let mut items = Vec::new();
        for meta in store.list(crate::activation::outbox::OUTBOX).await.expect("list") {
            let body = store.get(&meta.key).await.expect("get").expect("object").body;
            let messages: Vec<shared::activation::lane::Message> =
                shared::storage::decode_ndjson_gz(&body).expect("messages");
            items.extend(messages.into_iter().map(|m| serde_json::to_value(&m.item).expect("item")));
        }
        items
    };

    let report = full_recompute(&store, at(t0())).await.expect("recompute");
    assert_eq!((report.profiles, report.events, report.unresolved_events), (3, 6, 0));
    // Memberships are recorded on the profiles; the subscribed audience's entries go to the outbox.
    assert_eq!(report.membership_changes, 3, "ann into vips and active_week, bob into active_week");
    let items = outbox().await;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["type"] == "audience.entered" && i["audience"]["id"] == "active_week"));
    let values = read_json(&store, keys::TAG_VALUES).await;
    let ann = profile_of(&store, "user_id:ann").await;
    let bob = profile_of(&store, "user_id:bob").await;
    let cyd = profile_of(&store, "anonymous_id:cyd-browser").await;
    // RFM among the two buyers: ann (2 days ago, 3 orders, 60) scores 3/3/3, bob (3 days, 1, 5) 1/1/1.
    let rfm_and_buy = |id: &str, rfm: Option<&str>| {
        let mut v = values["profiles"][id].clone();
        let object = v.as_object_mut().expect("values");
        assert_eq!(object.remove("rfm").as_ref().and_then(Value::as_str), rfm, "{id}");
        // Three profiles are too few to train on: the propensity has a value only if a model was fitted.
        let buy = object.remove("buy");
        assert_eq!(buy.is_some(), matches!(report.models["buy"], crate::predict::Fitted::Propensity(_)));
        v
    };
    assert_eq!(rfm_and_buy(&ann, Some("loyal")), json!({"orders": 3, "ltv": 60.0, "tier": "high", "is_pro": true}));
    assert_eq!(
        rfm_and_buy(&bob, Some("hibernating")),
        json!({"orders": 1, "ltv": 5.0, "tier": "low", "is_pro": false})
    );
    assert_eq!(rfm_and_buy(&cyd, None), json!({"orders": 0, "ltv": 0.0, "tier": "low", "is_pro": false}));
    assert_eq!(report.models["rfm"], crate::predict::Fitted::Rfm { profiles: 2 });
    let model = read_json(&store, "tags/v1/models/rfm.json").await;
    assert_eq!(model["kind"], json!("rfm"));
    assert_eq!(model["frequency"], json!([1.0, 1.0, 3.0, 3.0]));
    assert_eq!(report.tags["ltv"].version, 2);
    assert_eq!(report.tags["is_pro"].with_value, 3);
    assert!(!report.tags.contains_key("draft_tag"), "drafts are not computed");
    assert_eq!(report.audiences["vips"], AudienceReport { size: 1, entered: 1, exited: 0 });
    assert_eq!(report.audiences["active_week"], AudienceReport { size: 2, entered: 2, exited: 0 });
    let diff = read_json(&store, &format!("audiences/v1/active_week/diffs/{:013}.json", t0())).await;
    let mut entered: Vec<String> = serde_json::from_value(diff["entered"].clone()).expect("ids");
    entered.sort();
    let mut expected = vec![ann.clone(), bob.clone()];
    expected.sort();
    assert_eq!(entered, expected);

    // Again at the same time: nothing changed, so no diff is written.
    let again = full_recompute(&store, at(t0())).await.expect("recompute");
    assert_eq!(again.audiences["active_week"], AudienceReport { size: 2, entered: 0, exited: 0 });
    let diffs = store.list("audiences/v1/active_week/diffs/").await.expect("list");
    assert_eq!(diffs.len(), 1);
    assert_eq!(again.membership_changes, 0);
    assert_eq!(outbox().await.len(), 2, "nothing new to deliver");

    // Four days (and a millisecond) later bob's order is just over seven days old, so he exits; ann's is six.
    let later = full_recompute(&store, at(t0() + 4 * DAY + 1)).await.expect("recompute");
    assert_eq!(later.audiences["active_week"], AudienceReport { size: 1, entered: 0, exited: 1 });
    let diff = read_json(&store, &format!("audiences/v1/active_week/diffs/{:013}.json", t0() + 4 * DAY + 1)).await;
    assert_eq!(diff["exited"], json!([bob]));
    assert_eq!(later.membership_changes, 1);
    let items = outbox().await;
    assert_eq!(items.len(), 3);
    let exit = items.iter().find(|i| i["type"] == "audience.exited").expect("bob's exit");
    assert_eq!(exit["profile"]["id"], json!(bob));
    let stored = crate::state::lookup(&store, "user_id:bob").await.expect("lookup").expect("bob");
    let membership = stored.profile.memberships["active_week"];
    assert_eq!((membership.member, membership.changes, membership.since), (false, 2, t0() + 4 * DAY + 1));
    let snapshot = read_json(&store, "audiences/v1/active_week/snapshot.json.gz").await;
    assert_eq!(snapshot["sizes"].as_array().map(Vec::len), Some(3));
    assert_eq!(latest_report(&store).await.expect("report"), Some(later));
}

/// The profile id behind an identifier.
async fn profile_of(store: &FsStore, key: &str) -> String {
    crate::state::lookup(store, key).await.expect("lookup").expect("known").node.id
}

#[tokio::test]
async fn invalid_definitions_are_a_configuration_error_naming_file_and_field() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    store
        .put(
            keys::CONFIG_TAGS,
            br#"[{"id": "x", "status": "active", "kind": "statistical", "aggregate": {"op": "sum"}}]"#.to_vec(),
            PutOptions::json(),
        )
        .await
        .expect("put");
    let error = full_recompute(&store, at(t0())).await.expect_err("invalid");
    assert!(
        error.to_string().contains("config/tags.json: tags[0] (x).aggregate.property: sum needs a property"),
        "{error}"
    );
    store.put(keys::CONFIG_AUDIENCES, b"{not json".to_vec(), PutOptions::json()).await.expect("put");
    let error = load_definitions(&store).await.expect_err("not JSON");
    assert!(error.to_string().contains("config/audiences.json"), "{error}");
}

#[tokio::test]
async fn tags_kept_up_to_date_by_ingest_equal_the_full_recompute() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    store
        .put(keys::CONFIG_TAGS, json!([
            {"id": "orders", "status": "active", "kind": "statistical", "filter": {"events": ["Order Completed"]},
             "aggregate": {"op": "count"}},
            {"id": "spend_30d", "status": "active", "kind": "statistical", "aggregate": {"op": "sum", "property": "revenue"},
             "window": {"lastDays": 30}},
            {"id": "avg_spend", "status": "active", "kind": "statistical", "aggregate": {"op": "avg", "property": "revenue"}},
            {"id": "top_category", "status": "active", "kind": "statistical",
             "aggregate": {"op": "most_frequent", "property": "category"}},
            {"id": "big", "status": "active", "kind": "rule", "when": {"field": "tag:spend_30d", "op": "gte", "value": 25}}
        ]).to_string().into_bytes(), PutOptions::json())
        .await
        .expect("tags");
    let order = |id: &str, who: Value, days: i64, revenue: f64, category: &str| {
        let mut e = json!({"type": "track", "event": "Order Completed", "messageId": id, "timestamp": stamp(days),
                           "properties": {"revenue": revenue, "category": category}});
        for (k, v) in who.as_object().expect("ids") {
            e[k] = v.clone();
        }
        e
    };
    // Three batches: an anonymous shopper, a logged-in one, then the login that merges them.
    let batches = [
        json!([
            order("a1", json!({"anonymousId": "anon-1"}), 40, 10.1, "shoes"),
            order("a2", json!({"anonymousId": "anon-1"}), 3, 0.2, "hats")
        ]),
        json!([
            order("b1", json!({"userId": "zoe"}), 10, 20.7, "shoes"),
            order("c1", json!({"userId": "max"}), 1, 99.0, "shirts")
        ]),
        json!([{"type": "identify", "anonymousId": "anon-1", "userId": "zoe", "messageId": "m1", "timestamp": stamp(0)},
               order("b2", json!({"userId": "zoe"}), 0, 5.0, "hats")]),
    ];
    for (i, batch) in batches.into_iter().enumerate() {
        let key = store_events(&store, 10 + i as u8, batch).await;
        let config = RunConfig::load(&store).await.expect("config");
        assert!(config.snapshot.tags.is_some(), "the tags are loaded by ingest");
        ingest(&store, &[key], &config, at(t0())).await.expect("ingest");
        if i == 0 {
            // The first recompute backfills the new tags; from then on ingest serves them incrementally.
            let first = full_recompute(&store, at(t0())).await.expect("recompute");
            assert_eq!(first.backfilled, ["orders", "spend_30d", "avg_spend", "top_category"]);
        }
    }
    let last = full_recompute(&store, at(t0())).await.expect("recompute");
    assert!(last.backfilled.is_empty(), "nothing left to backfill, so the profiles' values are ingest's");
    let values = read_json(&store, keys::TAG_VALUES).await;
    let mut compared = 0;
    for who in ["user_id:zoe", "user_id:max", "anonymous_id:anon-1"] {
        let stored = crate::state::lookup(&store, who).await.expect("lookup").expect("profile");
        let incremental = serde_json::to_value(&stored.profile.tags).expect("json");
        assert_eq!(incremental, values["profiles"][&stored.node.id], "{who}");
        assert_eq!(stored.profile.tags_at, Some(at(t0())));
        compared += 1;
    }
    assert_eq!(compared, 3);
    let zoe = crate::state::lookup(&store, "user_id:zoe").await.expect("lookup").expect("zoe");
    assert_eq!(zoe.profile.tags["orders"], json!(4), "the merged anonymous orders count");
    assert_eq!(zoe.profile.tags["spend_30d"], json!(25.9), "20.7 + 0.2 + 5.0 within 30 days, summed exactly");
}

#[tokio::test]
async fn product_tags_and_category_affinity_from_product_events() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    let event = |id: &str, user: &str, name: &str, days: i64, props: Value| json!({"type": "track", "event": name, "userId": user, "messageId": id, "timestamp": stamp(days), "properties": props});
    let key = store_events(
        &store,
        3,
        json!([
            event("v1", "ann", "Product Viewed", 9, json!({"product_id": "p1", "category": "shoes"})),
            event("v2", "ann", "Product Viewed", 8, json!({"product_id": "p1", "category": "shoes"})),
            // No category on the order: p2's category comes from the product tags (bob's view).
            event("o1", "ann", "Order Completed", 1, json!({"product_id": "p2", "revenue": 30.0, "quantity": 2})),
            event("v3", "bob", "Product Viewed", 5, json!({"product_id": "p2", "category": "hats"})),
            event("s1", "bob", "Signed In", 5, json!({})),
        ]),
    )
    .await;
    ingest(&store, &[key], &RunConfig::default(), at(t0())).await.expect("ingest");
    store
        .put(keys::CONFIG_TAGS, json!([
            {"id": "fav", "status": "active", "kind": "affinity", "weights": {"Product Viewed": 1, "Order Completed": 5}},
            {"id": "shoe_share", "status": "active", "kind": "affinity", "weights": {"Product Viewed": 1, "Order Completed": 5},
             "shareOf": "shoes"},
            {"id": "hat_person", "status": "active", "kind": "rule", "when": {"field": "tag:fav", "op": "eq", "value": "hats"}}
        ]).to_string().into_bytes(), PutOptions::json())
        .await
        .expect("tags");
    let report = full_recompute(&store, at(t0())).await.expect("recompute");
    assert_eq!(report.products, 2);
    assert_eq!(report.models["fav"], crate::predict::Fitted::Affinity { products: 2 });
    let values = read_json(&store, keys::TAG_VALUES).await;
    let ann = profile_of(&store, "user_id:ann").await;
    let bob = profile_of(&store, "user_id:bob").await;
    // ann: shoes 1 + 1, hats 5 (the order, by its product's category) → hats; shoes' share 2/7.
    assert_eq!(values["profiles"][&ann], json!({"fav": "hats", "shoe_share": 0.2857, "hat_person": true}));
    assert_eq!(values["profiles"][&bob], json!({"fav": "hats", "shoe_share": 0.0, "hat_person": true}));

    let products = read_json(&store, keys::PRODUCT_TAGS).await;
    assert_eq!(
        products["products"]["p2"],
        json!({"category": "hats", "counts": {"orders": 1, "views": 1}, "units": 2.0, "revenue": 30.0, "rank": 1,
               "popularity": "top"})
    );
    assert_eq!(products["products"]["p1"]["popularity"], json!("low"), "never ordered");
    assert_eq!(products["products"]["p1"]["category"], json!("shoes"));
}

#[tokio::test]
async fn a_new_version_is_backfilled_while_the_old_values_keep_serving() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    let define = |version: u32, min: f64| {
        json!([{"id": "orders", "status": "active", "version": version, "kind": "statistical",
                "filter": {"events": ["Order Completed"], "properties": [{"field": "revenue", "op": "gte", "value": min}]},
                "aggregate": {"op": "count"}}])
        .to_string()
        .into_bytes()
    };
    let order = |id: &str, revenue: f64| {
        json!({"type": "track", "event": "Order Completed", "userId": "ann", "messageId": id, "timestamp": stamp(1),
               "properties": {"revenue": revenue}})
    };
    let run = |seed: u8, events: Value| {
        let store = store.clone();
        async move {
            let key = store_events(&store, seed, events).await;
            let config = RunConfig::load(&store).await.expect("config");
            ingest(&store, &[key], &config, at(t0())).await.expect("ingest");
            let ann = crate::state::lookup(&store, "user_id:ann").await.expect("lookup").expect("ann");
            ann.profile
        }
    };
    store.put(keys::CONFIG_TAGS, define(1, 0.0), PutOptions::json()).await.expect("tags");
    // Before any backfill, a new tag has no value: its state has no history yet.
    assert!(!run(1, json!([order("o1", 5.0), order("o2", 50.0)])).await.tags.contains_key("orders"));
    let report = full_recompute(&store, at(t0())).await.expect("recompute");
    assert_eq!(report.backfilled, ["orders"]);
    let cleaning = shared::profile::CleaningRules::default().fingerprint();
    assert_eq!(read_json(&store, keys::TAGS_READY).await, json!({"orders": 1, "$cleaning": cleaning}));
    assert_eq!(run(2, json!([order("o3", 7.0)])).await.tags["orders"], json!(3), "v1 served incrementally");

    // Version 2 counts only orders of 10 or more. Until it is backfilled, v1's value keeps serving, while
    // ingest already keeps v2's state from the new events.
    store.put(keys::CONFIG_TAGS, define(2, 10.0), PutOptions::json()).await.expect("tags");
    let profile = run(3, json!([order("o4", 70.0)])).await;
    assert_eq!(profile.tags["orders"], json!(3), "the old value keeps serving");
    assert!(profile.tag_state.tags.contains_key("orders@1") && profile.tag_state.tags.contains_key("orders@2"));

    let report = full_recompute(&store, at(t0())).await.expect("recompute");
    assert_eq!(report.backfilled, ["orders"]);
    assert_eq!(read_json(&store, keys::TAGS_READY).await, json!({"orders": 2, "$cleaning": cleaning}));
    let ann = crate::state::lookup(&store, "user_id:ann").await.expect("lookup").expect("ann");
    assert_eq!(ann.profile.tags["orders"], json!(2), "v2: the orders of 50 and 70, o4 counted once");
    assert!(!ann.profile.tag_state.tags.contains_key("orders@1"), "the old version's state is dropped");
    // From now on v2 is kept incrementally, and equals the full recompute.
    assert_eq!(run(4, json!([order("o5", 10.0), order("o6", 9.0)])).await.tags["orders"], json!(3));
    let again = full_recompute(&store, at(t0())).await.expect("recompute");
    assert!(again.backfilled.is_empty());
    let values = read_json(&store, keys::TAG_VALUES).await;
    assert_eq!(values["profiles"][&ann.node.id]["orders"], json!(3));
}

/// `events` stored and ingested, and one audience: `buyers`, who did `Order Completed`.
async fn buyers(store: &FsStore, events: Value) {
    let key = store_events(store, 1, events).await;
    ingest(store, &[key], &RunConfig::default(), at(t0())).await.expect("ingest");
    let audiences = json!([{"id": "buyers", "status": "active", "when": {"did": {"events": ["Order Completed"]}}}]);
    store.put(keys::CONFIG_AUDIENCES, audiences.to_string().into_bytes(), PutOptions::json()).await.expect("put");
}

#[tokio::test]
async fn memberships_wait_while_the_destinations_do_not_load_so_no_change_goes_undelivered() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    buyers(
        &store,
        json!([
            {"type": "track", "event": "Order Completed", "userId": "ann", "messageId": "o1", "timestamp": stamp(1)}
        ]),
    )
    .await;
    let put = |key: &'static str, value: Value| {
        let store = store.clone();
        async move { store.put(key, value.to_string().into_bytes(), PutOptions::json()).await.expect("put") }
    };
    let destination = |audience: &str| {
        json!([{"id": "crm", "url": "https://hooks.partner.example/cdp", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "send": {"audiences": [audience]}}])
    };
    // A destination naming an audience that does not exist: the file does not load.
    put(keys::CONFIG_DESTINATIONS, destination("nobody")).await;
    let report = full_recompute(&store, at(t0())).await.expect("recompute");
    assert_eq!((report.audiences["buyers"].size, report.membership_changes), (1, 0));
    assert!(store.list(crate::activation::outbox::OUTBOX).await.expect("list").is_empty());
    // Fixed: the entry is recorded and delivered.
    put(keys::CONFIG_DESTINATIONS, destination("buyers")).await;
    let report = full_recompute(&store, at(t0())).await.expect("recompute");
    assert_eq!(report.membership_changes, 1);
    assert_eq!(store.list(crate::activation::outbox::OUTBOX).await.expect("list").len(), 1);
}

#[tokio::test]
async fn a_destination_subscribed_later_receives_the_current_members_once() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    buyers(
        &store,
        json!([
            {"type": "track", "event": "Order Completed", "userId": "ann", "messageId": "o1", "timestamp": stamp(1)},
            {"type": "track", "event": "Order Completed", "userId": "bob", "messageId": "o2", "timestamp": stamp(2)},
            {"type": "page", "userId": "cy", "messageId": "p1", "timestamp": stamp(1)}
        ]),
    )
    .await;
    let put = |key: &'static str, value: Value| {
        let store = store.clone();
        async move { store.put(key, value.to_string().into_bytes(), PutOptions::json()).await.expect("put") }
    };
    let destination = |id: &str, audiences: Value| {
        json!({"id": id, "url": format!("https://hooks.{id}.example/cdp"), "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
               "send": {"audiences": audiences}})
    };
    let entries = |store: FsStore| async move {
        let mut out: Vec<(String, String)> = Vec::new();
        for meta in store.list(crate::activation::outbox::OUTBOX).await.expect("list") {
            let body = store.get(&meta.key).await.expect("get").expect("object").body;
            for message in
                shared::storage::decode_ndjson_gz::<shared::activation::lane::Message>(&body).expect("outbox")
            {
                if matches!(message.item.detail, shared::activation::Detail::AudienceEntered { .. }) {
                    out.push((message.destination, message.item.profile.id));
                }
            }
            store.delete(&meta.key).await.expect("delete");
        }
        out.sort();
        out
    };
    let (ann, bob) = (profile_of(&store, "user_id:ann").await, profile_of(&store, "user_id:bob").await);
    // The first partner, there from the start: the entries as they are recorded (nothing synced twice).
    put(keys::CONFIG_DESTINATIONS, json!([destination("crm", json!(["buyers"]))])).await;
    // One profile per state transaction: each member recorded, and synced, by a transaction of its own.
    let recompute = || async {
        let config = RunConfig::load(&store).await.expect("config");
        recompute_by(&store, &config, at(t0()), RECOMPUTE_CHUNK, 1).await
    };
    let report = recompute().await.expect("recompute");
    assert_eq!((report.membership_changes, report.initial_sync), (2, 0));
    assert_eq!(entries(store.clone()).await, [("crm".to_string(), ann.clone()), ("crm".to_string(), bob.clone())]);
    // A second partner connected later: the current members, to it alone.
    put(
        keys::CONFIG_DESTINATIONS,
        json!([destination("crm", json!(["buyers"])), destination("ads", json!(["buyers"]))]),
    )
    .await;
    let report = recompute().await.expect("recompute");
    assert_eq!((report.membership_changes, report.initial_sync), (0, 2));
    assert_eq!(entries(store.clone()).await, [("ads".to_string(), ann), ("ads".to_string(), bob)]);
    // Once.
    let report = recompute().await.expect("recompute");
    assert_eq!(report.initial_sync, 0);
    assert!(entries(store.clone()).await.is_empty());
    assert_eq!(read_json(&store, SYNCED).await, json!({"ads": ["buyers"], "crm": ["buyers"]}));
}

#[tokio::test]
async fn the_results_do_not_depend_on_how_profiles_are_cut_into_chunks() {
    // 50 people over a few batches: orders with products and categories, page views, traits, and anonymous
    // visitors who log in later (merged profiles); tags of every kind and behaviour audiences.
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    let mut entropy = Entropy::from_seed([7; 32]);
    let mut next = move |n: u64| u64::from_le_bytes(entropy.next_16()[..8].try_into().expect("8 bytes")) % n;
    let mut keys = Vec::new();
    for batch in 0..4u8 {
        let mut events = Vec::new();
        for person in 0..50u64 {
            let who = if batch < 2 && person % 5 == 0 {
                json!({"anonymousId": format!("anon-{person}")})
            } else {
                json!({"userId": format!("user-{person}")})
            };
            for n in 0..next(4) {
                let product = next(6);
                let category = ["shoes", "hats", "shirts"][(product % 3) as usize];
                let name = if next(3) == 0 { "Order Completed" } else { "Product Viewed" };
                let mut event = json!({"type": "track", "event": name, "messageId": format!("e{batch}-{person}-{n}"),
                    "timestamp": stamp(next(60) as i64), "properties": {"product_id": format!("p{product}"),
                    "category": category, "revenue": (next(100) + 1) as f64}});
                for (k, v) in who.as_object().expect("ids") {
                    event[k] = v.clone();
                }
                events.push(event);
            }
            if batch == 2 && person % 5 == 0 {
                let plan = ["free", "pro"][(person % 2) as usize];
                events.push(json!({"type": "identify", "anonymousId": format!("anon-{person}"),
                    "userId": format!("user-{person}"), "messageId": format!("login-{person}"), "timestamp": stamp(0),
                    "traits": {"plan": plan}}));
            }
        }
        keys.push(store_events(&store, 40 + batch, Value::Array(events)).await);
    }
    ingest(&store, &keys, &RunConfig::default(), at(t0())).await.expect("ingest");
    let tags = json!([
        {"id": "orders", "status": "active", "kind": "statistical", "filter": {"events": ["Order Completed"]},
         "aggregate": {"op": "count"}},
        {"id": "spend_30d", "status": "active", "kind": "statistical", "filter": {"events": ["Order Completed"]},
         "aggregate": {"op": "sum", "property": "revenue"}, "window": {"lastDays": 30}},
        {"id": "top_category", "status": "active", "kind": "statistical",
         "aggregate": {"op": "most_frequent", "property": "category"}},
        {"id": "tier", "status": "active", "kind": "buckets", "of": "tag:spend_30d",
         "buckets": [{"label": "high", "min": 100}, {"label": "mid", "min": 30}], "otherwise": "low"},
        {"id": "is_pro", "status": "active", "kind": "rule", "when": {"field": "trait:plan", "op": "eq", "value": "pro"}},
        {"id": "rfm", "status": "active", "kind": "rfm", "purchase": {"events": ["Order Completed"]}, "revenue": "revenue"},
        {"id": "buy", "status": "active", "kind": "propensity", "purchase": {"events": ["Order Completed"]}},
        {"id": "fav", "status": "active", "kind": "affinity", "weights": {"Product Viewed": 1, "Order Completed": 5}}
    ]);
    let audiences = json!([
        {"id": "high", "status": "active", "when": {"field": "tag:tier", "op": "eq", "value": "high"}},
        {"id": "browsers", "status": "active", "when": {"did": {"events": ["Product Viewed"], "atLeast": 2,
         "window": {"lastDays": 30}}}}
    ]);
    store.put(keys::CONFIG_TAGS, tags.to_string().into_bytes(), PutOptions::json()).await.expect("tags");
    store.put(keys::CONFIG_AUDIENCES, audiences.to_string().into_bytes(), PutOptions::json()).await.expect("audiences");
    // The same store twice: one cut into chunks of 7 profiles, one in a single chunk.
    let other = tempfile::tempdir().expect("dir");
    copy_dir(dir.path(), other.path());
    let other_store = FsStore::open(other.path()).expect("store");
    let cut =
        recompute_by(&store, &RunConfig::load(&store).await.expect("config"), at(t0()), 7, 3).await.expect("recompute");
    let whole =
        recompute_by(&other_store, &RunConfig::load(&other_store).await.expect("config"), at(t0()), 10_000, 25_000)
            .await
            .expect("recompute");
    assert!(cut.profiles > 14, "several chunks: {}", cut.profiles);
    assert_eq!(cut, whole);
    assert!(cut.audiences.values().all(|a| a.size > 0), "{:?}", cut.audiences);
    let outputs = |root: &std::path::Path| {
        let mut files = BTreeMap::new();
        for prefix in ["tags", "audiences", "products"] {
            collect_files(&root.join(prefix), root, &mut files);
        }
        files
    };
    let (a, b) = (outputs(dir.path()), outputs(other.path()));
    assert!(a.keys().any(|k| k.ends_with("insight.json")) && a.contains_key(keys::TAG_VALUES), "{:?}", a.keys());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (key, bytes) in &a {
        let (x, y) = if key.ends_with(".gz") {
            (shared::storage::gunzip(bytes).expect("gzip"), shared::storage::gunzip(&b[key]).expect("gzip"))
        } else {
            (bytes.clone(), b[key].clone())
        };
        assert!(x == y, "{key} differs");
    }
    let values = read_json(&store, keys::TAG_VALUES).await;
    assert_eq!(values["profiles"].as_object().expect("profiles").len(), cut.profiles);
    // The backfill in batches of about 3 profiles (many transactions) left every profile as one batch did.
    assert_eq!(cut.backfilled, ["orders", "spend_30d", "top_category"]);
    let (a, b) =
        (crate::state::scan(&store).await.expect("scan"), crate::state::scan(&other_store).await.expect("scan"));
    assert_eq!(a.profiles.len(), cut.profiles);
    for (id, stored) in &a.profiles {
        let (this, other) = (&stored.profile, &b.profiles[id].profile);
        assert_eq!(
            (&this.tags, &this.tag_state, &this.memberships),
            (&other.tags, &other.tag_state, &other.memberships),
            "{id}"
        );
        assert_eq!(serde_json::to_value(&stored.profile.tags).expect("json"), values["profiles"][id], "{id}");
        assert!(stored.profile.tag_state.tags.keys().any(|slot| slot.starts_with("orders@")), "{id}");
    }
    let manifests = |root: &std::path::Path| {
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(root.join(crate::state::MANIFEST_KEY)).expect("manifest"))
                .expect("JSON");
        manifest["version"].as_u64().expect("version")
    };
    assert!(manifests(dir.path()) > manifests(other.path()) + 5, "the batches were transactions of their own");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

fn collect_files(dir: &std::path::Path, root: &std::path::Path, out: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect_files(&path, root, out);
        } else {
            let key = path.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/");
            out.insert(key, std::fs::read(&path).expect("read"));
        }
    }
}

#[test]
fn chunks_are_handed_on_in_order_and_an_error_or_a_panic_stops_every_thread() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut seen = Vec::new();
    let slow_first = |c: usize| {
        std::thread::sleep(std::time::Duration::from_millis(10 - c as u64));
        Ok(c * 2)
    };
    in_order(10, 3, slow_first, |c, v| {
        seen.push((c, v));
        Ok(())
    })
    .expect("runs");
    assert_eq!(seen, (0..10).map(|c| (c, c * 2)).collect::<Vec<_>>());

    let started = AtomicUsize::new(0);
    let failing = |c: usize| {
        started.fetch_add(1, Ordering::Relaxed);
        if c == 5 { Err(Error::Corrupt("chunk 5 is broken".into())) } else { Ok(c) }
    };
    let error = in_order(1000, 2, failing, |_, _| Ok(())).expect_err("fails");
    assert!(error.to_string().contains("chunk 5 is broken"), "{error}");
    assert!(started.load(Ordering::Relaxed) < 20, "the threads stopped: {}", started.load(Ordering::Relaxed));

    let started = AtomicUsize::new(0);
    let count = |c: usize| Ok(started.fetch_add(1, Ordering::Relaxed) + c);
    let stop = |c: usize, _| if c == 3 { Err(Error::Corrupt("cannot take chunk 3".into())) } else { Ok(()) };
    let error = in_order(1000, 2, count, stop).expect_err("fails");
    assert!(error.to_string().contains("chunk 3"), "{error}");
    assert!(started.load(Ordering::Relaxed) < 20, "the threads stopped: {}", started.load(Ordering::Relaxed));

    let panicking = |c: usize| if c == 1 { panic!("a bug in chunk 1") } else { Ok(c) };
    let error = in_order(4, 2, panicking, |_, _| Ok(())).expect_err("fails");
    assert!(error.to_string().contains("panicked"), "{error}");
}

/// A folder store that stores and ingests `pending` events (straight into the folder) right after the
/// `after`-th state manifest written through it: events arriving, and an ingest committing, between two
/// batches of a backfill. Or, stopping, that refuses every manifest after the `after`-th: a run stopped there.
/// Or, busy, that ingests a new visitor's page view after every manifest. It counts the listings of raw
/// objects (one per read of every event).
#[derive(Clone)]
struct Racing {
    inner: FsStore,
    pending: std::sync::Arc<std::sync::Mutex<Option<Value>>>,
    /// Manifests to let through before.
    after: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: bool,
    busy: bool,
    visits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    raw_listings: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Racing {
    fn new(inner: &FsStore, events: Value, after: usize) -> Self {
        let pending = std::sync::Arc::new(std::sync::Mutex::new(Some(events)));
        let after = std::sync::Arc::new(after.into());
        let (visits, raw_listings) = Default::default();
        Self { inner: inner.clone(), pending, after, stop: false, busy: false, visits, raw_listings }
    }

    fn busy(inner: &FsStore) -> Self {
        let racing = Self { busy: true, ..Self::new(inner, Value::Null, 0) };
        racing.pending.lock().expect("lock").take();
        racing
    }

    /// Only counts.
    fn watching(inner: &FsStore) -> Self {
        Self::stopping(inner, usize::MAX)
    }

    fn stopping(inner: &FsStore, after: usize) -> Self {
        let racing = Self { stop: true, ..Self::new(inner, Value::Null, after) };
        racing.pending.lock().expect("lock").take();
        racing
    }
}

impl ObjectStore for Racing {
    async fn put(&self, key: &str, body: Vec<u8>, options: PutOptions) -> Result<String, crate::storage::StoreError> {
        let manifest = key == crate::state::MANIFEST_KEY;
        if manifest && self.stop && self.after.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            return Err(crate::storage::StoreError::Unavailable("the run was stopped".into()));
        }
        let etag = self.inner.put(key, body, options).await?;
        let due = manifest && self.after.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1;
        let mut pending = if due { self.pending.lock().expect("lock").take() } else { None };
        let mut seed = 52;
        if manifest && self.busy {
            let n = self.visits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            seed = 100 + u8::try_from(n).expect("fewer than 156 visits");
            pending = Some(json!([{"type": "page", "anonymousId": format!("visitor-{n}"),
                                   "messageId": format!("visit-{n}"), "timestamp": stamp(0)}]));
        }
        if let Some(events) = pending {
            let key = store_events(&self.inner, seed, events).await;
            let config = RunConfig::load(&self.inner).await.expect("config");
            ingest(&self.inner, &[key], &config, at(t0())).await.expect("ingest");
        }
        Ok(etag)
    }
    async fn get(&self, key: &str) -> Result<Option<crate::storage::Object>, crate::storage::StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<Vec<u8>>, crate::storage::StoreError> {
        self.inner.get_range(key, start, len).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<crate::storage::ObjectMeta>, crate::storage::StoreError> {
        if prefix == shared::storage::ObjectKind::Raw.prefix() {
            self.raw_listings.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), crate::storage::StoreError> {
        self.inner.delete(key).await
    }
}

#[tokio::test]
async fn an_ingest_committing_between_backfill_batches_is_counted_once() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    let tags = define_orders(&store).await;
    let users: Vec<String> = (0..30).map(|u| format!("u{u}")).collect();
    let orders = |n: usize| {
        let events = users.iter().map(|u| {
            json!({"type": "track", "event": "Order Completed", "userId": u, "messageId": format!("o-{u}-{n}"),
                   "timestamp": stamp(1)})
        });
        Value::Array(events.collect())
    };
    let first = vec![store_events(&store, 50, orders(1)).await, store_events(&store, 51, orders(2)).await];
    ingest(&store, &first, &RunConfig::default(), at(t0())).await.expect("ingest");
    // A third order each, arriving and ingested once the backfill's first batch has committed.
    let racing = Racing::new(&store, orders(3), 1);
    let backfilled = backfill::backfill_by(
        &racing,
        &RunConfig::load(&racing).await.expect("config"),
        &tags,
        &|_| Ok(BTreeMap::new()),
        at(t0()),
        3,
    )
    .await
    .expect("backfill");
    assert_eq!(backfilled, ["orders"]);
    assert!(racing.pending.lock().expect("lock").is_none(), "the racing ingest ran");
    // The tag is served now: one more event each makes ingest write every user's value from its state.
    assert_orders(&store, &users, 3, 99).await;
}

#[tokio::test]
async fn a_merge_between_backfill_batches_into_a_profile_already_rebuilt_is_rebuilt_again() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    let tags = users_and_visitors(&store).await;
    assert_eq!(crate::state::scan(&store).await.expect("scan").profiles.len(), 60);
    // Halfway through the backfill, each visitor logs in: 30 merges, some into profiles already rebuilt.
    let racing = Racing::new(&store, logins(0..30), 8);
    let backfilled = backfill::backfill_by(
        &racing,
        &RunConfig::load(&racing).await.expect("config"),
        &tags,
        &|_| Ok(BTreeMap::new()),
        at(t0()),
        2,
    )
    .await
    .expect("backfill");
    assert_eq!(backfilled, ["orders"]);
    assert!(racing.pending.lock().expect("lock").is_none(), "the logins came during the backfill");
    assert_eq!(crate::state::scan(&store).await.expect("scan").profiles.len(), 30, "merged");
    let users: Vec<String> = (0..30).map(|i| format!("u{i}")).collect();
    assert_orders(&store, &users, 3, 99).await;
}

/// Defines an `orders` tag, then stores and ingests 30 people's orders, each with two orders as a known user
/// (`u{i}`) and one as an anonymous visitor (`a{i}`): 60 profiles. Returns the tag checked.
async fn users_and_visitors(store: &FsStore) -> TagSet {
    let tags = define_orders(store).await;
    let order = |who: (&str, String), id: String| json!({"type": "track", "event": "Order Completed", who.0: who.1, "messageId": id, "timestamp": stamp(1)});
    let mut events = Vec::new();
    for i in 0..30 {
        events.push(order(("userId", format!("u{i}")), format!("o-{i}-1")));
        events.push(order(("userId", format!("u{i}")), format!("o-{i}-2")));
        events.push(order(("anonymousId", format!("a{i}")), format!("o-{i}-3")));
    }
    let key = store_events(store, 60, Value::Array(events)).await;
    ingest(store, &[key], &RunConfig::default(), at(t0())).await.expect("ingest");
    tags
}

/// Visitors `a{i}` logging in as users `u{i}`, for `i` in `people`.
fn logins(people: std::ops::Range<usize>) -> Value {
    let login = |i| {
        json!({"type": "identify", "anonymousId": format!("a{i}"), "userId": format!("u{i}"),
               "messageId": format!("login-{i}"), "timestamp": stamp(0)})
    };
    Value::Array(people.map(login).collect())
}

/// Defines an `orders` tag (count of `Order Completed`) in `store`; returns it checked.
async fn define_orders(store: &FsStore) -> TagSet {
    let defs = json!([{"id": "orders", "status": "active", "kind": "statistical",
                       "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "count"}}]);
    store.put(keys::CONFIG_TAGS, defs.to_string().into_bytes(), PutOptions::json()).await.expect("tags");
    let defs: Vec<TagDefinition> = serde_json::from_value(defs).expect("defs");
    TagSet::check(&defs, &Catalog::default()).expect("check")
}

/// Checks that each of `users` has `orders` orders once the tag is served: a page view each (a request
/// collected with entropy `seed`) makes ingest write their values from their state.
async fn assert_orders(store: &FsStore, users: &[String], orders: i64, seed: u8) {
    let page = |u: &String| json!({"type": "page", "userId": u, "messageId": format!("p-{u}"), "timestamp": stamp(0)});
    let key = store_events(store, seed, Value::Array(users.iter().map(page).collect())).await;
    ingest(store, &[key], &RunConfig::load(store).await.expect("config"), at(t0())).await.expect("ingest");
    for user in users {
        let stored = crate::state::lookup(store, &format!("user_id:{user}")).await.expect("lookup").expect("user");
        assert_eq!(stored.profile.tags.get("orders"), Some(&json!(orders)), "{user}: every order, once");
    }
}

#[tokio::test]
async fn the_compact_profiles_resolve_and_hold_what_the_decoded_state_does() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    // 40 people: orders as users or as visitors (every fourth, also seen as a user: two profiles); all log in
    // later with an email (10 merges).
    let mut first = Vec::new();
    let mut later = Vec::new();
    for p in 0..40 {
        let who = if p % 4 == 0 { ("anonymousId", format!("a{p}")) } else { ("userId", format!("u{p}")) };
        first.push(json!({"type": "track", "event": "Order Completed", who.0: who.1, "messageId": format!("o{p}"),
                          "timestamp": stamp(p % 7), "properties": {"revenue": p}}));
        if p % 4 == 0 {
            first.push(json!({"type": "page", "userId": format!("u{p}"), "messageId": format!("v{p}"),
                              "timestamp": stamp(1)}));
        }
        let plan = ["free", "pro"][p as usize % 2];
        later.push(json!({"type": "identify", "anonymousId": format!("a{p}"), "userId": format!("u{p}"),
                          "messageId": format!("i{p}"), "timestamp": stamp(0),
                          "traits": {"plan": plan, "email": format!("P{p}@Example.com"), "age": p}}));
    }
    let keys =
        [store_events(&store, 70, Value::Array(first)).await, store_events(&store, 71, Value::Array(later)).await];
    let tags = json!([{"id": "orders", "status": "active", "kind": "statistical",
                       "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "count"}}]);
    let audiences = json!([
        {"id": "pro", "status": "active", "when": {"field": "trait:plan", "op": "eq", "value": "pro"}},
        {"id": "buyers", "status": "active", "when": {"field": "tag:orders", "op": "gte", "value": 1}}
    ]);
    store.put(keys::CONFIG_TAGS, tags.to_string().into_bytes(), PutOptions::json()).await.expect("tags");
    store.put(keys::CONFIG_AUDIENCES, audiences.to_string().into_bytes(), PutOptions::json()).await.expect("audiences");
    ingest(&store, &keys[..1], &RunConfig::default(), at(t0())).await.expect("ingest");
    full_recompute(&store, at(t0())).await.expect("recompute");
    ingest(&store, &keys[1..], &RunConfig::default(), at(t0())).await.expect("ingest");

    let scan = crate::state::scan(&store).await.expect("scan");
    let wanted = ["pro".to_string(), "buyers".to_string(), "gone".to_string()];
    let profiles = Profiles::read(&store, None, Reading::Recompute(&wanted)).await.expect("profiles");
    assert_eq!(profiles.len(), scan.profiles.len());
    assert_eq!(scan.redirects.len(), 10, "the visitors who logged in were merged");
    assert!(scan.ids.keys().any(|k| k.starts_with("email:")), "emails are identifiers");
    // Every identifier, live profile id and absorbed profile id stands for the same profile.
    for what in scan.ids.keys().chain(scan.profiles.keys()).chain(scan.redirects.keys()) {
        assert_eq!(profiles.resolve(what).map(|n| profiles.id(n)), scan.resolve(what).map(String::as_str), "{what}");
    }
    assert_eq!(profiles.resolve("user_id:nobody"), None);
    assert!(scan.redirects.keys().all(|id| profiles.number(id).is_none()), "absorbed profiles are not live");
    // Numbered by profile shard, then id; each shard a run.
    let count = profiles.shards();
    let order: Vec<(u32, &str)> =
        (0..profiles.len() as u32).map(|n| (crate::state::shard_of(profiles.id(n), count), profiles.id(n))).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in shard, then id order");
    for (n, (shard, _)) in order.iter().enumerate() {
        assert!((profiles.shard_start(*shard)..profiles.shard_start(shard + 1)).contains(&(n as u32)));
    }
    // Traits and recorded memberships as stored.
    let mut members = 0;
    for (id, stored) in &scan.profiles {
        let n = profiles.number(id).expect("live");
        assert_eq!(profiles.id(n), id);
        let traits: Map<String, Value> =
            stored.profile.traits.iter().map(|(k, t)| (k.clone(), t.value.clone())).collect();
        assert_eq!(profiles.traits(n).expect("traits"), traits, "{id}");
        for (a, audience) in wanted.iter().enumerate() {
            let recorded = stored.profile.memberships.get(audience).is_some_and(|m| m.member);
            assert_eq!(profiles.recorded(n, a), recorded, "{id} in {audience}");
            members += usize::from(recorded);
        }
        assert!(profiles.unchanged(n, &stored.profile.memberships));
        let mut changed = stored.profile.memberships.clone();
        changed.insert("pro".into(), shared::profile::Membership { member: true, since: 1, changes: 9 });
        assert!(!profiles.unchanged(n, &changed), "a membership changed since is seen");
    }
    assert!(members >= 30, "memberships were recorded: {members}");
    assert_eq!(profiles.audience("buyers"), Some(1));
}

#[tokio::test]
async fn a_backfill_stopped_halfway_resumes_and_rebuilds_again_a_profile_that_absorbed_one_not_rebuilt() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    let tags = users_and_visitors(&store).await;
    let run = |n: i64| move |_: &str| Ok(BTreeMap::from([("run".to_string(), json!(n))]));

    // The first run stops after six batches have committed.
    let stopping = Racing::stopping(&store, 6);
    assert!(
        backfill::backfill_by(
            &stopping,
            &RunConfig::load(&stopping).await.expect("config"),
            &tags,
            &run(1),
            at(t0()),
            2
        )
        .await
        .is_err(),
        "stopped"
    );
    assert!(
        crate::snapshot::ready(&store, &Default::default()).await.expect("ready").is_empty(),
        "nothing is served yet"
    );
    let marked = |scan: &crate::state::Scan| -> BTreeSet<String> {
        scan.profiles.iter().filter(|(_, p)| p.profile.tag_state.rebuilt.is_some()).map(|(id, _)| id.clone()).collect()
    };
    let first = marked(&crate::state::scan(&store).await.expect("scan"));
    assert!(!first.is_empty() && first.len() < 60, "stopped halfway: {} of 60 rebuilt", first.len());

    // Meanwhile half the visitors log in: some merges bring a profile not rebuilt into one rebuilt.
    let key = store_events(&store, 61, logins(0..15)).await;
    ingest(&store, &[key], &RunConfig::default(), at(t0())).await.expect("ingest");

    // The next run passes over the profiles the first rebuilt (they keep its values) and finishes.
    let backfilled =
        backfill::backfill_by(&store, &RunConfig::load(&store).await.expect("config"), &tags, &run(2), at(t0()), 2)
            .await
            .expect("backfill");
    assert_eq!(backfilled, ["orders"]);
    let scan = crate::state::scan(&store).await.expect("scan");
    assert_eq!(scan.profiles.len(), 45, "merged");
    assert_eq!(marked(&scan).len(), 45, "every profile rebuilt");
    let mut runs = BTreeSet::new();
    for i in 15..30 {
        for key in [format!("user_id:u{i}"), format!("anonymous_id:a{i}")] {
            let id = scan.resolve(&key).expect("profile");
            let expected = if first.contains(id) { 1 } else { 2 };
            assert_eq!(scan.profiles[id].profile.tags.get("run"), Some(&json!(expected)), "{key}");
            runs.insert(expected);
        }
    }
    assert_eq!(runs, BTreeSet::from([1, 2]), "some profiles passed over, some rebuilt by the second run");
    let merged: Vec<String> = (0..15).map(|i| format!("u{i}")).collect();
    assert_orders(&store, &merged, 3, 98).await;
    let others: Vec<String> = (15..30).map(|i| format!("u{i}")).collect();
    assert_orders(&store, &others, 2, 99).await;
}

#[tokio::test]
async fn a_behaviour_condition_reads_a_property_no_tag_reads() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    let order = |user: &str, id: &str, properties: Value| {
        json!({"type": "track", "event": "Order Completed", "userId": user, "messageId": id, "timestamp": stamp(1),
               "properties": properties})
    };
    let key = store_events(
        &store,
        80,
        json!([
            // Long properties: the spill keeps only those read, the audience's among them.
            order(
                "ann",
                "o1",
                json!({"revenue": 10, "note": "a \"quoted\" name", "coupon": "SPRING",
                                      "details": "x".repeat(300)})
            ),
            order("bob", "o2", json!({"revenue": 20})),
            order("cyd", "o3", json!({"co\"upon": "X", "revenue": 30})),
        ]),
    )
    .await;
    ingest(&store, &[key], &RunConfig::default(), at(t0())).await.expect("ingest");
    define_orders(&store).await;
    let audiences = json!([{"id": "couponers", "status": "active", "when": {"did": {"events": ["Order Completed"],
        "properties": [{"field": "coupon", "op": "exists"}]}}}]);
    store.put(keys::CONFIG_AUDIENCES, audiences.to_string().into_bytes(), PutOptions::json()).await.expect("audiences");
    let report = full_recompute(&store, at(t0())).await.expect("recompute");
    assert_eq!(report.audiences["couponers"].size, 1, "only ann ordered with a coupon");
    let snapshot = read_json(&store, "audiences/v1/couponers/snapshot.json.gz").await;
    assert_eq!(snapshot["members"], json!([profile_of(&store, "user_id:ann").await]));
}

#[tokio::test]
async fn ingest_committing_after_every_batch_does_not_make_the_backfill_read_every_event_again() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    let tags = define_orders(&store).await;
    let users: Vec<String> = (0..30).map(|u| format!("u{u}")).collect();
    let orders = users.iter().flat_map(|u| {
        (1..=2).map(move |n| {
            json!({"type": "track", "event": "Order Completed", "userId": u, "messageId": format!("o-{u}-{n}"),
                   "timestamp": stamp(1)})
        })
    });
    let key = store_events(&store, 53, Value::Array(orders.collect())).await;
    ingest(&store, &[key], &RunConfig::default(), at(t0())).await.expect("ingest");
    // After each of the backfill's commits, ingest commits a new visitor's page view.
    let busy = Racing::busy(&store);
    let backfilled = backfill::backfill_by(
        &busy,
        &RunConfig::load(&busy).await.expect("config"),
        &tags,
        &|_| Ok(BTreeMap::new()),
        at(t0()),
        2,
    )
    .await
    .expect("backfill");
    assert_eq!(backfilled, ["orders"]);
    let visits = busy.visits.load(std::sync::atomic::Ordering::SeqCst);
    let reads = busy.raw_listings.load(std::sync::atomic::Ordering::SeqCst);
    assert!(visits >= 10, "ingest committed between the batches: {visits} times");
    // Read again at the end, the profiles are the new visitors and those rebuilt: no event is read again.
    assert_eq!(reads, 1, "every event read once (not once per batch)");
    assert_orders(&store, &users, 2, 99).await;
}

#[tokio::test]
async fn a_backfill_resumed_with_every_profile_rebuilt_reads_no_event_and_records_the_versions_ready() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    let tags = users_and_visitors(&store).await;
    let run = |n: i64| move |_: &str| Ok(BTreeMap::from([("run".to_string(), json!(n))]));
    backfill::backfill_by(&store, &RunConfig::load(&store).await.expect("config"), &tags, &run(1), at(t0()), 2)
        .await
        .expect("backfill");
    // As if the run had stopped after its last batch, before recording the versions ready.
    store.delete(keys::TAGS_READY).await.expect("delete");

    let watching = Racing::watching(&store);
    let backfilled = backfill::backfill_by(
        &watching,
        &RunConfig::load(&watching).await.expect("config"),
        &tags,
        &run(2),
        at(t0()),
        2,
    )
    .await
    .expect("backfill");
    assert_eq!(backfilled, ["orders"]);
    assert_eq!(watching.raw_listings.load(std::sync::atomic::Ordering::SeqCst), 0, "no event is read");
    assert_eq!(crate::snapshot::ready(&store, &Default::default()).await.expect("ready").get("orders"), Some(&1));
    let scan = crate::state::scan(&store).await.expect("scan");
    assert!(scan.profiles.values().all(|p| p.profile.tags.get("run") == Some(&json!(1))), "no profile rewritten");
    let users: Vec<String> = (0..30).map(|i| format!("u{i}")).collect();
    assert_orders(&store, &users, 2, 99).await;
}

#[tokio::test]
async fn the_backfill_rebuilds_from_long_properties_the_ones_its_tags_read() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    let order = |u: usize, n: usize| {
        json!({"type": "track", "event": "Order Completed", "userId": format!("u{u}"),
               "messageId": format!("o-{u}-{n}"), "timestamp": stamp(1),
               "properties": {"details": "x".repeat(300), "revenue": 10 + u}})
    };
    let orders: Vec<Value> = (0..6).flat_map(|u| [order(u, 1), order(u, 2)]).collect();
    let key = store_events(&store, 90, Value::Array(orders)).await;
    ingest(&store, &[key], &RunConfig::default(), at(t0())).await.expect("ingest");
    let defs = json!([{"id": "spend", "status": "active", "kind": "statistical",
                       "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "sum", "property": "revenue"}}]);
    store.put(keys::CONFIG_TAGS, defs.to_string().into_bytes(), PutOptions::json()).await.expect("tags");
    let defs: Vec<TagDefinition> = serde_json::from_value(defs).expect("defs");
    let tags = TagSet::check(&defs, &Catalog::default()).expect("check");
    backfill::backfill_by(
        &store,
        &RunConfig::load(&store).await.expect("config"),
        &tags,
        &|_| Ok(BTreeMap::new()),
        at(t0()),
        2,
    )
    .await
    .expect("backfill");
    // Served now: a page view each makes ingest write every user's value from the rebuilt state.
    let page = |u: usize| {
        json!({"type": "page", "userId": format!("u{u}"), "messageId": format!("p-{u}"),
                                 "timestamp": stamp(0)})
    };
    let key = store_events(&store, 91, Value::Array((0..6).map(page).collect())).await;
    ingest(&store, &[key], &RunConfig::load(&store).await.expect("config"), at(t0())).await.expect("ingest");
    for u in 0..6 {
        let stored = crate::state::lookup(&store, &format!("user_id:u{u}")).await.expect("lookup").expect("user");
        assert_eq!(stored.profile.tags.get("spend").and_then(Value::as_f64), Some(2.0 * (10 + u) as f64), "u{u}");
    }
}

#[tokio::test]
async fn properties_are_read_cleaned_alike_by_ingest_the_backfill_and_the_full_recompute_and_kept_as_sent() {
    let dir = tempfile::tempdir().expect("dir");
    let store = FsStore::open(dir.path()).expect("store");
    store
        .put(keys::CONFIG_TAGS, json!([
            {"id": "spend", "status": "active", "kind": "statistical", "aggregate": {"op": "sum", "property": "revenue"}},
            {"id": "top_category", "status": "active", "kind": "statistical",
             "aggregate": {"op": "most_frequent", "property": "category"}},
            {"id": "coupons", "status": "active", "kind": "statistical",
             "filter": {"events": ["Order Completed"], "properties": [{"field": "coupon", "op": "exists"}]},
             "aggregate": {"op": "count"}}
        ]).to_string().into_bytes(), PutOptions::json())
        .await
        .expect("tags");
    let order = |id: &str, days: i64, properties: Value| {
        json!({"type": "track", "event": "Order Completed", "messageId": id, "userId": "zoe", "timestamp": stamp(days),
               "properties": properties})
    };
    // The first batch is backfilled by the first recompute; the second is applied by ingest to ready tags.
    let batches = [
        json!([
            order("o1", 3, json!({"revenue": "12.50", "category": " Shoes ", "coupon": ""})),
            order("o2", 2, json!({"revenue": "1,000", "category": "Hats", "coupon": " X1 "}))
        ]),
        json!([
            order("o3", 1, json!({"revenue": " 7.5 ", "category": "Shoes\t", "coupon": "   "})),
            order("o4", 0, json!({"revenue": "n/a", "category": "Shoes"}))
        ]),
    ];
    let mut first_key = String::new();
    for (i, batch) in batches.into_iter().enumerate() {
        let key = store_events(&store, 40 + i as u8, batch).await;
        if i == 0 {
            first_key = key.clone();
        }
        let config = RunConfig::load(&store).await.expect("config");
        ingest(&store, &[key], &config, at(t0())).await.expect("ingest");
        if i == 0 {
            let first = full_recompute(&store, at(t0())).await.expect("recompute");
            assert_eq!(first.backfilled, ["spend", "top_category", "coupons"]);
        }
    }
    let zoe = crate::state::lookup(&store, "user_id:zoe").await.expect("lookup").expect("zoe");
    // "12.50" + "1,000" + " 7.5 " as numbers; "n/a" cannot be a number and is not summed; " Shoes " and
    // "Shoes\t" are "Shoes"; empty and blank coupons are absent.
    assert_eq!(zoe.profile.tags["spend"], json!(1020.0), "{:?}", zoe.profile.tags);
    assert_eq!(zoe.profile.tags["top_category"], json!("Shoes"));
    assert_eq!(zoe.profile.tags["coupons"], json!(1));
    let revenue = &zoe.profile.events["Order Completed"].properties["revenue"];
    assert_eq!((revenue.count, revenue.sum), (3, 1020.0), "the profile's aggregate reads the clean numbers");

    let last = full_recompute(&store, at(t0())).await.expect("recompute");
    assert!(last.backfilled.is_empty());
    let values = read_json(&store, keys::TAG_VALUES).await;
    assert_eq!(serde_json::to_value(&zoe.profile.tags).expect("json"), values["profiles"][&zoe.node.id]);

    // Other cleaning rules (revenue as sent): the states built with the old ones are rebuilt at the next full
    // recompute, and ingest's values agree with it again.
    store
        .put(
            keys::CONFIG_PROFILES,
            json!({"cleaning": {"fields": {"revenue": []}}}).to_string().into_bytes(),
            PutOptions::json(),
        )
        .await
        .expect("profiles");
    let config = RunConfig::load(&store).await.expect("config");
    assert!(config.snapshot.ready.is_empty(), "no state is ready for the new rules");
    let again = full_recompute(&store, at(t0())).await.expect("recompute");
    assert_eq!(again.backfilled, ["spend", "top_category", "coupons"]);
    let zoe = crate::state::lookup(&store, "user_id:zoe").await.expect("lookup").expect("zoe");
    let values = read_json(&store, keys::TAG_VALUES).await;
    assert_eq!(serde_json::to_value(&zoe.profile.tags).expect("json"), values["profiles"][&zoe.node.id]);
    assert_ne!(zoe.profile.tags.get("spend"), Some(&json!(1020.0)), "revenue strings are not summed now");
    assert_eq!(zoe.profile.tags["top_category"], json!("Shoes"), "categories are still trimmed");

    // The raw event keeps what was sent.
    let raw = crate::raw::read_object(&store, &first_key).await.expect("read").expect("raw object");
    let sent = raw.events.iter().find(|e| e.message_id == "o1").expect("o1");
    assert_eq!(sent.properties.as_ref().expect("properties")["category"], json!(" Shoes "));
    assert_eq!(sent.properties.as_ref().expect("properties")["revenue"], json!("12.50"));
}
