//! Saved insights and dashboards (看板): an insight is an analysis's definition with a name and a chart type; a
//! dashboard is a named, ordered list of insights sharing a date range. Both live in `config/` (changed under
//! compare-and-swap); a run's result is kept in `analysis/v1/results/` with the version of the data it was
//! computed on, and answered from there while the data has not moved on.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use shared::access::IdentifierKey;
use shared::time::UtcTime;

use super::period::DAY_MS;
use super::{Compare, Engine, Funnel, Limits, Paths, Retention, Trends, Value};
use crate::Error;
use crate::storage::{ObjectStore, PutOptions};

/// Where the insights are.
pub const INSIGHTS: &str = "config/insights.json";
/// Where the dashboards are.
pub const DASHBOARDS: &str = "config/dashboards.json";
/// Where runs' results are kept, by insight.
pub const RESULTS: &str = shared::storage::keys::ANALYSIS_RESULTS;

/// Insights (and dashboards) kept at most.
pub const MAX_SAVED: usize = 1_000;
/// The largest analysis definition an insight holds (its JSON).
pub const MAX_DEFINITION_BYTES: usize = 64 << 10;
/// The largest result kept (its JSON); a dashboard answers at most this much per insight too.
pub const MAX_KEPT_BYTES: usize = 16 << 20;

/// An analysis of any kind, by its definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "definition", rename_all = "snake_case")]
pub enum Analysis {
    /// A trend.
    Trends(Trends),
    /// A funnel.
    Funnel(Funnel),
    /// Retention.
    Retention(Retention),
    /// Paths.
    Paths(Paths),
    /// An audience comparison.
    Compare(Compare),
    /// Value models.
    Value(Value),
    /// A read-only query.
    Sql(SqlQuery),
}

/// A saved query, as `POST /v1/sql` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqlQuery {
    /// The query.
    pub query: String,
    /// Rows answered at most (1 to 100000; default 1000).
    #[serde(default)]
    pub max_rows: Option<usize>,
    /// Seconds it may take (1 to 300; default 30).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

impl SqlQuery {
    /// Its limits.
    fn limits(&self) -> Limits {
        Limits {
            rows: self.max_rows.unwrap_or(1000),
            time: std::time::Duration::from_secs(self.timeout_seconds.unwrap_or(30).clamp(1, 300)),
        }
    }

    /// Whether its answer depends on more than the data (the clock, chance): never kept.
    fn volatile(&self) -> bool {
        let text = self.query.to_ascii_lowercase();
        ["now(", "current_", "random(", "uuid(", "today("].iter().any(|f| text.contains(f))
    }
}

/// How an insight is drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chart {
    /// Lines over time.
    #[default]
    Line,
    /// Bars.
    Bar,
    /// A table.
    Table,
    /// One number.
    Number,
    /// Funnel steps.
    Funnel,
    /// A cohort grid.
    Cohorts,
    /// A Sankey diagram.
    Sankey,
}

/// A saved analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Insight {
    /// Its id (`[a-z0-9_-]`, 1 to 64).
    pub id: String,
    /// Its name (1 to 200 characters).
    pub name: String,
    /// What it shows.
    #[serde(default)]
    pub description: String,
    /// The analysis.
    pub analysis: Analysis,
    /// How it is drawn.
    #[serde(default)]
    pub chart: Chart,
}

/// A dashboard: insights in order, with a shared date range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dashboard {
    /// Its id (`[a-z0-9_-]`, 1 to 64).
    pub id: String,
    /// Its name (1 to 200 characters).
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Its insights' ids, in order (1 to 50).
    pub insights: Vec<String>,
    /// The range every insight is run over: the last this many days of the data (1 to 3650); none: each
    /// insight's own.
    #[serde(default)]
    pub last_days: Option<u32>,
}

/// The checks an id and a name pass.
fn check_named(id: &str, name: &str) -> Result<(), Error> {
    if id.is_empty()
        || id.len() > 64
        || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(Error::Invalid(format!("id: 1 to 64 of a-z, 0-9, _ and -, not {id:?}")));
    }
    let length = name.trim().chars().count();
    if !(1..=200).contains(&length) {
        return Err(Error::Invalid("name: 1 to 200 characters".into()));
    }
    Ok(())
}

