//! The Terraform module (infra/) and the code agree: every Lambda binary is deployed and every deployed function
//! has a binary; the environment the module sets is what the code reads; the bucket notifications watch the
//! storage layout's prefixes; no IAM policy grants `*` actions or `*` resources where a narrower one works.

use std::collections::BTreeSet;
use std::path::Path;

use cdp_e2e::repo_root;
use hcl::{Block, Body, Expression, ObjectKey};

/// Every `.tf` file of the module (not the examples), parsed.
fn module() -> Vec<(String, Body)> {
    let dir = repo_root().join("infra");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("infra/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "tf") {
            let text = std::fs::read_to_string(&path).expect("read");
            let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            out.push((path.file_name().expect("name").to_string_lossy().into_owned(), body));
        }
    }
    assert!(out.len() >= 5, "the module's files: {:?}", out.iter().map(|(n, _)| n).collect::<Vec<_>>());
    out
}

fn blocks<'b>(body: &'b Body, identifier: &str) -> impl Iterator<Item = &'b Block> + 'b {
    let identifier = identifier.to_string();
    body.blocks().filter(move |b| b.identifier() == identifier)
}

fn label(block: &Block, i: usize) -> String {
    block.labels().get(i).map(|l| l.as_str().to_string()).unwrap_or_default()
}

fn attribute<'b>(body: &'b Body, key: &str) -> Option<&'b Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

/// A local value of the module.
fn local<'m>(module: &'m [(String, Body)], name: &str) -> &'m Expression {
    module
        .iter()
        .flat_map(|(_, body)| blocks(body, "locals"))
        .find_map(|block| attribute(block.body(), name))
        .unwrap_or_else(|| panic!("local.{name} is defined"))
}

fn key_text(key: &ObjectKey) -> String {
    match key {
        ObjectKey::Identifier(id) => id.to_string(),
        ObjectKey::Expression(Expression::String(s)) => s.clone(),
        ObjectKey::Expression(other) => hcl::format::to_string(other).unwrap_or_default(),
        _ => String::new(),
    }
}

fn object(expr: &Expression) -> Vec<(String, &Expression)> {
    match expr {
        Expression::Object(map) => map.iter().map(|(k, v)| (key_text(k), v)).collect(),
        other => panic!("expected an object, found {other:?}"),
    }
}

fn strings(expr: &Expression) -> Vec<String> {
    match expr {
        Expression::Array(items) => {
            items.iter().filter_map(|e| if let Expression::String(s) = e { Some(s.clone()) } else { None }).collect()
        }
        Expression::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Every object key anywhere inside `expr` (environment maps are objects, possibly inside `merge(...)`).
fn object_keys(expr: &Expression, out: &mut BTreeSet<String>) {
    match expr {
        Expression::Object(map) => {
            for (k, v) in map.iter() {
                out.insert(key_text(k));
                object_keys(v, out);
            }
        }
        Expression::FuncCall(call) => call.args.iter().for_each(|a| object_keys(a, out)),
        Expression::Array(items) => items.iter().for_each(|a| object_keys(a, out)),
        _ => {}
    }
}

/// The `[[bin]]` names of functions/Cargo.toml.
fn binaries() -> BTreeSet<String> {
    let manifest = std::fs::read_to_string(repo_root().join("functions/Cargo.toml")).expect("functions/Cargo.toml");
    let mut out = BTreeSet::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(name) = line.strip_prefix("name = ") {
            out.insert(name.trim_matches('"').to_string());
        }
    }
    out
}

/// Environment variables the functions' code reads: string literals named `CDP_…` or `AWS_…`.
fn variables_read(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            variables_read(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read");
            for (i, literal) in text.split('"').enumerate() {
                let named = (literal.starts_with("CDP_") || literal.starts_with("AWS_"))
                    && literal.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if i % 2 == 1 && named {
                    out.insert(literal.to_string());
                }
            }
        }
    }
}

