//! Funnels: the persons who did a sequence of events within a conversion window, per step; steps may have
//! conditions on their event's properties, and exclusion steps make a person drop out between two steps.

use serde::{Deserialize, Serialize};

use super::filter::Filter;
use super::period::{DAY_MS, median};
use super::trends::Breakdown;
use super::{Engine, PersonEvents};
use crate::Error;
use shared::time::UtcTime;

/// How a funnel's steps must follow each other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// In order; other events may come between.
    #[default]
    Ordered,
    /// In order, with no other track event between.
    Strict,
    /// In any order: step N counts the persons who did N of the steps.
    Any,
}

/// A funnel's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Funnel {
    /// The steps' event names, 2 to 10.
    pub steps: Vec<String>,
    /// The conversion window: the last step within this long of the first (ms; 1 s to 365 days).
    pub window_ms: i64,
    /// How the steps follow each other.
    #[serde(default)]
    pub order: Order,
    /// Persons enter at a first step at or after this time.
    pub from: UtcTime,
    /// … and before this one (their later steps may come after it, within the window).
    pub to: UtcTime,
    /// Conditions on the properties of a step's event (a step counts only an event that meets all of its).
    #[serde(default)]
    pub filters: Vec<StepFilter>,
    /// Events that make a person drop out between two steps.
    #[serde(default)]
    pub exclusions: Vec<Exclusion>,
    /// A breakdown: by a property of the person's first step's event (first touch), or a trait or tag.
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
    /// Values of the breakdown kept (the most persons at the first step), the others as `(other)`: 1 to 50.
    #[serde(default = "ten")]
    pub top: usize,
}

fn ten() -> usize {
    10
}

/// The steps of the persons with one value of the breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// The value (`(none)`: persons without one; `(other)`: the values past the top ones).
    pub key: String,
    /// Its steps, as the funnel's.
    pub steps: Vec<Step>,
}

/// A condition on a step's event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepFilter {
    /// The step, from 1.
    pub step: usize,
    /// The condition.
    pub filter: Filter,
}

/// An exclusion step: a person who does `event` after step `from_step` and before step `to_step` of their
/// attempt (or, not having reached `to_step`, before the window ends) drops out at `from_step`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exclusion {
    /// The excluded event.
    pub event: String,
    /// From after this step (from 1; default 1) …
    #[serde(default)]
    pub from_step: Option<usize>,
    /// … to before this one (default: the last).
    #[serde(default)]
    pub to_step: Option<usize>,
}

impl Exclusion {
    /// The steps it is between, from 0.
    fn between(&self, steps: usize) -> (usize, usize) {
        (self.from_step.unwrap_or(1) - 1, self.to_step.unwrap_or(steps) - 1)
    }
}

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// The step's event (in any order: `any N of M`, the persons who did N of the M steps).
    pub event: String,
    /// Persons who reached it.
    pub persons: u64,
    /// `persons` over the first step's.
    pub conversion_from_first: f64,
    /// `persons` over the step before's.
    pub conversion_from_previous: f64,
    /// Median seconds from the step before (none for the first step, or when nobody reached it).
    pub median_seconds: Option<f64>,
    /// Average seconds from the step before.
    pub average_seconds: Option<f64>,
}

/// A funnel's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunnelResult {
    /// Per step, in order.
    pub steps: Vec<Step>,
    /// The order the steps had to follow.
    pub order: Order,
    /// The window, in seconds.
    pub window_seconds: f64,
    /// The range persons entered in.
    pub from: UtcTime,
    /// Its end (excluded).
    pub to: UtcTime,
    /// Per value of the breakdown, the most persons first (empty without one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub breakdown: Vec<Series>,
}

/// Steps a funnel has at most.
pub const MAX_STEPS: usize = 10;

