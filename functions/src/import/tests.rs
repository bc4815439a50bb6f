use std::io::Write as _;
use std::sync::Arc;

use serde_json::Value;
use shared::event::CanonicalEvent;
use shared::source::new_source;
use shared::storage::decode_ndjson_gz;

use super::*;
use crate::storage::FsStore;

fn now() -> UtcTime {
    UtcTime::parse("2026-03-01T08:00:00Z").unwrap()
}

fn source() -> SourceConfig {
    new_source("crm", "CRM", &mut Entropy::from_seed([1; 32])).0
}

fn contacts() -> Mapping {
    Mapping::parse(
        br#"{"type": "identify", "userId": {"column": "id"},
             "traits": {"name": {"column": "name"}, "age": {"column": "age", "type": "number"}},
             "identifiers": {"email": {"column": "email"}}}"#,
    )
    .unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    store: FsStore,
    /// Each import's seed (as from the OS's generator: two imports never name an object alike).
    seed: std::sync::atomic::AtomicU8,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path().join("data")).unwrap();
    Setup { dir, store, seed: std::sync::atomic::AtomicU8::new(7) }
}

impl Setup {
    fn file(&self, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    async fn import(&self, path: &Path, mapping: Mapping) -> Result<Imported, Error> {
        let seed = [self.seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed); 32];
        let source = source();
        let run = Import { source: &source, suppression: None, now: now(), seed, checkpoint: None, stop_at: None };
        import_file(&self.store, path, mapping, &run, &mut |_, _| {}).await
    }

    async fn events(&self, imported: &Imported) -> Vec<CanonicalEvent> {
        let mut out = Vec::new();
        for key in &imported.objects {
            out.extend(decode_ndjson_gz::<CanonicalEvent>(&self.store.get(key).await.unwrap().unwrap().body).unwrap());
        }
        out
    }

    async fn failures(&self, imported: &Imported) -> Vec<Value> {
        let mut out = Vec::new();
        for meta in self.store.list(&imported.failed_prefix).await.unwrap() {
            out.extend(decode_ndjson_gz::<Value>(&self.store.get(&meta.key).await.unwrap().unwrap().body).unwrap());
        }
        out
    }
}

const CSV: &str = "id,name,email,age\n\
                   c-1,Li Lei,li@example.com,31\n\
                   c-2,\"Han, Meimei\",han@example.com,\n\
                   c-3,Bad Age,bad@example.com,thirty\n\
                   ,Nobody,,\n\
                   c-5,Too,many,fields,here\n";

