//! Paths: the most frequent events after (or before) a chosen event, step by step, as the nodes and weighted
//! links a Sankey chart draws.
//!
//! Each person's path starts at their first occurrence of the event in the range and follows their own track
//! events within the window, to the depth asked; an event repeating the one just before it is one step
//! (`Product Viewed, Product Viewed` is one). At each step the most frequent events are nodes of their own and
//! the others one `(other)` node; paths go on through `(other)`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::Engine;
use super::period::DAY_MS;
use crate::Error;
use shared::time::UtcTime;

/// Which way paths go from the event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The events that follow it.
    #[default]
    After,
    /// The events that lead to it (step 1 is the one just before).
    Before,
}

/// A paths analysis's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Paths {
    /// The event paths start from (or lead to).
    pub event: String,
    /// After or before it.
    #[serde(default)]
    pub direction: Direction,
    /// Steps followed from the event: 1 to 5.
    pub depth: u32,
    /// Events within this long of the event count (ms; 1 s to 30 days).
    pub window_ms: i64,
    /// Events with a node of their own at each step, the most frequent first (1 to 50; default 5); the rest
    /// are `(other)`.
    #[serde(default = "five")]
    pub top: usize,
    /// Persons whose first occurrence of the event is at or after this time …
    pub from: UtcTime,
    /// … and before this one.
    pub to: UtcTime,
}

fn five() -> usize {
    5
}

/// One node: an event at a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Its step: 0 is the event itself, 1 the next (or, before, the previous) and so on.
    pub step: u32,
    /// The event (`(other)`: the events outside the step's top).
    pub event: String,
    /// Persons whose path passes here.
    pub persons: u64,
    /// Of them, those whose path ends here (no further event within the window, or the depth reached).
    pub ended: u64,
}

/// Persons going from one node to a node of the next step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// The node they come from (its index in `nodes`).
    pub source: usize,
    /// The node they go to.
    pub target: usize,
    /// Persons.
    pub persons: u64,
}

/// A paths analysis's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathsResult {
    /// The event.
    pub event: String,
    /// Which way the paths go.
    pub direction: Direction,
    /// Persons whose first occurrence of the event is in the range (node 0's persons).
    pub persons: u64,
    /// The nodes, by step, the most persons first; node 0 is the event.
    pub nodes: Vec<Node>,
    /// The links, by their source's step, the most persons first.
    pub links: Vec<Link>,
}

/// Steps a path is followed at most.
pub const MAX_DEPTH: u32 = 5;

/// What stands for the events outside a step's top.
pub const OTHER: &str = "(other)";

impl Paths {
    /// The checks a definition must pass, naming the field; `known` are the event names the data holds.
    pub fn check(&self, known: &std::collections::BTreeSet<String>) -> Result<(), Error> {
        if !(1..=MAX_DEPTH).contains(&self.depth) {
            return Err(Error::Invalid(format!("depth: 1 to {MAX_DEPTH}, not {}", self.depth)));
        }
        if !(1_000..=30 * DAY_MS).contains(&self.window_ms) {
            return Err(Error::Invalid("window: from 1 second to 30 days".into()));
        }
        if !(1..=50).contains(&self.top) {
            return Err(Error::Invalid(format!("top: 1 to 50, not {}", self.top)));
        }
        super::check_range(self.from, self.to)?;
        super::check_event("event", &self.event, known)
    }
}

/// Runs `paths` on `engine`.
pub(super) async fn run(engine: &Engine, paths: &Paths) -> Result<PathsResult, Error> {
    paths.check(&engine.event_names)?;
    let (from, to) = (paths.from.unix_millis(), paths.to.unix_millis());
    let (read_from, read_end) = match paths.direction {
        Direction::After => (from, to.saturating_add(paths.window_ms)),
        Direction::Before => (from.saturating_sub(paths.window_ms), to),
    };
    let named = [paths.event.clone()];
    let sorted = engine.person_events(None, &named, Some(read_from), read_end).await?;
    let depth = paths.depth as usize;
    // Each person's steps after (before) the event, by name.
    let mut walked: Vec<Vec<&str>> = Vec::new();
    for person in sorted.people() {
        let events = &person.events;
        let Some(start) = events.iter().position(|&(name, at)| name == paths.event && (from..to).contains(&at)) else {
            continue;
        };
        let anchor = events[start].1;
        let mut steps: Vec<&str> = Vec::with_capacity(depth);
        let mut last = paths.event.as_str();
        match paths.direction {
            Direction::After => {
                for &(name, at) in &events[start + 1..] {
                    if steps.len() == depth || at > anchor + paths.window_ms {
                        break;
                    }
                    if name != last {
                        steps.push(name);
                        last = name;
                    }
                }
            }
            Direction::Before => {
                for &(name, at) in events[..start].iter().rev() {
                    if steps.len() == depth || at < anchor - paths.window_ms {
                        break;
                    }
                    if name != last {
                        steps.push(name);
                        last = name;
                    }
                }
            }
        }
        walked.push(steps);
    }
    Ok(graph(paths, &walked))
}

/// A node: its step and event.
type At = (usize, String);

/// The nodes and links of the persons' `walked` steps.
fn graph(paths: &Paths, walked: &[Vec<&str>]) -> PathsResult {
    let depth = paths.depth as usize;
    // Each step's top events.
    let mut kept: Vec<Vec<&str>> = Vec::with_capacity(depth);
    for k in 0..depth {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for steps in walked {
            if let Some(name) = steps.get(k) {
                *counts.entry(name).or_default() += 1;
            }
        }
        let mut ranked: Vec<(&str, u64)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        kept.push(ranked.into_iter().take(paths.top).map(|(name, _)| name).collect());
    }
    let node_name =
        |k: usize, name: &str| -> String { if kept[k].contains(&name) { name.to_string() } else { OTHER.to_string() } };
    // (step, event) → (persons, ended); ((step, event), (step + 1, event)) → persons.
    let mut nodes: BTreeMap<At, (u64, u64)> = BTreeMap::new();
    let mut links: BTreeMap<(At, At), u64> = BTreeMap::new();
    for steps in walked {
        let mut here = (0, paths.event.clone());
        for (k, name) in steps.iter().enumerate() {
            let next = (k + 1, node_name(k, name));
            nodes.entry(here.clone()).or_default().0 += 1;
            *links.entry((here, next.clone())).or_default() += 1;
            here = next;
        }
        let node = nodes.entry(here).or_default();
        node.0 += 1;
        node.1 += 1;
    }
    let mut ordered: Vec<(At, (u64, u64))> = nodes.into_iter().collect();
    ordered.sort_by(|a, b| a.0.0.cmp(&b.0.0).then(b.1.0.cmp(&a.1.0)).then(a.0.1.cmp(&b.0.1)));
    let index: HashMap<&At, usize> = ordered.iter().enumerate().map(|(i, (key, _))| (key, i)).collect();
    let mut links: Vec<Link> = links
        .iter()
        .map(|((source, target), persons)| Link { source: index[source], target: index[target], persons: *persons })
        .collect();
    links.sort_by(|a, b| {
        ordered[a.source]
            .0
            .0
            .cmp(&ordered[b.source].0.0)
            .then(b.persons.cmp(&a.persons))
            .then(a.source.cmp(&b.source))
            .then(a.target.cmp(&b.target))
    });
    let nodes: Vec<Node> = ordered
        .into_iter()
        .map(|((step, event), (persons, ended))| Node { step: step as u32, event, persons, ended })
        .collect();
    PathsResult { event: paths.event.clone(), direction: paths.direction, persons: walked.len() as u64, nodes, links }
}
