//! The analysis of one rollout stage: its updated devices against a concurrent baseline
//! over the soak, look by look, to a [`Verdict`].
//!
//! [`analyze`] is a pure function of the policy, the stage's data, the soak's start and
//! `now`. It evaluates every look up to `now` in order, each on the data that ends by that
//! look, and stops at the first look where something fails. Calling it at every look or
//! once at the end gives the same verdict at the same look, so the executor may call it
//! whenever it likes (late data can change an earlier look; see docs/verification.md).
//!
//! At each look:
//!
//! 1. **Checks** (`checks`): rates by the mixture SPRT (always valid, at its full share of
//!    α), levels and trends by Mann–Whitney on per-device values aligned within strata (at
//!    the share of α spent at this look).
//! 2. **Family** ([`holm`]): weighted Holm across the checks. A check fails the stage when it
//!    is rejected *and* its effect clears its floor in the harmful direction.
//! 3. **Signatures** (`signature_checks`): new ones by rule, more frequent ones by Fisher.
//!
//! After the last look without a failure the stage passes if enough devices reported and
//! every check was computed, else it is inconclusive.
//!
//! The false-alarm budget: each check `c` gets `α·w_c/W` and the signatures `α·w_s/W`, with
//! `W` the sum of the weights. The rate checks use their share once for the whole soak (the
//! SPRT needs no more); the others spend theirs over the looks. By the union bound a good
//! release fails with probability at most α, whatever the correlation between metrics.

mod checks;
mod looks;
mod series;
mod signature_checks;
mod strata;

use jiff::Timestamp;

use self::checks::{Computed, Context, RateRun};
use self::looks::Looks;
use self::series::{Buckets, GaugeSums, Series};
use self::strata::Strata;
use super::model::StageData;
use super::policy::{CheckKind, Policy};
use super::stats::{Hypothesis, holm, spend_between};
use super::verdict::{CheckState, Evidence, Reason, Shortfall, StageReport, Verdict};

pub use self::checks::{CAP_MULTIPLE, CAP_SLACK, MIN_LEVEL_POINTS, MIN_TREND_POINTS};

/// The running sums of one check.
enum Running {
    Rate(RateRun),
    Gauge(Vec<GaugeSums>),
}