#[tokio::test]
async fn a_csv_file_becomes_events_and_bad_rows_are_quarantined_with_their_row() {
    let s = setup();
    let path = s.file("contacts.csv", CSV.as_bytes());
    let mut heard = Vec::new();
    let source = source();
    let run = Import { source: &source, suppression: None, now: now(), seed: [1; 32], checkpoint: None, stop_at: None };
    let imported =
        import_file(&s.store, &path, contacts(), &run, &mut |rows, bytes| heard.push((rows, bytes))).await.unwrap();
    assert_eq!((imported.rows, imported.accepted, imported.failed), (5, 2, 3));
    assert_eq!(heard, [(5, CSV.len() as u64)]);
    let events = s.events(&imported).await;
    let ids: Vec<(&str, Option<&str>)> = events.iter().map(|e| (e.message_id.as_str(), e.user_id.as_deref())).collect();
    let prefix = format!("import-{}-{}", &imported.sha256[..16], &contacts().sha256()[..8]);
    assert_eq!(ids, [(format!("{prefix}-2").as_str(), Some("c-1")), (format!("{prefix}-3").as_str(), Some("c-2"))]);
    assert_eq!(events[1].traits.as_ref().unwrap()["name"], "Han, Meimei", "quoted commas");
    assert!(events[0].identifiers.iter().any(|i| i.kind == "email" && i.value == "li@example.com"));
    assert_eq!(events[0].source_id, "crm");

    let failures = s.failures(&imported).await;
    let rows: Vec<(u64, &str)> =
        failures.iter().map(|f| (f["row"].as_u64().unwrap(), f["reason"].as_str().unwrap())).collect();
    assert_eq!(
        rows,
        [
            (4, "traits.age: `thirty` in column `age` is not a number"),
            (5, "userId or anonymousId is required"),
            (6, "5 fields; the header has 4"),
        ]
    );
    assert!(failures.iter().all(|f| f["file"] == "contacts.csv"));
    // The pipeline's rejection keeps the event the row became, as text; a row the mapping could not read has none.
    let rejected: Value = serde_json::from_str(failures[1]["event"].as_str().expect("the event's text")).unwrap();
    assert_eq!(
        (rejected["type"].as_str(), rejected["messageId"].as_str()),
        (Some("identify"), Some(&*format!("{prefix}-5")))
    );
    assert_eq!(rejected["context"]["library"]["name"], "cdp-import");
    assert!(failures[0].get("event").is_none());

    // The same file again: the same message ids (ingest drops them), the same failure objects.
    let again = s.import(&path, contacts()).await.unwrap();
    assert_eq!(
        s.events(&again).await.iter().map(|e| &e.message_id).collect::<Vec<_>>(),
        events.iter().map(|e| &e.message_id).collect::<Vec<_>>()
    );
    assert_eq!(s.store.list(&imported.failed_prefix).await.unwrap().len(), 1);
    // A corrected mapping makes new events (the first import's were of the old one).
    let corrected = Mapping::parse(
        br#"{"type": "identify", "userId": {"column": "id"}, "traits": {"name": {"column": "name"}, "age": {"column": "age"}}}"#,
    )
    .unwrap();
    let fixed = s.import(&path, corrected).await.unwrap();
    let ids = s.events(&fixed).await;
    assert!(ids.iter().all(|e| !events.iter().any(|old| old.message_id == e.message_id)), "new message ids");
    assert_ne!(fixed.failed_prefix, imported.failed_prefix);
}

#[tokio::test]
async fn ndjson_and_gzipped_files() {
    let s = setup();
    let lines = "{\"id\": \"n-1\", \"name\": \"A\", \"age\": 40}\n\n{\"id\": \"n-2\", \"email\": \"b@example.com\"}\nnot json\n[1]\n";
    let imported = s.import(&s.file("people.ndjson", lines.as_bytes()), contacts()).await.unwrap();
    assert_eq!((imported.rows, imported.accepted, imported.failed), (4, 2, 2));
    let events = s.events(&imported).await;
    assert_eq!(events[0].traits.as_ref().unwrap()["age"], 40);
    let failures = s.failures(&imported).await;
    assert_eq!(failures[0]["row"], 4, "blank lines count as lines");
    assert!(failures[0]["reason"].as_str().unwrap().starts_with("not JSON"), "{failures:?}");
    assert_eq!(failures[1]["reason"], "not a JSON object");

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(CSV.as_bytes()).unwrap();
    let imported = s.import(&s.file("contacts.csv.gz", &gz.finish().unwrap()), contacts()).await.unwrap();
    assert_eq!((imported.rows, imported.accepted), (5, 2));
}

#[tokio::test]
async fn parquet_files() {
    use arrow_array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    let s = setup();
    let schema = Arc::new(Schema::new(vec![
        Field::new("uid", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["u1", "u2"])),
            Arc::new(StringArray::from(vec!["Email Opened", "Email Clicked"])),
            Arc::new(Float64Array::from(vec![Some(12.5), None])),
            Arc::new(TimestampMillisecondArray::from(vec![1_767_225_600_000, 1_767_225_660_000])),
        ],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let mapping = Mapping::parse(
        br#"{"type": "track", "event": {"column": "action"}, "userId": {"column": "uid"},
             "timestamp": {"column": "at"}, "properties": {"revenue": {"column": "amount"}}}"#,
    )
    .unwrap();
    let imported = s.import(&s.file("results.parquet", &bytes), mapping).await.unwrap();
    assert_eq!((imported.rows, imported.accepted), (2, 2));
    let events = s.events(&imported).await;
    assert_eq!(events[0].event.as_deref(), Some("Email Opened"));
    assert_eq!(events[0].timestamp.to_string(), "2026-01-01T00:00:00.000Z");
    assert_eq!(events[0].properties.as_ref().unwrap()["revenue"], 12.5);
    assert!(events[1].properties.as_ref().is_none_or(|p| p.get("revenue").is_none()), "an empty cell is absent");
    assert!(events[0].message_id.ends_with("-1"), "Parquet rows count from 1");
}

