//! Population tags: values that depend on every profile, not one — a propensity model trained on the
//! profiles' own history, and RFM scores by quintile. The full recompute makes two passes over the chunks:
//! the first gathers what the models need ([`TagSet::propensity_features`], [`TagSet::rfm_values`]), the
//! models are fitted (the logistic model by the caller's ML library; [`RfmModel::fit`] here), and the second
//! evaluates every tag with them ([`TagSet::evaluate_columns_with`]).
//!
//! Propensity features of a profile as of a time `t` (only events at or before `t` count):
//! `ln(1 + events)`, `ln(1 + events in the last 30 days)`, `ln(1 + events in the last 7 days)`,
//! `ln(1 + purchases)`, `ln(1 + purchases in the last 90 days)`, `ln(1 + revenue)`, days since the last event,
//! days since the last purchase, days since the first event (days capped at 365, in units of 30 days). The
//! label is whether a purchase follows within the horizon: trained with features as of `now − horizon`, so
//! the labels are known, and applied with features as of now.
//!
//! RFM: recency (days since the last purchase; fewer is better), frequency (purchases), monetary (revenue),
//! each scored 1–5 by its quintile among profiles that purchased: score = 1 + the number of the four
//! quintile thresholds the value passes, so equal values always share a score. Segments by recency and
//! frequency: champions (R 4–5, F 4–5), loyal (R 3–5, F 3–5), promising (R 4–5, F 1–2), need_attention (R 3,
//! F 1–2), at_risk (R 1–2, F 3–5), hibernating (R 1–2, F 1–2).

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize};

use super::check::TagSet;
use super::columnar::table::{ColumnarError, Events, numbers_of, texts};
use super::definition::{EventFilter, RfmOutput, TagKind};

const DAY: i64 = 86_400_000;

/// The propensity features' names, in order.
pub const FEATURES: [&str; 9] = [
    "log_events",
    "log_events_30d",
    "log_events_7d",
    "log_purchases",
    "log_purchases_90d",
    "log_revenue",
    "months_since_last_event",
    "months_since_last_purchase",
    "months_since_first_event",
];

/// One profile's propensity features.
pub type FeatureRow = [f64; FEATURES.len()];

/// A fitted logistic model: `p = 1 / (1 + e^−(intercept + Σ weight × (x − mean) / scale))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogisticModel {
    /// Feature names ([`FEATURES`]).
    pub features: Vec<String>,
    /// Standardization: each feature's mean and scale in the training set.
    pub means: Vec<f64>,
    /// Standard deviations (1 where a feature did not vary).
    pub scales: Vec<f64>,
    /// Weights of the standardized features.
    pub weights: Vec<f64>,
    /// The intercept.
    pub intercept: f64,
    /// How it did on profiles held out of training.
    pub evaluation: Evaluation,
}

/// A propensity model's evaluation at training time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// Features as of this time (ms); labels from the horizon after it.
    pub as_of: i64,
    /// Profiles trained on.
    pub train_profiles: usize,
    /// Profiles held out.
    pub holdout_profiles: usize,
    /// Share of held-out profiles that purchased within the horizon.
    pub holdout_positive_rate: f64,
    /// Area under the ROC curve on the held-out profiles.
    pub auc: f64,
    /// The same for random scores on the same profiles (≈ 0.5): the baseline to beat.
    pub random_auc: f64,
}

impl LogisticModel {
    /// The probability for one profile's features.
    pub fn score(&self, x: &FeatureRow) -> f64 {
        let z = self.intercept
            + x.iter()
                .zip(&self.means)
                .zip(&self.scales)
                .zip(&self.weights)
                .map(|(((x, mean), scale), w)| w * (x - mean) / scale)
                .sum::<f64>();
        1.0 / (1.0 + (-z).exp())
    }
}

/// RFM quintile thresholds: a score is 1 + the number of thresholds the value passes (recency: is below).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RfmModel {
    /// Days since the last purchase.
    pub recency: [f64; 4],
    /// Purchases.
    pub frequency: [f64; 4],
    /// Revenue.
    pub monetary: [f64; 4],
    /// Profiles with a purchase the thresholds come from.
    pub profiles: usize,
}

impl RfmModel {
    /// Quintile thresholds of (recency days, purchases, revenue) values; none without values.
    pub fn fit(values: &[[f64; 3]]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let thresholds = |i: usize, sign: f64| {
            let mut column: Vec<f64> = values.iter().map(|v| sign * v[i]).collect();
            column.sort_by(f64::total_cmp);
            let n = column.len();
            // The k-th threshold: the largest value below the top (5 − k) fifths, so that a value passes it
            // when at least k fifths of the values are below it.
            std::array::from_fn(|k| column[((k + 1) * n).div_ceil(5).max(1) - 1])
        };
        Some(Self {
            recency: thresholds(0, -1.0),
            frequency: thresholds(1, 1.0),
            monetary: thresholds(2, 1.0),
            profiles: values.len(),
        })
    }

