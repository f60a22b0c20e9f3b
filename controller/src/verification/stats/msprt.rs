//! A mixture sequential probability ratio test (mSPRT) for the ratio of two event rates,
//! updated devices against baseline devices, that may be looked at as often as one likes.
//!
//! ## The model
//!
//! Events (crashes, restarts, reboots) on each side are Poisson with rates `λᵤ = ρ·λ` and
//! `λ_b = λ`. Given that `n` events happened in a stretch of time where the updated devices
//! were observed for `eᵤ` device-hours and the baseline ones for `e_b`, each event is an
//! updated one with probability `π(ρ) = ρ·eᵤ / (ρ·eᵤ + e_b)`, whatever `λ` is. So the
//! unknown common rate drops out, and the likelihood ratio of `ρ` against `ρ = 1` for `xᵤ`
//! updated and `x_b` baseline events is
//!
//! ```text
//! ln LR(ρ) = xᵤ·ln ρ − (xᵤ + x_b)·ln((ρ·eᵤ + e_b) / (eᵤ + e_b))
//! ```
//!
//! summed over cells (strata × stretches of time between looks). Under `ρ = 1` it is a
//! martingale in the events, and so is any mixture `Λ = Σ w_g·LR(ρ_g)` over a fixed prior.
//! By Ville's inequality `P(Λ ever reaches 1/α) ≤ α`: the test may be evaluated at every
//! look, or continuously, without spending any more α. `1/max Λ` is an always-valid p-value.
//!
//! ## Why a mixture and not Wald's SPRT
//!
//! Wald's SPRT needs one alternative (say `ρ = 2`). It is the fastest test *at* that
//! alternative, but slow for `ρ = 1.5` and needlessly slow for a crash loop at `ρ = 10`, and
//! its acceptance boundary would end a soak early with a "pass" we do not want: a stage
//! passes only after its soak. The mixture over a half-normal prior on `ln ρ` (scale `ln 2`,
//! so centred on the doubling the evaluation asks for) gives up a little at exactly `ρ = 2`
//! and detects every harmful ratio, early when it is large.
//!
//! ## Devices are not all alike
//!
//! Real devices differ: one crashes ten times a day, its neighbour never. Then the events are
//! overdispersed: the count of updated events varies `φ` times more than the Poisson model
//! says, and the plain mixture crosses `1/α` far more often than `α` (the evaluation harness
//! measures how much). The quasi-likelihood answer is to temper the log-likelihood by the
//! dispersion, `ℓ(ρ)/φ`: for an approximately normal score `S ~ N(0, φ·V)`,
//! `E[exp(θS/φ − θ²V/(2φ))] = 1` again. `φ` is estimated from the devices themselves
//! (Pearson's χ² over per-device counts, see [`dispersion`]) and never taken below 1.

use super::Direction;
use super::special::log_sum_exp;

/// Events and exposure of both sides over the same stretch of time in one stratum.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateCell {
    /// Events on the updated devices.
    pub updated_events: u64,
    /// Device-hours the updated devices were observed.
    pub updated_exposure: f64,
    /// Events on the baseline devices.
    pub baseline_events: u64,
    /// Device-hours the baseline devices were observed.
    pub baseline_exposure: f64,
}

/// `ln LR(ρ)` of the rate ratio `ρ = e^log_ratio` against 1 over `cells`. Cells where one
/// side was not observed say nothing about the ratio and add 0.
pub fn log_likelihood_ratio(cells: &[RateCell], log_ratio: f64) -> f64 {
    let rho = log_ratio.exp();
    cells
        .iter()
        .filter(|c| c.updated_exposure > 0.0 && c.baseline_exposure > 0.0)
        .map(|c| {
            let (eu, eb) = (c.updated_exposure, c.baseline_exposure);
            let n = (c.updated_events + c.baseline_events) as f64;
            c.updated_events as f64 * log_ratio - n * ((rho * eu + eb) / (eu + eb)).ln()
        })
        .sum()
}

/// The mixing prior of the mSPRT: points `ln ρ_g` on the harmful side with log-weights.
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureSprt {
    log_ratios: Vec<f64>,
    log_weights: Vec<f64>,
}

