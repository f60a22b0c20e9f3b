//! Who is compared with whom. Updated devices are compared only with not-yet-updated devices
//! of the same hardware, and, where the baseline is large enough, of the same zone (the same
//! local time of day, so the same daily load) and the same cohort.
//!
//! For each hardware model the finest level at which *every* updated device of that model
//! has at least `min_baseline_per_stratum` baseline devices is chosen: hardware + zone +
//! cohort, else hardware + zone, else hardware. The strata of one model are then disjoint,
//! and baseline devices outside every stratum are left out. A model whose updated devices
//! have too few baseline devices even at the hardware level cannot be judged.

use std::collections::BTreeMap;

use crate::verification::model::{Arm, DeviceMeta, StageData};
use crate::verification::verdict::{Shortfall, StratumSummary};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    ZoneCohort,
    Zone,
    Hardware,
}

fn key(level: Level, m: &DeviceMeta) -> String {
    let cohort = m.cohort.as_deref().unwrap_or("none");
    match level {
        Level::ZoneCohort => format!("{} {} cohort={cohort}", m.hardware, m.zone),
        Level::Zone => format!("{} {}", m.hardware, m.zone),
        Level::Hardware => m.hardware.to_string(),
    }
}

/// The matching of a stage's devices.
#[derive(Debug, Clone, Default)]
pub(crate) struct Strata {
    /// For each device of the stage data, its stratum, if matched.
    pub(crate) of_device: Vec<Option<usize>>,
    /// The strata.
    pub(crate) summaries: Vec<StratumSummary>,
    /// Hardware models left unmatched.
    pub(crate) shortfalls: Vec<Shortfall>,
}

impl Strata {
    pub(crate) fn new(data: &StageData, min_baseline: usize) -> Strata {
        let mut by_hw: BTreeMap<String, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
        for (i, d) in data.devices.iter().enumerate() {
            let e = by_hw.entry(d.meta.hardware.to_string()).or_default();
            match d.meta.arm {
                Arm::Updated { .. } => e.0.push(i),
                Arm::Baseline => e.1.push(i),
            }
        }
        let mut s = Strata {
            of_device: vec![None; data.devices.len()],
            ..Strata::default()
        };
        let meta = |i: usize| &data.devices[i].meta;
        for (hw, (updated, baseline)) in by_hw {
            if updated.is_empty() {
                continue;
            }
            let level = [Level::ZoneCohort, Level::Zone, Level::Hardware]
                .into_iter()
                .find(|&level| {
                    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                    for &b in &baseline {
                        *counts.entry(key(level, meta(b))).or_default() += 1;
                    }
                    updated.iter().all(|&u| {
                        counts.get(&key(level, meta(u))).copied().unwrap_or(0) >= min_baseline
                    })
                });
            let Some(level) = level else {
                s.shortfalls.push(Shortfall::NoBaseline {
                    hardware: hw,
                    updated: updated.len(),
                    baseline: baseline.len(),
                });
                continue;
            };
            let mut index: BTreeMap<String, usize> = BTreeMap::new();
            for &u in &updated {
                let k = key(level, meta(u));
                let next = s.summaries.len();
                let at = *index.entry(k.clone()).or_insert_with(|| next);
                if at == next {
                    s.summaries.push(StratumSummary {
                        key: k,
                        updated: 0,
                        baseline: 0,
                    });
                }
                s.summaries[at].updated += 1;
                s.of_device[u] = Some(at);
            }
            for &b in &baseline {
                if let Some(&at) = index.get(&key(level, meta(b))) {
                    s.summaries[at].baseline += 1;
                    s.of_device[b] = Some(at);
                }
            }
        }
        s
    }
}