#[test]
fn every_binary_is_deployed_and_every_function_has_a_binary() {
    let module = module();
    let deployed: BTreeSet<String> = object(local(&module, "functions")).into_iter().map(|(k, _)| k).collect();
    assert_eq!(deployed, binaries(), "local.functions in infra/main.tf and the [[bin]]s of functions/Cargo.toml");
    let function = module
        .iter()
        .flat_map(|(_, b)| blocks(b, "resource"))
        .find(|b| label(b, 0) == "aws_lambda_function" && label(b, 1) == "function")
        .expect("aws_lambda_function.function");
    let body = function.body();
    assert_eq!(attribute(body, "runtime"), Some(&Expression::String("provided.al2023".into())));
    assert_eq!(attribute(body, "handler"), Some(&Expression::String("bootstrap".into())));
    assert_eq!(attribute(body, "architectures").map(strings), Some(vec!["arm64".to_string()]));
    let for_each = hcl::format::to_string(attribute(body, "for_each").expect("for_each")).unwrap_or_default();
    assert_eq!(for_each.trim(), "local.functions", "one function per binary");
    let filename = hcl::format::to_string(attribute(body, "filename").expect("filename")).unwrap_or_default();
    assert!(filename.contains("${each.key}/bootstrap.zip"), "the build's layout: {filename}");
}

#[test]
fn the_environment_set_is_the_environment_read() {
    let module = module();
    let mut set = BTreeSet::new();
    let function = module
        .iter()
        .flat_map(|(_, b)| blocks(b, "resource"))
        .find(|b| label(b, 0) == "aws_lambda_function")
        .expect("aws_lambda_function");
    for environment in blocks(function.body(), "environment") {
        object_keys(attribute(environment.body(), "variables").expect("variables"), &mut set);
    }
    for (_, spec) in object(local(&module, "functions")) {
        for (key, value) in object(spec) {
            if key == "environment" {
                object_keys(value, &mut set);
            }
        }
    }
    let mut read = BTreeSet::new();
    variables_read(&repo_root().join("functions/src"), &mut read);
    assert!(read.contains("CDP_BUCKET"), "{read:?}");
    // RUST_LOG is read by the log filter (tracing-subscriber's EnvFilter::try_from_default_env), MALLOC_ARENA_MAX
    // by the C library's allocator.
    let by_others = ["RUST_LOG", "MALLOC_ARENA_MAX"];
    let unread: Vec<&String> = set.iter().filter(|v| !read.contains(*v) && !by_others.contains(&v.as_str())).collect();
    assert!(unread.is_empty(), "the module sets variables no code reads: {unread:?}");
    assert!(set.contains("CDP_BUCKET"), "every function needs its bucket: {set:?}");
    assert!(set.contains("CDP_PRIVACY_GRACE_SECONDS"), "{set:?}");
    assert!(set.contains("CDP_KMS_KEY_ID"), "personal traits are sealed under the deployment's KMS key: {set:?}");
    // The tagging function runs with the malloc arenas its benchmark measured.
    let tagging = object(local(&module, "functions")).into_iter().find(|(name, _)| name == "tagging").expect("tagging");
    let environment = object(tagging.1).into_iter().find(|(key, _)| key == "environment").expect("environment").1;
    let arenas = object(environment).into_iter().find(|(key, _)| key == "MALLOC_ARENA_MAX").map(|(_, v)| v.clone());
    assert_eq!(arenas, Some(Expression::String(functions::tagging::MALLOC_ARENAS.into())), "MALLOC_ARENA_MAX");
    assert!(!set.contains("CDP_WEBHOOKS_LOOPBACK"), "loopback webhooks are for local tests only");
    // Variables the code reads that the module leaves to their defaults or to the Lambda runtime.
    let left: BTreeSet<&str> = read.iter().map(String::as_str).filter(|v| !set.contains(*v)).collect();
    let expected: BTreeSet<&str> = [
        // Set by the Lambda runtime.
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        // Optional: an S3-compatible endpoint, the state cache's size, loopback webhooks (local tests only).
        "AWS_ENDPOINT_URL_S3",
        // A KMS-compatible endpoint, a master key file in place of KMS (local tests only).
        "AWS_ENDPOINT_URL_KMS",
        "CDP_MASTER_KEY_FILE",
        "CDP_STATE_CACHE_MB",
        "CDP_WEBHOOKS_LOOPBACK",
    ]
    .into();
    assert_eq!(left, expected, "a new variable the code reads must be set by the module or listed here");
}