impl Insight {
    /// The checks an insight passes before it is saved (its analysis is checked against the data when run).
    pub fn check(&self) -> Result<(), Error> {
        check_named(&self.id, &self.name)?;
        if self.description.chars().count() > 2_000 {
            return Err(Error::Invalid("description: at most 2000 characters".into()));
        }
        if serde_json::to_vec(&self.analysis).map_or(0, |v| v.len()) > MAX_DEFINITION_BYTES {
            return Err(Error::Invalid(format!("analysis: at most {} KiB", MAX_DEFINITION_BYTES >> 10)));
        }
        if let Analysis::Sql(sql) = &self.analysis {
            if sql.query.trim().is_empty() {
                return Err(Error::Invalid("analysis.definition.query: the query is empty".into()));
            }
            if sql.max_rows.is_some_and(|n| !(1..=super::MAX_ROWS).contains(&n)) {
                return Err(Error::Invalid(format!("analysis.definition.maxRows: 1 to {}", super::MAX_ROWS)));
            }
            if sql.timeout_seconds.is_some_and(|s| !(1..=300).contains(&s)) {
                return Err(Error::Invalid("analysis.definition.timeoutSeconds: 1 to 300".into()));
            }
        }
        Ok(())
    }
}

impl Dashboard {
    /// The checks a dashboard passes before it is saved: `insights` are those saved.
    pub fn check(&self, insights: &[Insight]) -> Result<(), Error> {
        check_named(&self.id, &self.name)?;
        if !(1..=50).contains(&self.insights.len()) {
            return Err(Error::Invalid(format!("insights: 1 to 50, not {}", self.insights.len())));
        }
        for (i, id) in self.insights.iter().enumerate() {
            if !insights.iter().any(|insight| insight.id == *id) {
                let mut message = format!("insights[{i}]: no insight `{id}`");
                if let Some(close) = shared::tags::closest(id, insights.iter().map(|i| i.id.as_str())) {
                    message.push_str(&format!("; did you mean `{close}`?"));
                }
                return Err(Error::Invalid(message));
            }
        }
        if self.last_days.is_some_and(|d| !(1..=3_650).contains(&d)) {
            return Err(Error::Invalid("lastDays: 1 to 3650".into()));
        }
        Ok(())
    }
}

/// What the audit log keeps of an insight: never its definition's text (a filter or a query may hold a
/// person's data), a keyed hash of it.
pub fn summary(insight: &Insight, key: &IdentifierKey) -> Json {
    let definition = serde_json::to_string(&insight.analysis).unwrap_or_default();
    serde_json::json!({"id": insight.id, "name": insight.name, "chart": insight.chart,
                       "analysis": definition_hash(key, &definition)})
}

/// An analysis definition's text (or a query's) as the audit log and kept results name it: a keyed hash (a
/// plain hash would confirm a guessed filter value).
pub fn definition_hash(key: &IdentifierKey, text: &str) -> String {
    key.hash(&format!("analysis-definition:{text}"))
}

/// The saved insights.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Insights {
    /// In the order they were saved.
    pub insights: Vec<Insight>,
}

/// The saved dashboards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dashboards {
    /// In the order they were saved.
    pub dashboards: Vec<Dashboard>,
}

/// What has an id among the saved.
pub trait Saved: Clone {
    /// Its id.
    fn id(&self) -> &str;
}

