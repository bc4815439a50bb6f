//! Fitting the population models of a full recompute: the propensity model (logistic regression from the
//! linfa toolkit, trained on features as of `now − horizon` labelled by what happened since, evaluated by
//! AUC on held-out profiles beside random scores) and RFM quintile thresholds.
//!
//! The first pass of a recompute shows each chunk to a [`Trainer`]; it keeps a deterministic sample of the
//! profiles (by a hash of the profile number, halving the rate whenever the sample outgrows its cap, so the
//! sample does not depend on the order chunks come in), and [`Trainer::finish`] fits the models.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use shared::tags::{
    Evaluation, FEATURES, FeatureRow, LogisticModel, Model, Population, ProductConfig, ProductTags, RfmModel, TagKind,
    TagSet,
};

use crate::Error;

const DAY: i64 = 86_400_000;
/// Largest propensity training sample (train and holdout together).
pub const PROPENSITY_SAMPLE: usize = 200_000;
/// Largest sample the RFM quintiles come from.
pub const RFM_SAMPLE: usize = 1_000_000;

/// SplitMix64: a well-mixed hash of a profile number.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A sample that keeps items whose hash has `level` trailing zero bits, raising the level when full.
#[derive(Debug)]
struct Sample<T> {
    items: Vec<(u64, T)>,
    level: u32,
    cap: usize,
}

impl<T> Sample<T> {
    fn new(cap: usize) -> Self {
        Self { items: Vec::new(), level: 0, cap }
    }

    fn push(&mut self, hash: u64, item: T) {
        if hash.trailing_zeros() < self.level {
            return;
        }
        self.items.push((hash, item));
        while self.items.len() > self.cap {
            self.level += 1;
            let level = self.level;
            self.items.retain(|(h, _)| h.trailing_zeros() >= level);
        }
    }
}

#[derive(Debug)]
enum Gathered {
    Propensity {
        as_of: i64,
        sample: Sample<(FeatureRow, bool)>,
    },
    Rfm(Sample<[f64; 3]>),
    /// Every product's category, from all events.
    Affinity(Box<ProductTags>),
}

/// What fitting a model gave, for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Fitted {
    /// A propensity model and its evaluation.
    Propensity(Evaluation),
    /// RFM thresholds from this many profiles with a purchase.
    Rfm {
        /// Profiles the quintiles come from.
        profiles: usize,
    },
    /// Product categories for an affinity tag.
    Affinity {
        /// Products with a category.
        products: usize,
    },
    /// No model: why (no value for the tag this time).
    NotFitted {
        /// The reason.
        reason: String,
    },
}

/// Gathers what the population models need from each chunk, then fits them.
#[derive(Debug)]
pub struct Trainer<'t> {
    tags: &'t TagSet,
    now: i64,
    gathered: BTreeMap<String, Gathered>,
}

impl<'t> Trainer<'t> {
    /// A trainer for the population tags of `tags` at `now`.
    pub fn new(tags: &'t TagSet, now: i64) -> Self {
        let gathered = tags
            .tags()
            .iter()
            .filter_map(|t| match &t.kind {
                TagKind::Propensity { horizon_days, .. } => Some((
                    t.id.clone(),
                    Gathered::Propensity {
                        as_of: now - i64::from(*horizon_days) * DAY,
                        sample: Sample::new(PROPENSITY_SAMPLE),
                    },
                )),
                TagKind::Rfm { .. } => Some((t.id.clone(), Gathered::Rfm(Sample::new(RFM_SAMPLE)))),
                TagKind::Affinity { product, category, .. } => {
                    let config = ProductConfig {
                        product: product.clone(),
                        category: category.clone(),
                        ..ProductConfig::default()
                    };
                    Some((t.id.clone(), Gathered::Affinity(Box::new(ProductTags::new(config)))))
                }
                _ => None,
            })
            .collect();
        Self { tags, now, gathered }
    }

    /// Whether any tag needs a model (if not, the first pass can be skipped).
    pub fn needed(&self) -> bool {
        !self.gathered.is_empty()
    }

