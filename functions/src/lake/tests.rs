//! The lake: compaction from raw objects, its watermark and settle time, lossless parts, bloom-filtered reads,
//! erasure's rewrite, and the tagging function reading it with the same results as from raw objects.

use serde_json::{Value, json};
use shared::storage::keys;

use std::sync::Arc;

use std::collections::BTreeSet;

use shared::tags::EventView;
use shared::time::UtcTime;

use super::compact::compact_within;
use super::format::groups_for;
use super::format::open;
use super::*;
use crate::ingest::ingest;
use crate::raw::read_object;
use crate::snapshot::RunConfig;
use crate::storage::FsStore;
use crate::storage::StoreError;
use crate::testing::put_batch;

fn at(time: &str) -> UtcTime {
    UtcTime::parse(time).unwrap()
}

fn page(msg: &str, user: &str) -> Value {
    json!({"type": "page", "messageId": msg, "userId": user, "name": "Home",
           "properties": {"path": "/", "price": 3.5}, "timestamp": "2026-11-29T10:00:00Z"})
}

async fn raw_events(store: &FsStore, key: &str) -> Vec<CanonicalEvent> {
    read_object(store, key).await.unwrap().unwrap().events
}

async fn part(store: &FsStore, key: &str) -> Vec<Row> {
    decode(store.get(key).await.unwrap().unwrap().body.into(), None).unwrap()
}

#[tokio::test]
async fn compaction_moves_settled_raw_objects_into_parts_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let (t0, t1) = (at("2026-11-29T10:00:00Z"), at("2026-11-29T10:05:00Z"));
    let first = put_batch(&store, 1, json!([page("m1", "u1"), page("m2", "u2")]), t0).await;
    // The same message again (a client retry): the lake keeps it once.
    let second = put_batch(&store, 2, json!([page("m3", "u1"), page("m1", "u1")]), t1).await;
    // Named now: a collector may still be writing objects named about now, so it waits for the settle time.
    let now = at("2026-11-29T10:16:00Z");
    let late = put_batch(&store, 3, json!([page("m4", "u3")]), now).await;

    let run = compact(&store, SETTLE_MS, now).await.unwrap();
    assert_eq!((run.objects, run.events, run.held, run.more), (2, 3, 0, false), "{run:?}");
    let (_, name) = day_and_name(&first).unwrap();
    assert_eq!(run.parts, vec![format!("lake/events/dt=2026-11-29/part-{name}.parquet")]);
    let rows = part(&store, &run.parts[0]).await;
    let mut expected = raw_events(&store, &first).await;
    expected.push(raw_events(&store, &second).await.remove(0));
    let events: Vec<CanonicalEvent> = rows.iter().map(|(e, _)| e.clone()).collect();
    assert_eq!(events, expected, "every field of every event, in receipt order");
    assert_eq!(rows[0].1, vec!["user_id:u1".to_string()], "identity keys stored with the event");
    let (progress, _) = manifest(&store).await.unwrap();
    assert_eq!(progress.watermark.as_deref(), Some(second.as_str()));
    assert_eq!(progress.events, 3);
    assert_eq!(raw_tail(&store, &progress).await.unwrap(), vec![late.clone()]);

    assert_eq!(compact(&store, SETTLE_MS, now).await.unwrap(), Compacted::default(), "nothing more settled");
    let later = at("2026-11-29T10:30:00Z");
    let run = compact(&store, SETTLE_MS, later).await.unwrap();
    assert_eq!((run.objects, run.events), (1, 1));
    assert_eq!(parts(&store).await.unwrap().len(), 2);
    assert!(raw_tail(&store, &manifest(&store).await.unwrap().0).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_repeated_run_rewrites_the_same_part() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let t0 = at("2026-11-29T10:00:00Z");
    put_batch(&store, 1, json!([page("m1", "u1")]), t0).await;
    let now = at("2026-11-29T11:00:00Z");
    let run = compact(&store, SETTLE_MS, now).await.unwrap();
    // A crash before the watermark moved: the next run starts from the same object and names the part alike.
    store.delete(MANIFEST).await.unwrap();
    put_batch(&store, 2, json!([page("m2", "u2")]), at("2026-11-29T10:01:00Z")).await;
    let again = compact(&store, SETTLE_MS, now).await.unwrap();
    assert_eq!(again.parts, run.parts, "the same part, rewritten with what settled since");
    assert_eq!(parts(&store).await.unwrap().len(), 1);
    assert_eq!(part(&store, &again.parts[0]).await.len(), 2);
}

