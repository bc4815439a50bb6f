//! Audience comparison (显著特征 / 差异化特征): what sets an audience apart from the rest of the population, or
//! from another audience, over traits, tags and how often its persons did each event.
//!
//! Each category value (`plan = pro`) is a share of each group, tested with Pearson's chi-square; each number
//! (a numeric trait or tag, the times an event was done in the range) is a mean of each group, tested with
//! Welch's t. The p-values of every test are adjusted together (Benjamini–Hochberg); the significant features
//! come first, the largest standardized effect (Cohen's h for shares, Cohen's d for means) first.

use std::collections::{HashMap, HashSet};

use arrow_array::cast::AsArray as _;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde::{Deserialize, Serialize};

use super::Engine;
use super::stats::{Moments, Tested, benjamini_hochberg, chi_square, welch};
use crate::Error;
use shared::time::UtcTime;

/// An audience comparison's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Compare {
    /// The audience described.
    pub audience: String,
    /// The audience it is compared with (none: the rest of the population, every profile not in it); a profile
    /// in both is counted in `audience` only.
    pub against: Option<String>,
    /// Events counted from this time …
    pub from: UtcTime,
    /// … to this one (excluded).
    pub to: UtcTime,
    /// The false discovery rate a significant feature is held to (0.001 to 0.2; default 0.05).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
}

fn default_alpha() -> f64 {
    0.05
}

/// Where a feature comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A trait.
    Trait,
    /// A tag.
    Tag,
    /// The times an event was done in the range, per person.
    Behaviour,
}

/// The test a feature had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// Pearson's chi-square on the 2×2 table of group and value.
    ChiSquare,
    /// Welch's t.
    WelchT,
}

/// One feature's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Feature {
    /// Trait, tag or behaviour.
    pub source: Source,
    /// The trait's, tag's or event's name.
    pub name: String,
    /// The category value (none for a number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The test.
    pub test: Test,
    /// In the audience: the value's share of its persons, or the number's mean.
    pub audience: f64,
    /// The same in the group it is compared with.
    pub against: f64,
    /// `audience` over `against` (none when `against` is 0).
    pub lift: Option<f64>,
    /// `audience` minus `against`.
    pub difference: f64,
    /// The standardized effect: Cohen's h for shares, Cohen's d for means (none without spread).
    pub effect_size: Option<f64>,
    /// Chi-square or t.
    pub statistic: f64,
    /// The test's p-value.
    pub p_value: f64,
    /// The p-value adjusted for all the tests (Benjamini–Hochberg).
    pub q_value: f64,
    /// `q_value` at most `alpha`.
    pub significant: bool,
}

/// A feature left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// Trait or tag.
    pub source: Source,
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// An audience comparison's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompareResult {
    /// The audience.
    pub audience: String,
    /// What it is compared with: another audience's name, or `(rest of the population)`.
    pub against: String,
    /// Profiles in the audience.
    pub size: u64,
    /// Profiles in the group compared with.
    pub size_against: u64,
    /// The false discovery rate.
    pub alpha: f64,
    /// The features tested: the significant ones first, the largest effect first; then the rest, the smallest
    /// q-value first.
    pub features: Vec<Feature>,
    /// Features not tested (personal data, identifiers, too few values).
    pub skipped: Vec<Skipped>,
}

/// What stands for the rest of the population.
pub const REST: &str = "(rest of the population)";

/// Values of a category feature compared at most (the most common).
const MAX_VALUES: usize = 20;

/// Events whose counts are compared at most (those the most persons did).
const MAX_EVENTS: usize = 30;

impl Compare {
    /// The checks a definition must pass, naming the field; `audiences` are those with members.
    pub fn check(&self, audiences: &std::collections::BTreeSet<String>) -> Result<(), Error> {
        super::check_name("audience", "audience", &self.audience, audiences)?;
        if let Some(against) = &self.against {
            super::check_name("against", "audience", against, audiences)?;
            if *against == self.audience {
                return Err(Error::Invalid("against: an audience is compared with another one".into()));
            }
        }
        if !(0.001..=0.2).contains(&self.alpha) {
            return Err(Error::Invalid(format!("alpha: 0.001 to 0.2, not {}", self.alpha)));
        }
        super::check_range(self.from, self.to)
    }
}

/// Which group a profile is in: (the audience, the group compared with); never both.
type Groups = HashMap<String, (bool, bool)>;