impl Saved for Insight {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Saved for Dashboard {
    fn id(&self) -> &str {
        &self.id
    }
}

/// `item` in place of the saved one with its id (returned), or added ([`MAX_SAVED`] at most; `what` names the
/// list in the error).
pub fn upsert<T: Saved>(items: &mut Vec<T>, item: &T, what: &str) -> Result<Option<T>, Error> {
    match items.iter().position(|i| i.id() == item.id()) {
        Some(at) => Ok(Some(std::mem::replace(&mut items[at], item.clone()))),
        None if items.len() >= MAX_SAVED => {
            Err(Error::Invalid(format!("{what}: at most {MAX_SAVED}; delete one first")))
        }
        None => {
            items.push(item.clone());
            Ok(None)
        }
    }
}

/// The saved item with id `id`, taken out.
pub fn remove<T: Saved>(items: &mut Vec<T>, id: &str) -> Option<T> {
    let at = items.iter().position(|i| i.id() == id)?;
    Some(items.remove(at))
}

/// A stored configuration file of `T`, or its default when there is none.
pub async fn load<S: ObjectStore, T: serde::de::DeserializeOwned + Default>(store: &S, key: &str) -> Result<T, Error> {
    match store.get(key).await? {
        None => Ok(T::default()),
        Some(object) => serde_json::from_slice(&object.body).map_err(|e| Error::Corrupt(format!("{key}: {e}"))),
    }
}

/// Changes a stored configuration file of `T` under compare-and-swap.
pub async fn update<S, T, R>(
    store: &S,
    key: &str,
    mut change: impl FnMut(&mut T) -> Result<R, Error>,
) -> Result<R, Error>
where
    S: ObjectStore,
    T: serde::de::DeserializeOwned + Serialize + Default,
{
    crate::config::update(store, key, "application/json", |bytes| {
        let mut value: T = match bytes {
            Some(bytes) => serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("{key}: {e}")))?,
            None => T::default(),
        };
        let result = change(&mut value)?;
        Ok((serde_json::to_vec_pretty(&value).map_err(Error::encoding)?, result))
    })
    .await
}

/// A run's result, as kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// The insight.
    pub insight: String,
    /// When it was computed.
    pub computed_at: UtcTime,
    /// The data it was computed on ([`super::Loaded::version`]).
    pub data_version: String,
    /// The definition it was computed for (a keyed hash, with the range it was run over).
    pub definition: String,
    /// Whether it was answered from the kept result.
    #[serde(default)]
    pub cached: bool,
    /// The analysis's answer.
    pub result: Json,
}

impl Analysis {
    /// The analysis over `range` (from, to) instead of its own, for the kinds that have one (value models move
    /// `at` to its end, and `since` with it).
    pub fn over(&self, range: Option<(UtcTime, UtcTime)>) -> Self {
        let mut out = self.clone();
        let Some((from, to)) = range else { return out };
        match &mut out {
            Analysis::Trends(d) => (d.from, d.to) = (from, to),
            Analysis::Funnel(d) => (d.from, d.to) = (from, to),
            Analysis::Retention(d) => (d.from, d.to) = (from, to),
            Analysis::Paths(d) => (d.from, d.to) = (from, to),
            Analysis::Compare(d) => (d.from, d.to) = (from, to),
            Analysis::Value(d) => {
                // RFM's first date moves with the second: the same span of movement.
                let shift = to.unix_millis() - d.at.unix_millis();
                d.since = d.since.and_then(|since| UtcTime::from_unix_millis(since.unix_millis() + shift));
                d.at = to;
            }
            Analysis::Sql(_) => {}
        }
        out
    }

    /// Runs it on `engine`.
    pub async fn run(&self, engine: &Engine) -> Result<Json, Error> {
        let json = |v: Result<Json, serde_json::Error>| v.map_err(Error::encoding);
        match self {
            Analysis::Trends(d) => json(serde_json::to_value(engine.trends(d).await?)),
            Analysis::Funnel(d) => json(serde_json::to_value(engine.funnel(d).await?)),
            Analysis::Retention(d) => json(serde_json::to_value(engine.retention(d).await?)),
            Analysis::Paths(d) => json(serde_json::to_value(engine.paths(d).await?)),
            Analysis::Compare(d) => json(serde_json::to_value(engine.compare(d).await?)),
            Analysis::Value(d) => json(serde_json::to_value(engine.value(d).await?)),
            Analysis::Sql(sql) => json(serde_json::to_value(engine.sql(&sql.query, sql.limits()).await?)),
        }
    }
}

