//! Many tests, one false-alarm budget. A stage is judged on several metrics, each possibly
//! several times during its soak and against every error signature; the chance that *any*
//! of them fails a good release must stay below the family-wise α. Three tools:
//!
//! - **α spending** for tests that are only valid at one look (Mann–Whitney, Fisher): the
//!   look at information fraction `t` gets `α·(t³ − t_prev³)`, so the looks of one test add
//!   up to α and the union bound holds whatever the correlation between looks.
//! - **weighted Holm** across the metric checks. Its first step is Bonferroni, so "did
//!   anything fail" is exactly the Bonferroni decision; the later steps only name more of
//!   the checks that failed.
//! - **Tarone's** correction across signatures: a signature seen on two devices cannot reach
//!   a small p-value whatever their labels, and does not cost a share of α.

/// α spent by information fraction `t` (0 to 1) in the power family `α·t³` (Kim & DeMets
/// with ρ = 3, close to O'Brien–Fleming): little at the first looks, when a real but modest
/// effect has had no time to show, most near the end of the soak.
pub fn spent(alpha: f64, t: f64) -> f64 {
    alpha * t.clamp(0.0, 1.0).powi(3)
}

/// The α of a look at fraction `t` after the previous look at `t_prev`.
pub fn spend_between(alpha: f64, t_prev: f64, t: f64) -> f64 {
    (spent(alpha, t) - spent(alpha, t_prev)).max(0.0)
}

/// One member of a family for [`holm`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hypothesis {
    /// Its p-value (for an mSPRT, `1/Λ`).
    pub p_value: f64,
    /// Its Bonferroni level: its share of the family's α at this look.
    pub level: f64,
    /// Its weight in the family, in the same proportion as `level` (1 for equal shares).
    pub weight: f64,
}

/// Weighted Holm step-down: order by `p/level`; reject while `p ≤ level·W/W_left`, where `W`
/// is the family's total weight and `W_left` the weight not yet rejected. Returns, per
/// hypothesis, the threshold it was rejected at, or `None`. Controls the family-wise error
/// at the sum of the levels under any dependence between the tests.
pub fn holm(family: &[Hypothesis]) -> Vec<Option<f64>> {
    let total: f64 = family.iter().map(|h| h.weight).sum();
    let mut order: Vec<usize> = (0..family.len()).collect();
    let ratio = |h: &Hypothesis| {
        if h.level > 0.0 {
            h.p_value / h.level
        } else {
            f64::INFINITY
        }
    };
    order.sort_by(|&i, &j| ratio(&family[i]).total_cmp(&ratio(&family[j])));
    let mut rejected = vec![None; family.len()];
    let mut left = total;
    for i in order {
        let h = &family[i];
        let threshold = h.level * total / left;
        if left <= 0.0 || h.p_value > threshold {
            break;
        }
        rejected[i] = Some(threshold);
        left -= h.weight;
    }
    rejected
}

/// Tarone's modified Bonferroni for discrete tests: given each hypothesis' smallest
/// achievable p-value (which depends only on what is conditioned on, such as a Fisher
/// table's margins), the smallest `k` such that at most `k` hypotheses could reach `α/k`.
/// Returns the level `α/k` and, per hypothesis, whether it is tested at all. Hypotheses
/// that cannot reach the level are left out and cost nothing.
pub fn tarone(min_p: &[f64], alpha: f64) -> (f64, Vec<bool>) {
    let n = min_p.len().max(1);
    let mut k = 1;
    while k < n {
        let level = alpha / k as f64;
        if min_p.iter().filter(|&&p| p <= level).count() <= k {
            break;
        }
        k += 1;
    }
    let level = alpha / k as f64;
    (level, min_p.iter().map(|&p| p <= level).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The increments over any set of looks add up to α, and early looks get little.
    #[test]
    fn spending_adds_up() {
        let looks = [0.0, 0.1, 0.25, 0.5, 0.8, 1.0];
        let total: f64 = looks
            .windows(2)
            .map(|w| spend_between(0.01, w[0], w[1]))
            .sum();
        assert!((total - 0.01).abs() < 1e-15);
        assert!((spend_between(0.01, 0.0, 0.1) - 1e-5).abs() < 1e-18);
        assert_eq!(spent(0.01, 2.0), 0.01);
    }

    fn equal(ps: &[f64], alpha: f64) -> Vec<bool> {
        let level = alpha / ps.len() as f64;
        let family: Vec<Hypothesis> = ps
            .iter()
            .map(|&p_value| Hypothesis {
                p_value,
                level,
                weight: 1.0,
            })
            .collect();
        holm(&family).iter().map(Option::is_some).collect()
    }

    /// By hand at α = 0.05 with four tests: Bonferroni (0.0125) rejects 0.005 and 0.01;
    /// Holm goes on: 0.015 ≤ 0.05/2, 0.03 ≤ 0.05/1, so all four.
    #[test]
    fn holm_by_hand() {
        assert_eq!(
            equal(&[0.01, 0.015, 0.03, 0.005], 0.05),
            [true, true, true, true]
        );
        // 0.005 ≤ 0.0125, 0.02 > 0.0167: stop; the rest stay even if small enough later.
        assert_eq!(
            equal(&[0.02, 0.005, 0.04, 0.024], 0.05),
            [false, true, false, false]
        );
        assert_eq!(equal(&[0.5, 0.9], 0.05), [false, false]);
    }

    /// A heavier weight buys a larger share: with levels 0.03 and 0.01, p = 0.02 is
    /// rejected on the first test and not on the second.
    #[test]
    fn weighted_holm() {
        let family = [
            Hypothesis {
                p_value: 0.02,
                level: 0.03,
                weight: 3.0,
            },
            Hypothesis {
                p_value: 0.5,
                level: 0.01,
                weight: 1.0,
            },
        ];
        assert_eq!(holm(&family), [Some(0.03), None]);
        let swapped = [
            Hypothesis {
                p_value: 0.5,
                ..family[0]
            },
            Hypothesis {
                p_value: 0.02,
                ..family[1]
            },
        ];
        assert_eq!(holm(&swapped), [None, None]);
    }

    /// Tarone by hand: 100 signatures of which 98 cannot get below 0.2 and two could reach
    /// 1e-4. At k = 1 two are testable (> 1); at k = 2 both reach 0.001/2: level 5e-4, not
    /// the Bonferroni 1e-5.
    #[test]
    fn tarone_by_hand() {
        let mut min_p = vec![0.2; 98];
        min_p.extend([1e-4, 1e-4]);
        let (level, testable) = tarone(&min_p, 0.001);
        assert!((level - 5e-4).abs() < 1e-18);
        assert_eq!(testable.iter().filter(|&&t| t).count(), 2);
        let (level, testable) = tarone(&[], 0.001);
        assert_eq!((level, testable.len()), (0.001, 0));
    }
}
