//! The special functions the tests need: `ln n!` and the normal tail. Written out here
//! because they are short and the statistics must not depend on which maths crate is in
//! fashion; each is checked against known values in the unit tests below.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// `ln(n!)`. Exact products up to 20! (which an f64 holds to 1 ulp), then the Stirling
/// series for `ln Γ(n + 1)` to the `x⁻⁷` term, whose error below `1/(1188·x⁹)` is under
/// `1e-15` for `x ≥ 21`.
pub fn ln_factorial(n: u64) -> f64 {
    if n <= 20 {
        let mut f = 1.0_f64;
        for k in 2..=n {
            f *= k as f64;
        }
        return f.ln();
    }
    let x = (n + 1) as f64;
    let x2 = x * x;
    let series = 1.0 / (12.0 * x) - 1.0 / (360.0 * x * x2) + 1.0 / (1260.0 * x * x2 * x2)
        - 1.0 / (1680.0 * x * x2 * x2 * x2);
    (x - 0.5) * x.ln() - x + 0.5 * (2.0 * PI).ln() + series
}

/// `ln C(n, k)`, the log of the binomial coefficient (`-∞` when `k > n`).
pub fn ln_choose(n: u64, k: u64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

/// The complementary error function, after Numerical Recipes' `erfcc` (a Chebyshev fit with
/// fractional error below 1.2e-7 everywhere). That is plenty for p-values, which are
/// compared with levels of a few significant digits, and it stays accurate deep in the tail
/// where `1 - erf(x)` would cancel to zero.
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// `P(Z > z)` for a standard normal `Z`.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z * FRAC_1_SQRT_2)
}

/// `P(Z ≤ z)` for a standard normal `Z`.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z * FRAC_1_SQRT_2)
}

/// `ln Σ exp(xᵢ)` without overflow; `-∞` for an empty slice.
pub fn log_sum_exp(xs: impl IntoIterator<Item = f64> + Clone) -> f64 {
    let max = xs.clone().into_iter().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY || max.is_nan() {
        return max;
    }
    if max == f64::INFINITY {
        return max;
    }
    let sum: f64 = xs.into_iter().map(|x| (x - max).exp()).sum();
    max + sum.ln()
}

/// The median of `xs` (the mean of the two middle values for an even count), or `None` for
/// an empty slice. Reorders `xs`.
pub fn median_in_place(xs: &mut [f64]) -> Option<f64> {
    let n = xs.len();
    if n == 0 {
        return None;
    }
    let mid = n / 2;
    let (_, &mut hi, _) = xs.select_nth_unstable_by(mid, f64::total_cmp);
    if n % 2 == 1 {
        return Some(hi);
    }
    let lo = xs[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(0.5 * (lo + hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(f64::MIN_POSITIVE)
    }

    /// `ln n!` against sums of logs, across the switch from products to Stirling.
    #[test]
    fn ln_factorial_matches_log_sums() {
        let mut sum = 0.0_f64;
        for n in 1..=2000_u64 {
            sum += (n as f64).ln();
            assert!(close(ln_factorial(n), sum, 1e-12), "n = {n}");
        }
        assert_eq!(ln_factorial(0), 0.0);
        // 170! = 7.257415615307994e306 (the largest factorial an f64 holds).
        assert!(close(
            ln_factorial(170),
            7.257_415_615_307_994e306_f64.ln(),
            1e-14
        ));
    }

    #[test]
    fn ln_choose_known_values() {
        assert!(close(ln_choose(8, 4).exp(), 70.0, 1e-12));
        assert!(close(ln_choose(52, 5).exp(), 2_598_960.0, 1e-12));
        assert_eq!(ln_choose(3, 4), f64::NEG_INFINITY);
    }

    /// Normal tail probabilities from standard tables (Abramowitz & Stegun 26.2).
    #[test]
    fn normal_tail_known_values() {
        let table = [
            (0.0, 0.5),
            (1.0, 0.158_655_253_931_457_05),
            (1.959_963_984_540_054, 0.025),
            (2.326_347_874_040_841, 0.01),
            (3.090_232_306_167_813_5, 0.001),
            (5.0, 2.866_515_718_791_939e-7),
            (8.0, 6.220_960_574_271_785e-16),
        ];
        for (z, p) in table {
            assert!(close(normal_sf(z), p, 2e-7), "z = {z}: {}", normal_sf(z));
            assert!(close(normal_cdf(-z), p, 2e-7), "z = {z}");
        }
        assert!(close(normal_cdf(1.0), 0.841_344_746_068_543, 1e-7));
    }

    #[test]
    fn log_sum_exp_is_stable() {
        assert!(close(
            log_sum_exp([1000.0, 1000.0]),
            1000.0 + 2f64.ln(),
            1e-15
        ));
        assert!(close(
            log_sum_exp([-1000.0, -1000.0]),
            -1000.0 + 2f64.ln(),
            1e-15
        ));
        assert_eq!(log_sum_exp(Vec::<f64>::new()), f64::NEG_INFINITY);
    }

    #[test]
    fn medians() {
        assert_eq!(median_in_place(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median_in_place(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median_in_place(&mut []), None);
    }
}
