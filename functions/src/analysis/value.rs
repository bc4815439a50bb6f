//! Value models (客户价值): the RFM segments of the buyers and how they moved between two dates, and customer
//! lifetime value — observed to date and predicted for a horizon with BG/NBD (how many more purchases) and
//! Gamma-Gamma (what each is worth), evaluated on the last horizon of the data held out of the fit.
//!
//! RFM: each buyer's days since their last purchase, purchases and revenue before a date, scored 1–5 by the
//! quintiles of all buyers at that date and segmented by recency and frequency as the RFM tag does
//! ([`RfmModel`]). BG/NBD (Fader, Hardie and Lee, 2005) is fitted by maximum likelihood (Nelder–Mead over the
//! logarithms of r, α, a, b) on each buyer's repeat purchases, the time of the last one and their age, in days;
//! Gamma-Gamma (Fader, Hardie and Lee, 2005) on the purchases and average order value of the buyers with
//! revenue. A buyer's predicted value is the expected purchases in the horizon times the expected order value.

use std::collections::BTreeMap;

use arrow_array::Array;
use arrow_array::cast::AsArray as _;
use arrow_array::types::{Float64Type, TimestampMillisecondType};
use serde::{Deserialize, Serialize};
use shared::tags::RfmModel;

use super::Engine;
use super::period::DAY_MS;
use super::stats::ln_gamma;
use crate::Error;
use shared::time::UtcTime;

/// A value analysis's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Value {
    /// The event that is a purchase.
    #[serde(default = "order_completed")]
    pub purchase_event: String,
    /// The purchase's numeric property that is its revenue.
    #[serde(default = "revenue")]
    pub revenue_property: String,
    /// The data is read up to this time (excluded): RFM's second date, and where predictions start (no later
    /// than the end of the data's last day).
    pub at: UtcTime,
    /// RFM's first date: the segments then, and how the buyers moved to those at `at` (none: no movement).
    #[serde(default)]
    pub since: Option<UtcTime>,
    /// Days predicted, and held out to evaluate the model: 7 to 365.
    #[serde(default = "ninety")]
    pub horizon_days: u32,
}

fn order_completed() -> String {
    "Order Completed".into()
}

fn revenue() -> String {
    "revenue".into()
}

fn ninety() -> u32 {
    90
}

/// Buyers per RFM segment at a date.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Segments {
    /// The date.
    pub at: UtcTime,
    /// Buyers with a purchase before it.
    pub buyers: u64,
    /// Segment → buyers.
    pub segments: BTreeMap<String, u64>,
}

/// Buyers who were in one segment at `since` and are in another at `at`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Movement {
    /// Their segment at `since` (`(new)`: no purchase yet).
    pub from: String,
    /// Their segment at `at`.
    pub to: String,
    /// Buyers.
    pub buyers: u64,
}

/// The fitted models' parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Parameters {
    /// BG/NBD: r, α (days), a, b.
    pub bg_nbd: [f64; 4],
    /// Gamma-Gamma: p, q, γ (none: too few buyers with revenue; the average order value is used).
    pub gamma_gamma: Option<[f64; 3]>,
}

/// How the model did on the last horizon of the data, fitted without it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Holdout {
    /// The held-out period's start (the fit's data ends here).
    pub from: UtcTime,
    /// Buyers before it (whose purchases in it are predicted).
    pub buyers: u64,
    /// Their purchases in it, and as predicted.
    pub purchases: f64,
    /// As predicted.
    pub predicted_purchases: f64,
    /// Their revenue in it.
    pub revenue: f64,
    /// As predicted.
    pub predicted_revenue: f64,
    /// The mean absolute error of a buyer's revenue in it.
    pub revenue_mae: f64,
    /// The same for the naive forecast — each buyer's revenue per day so far, times the days (the baseline to
    /// beat).
    pub naive_revenue_mae: f64,
}

