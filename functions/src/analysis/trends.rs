//! Trends (event segmentation): a measure of events per day, week or month, optionally broken down by a
//! property, trait or tag (the top values, the rest as one "other" series).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::filter::{Filter, Of};
use super::period::Period;
use super::{Engine, Limits, MAX_ROWS};
use crate::Error;
use shared::time::UtcTime;

/// What is measured per period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op", deny_unknown_fields)]
pub enum Measure {
    /// Events.
    Events,
    /// Distinct persons.
    Persons,
    /// The sum of a numeric property.
    Sum {
        /// The property.
        property: String,
    },
    /// The average of a numeric property.
    Average {
        /// The property.
        property: String,
    },
}

/// What a trend is broken down by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Breakdown {
    /// An event property.
    Property(String),
    /// A trait of the person.
    Trait(String),
    /// A tag of the person (the last full recompute's value).
    Tag(String),
}

/// A trend's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trends {
    /// The track event measured (none: every track event).
    #[serde(default)]
    pub event: Option<String>,
    /// What is measured.
    pub measure: Measure,
    /// Per day, week (from Monday) or month, in UTC.
    #[serde(default)]
    pub period: Period,
    /// From this time …
    pub from: UtcTime,
    /// … to this one (excluded).
    pub to: UtcTime,
    /// The breakdown.
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
    /// Series kept of a breakdown (the largest by their total; the others together as "other"): 1 to 50.
    #[serde(default = "ten")]
    pub top: usize,
    /// Only persons in this audience (its last computed members).
    #[serde(default)]
    pub audience: Option<String>,
    /// Only events meeting all of these (on their properties, or their person's traits or tags).
    #[serde(default)]
    pub filters: Vec<Filter>,
}

fn ten() -> usize {
    10
}

/// One period's value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// When the period starts.
    pub start: UtcTime,
    /// Its value: 0 where nothing happened (an average: none).
    pub value: Option<f64>,
}

/// One series: the whole, or one value of the breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// The breakdown's value (`(none)` for events without one, `(other)` for the values past the top ones);
    /// none without a breakdown.
    pub key: Option<String>,
    /// The measure over the whole range (persons: each counted once).
    pub total: Option<f64>,
    /// Every period of the range, in order.
    pub points: Vec<Point>,
}

/// A trend's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrendsResult {
    /// The series, largest total first (`(other)` last).
    pub series: Vec<Series>,
    /// The period.
    pub period: Period,
    /// The range.
    pub from: UtcTime,
    /// Its end (excluded).
    pub to: UtcTime,
}

/// Series a breakdown keeps at most.
pub const MAX_TOP: usize = 50;

/// The key of events without the breakdown's value, and of the values past the top ones.
const NONE: &str = "(none)";
pub(super) const OTHER: &str = "(other)";

impl Trends {
    /// The checks a definition must pass, naming the field.
    pub fn check(&self, engine: &Engine) -> Result<(), Error> {
        super::check_range(self.from, self.to)?;
        if let Some(event) = &self.event {
            super::check_event("event", event, &engine.event_names)?;
        }
        if !(1..=MAX_TOP).contains(&self.top) {
            return Err(Error::Invalid(format!("top: 1 to {MAX_TOP}, not {}", self.top)));
        }
        let periods = self.period.index(self.to.unix_millis() - 1) - self.period.index(self.from.unix_millis()) + 1;
        if periods > 3_700 {
            return Err(Error::Invalid(format!("period: {periods} periods in the range; at most 3700")));
        }
        match &self.breakdown {
            Some(Breakdown::Trait(name)) => super::check_name("breakdown.trait", "trait", name, &engine.traits)?,
            Some(Breakdown::Tag(name)) => super::check_name("breakdown.tag", "tag", name, &engine.tags)?,
            Some(Breakdown::Property(name)) if name.is_empty() => {
                return Err(Error::Invalid("breakdown.property: a property name".into()));
            }
            _ => {}
        }
        if let Measure::Sum { property } | Measure::Average { property } = &self.measure
            && property.is_empty()
        {
            return Err(Error::Invalid("measure.property: a property name".into()));
        }
        if let Some(audience) = &self.audience {
            super::check_name("audience", "audience", audience, &engine.audiences)?;
        }
        if self.filters.len() > 20 {
            return Err(Error::Invalid("filters: at most 20".into()));
        }
        for (i, filter) in self.filters.iter().enumerate() {
            let field = format!("filters[{i}]");
            filter.check(&field)?;
            match filter.of {
                Of::Property => {}
                Of::Trait => super::check_name(&field, "trait", &filter.property, &engine.traits)?,
                Of::Tag => super::check_name(&field, "tag", &filter.property, &engine.tags)?,
            }
        }
        Ok(())
    }
}