/// Analyses the stage whose soak started at `soak_start` (when its devices had committed),
/// as of `now`.
pub fn analyze(
    policy: &Policy,
    data: &StageData,
    soak_start: Timestamp,
    now: Timestamp,
) -> StageReport {
    let spec = policy.spec();
    let looks = Looks::new(spec, soak_start, now);
    let strata = Strata::new(data, spec.min_baseline_per_stratum);
    let series = Series::new(spec, data, &looks, &strata.of_device);
    let n_strata = strata.summaries.len();
    let matched = series
        .devices
        .iter()
        .filter(|d| d.stratum.is_some())
        .fold((0, 0), |n, d| {
            if d.updated {
                (n.0 + 1, n.1)
            } else {
                (n.0, n.1 + 1)
            }
        });
    let total_weight: f64 =
        spec.checks.iter().map(|c| c.weight).sum::<f64>() + spec.signatures.weight;
    let share = |w: f64| spec.alpha * w / total_weight;
    let cx = Context {
        spec,
        devices: &series.devices,
        strata: n_strata,
    };

    let mut running: Vec<Running> = series
        .checks
        .iter()
        .map(|b| match b {
            Buckets::Counter(rows) => Running::Rate(RateRun::new(rows.len())),
            Buckets::Gauge(rows) => Running::Gauge(vec![GaugeSums::default(); rows.len()]),
        })
        .collect();

    let mut report = StageReport {
        verdict: None,
        look: 0,
        looks: looks.len(),
        at: None,
        checks: Vec::new(),
        single_device_signatures: Vec::new(),
        strata: strata.summaries.clone(),
        reporting: (0, 0),
        matched,
    };

    for j in 0..looks.reached {
        for (run, buckets) in running.iter_mut().zip(&series.checks) {
            match (run, buckets) {
                (Running::Rate(run), Buckets::Counter(rows)) => {
                    let look: Vec<&(u64, f64)> = rows.iter().map(|r| &r[j]).collect();
                    run.advance(&series.devices, &look, n_strata);
                }
                (Running::Gauge(sums), Buckets::Gauge(rows)) => {
                    for (s, row) in sums.iter_mut().zip(rows) {
                        s.add(&row[j]);
                    }
                }
                _ => {}
            }
        }

        let prev = if j == 0 { 0.0 } else { looks.fraction(j - 1) };
        let spend = spend_between(1.0, prev, looks.fraction(j));
        let levels: Vec<f64> = spec
            .checks
            .iter()
            .map(|c| match c.kind {
                CheckKind::Rate { .. } => share(c.weight),
                _ => share(c.weight) * spend,
            })
            .collect();
        let computed: Vec<Result<Computed, String>> = spec
            .checks
            .iter()
            .zip(&running)
            .zip(&levels)
            .map(|((check, run), &level)| match run {
                Running::Rate(run) => checks::rate(cx, check, run, level),
                Running::Gauge(sums) => checks::gauge(cx, check, sums, level),
            })
            .collect();
        let family: Vec<Hypothesis> = computed
            .iter()
            .zip(&levels)
            .zip(&spec.checks)
            .map(|((c, &level), check)| Hypothesis {
                p_value: c.as_ref().map_or(1.0, |c| c.p_value),
                level,
                weight: check.weight,
            })
            .collect();
        let rejected = holm(&family);

        let mut reasons = Vec::new();
        report.checks = spec
            .checks
            .iter()
            .zip(computed)
            .zip(rejected)
            .map(|((check, c), threshold)| {
                let state = match c {
                    Err(why) => CheckState::NotEvaluated(why),
                    Ok(Computed {
                        mut finding,
                        above_floor,
                        ..
                    }) => {
                        if let Some(t) = threshold {
                            finding.evidence = match finding.evidence {
                                Evidence::LikelihoodRatio {
                                    ratio, dispersion, ..
                                } => Evidence::LikelihoodRatio {
                                    ratio,
                                    threshold: 1.0 / t,
                                    dispersion,
                                },
                                Evidence::PValue { p, test, .. } => {
                                    Evidence::PValue { p, level: t, test }
                                }
                            };
                        }
                        if threshold.is_some() && above_floor {
                            reasons.push(Reason::Metric(finding.clone()));
                        }
                        CheckState::Evaluated {
                            finding,
                            significant: threshold.is_some(),
                            above_floor,
                        }
                    }
                };
                (check.label(), state)
            })
            .collect();

        let sig = signature_checks::evaluate(
            spec,
            data,
            &series,
            j,
            share(spec.signatures.weight) * spend,
        );
        reasons.extend(sig.reasons);
        report.single_device_signatures = sig.single_device;
        report.look = j + 1;
        report.at = Some(looks.instant(j));
        report.reporting = series
            .devices
            .iter()
            .filter(|d| d.stratum.is_some() && d.reporting_from.is_some_and(|f| f <= j))
            .fold((0, 0), |n, d| {
                if d.updated {
                    (n.0 + 1, n.1)
                } else {
                    (n.0, n.1 + 1)
                }
            });

        if !reasons.is_empty() {
            report.verdict = Some(Verdict::Fail(reasons));
            return report;
        }
    }

    if looks.reached == looks.len() {
        let mut short = strata.shortfalls.clone();
        if report.reporting.0 < spec.min_updated_devices {
            short.push(Shortfall::TooFewUpdated {
                have: report.reporting.0,
                need: spec.min_updated_devices,
            });
        }
        if report.reporting.1 < spec.min_baseline_devices {
            short.push(Shortfall::TooFewBaseline {
                have: report.reporting.1,
                need: spec.min_baseline_devices,
            });
        }
        for (check, state) in &report.checks {
            if let CheckState::NotEvaluated(why) = state {
                short.push(Shortfall::CheckNotEvaluated {
                    check: check.clone(),
                    why: why.clone(),
                });
            }
        }
        report.verdict = Some(if short.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Inconclusive(short)
        });
    }
    report
}
