//! The Mann–Whitney U (Wilcoxon rank-sum) test, computed as R's `wilcox.test` computes it:
//! the exact null distribution when both samples are smaller than 50 and there are no ties,
//! otherwise the normal approximation with the tie correction of the variance and a
//! continuity correction of ½.

use super::special::{ln_choose, normal_cdf, normal_sf};

/// Which difference the test looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alternative {
    /// `x` tends to be larger or smaller than `y`.
    TwoSided,
    /// `x` tends to be larger than `y`.
    Greater,
    /// `x` tends to be smaller than `y`.
    Less,
}

/// The result of [`mann_whitney`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// `U` of `x`: the pairs `(xᵢ, yⱼ)` with `xᵢ > yⱼ`, ties counted ½ (R's `W`).
    pub u: f64,
    /// Sizes of `x` and `y`.
    pub n: (usize, usize),
    /// The p-value for the alternative asked for.
    pub p_value: f64,
    /// Whether `p_value` is from the exact distribution (else the normal approximation).
    pub exact: bool,
}

impl MannWhitney {
    /// Cliff's delta, `P(X > Y) − P(X < Y)`, from −1 (every `x` below every `y`) to 1.
    pub fn cliffs_delta(&self) -> f64 {
        let pairs = (self.n.0 * self.n.1) as f64;
        2.0 * self.u / pairs - 1.0
    }
}

/// Below this size of both samples, and without ties, the exact distribution is used (R's
/// rule). The dynamic programme costs `O(n₁²·n₂²)`, a few million steps at 49 × 49.
const EXACT_BELOW: usize = 50;

/// The midranks of `values` (1-based, ties sharing the mean of their ranks), and the sizes of
/// the tie groups.
fn midranks(values: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut ties = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end; their mean:
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        if end - start > 1 {
            ties.push(end - start);
        }
        start = end;
    }
    (ranks, ties)
}

/// Counts of `U = u` for `u` in `0..=m·n` over all arrangements of `m` x's and `n` y's
/// without ties. The largest observation is either an x, beating all `j` y's, or a y,
/// beating nothing: `c(i, j, u) = c(i−1, j, u−j) + c(i, j−1, u)`.
fn exact_counts(m: usize, n: usize) -> Vec<f64> {
    let width = m * n + 1;
    // table[i][u] = c(i, j, u) for the current j; j = 0: only u = 0, one arrangement.
    let mut table = vec![vec![0.0_f64; width]; m + 1];
    for row in &mut table {
        row[0] = 1.0;
    }
    for j in 1..=n {
        for i in 1..=m {
            // c(i, j, ·) = c(i, j−1, ·) [still in table[i]] + c(i−1, j, · − j) [already
            // updated to j in table[i−1]].
            let (done, rest) = table.split_at_mut(i);
            let prev = &done[i - 1];
            let row = &mut rest[0];
            for u in (j..=i * j).rev() {
                row[u] += prev[u - j];
            }
        }
    }
    table.swap_remove(m)
}