/// Customer lifetime value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifetimeValue {
    /// Buyers before `at`.
    pub buyers: u64,
    /// Their revenue to date.
    pub observed_revenue: f64,
    /// Its average per buyer.
    pub observed_average: f64,
    /// The predicted revenue of the next `horizonDays`, all buyers together.
    pub predicted_revenue: f64,
    /// Its average per buyer.
    pub predicted_average: f64,
    /// Per RFM segment at `at`: the average observed and predicted value.
    pub by_segment: BTreeMap<String, SegmentValue>,
    /// The models.
    pub parameters: Parameters,
    /// The evaluation (none: no purchase before the held-out period).
    pub holdout: Option<Holdout>,
}

/// A segment's average values.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentValue {
    /// Buyers.
    pub buyers: u64,
    /// Average revenue to date.
    pub observed: f64,
    /// Average predicted revenue over the horizon.
    pub predicted: f64,
}

/// A value analysis's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueResult {
    /// The segments at `since` (when asked) and at `at`.
    pub rfm: Vec<Segments>,
    /// Buyers per (segment at `since`, segment at `at`), the most first.
    pub movement: Vec<Movement>,
    /// Lifetime value (none: fewer buyers than the models need, or their fit took too long; `note` says).
    pub lifetime_value: Option<LifetimeValue>,
    /// Why there is no lifetime value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The horizon, in days.
    pub horizon_days: u32,
    /// Where the data read ends: `at`, or the data's end where that is sooner.
    pub at: UtcTime,
}

/// What a buyer who had not purchased yet at `since` moves from.
pub const NEW: &str = "(new)";

/// Buyers the models need at least.
pub const MIN_BUYERS: usize = 20;

impl Value {
    /// The checks a definition must pass, naming the field; `known` are the event names the data holds.
    pub fn check(&self, known: &std::collections::BTreeSet<String>) -> Result<(), Error> {
        super::check_event("purchaseEvent", &self.purchase_event, known)?;
        if !(7..=365).contains(&self.horizon_days) {
            return Err(Error::Invalid(format!("horizonDays: 7 to 365, not {}", self.horizon_days)));
        }
        if self.revenue_property.trim().is_empty() {
            return Err(Error::Invalid("revenueProperty: the property that is a purchase's revenue".into()));
        }
        if let Some(since) = self.since
            && since >= self.at
        {
            return Err(Error::Invalid(format!("since: {since} is not before at ({})", self.at)));
        }
        Ok(())
    }
}

/// One buyer's purchases: (time in ms, revenue), in time order.
type Purchases = Vec<(i64, f64)>;

