//! Significance tests for comparing two groups: Pearson's chi-square on a 2×2 table, Welch's t for two means,
//! and the Benjamini–Hochberg adjustment for many tests at once.

/// Running count, mean and sum of squared deviations (Welford), for a mean and a variance in one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    /// Values seen.
    pub n: u64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Adds `count` values of 0 (persons without any of a counted event).
    pub fn add_zeros(&mut self, count: u64) {
        if count == 0 {
            return;
        }
        // Chan et al.'s merge of two sets of moments; the zeros' own mean and spread are 0.
        let (n_a, n_b) = (self.n as f64, count as f64);
        let n = n_a + n_b;
        let delta = -self.mean;
        self.m2 += delta * delta * n_a * n_b / n;
        self.mean += delta * n_b / n;
        self.n += count;
    }

    /// The mean (none without values).
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }

    /// The sample variance (none below two values).
    pub fn variance(&self) -> Option<f64> {
        (self.n > 1).then(|| self.m2 / (self.n - 1) as f64)
    }
}

/// A test's statistic and two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tested {
    /// Chi-square, or t.
    pub statistic: f64,
    /// The p-value.
    pub p: f64,
}

/// Pearson's chi-square (1 degree of freedom, no continuity correction) for `a` of `n_a` against `b` of `n_b`
/// having a value: none when a margin is empty (nothing to test).
pub fn chi_square(a: u64, n_a: u64, b: u64, n_b: u64) -> Option<Tested> {
    let (a, c, b, d) = (a as f64, (n_a - a.min(n_a)) as f64, b as f64, (n_b - b.min(n_b)) as f64);
    let n = a + b + c + d;
    let margins = (a + b) * (c + d) * (a + c) * (b + d);
    if margins == 0.0 {
        return None;
    }
    let statistic = n * (a * d - b * c).powi(2) / margins;
    Some(Tested { statistic, p: erfc((statistic / 2.0).sqrt()) })
}

/// Welch's t-test of two means: none when either group has fewer than two values (or the figures overflow).
pub fn welch(x: &Moments, y: &Moments) -> Option<Tested> {
    let (vx, vy) = (x.variance()?, y.variance()?);
    let (nx, ny) = (x.n as f64, y.n as f64);
    let difference = x.mean - y.mean;
    let se2 = vx / nx + vy / ny;
    if se2 == 0.0 {
        // No spread in either group: the means are equal or the groups are entirely apart.
        return Some(if difference == 0.0 {
            Tested { statistic: 0.0, p: 1.0 }
        } else {
            Tested { statistic: difference.signum() * f64::MAX, p: 0.0 }
        });
    }
    let t = difference / se2.sqrt();
    let df = se2 * se2 / ((vx / nx).powi(2) / (nx - 1.0) + (vy / ny).powi(2) / (ny - 1.0));
    let p = t_two_sided(t, df);
    // Values so large that their moments overflow: no test rather than a NaN.
    (t.is_finite() && p.is_finite()).then_some(Tested { statistic: t, p })
}

/// The two-sided p-value of Student's t with `df` degrees of freedom.
pub fn t_two_sided(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return 0.0;
    }
    if df > 1e5 {
        // The normal distribution, to within far less than any p-value is read to.
        return erfc(t.abs() / std::f64::consts::SQRT_2);
    }
    incomplete_beta(df / 2.0, 0.5, df / (df + t * t)).clamp(0.0, 1.0)
}

/// Benjamini–Hochberg adjusted p-values (q-values), in the order of `p`.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|a, b| p[*a].total_cmp(&p[*b]));
    let mut q = vec![1.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        q[i] = running.min(1.0);
    }
    q
}

