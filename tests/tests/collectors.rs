//! One core, two shells: the same scenarios through the real edge worker under `wrangler dev` (writing to a
//! real S3-compatible server on 127.0.0.1) and through the real `cdp up` (writing to a folder), with the same
//! stored results; and storage outages answered with 5xx, never with a claim of success.

use std::path::{Path, PathBuf};

use cdp_e2e::http::{post, send};
use cdp_e2e::local_s3::LocalS3;
use cdp_e2e::procs::{CdpUp, Wrangler, cdp_source_add};
use cdp_e2e::scenarios::{self, Bucket, Snapshot};
use cdp_e2e::{fixture, local_s3};
use functions::collect::{update_source_secrets, update_sources};
use functions::storage::{ObjectStore, conformance};
use shared::ids::Entropy;
use shared::source::{Sources, new_source};

struct Folder(PathBuf);

impl Bucket for Folder {
    fn snapshot(&self) -> Snapshot {
        let mut objects = Vec::new();
        for prefix in ["raw", "failed", "privacy/v1/dropped"] {
            collect_files(&self.0, &self.0.join(prefix), &mut objects);
        }
        objects.sort();
        Snapshot::decode(objects)
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(root, &path, out);
        } else {
            let key = path.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/");
            out.push((key, std::fs::read(&path).expect("read object")));
        }
    }
}

struct S3<'a>(&'a LocalS3);

impl Bucket for S3<'_> {
    fn snapshot(&self) -> Snapshot {
        let store = self.0.store();
        let objects = self.0.block_on(async {
            let mut objects = Vec::new();
            for prefix in ["raw/", "failed/", "privacy/v1/dropped/"] {
                for meta in store.list(prefix).await.expect("list") {
                    let object = store.get(&meta.key).await.expect("get").expect("listed object exists");
                    objects.push((meta.key, object.body));
                }
            }
            objects
        });
        Snapshot::decode(objects)
    }
}

/// Writes `config/sources.json` with the scenarios' sources (`e2e`, `planned` and the webhook sources) and the
/// webhook sources' secrets into the local S3 server; returns the write keys.
fn s3_source(s3: &LocalS3) -> scenarios::Keys {
    let (mut source, key) = new_source("e2e", "e2e", &mut Entropy::from_seed(rand_seed()));
    source.allowed_origins = vec!["https://*.shop.example".into()];
    let (mut planned, planned_key) = new_source("planned", "planned", &mut Entropy::from_seed(rand_seed()));
    planned.tracking_plan = Some(serde_json::from_str(scenarios::PLAN).expect("the scenarios' plan"));
    let mut sources = Sources::default();
    sources.add(source).expect("valid source");
    sources.add(planned).expect("valid source");
    let (webhooks, secrets) = scenarios::webhook_sources();
    for webhook in webhooks {
        sources.add(webhook).expect("valid webhook source");
    }
    let store = s3.store();
    let write = update_sources(&store, |all| {
        *all = sources.clone();
        Ok::<_, functions::Error>(())
    });
    s3.block_on(write).expect("write sources to S3");
    let write = update_source_secrets(&store, |all| {
        *all = secrets.clone();
        Ok::<_, functions::Error>(())
    });
    s3.block_on(write).expect("write the webhook sources' secrets to S3");
    for (object, bytes) in scenarios::suppression_files() {
        s3.block_on(s3.store().put(object, bytes, functions::storage::PutOptions::json()))
            .expect("write the suppression list and its key to S3");
    }
    scenarios::Keys { main: key, planned: planned_key }
}

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("OS randomness");
    seed
}

