//! What makes an audience distinct: the trait and tag values most over-represented among its members
//! against the whole population.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One over-represented value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Insight {
    /// `trait:NAME` or `tag:ID`.
    pub field: String,
    /// The value.
    pub value: Value,
    /// Share of the audience's members with it.
    pub share: f64,
    /// Share of the whole population with it.
    pub population_share: f64,
    /// `share / population_share`: how many times likelier among members.
    pub lift: f64,
}

/// Values rarer than this among members are not reported (noise).
const MIN_SHARE: f64 = 0.05;
/// Values fewer members than this hold are not reported: a small audience must not reveal its members'
/// values.
const MIN_MEMBERS: u64 = 5;

/// The `top` values with the highest lift among `members` (ties: the larger share), over categorical values
/// (strings and booleans) of traits and tags. `population` yields each profile's id, traits and tag values.
pub fn insight<'p>(
    members: &BTreeSet<String>,
    population: impl IntoIterator<Item = (&'p str, &'p Map<String, Value>, &'p BTreeMap<String, Value>)>,
    top: usize,
) -> Vec<Insight> {
    // (field, value's JSON) → (count among members, count in population, the value)
    let mut counts: BTreeMap<(String, String), (u64, u64, Value)> = BTreeMap::new();
    let (mut total, mut in_audience) = (0u64, 0u64);
    for (id, traits, tags) in population {
        let member = members.contains(id);
        total += 1;
        in_audience += u64::from(member);
        let fields = traits
            .iter()
            .map(|(k, v)| (format!("trait:{k}"), v))
            .chain(tags.iter().map(|(k, v)| (format!("tag:{k}"), v)));
        for (field, value) in fields {
            // Personal data is never an insight, whatever its share.
            let personal = field
                .strip_prefix("trait:")
                .is_some_and(|name| crate::activation::destination::PII_TRAITS.contains(&name));
            if personal || !(value.is_string() || value.is_boolean()) {
                continue;
            }
            let entry = counts.entry((field, value.to_string())).or_insert_with(|| (0, 0, value.clone()));
            entry.0 += u64::from(member);
            entry.1 += 1;
        }
    }
    if total == 0 || in_audience == 0 {
        return Vec::new();
    }
    let mut out: Vec<Insight> = counts
        .into_iter()
        .filter_map(|((field, _), (hits, all, value))| {
            let share = hits as f64 / in_audience as f64;
            let population_share = all as f64 / total as f64;
            (share >= MIN_SHARE && hits >= MIN_MEMBERS).then(|| Insight {
                field,
                value,
                share,
                population_share,
                lift: share / population_share,
            })
        })
        .collect();
    out.sort_by(|a, b| b.lift.total_cmp(&a.lift).then(b.share.total_cmp(&a.share)));
    out.truncate(top);
    out
}