/// `insight` run on `engine` over `range` (or its own): the kept result when it was computed for the same
/// definition on the same data, otherwise computed now — and kept when `keep` (never a result computed with
/// personal data, one that depends on the clock, one with a note, or one over [`MAX_KEPT_BYTES`]). Results are
/// kept per insight and definition (`analysis/v1/results/<insight>/<definition>.json`); reading and writing them
/// is best effort; the definition is named by [`definition_hash`] with `key`.
pub async fn run<S: ObjectStore>(
    store: &S,
    engine: &Engine,
    insight: &Insight,
    range: Option<(UtcTime, UtcTime)>,
    now: UtcTime,
    keep: bool,
    key: &IdentifierKey,
) -> Result<Run, Error> {
    let analysis = insight.analysis.over(range);
    let definition =
        definition_hash(key, &serde_json::to_string(&analysis).map_err(Error::encoding)?)[..32].to_string();
    let data_version = engine.loaded.version.clone();
    let key = format!("{RESULTS}{}/{definition}.json", insight.id);
    let keep = keep && !matches!(&analysis, Analysis::Sql(sql) if sql.volatile());
    if keep {
        match store.get(&key).await {
            Ok(Some(object)) => {
                if let Ok(mut kept) = serde_json::from_slice::<Run>(&object.body)
                    && kept.data_version == data_version
                {
                    kept.cached = true;
                    return Ok(kept);
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%key, %error, "a kept result does not read; computing it"),
        }
    }
    let result = analysis.run(engine).await?;
    let run = Run { insight: insight.id.clone(), computed_at: now, data_version, definition, cached: false, result };
    let noted = run.result.get("note").is_some_and(|n| !n.is_null());
    if keep && !noted {
        let body = serde_json::to_vec(&run).map_err(Error::encoding)?;
        // Not for an insight deleted (or changed) while it ran: its results were removed with it.
        let current: Insights = load(store, INSIGHTS).await.unwrap_or_default();
        let same = current.insights.iter().any(|i| i.id == insight.id && i.analysis == insight.analysis);
        if same
            && body.len() <= MAX_KEPT_BYTES
            && let Err(error) = store.put(&key, body, PutOptions::json()).await
        {
            tracing::warn!(%key, %error, "a result could not be kept");
        }
    }
    Ok(run)
}

/// `dashboard`'s insights (of `insights`, the saved ones) run on `engine` as [`run`] runs one, over the
/// dashboard's last days of the data or each insight's own range: `{"dashboard", "from", "to", "insights":
/// [{"id", "name", "chart", "run" | "error"}]}`. One insight that fails says why and the others are still
/// answered; the whole dashboard within one analysis's time (the insights past it say so); an insight's result
/// over [`MAX_KEPT_BYTES`] is not shown.
pub async fn run_dashboard<S: ObjectStore>(
    store: &S,
    engine: &Engine,
    dashboard: &Dashboard,
    insights: &[Insight],
    now: UtcTime,
    keep: bool,
    key: &IdentifierKey,
) -> Result<Json, Error> {
    let range = match dashboard.last_days {
        Some(days) => Some(last_days(engine, days, now)?),
        None => None,
    };
    let deadline = std::time::Instant::now() + super::ANALYSIS_TIME;
    let mut shown = Vec::new();
    for insight_id in &dashboard.insights {
        let Some(insight) = insights.iter().find(|i| i.id == *insight_id) else {
            shown.push(serde_json::json!({"id": insight_id, "error": "the insight was deleted"}));
            continue;
        };
        let mut entry = serde_json::json!({"id": insight.id, "name": insight.name, "chart": insight.chart});
        if std::time::Instant::now() >= deadline {
            entry["error"] = "not run: the dashboard took longer than its limit; open the insight on its own".into();
            shown.push(entry);
            continue;
        }
        match run(store, engine, insight, range, now, keep, key).await {
            Ok(result) => {
                let size = serde_json::to_vec(&result.result).map_or(0, |v| v.len());
                if size > MAX_KEPT_BYTES {
                    entry["error"] =
                        format!("its result is larger than {} MiB; open it on its own", MAX_KEPT_BYTES >> 20).into();
                } else {
                    match serde_json::to_value(result) {
                        Ok(run) => entry["run"] = run,
                        Err(problem) => entry["error"] = format!("its result does not encode: {problem}").into(),
                    }
                }
            }
            Err(Error::Invalid(problem)) => entry["error"] = problem.into(),
            Err(other) => {
                tracing::error!(dashboard = %dashboard.id, insight = %insight.id, error = %other, "a dashboard's insight failed");
                entry["error"] = format!("it could not be computed: {other}").into();
            }
        }
        shown.push(entry);
    }
    let (from, to) = range.map_or((None, None), |(from, to)| (Some(from), Some(to)));
    Ok(serde_json::json!({"dashboard": dashboard.id, "from": from, "to": to, "insights": shown}))
}

/// Removes the kept results of insight `id` (best effort: a result left is never answered for another
/// definition, and is removed with the next change).
pub async fn forget_results<S: ObjectStore>(store: &S, id: &str) {
    let prefix = format!("{RESULTS}{id}/");
    match store.list(&prefix).await {
        Ok(objects) => {
            for object in objects {
                if let Err(error) = store.delete(&object.key).await {
                    tracing::warn!(key = %object.key, %error, "a kept result could not be removed");
                }
            }
        }
        Err(error) => tracing::warn!(%prefix, %error, "the kept results could not be listed"),
    }
}

/// The range of a dashboard's last `days` days: to the end of the data's last day.
pub fn last_days(engine: &Engine, days: u32, now: UtcTime) -> Result<(UtcTime, UtcTime), Error> {
    let end_ms = engine.loaded.last_event_ms.map_or(now.unix_millis(), |ms| ms);
    let end = (end_ms.div_euclid(DAY_MS) + 1) * DAY_MS;
    let at = |ms: i64| UtcTime::from_unix_millis(ms).ok_or_else(|| Error::Invalid("lastDays: out of range".into()));
    Ok((at(end - i64::from(days) * DAY_MS)?, at(end)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> UtcTime {
        UtcTime::parse(text).expect("time")
    }

    #[test]
    fn ids_and_names_are_checked_and_a_dashboards_range_replaces_each_insights_own() {
        let insight: Insight = serde_json::from_value(serde_json::json!({
            "id": "checkout", "name": "Checkout",
            "analysis": {"kind": "paths", "definition": {"event": "Product Viewed", "depth": 2, "windowMs": 60000,
                         "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}}}))
        .expect("insight");
        assert_eq!(insight.chart, Chart::Line);
        assert!(insight.check().is_ok());
        let range = Some((at("2026-03-01T00:00:00Z"), at("2026-03-08T00:00:00Z")));
        let Analysis::Paths(over) = insight.analysis.over(range) else { panic!("paths") };
        assert_eq!((over.from, over.to, over.depth), (at("2026-03-01T00:00:00Z"), at("2026-03-08T00:00:00Z"), 2));
        let Analysis::Paths(own) = insight.analysis.over(None) else { panic!("paths") };
        let value: Analysis = serde_json::from_value(serde_json::json!({"kind": "value", "definition": {
            "at": "2026-12-01T00:00:00Z", "since": "2026-09-02T00:00:00Z"}}))
        .expect("value");
        let Analysis::Value(moved) = value.over(range) else { panic!("value") };
        assert_eq!(
            (moved.since, moved.at),
            (Some(at("2025-12-08T00:00:00Z")), at("2026-03-08T00:00:00Z")),
            "90 days apart still"
        );
        assert_eq!(own.from, at("2026-01-01T00:00:00Z"));
        for id in ["", "Checkout", "a b", &"x".repeat(65)] {
            let bad = Insight { id: id.to_string(), ..insight.clone() };
            assert!(bad.check().unwrap_err().to_string().contains("id: 1 to 64"), "{id:?}");
        }
        let sql = Insight {
            analysis: Analysis::Sql(SqlQuery { query: " ".into(), max_rows: None, timeout_seconds: None }),
            ..insight.clone()
        };
        assert!(sql.check().unwrap_err().to_string().contains("the query is empty"));
        let board = Dashboard {
            id: "sales".into(),
            name: "Sales".into(),
            description: String::new(),
            insights: vec!["checkout".into()],
            last_days: Some(0),
        };
        assert!(board.check(std::slice::from_ref(&insight)).unwrap_err().to_string().contains("lastDays: 1 to 3650"));
        let empty = Dashboard { insights: Vec::new(), last_days: None, ..board };
        assert!(empty.check(&[insight]).unwrap_err().to_string().contains("insights: 1 to 50, not 0"));
    }
}