#[tokio::test]
async fn a_run_holds_a_bounded_number_of_events_and_the_next_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let t0 = at("2026-11-29T10:00:00Z");
    put_batch(&store, 1, json!([page("m1", "u1"), page("m2", "u2")]), t0).await;
    put_batch(&store, 2, json!([page("m3", "u3")]), at("2026-11-29T10:01:00Z")).await;
    put_batch(&store, 3, json!([page("m4", "u4")]), at("2026-11-29T10:02:00Z")).await;
    let now = at("2026-11-29T11:00:00Z");
    // Stops after the object that reaches two events: the first.
    let first = compact_within(&store, SETTLE_MS, now, 2, usize::MAX).await.unwrap();
    assert_eq!((first.objects, first.events, first.more), (1, 2, true), "{first:?}");
    let second = compact_within(&store, SETTLE_MS, now, 2, usize::MAX).await.unwrap();
    assert_eq!((second.objects, second.events, second.more), (2, 2, false), "{second:?}");
    assert!(raw_tail(&store, &manifest(&store).await.unwrap().0).await.unwrap().is_empty());
    let mut ids = Vec::new();
    for listed in parts(&store).await.unwrap() {
        ids.extend(part(&store, &listed.key).await.into_iter().map(|(e, _)| e.message_id));
    }
    assert_eq!(ids, ["m1", "m2", "m3", "m4"], "every event once, in receipt order");
}

#[tokio::test]
async fn a_run_holds_a_bounded_amount_of_event_text_however_well_it_compresses() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    // Three objects of about 40 KB of text each that gzip to a few hundred bytes.
    let padding = "x".repeat(2_000);
    for (seed, minute) in [(1u8, 0), (2, 1), (3, 2)] {
        let events: Vec<_> = (0..20)
            .map(|i| {
                let mut e = page(&format!("b{seed}-{i}"), "u1");
                e["properties"] = json!({"padding": padding});
                e
            })
            .collect();
        put_batch(&store, seed, json!(events), at(&format!("2026-11-29T10:0{minute}:00Z"))).await;
    }
    let now = at("2026-11-29T11:00:00Z");
    // A budget of 50 KB of text: the run stops after the object that passes it.
    let first = compact_within(&store, SETTLE_MS, now, usize::MAX, 50_000).await.unwrap();
    assert_eq!((first.objects, first.events, first.more), (2, 40, true), "{first:?}");
    let second = compact_within(&store, SETTLE_MS, now, usize::MAX, 50_000).await.unwrap();
    assert_eq!((second.objects, second.events, second.more), (1, 20, false), "{second:?}");
}

fn rows_for(users: std::ops::Range<usize>) -> Vec<Row> {
    let t = at("2026-11-29T10:00:00Z");
    users
        .map(|i| {
            let event: CanonicalEvent = serde_json::from_value(json!({
                "messageId": format!("m{i}"), "type": "track", "event": "Bought", "sourceId": "src_web",
                "receivedAt": t.to_string(), "timestamp": t.to_string(), "userId": format!("u{i}"),
                "properties": {"price": i}
            }))
            .unwrap();
            (event, vec![format!("user_id:u{i}")])
        })
        .collect()
}

#[test]
fn bloom_filters_rule_out_row_groups_without_the_person() {
    let rows = rows_for(0..3 * ROW_GROUP);
    let bytes = bytes::Bytes::from(encode(&rows).unwrap());
    let builder = open(bytes.clone()).unwrap();
    assert_eq!(builder.metadata().num_row_groups(), 3);
    let leaves: Vec<String> = builder.parquet_schema().columns().iter().map(|c| c.path().string()).collect();
    for column in BLOOM {
        let leaf = leaves.iter().position(|l| l == column).unwrap_or_else(|| panic!("{column} in {leaves:?}"));
        for group in 0..3 {
            assert!(builder.get_row_group_column_bloom_filter(group, leaf).unwrap().is_some(), "{column} {group}");
        }
    }
    let wanted: BTreeSet<String> = [format!("user_id:u{}", ROW_GROUP + 7)].into();
    assert_eq!(
        groups_for(&builder, &wanted).unwrap(),
        vec![1],
        "only the second row group may hold u{}",
        ROW_GROUP + 7
    );
    let found = decode(bytes.clone(), Some(&wanted)).unwrap();
    assert_eq!(found, vec![rows[ROW_GROUP + 7].clone()]);
    let nobody: BTreeSet<String> = ["user_id:nobody".to_string()].into();
    assert!(groups_for(&builder, &nobody).unwrap().is_empty());
    assert!(decode(bytes, Some(&nobody)).unwrap().is_empty());
}