#[tokio::test]
async fn parquet_dictionary_list_and_struct_columns_are_read() {
    use arrow_array::builder::{ListBuilder, StringBuilder, StringDictionaryBuilder};
    use arrow_array::types::Int32Type;
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StructArray};
    use arrow_schema::{DataType, Field};
    let s = setup();
    let mut plans = StringDictionaryBuilder::<Int32Type>::new();
    for plan in ["gold", "free", "gold"] {
        plans.append_value(plan);
    }
    let mut tags = ListBuilder::new(StringBuilder::new());
    for row in [vec!["a", "b"], vec![], vec!["c"]] {
        for tag in row {
            tags.values().append_value(tag);
        }
        tags.append(true);
    }
    let address = StructArray::from(vec![
        (
            Arc::new(Field::new("city", DataType::Utf8, true)),
            Arc::new(arrow_array::StringArray::from(vec![Some("Berlin"), None, Some("Lyon")])) as ArrayRef,
        ),
        (
            Arc::new(Field::new("zip", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![10115, 1, 69001])) as ArrayRef,
        ),
    ]);
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(arrow_array::StringArray::from(vec!["c-1", "c-2", "c-3"])) as ArrayRef),
        ("plan", Arc::new(plans.finish()) as ArrayRef),
        ("tags", Arc::new(tags.finish()) as ArrayRef),
        ("address", Arc::new(address) as ArrayRef),
    ])
    .unwrap();
    let mut bytes = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let mapping = Mapping::parse(
        br#"{"type": "identify", "userId": {"column": "id"},
             "traits": {"plan": {"column": "plan"}, "tags": {"column": "tags"}, "address": {"column": "address"}}}"#,
    )
    .unwrap();
    let imported = s.import(&s.file("customers.parquet", &bytes), mapping).await.unwrap();
    assert_eq!((imported.rows, imported.accepted, imported.failed), (3, 3, 0), "{:?}", s.failures(&imported).await);
    let events = s.events(&imported).await;
    let traits: Vec<Value> = events.iter().map(|e| Value::Object(e.traits.clone().unwrap())).collect();
    assert_eq!(traits[0]["plan"], "gold", "the dictionary's value, not its key");
    assert_eq!(traits[1]["plan"], "free");
    assert_eq!(traits[0]["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(traits[0]["address"], serde_json::json!({"city": "Berlin", "zip": 10115}));
    assert_eq!(traits[1]["address"], serde_json::json!({"zip": 1}), "a null field left out");
}

#[tokio::test]
async fn bad_files_say_what_is_wrong_and_store_nothing() {
    let s = setup();
    let problem = |result: Result<Imported, Error>| match result {
        Err(Error::Invalid(problem)) => problem,
        other => panic!("{other:?}"),
    };
    let empty = problem(s.import(&s.file("empty.csv", b""), contacts()).await);
    assert!(empty.ends_with("empty.csv: the file is empty"), "{empty}");
    let header = problem(s.import(&s.file("header.csv", b"id,name,email,age\n"), contacts()).await);
    assert!(header.ends_with("header.csv: the file has no rows (only its columns)"), "{header}");
    let parquet = problem(s.import(&s.file("zero.parquet", b""), contacts()).await);
    assert!(parquet.ends_with("zero.parquet: the file is empty"), "{parquet}");
    let not = problem(s.import(&s.file("fake.parquet", b"id,name\n1,2\n"), contacts()).await);
    assert!(not.contains("fake.parquet: not a Parquet file"), "{not}");
    let columns = problem(s.import(&s.file("other.csv", b"user,name\nu1,x\n"), contacts()).await);
    assert!(
        columns.contains("userId: the file has no column `id` (it has: `user`, `name`)"),
        "the missing column and the ones there are: {columns}"
    );
    let kind = problem(s.import(&s.file("notes.txt", b"x"), contacts()).await);
    assert!(kind.contains("not a file imports read"), "{kind}");
    assert!(s.store.list("raw/").await.unwrap().is_empty(), "nothing stored");

    // Rows that break the file's form are those rows' problems; the others are kept.
    let utf8 = b"id,name,email,age\nq-1,\xff\xfe,a@example.com,1\nq-2,B,b@example.com,2\n";
    let imported = s.import(&s.file("latin1.csv", utf8), contacts()).await.unwrap();
    assert_eq!((imported.rows, imported.accepted), (2, 1));
    assert_eq!(s.failures(&imported).await[0]["reason"], "field 2 is not UTF-8");
    let quote = b"id,name,email,age\nq-1,B,b@example.com,2\nq-2,\"unclosed,x@example.com,1\nq-3,C,c@example.com,3\n";
    let imported = s.import(&s.file("quote.csv", quote), contacts()).await.unwrap();
    assert_eq!((imported.rows, imported.accepted, imported.failed), (2, 1, 1), "the summary counts what ran together");
    let failure = &s.failures(&imported).await[0];
    assert_eq!(failure["row"], 3);
    assert!(failure["reason"].as_str().unwrap().contains("a quote opened on this line is not closed"), "{failure}");
}

#[tokio::test]
async fn a_chunk_a_worker_fails_to_make_fails_the_import_instead_of_going_missing() {
    let s = setup();
    let mut csv = String::from("id,name,email,age\n");
    for i in 0..(2 * CHUNK + 3) {
        csv.push_str(&format!("c-{i},P {i},p{i}@example.com,30\n"));
    }
    let path = s.file("many.csv", csv.as_bytes());
    let source = new_source("worker-fails", "Fails", &mut Entropy::from_seed([1; 32])).0;
    let run = Import { source: &source, suppression: None, now: now(), seed: [2; 32], checkpoint: None, stop_at: None };
    let error = import_file(&s.store, &path, contacts(), &run, &mut |_, _| {}).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("chunk 1 (rows 5001 to 10000) could not be made"), "{message}");
}