/// Runs `value` on `engine`.
pub(super) async fn run(engine: &Engine, value: &Value) -> Result<ValueResult, Error> {
    value.check(&engine.event_names)?;
    let deadline = std::time::Instant::now() + super::ANALYSIS_TIME;
    // No later than the end of the data's last day: a horizon held out after the data's end would hold nothing.
    let data_end = engine.loaded.last_event_ms.map_or(i64::MIN, |ms| (ms.div_euclid(DAY_MS) + 1) * DAY_MS);
    if let Some(since) = value.since
        && since.unix_millis() >= data_end
    {
        return Err(Error::Invalid(format!(
            "since: {since} is after the data's last day (it ends {})",
            UtcTime::from_unix_millis(data_end).map_or_else(|| "before anything".to_string(), |t| t.to_string())
        )));
    }
    let at = value.at.unix_millis().min(data_end);
    let at_time = UtcTime::from_unix_millis(at).unwrap_or(value.at);
    let query = format!(
        "SELECT profile_id, timestamp, property_number(properties, {}) FROM events WHERE profile_id IS NOT NULL AND \
         event = {} AND timestamp < to_timestamp_millis({at}) ORDER BY profile_id, timestamp, message_id",
        super::trends::literal(&value.revenue_property),
        super::trends::literal(&value.purchase_event),
    );
    let failed = |e: datafusion::error::DataFusionError| Error::Internal(format!("reading purchases: {e}"));
    let batches = engine.ctx.sql(&query).await.map_err(failed)?.collect().await.map_err(failed)?;
    let mut buyers: Vec<Purchases> = Vec::new();
    let mut last: Option<String> = None;
    for batch in &batches {
        let (ids, times, revenue) = (
            batch.column(0).as_string::<i32>(),
            batch.column(1).as_primitive::<TimestampMillisecondType>(),
            batch.column(2).as_primitive::<Float64Type>(),
        );
        for row in 0..batch.num_rows() {
            let id = ids.value(row);
            if last.as_deref() != Some(id) {
                buyers.push(Vec::new());
                last = Some(id.to_string());
            }
            let amount = if revenue.is_null(row) { 0.0 } else { revenue.value(row) };
            if let Some(purchases) = buyers.last_mut() {
                purchases.push((times.value(row), if amount.is_finite() { amount } else { 0.0 }));
            }
        }
    }
    let (now_segments, now_of) = segments(&buyers, at);
    let mut rfm = Vec::new();
    let mut movement = Vec::new();
    if let Some(since) = value.since {
        let (then, then_of) = segments(&buyers, since.unix_millis());
        rfm.push(Segments { at: since, buyers: then_of.iter().flatten().count() as u64, segments: then });
        let mut moved: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (before, after) in then_of.iter().zip(&now_of) {
            let Some(after) = after else { continue };
            let before = before.map_or(NEW, |s| s);
            *moved.entry((before.to_string(), after.to_string())).or_default() += 1;
        }
        movement = moved.into_iter().map(|((from, to), buyers)| Movement { from, to, buyers }).collect();
        movement.sort_by(|a, b| b.buyers.cmp(&a.buyers).then(a.from.cmp(&b.from)).then(a.to.cmp(&b.to)));
    }
    rfm.push(Segments { at: at_time, buyers: now_of.iter().flatten().count() as u64, segments: now_segments });
    // The models' fits are long computations: off the async workers, with the analysis's deadline.
    let horizon = value.horizon_days;
    let fitted = tokio::task::spawn_blocking(move || lifetime(&buyers, &now_of, at, horizon, at_time, deadline))
        .await
        .map_err(|e| Error::Internal(format!("the value models: {e}")))?;
    // Past the deadline the segments are still the answer; the note says why the value is missing.
    let (lifetime_value, note) = match fitted {
        Ok(Some(ltv)) => (Some(ltv), None),
        Ok(None) => (None, Some(format!("fewer than {MIN_BUYERS} buyers: too few for the models"))),
        Err(Error::Invalid(problem)) => (None, Some(problem)),
        Err(other) => return Err(other),
    };
    Ok(ValueResult { rfm, movement, lifetime_value, note, horizon_days: value.horizon_days, at: at_time })
}

/// Buyers per segment at `at`, and each buyer's segment then (none: no purchase before it).
fn segments(buyers: &[Purchases], at: i64) -> (BTreeMap<String, u64>, Vec<Option<&'static str>>) {
    let values: Vec<Option<[f64; 3]>> = buyers
        .iter()
        .map(|purchases| {
            let before: Vec<&(i64, f64)> = purchases.iter().take_while(|(t, _)| *t < at).collect();
            let last = before.last()?;
            let revenue: f64 = before.iter().map(|(_, r)| r).sum();
            Some([(at - last.0) as f64 / DAY_MS as f64, before.len() as f64, revenue])
        })
        .collect();
    let known: Vec<[f64; 3]> = values.iter().flatten().copied().collect();
    let Some(model) = RfmModel::fit(&known) else { return (BTreeMap::new(), vec![None; buyers.len()]) };
    let mut counts = BTreeMap::new();
    let of: Vec<Option<&'static str>> = values
        .iter()
        .map(|v| {
            let [r, f, _] = model.scores(v.as_ref()?);
            let segment = RfmModel::segment(r, f);
            *counts.entry(segment.to_string()).or_default() += 1;
            Some(segment)
        })
        .collect();
    (counts, of)
}

/// A buyer's summary for the models, in days: repeat purchases, the last one's time after the first, age at
/// the end; and the number of purchases with their average revenue.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Summary {
    x: f64,
    tx: f64,
    t: f64,
    n: f64,
    average: f64,
}