/// A store that counts the bytes read from it.
#[derive(Clone)]
struct Counting {
    inner: FsStore,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl ObjectStore for Counting {
    async fn put(&self, key: &str, body: Vec<u8>, options: PutOptions) -> Result<String, StoreError> {
        self.inner.put(key, body, options).await
    }
    async fn get(&self, key: &str) -> Result<Option<crate::storage::Object>, StoreError> {
        let object = self.inner.get(key).await?;
        let size = object.as_ref().map_or(0, |o| o.body.len() as u64);
        self.read.fetch_add(size, std::sync::atomic::Ordering::SeqCst);
        Ok(object)
    }
    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let bytes = self.inner.get_range(key, start, len).await?;
        self.read.fetch_add(bytes.as_ref().map_or(0, |b| b.len() as u64), std::sync::atomic::Ordering::SeqCst);
        Ok(bytes)
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

#[tokio::test]
async fn finding_a_person_reads_the_footer_and_filters_and_only_their_row_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = Counting { inner: FsStore::open(dir.path()).unwrap(), read: Default::default() };
    let rows = rows_for(0..3 * ROW_GROUP);
    let bytes = encode(&rows).unwrap();
    let size = bytes.len() as u64;
    store.put("lake/events/dt=2026-11-29/part-a.parquet", bytes, part_options()).await.unwrap();
    let listed = parts(&store).await.unwrap().remove(0);
    assert_eq!(listed.size, size);
    let read = |store: &Counting| store.read.swap(0, std::sync::atomic::Ordering::SeqCst);

    let wanted: BTreeSet<String> = [format!("user_id:u{}", 2 * ROW_GROUP + 3)].into();
    let found = find(&store, &listed, &wanted).await.unwrap();
    assert_eq!(found, vec![rows[2 * ROW_GROUP + 3].clone()]);
    let cost = read(&store);
    assert!(cost < size / 2, "one row group of three, and the footer: {cost} of {size} bytes");

    let nobody: BTreeSet<String> = ["user_id:nobody".to_string()].into();
    assert!(find(&store, &listed, &nobody).await.unwrap().is_empty());
    let cost = read(&store);
    assert!(cost < size / 20, "the footer and filters only: {cost} of {size} bytes");

    let gone = ObjectMeta { key: "lake/events/dt=2026-11-29/part-gone.parquet".into(), size };
    assert!(find(&store, &gone, &wanted).await.unwrap().is_empty(), "a part erased meanwhile holds nothing");
}

#[test]
fn erasure_rewrites_a_part_without_the_person() {
    let rows = rows_for(0..5);
    let bytes = bytes::Bytes::from(encode(&rows).unwrap());
    let gone: BTreeSet<String> = ["user_id:u1".to_string(), "user_id:u3".to_string()].into();
    let scrubbed = without(bytes.clone(), &gone).unwrap().unwrap();
    assert_eq!(scrubbed.removed, 2);
    let kept = decode(scrubbed.rest.unwrap().into(), None).unwrap();
    assert_eq!(kept, vec![rows[0].clone(), rows[2].clone(), rows[4].clone()]);
    assert_eq!(without(bytes.clone(), &["user_id:u9".to_string()].into()).unwrap(), None, "nothing of theirs");
    let all: BTreeSet<String> = (0..5).map(|i| format!("user_id:u{i}")).collect();
    assert_eq!(without(bytes, &all).unwrap(), Some(Scrubbed { rest: None, removed: 5 }), "an emptied part goes");
}

#[test]
fn the_tags_read_has_what_tags_use() {
    let rows = rows_for(0..3);
    let mut light = Vec::new();
    for_tags(encode(&rows).unwrap().into(), |event, keys| {
        light.push((event, keys.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(light.len(), 3);
    for ((full, keys), (read, read_keys)) in rows.iter().zip(&light) {
        assert_eq!(keys, read_keys);
        assert_eq!(read, &TagEvent::of(full), "as taken from the event itself");
        let properties = read.properties().unwrap();
        assert_eq!(Some(&properties), full.properties.as_ref());
        let (view, expected) = (read.view(&properties), EventView::of(full, &properties));
        assert_eq!(
            (view.kind, view.event, view.at, view.id),
            (expected.kind, expected.event, expected.at, expected.id)
        );
    }
    assert!(matches!(decode(bytes::Bytes::from_static(b"not parquet"), None), Err(Error::Corrupt(_))));
}

#[tokio::test]
async fn the_full_recompute_reads_the_lake_with_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let tags = json!([
        {"id": "views", "status": "active", "kind": "statistical", "filter": {"types": ["page"]},
         "aggregate": {"op": "count"}},
        {"id": "spend", "status": "active", "kind": "statistical", "filter": {"types": ["page"]},
         "aggregate": {"op": "sum", "property": "price"}, "window": {"lastDays": 30}}
    ]);
    let audiences = json!([{"id": "regulars", "status": "active",
                            "when": {"field": "tag:views", "op": "gte", "value": 2}}]);
    store.put("config/tags.json", tags.to_string().into_bytes(), PutOptions::json()).await.unwrap();
    store.put("config/audiences.json", audiences.to_string().into_bytes(), PutOptions::json()).await.unwrap();
    let t0 = at("2026-11-29T10:00:00Z");
    let mut keys = Vec::new();
    for (seed, batch) in [
        json!([page("m1", "u1"), page("m2", "u2")]),
        json!([page("m3", "u1"), {"type": "identify", "messageId": "m4", "userId": "u2", "anonymousId": "a2"}]),
        json!([{"type": "page", "messageId": "m5", "anonymousId": "a2", "name": "Home",
                "properties": {"price": 10}, "timestamp": "2026-11-29T10:01:00Z"}]),
    ]
    .into_iter()
    .enumerate()
    {
        keys.push(put_batch(&store, seed as u8 + 1, batch, t0).await);
    }
    let config = RunConfig::load(&store).await.unwrap();
    ingest(&store, &keys, &config, t0).await.unwrap();
    let now = at("2026-11-29T12:00:00Z");
    let values = |store: FsStore| async move {
        let object = store.get(keys::TAG_VALUES).await.unwrap().unwrap();
        serde_json::from_slice::<Value>(&shared::storage::gunzip(&object.body).unwrap()).unwrap()
    };
    let from_raw = crate::tagging::full_recompute(&store, now).await.unwrap();
    let raw_values = values(store.clone()).await;
    // Everything compacted and the raw objects gone: the lake alone gives the same values.
    let settle = now.unix_millis() - t0.unix_millis();
    compact(&store, settle, now).await.unwrap();
    let tail = raw_tail(&store, &manifest(&store).await.unwrap().0).await.unwrap();
    assert!(tail.is_empty(), "same-millisecond objects all settled: {tail:?}");
    std::fs::remove_dir_all(dir.path().join("raw")).unwrap();
    let from_lake = crate::tagging::full_recompute(&store, now).await.unwrap();
    assert_eq!(values(store.clone()).await, raw_values);
    assert_eq!((from_lake.events, from_lake.unresolved_events), (from_raw.events, from_raw.unresolved_events));
    assert_eq!(from_lake.tags, from_raw.tags);
    assert_eq!(from_lake.audiences["regulars"].size, 2, "{:?}", from_lake.audiences);
    assert_eq!(raw_values["profiles"].as_object().unwrap().len(), 2);
}

#[test]
fn only_the_properties_asked_for_are_decoded() {
    let with = |text: &str| TagEvent {
        dedup_key: "web/m1".into(),
        kind: shared::event::EventType::Track,
        event: Some("Order Completed".into()),
        at: 0,
        received_at: 0,
        properties: Some(text.into()),
    };
    let wanted = ["b\"c".to_string(), "e".to_string(), "z".to_string()];
    let event = with(r#"{"a": 1, "b\"c": 2, "d": {"x": [1, "\u00e9"]}, "e": "s", "f": null}"#);
    let picked = event.properties_of(&wanted).expect("decodes");
    assert_eq!(serde_json::Value::Object(picked), serde_json::json!({"b\"c": 2, "e": "s"}));
    assert_eq!(event.properties_of(&[]).expect("decodes").len(), 0);
    for bad in [r#"{"a": 1"#, r#"{"a": 1} x"#, r#"[1, 2]"#] {
        let error = with(bad).properties_of(&wanted).expect_err(bad).to_string();
        assert!(error.contains("the properties of web/m1 do not decode"), "{error}");
    }
    let none = TagEvent { properties: None, ..with("{}") };
    assert!(none.properties_of(&wanted).expect("none").is_empty());
}
