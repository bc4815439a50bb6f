//! `cdp bench tags`: the cost of keeping tags up to date per changed profile — reading the profile's stored
//! tag state, adding one event, re-deriving its values and writing the state back (what ingest does) —
//! beside the design without state: reading the profile's stored event history and re-evaluating all of it.
//! 20 tags; both read and write JSON as stored.

use std::hint::black_box;
use std::time::Instant;

use anyhow::bail;
use serde_json::{Map, Value, json};
use shared::tags::{Catalog, EventView, ProfileTagState, TagDefinition, TagSet};

/// Twenty tags of the kinds operators write: counts and sums over windows, averages, distinct and most
/// frequent values, rules over them and buckets.
pub(crate) fn twenty_tags() -> anyhow::Result<TagSet> {
    let defs: Vec<TagDefinition> = serde_json::from_value(json!([
        {"id": "orders", "kind": "statistical", "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "count"}},
        {"id": "orders_30d", "kind": "statistical", "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "count"}, "window": {"lastDays": 30}},
        {"id": "orders_7d", "kind": "statistical", "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "count"}, "window": {"lastDays": 7}},
        {"id": "ltv", "kind": "statistical", "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "sum", "property": "revenue"}},
        {"id": "spend_90d", "kind": "statistical", "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "sum", "property": "revenue"}, "window": {"lastDays": 90}},
        {"id": "aov", "kind": "statistical", "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "avg", "property": "revenue"}},
        {"id": "max_order", "kind": "statistical", "filter": {"events": ["Order Completed"]}, "aggregate": {"op": "max", "property": "revenue"}},
        {"id": "views_7d", "kind": "statistical", "filter": {"events": ["Product Viewed"]}, "aggregate": {"op": "count"}, "window": {"lastDays": 7}},
        {"id": "categories", "kind": "statistical", "filter": {"events": ["Product Viewed"]}, "aggregate": {"op": "distinct_count", "property": "category"}},
        {"id": "top_category", "kind": "statistical", "filter": {"events": ["Product Viewed"]}, "aggregate": {"op": "most_frequent", "property": "category"}},
        {"id": "top_category_30d", "kind": "statistical", "filter": {"events": ["Product Viewed"]}, "aggregate": {"op": "most_frequent", "property": "category"}, "window": {"lastDays": 30}},
        {"id": "first_source", "kind": "statistical", "aggregate": {"op": "first", "property": "source"}},
        {"id": "last_category", "kind": "statistical", "filter": {"events": ["Product Viewed"]}, "aggregate": {"op": "last", "property": "category"}},
        {"id": "shoe_spend", "kind": "statistical", "filter": {"events": ["Order Completed"], "properties": [{"field": "category", "op": "eq", "value": "shoes"}]}, "aggregate": {"op": "sum", "property": "revenue"}},
        {"id": "pages_24h", "kind": "statistical", "filter": {"types": ["page"]}, "aggregate": {"op": "count"}, "window": {"lastHours": 24}},
        {"id": "tier", "kind": "buckets", "of": "tag:ltv", "buckets": [{"label": "high", "min": 500}, {"label": "mid", "min": 100}], "otherwise": "low"},
        {"id": "active_buyer", "kind": "rule", "when": {"field": "tag:orders_30d", "op": "gte", "value": 1}},
        {"id": "lapsed_vip", "kind": "rule", "when": {"and": [{"field": "tag:tier", "op": "eq", "value": "high"}, {"field": "tag:orders_30d", "op": "eq", "value": 0}]}},
        {"id": "browser_not_buyer", "kind": "rule", "when": {"and": [{"field": "tag:views_7d", "op": "gte", "value": 3}, {"not": {"field": "tag:active_buyer", "op": "eq", "value": true}}]}},
        {"id": "pro", "kind": "rule", "when": {"field": "trait:plan", "op": "in", "value": ["pro", "team"]}}
    ]))?;
    let defs: Vec<TagDefinition> = defs
        .into_iter()
        .map(|mut d| {
            d.status = shared::tags::Lifecycle::Active;
            d
        })
        .collect();
    TagSet::check(&defs, &Catalog::default()).map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// An event of a stored history, as read back: (kind, event, time, id, properties).
type StoredEvent = (String, Option<String>, i64, String, Map<String, Value>);

/// A profile's synthetic history: (kind, event, time, id, properties).
pub(crate) type History = Vec<(&'static str, Option<&'static str>, i64, String, Map<String, Value>)>;

pub(crate) fn history(profile: u64, events: usize, now: i64, rng: &mut super::kit::Xorshift) -> History {
    let mut next = |n: u64| rng.below(n);
    let categories = ["shoes", "shirts", "hats", "bags", "socks"];
    (0..events)
        .map(|i| {
            let at = now - (next(730 * 24) as i64) * 3_600_000; // two years of history
            let category = categories[next(5) as usize];
            let id = format!("p{profile}-e{i}");
            match next(10) {
                0 => {
                    let props = json!({"revenue": next(30_000) as f64 / 100.0, "category": category});
                    ("track", Some("Order Completed"), at, id, props.as_object().cloned().unwrap_or_default())
                }
                1..=6 => {
                    let props = json!({"category": category, "source": "web"});
                    ("track", Some("Product Viewed"), at, id, props.as_object().cloned().unwrap_or_default())
                }
                _ => ("page", None, at, id, json!({"source": "ads"}).as_object().cloned().unwrap_or_default()),
            }
        })
        .collect()
}

fn views(history: &History) -> Vec<EventView<'_>> {
    history
        .iter()
        .map(|(kind, event, at, id, properties)| EventView { kind, event: *event, at: *at, id, properties })
        .collect()
}

pub(crate) fn run(profiles: u64, events: usize) -> anyhow::Result<()> {
    if profiles == 0 || events == 0 {
        bail!("need --profiles ≥ 1 and --events ≥ 1");
    }
    let tags = twenty_tags()?;
    let now = 1_795_000_000_000i64;
    let mut rng = super::kit::Xorshift(0x9e37_79b9_7f4a_7c15);
    let traits = json!({"plan": "pro"}).as_object().cloned().unwrap_or_default();
    let histories: Vec<History> = (0..profiles).map(|p| history(p, events, now, &mut rng)).collect();
    // The stored states, as ingest keeps them (built untimed), serialized as they are stored.
    let stored: Vec<String> = histories
        .iter()
        .map(|h| {
            let mut state = ProfileTagState::default();
            for view in views(h) {
                tags.observe(&mut state, &view, now);
            }
            serde_json::to_string(&state).unwrap_or_default()
        })
        .collect();
    let new_event = json!({"revenue": 42.0, "category": "shoes"}).as_object().cloned().unwrap_or_default();

    // Incremental: read the state, add one event, re-derive the 20 values, write the state.
    let start = Instant::now();
    let mut agree = 0u64;
    for (p, json) in stored.iter().enumerate() {
        let mut state: ProfileTagState = serde_json::from_str(json)?;
        let view =
            EventView { kind: "track", event: Some("Order Completed"), at: now, id: "new", properties: &new_event };
        tags.observe(&mut state, &view, now);
        let values = tags.evaluate_state(&state, &traits, now);
        black_box(serde_json::to_string(&state)?);
        if p < 1000 {
            // Spot check: the same values as evaluating the whole history with the new event.
            let mut all = views(&histories[p]);
            all.push(view);
            agree += u64::from(tags.evaluate(&traits, &all, now) == values);
        }
    }
    let incremental = start.elapsed().as_secs_f64();
    if agree != profiles.min(1000) {
        bail!("incremental values differ from a full evaluation for {} profiles", profiles.min(1000) - agree);
    }

    // Peer: read each changed profile's stored history, add the event, re-evaluate all of it, write it back.
    let stored_histories: Vec<String> = histories
        .iter()
        .map(|h| {
            let rows: Vec<Value> = h.iter().map(|(k, e, at, id, p)| json!([k, e, at, id, p])).collect();
            serde_json::to_string(&rows).unwrap_or_default()
        })
        .collect();
    let start = Instant::now();
    for json in &stored_histories {
        let mut rows: Vec<StoredEvent> = serde_json::from_str(json)?;
        rows.push(("track".into(), Some("Order Completed".into()), now, "new".into(), new_event.clone()));
        let all: Vec<EventView<'_>> = rows
            .iter()
            .map(|(k, e, at, id, p)| EventView { kind: k, event: e.as_deref(), at: *at, id, properties: p })
            .collect();
        black_box(tags.evaluate(&traits, &all, now));
        black_box(serde_json::to_string(&rows)?);
    }
    let full = start.elapsed().as_secs_f64();
    let history_bytes = stored_histories.iter().map(String::len).sum::<usize>() as f64 / profiles as f64;
    let state_bytes = stored.iter().map(String::len).sum::<usize>() as f64 / profiles as f64;
    println!("cdp bench tags: {profiles} changed profiles, {events} events of history each, 20 tags");
    println!();
    println!("| per changed profile | µs | state stored |");
    println!("|---|---:|---:|");
    println!(
        "| incremental: read state, add the event, 20 values, write state | {:.1} | {:.0} bytes (JSON) |",
        1e6 * incremental / profiles as f64,
        state_bytes
    );
    println!(
        "| peer: read the history, add the event, evaluate all of it, write it | {:.1} | {:.0} bytes (JSON) |",
        1e6 * full / profiles as f64,
        history_bytes
    );
    println!();
    println!(
        "incremental is {:.1}× the peer's speed; values identical to the full evaluation (checked on {} profiles)",
        full / incremental,
        profiles.min(1000)
    );
    Ok(())
}