    /// Takes in one chunk: profiles `first..first + profiles` and their event table.
    pub fn observe(&mut self, first: u32, profiles: usize, events: &RecordBatch) -> Result<(), Error> {
        let corrupt = |e: shared::tags::ColumnarError| Error::Internal(e.to_string());
        for (id, gathered) in &mut self.gathered {
            match gathered {
                Gathered::Propensity { as_of, sample } => {
                    let (features, labels) =
                        self.tags.propensity_features(id, first, profiles, events, *as_of).map_err(corrupt)?;
                    for (i, (x, y)) in features.into_iter().zip(labels).enumerate() {
                        sample.push(mix(u64::from(first) + i as u64), (x, y));
                    }
                }
                Gathered::Affinity(products) => products.observe(first, profiles, events).map_err(corrupt)?,
                Gathered::Rfm(sample) => {
                    let values = self.tags.rfm_values(id, first, profiles, events, self.now).map_err(corrupt)?;
                    for (i, value) in values.into_iter().enumerate() {
                        if let Some(value) = value {
                            sample.push(mix(u64::from(first) + i as u64), value);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Fits every model; a tag whose model cannot be fitted (nothing to learn from) gets no model and a
    /// reason.
    pub fn finish(self) -> (Population, BTreeMap<String, Fitted>) {
        let mut population = Population::default();
        let mut fitted = BTreeMap::new();
        for (id, gathered) in self.gathered {
            let outcome = match gathered {
                Gathered::Propensity { as_of, sample } => match fit_propensity(&sample.items, as_of) {
                    Ok(model) => {
                        let evaluation = model.evaluation.clone();
                        population.models.insert(id.clone(), Model::Propensity(model));
                        Fitted::Propensity(evaluation)
                    }
                    Err(reason) => Fitted::NotFitted { reason },
                },
                Gathered::Affinity(products) => {
                    let categories: BTreeMap<String, String> =
                        products.finish().into_iter().filter_map(|(id, tag)| Some((id, tag.category?))).collect();
                    let count = categories.len();
                    population.models.insert(id.clone(), Model::Affinity { categories });
                    Fitted::Affinity { products: count }
                }
                Gathered::Rfm(sample) => {
                    let values: Vec<[f64; 3]> = sample.items.iter().map(|(_, v)| *v).collect();
                    match RfmModel::fit(&values) {
                        Some(model) => {
                            population.models.insert(id.clone(), Model::Rfm(model));
                            Fitted::Rfm { profiles: values.len() }
                        }
                        None => Fitted::NotFitted { reason: "no profile has a purchase".into() },
                    }
                }
            };
            fitted.insert(id, outcome);
        }
        (population, fitted)
    }
}

/// Area under the ROC curve: the chance that a random positive scores above a random negative (ties count
/// half). `None` without both classes.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mann–Whitney: sum of the positives' ranks (average rank for ties).
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += rank * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let positives = labels.iter().filter(|&&l| l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// A sampled profile: its hash, features and label.
type Labelled = (u64, (FeatureRow, bool));

fn fit_propensity(items: &[Labelled], as_of: i64) -> Result<LogisticModel, String> {
    // One profile in five is held out, by hash.
    let (holdout, train): (Vec<&Labelled>, Vec<_>) = items.iter().partition(|(h, _)| (h >> 40) % 5 == 0);
    let positives = train.iter().filter(|(_, (_, y))| *y).count();
    if positives == 0 || positives == train.len() {
        return Err(format!(
            "{} of {} sampled profiles purchased within the horizon: a model needs both outcomes",
            positives,
            train.len()
        ));
    }
    let k = FEATURES.len();
    let n = train.len() as f64;
    let means: Vec<f64> = (0..k).map(|j| train.iter().map(|(_, (x, _))| x[j]).sum::<f64>() / n).collect();
    let scales: Vec<f64> = (0..k)
        .map(|j| {
            let var = train.iter().map(|(_, (x, _))| (x[j] - means[j]).powi(2)).sum::<f64>() / n;
            if var > 1e-12 { var.sqrt() } else { 1.0 }
        })
        .collect();
    let standardize =
        |rows: &[&Labelled]| Array2::from_shape_fn((rows.len(), k), |(i, j)| (rows[i].1.0[j] - means[j]) / scales[j]);
    let records = standardize(&train);
    let targets: Array1<bool> = train.iter().map(|(_, (_, y))| *y).collect();
    let fitted = LogisticRegression::default()
        .alpha(1e-3)
        .max_iterations(200)
        .fit(&Dataset::new(records, targets))
        .map_err(|e| format!("training failed: {e}"))?;
    // linfa reports the larger class as positive; the model gives the chance of a purchase.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    let mut model = LogisticModel {
        features: FEATURES.iter().map(ToString::to_string).collect(),
        means,
        scales,
        weights: fitted.params().iter().map(|w| sign * w).collect(),
        intercept: sign * fitted.intercept(),
        evaluation: Evaluation {
            as_of,
            train_profiles: train.len(),
            holdout_profiles: holdout.len(),
            ..Evaluation::default()
        },
    };
    let labels: Vec<bool> = holdout.iter().map(|(_, (_, y))| *y).collect();
    let scores: Vec<f64> = holdout.iter().map(|(_, (x, _))| model.score(x)).collect();
    // The baseline: scores that know nothing (a hash of the profile, uniform in [0, 1)).
    let random: Vec<f64> = holdout.iter().map(|(h, _)| (mix(*h) >> 11) as f64 / (1u64 << 53) as f64).collect();
    model.evaluation.holdout_positive_rate = labels.iter().filter(|&&l| l).count() as f64 / labels.len().max(1) as f64;
    // A model that cannot be evaluated is not served.
    let unevaluated =
        || format!("the {} held-out profiles do not have both outcomes: the model cannot be evaluated", labels.len());
    model.evaluation.auc = auc(&scores, &labels).ok_or_else(unevaluated)?;
    model.evaluation.random_auc = auc(&random, &labels).ok_or_else(unevaluated)?;
    Ok(model)
}

#[cfg(test)]
mod tests;