#[test]
fn notifications_watch_the_storage_layout() {
    let module = module();
    assert_eq!(local(&module, "raw_prefix"), &Expression::String(shared::storage::ObjectKind::Raw.prefix().into()));
    assert_eq!(local(&module, "outbox_prefix"), &Expression::String(functions::activation::outbox::OUTBOX.into()));
    assert_eq!(local(&module, "imports_prefix"), &Expression::String(shared::storage::keys::IMPORTS.into()));
    let notification = module
        .iter()
        .flat_map(|(_, b)| blocks(b, "resource"))
        .find(|b| label(b, 0) == "aws_s3_bucket_notification")
        .expect("aws_s3_bucket_notification");
    let mut watched = BTreeSet::new();
    for queue in blocks(notification.body(), "queue") {
        let prefix = hcl::format::to_string(attribute(queue.body(), "filter_prefix").expect("filter_prefix"))
            .unwrap_or_default();
        let target =
            hcl::format::to_string(attribute(queue.body(), "queue_arn").expect("queue_arn")).unwrap_or_default();
        watched.insert((prefix.trim().to_string(), target.trim().to_string()));
    }
    let expected: BTreeSet<(String, String)> = [
        ("local.raw_prefix".to_string(), "aws_sqs_queue.work[\"ingest\"].arn".to_string()),
        ("local.outbox_prefix".to_string(), "aws_sqs_queue.work[\"activation\"].arn".to_string()),
        ("local.imports_prefix".to_string(), "aws_sqs_queue.work[\"import\"].arn".to_string()),
    ]
    .into();
    assert_eq!(watched, expected);
    // Every prefix a function may touch is part of the layout.
    let layout = [
        "raw/",
        "failed/",
        "imports/",
        "ingest/",
        "keys/",
        "secrets/",
        "state/",
        "lake/",
        "audiences/",
        "deliveries/",
        "config/",
        "access/",
        "audit/",
        "privacy/",
        "tags/",
        "products/",
        "catalog/",
        "analysis/",
    ];
    assert!(shared::storage::keys::ANALYSIS_RESULTS.starts_with("analysis/"));
    for (function, access) in object(local(&module, "bucket_access")) {
        for (action, prefixes) in object(access) {
            for prefix in strings(prefixes) {
                assert!(
                    layout.iter().any(|top| prefix.starts_with(top)),
                    "{function}.{action}: {prefix} is not in the layout"
                );
            }
        }
    }
}

#[test]
fn no_policy_grants_everything_where_less_works() {
    let module = module();
    let mut checked = 0;
    for (file, body) in &module {
        for document in blocks(body, "data").filter(|b| label(b, 0) == "aws_iam_policy_document") {
            let name = label(document, 1);
            // In a key policy, the resource "*" is the key itself (AWS's default key policy).
            let key_policy = name == "key";
            let mut statements: Vec<&Body> = blocks(document.body(), "statement").map(Block::body).collect();
            for dynamic in blocks(document.body(), "dynamic") {
                statements.extend(blocks(dynamic.body(), "content").map(Block::body));
            }
            for statement in statements {
                checked += 1;
                let deny = attribute(statement, "effect") == Some(&Expression::String("Deny".into()));
                let actions = attribute(statement, "actions").map(strings).unwrap_or_default();
                let resources = attribute(statement, "resources").map(strings).unwrap_or_default();
                if deny {
                    continue; // Denying everything over plain HTTP is the point of those statements.
                }
                for action in &actions {
                    assert!(action != "*" && (!action.ends_with(":*") || key_policy), "{file}: {name} grants {action}");
                }
                assert!(
                    !resources.iter().any(|r| r == "*") || key_policy,
                    "{file}: {name} grants on every resource ({actions:?})"
                );
            }
        }
    }
    assert!(checked >= 10, "policy statements found: {checked}");
}