/// Runs `compare` on `engine`.
pub(super) async fn run(engine: &Engine, compare: &Compare) -> Result<CompareResult, Error> {
    compare.check(&engine.audiences)?;
    let members = |audience: String| async move {
        let query =
            format!("SELECT profile_id FROM memberships WHERE audience = {}", super::trends::literal(&audience));
        let batches = collect(engine, &query).await?;
        let mut ids = HashSet::new();
        for batch in &batches {
            let column = batch.column(0).as_string::<i32>();
            ids.extend(column.iter().flatten().map(String::from));
        }
        Ok::<_, Error>(ids)
    };
    let audience = members(compare.audience.clone()).await?;
    let against = match &compare.against {
        Some(name) => Some(members(name.clone()).await?),
        None => None,
    };
    let profiles = collect(engine, "SELECT * FROM profiles").await?;
    let mut groups: Groups = HashMap::new();
    for batch in &profiles {
        for id in batch.column(0).as_string::<i32>().iter().flatten() {
            let a = audience.contains(id);
            // A profile in both audiences is one of the audience's: the groups stay apart, as the tests need.
            let b = !a && against.as_ref().is_none_or(|b| b.contains(id));
            groups.insert(id.to_string(), (a, b));
        }
    }
    let size = groups.values().filter(|g| g.0).count() as u64;
    let size_against = groups.values().filter(|g| g.1).count() as u64;
    if size == 0 || size_against == 0 {
        let empty = if size == 0 { compare.audience.as_str() } else { compare.against.as_deref().unwrap_or(REST) };
        return Err(Error::Invalid(format!("{empty} has no profiles to compare")));
    }
    let mut found = Found { features: Vec::new(), skipped: Vec::new(), sizes: (size, size_against) };
    found.columns(Source::Trait, &profiles, &groups, &["profile_id", "traits"], &|name| engine.rules.is_personal(name));
    let tags = collect(engine, "SELECT * FROM tags").await?;
    found.columns(Source::Tag, &tags, &groups, &["profile_id"], &|name| !engine.safe_tags.contains(name));
    found.behaviour(engine, compare, &groups).await?;

    let q = benjamini_hochberg(&found.features.iter().map(|f| f.p_value).collect::<Vec<_>>());
    for (feature, q) in found.features.iter_mut().zip(q) {
        feature.q_value = q;
        feature.significant = q <= compare.alpha;
    }
    let mut features = found.features;
    // Rounded, so that equal effects computed in a different order tie (and the name decides).
    let effect = |f: &Feature| (f.effect_size.map_or(0.0, f64::abs) * 1e9).round();
    features.sort_by(|a, b| {
        b.significant
            .cmp(&a.significant)
            .then_with(|| if a.significant { effect(b).total_cmp(&effect(a)) } else { std::cmp::Ordering::Equal })
            .then((a.q_value * 1e12).round().total_cmp(&(b.q_value * 1e12).round()))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.value.cmp(&b.value))
    });
    Ok(CompareResult {
        audience: compare.audience.clone(),
        against: compare.against.clone().unwrap_or_else(|| REST.to_string()),
        size,
        size_against,
        alpha: compare.alpha,
        features,
        skipped: found.skipped,
    })
}

async fn collect(engine: &Engine, query: &str) -> Result<Vec<RecordBatch>, Error> {
    let failed = |e: datafusion::error::DataFusionError| Error::Internal(format!("comparing audiences: {e}"));
    engine.ctx.sql(query).await.map_err(failed)?.collect().await.map_err(failed)
}

/// What a column's pass does with each profile's value: its groups, the column and the row.
type Visit<'a> = dyn FnMut((bool, bool), &dyn Array, usize) + 'a;

/// The features found so far.
struct Found {
    features: Vec<Feature>,
    skipped: Vec<Skipped>,
    /// The groups' sizes.
    sizes: (u64, u64),
}

