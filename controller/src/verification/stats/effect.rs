//! Effect sizes: how large a difference is, as opposed to how sure we are of it. The
//! analysis fails a stage only when the effect also clears a floor, so that a difference too
//! small to matter (1 % more memory on a thousand devices) never stops a rollout however
//! significant it is.

use super::msprt::RateCell;
use super::special::median_in_place;

/// The Hodges–Lehmann estimate of the shift from `y` to `x`: the median of all differences
/// `xᵢ − yⱼ`. It goes with the Mann–Whitney test the way the mean difference goes with the
/// t-test, and one wild device moves it by at most one of the `n₁·n₂` differences. `None`
/// when either sample is empty.
pub fn hodges_lehmann(x: &[f64], y: &[f64]) -> Option<f64> {
    let mut diffs: Vec<f64> = x
        .iter()
        .flat_map(|a| y.iter().map(move |b| a - b))
        .collect();
    median_in_place(&mut diffs)
}

/// The Mantel–Haenszel estimate of the common rate ratio (updated / baseline) over strata:
/// `Σ xᵤ·e_b/E / Σ x_b·eᵤ/E` with `E = eᵤ + e_b` per cell. It weights strata by their
/// exposure and is unbiased by a stratum mix that differs between the two sides. `None` when
/// no cell has both sides observed, infinite when the baseline had no events.
pub fn rate_ratio(cells: &[RateCell]) -> Option<f64> {
    let (mut num, mut den) = (0.0, 0.0);
    let mut any = false;
    for c in cells {
        let e = c.updated_exposure + c.baseline_exposure;
        if c.updated_exposure <= 0.0 || c.baseline_exposure <= 0.0 {
            continue;
        }
        any = true;
        num += c.updated_events as f64 * c.baseline_exposure / e;
        den += c.baseline_events as f64 * c.updated_exposure / e;
    }
    if !any || (num == 0.0 && den == 0.0) {
        return if any { Some(1.0) } else { None };
    }
    Some(num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: x = (3, 5), y = (1, 2): differences 2, 1, 4, 3, median 2.5.
    #[test]
    fn hodges_lehmann_by_hand() {
        assert_eq!(hodges_lehmann(&[3.0, 5.0], &[1.0, 2.0]), Some(2.5));
        assert_eq!(hodges_lehmann(&[10.0], &[1.0, 2.0, 30.0]), Some(8.0));
        assert_eq!(hodges_lehmann(&[], &[1.0]), None);
    }

    /// A shift added to every x moves the estimate by exactly that shift.
    #[test]
    fn hodges_lehmann_is_shift_equivariant() {
        let x = [1.0, 4.0, 2.5, 9.0, 3.3];
        let y = [2.0, 0.5, 7.0, 1.0];
        let base = hodges_lehmann(&x, &y).unwrap();
        let moved: Vec<f64> = x.iter().map(|v| v + 10.0).collect();
        assert!((hodges_lehmann(&moved, &y).unwrap() - base - 10.0).abs() < 1e-12);
    }

    fn cell(xu: u64, eu: f64, xb: u64, eb: f64) -> RateCell {
        RateCell {
            updated_events: xu,
            updated_exposure: eu,
            baseline_events: xb,
            baseline_exposure: eb,
        }
    }

    /// One stratum: the plain ratio of rates, (20/10)/(40/40) = 2. Two strata with very
    /// different base rates, a doubling in each, and the updated devices mostly in the quiet
    /// stratum: still 2, where pooling the counts (Simpson's paradox) would give 0.078 and
    /// make the update look twelve times better.
    #[test]
    fn mantel_haenszel_rate_ratio() {
        assert!((rate_ratio(&[cell(20, 10.0, 40, 40.0)]).unwrap() - 2.0).abs() < 1e-12);
        let strata = [cell(20, 100.0, 1, 10.0), cell(20, 1.0, 100, 10.0)];
        assert!((rate_ratio(&strata).unwrap() - 2.0).abs() < 1e-12);
        let pooled: f64 = (40.0 / 101.0) / (101.0 / 20.0);
        assert!((pooled - 0.078).abs() < 1e-3);
        assert_eq!(rate_ratio(&[cell(0, 0.0, 5, 10.0)]), None);
        assert_eq!(rate_ratio(&[cell(0, 1.0, 0, 10.0)]), Some(1.0));
        assert_eq!(rate_ratio(&[cell(3, 1.0, 0, 10.0)]), Some(f64::INFINITY));
    }
}