/// `cdp up` on a fresh folder with source `e2e` (created by `cdp source add`, origins restricted by editing
/// the file as an operator would), source `planned` with its plan (`cdp source plan`) and the webhook sources.
fn local_collector(dir: &Path) -> (CdpUp, scenarios::Keys) {
    let key = cdp_source_add(dir, "e2e");
    let path = dir.join("config/sources.json");
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("sources file")).expect("json");
    file["sources"][0]["allowedOrigins"] = serde_json::json!(["https://*.shop.example"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&file).expect("json")).expect("write sources");
    let planned = cdp_source_add(dir, "planned");
    let plan = dir.join("plan.json");
    std::fs::write(&plan, scenarios::PLAN).expect("write the plan");
    let output = std::process::Command::new(cdp_e2e::procs::cdp_bin())
        .args(["source", "plan", "planned"])
        .arg(&plan)
        .arg("--data")
        .arg(dir)
        .output()
        .expect("running cdp source plan");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The webhook sources as an operator makes them, the secret from the environment (kept out of history).
    for (id, kind, secret, mapping) in scenarios::WEBHOOK_SOURCES {
        let mut command = std::process::Command::new(cdp_e2e::procs::cdp_bin());
        command
            .args(["source", "add", id, "--id", id, "--kind", kind, "--data"])
            .arg(dir)
            .env("CDP_SIGNING_SECRET", secret);
        if let Some(mapping) = mapping {
            command.arg("--mapping").arg(cdp_e2e::repo_root().join("tests/fixtures").join(mapping));
        }
        let output = command.output().expect("running cdp source add --kind");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains(&format!("/v1/webhooks/{id}")) && !stdout.contains(secret), "{stdout}");
    }
    for (object, bytes) in scenarios::suppression_files() {
        let path = dir.join(object);
        std::fs::create_dir_all(path.parent().expect("folder")).expect("folder");
        std::fs::write(path, bytes).expect("write the suppression list and its key");
    }
    (CdpUp::start(dir), scenarios::Keys { main: key, planned })
}

#[test]
fn s3_adapter_meets_the_storage_contract_on_a_real_s3_server() {
    let s3 = LocalS3::start();
    s3.block_on(conformance::check(&s3.store(), "conformance"));
    s3.set_failing(true);
    let error = s3.block_on(s3.store().get("conformance/state/manifest.json")).expect_err("outage is an error");
    assert!(matches!(error, functions::storage::StoreError::Unavailable(_)), "{error}");
}

#[test]
fn local_collector_passes_the_scenarios_and_answers_503_when_storage_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (up, keys) = local_collector(dir.path());
    scenarios::run(&up.url, &keys, &Folder(dir.path().to_path_buf()));
    let key = keys.main;
    assert!(up.proc.output().contains("collector listening on http://127.0.0.1:"));

    // Storage outage: a file where the hour's folder must go makes every write fail.
    let before = Folder(dir.path().to_path_buf()).snapshot().objects();
    std::fs::remove_dir_all(dir.path().join("raw")).expect("remove raw/");
    std::fs::write(dir.path().join("raw"), b"in the way").expect("block raw/");
    let reply = post(&format!("{}/v1/batch", up.url), &fixture("mixed-valid-invalid-batch.json"), Some(&key));
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["success"], false);
    let after = Folder(dir.path().to_path_buf()).snapshot();
    assert_eq!(after.raw.len(), 0, "nothing claimed, nothing kept in raw/");
    assert!(after.objects() < before, "the blocked folder's objects are gone, no new ones appeared");
}

