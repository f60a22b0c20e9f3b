//! One check at one look: the numbers from the running sums, the test, the effect size.
//! Whether the test is significant is decided afterwards, across the family (Holm).

use super::series::{Device, GaugeSums};
use crate::verification::policy::{Check, CheckKind, PolicySpec, Scale};
use crate::verification::stats::{
    Alternative, DeviceCount, Direction, MixtureSprt, RateCell, dispersion, hodges_lehmann,
    mann_whitney, rate_ratio, special::median_in_place,
};
use crate::verification::verdict::{Effect, Evidence, MetricFinding};

/// A gauge needs this many points in a device's window for its mean to count.
pub const MIN_LEVEL_POINTS: usize = 2;

/// A gauge needs this many points in a device's window for its slope to count: two points
/// always fit a line exactly.
pub const MIN_TREND_POINTS: usize = 3;

/// What every check at a look reads besides its own sums.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub(crate) spec: &'a PolicySpec,
    pub(crate) devices: &'a [Device],
    /// The number of strata.
    pub(crate) strata: usize,
}

/// A computed check before the family decides: its finding, its p-value, and whether its
/// effect clears the floor in the harmful direction.
#[derive(Debug, Clone)]
pub(crate) struct Computed {
    pub(crate) finding: MetricFinding,
    pub(crate) p_value: f64,
    pub(crate) above_floor: bool,
}

fn not_enough(spec: &PolicySpec, metric: &str, n: (usize, usize)) -> Option<String> {
    (n.0 < spec.min_updated_devices || n.1 < spec.min_baseline_devices).then(|| {
        format!(
            "{} updated and {} baseline devices reported {metric}; {} and {} needed",
            n.0, n.1, spec.min_updated_devices, spec.min_baseline_devices
        )
    })
}

/// A device's count is capped at `CAP_MULTIPLE` times what its stratum's pooled rate
/// predicts for its exposure, plus `CAP_SLACK`. The same rule applies to both sides, so
/// under "no change" the capped counts are as exchangeable as the raw ones; but a few flaky
/// devices (ten crashes where their neighbours have one) no longer decide the test, and
/// the dispersion left for the tempering falls from about 3 to about 2 in the evaluated
/// fleet (docs/verification.md, the ablation). A release that doubles every device's rate keeps almost all of its signal:
/// few devices reach three times the pooled expectation.
pub const CAP_MULTIPLE: f64 = 3.0;

/// See [`CAP_MULTIPLE`]: the slack keeps a device with one or two events from being capped
/// while the expectation is still near zero.
pub const CAP_SLACK: f64 = 2.0;

/// The running state of a rate check: per device its raw and capped cumulative counts and
/// exposure, and the per-stratum cells of capped increments for every look so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct RateRun {
    raw: Vec<(u64, f64)>,
    cap: Vec<u64>,
    capped: Vec<u64>,
    cells: Vec<RateCell>,
}

impl RateRun {
    pub(crate) fn new(devices: usize) -> RateRun {
        RateRun {
            raw: vec![(0, 0.0); devices],
            cap: vec![0; devices],
            capped: vec![0; devices],
            cells: Vec::new(),
        }
    }

    /// Adds look `j`'s (events, device-hours) per device. The cap of a device never falls
    /// (it is the largest cap so far), so capped counts only grow and their increments
    /// are events of this look.
    pub(crate) fn advance(&mut self, devices: &[Device], look: &[&(u64, f64)], strata: usize) {
        for (r, x) in self.raw.iter_mut().zip(look) {
            r.0 += x.0;
            r.1 += x.1;
        }
        let mut pooled = vec![(0_u64, 0.0_f64); strata];
        for (d, r) in devices.iter().zip(&self.raw) {
            if let Some(s) = d.stratum {
                pooled[s].0 += r.0;
                pooled[s].1 += r.1;
            }
        }
        let mut cells = vec![RateCell::default(); strata];
        for (i, d) in devices.iter().enumerate() {
            let Some(s) = d.stratum else { continue };
            let (events, exposure) = self.raw[i];
            let rate = if pooled[s].1 > 0.0 {
                pooled[s].0 as f64 / pooled[s].1
            } else {
                0.0
            };
            let cap = (CAP_MULTIPLE * rate * exposure + CAP_SLACK).ceil();
            // A non-negative whole number; a cap beyond u64 (never in practice) means none.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let cap = if cap < u64::MAX as f64 {
                cap as u64
            } else {
                u64::MAX
            };
            self.cap[i] = self.cap[i].max(cap);
            let capped = events.min(self.cap[i]);
            let added = capped.saturating_sub(self.capped[i]);
            self.capped[i] = capped;
            let c = &mut cells[s];
            if d.updated {
                c.updated_events += added;
                c.updated_exposure += look[i].1;
            } else {
                c.baseline_events += added;
                c.baseline_exposure += look[i].1;
            }
        }
        self.cells.extend(cells);
    }
}