#[test]
fn providers_are_pinned() {
    let module = module();
    let terraform = module.iter().flat_map(|(_, b)| blocks(b, "terraform")).next().expect("a terraform block");
    assert!(attribute(terraform.body(), "required_version").is_some());
    let providers = blocks(terraform.body(), "required_providers").next().expect("required_providers");
    let aws = object(attribute(providers.body(), "aws").expect("aws"));
    assert!(
        aws.iter().any(|(k, v)| k == "version" && matches!(v, Expression::String(s) if s.starts_with("~> 5."))),
        "{aws:?}"
    );
}

/// A string attribute's text as written (a template stays a template).
fn text(expr: &Expression) -> String {
    match expr {
        Expression::String(s) => s.clone(),
        Expression::TemplateExpr(t) => t.to_string(),
        other => hcl::format::to_string(other).unwrap_or_default(),
    }
}

#[test]
fn the_glue_table_declares_the_lake_parts_schema_and_athena_encrypts_its_results() {
    let module = module();
    let resources: Vec<&Block> = module.iter().flat_map(|(_, b)| blocks(b, "resource")).collect();
    let table = resources
        .iter()
        .find(|b| label(b, 0) == "aws_glue_catalog_table" && label(b, 1) == "events")
        .expect("a Glue table for the events");
    let storage = blocks(table.body(), "storage_descriptor").next().expect("storage_descriptor");
    let declared: Vec<(String, String)> = blocks(storage.body(), "columns")
        .map(|c| {
            let field = |k: &str| text(attribute(c.body(), k).unwrap_or_else(|| panic!("a column's {k}")));
            (field("name"), field("type"))
        })
        .collect();
    assert_eq!(
        declared,
        functions::lake::catalog_columns(),
        "the Glue columns are the Parquet parts' schema, in order"
    );
    assert!(declared.iter().all(|(_, t)| !t.starts_with("unsupported")), "{declared:?}");

    // The table's location and its partitions' are where compaction writes the parts (`lake/events/<day>/`).
    let location = text(local(&module, "lake_location"));
    assert!(location.ends_with(&format!("/{}", functions::lake::EVENTS)), "{location}");
    let parameters = object(attribute(table.body(), "parameters").expect("parameters"));
    let parameter = |k: &str| {
        parameters.iter().find(|(key, _)| key == k).map(|(_, v)| text(v)).unwrap_or_else(|| panic!("parameter {k}"))
    };
    assert_eq!(parameter("projection.enabled"), "true");
    assert_eq!(parameter("projection.dt.format"), "yyyy-MM-dd");
    assert!(parameter("storage.location.template").contains("${local.lake_location}$${dt}/"));
    let partitions: Vec<String> = blocks(table.body(), "partition_keys")
        .map(|p| text(attribute(p.body(), "name").expect("a partition's name")))
        .collect();
    assert_eq!(partitions, ["dt"]);

    // The workgroup enforces its results location, encrypted with the data key.
    let workgroup = resources.iter().find(|b| label(b, 0) == "aws_athena_workgroup").expect("an Athena workgroup");
    let configuration = blocks(workgroup.body(), "configuration").next().expect("configuration");
    assert_eq!(attribute(configuration.body(), "enforce_workgroup_configuration"), Some(&Expression::Bool(true)));
    let results = blocks(configuration.body(), "result_configuration").next().expect("result_configuration");
    let encryption = blocks(results.body(), "encryption_configuration").next().expect("encryption_configuration");
    assert_eq!(text(attribute(encryption.body(), "encryption_option").expect("option")), "SSE_KMS");
    assert!(text(attribute(encryption.body(), "kms_key_arn").expect("key")).contains("aws_kms_key.data.arn"));
}