/// Runs snippet/test/worker-page.mjs: a page in headless Chromium with the snippet pointed at `collector`.
/// Returns the page's anonymous id.
fn browser_page(collector: &str, key: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let output = std::process::Command::new("node")
        .arg(root.join("snippet/test/worker-page.mjs"))
        .args([collector, key])
        .current_dir(root)
        .output()
        .expect("node (scripts/test installs it, with Chromium and playwright-core)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "browser page failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    let reply: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON from worker-page.mjs");
    reply["anonymousId"].as_str().expect("anonymousId").to_string()
}

#[test]
fn edge_worker_under_wrangler_matches_the_local_runner_and_fails_closed() {
    let s3 = LocalS3::start();
    let keys = s3_source(&s3);
    let wrangler = Wrangler::start(&[
        ("S3_ENDPOINT", &s3.endpoint),
        ("S3_URL_STYLE", "path"),
        ("S3_BUCKET", local_s3::BUCKET),
        ("S3_REGION", local_s3::REGION),
        ("S3_ACCESS_KEY_ID", local_s3::ACCESS_KEY),
        ("S3_SECRET_ACCESS_KEY", local_s3::SECRET_KEY),
        ("CONFIG_TTL_SECONDS", "0"),
    ]);
    let edge = scenarios::run(&wrangler.url, &keys, &S3(&s3));
    let key = keys.main.clone();
    // The edge attaches geo from the request's `cf` object (wrangler dev simulates one) to what people send; a
    // SaaS system's webhook comes from its servers, whose place says nothing of the customer's.
    let stored = S3(&s3).snapshot();
    let (sent, webhooks): (Vec<_>, Vec<_>) =
        stored.raw.iter().flat_map(|(_, e)| e).partition(|e| e.source_id == "e2e" || e.source_id == "planned");
    assert!(sent.iter().all(|e| e.enrichment.geo.as_ref().is_some_and(|g| g.country.is_some())));
    assert!(
        webhooks.len() == 4 && webhooks.iter().all(|e| e.enrichment.geo.is_none() && e.context.get("ip").is_none())
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let (up, local_keys) = local_collector(dir.path());
    let local = scenarios::run(&up.url, &local_keys, &Folder(dir.path().to_path_buf()));
    assert_eq!(edge.accepted.len(), 21);
    assert_eq!(edge, local, "one core, two shells: the same stored results");

    // The browser library from the worker, and a page in headless Chromium sending through it.
    let library = send("GET", &format!("{}/cdp.js", wrangler.url), b"", &[]).expect("GET /cdp.js");
    assert_eq!((library.status, library.header("etag")), (200, Some(shared::snippet::etag())));
    assert_eq!(library.body, shared::snippet::LIBRARY);
    assert_eq!(library.header("content-type"), Some("application/javascript; charset=utf-8"));
    let again = send("GET", &format!("{}/cdp.js", wrangler.url), b"", &[("if-none-match", shared::snippet::etag())]);
    assert_eq!(again.expect("GET /cdp.js again").status, 304);
    let anonymous_id = browser_page(&wrangler.url, &key);
    let sent: Vec<_> = S3(&s3)
        .snapshot()
        .raw
        .into_iter()
        .flat_map(|(_, events)| events)
        .filter(|e| e.anonymous_id.as_deref() == Some(anonymous_id.as_str()))
        .collect();
    let names: Vec<_> = sent.iter().map(|e| (e.kind.to_string(), e.event.as_deref(), e.user_id.as_deref())).collect();
    let expected = [("page", None, None), ("track", Some("Edge Viewed"), None), ("identify", None, Some("u-edge"))];
    assert_eq!(names, expected.map(|(kind, event, user)| (kind.to_string(), event, user)));
    assert_eq!(sent[0].context["library"]["name"], "cdp.js");
    assert_eq!(sent[0].context["campaign"]["source"], "edge");

    // Outage: the S3 server answers 500 to everything. The worker must answer 5xx and store nothing.
    let before = S3(&s3).snapshot().objects();
    s3.set_failing(true);
    let reply = post(&format!("{}/v1/batch", wrangler.url), &fixture("mixed-valid-invalid-batch.json"), Some(&key));
    assert!((500..600).contains(&reply.status), "got {} {}", reply.status, reply.body);
    assert_ne!(reply.json()["success"], true);
    s3.set_failing(false);
    assert_eq!(S3(&s3).snapshot().objects(), before, "nothing was stored during the outage");

    // Stopped: nothing listens at the endpoint any more.
    let url = wrangler.url.clone();
    drop(s3);
    let reply = post(&format!("{url}/v1/batch"), &fixture("mixed-valid-invalid-batch.json"), Some(&key));
    assert!((500..600).contains(&reply.status), "got {} {}", reply.status, reply.body);
    drop(wrangler);
}