/// A rate check from its running state: the mixture SPRT over the capped cells so far,
/// tempered by the dispersion of the capped per-device counts.
pub(crate) fn rate(
    cx: Context<'_>,
    check: &Check,
    run: &RateRun,
    level: f64,
) -> Result<Computed, String> {
    let (spec, devices, strata) = (cx.spec, cx.devices, cx.strata);
    let (label, metric) = (check.label(), check.metric.as_str());
    let CheckKind::Rate { worse, min_ratio } = check.kind else {
        return Err(format!("{label} is not a rate check"));
    };
    let cells = &run.cells;
    let matched = || {
        devices
            .iter()
            .zip(run.capped.iter().zip(&run.raw))
            .filter_map(|(d, (&capped, raw))| d.stratum.map(|s| (d, s, (capped, raw.1))))
            .filter(|(_, _, t)| t.1 > 0.0)
    };
    let n = matched().fold((0, 0), |n, (d, _, _)| {
        if d.updated {
            (n.0 + 1, n.1)
        } else {
            (n.0, n.1 + 1)
        }
    });
    if let Some(why) = not_enough(spec, metric, n) {
        return Err(why);
    }
    // Per stratum and side: events and exposure, for the fitted rates and the ratio.
    let mut per = vec![RateCell::default(); strata];
    for (d, s, (events, exposure)) in matched() {
        let c = &mut per[s];
        if d.updated {
            c.updated_events += events;
            c.updated_exposure += exposure;
        } else {
            c.baseline_events += events;
            c.baseline_exposure += exposure;
        }
    }
    let fitted = |d: &Device, s: usize| {
        let c = &per[s];
        let (x, e) = if d.updated {
            (c.updated_events, c.updated_exposure)
        } else {
            (c.baseline_events, c.baseline_exposure)
        };
        if e > 0.0 { x as f64 / e } else { 0.0 }
    };
    let counts: Vec<DeviceCount> = matched()
        .map(|(d, s, (events, exposure))| DeviceCount {
            events,
            expected: exposure * fitted(d, s),
        })
        .collect();
    let rates_fitted = per
        .iter()
        .map(|c| usize::from(c.updated_events > 0) + usize::from(c.baseline_events > 0))
        .sum();
    let phi = dispersion(&counts, rates_fitted);
    let log_evidence = MixtureSprt::standard(worse).log_evidence(cells, phi);
    let ratio = rate_ratio(&per).unwrap_or(1.0);
    let harm = match worse {
        Direction::Increase => ratio,
        Direction::Decrease => 1.0 / ratio,
    };
    let total = |f: fn(&RateCell) -> (u64, f64)| {
        let (x, e) = per
            .iter()
            .map(f)
            .fold((0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        if e > 0.0 { x as f64 / e } else { 0.0 }
    };
    Ok(Computed {
        finding: MetricFinding {
            check: label,
            effect: Effect::RateRatio {
                ratio,
                updated_rate: total(|c| (c.updated_events, c.updated_exposure)),
                baseline_rate: total(|c| (c.baseline_events, c.baseline_exposure)),
            },
            evidence: Evidence::LikelihoodRatio {
                ratio: log_evidence.exp(),
                threshold: 1.0 / level,
                dispersion: phi,
            },
            devices: n,
        },
        p_value: (-log_evidence).exp().min(1.0),
        above_floor: harm >= min_ratio,
    })
}

/// A level or trend check from per-device gauge sums so far.
pub(crate) fn gauge(
    cx: Context<'_>,
    check: &Check,
    sums: &[GaugeSums],
    level: f64,
) -> Result<Computed, String> {
    let (spec, devices, strata) = (cx.spec, cx.devices, cx.strata);
    let (label, metric) = (check.label(), check.metric.as_str());
    let (worse, scale, floor, trend) = match check.kind {
        CheckKind::Level {
            worse,
            scale,
            min_shift,
        } => (worse, scale, min_shift, false),
        CheckKind::Trend {
            worse,
            scale,
            min_shift_per_hour,
        } => (worse, scale, min_shift_per_hour, true),
        CheckKind::Rate { .. } => return Err(format!("{label} is not a gauge check")),
    };
    // Per matched device: (updated, stratum, value to compare, its mean for display).
    let mut values: Vec<(bool, usize, f64, f64)> = Vec::new();
    for (d, g) in devices.iter().zip(sums) {
        let Some(s) = d.stratum else { continue };
        let min_points = if trend {
            MIN_TREND_POINTS
        } else {
            MIN_LEVEL_POINTS
        };
        if g.n < min_points {
            continue;
        }
        let mean = g.mean();
        let value = match (trend, scale) {
            (false, Scale::Relative) if mean > 0.0 => mean.ln(),
            (false, Scale::Absolute) => mean,
            (true, Scale::Relative) if mean > 0.0 => match g.slope() {
                Some(b) => b / mean,
                None => continue,
            },
            (true, Scale::Absolute) => match g.slope() {
                Some(b) => b,
                None => continue,
            },
            _ => continue,
        };
        if value.is_finite() {
            values.push((d.updated, s, value, mean));
        }
    }
    let n = values.iter().fold(
        (0, 0),
        |n, v| {
            if v.0 { (n.0 + 1, n.1) } else { (n.0, n.1 + 1) }
        },
    );
    if let Some(why) = not_enough(spec, metric, n) {
        return Err(why);
    }
    // Align within strata: subtract each stratum's median (of both sides together, so the
    // labels stay exchangeable), then compare the pooled residuals.
    let mut centre = vec![0.0; strata];
    for (s, c) in centre.iter_mut().enumerate() {
        let mut v: Vec<f64> = values.iter().filter(|x| x.1 == s).map(|x| x.2).collect();
        *c = median_in_place(&mut v).unwrap_or(0.0);
    }
    let side = |updated: bool| -> Vec<f64> {
        values
            .iter()
            .filter(|x| x.0 == updated)
            .map(|x| x.2 - centre[x.1])
            .collect()
    };
    let (upd, base) = (side(true), side(false));
    // The null is "the harm is at most the floor", not "no difference": the updated
    // values, moved back by the floor in the harmful direction, against the baseline. So a
    // real but harmless difference (a freshly rebooted device's memory settling upward)
    // fails a good release with probability at most the level, however many devices
    // report; with "no difference" as the null it would fail it nearly surely on a large
    // enough fleet.
    let margin = match (trend, scale, worse) {
        (false, Scale::Relative, Direction::Increase) => floor.ln_1p(),
        (false, Scale::Relative, Direction::Decrease) => -(-floor).ln_1p(),
        _ => floor,
    };
    let harm_side: Vec<f64> = upd.iter().map(|v| worse.sign() * v - margin).collect();
    let harm_base: Vec<f64> = base.iter().map(|v| worse.sign() * v).collect();
    let (Some(mw), Some(effect_mw), Some(hl)) = (
        mann_whitney(&harm_side, &harm_base, Alternative::Greater),
        mann_whitney(&upd, &base, Alternative::Greater),
        hodges_lehmann(&upd, &base),
    ) else {
        return Err(format!("{label}: no values to compare"));
    };
    let shift = match (trend, scale) {
        (false, Scale::Relative) => hl.exp() - 1.0,
        _ => hl,
    };
    let effect = if trend {
        Effect::TrendShift {
            per_hour: shift,
            scale,
            cliffs_delta: effect_mw.cliffs_delta(),
        }
    } else {
        let median = |updated: bool| {
            let mut m: Vec<f64> = values
                .iter()
                .filter(|x| x.0 == updated)
                .map(|x| x.3)
                .collect();
            median_in_place(&mut m).unwrap_or(f64::NAN)
        };
        Effect::Shift {
            shift,
            scale,
            cliffs_delta: effect_mw.cliffs_delta(),
            updated_median: median(true),
            baseline_median: median(false),
        }
    };
    Ok(Computed {
        finding: MetricFinding {
            check: label,
            effect,
            evidence: Evidence::PValue {
                p: mw.p_value,
                level,
                test: "Mann-Whitney against the floor",
            },
            devices: n,
        },
        p_value: mw.p_value,
        above_floor: worse.sign() * shift >= floor,
    })
}