/// The complementary error function (fractional error below 1.2e-7; Numerical Recipes' `erfcc`).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let answer = t * poly.exp();
    if x >= 0.0 { answer } else { 2.0 - answer }
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
pub(super) fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        sum += g / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularized incomplete beta function I_x(a, b).
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let tiny = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / tiny(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=1000 {
        let (m, m2) = (f64::from(m), f64::from(2 * m));
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / tiny(1.0 + aa * d);
        c = tiny(1.0 + aa / c);
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / tiny(1.0 + aa * d);
        c = tiny(1.0 + aa / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, within: f64) -> bool {
        (a - b).abs() <= within
    }

    #[test]
    fn p_values_match_the_tables() {
        // Chi-square, 1 df: 3.841 is the 5 % point, 6.635 the 1 % point.
        assert!(close(erfc((3.841_459f64 / 2.0).sqrt()), 0.05, 1e-6));
        assert!(close(erfc((6.634_897f64 / 2.0).sqrt()), 0.01, 1e-6));
        // Student's t, two-sided: 2.228 at 10 df and 2.0 at 1e6 df (the normal's 4.55 %).
        assert!(close(t_two_sided(2.228_139, 10.0), 0.05, 1e-6));
        assert!(close(t_two_sided(-12.706_205, 1.0), 0.05, 1e-6));
        assert!(close(t_two_sided(2.0, 1e6), 0.045_500, 1e-5));
        assert!(close(t_two_sided(0.0, 5.0), 1.0, 1e-12));
        assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-12));
        assert!(close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-12));
    }

    #[test]
    fn chi_square_of_a_2x2_table_by_hand() {
        // 30 of 50 against 20 of 50: n (ad - bc)^2 / margins = 100 * (600 - 400)^2 / (50 * 50 * 50 * 50) = 4.
        let tested = chi_square(30, 50, 20, 50).expect("tested");
        assert!(close(tested.statistic, 4.0, 1e-12));
        assert!(close(tested.p, 0.045_500, 1e-5));
        assert_eq!(chi_square(0, 10, 0, 10), None, "nobody has the value: nothing to test");
    }

    #[test]
    fn welch_by_hand() {
        // x = 1..5 (mean 3, variance 2.5), y = 2, 4, …, 10 (mean 6, variance 10): t = -3 / sqrt(0.5 + 2) =
        // -1.897; df = 2.5^2 / (0.5^2 / 4 + 2^2 / 4) = 5.882; p ≈ 0.1075.
        let (mut x, mut y) = (Moments::default(), Moments::default());
        (1..=5).for_each(|v| x.add(f64::from(v)));
        (1..=5).for_each(|v| y.add(f64::from(2 * v)));
        assert_eq!((x.mean(), x.variance()), (Some(3.0), Some(2.5)));
        let tested = welch(&x, &y).expect("tested");
        assert!(close(tested.statistic, -3.0 / 2.5f64.sqrt(), 1e-12));
        assert!(close(tested.p, 0.1075, 1e-3), "{}", tested.p);
        // Zeros merged in equal zeros added one by one.
        let (mut merged, mut one_by_one) = (x, x);
        merged.add_zeros(3);
        (0..3).for_each(|_| one_by_one.add(0.0));
        assert!(close(merged.mean().unwrap(), one_by_one.mean().unwrap(), 1e-12));
        assert!(close(merged.variance().unwrap(), one_by_one.variance().unwrap(), 1e-12));
        assert_eq!(welch(&Moments::default(), &y), None);
    }

    #[test]
    fn benjamini_hochberg_by_hand() {
        // m = 4: 0.01 * 4 / 1 = 0.04; 0.02 * 4 / 2 = 0.04; 0.03 * 4 / 3 = 0.04; 0.5 * 4 / 4 = 0.5.
        let q = benjamini_hochberg(&[0.5, 0.02, 0.01, 0.03]);
        let expected = [0.5, 0.04, 0.04, 0.04];
        assert!(q.iter().zip(expected).all(|(q, e)| close(*q, e, 1e-12)), "{q:?}");
        // Monotone: a larger p never gets a smaller q.
        let q = benjamini_hochberg(&[0.04, 0.001]);
        assert!(close(q[1], 0.002, 1e-12) && close(q[0], 0.04, 1e-12));
    }
}
