//! The real ingest Lambda binary, running its real `lambda_runtime` loop against a Runtime API emulator on
//! 127.0.0.1, handles a real-shaped SQS-wrapped S3 notification and updates state in a real S3-compatible
//! server; a message that is not a notification is reported as a partial batch failure. Then the tagging
//! binary, on a scheduled event, computes tags and audiences from that state, and the activation binary, on the
//! notification of the outbox object the recompute wrote, delivers the audience entry to a partner receiver.
//! The API binary (`lambda_http`) serves real-shaped function-URL requests from the same state. The functions
//! seal personal traits under a data key wrapped by a real KMS-compatible server (moto) on 127.0.0.1.

use std::process::Command;
use std::time::Duration;

use cdp_e2e::lambda_api::RuntimeApi;
use cdp_e2e::local_kms::LocalKms;
use cdp_e2e::local_s3::{self, LocalS3};
use cdp_e2e::partner::Partner;
use cdp_e2e::procs::Proc;
use cdp_e2e::{fixture, repo_root, wall_clock};
use functions::state::lookup;
use functions::storage::{ObjectStore, PutOptions};
use serde_json::{Value, json};
use shared::collect::{CollectRequest, Collected, Endpoint, collect};
use shared::ids::Entropy;
use shared::source::{Sources, new_source};
use shared::storage::keys;
use shared::time::UtcTime;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Starts a function binary as Lambda would, against the Runtime API emulator `api` and the S3 server `s3`.
fn start_function(bin: &std::path::Path, name: &str, api: &RuntimeApi, s3: &LocalS3, kms: &LocalKms) -> Proc {
    Proc::spawn(&format!("lambda-{name}"), function_command(bin, name, api, s3, kms))
}

/// The command [`start_function`] runs.
fn function_command(bin: &std::path::Path, name: &str, api: &RuntimeApi, s3: &LocalS3, kms: &LocalKms) -> Command {
    let mut command = Command::new(bin);
    command
        .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "e2e")
        .env("CDP_BUCKET", local_s3::BUCKET)
        .env("AWS_REGION", local_s3::REGION)
        .env("AWS_ACCESS_KEY_ID", local_s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", local_s3::SECRET_KEY)
        .env("AWS_ENDPOINT_URL_S3", &s3.endpoint)
        .env("CDP_KMS_KEY_ID", &kms.key_arn)
        .env("AWS_ENDPOINT_URL_KMS", &kms.endpoint);
    command
}

/// The fixture batch collected as the collector does and stored as one raw object in `s3`: its key, the
/// source's write key, and when it was received.
fn store_raw_object(s3: &LocalS3) -> (String, String, UtcTime) {
    let (source, key) = new_source("web", "Web", &mut Entropy::from_seed([1; 32]));
    let mut sources = Sources::default();
    sources.add(source).expect("source");
    let body = fixture("segment-analytics-js-batch.json").replace("__WRITE_KEY__", &key);
    // Received a minute ago by the clock the functions under test read: nothing here depends on today's date.
    let now = wall_clock().add_millis(-60_000).expect("time");
    let Collected::Kept(batch) = collect(
        &CollectRequest::new(Endpoint::Batch, body.as_bytes()),
        &sources,
        now,
        &mut Entropy::from_seed([2; 32]),
    ) else {
        panic!("rejected")
    };
    let (object_key, bytes) = batch.accepted_object().expect("accepted");
    s3.block_on(s3.store().put(&object_key, bytes, PutOptions::ndjson_gz())).expect("put raw object");
    (object_key, key, now)
}

