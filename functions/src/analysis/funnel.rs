//! Funnels: the persons who did a sequence of events within a conversion window, per step.

use serde::{Deserialize, Serialize};

use super::period::{DAY_MS, median};
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
        }
        Ok(())
    }
}

/// Runs `funnel` on `engine`.
pub(super) async fn run(engine: &Engine, funnel: &Funnel) -> Result<FunnelResult, Error> {
    funnel.check(&engine.event_names)?;
    let (from, to) = (funnel.from.unix_millis(), funnel.to.unix_millis());
    let names = (funnel.order != Order::Strict).then_some(funnel.steps.as_slice());
    let sorted = engine.person_events(names, &funnel.steps, Some(from), to.saturating_add(funnel.window_ms)).await?;
    let people = sorted.people();
    let n = funnel.steps.len();
    let mut reached = vec![0u64; n];
    let mut gaps: Vec<Vec<f64>> = vec![Vec::new(); n];
    for person in &people {
        let Some(times) = best(funnel, person, from, to) else { continue };
        for (k, t) in times.iter().enumerate() {
            reached[k] += 1;
            if k > 0 {
                gaps[k].push((t - times[k - 1]) as f64 / 1000.0);
            }
        }
    }
    let steps = funnel
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
        .collect();
    Ok(FunnelResult {
        steps,
        order: funnel.order,
        window_seconds: funnel.window_ms as f64 / 1000.0,
        from: funnel.from,
        to: funnel.to,
    })
}

/// A person's furthest progress over every start (a first step in the range): the time of each step reached;
/// none when no first step is in the range. Of equal progress, the earliest start.
fn best(funnel: &Funnel, person: &PersonEvents<'_>, from: i64, to: i64) -> Option<Vec<i64>> {
    let steps = &funnel.steps;
    let mut best: Option<Vec<i64>> = None;
    for (start, &(name, at)) in person.events.iter().enumerate() {
        let starts_here = match funnel.order {
            Order::Any => steps.iter().any(|s| s == name),
            _ => name == steps[0],
        };
        if !starts_here || at < from || at >= to {
            continue;
        }
        let end = at + funnel.window_ms;
        let times = match funnel.order {
            Order::Ordered => ordered(steps, &person.events[start..], end),
            Order::Strict => strict(steps, &person.events[start..], end),
            Order::Any => any(steps, &person.events[start..], end),
        };
        if best.as_ref().is_none_or(|b| times.len() > b.len()) {
            let done = times.len() == steps.len();
            best = Some(times);
            if done {
                break;
            }
        }
    }
    best
}

/// Ordered: each step the first of its event after the step before, within the window.
fn ordered(steps: &[String], events: &[(&str, i64)], end: i64) -> Vec<i64> {
    let mut times = vec![events[0].1];
    let mut next = 1;
    for &(name, at) in &events[1..] {
        if next == steps.len() || at > end {
            break;
        }
        if name == steps[next] {
            times.push(at);
            next += 1;
        }
    }
    times
}

/// Strict: each step the very next event, within the window.
fn strict(steps: &[String], events: &[(&str, i64)], end: i64) -> Vec<i64> {
    let mut times = vec![events[0].1];
    for (&(name, at), step) in events[1..].iter().zip(&steps[1..]) {
        if at > end || name != step {
            break;
        }
        times.push(at);
    }
    times
}

/// Any order: the time each further distinct step was first done, within the window.
fn any(steps: &[String], events: &[(&str, i64)], end: i64) -> Vec<i64> {
    let mut done = vec![false; steps.len()];
    let mut times = Vec::new();
    for &(name, at) in events {
        if at > end {
            break;
        }
        if let Some(k) = steps.iter().position(|s| s == name).filter(|k| !done[*k]) {
            done[k] = true;
            times.push(at);
        }
    }
    times
}
