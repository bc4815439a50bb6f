//! Retention: cohorts of persons by the period of a first event, and how many came back in each period after.

use serde::{Deserialize, Serialize};

use super::Engine;
use super::period::Period;
use super::trends::Breakdown;
use crate::Error;
use shared::time::UtcTime;

/// A retention analysis's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// The event whose first occurrence puts a person in a cohort (none: their first track event of their own).
    pub cohort_event: Option<String>,
    /// The event that counts as coming back (none: any track event of the person's own).
    pub return_event: Option<String>,
    /// Cohorts' and returns' periods.
    #[serde(default)]
    pub period: Period,
    /// Periods counted per cohort, period 0 (the cohort's own) first: 1 to 60.
    pub periods: u32,
    /// Cohorts whose first event is at or after this time …
    pub from: UtcTime,
    /// … and before this one.
    pub to: UtcTime,
    /// A breakdown by a trait or tag of the person: cohorts per value.
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
    /// Values of the breakdown kept (the most persons), the others as `(other)`: 1 to 50.
    #[serde(default = "ten")]
    pub top: usize,
}

fn ten() -> usize {
    10
}

/// The cohorts of the persons with one value of the breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// The value (`(none)`: persons without one; `(other)`: the values past the top ones).
    pub key: String,
    /// Its cohorts, as the analysis's.
    pub cohorts: Vec<Cohort>,
}

/// One cohort.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cohort {
    /// When its period starts (the first cohort holds only the part of its period from `from`).
    pub start: UtcTime,
    /// Persons in it.
    pub size: u64,
    /// Persons who came back, per period (period 0 first); a period that starts after the data's latest event
    /// is null (not 0: it has not happened yet), one under way counts as far as the data goes.
    pub retained: Vec<Option<u64>>,
    /// `retained` over `size`.
    pub rates: Vec<Option<f64>>,
}

/// A retention analysis's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionResult {
    /// The cohorts, oldest first (periods without anyone are left out).
    pub cohorts: Vec<Cohort>,
    /// Their period.
    pub period: Period,
    /// Periods per cohort.
    pub periods: u32,
    /// Per value of the breakdown, the most persons first (empty without one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub breakdown: Vec<Series>,
}

/// Periods a retention analysis counts at most.
pub const MAX_PERIODS: u32 = 60;

impl Retention {
    /// The checks a definition must pass, naming the field; `known` are the event names the data holds.
    pub fn check(&self, known: &std::collections::BTreeSet<String>) -> Result<(), Error> {
        if !(1..=MAX_PERIODS).contains(&self.periods) {
            return Err(Error::Invalid(format!("periods: 1 to {MAX_PERIODS}, not {}", self.periods)));
        }
        super::check_range(self.from, self.to)?;
        if let Some(event) = &self.cohort_event {
            super::check_event("cohortEvent", event, known)?;
        }
        if let Some(event) = &self.return_event {
            super::check_event("returnEvent", event, known)?;
        }
        if let Some(Breakdown::Property(_)) = &self.breakdown {
            return Err(Error::Invalid("breakdown.property: retention is broken down by a trait or tag".into()));
        }
        if !(1..=50).contains(&self.top) {
            return Err(Error::Invalid(format!("top: 1 to 50, not {}", self.top)));
        }
        Ok(())
    }
}

/// Runs `retention` on `engine`.
pub(super) async fn run(engine: &Engine, retention: &Retention) -> Result<RetentionResult, Error> {
    retention.check(&engine.event_names)?;
    let period = retention.period;
    let (from, to) = (retention.from.unix_millis(), retention.to.unix_millis());
    let last = period.index(to - 1) + i64::from(retention.periods);
    let end = period.start(last + 1);
    let mut names: Vec<String> = Vec::new();
    let everything = retention.cohort_event.is_none() || retention.return_event.is_none();
    if !everything {
        names.extend(retention.cohort_event.iter().chain(&retention.return_event).cloned());
    }
    let named: Vec<String> = retention.cohort_event.iter().chain(&retention.return_event).cloned().collect();
    if let Some(breakdown) = &retention.breakdown {
        super::check_breakdown(engine, breakdown)?;
    }
    let listed = (!everything).then_some(names.as_slice());
    let sorted = engine.person_events_matching(listed, &named, None, end, &[], retention.breakdown.as_ref()).await?;
    let people = sorted.people();
    // Each person in a cohort: (its period, whether they came back per period after), with their key.
    let entered: Vec<(Option<&str>, Entered)> = people
        .iter()
        .filter_map(|person| Some((person.keys.first().copied().flatten(), cohort_of(retention, person, from, to)?)))
        .collect();
    let data_end = engine.loaded.last_event_ms.unwrap_or(i64::MIN);
    let all = cohorts(retention, entered.iter().map(|(_, e)| e), data_end);
    let mut breakdown = Vec::new();
    if retention.breakdown.is_some() {
        for (key, of_key) in super::breakdown_groups(&entered, retention.top) {
            breakdown.push(Series { key, cohorts: cohorts(retention, of_key.into_iter(), data_end) });
        }
    }
    Ok(RetentionResult { cohorts: all, period, periods: retention.periods, breakdown })
}

/// A person's cohort (its period's number) and whether they came back in each period after.
type Entered = (i64, Vec<bool>);

/// A person's cohort (the period of their first cohort event, in the range) and whether they came back in
/// each period after; none when their first cohort event is not in the range.
fn cohort_of(retention: &Retention, person: &super::PersonEvents<'_>, from: i64, to: i64) -> Option<Entered> {
    let period = retention.period;
    let width = retention.periods as usize;
    let first =
        person.events.iter().position(|(name, _)| retention.cohort_event.as_deref().is_none_or(|c| c == *name))?;
    let start = person.events[first].1;
    if start < from || start >= to {
        return None;
    }
    let cohort = period.index(start);
    let mut back = vec![false; width];
    for (i, &(name, at)) in person.events.iter().enumerate().skip(first) {
        if i == first || retention.return_event.as_deref().is_some_and(|r| r != name) {
            continue;
        }
        let k = period.index(at) - cohort;
        if (0..width as i64).contains(&k) {
            back[k as usize] = true;
        }
    }
    Some((cohort, back))
}

/// The cohorts of the persons `entered`, with null for the periods after `data_end`.
fn cohorts<'a>(
    retention: &Retention,
    entered: impl Iterator<Item = &'a (i64, Vec<bool>)>,
    data_end: i64,
) -> Vec<Cohort> {
    let period = retention.period;
    let width = retention.periods as usize;
    let mut cohorts: std::collections::BTreeMap<i64, (u64, Vec<u64>)> = std::collections::BTreeMap::new();
    for (cohort, back) in entered {
        let entry = cohorts.entry(*cohort).or_insert_with(|| (0, vec![0; width]));
        entry.0 += 1;
        for (k, came) in back.iter().enumerate() {
            entry.1[k] += u64::from(*came);
        }
    }
    cohorts
        .into_iter()
        .map(|(index, (size, counts))| {
            let retained: Vec<Option<u64>> = counts
                .into_iter()
                .enumerate()
                .map(|(k, n)| (period.start(index + k as i64) <= data_end).then_some(n))
                .collect();
            Cohort {
                start: UtcTime::from_unix_millis(period.start(index)).unwrap_or(retention.from),
                size,
                rates: retained.iter().map(|r| r.map(|r| r as f64 / size as f64)).collect(),
                retained,
            }
        })
        .collect()
}