mod lambda_tests {
    use std::time::{Duration, Instant};

    use serde_json::json;
    use shared::source::Sources;

    use super::*;
    use crate::import::lambda::{Run, handle_payload};

    const MAPPING: &[u8] =
        br#"{"type": "identify", "userId": {"column": "id"}, "traits": {"name": {"column": "name"}}}"#;

    /// A store with source `crm`, its mapping, and `rows` contacts at `imports/crm/contacts.csv`.
    async fn bucket(rows: usize) -> (tempfile::TempDir, FsStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path().join("data")).unwrap();
        let mut sources = Sources::default();
        sources.add(source()).unwrap();
        store.put(shared::storage::CONFIG_SOURCES, sources.to_json(), PutOptions::json()).await.unwrap();
        store.put("imports/crm/mapping.json", MAPPING.to_vec(), PutOptions::json()).await.unwrap();
        let mut csv = String::from("id,name\n");
        for i in 0..rows {
            csv.push_str(&format!("c-{i},Person {i}\n"));
        }
        store.put("imports/crm/contacts.csv", csv.into_bytes(), PutOptions::json()).await.unwrap();
        (dir, store)
    }

    fn sqs(key: &str) -> Value {
        let notification = json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": key}}}]});
        json!({"Records": [{"eventSource": "aws:sqs", "messageId": "m-1", "body": notification.to_string()}]})
    }

    fn run(tmp: &Path, stop_at: Instant) -> Run {
        Run { stop_at, tmp: tmp.to_path_buf(), seed: [3; 32] }
    }

    async fn raw_events(store: &FsStore) -> Vec<String> {
        let mut ids = Vec::new();
        for meta in store.list("raw/").await.unwrap() {
            let events: Vec<CanonicalEvent> =
                decode_ndjson_gz(&store.get(&meta.key).await.unwrap().unwrap().body).unwrap();
            ids.extend(events.into_iter().map(|e| e.message_id));
        }
        ids
    }

    #[tokio::test]
    async fn a_file_put_under_imports_becomes_events_and_a_long_one_resumes_from_its_checkpoint() {
        let rows = 3 * CHUNK + 17;
        let (dir, store) = bucket(rows).await;
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        // A deadline already passed: the run stores one chunk, writes its checkpoint and hands the message back.
        let answer =
            handle_payload(&store, &sqs("imports/crm/contacts.csv"), now(), &run(&tmp, Instant::now())).await.unwrap();
        assert_eq!(answer, json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]}), "unfinished: redelivered");
        let first = raw_events(&store).await.len();
        assert!(first > 0 && first < rows, "{first} of {rows} rows in the first run");
        let checkpoints = store.list("ingest/imports/crm/").await.unwrap();
        assert_eq!(checkpoints.len(), 1);

        let later = Instant::now() + Duration::from_secs(600);
        let answer = handle_payload(&store, &sqs("imports/crm/contacts.csv"), now(), &run(&tmp, later)).await.unwrap();
        assert_eq!(answer, json!({"batchItemFailures": []}));
        let mut ids = raw_events(&store).await;
        assert_eq!(ids.len(), rows, "every row once: the stored chunks are passed over");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), rows);
        let checkpoint: Checkpoint =
            serde_json::from_slice(&store.get(&checkpoints[0].key).await.unwrap().unwrap().body).unwrap();
        assert!(checkpoint.complete && checkpoint.accepted == rows as u64, "{checkpoint:?}");

        // Delivered again (S3 and SQS deliver at least once): nothing more is stored.
        let objects = store.list("raw/").await.unwrap().len();
        handle_payload(&store, &sqs("imports/crm/contacts.csv"), now(), &run(&tmp, later)).await.unwrap();
        assert_eq!(store.list("raw/").await.unwrap().len(), objects);
        assert!(std::fs::read_dir(&tmp).unwrap().next().is_none(), "the download is removed");
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_imported_is_reported_beside_its_failed_rows_and_not_retried() {
        let (dir, store) = bucket(3).await;
        let later = Instant::now() + Duration::from_secs(600);
        let run = run(dir.path(), later);
        store
            .put(
                "imports/crm/mapping.json",
                br#"{"type": "identify", "userId": {"column": "crm_id"}}"#.to_vec(),
                PutOptions::json(),
            )
            .await
            .unwrap();
        let answer = handle_payload(&store, &sqs("imports/crm/contacts.csv"), now(), &run).await.unwrap();
        assert_eq!(answer, json!({"batchItemFailures": []}), "a retry would not mend it");
        let problem = store.get("failed/imports/crm/contacts.csv.problem.json").await.unwrap().expect("the report");
        let problem: Value = serde_json::from_slice(&problem.body).unwrap();
        assert!(problem["reason"].as_str().unwrap().contains("no column `crm_id`"), "{problem}");

        store.put("imports/nobody/a.csv", b"id\n1\n".to_vec(), PutOptions::json()).await.unwrap();
        handle_payload(&store, &sqs("imports/nobody/a.csv"), now(), &run).await.unwrap();
        let problem = store.get("failed/imports/nobody/a.csv.problem.json").await.unwrap().expect("the report");
        assert!(String::from_utf8_lossy(&problem.body).contains("no source \\\"nobody\\\""));
        // The mapping itself, and objects outside imports/, are not files to import.
        let answer = handle_payload(&store, &sqs("imports/crm/mapping.json"), now(), &run).await.unwrap();
        assert_eq!(answer, json!({"batchItemFailures": []}));
        assert!(store.list("raw/").await.unwrap().is_empty());
    }
}
