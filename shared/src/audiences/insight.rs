//! What makes an audience distinct: the trait and tag values most over-represented among its members
//! against the whole population.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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
    const AUDIENCE: &str = "audience";
    let mut counts = InsightCounts::default();
    for (id, traits, tags) in population {
        let member = members.contains(id).then_some(AUDIENCE);
        counts.observe(traits, tags, member);
    }
    counts.top(AUDIENCE, top)
}

/// Which categorical values of one field (a trait or a tag) profiles hold: value → slot.
#[derive(Debug, Default)]
struct Values {
    strings: HashMap<String, usize>,
    booleans: [Option<usize>; 2],
}

/// Insight for every audience in one pass over the population: each profile is observed once with the
/// audiences it is a member of ([`InsightCounts::observe`]), then [`InsightCounts::top`] ranks an audience's
/// values. Memory grows with the distinct categorical values, not with the profiles.
#[derive(Debug, Default)]
pub struct InsightCounts {
    profiles: u64,
    traits: HashMap<String, Values>,
    tags: HashMap<String, Values>,
    /// Per slot: the field (`trait:NAME`, `tag:ID`), the value, and the profiles holding it.
    slots: Vec<(String, Value, u64)>,
    /// Per audience: its members, and per slot the members holding it.
    audiences: HashMap<String, (u64, Vec<u64>)>,
}

impl InsightCounts {
    /// Counts one profile's traits and tag values, for the population and for each audience in `member_of`.
    pub fn observe<'a>(
        &mut self,
        traits: &Map<String, Value>,
        tags: &BTreeMap<String, Value>,
        member_of: impl IntoIterator<Item = &'a str>,
    ) {
        self.profiles += 1;
        let mut held = Vec::new();
        for (name, value) in traits {
            // Personal data is never an insight, whatever its share.
            if !crate::profile::PII_TRAITS.contains(&name.as_str()) {
                held.extend(slot(&mut self.traits, &mut self.slots, "trait", name, value));
            }
        }
        for (name, value) in tags {
            held.extend(slot(&mut self.tags, &mut self.slots, "tag", name, value));
        }
        for &s in &held {
            self.slots[s].2 += 1;
        }
        for audience in member_of {
            let (members, counts) = match self.audiences.get_mut(audience) {
                Some(entry) => entry,
                None => self.audiences.entry(audience.to_string()).or_default(),
            };
            *members += 1;
            for &s in &held {
                if counts.len() <= s {
                    counts.resize(s + 1, 0);
                }
                counts[s] += 1;
            }
        }
    }

    /// The `top` values with the highest lift among `audience`'s members (ties: the larger share, then by
    /// field and value).
    pub fn top(&self, audience: &str, top: usize) -> Vec<Insight> {
        let Some((members, counts)) = self.audiences.get(audience) else { return Vec::new() };
        if self.profiles == 0 || *members == 0 {
            return Vec::new();
        }
        let mut out: Vec<(Insight, String)> = counts
            .iter()
            .enumerate()
            .filter_map(|(s, &hits)| {
                let (field, value, all) = &self.slots[s];
                let share = hits as f64 / *members as f64;
                let population_share = *all as f64 / self.profiles as f64;
                (share >= MIN_SHARE && hits >= MIN_MEMBERS).then(|| {
                    let insight = Insight {
                        field: field.clone(),
                        value: value.clone(),
                        share,
                        population_share,
                        lift: share / population_share,
                    };
                    (insight, value.to_string())
                })
            })
            .collect();
        out.sort_by(|(a, a_value), (b, b_value)| {
            b.lift
                .total_cmp(&a.lift)
                .then(b.share.total_cmp(&a.share))
                .then_with(|| (&a.field, a_value).cmp(&(&b.field, b_value)))
        });
        out.truncate(top);
        out.into_iter().map(|(insight, _)| insight).collect()
    }
}

/// The slot of `name`'s `value` (new slots numbered as they come), or none for a value that is not categorical.
fn slot(
    fields: &mut HashMap<String, Values>,
    slots: &mut Vec<(String, Value, u64)>,
    prefix: &str,
    name: &str,
    value: &Value,
) -> Option<usize> {
    let values = match fields.get_mut(name) {
        Some(values) => values,
        None => fields.entry(name.to_string()).or_default(),
    };
    let mut new = || {
        slots.push((format!("{prefix}:{name}"), value.clone(), 0));
        slots.len() - 1
    };
    match value {
        Value::String(text) => Some(match values.strings.get(text.as_str()) {
            Some(&s) => s,
            None => {
                let s = new();
                values.strings.insert(text.clone(), s);
                s
            }
        }),
        Value::Bool(flag) => Some(*values.booleans[usize::from(*flag)].get_or_insert_with(new)),
        _ => None,
    }
}