impl MixtureSprt {
    /// A half-normal prior with standard deviation `scale` on `ln ρ`, truncated at
    /// `ln max_ratio` and discretised at `points` equally spaced points, on the side of 1
    /// that `harmful` names. Any fixed prior keeps the martingale; this one puts most weight
    /// on ratios up to `e^{2·scale}`.
    pub fn half_normal(harmful: Direction, scale: f64, max_ratio: f64, points: usize) -> Self {
        let points = points.max(1);
        let top = max_ratio.max(1.0 + 1e-9).ln();
        let step = top / points as f64;
        let sign = match harmful {
            Direction::Increase => 1.0,
            Direction::Decrease => -1.0,
        };
        let log_ratios: Vec<f64> = (1..=points).map(|g| sign * step * g as f64).collect();
        let raw: Vec<f64> = log_ratios
            .iter()
            .map(|l| -0.5 * (l / scale) * (l / scale))
            .collect();
        let norm = log_sum_exp(raw.iter().copied());
        MixtureSprt {
            log_ratios,
            log_weights: raw.iter().map(|r| r - norm).collect(),
        }
    }

    /// The prior Swell uses: scale `ln 2`, ratios up to 20, 64 points.
    pub fn standard(harmful: Direction) -> Self {
        MixtureSprt::half_normal(harmful, std::f64::consts::LN_2, 20.0, 64)
    }

    /// `ln Λ`, the log of the mixture likelihood ratio over `cells`, tempered by the
    /// dispersion `φ ≥ 1` (`ℓ(ρ)/φ` for each prior point).
    pub fn log_evidence(&self, cells: &[RateCell], dispersion: f64) -> f64 {
        let phi = dispersion.max(1.0);
        log_sum_exp(
            self.log_ratios
                .iter()
                .zip(&self.log_weights)
                .map(|(&l, &w)| w + log_likelihood_ratio(cells, l) / phi),
        )
    }
}

/// One device's events and exposure, with the rate its group and stratum would predict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceCount {
    /// Events counted on the device.
    pub events: u64,
    /// Its expected events: its exposure times its group's rate in its stratum.
    pub expected: f64,
}