#[test]
fn ingest_lambda_runs_its_runtime_loop_on_an_sqs_batch() {
    let bin = repo_root().join("target/debug/ingest");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p cdp-functions` first (the test command does)",
        bin.display()
    );
    let s3 = LocalS3::start();
    let store = s3.store();

    // A raw object, as the collector writes it.
    let (object_key, _, _) = store_raw_object(&s3);

    // The real-shaped SQS event, pointed at that object (S3 URL-encodes keys in notifications).
    let mut event: Value = serde_json::from_str(&fixture("aws-sqs-s3-notification.json")).expect("fixture");
    let mut notification: Value =
        serde_json::from_str(event["Records"][0]["body"].as_str().expect("body")).expect("json");
    notification["Records"][0]["s3"]["object"]["key"] = json!(object_key.replace('=', "%3D"));
    notification["Records"][0]["s3"]["bucket"]["name"] = json!(local_s3::BUCKET);
    event["Records"][0]["body"] = json!(notification.to_string());

    let api = RuntimeApi::start();
    let kms = LocalKms::start();
    let function = start_function(&bin, "ingest", &api, &s3, &kms);

    let response = api
        .invoke(&event, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", function.log_tail()))
        .unwrap_or_else(|e| panic!("the function reported an error: {e}\n{}", function.log_tail()));
    let response: Value = serde_json::from_str(&response).expect("JSON response");
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "9a0c5f1e-1111-4bbb-8ccc-000000000003"}]}),
        "only the message that is not a notification is redelivered"
    );
    // The function made the data key with KMS; this process unwraps it with the same key to read the state.
    let stored_key = s3.block_on(store.get(keys::TRAITS_DATA_KEY)).expect("get").expect("data key");
    let stored_key = String::from_utf8(stored_key.body).expect("UTF-8");
    assert!(stored_key.contains(&kms.key_arn), "wrapped by the KMS key: {stored_key}");
    s3.block_on(functions::vault::ensure(&store, &functions::vault::KeySource::Kms(kms.settings())))
        .expect("the data key unwraps with KMS");
    let profile = s3.block_on(lookup(&store, "user_id:user-1042")).expect("lookup").expect("profile in S3 state");
    assert_eq!(profile.profile.events.len(), 3, "page, Product Added and identify applied");
    // Cleaned (case-folded) on the profile, and opened for the reader.
    assert_eq!(profile.profile.traits["email"].value, json!("jane.doe@example.com"), "opened for the reader");
    // At rest, the state holds the email only sealed.
    let state = s3.block_on(store.list("state/")).expect("list state");
    assert!(!state.is_empty());
    for object in state {
        let body = s3.block_on(store.get(&object.key)).expect("get").expect("object").body;
        let body = if body.starts_with(&[0x1f, 0x8b]) {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut text).expect("gunzip");
            text
        } else {
            body
        };
        let text = String::from_utf8_lossy(&body);
        assert!(!text.to_lowercase().contains("jane.doe@example.com"), "{} holds the email in clear", object.key);
    }

    // The same notification again (SQS delivers at least once): nothing changes, nothing fails.
    let again = api.invoke(&event, Duration::from_secs(60)).expect("invoke").expect("response");
    assert_eq!(
        serde_json::from_str::<Value>(&again).expect("json")["batchItemFailures"].as_array().map(Vec::len),
        Some(1)
    );
    let after = s3.block_on(lookup(&store, "user_id:user-1042")).expect("lookup").expect("profile");
    assert_eq!(after, profile);
    drop(function);

    // The tagging function, on an EventBridge scheduled event, computes tags and audiences from that state.
    let tags = json!([{"id": "views", "status": "active", "kind": "statistical", "filter": {"types": ["page"]},
                       "aggregate": {"op": "count"}}]);
    let audiences =
        json!([{"id": "viewers", "status": "active", "when": {"field": "tag:views", "op": "gte", "value": 1}}]);
    s3.block_on(store.put("config/tags.json", tags.to_string().into_bytes(), PutOptions::json())).expect("tags");
    s3.block_on(store.put("config/audiences.json", audiences.to_string().into_bytes(), PutOptions::json()))
        .expect("audiences");
    let partner = Partner::start(SECRET);
    let destinations = json!([{"id": "crm", "url": partner.url("/hook"), "secret": SECRET, "send": {"audiences": ["viewers"]},
                               "batching": {"maxWaitMs": 0}}]);
    s3.block_on(store.put("config/destinations.json", destinations.to_string().into_bytes(), PutOptions::json()))
        .expect("destinations");
    let api = RuntimeApi::start();
    let function = start_function(&repo_root().join("target/debug/tagging"), "tagging", &api, &s3, &kms);
    // EventBridge's time of the schedule (whole seconds): now, after the events were received.
    let at = UtcTime::from_unix_millis(wall_clock().unix_millis() / 1000 * 1000).expect("time");
    let scheduled = json!({"version": "0", "id": "5f1e7b2a-0000-4000-8000-000000000001", "detail-type": "Scheduled Event",
                           "source": "aws.events", "account": "123456789012", "time": at.to_string(),
                           "region": "eu-central-1", "resources": ["arn:aws:events:eu-central-1:123456789012:rule/cdp-tagging"],
                           "detail": {}});
    let report = api
        .invoke(&scheduled, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", function.log_tail()))
        .unwrap_or_else(|e| panic!("the function reported an error: {e}\n{}", function.log_tail()));
    let report: Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(report["computedAt"], at.unix_millis());
    assert_eq!(report["tags"]["views"]["withValue"], report["profiles"]);
    assert_eq!(report["audiences"]["viewers"]["entered"], 1);
    let snapshot = s3.block_on(store.get("audiences/v1/viewers/snapshot.json.gz")).expect("get").expect("snapshot");
    let snapshot: Value =
        serde_json::from_slice(&shared::storage::gunzip(&snapshot.body).expect("gzip")).expect("JSON");
    assert_eq!(snapshot["members"], json!([profile.node.id]));
    drop(function);

    // The recompute put the entry in the outbox; the activation function, notified of that object through SQS,
    // delivers it, signed, and empties the outbox.
    let outbox = s3.block_on(store.list("deliveries/v1/outbox/")).expect("list");
    assert_eq!(outbox.len(), 1);
    let mut event: Value = serde_json::from_str(&fixture("aws-sqs-s3-notification.json")).expect("fixture");
    let mut notification: Value =
        serde_json::from_str(event["Records"][0]["body"].as_str().expect("body")).expect("json");
    notification["Records"][0]["s3"]["object"]["key"] = json!(outbox[0].key);
    event["Records"][0]["body"] = json!(notification.to_string());
    event["Records"].as_array_mut().expect("records").truncate(1);
    let api = RuntimeApi::start();
    let mut command = function_command(&repo_root().join("target/debug/activation"), "activation", &api, &s3, &kms);
    command.env("CDP_WEBHOOKS_LOOPBACK", "true");
    let function = Proc::spawn("lambda-activation", command);
    let response = api
        .invoke(&event, Duration::from_secs(60))
        .unwrap_or_else(|e| {
            panic!(
                "{e}
{}",
                function.log_tail()
            )
        })
        .unwrap_or_else(|e| {
            panic!(
                "the function reported an error: {e}
{}",
                function.log_tail()
            )
        });
    assert_eq!(serde_json::from_str::<Value>(&response).expect("json"), json!({"batchItemFailures": []}));
    let received = partner.received("/hook");
    assert_eq!(received.len(), 1, "{}", function.log_tail());
    assert!(received[0].verified);
    let item = &received[0].body["data"]["items"][0];
    assert_eq!((item["type"].as_str(), item["audience"]["id"].as_str()), (Some("audience.entered"), Some("viewers")));
    assert_eq!(item["profile"]["id"], json!(profile.node.id));
    assert!(s3.block_on(store.list("deliveries/v1/outbox/")).expect("list").is_empty());
    drop(function);
}

/// A function-URL request (payload format 2.0) with `method`, `path`, `authorization` and `body`.
fn function_url_request(method: &str, path: &str, authorization: &str, body: Option<&Value>) -> Value {
    let mut request: Value = serde_json::from_str(&fixture("aws-lambda-function-url-request.json")).expect("fixture");
    request["rawPath"] = json!(path);
    request["requestContext"]["http"]["path"] = json!(path);
    request["requestContext"]["http"]["method"] = json!(method);
    request["headers"]["authorization"] = json!(authorization);
    if let Some(body) = body {
        request["body"] = json!(body.to_string());
        request["headers"]["content-type"] = json!("application/json");
    }
    request
}

#[test]
fn api_lambda_serves_function_url_requests_through_its_runtime_loop() {
    let s3 = LocalS3::start();
    let store = s3.store();
    let (object_key, key, now) = store_raw_object(&s3);
    let config = functions::snapshot::RunConfig::default();
    s3.block_on(functions::ingest::ingest(&store, &[object_key], &config, now)).expect("ingest");
    let admin = s3
        .block_on(functions::api::update_keys(&store, |keys| {
            let scopes = [shared::access::Scope::Admin].into();
            keys.create("e2e", scopes, "e2e", now, &mut Entropy::from_seed([9; 32]))
                .map_err(functions::api::ApiError::invalid)
        }))
        .expect("admin key")
        .key;

    let api = RuntimeApi::start();
    let kms = LocalKms::start();
    let function = start_function(&repo_root().join("target/debug/api"), "api", &api, &s3, &kms);
    let call = |request: &Value| -> Value {
        let response = api
            .invoke(request, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}\n{}", function.log_tail()))
            .unwrap_or_else(|e| panic!("the function reported an error: {e}\n{}", function.log_tail()));
        serde_json::from_str(&response).expect("JSON response")
    };
    let bearer = format!("Bearer {admin}");

    let response = call(&function_url_request("GET", "/v1/profiles/user_id:user-1042", &bearer, None));
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["headers"]["content-type"], "application/json");
    let profile: Value = serde_json::from_str(response["body"].as_str().expect("body")).expect("JSON body");
    // The function made the data key at its start (the state before it was written in clear, and still reads).
    s3.block_on(functions::vault::ensure(&store, &functions::vault::KeySource::Kms(kms.settings())))
        .expect("the data key unwraps with KMS");
    let stored = s3.block_on(lookup(&store, "user_id:user-1042")).expect("lookup").expect("profile");
    assert_eq!(profile["id"], json!(stored.node.id));
    assert_eq!(profile["events"]["Product Added"]["count"], 1);

    // A body through the function URL: a key created, then refused without the scope.
    let create = json!({"name": "reader", "scopes": ["config:read"]});
    let response = call(&function_url_request("POST", "/v1/api-keys", &bearer, Some(&create)));
    assert_eq!(response["statusCode"], 201, "{response}");
    let created: Value = serde_json::from_str(response["body"].as_str().expect("body")).expect("JSON");
    let reader = format!("Bearer {}", created["key"].as_str().expect("key"));
    let response = call(&function_url_request("GET", "/v1/profiles/user_id:user-1042", &reader, None));
    assert_eq!(response["statusCode"], 403, "{response}");
    let response = call(&function_url_request("GET", "/v1/profiles/user_id:user-1042", &format!("Basic {key}"), None));
    assert_eq!(response["statusCode"], 401, "a write key: {response}");
    assert_eq!(response["headers"]["www-authenticate"], "Bearer");
    let audit = s3.block_on(store.list("audit/v1/")).expect("list");
    let actions: Vec<String> = audit
        .iter()
        .map(|meta| {
            let object = s3.block_on(store.get(&meta.key)).expect("get").expect("record");
            serde_json::from_slice::<Value>(&object.body).expect("JSON")["action"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(actions, ["profile.read", "api_key.create"], "the read and the key's creation, in the audit log in S3");
    drop(function);
}

/// The real import binary: a CSV put under `imports/<source>/` beside the source's `mapping.json` in a real
/// S3-compatible server, notified through SQS, becomes raw events (bad rows quarantined with their row), with
/// its checkpoint marked complete.
#[test]
fn import_lambda_imports_a_file_put_under_imports_through_its_runtime_loop() {
    let bin = repo_root().join("target/debug/import");
    assert!(bin.exists(), "{} is missing: run `cargo build -p cdp-functions` first", bin.display());
    let s3 = LocalS3::start();
    let store = s3.store();
    let (source, _) = new_source("crm", "CRM", &mut Entropy::from_seed([5; 32]));
    let mut sources = Sources::default();
    sources.add(source).expect("source");
    s3.block_on(store.put(keys::CONFIG_SOURCES, sources.to_json(), PutOptions::json())).expect("sources");
    let mapping = br#"{"type": "identify", "userId": {"column": "id"},
        "traits": {"name": {"column": "name"}, "age": {"column": "age", "type": "number"}}}"#;
    s3.block_on(store.put("imports/crm/mapping.json", mapping.to_vec(), PutOptions::json())).expect("mapping");
    let csv = "id,name,age\nc-1,Li Lei,31\nc-2,Han Meimei,\nc-3,Bad Age,thirty\n";
    s3.block_on(store.put("imports/crm/contacts 2026.csv", csv.as_bytes().to_vec(), PutOptions::json())).expect("csv");

    let notification = json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": local_s3::BUCKET}, "object": {"key": "imports/crm/contacts+2026.csv", "size": csv.len()}}}]});
    let event = json!({"Records": [{"messageId": "5f1e9a0c-2222-4bbb-8ccc-000000000001", "eventSource": "aws:sqs",
        "body": notification.to_string(), "attributes": {"ApproximateReceiveCount": "1"}}]});
    let api = RuntimeApi::start();
    let kms = LocalKms::start();
    let mut command = function_command(&bin, "import", &api, &s3, &kms);
    command.env("CDP_IMPORT_MARGIN_SECONDS", "5");
    let function = Proc::spawn("lambda-import", command);
    let response = api
        .invoke(&event, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", function.log_tail()))
        .unwrap_or_else(|e| panic!("the function reported an error: {e}\n{}", function.log_tail()));
    let response: Value = serde_json::from_str(&response).expect("JSON response");
    assert_eq!(response, json!({"batchItemFailures": []}), "{}", function.log_tail());

    let raw = s3.block_on(store.list("raw/")).expect("list raw/");
    let mut users = Vec::new();
    for meta in &raw {
        let body = s3.block_on(store.get(&meta.key)).expect("get").expect("object").body;
        let events: Vec<shared::event::CanonicalEvent> = shared::storage::decode_ndjson_gz(&body).expect("events");
        users.extend(events.into_iter().map(|e| (e.source_id, e.user_id)));
    }
    assert_eq!(
        users,
        [("crm".to_string(), Some("c-1".to_string())), ("crm".to_string(), Some("c-2".to_string()))],
        "{}",
        function.log_tail()
    );
    let failed = s3.block_on(store.list("failed/imports/crm/")).expect("list failed/");
    assert_eq!(failed.len(), 1, "the bad row, with its row and reason");
    let checkpoints = s3.block_on(store.list("ingest/imports/crm/")).expect("list checkpoints");
    let checkpoint = s3.block_on(store.get(&checkpoints[0].key)).expect("get").expect("checkpoint").body;
    let checkpoint: Value = serde_json::from_slice(&checkpoint).expect("json");
    assert_eq!((checkpoint["complete"].clone(), checkpoint["accepted"].clone()), (json!(true), json!(2)));
}