impl Funnel {
    /// The checks a definition must pass, naming the field; `known` are the event names the data holds.
    pub fn check(&self, known: &std::collections::BTreeSet<String>) -> Result<(), Error> {
        if self.steps.len() < 2 || self.steps.len() > MAX_STEPS {
            return Err(Error::Invalid(format!(
                "steps: a funnel has 2 to {MAX_STEPS} steps, not {}",
                self.steps.len()
            )));
        }
        if !(1_000..=365 * DAY_MS).contains(&self.window_ms) {
            return Err(Error::Invalid("window: from 1 second to 365 days".into()));
        }
        super::check_range(self.from, self.to)?;
        for step in &self.steps {
            super::check_event("steps", step, known)?;
        }
        if self.order == Order::Any {
            let distinct: std::collections::BTreeSet<&String> = self.steps.iter().collect();
            if distinct.len() < self.steps.len() {
                return Err(Error::Invalid("steps: in any order, each step is a different event".into()));
            }
            if !self.exclusions.is_empty() {
                return Err(Error::Invalid("exclusions: steps in any order have no \"between\"".into()));
            }
        }
        if !(1..=50).contains(&self.top) {
            return Err(Error::Invalid(format!("top: 1 to 50, not {}", self.top)));
        }
        if self.filters.len() > 20 {
            return Err(Error::Invalid("filters: at most 20".into()));
        }
        for (i, f) in self.filters.iter().enumerate() {
            if !(1..=self.steps.len()).contains(&f.step) {
                return Err(Error::Invalid(format!("filters[{i}].step: 1 to {}, not {}", self.steps.len(), f.step)));
            }
            f.filter.check(&format!("filters[{i}].filter"))?;
            if f.filter.of != super::filter::Of::Property {
                return Err(Error::Invalid(format!(
                    "filters[{i}].filter.of: a step's condition is on its event's properties"
                )));
            }
        }
        if self.exclusions.len() > MAX_STEPS {
            return Err(Error::Invalid(format!("exclusions: at most {MAX_STEPS}")));
        }
        for (i, exclusion) in self.exclusions.iter().enumerate() {
            super::check_event(&format!("exclusions[{i}].event"), &exclusion.event, known)?;
            let (a, b) = (exclusion.from_step.unwrap_or(1), exclusion.to_step.unwrap_or(self.steps.len()));
            if a < 1 || b > self.steps.len() || a >= b {
                return Err(Error::Invalid(format!(
                    "exclusions[{i}]: fromStep {a} must come before toStep {b}, both 1 to {}",
                    self.steps.len()
                )));
            }
        }
        Ok(())
    }
}

/// Runs `funnel` on `engine`.
pub(super) async fn run(engine: &Engine, funnel: &Funnel) -> Result<FunnelResult, Error> {
    funnel.check(&engine.event_names)?;
    if let Some(breakdown) = &funnel.breakdown {
        super::check_breakdown(engine, breakdown)?;
    }
    let (from, to) = (funnel.from.unix_millis(), funnel.to.unix_millis());
    let mut named = funnel.steps.clone();
    named.extend(funnel.exclusions.iter().map(|e| e.event.clone()));
    let names = (funnel.order != Order::Strict).then_some(named.as_slice());
    // Bit k: the event is step k (its name and filters); bit EXCLUDED + j: it is exclusion j's event.
    let mut conditions: Vec<String> = funnel
        .steps
        .iter()
        .enumerate()
        .map(|(k, step)| {
            let mut condition = format!("e.event = {}", super::trends::literal(step));
            for f in funnel.filters.iter().filter(|f| f.step == k + 1) {
                condition.push_str(&format!(" AND {}", f.filter.sql("e")));
            }
            condition
        })
        .collect();
    conditions.resize(OWN, "FALSE".to_string());
    conditions.push(super::PERSONS_OWN_SQL.to_string());
    conditions.extend(funnel.exclusions.iter().map(|e| format!("e.event = {}", super::trends::literal(&e.event))));
    let end = to.saturating_add(funnel.window_ms);
    let sorted =
        engine.person_events_matching(names, &named, Some(from), end, &conditions, funnel.breakdown.as_ref()).await?;
    let people = sorted.people();
    // Each person's furthest attempt, with the breakdown's value at its first step (first touch).
    let attempts: Vec<(Option<&str>, Vec<i64>)> = people
        .iter()
        .filter_map(|person| best(funnel, person, from, to).map(|(start, times)| (person.keys[start], times)))
        .collect();
    let steps = steps_of(funnel, attempts.iter().map(|(_, times)| times));
    let mut breakdown = Vec::new();
    if funnel.breakdown.is_some() {
        for (key, times) in super::breakdown_groups(&attempts, funnel.top) {
            breakdown.push(Series { key, steps: steps_of(funnel, times.into_iter()) });
        }
    }
    Ok(FunnelResult {
        steps,
        order: funnel.order,
        window_seconds: funnel.window_ms as f64 / 1000.0,
        from: funnel.from,
        to: funnel.to,
        breakdown,
    })
}

/// The steps' figures over the persons' attempts (each the times of the steps reached).
fn steps_of<'a>(funnel: &Funnel, attempts: impl Iterator<Item = &'a Vec<i64>>) -> Vec<Step> {
    let n = funnel.steps.len();
    let mut reached = vec![0u64; n];
    let mut gaps: Vec<Vec<f64>> = vec![Vec::new(); n];
    for times in attempts {
        for (k, t) in times.iter().enumerate() {
            reached[k] += 1;
            if k > 0 {
                gaps[k].push((t - times[k - 1]) as f64 / 1000.0);
            }
        }
    }
    funnel
        .steps
        .iter()
        .enumerate()
        .map(|(k, event)| {
            let rate = |of: u64| if of == 0 { 0.0 } else { reached[k] as f64 / of as f64 };
            let gaps = &mut gaps[k];
            Step {
                // In any order, step N is any N of the steps.
                event: match funnel.order {
                    Order::Any => format!("any {} of {n}", k + 1),
                    _ => event.clone(),
                },
                persons: reached[k],
                conversion_from_first: rate(reached[0]),
                conversion_from_previous: if k == 0 { rate(reached[0]) } else { rate(reached[k - 1]) },
                median_seconds: median(gaps),
                average_seconds: (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64),
            }
        })
        .collect()
}

