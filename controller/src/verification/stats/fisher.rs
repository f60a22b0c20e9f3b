//! Fisher's exact test for a 2×2 table, computed from the hypergeometric distribution in
//! log space (so tables with thousands of devices neither overflow nor lose the tail).
//!
//! Fisher's test conditions on both margins, so under "the update changes nothing" it is the
//! exact permutation test of which devices carry the updated label: it stays valid however
//! different the devices are from each other, as long as the outcome is one yes/no per
//! device (did it log this signature, did it fail a health check).

use super::special::{ln_choose, log_sum_exp};

/// A 2×2 table of devices: rows are the groups, columns the outcome.
///
/// |          | with | without |
/// |----------|------|---------|
/// | updated  | `a`  | `b`     |
/// | baseline | `c`  | `d`     |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table2x2 {
    /// Updated devices with the outcome.
    pub a: u64,
    /// Updated devices without it.
    pub b: u64,
    /// Baseline devices with the outcome.
    pub c: u64,
    /// Baseline devices without it.
    pub d: u64,
}

/// The p-values of Fisher's exact test for one table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fisher {
    /// Two-sided, as R's `fisher.test` computes it: the total probability of the tables no
    /// more likely than the observed one (with R's relative tolerance of 1e-7 for ties).
    pub two_sided: f64,
    /// One-sided, `P(A ≥ a)`: the updated row has the outcome more often (odds ratio > 1).
    pub greater: f64,
    /// One-sided, `P(A ≤ a)`: the updated row has it less often.
    pub less: f64,
    /// The sample odds ratio `a·d / (b·c)` (`inf` or `NaN` when a cell is zero).
    pub odds_ratio: f64,
}

impl Table2x2 {
    /// The smallest one-sided (`greater`) p-value any table with these margins can reach:
    /// every device with the outcome in the updated row, as far as the margins allow. It
    /// depends only on the margins, which is what Tarone's correction needs.
    pub fn min_p_greater(&self) -> f64 {
        let (r1, r2, c1) = (self.a + self.b, self.c + self.d, self.a + self.c);
        let top = r1.min(c1);
        ln_hypergeometric(r1, r2, c1, top).exp()
    }
}

/// `ln P(A = x)` for `A` hypergeometric: `x` of the `c1` devices with the outcome fall in the
/// row of `r1` devices, out of `r1 + r2`.
fn ln_hypergeometric(r1: u64, r2: u64, c1: u64, x: u64) -> f64 {
    if x > r1 || x > c1 || c1 - x > r2 {
        return f64::NEG_INFINITY;
    }
    ln_choose(r1, x) + ln_choose(r2, c1 - x) - ln_choose(r1 + r2, c1)
}

/// Fisher's exact test of independence in `t`.
pub fn fisher_exact(t: Table2x2) -> Fisher {
    let (r1, r2, c1) = (t.a + t.b, t.c + t.d, t.a + t.c);
    let lo = c1.saturating_sub(r2);
    let hi = r1.min(c1);
    let ln_p: Vec<f64> = (lo..=hi)
        .map(|x| ln_hypergeometric(r1, r2, c1, x))
        .collect();
    let at = |x: u64| {
        ln_p[usize::try_from(x - lo)
            .unwrap_or(usize::MAX)
            .min(ln_p.len() - 1)]
    };
    let observed = at(t.a);
    // R: `relErr <- 1 + 10^(-7)`; tables within that factor of the observed one count as
    // "as extreme", so floating-point noise cannot drop a tied table.
    let cutoff = observed + 1e-7_f64.ln_1p();
    let two_sided = log_sum_exp(ln_p.iter().copied().filter(|&l| l <= cutoff)).exp();
    let split = usize::try_from(t.a - lo).unwrap_or(0);
    let greater = log_sum_exp(ln_p[split..].iter().copied()).exp();
    let less = log_sum_exp(ln_p[..=split].iter().copied()).exp();
    let (a, b, c, d) = (t.a as f64, t.b as f64, t.c as f64, t.d as f64);
    Fisher {
        two_sided: two_sided.min(1.0),
        greater: greater.min(1.0),
        less: less.min(1.0),
        odds_ratio: (a * d) / (b * c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(a: u64, b: u64, c: u64, d: u64) -> Table2x2 {
        Table2x2 { a, b, c, d }
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    /// Fisher's lady tasting tea: 3 of 4 milk-first cups named right. The hypergeometric
    /// probabilities of 0..4 right are 1, 16, 36, 16, 1 (/70), so two-sided p = 34/70 =
    /// 0.4857 and one-sided p = 17/70 = 0.2429, as in every textbook and R's `fisher.test`.
    #[test]
    fn lady_tasting_tea() {
        let f = fisher_exact(table(3, 1, 1, 3));
        assert!(close(f.two_sided, 34.0 / 70.0, 1e-12), "{f:?}");
        assert!(close(f.greater, 17.0 / 70.0, 1e-12));
        assert!(close(f.less, 69.0 / 70.0, 1e-12));
        assert_eq!(f.odds_ratio, 9.0);
    }

    /// The dieting example of Wikipedia's "Fisher's exact test" article (rows dieting and
    /// not dieting, columns men and women: 1 of 12 men and 9 of 12 women diet): two-sided
    /// p = 0.002759 as R prints it, one-sided `P(A ≤ 1)` = 0.001380 (both to full precision
    /// from Python `fractions`).
    #[test]
    fn wikipedia_dieting_table() {
        let f = fisher_exact(table(1, 9, 11, 3));
        assert!(close(f.two_sided, 0.002_759_456_185_220_084, 1e-9), "{f:?}");
        assert!(close(f.less, 0.001_379_728_092_610_042, 1e-9), "{f:?}");
    }

    /// Exact rational values computed independently (Python `fractions` over the whole
    /// support) for tables with empty cells and for a large one.
    #[test]
    fn independent_exact_values() {
        // [[5, 0], [0, 5]]: only one more extreme table on each side, each 1/252.
        let f = fisher_exact(table(5, 0, 0, 5));
        assert!(close(f.two_sided, 2.0 / 252.0, 1e-12), "{f:?}");
        assert!(close(f.greater, 1.0 / 252.0, 1e-12));
        // [[0, 20], [0, 80]]: nobody has the outcome; every p is 1.
        let f = fisher_exact(table(0, 20, 0, 80));
        assert_eq!((f.two_sided, f.greater, f.less), (1.0, 1.0, 1.0));
        // [[6, 54], [1, 239]]: six of 60 canaries against one of 240 baseline devices.
        // Python: sum(comb(60,x)*comb(240,7-x) for x in (6, 7))/comb(300,7).
        let f = fisher_exact(table(6, 54, 1, 239));
        assert!(close(f.greater, 3.066_759_413_418_298_6e-4, 1e-9), "{f:?}");
    }

    /// The margins-only bound Tarone's method relies on: no table with these margins gives
    /// a smaller one-sided p.
    #[test]
    fn min_p_is_a_lower_bound() {
        let t = table(1, 19, 2, 78);
        let bound = t.min_p_greater();
        for a in 0..=3_u64 {
            let other = table(a, 20 - a, 3 - a, 77 + a);
            assert!(fisher_exact(other).greater >= bound * (1.0 - 1e-12));
        }
        assert!(close(
            bound,
            fisher_exact(table(3, 17, 0, 80)).greater,
            1e-12
        ));
    }
}