fn summary(purchases: &[(i64, f64)], end: i64) -> Option<Summary> {
    let before: Vec<&(i64, f64)> = purchases.iter().take_while(|(t, _)| *t < end).collect();
    let (first, last) = (before.first()?.0, before.last()?.0);
    let day = DAY_MS as f64;
    let n = before.len() as f64;
    Some(Summary {
        x: n - 1.0,
        tx: (last - first) as f64 / day,
        t: (end - first) as f64 / day,
        n,
        average: before.iter().map(|(_, r)| r).sum::<f64>() / n,
    })
}

/// Both models fitted on `summaries`; none when too few; an error past `deadline`.
fn fit(summaries: &[Summary], deadline: std::time::Instant) -> Result<Option<(BgNbd, Option<GammaGamma>)>, Error> {
    if summaries.len() < MIN_BUYERS {
        return Ok(None);
    }
    let Some(bg) = BgNbd::fit(&weighted(summaries), deadline)? else { return Ok(None) };
    let spenders: Vec<&Summary> = summaries.iter().filter(|s| s.average > 0.0).collect();
    let gg = if spenders.len() >= MIN_BUYERS { GammaGamma::fit(&spenders, deadline)? } else { None };
    Ok(Some((bg, gg)))
}

/// The summaries BG/NBD reads, buyers alike to the day counted once with their number: the fit's cost is
/// then the distinct histories' (at most purchases × days²), not the buyers'.
fn weighted(summaries: &[Summary]) -> Vec<(Summary, f64)> {
    let mut buckets: std::collections::HashMap<(u64, i64, i64), f64> = std::collections::HashMap::new();
    for s in summaries {
        let key = (s.x as u64, s.tx.round() as i64, s.t.round() as i64);
        *buckets.entry(key).or_default() += 1.0;
    }
    let mut out: Vec<(Summary, f64)> = buckets
        .into_iter()
        .map(|((x, tx, t), weight)| {
            let (x, tx, t) = (x as f64, tx as f64, t as f64);
            (Summary { x, tx, t, n: x + 1.0, average: 0.0 }, weight)
        })
        .collect();
    out.sort_by(|a, b| a.0.x.total_cmp(&b.0.x).then(a.0.tx.total_cmp(&b.0.tx)).then(a.0.t.total_cmp(&b.0.t)));
    out
}

/// The error of a fit past its deadline.
fn too_long() -> Error {
    Error::Invalid(format!(
        "the value models took longer than the analysis's limit of {} s; narrow the data (an earlier --at)",
        super::ANALYSIS_TIME.as_secs()
    ))
}

/// A buyer's expected order value: Gamma-Gamma's, or the population's average without it.
fn order_value(gg: Option<&GammaGamma>, s: &Summary, population: f64) -> f64 {
    match gg {
        Some(gg) if s.average > 0.0 => gg.expected(s),
        _ => population,
    }
}