/// The quasi-Poisson dispersion `φ = max(1, X²/df)`: Pearson's `X² = Σ (c − μ)²/μ` over the
/// devices, `df` = devices − `fitted_rates` (one rate per stratum and group). 1 when there
/// are too few devices to estimate it.
pub fn dispersion(devices: &[DeviceCount], fitted_rates: usize) -> f64 {
    let used: Vec<&DeviceCount> = devices.iter().filter(|d| d.expected > 0.0).collect();
    let df = used.len().saturating_sub(fitted_rates);
    if df == 0 {
        return 1.0;
    }
    let x2: f64 = used
        .iter()
        .map(|d| {
            let r = d.events as f64 - d.expected;
            r * r / d.expected
        })
        .sum();
    (x2 / df as f64).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::super::special::ln_choose;
    use super::*;

    fn cell(xu: u64, eu: f64, xb: u64, eb: f64) -> RateCell {
        RateCell {
            updated_events: xu,
            updated_exposure: eu,
            baseline_events: xb,
            baseline_exposure: eb,
        }
    }

    /// By hand: 10 updated events in 1 device-hour against 10 in 4; at ρ = 2,
    /// ln LR = 10·ln 2 − 20·ln(6/5) = 3.28504.
    #[test]
    fn likelihood_ratio_by_hand() {
        let l = log_likelihood_ratio(&[cell(10, 1.0, 10, 4.0)], 2f64.ln());
        assert!((l - (10.0 * 2f64.ln() - 20.0 * 1.2f64.ln())).abs() < 1e-12);
        assert!((l - 3.285_04).abs() < 1e-5);
        // Events at exactly the exposure share are evidence against ρ = 2.
        assert!(log_likelihood_ratio(&[cell(4, 1.0, 16, 4.0)], 2f64.ln()) < 0.0);
        // A side that was not observed adds nothing.
        assert_eq!(log_likelihood_ratio(&[cell(0, 0.0, 7, 3.0)], 1.0), 0.0);
    }

    /// The martingale property, exactly: given n events with updated share s, the expected
    /// mixture likelihood ratio under ρ = 1 is Σₓ Bin(x; n, s)·Λ(x) = 1.
    #[test]
    fn mixture_has_expectation_one_under_the_null() {
        let m = MixtureSprt::standard(Direction::Increase);
        for (n, eu, eb) in [(1_u64, 1.0, 4.0), (25, 20.0, 80.0), (200, 3.0, 1.0)] {
            let s: f64 = eu / (eu + eb);
            let e: f64 = (0..=n)
                .map(|x| {
                    let pmf =
                        (ln_choose(n, x) + x as f64 * s.ln() + (n - x) as f64 * (1.0 - s).ln())
                            .exp();
                    pmf * m.log_evidence(&[cell(x, eu, n - x, eb)], 1.0).exp()
                })
                .sum();
            assert!((e - 1.0).abs() < 1e-9, "n = {n}: E[Λ] = {e}");
        }
    }

    /// The prior sits on the harmful side only: a fall in the rate is no evidence of harm
    /// for `Increase`, and the mirror image holds for `Decrease`.
    #[test]
    fn one_sided() {
        let up = MixtureSprt::standard(Direction::Increase);
        let down = MixtureSprt::standard(Direction::Decrease);
        let more = [cell(60, 10.0, 40, 40.0)];
        let fewer = [cell(2, 10.0, 98, 40.0)];
        assert!(up.log_evidence(&more, 1.0) > 10.0);
        assert!(up.log_evidence(&fewer, 1.0) < 0.0);
        assert!(down.log_evidence(&fewer, 1.0) > 10.0);
        assert!(down.log_evidence(&more, 1.0) < 0.0);
    }

    /// Anytime validity under the model: 2000 null streams of Poisson events (updated
    /// exposure 1, baseline 4 per look, rate 2), each watched at 40 looks; the share that
    /// ever reaches 1/α = 20 stays at most α = 0.05 (Ville's inequality). Seeded.
    #[test]
    fn never_crossing_more_often_than_alpha() {
        let mut rng = crate::verification::eval::Rng::new(11);
        let m = MixtureSprt::standard(Direction::Increase);
        let threshold = 20_f64.ln();
        let streams = 2000;
        let mut crossed = 0;
        for _ in 0..streams {
            let mut cells = Vec::new();
            for _ in 0..40 {
                cells.push(cell(rng.poisson(2.0), 1.0, rng.poisson(8.0), 4.0));
                if m.log_evidence(&cells, 1.0) >= threshold {
                    crossed += 1;
                    break;
                }
            }
        }
        assert!(crossed <= streams / 20, "{crossed} of {streams} crossed");
        // And it is not vacuous: with a doubled updated rate most streams cross.
        let mut detected = 0;
        for _ in 0..200 {
            let cells: Vec<RateCell> = (0..40)
                .map(|_| cell(rng.poisson(4.0), 1.0, rng.poisson(8.0), 4.0))
                .collect();
            detected += usize::from(m.log_evidence(&cells, 1.0) >= threshold);
        }
        assert!(detected >= 190, "{detected} of 200");
    }

    /// Tempering by φ divides every component's log-likelihood, so evidence shrinks.
    #[test]
    fn dispersion_tempers_evidence() {
        let m = MixtureSprt::standard(Direction::Increase);
        let c = [cell(60, 10.0, 120, 40.0)];
        assert!(m.log_evidence(&c, 2.0) < m.log_evidence(&c, 1.0));
        assert_eq!(m.log_evidence(&c, 0.5), m.log_evidence(&c, 1.0));
    }

    /// Pearson dispersion: counts exactly at their expectation give 1 (the floor); counts
    /// of 0 and 4 around a mean of 2 give X² = 2 + 2 per pair, so φ = 4·2/(4 − 1) = 8/3.
    #[test]
    fn pearson_dispersion() {
        let even = [DeviceCount {
            events: 2,
            expected: 2.0,
        }; 10];
        assert_eq!(dispersion(&even, 1), 1.0);
        let spread = [0, 4, 0, 4].map(|events| DeviceCount {
            events,
            expected: 2.0,
        });
        assert!((dispersion(&spread, 1) - 8.0 / 3.0).abs() < 1e-12);
        assert_eq!(dispersion(&spread[..1], 1), 1.0);
    }
}