impl Found {
    /// A feature per numeric column and per common value of each category column of `batches` (a table
    /// keyed by its first column, `profile_id`), but those in `except`.
    fn columns(
        &mut self,
        source: Source,
        batches: &[RecordBatch],
        groups: &Groups,
        except: &[&str],
        personal: &dyn Fn(&str) -> bool,
    ) {
        let Some(schema) = batches.first().map(RecordBatch::schema) else { return };
        for (index, field) in schema.fields().iter().enumerate() {
            if except.contains(&field.name().as_str()) {
                continue;
            }
            if personal(field.name()) {
                self.skipped.push(Skipped {
                    source,
                    name: field.name().clone(),
                    reason: "personal data (never compared)".into(),
                });
                continue;
            }
            // Each profile's value: its groups, the column and the row.
            let each = |visit: &mut Visit<'_>| {
                for batch in batches {
                    let (ids, values) = (batch.column(0).as_string::<i32>(), batch.column(index));
                    for row in 0..batch.num_rows() {
                        if let Some(&group) = groups.get(ids.value(row))
                            && group != (false, false)
                            && !values.is_null(row)
                        {
                            visit(group, values.as_ref(), row);
                        }
                    }
                }
            };
            match field.data_type() {
                DataType::Float64 => {
                    let (mut a, mut b) = (Moments::default(), Moments::default());
                    each(&mut |(in_a, in_b), values, row| {
                        let x = values.as_primitive::<Float64Type>().value(row);
                        if in_a {
                            a.add(x);
                        }
                        if in_b {
                            b.add(x);
                        }
                    });
                    self.number(source, field.name(), &a, &b);
                }
                DataType::Utf8 | DataType::Boolean => {
                    let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
                    each(&mut |(in_a, in_b), values, row| {
                        let value = match values.data_type() {
                            DataType::Boolean => values.as_boolean().value(row).to_string(),
                            _ => values.as_string::<i32>().value(row).to_string(),
                        };
                        let entry = counts.entry(value).or_default();
                        entry.0 += u64::from(in_a);
                        entry.1 += u64::from(in_b);
                    });
                    self.category(source, field.name(), counts);
                }
                _ => {}
            }
        }
    }

    /// A number's means compared.
    fn number(&mut self, source: Source, name: &str, a: &Moments, b: &Moments) {
        let (Some(Tested { statistic, p }), Some(mean_a), Some(mean_b)) = (welch(a, b), a.mean(), b.mean()) else {
            self.skipped.push(Skipped {
                source,
                name: name.to_string(),
                reason: "fewer than two values in a group".into(),
            });
            return;
        };
        let pooled = ((a.variance().unwrap_or(0.0) + b.variance().unwrap_or(0.0)) / 2.0).sqrt();
        self.features.push(Feature {
            source,
            name: name.to_string(),
            value: None,
            test: Test::WelchT,
            audience: mean_a,
            against: mean_b,
            lift: (mean_b != 0.0).then(|| mean_a / mean_b),
            difference: mean_a - mean_b,
            effect_size: (pooled > 0.0).then(|| (mean_a - mean_b) / pooled),
            statistic,
            p_value: p,
            q_value: 1.0,
            significant: false,
        });
    }

    /// A category's most common values' shares compared.
    fn category(&mut self, source: Source, name: &str, counts: HashMap<String, (u64, u64)>) {
        let skip = |reason: &str| Skipped { source, name: name.to_string(), reason: reason.to_string() };
        let with_value: u64 = counts.values().map(|(a, b)| a + b).sum();
        if counts.len() > 10 && counts.len() as u64 * 2 > with_value {
            self.skipped.push(skip("nearly every profile has a value of its own (an identifier)"));
            return;
        }
        // Never list a value that could be an email address or a phone number.
        if counts.keys().any(|v| v.contains('@') || v.bytes().filter(u8::is_ascii_digit).count() >= 7) {
            self.skipped.push(skip("its values look like personal data"));
            return;
        }
        let mut values: Vec<(String, (u64, u64))> = counts.into_iter().collect();
        values.sort_by(|x, y| (y.1.0 + y.1.1).cmp(&(x.1.0 + x.1.1)).then(x.0.cmp(&y.0)));
        let (n_a, n_b) = self.sizes;
        for (value, (a, b)) in values.into_iter().take(MAX_VALUES) {
            let Some(Tested { statistic, p }) = chi_square(a, n_a, b, n_b) else { continue };
            let (share_a, share_b) = (a as f64 / n_a as f64, b as f64 / n_b as f64);
            let h = 2.0 * share_a.sqrt().asin() - 2.0 * share_b.sqrt().asin();
            self.features.push(Feature {
                source,
                name: name.to_string(),
                value: Some(value),
                test: Test::ChiSquare,
                audience: share_a,
                against: share_b,
                lift: (share_b > 0.0).then(|| share_a / share_b),
                difference: share_a - share_b,
                effect_size: Some(h),
                statistic,
                p_value: p,
                q_value: 1.0,
                significant: false,
            });
        }
    }

    /// How often each group's persons did each of the most common events in the range (persons who did not:
    /// 0 times).
    async fn behaviour(&mut self, engine: &Engine, compare: &Compare, groups: &Groups) -> Result<(), Error> {
        let query = format!(
            "SELECT e.profile_id, e.event, count(*) AS n FROM events e WHERE e.profile_id IS NOT NULL AND e.event IS \
             NOT NULL AND e.timestamp >= to_timestamp_millis({}) AND e.timestamp < to_timestamp_millis({}) AND {} \
             GROUP BY e.profile_id, e.event",
            compare.from.unix_millis(),
            compare.to.unix_millis(),
            super::PERSONS_OWN_SQL
        );
        let batches = collect(engine, &query).await?;
        let mut per_event: HashMap<&str, (u64, Moments, Moments)> = HashMap::new();
        for batch in &batches {
            let (ids, events, counts) = (
                batch.column(0).as_string::<i32>(),
                batch.column(1).as_string::<i32>(),
                batch.column(2).as_primitive::<Int64Type>(),
            );
            for row in 0..batch.num_rows() {
                let Some(&(in_a, in_b)) = groups.get(ids.value(row)) else { continue };
                let entry = per_event.entry(events.value(row)).or_default();
                let n = counts.value(row) as f64;
                entry.0 += 1;
                if in_a {
                    entry.1.add(n);
                }
                if in_b {
                    entry.2.add(n);
                }
            }
        }
        let mut events: Vec<(&str, (u64, Moments, Moments))> = per_event.into_iter().collect();
        events.sort_by(|x, y| y.1.0.cmp(&x.1.0).then(x.0.cmp(y.0)));
        let (n_a, n_b) = self.sizes;
        for (event, (_, mut a, mut b)) in events.into_iter().take(MAX_EVENTS) {
            a.add_zeros(n_a - a.n);
            b.add_zeros(n_b - b.n);
            self.number(Source::Behaviour, event, &a, &b);
        }
        Ok(())
    }
}