fn lifetime(
    buyers: &[Purchases],
    segment_of: &[Option<&'static str>],
    at: i64,
    horizon_days: u32,
    at_time: UtcTime,
    deadline: std::time::Instant,
) -> Result<Option<LifetimeValue>, Error> {
    let horizon = f64::from(horizon_days);
    let cut = at - i64::from(horizon_days) * DAY_MS;
    // The evaluation: fitted on what came before the last horizon, compared with what came in it.
    let calibration: Vec<(usize, Summary)> =
        buyers.iter().enumerate().filter_map(|(i, p)| Some((i, summary(p, cut)?))).collect();
    let summaries: Vec<Summary> = calibration.iter().map(|(_, s)| *s).collect();
    let holdout = match fit(&summaries, deadline)? {
        None => None,
        Some((bg, gg)) => {
            let population = mean(summaries.iter().map(|s| s.average));
            let (mut purchases, mut predicted_purchases, mut revenue, mut predicted_revenue) = (0.0, 0.0, 0.0, 0.0);
            let (mut error, mut naive_error) = (0.0, 0.0);
            for (i, s) in &calibration {
                let held: Vec<&(i64, f64)> = buyers[*i].iter().filter(|(t, _)| (cut..at).contains(t)).collect();
                let actual: f64 = held.iter().map(|(_, r)| r).sum();
                let expected = bg.expected(s, horizon);
                let worth = expected * order_value(gg.as_ref(), s, population);
                let naive = s.n * s.average / s.t.max(1.0) * horizon;
                purchases += held.len() as f64;
                predicted_purchases += expected;
                revenue += actual;
                predicted_revenue += worth;
                error += (worth - actual).abs();
                naive_error += (naive - actual).abs();
            }
            let count = calibration.len() as f64;
            Some(Holdout {
                from: UtcTime::from_unix_millis(cut).unwrap_or(at_time),
                buyers: calibration.len() as u64,
                purchases,
                predicted_purchases,
                revenue,
                predicted_revenue,
                revenue_mae: error / count,
                naive_revenue_mae: naive_error / count,
            })
        }
    };
    // The prediction: fitted on everything before `at`.
    let now: Vec<(usize, Summary)> =
        buyers.iter().enumerate().filter_map(|(i, p)| Some((i, summary(p, at)?))).collect();
    let summaries: Vec<Summary> = now.iter().map(|(_, s)| *s).collect();
    let Some((bg, gg)) = fit(&summaries, deadline)? else { return Ok(None) };
    let population = mean(summaries.iter().map(|s| s.average));
    let mut by_segment: BTreeMap<String, (u64, f64, f64)> = BTreeMap::new();
    let (mut observed, mut predicted) = (0.0, 0.0);
    for (i, s) in &now {
        let worth = bg.expected(s, horizon) * order_value(gg.as_ref(), s, population);
        let own = s.n * s.average;
        observed += own;
        predicted += worth;
        if let Some(segment) = segment_of[*i] {
            let entry = by_segment.entry(segment.to_string()).or_default();
            entry.0 += 1;
            entry.1 += own;
            entry.2 += worth;
        }
    }
    let count = now.len() as f64;
    Ok(Some(LifetimeValue {
        buyers: now.len() as u64,
        observed_revenue: observed,
        observed_average: observed / count,
        predicted_revenue: predicted,
        predicted_average: predicted / count,
        by_segment: by_segment
            .into_iter()
            .map(|(k, (n, o, p))| (k, SegmentValue { buyers: n, observed: o / n as f64, predicted: p / n as f64 }))
            .collect(),
        parameters: Parameters { bg_nbd: bg.0, gamma_gamma: gg.map(|g| g.0) },
        holdout,
    }))
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0.0);
    for v in values {
        sum += v;
        n += 1.0;
    }
    if n > 0.0 { sum / n } else { 0.0 }
}

/// BG/NBD's r, α, a, b.
#[derive(Debug, Clone, Copy, PartialEq)]
struct BgNbd([f64; 4]);

fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

impl BgNbd {
    /// The log-likelihood of one buyer.
    fn ln_likelihood(&self, s: &Summary) -> f64 {
        let [r, alpha, a, b] = self.0;
        let a1 = ln_gamma(r + s.x) - ln_gamma(r) + r * alpha.ln();
        let a2 = ln_beta(a, b + s.x) - ln_beta(a, b);
        let a3 = -(r + s.x) * (alpha + s.t).ln();
        if s.x > 0.0 {
            let a4 = a.ln() - (b + s.x - 1.0).ln() - (r + s.x) * (alpha + s.tx).ln();
            let top = a3.max(a4);
            a1 + a2 + top + ((a3 - top).exp() + (a4 - top).exp()).ln()
        } else {
            a1 + a2 + a3
        }
    }

