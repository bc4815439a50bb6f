//! Names a definition reads (events, properties, traits) against what the data dictionary has seen: the
//! closest known name for a misspelled one, and the names a definition expects before any data carries them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Names a definition reads that the data has not carried yet, so the catalog does not refuse them: `true`
/// for every name in the definition, or a list of event, property and trait names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Expected {
    /// `true`: every name; `false` (the default): none.
    All(bool),
    /// These names.
    Names(BTreeSet<String>),
}

impl Default for Expected {
    fn default() -> Self {
        Expected::All(false)
    }
}

impl Expected {
    /// Whether `name` may be unknown to the catalog.
    pub fn covers(&self, name: &str) -> bool {
        match self {
            Expected::All(all) => *all,
            Expected::Names(names) => names.contains(name),
        }
    }

    /// Whether nothing is expected (the default, left out when written).
    pub fn is_none(&self) -> bool {
        matches!(self, Expected::All(false)) || matches!(self, Expected::Names(n) if n.is_empty())
    }
}

/// The known name closest to `name`: equal but for case, or within a few edits (a letter added, dropped,
/// changed or two swapped: at most 2, or a third of the name's length for longer names); ties go to the
/// first in order.
pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wanted: Vec<char> = name.to_lowercase().chars().collect();
    let limit = (wanted.len() / 3).max(2);
    let mut best: Option<(usize, &str)> = None;
    for candidate in known {
        let theirs: Vec<char> = candidate.to_lowercase().chars().collect();
        if wanted.len().abs_diff(theirs.len()) > limit {
            continue;
        }
        let distance = edits(&wanted, &theirs);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, name)| name)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours.
fn edits(a: &[char], b: &[char]) -> usize {
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, cell) in d.iter_mut().step_by(width).enumerate() {
        *cell = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best =
                (d[(i - 1) * width + j] + 1).min(d[i * width + j - 1] + 1).min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_known_name() {
        let events = ["Order Completed", "Product Viewed", "Checkout Started"];
        assert_eq!(closest("Order Complete", events), Some("Order Completed"));
        assert_eq!(closest("order completed", events), Some("Order Completed"));
        assert_eq!(closest("Prodcut Viewed", events), Some("Product Viewed"));
        assert_eq!(closest("Signed Up", events), None);
        assert_eq!(closest("plna", ["plan", "name", "age"]), Some("plan"));
        assert_eq!(closest("revenu", ["revenue", "currency"]), Some("revenue"));
        assert_eq!(closest("agee", ["age", "plan"]), Some("age"));
        assert_eq!(closest("x", ["plan"]), None);
        assert_eq!(closest("城市", ["城市名", "省份"]), Some("城市名"));
    }

    #[test]
    fn expected_names() {
        let all: Expected = serde_json::from_value(serde_json::json!(true)).unwrap();
        assert!(all.covers("anything"));
        let some: Expected = serde_json::from_value(serde_json::json!(["Order Refunded"])).unwrap();
        assert!(some.covers("Order Refunded") && !some.covers("Order Completed"));
        assert!(Expected::default().is_none() && !Expected::default().covers("x"));
    }
}