    /// The (recency, frequency, monetary) scores, each 1–5.
    pub fn scores(&self, value: &[f64; 3]) -> [u8; 3] {
        let score = |x: f64, thresholds: &[f64; 4]| 1 + thresholds.iter().filter(|&&t| x > t).count() as u8;
        [score(-value[0], &self.recency), score(value[1], &self.frequency), score(value[2], &self.monetary)]
    }

    /// The segment of a recency and a frequency score.
    pub fn segment(recency: u8, frequency: u8) -> &'static str {
        match (recency, frequency) {
            (4..=5, 4..=5) => "champions",
            (3..=5, 3..=5) => "loyal",
            (4..=5, _) => "promising",
            (3, _) => "need_attention",
            (_, 3..=5) => "at_risk",
            _ => "hibernating",
        }
    }

    /// The tag's value for a profile.
    pub fn output(&self, value: &[f64; 3], output: RfmOutput) -> serde_json::Value {
        let [r, f, m] = self.scores(value);
        match output {
            RfmOutput::Segment => Self::segment(r, f).into(),
            RfmOutput::Score => (u32::from(r) * 100 + u32::from(f) * 10 + u32::from(m)).into(),
            RfmOutput::Recency => r.into(),
            RfmOutput::Frequency => f.into(),
            RfmOutput::Monetary => m.into(),
        }
    }
}

/// A fitted population model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Model {
    /// For a propensity tag.
    Propensity(LogisticModel),
    /// For an RFM tag.
    Rfm(RfmModel),
    /// For an affinity tag: each product's category, for events that carry none.
    Affinity {
        /// Product id → category.
        categories: BTreeMap<String, String>,
    },
}

/// The fitted models by tag id; a population tag without one has no values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Population {
    /// Tag id → model.
    pub models: BTreeMap<String, Model>,
}

/// What a purchase filter and a revenue property select in a chunk.
struct Purchases {
    mask: Vec<bool>,
    revenue: Option<Vec<Option<f64>>>,
}

impl TagSet {
    fn purchases(
        &self,
        events: &mut Events<'_>,
        filter: &EventFilter,
        revenue: Option<&str>,
    ) -> Result<Purchases, ColumnarError> {
        let mask = self.filter_mask(events, filter)?;
        let revenue = match revenue {
            None => None,
            Some(property) => Some(numbers_of(events.column(&format!("properties.{property}"))?)),
        };
        Ok(Purchases { mask, revenue })
    }

    fn population_tag(&self, id: &str) -> Result<&TagKind, ColumnarError> {
        self.tags
            .iter()
            .find(|t| t.id == id && t.kind.population())
            .map(|t| &t.kind)
            .ok_or_else(|| ColumnarError(format!("`{id}` is not a computed propensity, RFM or affinity tag")))
    }

    /// For the propensity tag `id`: each profile's features as of `as_of`, and whether it purchased within
    /// the tag's horizon after `as_of` (the training label).
    pub fn propensity_features(
        &self,
        id: &str,
        first: u32,
        profiles: usize,
        events: &RecordBatch,
        as_of: i64,
    ) -> Result<(Vec<FeatureRow>, Vec<bool>), ColumnarError> {
        self.propensity_features_of(id, &mut Events::read(events, first, profiles)?, as_of)
    }