    /// Fitted by maximum likelihood on weighted summaries; none when the fit does not converge to finite
    /// values; an error past `deadline`.
    fn fit(summaries: &[(Summary, f64)], deadline: std::time::Instant) -> Result<Option<Self>, Error> {
        let objective = |theta: &[f64]| {
            let model = BgNbd([theta[0].exp(), theta[1].exp(), theta[2].exp(), theta[3].exp()]);
            let total: f64 = summaries.iter().map(|(s, w)| w * model.ln_likelihood(s)).sum();
            if total.is_finite() { -total } else { f64::MAX }
        };
        let weight: f64 = summaries.iter().map(|(_, w)| w).sum();
        let mean_t = (summaries.iter().map(|(s, w)| s.t * w).sum::<f64>() / weight.max(1.0)).max(1.0);
        let start = [0.0, mean_t.ln(), 0.0, 0.0];
        let theta = nelder_mead(objective, &start, 3_000, deadline).ok_or_else(too_long)?;
        let fitted = BgNbd([theta[0].exp(), theta[1].exp(), theta[2].exp(), theta[3].exp()]);
        Ok(fitted.0.iter().all(|p| p.is_finite() && *p > 0.0).then_some(fitted))
    }

    /// The expected purchases of a buyer in the next `t` days. ((α+T)/(α+T+t))^(r+x) ₂F₁(r+x, b+x; a+b+x−1; z)
    /// is computed by Euler's transformation as (1−z)^(a−1) ₂F₁(a+b−1−r, a−1; a+b+x−1; z), whose series stays
    /// small for the heaviest buyers (the first form's factors overflow and underflow).
    fn expected(&self, s: &Summary, t: f64) -> f64 {
        let [r, alpha, mut a, b] = self.0;
        if (a - 1.0).abs() < 1e-7 {
            // The formula's limit at a = 1, by a point beside it.
            a = 1.0 + 1e-7;
        }
        let z = t / (alpha + s.t + t);
        let c = a + b + s.x - 1.0;
        let transformed = (1.0 - z).powf(a - 1.0) * hypergeometric(a + b - 1.0 - r, a - 1.0, c, z);
        let numerator = c / (a - 1.0) * (1.0 - transformed);
        let alive = if s.x > 0.0 { a / (b + s.x - 1.0) * ((alpha + s.t) / (alpha + s.tx)).powf(r + s.x) } else { 0.0 };
        let expected = numerator / (1.0 + alive);
        if expected.is_finite() { expected.max(0.0) } else { 0.0 }
    }
}

/// Gamma-Gamma's p, q, γ.
#[derive(Debug, Clone, Copy, PartialEq)]
struct GammaGamma([f64; 3]);

impl GammaGamma {
    fn fit(spenders: &[&Summary], deadline: std::time::Instant) -> Result<Option<Self>, Error> {
        let objective = |theta: &[f64]| {
            let (p, q, g) = (theta[0].exp(), theta[1].exp(), theta[2].exp());
            let total: f64 = spenders
                .iter()
                .map(|s| {
                    let (x, m) = (s.n, s.average);
                    ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q)
                        + q * g.ln()
                        + (p * x - 1.0) * m.ln()
                        + p * x * x.ln()
                        - (p * x + q) * (x * m + g).ln()
                })
                .sum();
            if total.is_finite() { -total } else { f64::MAX }
        };
        let m = mean(spenders.iter().map(|s| s.average)).max(1e-9);
        let theta = nelder_mead(objective, &[0.0, 1.0, m.ln()], 3_000, deadline).ok_or_else(too_long)?;
        let fitted = GammaGamma([theta[0].exp(), theta[1].exp(), theta[2].exp()]);
        // q ≤ 1 has no finite expected order value.
        Ok((fitted.0.iter().all(|p| p.is_finite() && *p > 0.0) && fitted.0[1] > 1.0).then_some(fitted))
    }

    fn expected(&self, s: &Summary) -> f64 {
        let [p, q, g] = self.0;
        (p * (g + s.n * s.average)) / (p * s.n + q - 1.0)
    }
}

