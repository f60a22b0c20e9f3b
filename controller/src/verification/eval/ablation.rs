//! Why the rate check is built the way it is: four tests of the crash rate on the same
//! simulated stages, each at one look at the end of the soak and at the rate check's share
//! of α, on good releases (false alarms) and on a doubled crash rate (detection).
//!
//! 1. the mixture SPRT on raw pooled events, untempered (the textbook Poisson test);
//! 2. the same, tempered by the Pearson dispersion;
//! 3. the same on counts capped as the analysis caps them (what Swell uses);
//! 4. Mann–Whitney on per-device rates (a rank test, robust by construction, but not
//!    sequential: in the analysis it would have to spend α over the looks).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::harness::{Setup, clopper_pearson};
use super::rng::splitmix64;
use super::sim::{Catalog, Fault, StageShape, simulate};
use crate::verification::analysis::{CAP_MULTIPLE, CAP_SLACK};
use crate::verification::model::Arm;
use crate::verification::stats::{
    Alternative, DeviceCount, Direction, MixtureSprt, RateCell, dispersion, mann_whitney,
};

/// The tests compared, in table order.
pub const TESTS: [&str; 4] = [
    "mixture SPRT, raw counts, untempered",
    "mixture SPRT, raw counts, tempered",
    "mixture SPRT, capped counts, tempered (Swell)",
    "Mann-Whitney on per-device rates",
];

/// Per-device (stratum, updated, events, device-hours) of `metric` over the soak window.
fn device_counts(
    stage: &super::sim::SimulatedStage,
    setup: &Setup,
    metric: &str,
) -> Vec<(String, bool, u64, f64)> {
    let spec = setup.policy.spec();
    let open = stage
        .soak_start
        .checked_add(spec.warmup)
        .unwrap_or(stage.soak_start);
    let end = stage
        .soak_start
        .checked_add(spec.soak)
        .unwrap_or(stage.soak_start);
    let mut out = Vec::new();
    for d in &stage.data.devices {
        let (updated, start) = match d.meta.arm {
            Arm::Updated { committed } => (
                true,
                committed.checked_add(spec.warmup).unwrap_or(open).max(open),
            ),
            Arm::Baseline => (false, open),
        };
        let (mut events, mut hours) = (0, 0.0);
        for p in d.counters.get(metric).into_iter().flatten() {
            if p.start >= start && p.end <= end {
                events += p.count;
                hours += p.end.duration_since(p.start).as_secs_f64() / 3600.0;
            }
        }
        if hours > 0.0 {
            out.push((
                format!("{} {}", d.meta.hardware, d.meta.zone),
                updated,
                events,
                hours,
            ));
        }
    }
    out
}

/// Which of [`TESTS`] call the stage bad.
fn verdicts(devices: &[(String, bool, u64, f64)], level: f64) -> [bool; 4] {
    let threshold = (1.0 / level).ln();
    let prior = MixtureSprt::standard(Direction::Increase);
    let cells_of = |counts: &[u64]| {
        let mut strata: BTreeMap<&str, RateCell> = BTreeMap::new();
        for (d, &c) in devices.iter().zip(counts) {
            let cell = strata.entry(&d.0).or_default();
            if d.1 {
                cell.updated_events += c;
                cell.updated_exposure += d.3;
            } else {
                cell.baseline_events += c;
                cell.baseline_exposure += d.3;
            }
        }
        strata
    };
    let phi_of = |counts: &[u64], strata: &BTreeMap<&str, RateCell>| {
        let fitted: Vec<DeviceCount> = devices
            .iter()
            .zip(counts)
            .map(|(d, &events)| {
                let c = strata[d.0.as_str()];
                let (x, e) = if d.1 {
                    (c.updated_events, c.updated_exposure)
                } else {
                    (c.baseline_events, c.baseline_exposure)
                };
                DeviceCount {
                    events,
                    expected: d.3 * x as f64 / e.max(f64::MIN_POSITIVE),
                }
            })
            .collect();
        dispersion(&fitted, 2 * strata.len())
    };
    let raw: Vec<u64> = devices.iter().map(|d| d.2).collect();
    let strata = cells_of(&raw);
    let pooled = |key: &str| {
        let c = strata[key];
        (c.updated_events + c.baseline_events) as f64
            / (c.updated_exposure + c.baseline_exposure).max(f64::MIN_POSITIVE)
    };
    let cells: Vec<RateCell> = strata.values().copied().collect();
    let plain = prior.log_evidence(&cells, 1.0) >= threshold;
    let tempered = prior.log_evidence(&cells, phi_of(&raw, &strata)) >= threshold;

    let capped: Vec<u64> = devices
        .iter()
        .map(|d| {
            let cap = (CAP_MULTIPLE * pooled(&d.0) * d.3 + CAP_SLACK).ceil();
            // A non-negative whole number far below 2⁶⁴.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let cap = cap as u64;
            d.2.min(cap)
        })
        .collect();
    let capped_strata = cells_of(&capped);
    let capped_cells: Vec<RateCell> = capped_strata.values().copied().collect();
    let robust = prior.log_evidence(&capped_cells, phi_of(&capped, &capped_strata)) >= threshold;

    let side = |updated: bool| -> Vec<f64> {
        devices
            .iter()
            .filter(|d| d.1 == updated)
            .map(|d| d.2 as f64 / d.3 - pooled(&d.0))
            .collect()
    };
    let ranks = mann_whitney(&side(true), &side(false), Alternative::Greater)
        .is_some_and(|mw| mw.p_value <= level);
    [plain, tempered, robust, ranks]
}

/// The ablation table for `setup`: `trials` good and `trials` doubled-crash stages.
pub fn rate_ablation(setup: &Setup, trials: usize, seed: u64) -> String {
    let spec = setup.policy.spec();
    let total: f64 = spec.checks.iter().map(|c| c.weight).sum::<f64>() + spec.signatures.weight;
    let level = spec.alpha / total;
    let catalog = Catalog::new(&setup.model);
    let shape = StageShape {
        updated: setup.canary,
        baseline: setup.baseline,
        soak: spec.soak,
    };
    let mut hits = [[0_usize; 4]; 2];
    for (k, fault) in [Fault::None, Fault::CrashRate(2.0)].into_iter().enumerate() {
        for i in 0..trials {
            let stage = simulate(
                &setup.model,
                &catalog,
                shape,
                fault,
                splitmix64(seed ^ splitmix64((k as u64) << 32 | i as u64)),
            );
            let v = verdicts(&device_counts(&stage, setup, "crashes"), level);
            for (h, v) in hits[k].iter_mut().zip(v) {
                *h += usize::from(v);
            }
        }
    }
    let mut out = format!(
        "| crash-rate test, one look at the end, level {level:.1e} | false alarms (good) | upper 95% bound | detected (crash rate x2) |\n|---|---|---|---|\n"
    );
    for (t, name) in TESTS.iter().enumerate() {
        let (_, hi) = clopper_pearson(hits[0][t], trials);
        let _ = writeln!(
            out,
            "| {name} | {} of {trials} | {:.2}% | {:.1}% |",
            hits[0][t],
            100.0 * hi,
            100.0 * hits[1][t] as f64 / trials.max(1) as f64
        );
    }
    out
}