/// A SQL string literal.
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A SQL identifier.
pub(super) fn identifier(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// The measure's SQL over the rows of `alias` (columns `profile_id` and `properties`).
fn measure_sql(measure: &Measure, alias: &str) -> String {
    match measure {
        Measure::Events => "CAST(count(*) AS DOUBLE)".to_string(),
        Measure::Persons => format!("CAST(count(DISTINCT {alias}.profile_id) AS DOUBLE)"),
        Measure::Sum { property } => format!("sum(property_number({alias}.properties, {}))", literal(property)),
        Measure::Average { property } => format!("avg(property_number({alias}.properties, {}))", literal(property)),
    }
}

/// Runs `trends` on `engine`.
pub(super) async fn run(engine: &Engine, trends: &Trends) -> Result<TrendsResult, Error> {
    trends.check(engine)?;
    let at = |t: UtcTime| format!("to_timestamp_millis({})", t.unix_millis());
    let mut joins = String::new();
    let key = match &trends.breakdown {
        None => "NULL".to_string(),
        Some(Breakdown::Property(name)) => format!("property(e.properties, {})", literal(name)),
        Some(Breakdown::Trait(name)) => {
            joins.push_str(" LEFT JOIN profiles p ON e.profile_id = p.profile_id");
            format!("CAST(p.{} AS VARCHAR)", identifier(name))
        }
        Some(Breakdown::Tag(name)) => {
            joins.push_str(" LEFT JOIN tags t ON e.profile_id = t.profile_id");
            format!("CAST(t.{} AS VARCHAR)", identifier(name))
        }
    };
    let mut filter = format!(
        "e.event IS NOT NULL AND e.profile_id IS NOT NULL AND e.timestamp >= {} AND e.timestamp < {}",
        at(trends.from),
        at(trends.to)
    );
    match &trends.event {
        Some(event) => filter.push_str(&format!(" AND e.event = {}", literal(event))),
        None => filter.push_str(&format!(" AND {}", super::PERSONS_OWN_SQL)),
    }
    if let Some(audience) = &trends.audience {
        filter.push_str(&format!(
            " AND e.profile_id IN (SELECT profile_id FROM memberships WHERE audience = {})",
            literal(audience)
        ));
    }
    if trends.filters.iter().any(|f| f.of == Of::Trait) {
        joins.push_str(" LEFT JOIN profiles pf ON e.profile_id = pf.profile_id");
    }
    if trends.filters.iter().any(|f| f.of == Of::Tag) {
        joins.push_str(" LEFT JOIN tags tf ON e.profile_id = tf.profile_id");
    }
    for condition in &trends.filters {
        let alias = match condition.of {
            Of::Property => "e",
            Of::Trait => "pf",
            Of::Tag => "tf",
        };
        filter.push_str(&format!(" AND coalesce({}, FALSE)", condition.sql(alias)));
    }
    let base =
        format!("SELECT {key} AS k, e.timestamp AS ts, e.profile_id, e.properties FROM events e{joins} WHERE {filter}");
    let rows = |query: String| async move {
        let answer = engine.sql(&query, Limits { rows: MAX_ROWS, time: super::ANALYSIS_TIME }).await?;
        if answer.truncated {
            return Err(Error::Invalid("the trend has too many series and periods; narrow the range".into()));
        }
        Ok::<_, Error>(answer.rows)
    };
    // Totals per key over the range, largest first (ties by key), one past the top: the top ones keep their
    // series.
    let measure_of = measure_sql(&trends.measure, "b");
    let totals = rows(format!(
        "SELECT b.k, {measure_of} AS m FROM ({base}) b GROUP BY b.k ORDER BY coalesce(m, 0) DESC, b.k ASC NULLS FIRST \
         LIMIT {}",
        trends.top + 1
    ))
    .await?;
    let mut totals: Vec<(Option<String>, Option<f64>)> =
        totals.into_iter().map(|row| (row[0].as_str().map(String::from), row[1].as_f64())).collect();
    totals.sort_by(|a, b| b.1.unwrap_or(0.0).total_cmp(&a.1.unwrap_or(0.0)).then(a.0.cmp(&b.0)));
    let breakdown = trends.breakdown.is_some();
    let kept: Vec<Option<String>> = totals.iter().take(trends.top).map(|(k, _)| k.clone()).collect();
    let past_top = breakdown && totals.len() > trends.top;
    let grouped_key = if past_top {
        let listed: Vec<String> = kept.iter().flatten().map(|k| literal(k)).collect();
        let keeps_none = kept.iter().any(Option::is_none);
        let inside = if listed.is_empty() { "FALSE".to_string() } else { format!("b.k IN ({})", listed.join(", ")) };
        let none = if keeps_none {
            "WHEN b.k IS NULL THEN NULL".to_string()
        } else {
            format!("WHEN b.k IS NULL THEN {}", literal(OTHER))
        };
        format!("CASE {none} WHEN {inside} THEN b.k ELSE {} END", literal(OTHER))
    } else {
        "b.k".to_string()
    };
    let unit = match trends.period {
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
    };
    let points = rows(format!(
        "SELECT g, date_trunc({}, ts) AS start, {measure_of} FROM (SELECT {grouped_key} AS g, b.* FROM ({base}) b) b \
         GROUP BY g, start",
        literal(unit)
    ))
    .await?;
    let mut values: BTreeMap<Option<String>, BTreeMap<i64, f64>> = BTreeMap::new();
    for row in points {
        let (Some(start), Some(value)) = (row[1].as_str().and_then(UtcTime::parse), row[2].as_f64()) else { continue };
        values
            .entry(row[0].as_str().map(String::from))
            .or_default()
            .insert(trends.period.index(start.unix_millis()), value);
    }
    let other_total = if past_top {
        rows(format!(
            "SELECT {measure_of} FROM (SELECT {grouped_key} AS g, b.* FROM ({base}) b) b WHERE g = {}",
            literal(OTHER)
        ))
        .await?
        .first()
        .and_then(|row| row[0].as_f64())
    } else {
        None
    };
    let first = trends.period.index(trends.from.unix_millis());
    let last = trends.period.index(trends.to.unix_millis() - 1);
    let average = matches!(trends.measure, Measure::Average { .. });
    let series_of = |key: Option<String>, total: Option<f64>, by_period: Option<&BTreeMap<i64, f64>>| Series {
        key: if breakdown { Some(key.unwrap_or_else(|| NONE.to_string())) } else { None },
        total,
        points: (first..=last)
            .map(|index| Point {
                start: UtcTime::from_unix_millis(trends.period.start(index)).unwrap_or(trends.from),
                value: by_period.and_then(|v| v.get(&index).copied()).or(if average { None } else { Some(0.0) }),
            })
            .collect(),
    };
    let mut series: Vec<Series> =
        totals.iter().take(trends.top).map(|(key, total)| series_of(key.clone(), *total, values.get(key))).collect();
    if !breakdown && series.is_empty() {
        series.push(series_of(None, if average { None } else { Some(0.0) }, None));
    }
    if past_top {
        series.push(series_of(Some(OTHER.to_string()), other_total, values.get(&Some(OTHER.to_string()))));
    }
    Ok(TrendsResult { series, period: trends.period, from: trends.from, to: trends.to })
}
