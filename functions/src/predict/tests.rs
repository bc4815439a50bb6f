use serde_json::{Map, Value, json};
use shared::tags::{Catalog, EventView, TagDefinition, event_table, profile_table};

use super::*;

const NOW: i64 = 1_795_000_000_000;

#[test]
fn auc_is_the_chance_a_positive_outranks_a_negative() {
    assert_eq!(auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]), Some(0.75));
    assert_eq!(auc(&[0.2, 0.2, 0.2], &[true, false, false]), Some(0.5), "ties count half");
    assert_eq!(auc(&[0.9, 0.1], &[true, false]), Some(1.0));
    assert_eq!(auc(&[0.9, 0.1], &[false, true]), Some(0.0));
    assert_eq!(auc(&[0.3, 0.4], &[true, true]), None, "one class has no AUC");
}

#[test]
fn the_sample_does_not_depend_on_arrival_order() {
    let mut forward = Sample::new(100);
    let mut backward = Sample::new(100);
    for i in 0..1000u64 {
        forward.push(mix(i), i);
        backward.push(mix(999 - i), 999 - i);
    }
    let kept = |s: &Sample<u64>| {
        let mut v: Vec<u64> = s.items.iter().map(|(_, i)| *i).collect();
        v.sort_unstable();
        v
    };
    assert!(forward.items.len() <= 100 && forward.items.len() > 25, "{}", forward.items.len());
    assert_eq!(kept(&forward), kept(&backward));
}

/// Profiles of two kinds, with a planted signal: "engaged" ones view products every few days and buy in
/// most months; the others rarely view and seldom buy. Which kind a profile is shows only in its events.
/// A generated event: (profile, messageId, time, is an order, revenue).
type ShopEvent = (u32, String, i64, bool, f64);

fn shop(profiles: u32, seed: u64) -> (Vec<Map<String, Value>>, Vec<ShopEvent>) {
    let mut state = seed;
    let mut next = |n: u64| {
        state = mix(state);
        state % n
    };
    let mut events = Vec::new();
    for p in 0..profiles {
        let engaged = next(3) == 0;
        let (view_every_days, buy_per_month) = if engaged { (3, 60) } else { (25, 5) };
        let mut day = next(view_every_days) as i64;
        while day < 180 {
            let at = NOW - day * DAY - next(DAY as u64) as i64;
            events.push((p, format!("{p}-v{day}"), at, false, 0.0));
            day += 1 + next(2 * view_every_days) as i64;
        }
        for month in 0..6 {
            if next(100) < buy_per_month {
                let at = NOW - month * 30 * DAY - next(30 * DAY as u64) as i64;
                events.push((p, format!("{p}-o{month}"), at, true, (20 + next(200)) as f64));
            }
        }
    }
    ((0..profiles).map(|_| Map::new()).collect(), events)
}

#[test]
fn a_propensity_model_trained_on_a_planted_signal_beats_random_scores_on_held_out_profiles() {
    let defs: Vec<TagDefinition> = serde_json::from_value(json!([
        {"id": "buy_30d", "status": "active", "kind": "propensity", "purchase": {"events": ["Order Completed"]},
         "horizonDays": 30, "revenue": "revenue"},
        {"id": "rfm", "status": "active", "kind": "rfm", "purchase": {"events": ["Order Completed"]}, "revenue": "revenue"}
    ]))
    .unwrap();
    let tags = TagSet::check(&defs, &Catalog::default()).unwrap();
    let (traits, events) = shop(6_000, 7);
    let properties: Vec<Map<String, Value>> =
        events.iter().map(|e| json!({"revenue": e.4}).as_object().cloned().unwrap()).collect();
    let views: Vec<(u32, EventView<'_>)> = events
        .iter()
        .zip(&properties)
        .map(|((p, id, at, order, _), props)| {
            let event = if *order { "Order Completed" } else { "Product Viewed" };
            (*p, EventView { kind: "track", event: Some(event), at: *at, id, properties: props })
        })
        .collect();
    // Two chunks, as the recompute shows them.
    let chunks: Vec<(u32, usize, RecordBatch, RecordBatch)> = [(0u32, 3_000usize), (3_000, 3_000)]
        .into_iter()
        .map(|(first, n)| {
            let own: Vec<(u32, EventView<'_>)> =
                views.iter().filter(|(p, _)| (first..first + n as u32).contains(p)).cloned().collect();
            let t: Vec<&Map<String, Value>> = traits[first as usize..first as usize + n].iter().collect();
            (first, n, profile_table(first, &t, &[]), event_table(own, &tags.properties()))
        })
        .collect();

    let mut trainer = Trainer::new(&tags, NOW);
    assert!(trainer.needed());
    for (first, n, _, events) in &chunks {
        trainer.observe(*first, *n, events).unwrap();
    }
    let (population, fitted) = trainer.finish();
    let Fitted::Propensity(evaluation) = &fitted["buy_30d"] else { panic!("{fitted:?}") };
    assert!(evaluation.holdout_profiles > 800, "{evaluation:?}");
    assert!((0.4..0.6).contains(&evaluation.random_auc), "random scores rank at chance: {evaluation:?}");
    assert!(evaluation.auc >= 0.75, "{evaluation:?}");
    assert!(evaluation.auc - evaluation.random_auc >= 0.2, "a clear margin over random: {evaluation:?}");
    assert!(matches!(fitted["rfm"], Fitted::Rfm { profiles } if profiles > 1_000), "{:?}", fitted["rfm"]);

    // Scored as of now, engaged profiles (many recent views) score higher on average.
    let mut recent = vec![0usize; 6_000];
    for (p, e) in &views {
        if e.at >= NOW - 30 * DAY {
            recent[*p as usize] += 1;
        }
    }
    let mut sums = [(0.0, 0usize); 2];
    for (first, n, traits, events) in &chunks {
        let values = tags.evaluate_columns_with(traits, *first, events, NOW, &population).unwrap();
        for row in 0..*n {
            let p = first + row as u32;
            let score = values.row(row)["buy_30d"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&score));
            let kind = usize::from(recent[p as usize] >= 5);
            sums[kind].0 += score;
            sums[kind].1 += 1;
        }
    }
    let mean = |(sum, n): (f64, usize)| sum / n.max(1) as f64;
    assert!(mean(sums[1]) > mean(sums[0]) + 0.2, "engaged {} vs others {}", mean(sums[1]), mean(sums[0]));
}

#[test]
fn without_both_outcomes_no_model_is_fitted_and_the_reason_is_given() {
    let defs: Vec<TagDefinition> = serde_json::from_value(json!([
        {"id": "buy", "status": "active", "kind": "propensity", "purchase": {"events": ["Order Completed"]}}
    ]))
    .unwrap();
    let tags = TagSet::check(&defs, &Catalog::default()).unwrap();
    let empty = Map::new();
    let rows = vec![(0, EventView { kind: "page", event: None, at: NOW - DAY, id: "a", properties: &empty })];
    let mut trainer = Trainer::new(&tags, NOW);
    trainer.observe(0, 2, &event_table(rows, &[])).unwrap();
    let (population, fitted) = trainer.finish();
    assert!(population.models.is_empty());
    let Fitted::NotFitted { reason } = &fitted["buy"] else { panic!("{fitted:?}") };
    assert!(reason.contains("both outcomes"), "{reason}");
}