/// The Gauss hypergeometric function ₂F₁(a, b; c; z) for 0 ≤ z < 1, by its series.
fn hypergeometric(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let (mut term, mut sum) = (1.0, 1.0);
    for k in 0..100_000 {
        let k = f64::from(k);
        term *= (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z;
        sum += term;
        if term.abs() < 1e-14 * sum.abs() {
            break;
        }
    }
    sum
}

/// The minimum of `f` near `start` (Nelder–Mead, at most `iterations` steps); none past `deadline`.
fn nelder_mead(
    f: impl Fn(&[f64]) -> f64,
    start: &[f64],
    iterations: usize,
    deadline: std::time::Instant,
) -> Option<Vec<f64>> {
    let n = start.len();
    let mut simplex: Vec<(Vec<f64>, f64)> = (0..=n)
        .map(|i| {
            let mut point = start.to_vec();
            if i > 0 {
                point[i - 1] += 0.5;
            }
            let value = f(&point);
            (point, value)
        })
        .collect();
    for _ in 0..iterations {
        if std::time::Instant::now() >= deadline {
            return None;
        }
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        if (simplex[n].1 - simplex[0].1).abs() <= 1e-10 * (1.0 + simplex[0].1.abs()) {
            break;
        }
        let centroid: Vec<f64> =
            (0..n).map(|j| simplex[..n].iter().map(|(p, _)| p[j]).sum::<f64>() / n as f64).collect();
        let towards =
            |scale: f64| -> Vec<f64> { centroid.iter().zip(&simplex[n].0).map(|(c, w)| c + scale * (c - w)).collect() };
        let reflected = towards(1.0);
        let fr = f(&reflected);
        if fr < simplex[0].1 {
            let expanded = towards(2.0);
            let fe = f(&expanded);
            simplex[n] = if fe < fr { (expanded, fe) } else { (reflected, fr) };
        } else if fr < simplex[n - 1].1 {
            simplex[n] = (reflected, fr);
        } else {
            let contracted = towards(if fr < simplex[n].1 { 0.5 } else { -0.5 });
            let fc = f(&contracted);
            if fc < simplex[n].1.min(fr) {
                simplex[n] = (contracted, fc);
            } else {
                // Shrink towards the best point.
                let best = simplex[0].0.clone();
                for (point, value) in simplex.iter_mut().skip(1) {
                    for (x, b) in point.iter_mut().zip(&best) {
                        *x = b + 0.5 * (*x - b);
                    }
                    *value = f(point);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    Some(simplex.swap_remove(0).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hypergeometric_series_matches_its_closed_form() {
        // ₂F₁(1, 1; 2; z) = −ln(1 − z) / z.
        for z in [0.1, 0.5, 0.9, 0.99] {
            let closed = -(1.0f64 - z).ln() / z;
            assert!((hypergeometric(1.0, 1.0, 2.0, z) - closed).abs() < 1e-9 * closed, "z = {z}");
        }
    }

    /// A small generator (xorshift64*), so that the simulation is the same on every run.
    struct Random(u64);

    impl Random {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            (-2.0 * self.uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform()).cos()
        }

        /// Gamma(shape, 1) (Marsaglia and Tsang).
        fn gamma(&mut self, shape: f64) -> f64 {
            if shape < 1.0 {
                return self.gamma(shape + 1.0) * self.uniform().powf(1.0 / shape);
            }
            let d = shape - 1.0 / 3.0;
            let c = 1.0 / (9.0 * d).sqrt();
            loop {
                let x = self.normal();
                let v = (1.0 + c * x).powi(3);
                if v > 0.0 && self.uniform().ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                    return d * v;
                }
            }
        }
    }

    /// Buyers drawn from BG/NBD(r, α, a, b), each watched for `age` days from their first purchase and then
    /// `horizon` more: their summaries at the end of the watch, and their purchases in the horizon.
    fn simulate(params: [f64; 4], buyers: usize, horizon: f64) -> (Vec<Summary>, f64) {
        let [r, alpha, a, b] = params;
        let mut random = Random(0x9E37_79B9_7F4A_7C15);
        let (mut summaries, mut later) = (Vec::new(), 0.0);
        for i in 0..buyers {
            let age = 100.0 + (i % 5) as f64 * 50.0;
            let rate = random.gamma(r) / alpha;
            let (g1, g2) = (random.gamma(a), random.gamma(b));
            let drop = g1 / (g1 + g2);
            let (mut t, mut x, mut tx, mut alive) = (0.0, 0.0, 0.0, true);
            while alive {
                t += -random.uniform().ln() / rate;
                if t >= age + horizon {
                    break;
                }
                if t < age {
                    x += 1.0;
                    tx = t;
                } else {
                    later += 1.0;
                }
                alive = random.uniform() >= drop;
            }
            summaries.push(Summary { x, tx, t: age, n: x + 1.0, average: 10.0 });
        }
        (summaries, later)
    }

    #[test]
    fn bg_nbd_recovers_a_known_process_and_predicts_its_next_purchases() {
        let truth = [0.8, 20.0, 0.8, 2.5];
        let (summaries, later) = simulate(truth, 6_000, 90.0);
        let later_deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let fitted = BgNbd::fit(&weighted(&summaries), later_deadline).unwrap().expect("fitted");
        // The likelihood is higher at the fit than at the truth (a maximum), and near it.
        let ll = |m: &BgNbd| summaries.iter().map(|s| m.ln_likelihood(s)).sum::<f64>();
        assert!(ll(&fitted) >= ll(&BgNbd(truth)), "{fitted:?}");
        for (got, want) in fitted.0.iter().zip(truth) {
            assert!((got / want - 1.0).abs() < 0.35, "{fitted:?} against {truth:?}");
        }
        // The next 90 days' purchases, summed over the buyers, within 10 % of what the process did.
        let predicted: f64 = summaries.iter().map(|s| fitted.expected(s, 90.0)).sum();
        assert!((predicted / later - 1.0).abs() < 0.10, "predicted {predicted}, happened {later}");
        // A buyer who bought often and recently is expected to buy more than one who stopped long ago.
        let recent = Summary { x: 5.0, tx: 95.0, t: 100.0, n: 6.0, average: 10.0 };
        let gone = Summary { x: 5.0, tx: 10.0, t: 100.0, n: 6.0, average: 10.0 };
        assert!(fitted.expected(&recent, 90.0) > 3.0 * fitted.expected(&gone, 90.0));
        // The heaviest buyers too (the untransformed series overflows for them): about their own rate.
        let heavy = Summary { x: 400.0, tx: 29.0, t: 30.0, n: 401.0, average: 10.0 };
        let expected = BgNbd([0.8, 20.0, 0.8, 2.5]).expected(&heavy, 365.0);
        assert!((100.0..200.0).contains(&expected), "{expected}");
        // Past its deadline, a fit stops with an error.
        let past = std::time::Instant::now() - std::time::Duration::from_secs(1);
        assert!(BgNbd::fit(&weighted(&summaries), past).unwrap_err().to_string().contains("longer than"));
    }

    #[test]
    fn gamma_gamma_shrinks_a_buyers_average_towards_the_population() {
        let mut random = Random(7);
        let spenders: Vec<Summary> = (0..2_000)
            .map(|i| {
                let n = 1.0 + (i % 4) as f64;
                // Each buyer's own mean order value varies around 50.
                let own = 50.0 * random.gamma(4.0) / 4.0;
                let average = (0..n as usize).map(|_| own * random.gamma(6.0) / 6.0).sum::<f64>() / n;
                Summary { x: n - 1.0, tx: 0.0, t: 100.0, n, average }
            })
            .collect();
        let refs: Vec<&Summary> = spenders.iter().collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let gg = GammaGamma::fit(&refs, deadline).unwrap().expect("fitted");
        let population = mean(spenders.iter().map(|s| s.average));
        let one_big = Summary { x: 0.0, tx: 0.0, t: 100.0, n: 1.0, average: 200.0 };
        let many_big = Summary { x: 9.0, tx: 90.0, t: 100.0, n: 10.0, average: 200.0 };
        let (one, many) = (gg.expected(&one_big), gg.expected(&many_big));
        // Between the population's average and the buyer's own, nearer their own the more they bought.
        assert!(population < one && one < many && many < 200.0, "{population} {one} {many} {gg:?}");
    }
}