/// The bit of an event's mask set for the persons' own events (steps take the bits below).
const OWN: usize = 15;
/// The bit of an event's mask where exclusion 0 starts.
const EXCLUDED: usize = 16;

/// Whether mask `mask` has bit `k`.
fn is(mask: i64, k: usize) -> bool {
    mask & (1 << k) != 0
}

/// A person's furthest progress over every start (a first step in the range): where it starts and the time of
/// each step reached; none when no first step is in the range. Of equal progress, the earliest start.
fn best(funnel: &Funnel, person: &PersonEvents<'_>, from: i64, to: i64) -> Option<(usize, Vec<i64>)> {
    let n = funnel.steps.len();
    let mut best: Option<(usize, Vec<i64>)> = None;
    for (start, &(_, at)) in person.events.iter().enumerate() {
        let mask = person.masks[start];
        let starts_here = match funnel.order {
            Order::Any => (0..n).any(|k| is(mask, k)),
            _ => is(mask, 0),
        };
        if !starts_here || at < from || at >= to {
            continue;
        }
        let end = at + funnel.window_ms;
        let (events, masks) = (&person.events[start..], &person.masks[start..]);
        let mut times = match funnel.order {
            Order::Ordered => ordered(n, events, masks, end),
            Order::Strict => strict(n, events, masks, end),
            Order::Any => any(n, events, masks, end),
        };
        excluded(funnel, events, masks, end, &mut times);
        if best.as_ref().is_none_or(|b| times.len() > b.1.len()) {
            let done = times.len() == n;
            best = Some((start, times));
            if done {
                break;
            }
        }
    }
    best
}

/// An attempt's progress cut at the step after which an excluded event came (before the next step counted
/// by the exclusion, or before the window's `end` where that step was not reached).
fn excluded(funnel: &Funnel, events: &[(&str, i64)], masks: &[i64], end: i64, times: &mut Vec<i64>) {
    let n = funnel.steps.len();
    let mut exclusions: Vec<(usize, usize, usize)> =
        funnel.exclusions.iter().enumerate().map(|(j, e)| (e.between(n).0, e.between(n).1, j)).collect();
    exclusions.sort();
    for (a, b, j) in exclusions {
        if times.len() <= a + 1 {
            continue;
        }
        let after = times[a];
        let before = times.get(b).copied().unwrap_or(end);
        // Events are in time order: from the step's to the limit, no further.
        let happened = events
            .iter()
            .zip(masks)
            .skip_while(|((_, at), _)| *at <= after)
            .take_while(|((_, at), _)| *at < before)
            .any(|(_, &mask)| is(mask, EXCLUDED + j));
        if happened {
            times.truncate(a + 1);
        }
    }
}

/// Ordered: each step the first of its event after the step before, within the window.
fn ordered(n: usize, events: &[(&str, i64)], masks: &[i64], end: i64) -> Vec<i64> {
    let mut times = vec![events[0].1];
    let mut next = 1;
    for (&(_, at), &mask) in events[1..].iter().zip(&masks[1..]) {
        if next == n || at > end {
            break;
        }
        if is(mask, next) {
            times.push(at);
            next += 1;
        }
    }
    times
}

/// Strict: each step the very next event, within the window (the platform's records, read for an exclusion
/// that names one, are not events between steps unless a step names them).
fn strict(n: usize, events: &[(&str, i64)], masks: &[i64], end: i64) -> Vec<i64> {
    let steps = (1i64 << n) - 1;
    let mut times = vec![events[0].1];
    let between = events[1..].iter().zip(&masks[1..]).filter(|(_, mask)| is(**mask, OWN) || **mask & steps != 0);
    for (k, (&(_, at), &mask)) in (1..n).zip(between) {
        if at > end || !is(mask, k) {
            break;
        }
        times.push(at);
    }
    times
}

/// Any order: the time each further distinct step was first done, within the window.
fn any(n: usize, events: &[(&str, i64)], masks: &[i64], end: i64) -> Vec<i64> {
    let mut done = vec![false; n];
    let mut times = Vec::new();
    for (&(_, at), &mask) in events.iter().zip(masks) {
        if at > end {
            break;
        }
        if let Some(k) = (0..n).find(|&k| is(mask, k) && !done[k]) {
            done[k] = true;
            times.push(at);
        }
    }
    times
}