/// The Mann–Whitney U test of `x` against `y`, or `None` when either sample is empty or
/// holds a value that is not finite.
pub fn mann_whitney(x: &[f64], y: &[f64], alternative: Alternative) -> Option<MannWhitney> {
    let (n1, n2) = (x.len(), y.len());
    if n1 == 0 || n2 == 0 || !x.iter().chain(y).all(|v| v.is_finite()) {
        return None;
    }
    let pooled: Vec<f64> = x.iter().chain(y).copied().collect();
    let (ranks, ties) = midranks(&pooled);
    let r1: f64 = ranks[..n1].iter().sum();
    let u = r1 - (n1 * (n1 + 1)) as f64 / 2.0;
    let (fn1, fn2) = (n1 as f64, n2 as f64);
    let mean = fn1 * fn2 / 2.0;

    if n1 < EXACT_BELOW && n2 < EXACT_BELOW && ties.is_empty() {
        let counts = exact_counts(n1, n2);
        let total = ln_choose((n1 + n2) as u64, n1 as u64).exp();
        // Without ties U is a whole number in 0..=n1·n2, so the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let k = u.round() as usize;
        let upper = || counts[k..].iter().sum::<f64>() / total;
        let lower = || counts[..=k].iter().sum::<f64>() / total;
        let p_value = match alternative {
            Alternative::Greater => upper(),
            Alternative::Less => lower(),
            Alternative::TwoSided if u > mean => 2.0 * upper(),
            Alternative::TwoSided => 2.0 * lower(),
        };
        return Some(MannWhitney {
            u,
            n: (n1, n2),
            p_value: p_value.min(1.0),
            exact: true,
        });
    }

    let n = fn1 + fn2;
    let tie_term: f64 = ties
        .iter()
        .map(|&t| {
            let t = t as f64;
            t * t * t - t
        })
        .sum();
    let sigma = (fn1 * fn2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
    let d = u - mean;
    let p_value = if sigma == 0.0 {
        // Every value equal: no evidence either way.
        1.0
    } else {
        match alternative {
            Alternative::Greater => normal_sf((d - 0.5) / sigma),
            Alternative::Less => normal_cdf((d + 0.5) / sigma),
            Alternative::TwoSided => {
                let z = (d - 0.5 * d.signum()) / sigma;
                2.0 * normal_cdf(z).min(normal_sf(z))
            }
        }
    };
    Some(MannWhitney {
        u,
        n: (n1, n2),
        p_value: p_value.min(1.0),
        exact: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    /// R's own example in `?wilcox.test` (Hollander & Wolfe, p. 69): `wilcox.test(x, y,
    /// alternative = "g")` prints W = 35, p-value = 0.1272. Enumerating all C(15, 5) = 3003
    /// splits gives exactly 382/3003.
    #[test]
    fn r_documentation_example() {
        let x = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46];
        let y = [1.15, 0.88, 0.90, 0.74, 1.21];
        let r = mann_whitney(&x, &y, Alternative::Greater).unwrap();
        assert_eq!(r.u, 35.0);
        assert!(r.exact);
        assert!(close(r.p_value, 382.0 / 3003.0, 1e-12), "{r:?}");
        assert_eq!(format!("{:.4}", r.p_value), "0.1272");
        let two = mann_whitney(&x, &y, Alternative::TwoSided).unwrap();
        assert!(close(two.p_value, 2.0 * 382.0 / 3003.0, 1e-12));
    }

    /// Hand-computed: x = (1, 2), y = (3, 4). Of the C(4, 2) = 6 splits only this one has
    /// U = 0, so P(U ≤ 0) = 1/6 and the two-sided p is 1/3.
    #[test]
    fn smallest_hand_case() {
        let r = mann_whitney(&[1.0, 2.0], &[3.0, 4.0], Alternative::Less).unwrap();
        assert_eq!(r.u, 0.0);
        assert!(close(r.p_value, 1.0 / 6.0, 1e-12));
        assert_eq!(r.cliffs_delta(), -1.0);
        let r = mann_whitney(&[1.0, 2.0], &[3.0, 4.0], Alternative::TwoSided).unwrap();
        assert!(close(r.p_value, 1.0 / 3.0, 1e-12));
        let r = mann_whitney(&[1.0, 2.0], &[3.0, 4.0], Alternative::Greater).unwrap();
        assert!(close(r.p_value, 1.0, 1e-12));
    }

    /// The exact distribution sums to C(m + n, m) and is symmetric about m·n/2.
    #[test]
    fn exact_counts_are_a_distribution() {
        for (m, n) in [(1, 1), (3, 4), (7, 2), (12, 15)] {
            let c = exact_counts(m, n);
            let total: f64 = c.iter().sum();
            assert!(close(
                total,
                ln_choose((m + n) as u64, m as u64).exp(),
                1e-12
            ));
            for u in 0..c.len() {
                assert_eq!(c[u], c[c.len() - 1 - u], "m = {m}, n = {n}, u = {u}");
            }
        }
        // C(4, 2) arrangements of two x's and two y's: U = 0, 1, 2, 2, 3, 4.
        assert_eq!(exact_counts(2, 2), vec![1.0, 1.0, 2.0, 1.0, 1.0]);
    }

    /// With ties the test uses the normal approximation, and the tie-corrected variance is
    /// the exact variance of U over all C(15, 7) = 6435 relabellings (72.4 for these data,
    /// enumerated in Python), so it is checked against that rather than against itself.
    /// One-sided p = 0.019858 (normal, continuity-corrected; the permutation p is 0.01958).
    #[test]
    fn ties_use_the_corrected_variance() {
        let x = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 5.0];
        let y = [2.0, 3.0, 4.0, 4.0, 5.0, 6.0, 6.0, 7.0];
        let r = mann_whitney(&x, &y, Alternative::Less).unwrap();
        assert!(!r.exact);
        assert_eq!(r.u, 10.0);
        // σ² = 72.4 ⇒ z = (10 − 28 + 0.5)/√72.4.
        assert!(close(r.p_value, normal_cdf(-17.5 / 72.4_f64.sqrt()), 1e-12));
        assert!(close(r.p_value, 0.019_858_043_498_505_694, 1e-6), "{r:?}");
        let two = mann_whitney(&x, &y, Alternative::TwoSided).unwrap();
        assert!(close(two.p_value, 0.039_716_086_997_011_39, 1e-6));
    }

    /// Large samples switch to the normal approximation; complete separation of 60 and 240
    /// values gives U = 14 400 and z = √(3·60·240/301) ≈ 11.98.
    #[test]
    fn large_samples_use_the_normal_approximation() {
        let x: Vec<f64> = (0..60).map(|i| 1000.0 + f64::from(i)).collect();
        let y: Vec<f64> = (0..240).map(f64::from).collect();
        let r = mann_whitney(&x, &y, Alternative::Greater).unwrap();
        assert!(!r.exact);
        assert_eq!(r.u, 14_400.0);
        assert_eq!(r.cliffs_delta(), 1.0);
        let z = (7200.0 - 0.5) / (60.0 * 240.0 * 301.0 / 12.0_f64).sqrt();
        assert!(close(r.p_value, normal_sf(z), 1e-12));
        assert!(r.p_value < 1e-30);
    }

    #[test]
    fn degenerate_inputs() {
        assert!(mann_whitney(&[], &[1.0], Alternative::Greater).is_none());
        assert!(mann_whitney(&[f64::NAN], &[1.0], Alternative::Greater).is_none());
        let all_equal = mann_whitney(&[1.0; 60], &[1.0; 60], Alternative::Greater).unwrap();
        assert_eq!(all_equal.p_value, 1.0);
    }
}