    pub(super) fn propensity_features_of(
        &self,
        id: &str,
        events: &mut Events<'_>,
        as_of: i64,
    ) -> Result<(Vec<FeatureRow>, Vec<bool>), ColumnarError> {
        let TagKind::Propensity { purchase, horizon_days, revenue } = self.population_tag(id)? else {
            return Err(ColumnarError(format!("`{id}` is not a propensity tag")));
        };
        let profiles = events.offsets.len() - 1;
        let purchases = self.purchases(events, purchase, revenue.as_deref())?;
        let horizon = as_of + i64::from(*horizon_days) * DAY;
        let at = events.at;
        let mut features = Vec::with_capacity(profiles);
        let mut labels = Vec::with_capacity(profiles);
        for run in events.offsets.windows(2) {
            let (start, end) = (run[0], run[0] + at[run[0]..run[1]].partition_point(|&t| t <= as_of));
            let since = |from: i64| start + at[start..end].partition_point(|&t| t < from);
            let bought = |rows: std::ops::Range<usize>| rows.filter(|&r| purchases.mask[r]).count() as f64;
            let last_purchase = (start..end).rev().find(|&r| purchases.mask[r]);
            let revenue: f64 = match &purchases.revenue {
                Some(values) => (start..end).filter(|&r| purchases.mask[r]).filter_map(|r| values[r]).sum(),
                None => 0.0,
            };
            let months =
                |t: Option<i64>, none: f64| t.map_or(none, |t| ((as_of - t) as f64 / DAY as f64).min(365.0) / 30.0);
            features.push([
                ((end - start) as f64).ln_1p(),
                ((end - since(as_of - 30 * DAY)) as f64).ln_1p(),
                ((end - since(as_of - 7 * DAY)) as f64).ln_1p(),
                bought(start..end).ln_1p(),
                bought(since(as_of - 90 * DAY)..end).ln_1p(),
                revenue.max(0.0).ln_1p(),
                months((end > start).then(|| at[end - 1]), 365.0 / 30.0),
                months(last_purchase.map(|r| at[r]), 365.0 / 30.0),
                months((end > start).then(|| at[start]), 0.0),
            ]);
            labels.push((end..run[1]).any(|r| purchases.mask[r] && at[r] <= horizon));
        }
        Ok((features, labels))
    }

    /// For the affinity tag `id`: each profile's score per category (weights decayed to `now`), in order of
    /// first appearance; events without a category take their product's from `categories`.
    pub fn affinity_values(
        &self,
        id: &str,
        first: u32,
        profiles: usize,
        events: &RecordBatch,
        now: i64,
        categories: &BTreeMap<String, String>,
    ) -> Result<Vec<Vec<(String, f64)>>, ColumnarError> {
        self.affinity_values_of(id, &mut Events::read(events, first, profiles)?, now, categories)
    }

    pub(super) fn affinity_values_of(
        &self,
        id: &str,
        events: &mut Events<'_>,
        now: i64,
        categories: &BTreeMap<String, String>,
    ) -> Result<Vec<Vec<(String, f64)>>, ColumnarError> {
        let TagKind::Affinity { weights, product, category, half_life_days, .. } = self.population_tag(id)? else {
            return Err(ColumnarError(format!("`{id}` is not an affinity tag")));
        };
        let names = texts(events, "event")?;
        let products = texts(events, &format!("properties.{product}"))?;
        let own = texts(events, &format!("properties.{category}"))?;
        let decay = |at: i64| match half_life_days {
            Some(days) => 0.5f64.powf((now - at).max(0) as f64 / (f64::from(*days) * DAY as f64)),
            None => 1.0,
        };
        Ok(events
            .offsets
            .windows(2)
            .map(|run| {
                let mut scores: Vec<(String, f64)> = Vec::new();
                for row in run[0]..run[1] {
                    let Some(weight) = names[row].as_ref().and_then(|n| weights.get(n)) else { continue };
                    let found =
                        own[row].clone().or_else(|| products[row].as_ref().and_then(|p| categories.get(p).cloned()));
                    let Some(found) = found else { continue };
                    let add = weight * decay(events.at[row]);
                    match scores.iter_mut().find(|(c, _)| *c == found) {
                        Some(entry) => entry.1 += add,
                        None => scores.push((found, add)),
                    }
                }
                scores
            })
            .collect())
    }

    /// For the RFM tag `id`: each profile's (days since the last purchase, purchases, revenue) as of `now`;
    /// none for profiles without a purchase.
    pub fn rfm_values(
        &self,
        id: &str,
        first: u32,
        profiles: usize,
        events: &RecordBatch,
        now: i64,
    ) -> Result<Vec<Option<[f64; 3]>>, ColumnarError> {
        self.rfm_values_of(id, &mut Events::read(events, first, profiles)?, now)
    }

    pub(super) fn rfm_values_of(
        &self,
        id: &str,
        events: &mut Events<'_>,
        now: i64,
    ) -> Result<Vec<Option<[f64; 3]>>, ColumnarError> {
        let TagKind::Rfm { purchase, revenue, .. } = self.population_tag(id)? else {
            return Err(ColumnarError(format!("`{id}` is not an RFM tag")));
        };
        let purchases = self.purchases(events, purchase, Some(revenue))?;
        let revenue = purchases.revenue.unwrap_or_default();
        Ok(events
            .offsets
            .windows(2)
            .map(|run| {
                let rows: Vec<usize> = (run[0]..run[1]).filter(|&r| purchases.mask[r]).collect();
                let last = *rows.last()?;
                let days = (now - events.at[last]) as f64 / DAY as f64;
                let money: f64 = rows.iter().filter_map(|&r| revenue.get(r).copied().flatten()).sum();
                Some([days, rows.len() as f64, money])
            })
            .collect())
    }
}
