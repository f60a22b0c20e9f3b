//! The stage's points sorted into looks, once per call: for each device and each checked
//! metric, what it contributed in each look's stretch of time. The looks then add these
//! up one after another instead of re-reading every point at every look.

use std::collections::{BTreeMap, BTreeSet};

use super::looks::{HOUR_MS, Looks, ms_between};
use crate::verification::model::{Arm, StageData};
use crate::verification::policy::{CheckKind, PolicySpec};
use crate::verification::signatures::SignatureId;

/// One device's place in the analysis.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    pub(crate) updated: bool,
    pub(crate) stratum: Option<usize>,
    /// The first look in which it reported anything in its window.
    pub(crate) reporting_from: Option<usize>,
}

/// Sums of a gauge's points in one stretch: enough for the mean and the least-squares slope.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct GaugeSums {
    pub(crate) n: usize,
    /// Σt, Σt², Σv, Σt·v with t in hours after the window opened.
    pub(crate) t: f64,
    pub(crate) tt: f64,
    pub(crate) v: f64,
    pub(crate) tv: f64,
}

impl GaugeSums {
    pub(crate) fn add(&mut self, other: &GaugeSums) {
        self.n += other.n;
        self.t += other.t;
        self.tt += other.tt;
        self.v += other.v;
        self.tv += other.tv;
    }

    pub(crate) fn mean(&self) -> f64 {
        self.v / self.n as f64
    }

    /// The least-squares slope per hour, `None` if all points share one instant.
    pub(crate) fn slope(&self) -> Option<f64> {
        let n = self.n as f64;
        let den = n * self.tt - self.t * self.t;
        // Relative to the spread of the times: below this the instants coincide.
        (den > 1e-9 * n * n).then(|| (n * self.tv - self.t * self.v) / den)
    }
}

/// What one check's metric contributed per device per look.
#[derive(Debug, Clone)]
pub(crate) enum Buckets {
    /// (events, device-hours) per look.
    Counter(Vec<Vec<(u64, f64)>>),
    /// Gauge sums per look.
    Gauge(Vec<Vec<GaugeSums>>),
}

/// The stage's data sorted into looks.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) devices: Vec<Device>,
    /// Per check, in policy order.
    pub(crate) checks: Vec<Buckets>,
    /// Per updated device (any, matched or not): per signature, lines per look since its
    /// commit.
    pub(crate) after_commit: Vec<BTreeMap<SignatureId, Vec<u64>>>,
    /// The earliest look by which each signature had been logged by the old release (a
    /// baseline device at any time, or an updated device before its commit).
    pub(crate) old_release_first: BTreeMap<SignatureId, usize>,
    /// Per matched device: per signature, the first look in its window that logged it.
    pub(crate) in_window_first: Vec<BTreeMap<SignatureId, usize>>,
}

impl Series {
    pub(crate) fn new(
        spec: &PolicySpec,
        data: &StageData,
        looks: &Looks,
        strata: &[Option<usize>],
    ) -> Series {
        let warmup_ms = i64::try_from(spec.warmup.as_millis()).unwrap_or(i64::MAX);
        let k = looks.len();
        let mut devices = Vec::with_capacity(data.devices.len());
        let mut checks: Vec<Buckets> = spec
            .checks
            .iter()
            .map(|c| match c.kind {
                CheckKind::Rate { .. } => Buckets::Counter(Vec::new()),
                _ => Buckets::Gauge(Vec::new()),
            })
            .collect();
        let mut after_commit = Vec::new();
        let mut old_release_first: BTreeMap<SignatureId, usize> = BTreeMap::new();
        let mut in_window_first = Vec::new();
        let mut note_old = |id: SignatureId, look: usize| {
            let e = old_release_first.entry(id).or_insert(look);
            *e = (*e).min(look);
        };

        for (i, d) in data.devices.iter().enumerate() {
            let commit = match d.meta.arm {
                Arm::Updated { committed } => Some(ms_between(looks.open, committed)),
                Arm::Baseline => None,
            };
            // The device's window: from the opening, or from its own commit plus the
            // warm-up if it committed late.
            let start = commit.map_or(0, |c| c.saturating_add(warmup_ms).max(0));
            let in_window = |s: i64, e: i64| s >= start && e > s;
            let mut first_report: Option<usize> = None;
            let mut saw = |b: usize| {
                first_report = Some(first_report.map_or(b, |f: usize| f.min(b)));
            };

            for (c, check) in spec.checks.iter().enumerate() {
                match &mut checks[c] {
                    Buckets::Counter(per_device) => {
                        let mut row = vec![(0_u64, 0.0_f64); k];
                        for p in d.counters.get(&check.metric).into_iter().flatten() {
                            let (s, e) = (
                                ms_between(looks.open, p.start),
                                ms_between(looks.open, p.end),
                            );
                            if !in_window(s, e) {
                                continue;
                            }
                            if let Some(b) = looks.bucket(e) {
                                row[b].0 += p.count;
                                row[b].1 += (e - s) as f64 / HOUR_MS;
                                saw(b);
                            }
                        }
                        per_device.push(row);
                    }
                    Buckets::Gauge(per_device) => {
                        let mut row = vec![GaugeSums::default(); k];
                        for p in d.gauges.get(&check.metric).into_iter().flatten() {
                            let t = ms_between(looks.open, p.at);
                            if t < start || !p.value.is_finite() {
                                continue;
                            }
                            if let Some(b) = looks.bucket(t) {
                                let h = t as f64 / HOUR_MS;
                                let g = &mut row[b];
                                g.n += 1;
                                g.t += h;
                                g.tt += h * h;
                                g.v += p.value;
                                g.tv += h * p.value;
                                saw(b);
                            }
                        }
                        per_device.push(row);
                    }
                }
            }

            let mut mine_after: BTreeMap<SignatureId, Vec<u64>> = BTreeMap::new();
            let mut mine_window: BTreeMap<SignatureId, usize> = BTreeMap::new();
            for (id, points) in &d.signatures {
                for p in points.iter().filter(|p| p.count > 0) {
                    let (s, e) = (
                        ms_between(looks.open, p.start),
                        ms_between(looks.open, p.end),
                    );
                    let Some(b) = looks.bucket(e) else { continue };
                    match commit {
                        Some(c) if s >= c => {
                            mine_after.entry(*id).or_insert_with(|| vec![0; k])[b] += p.count;
                        }
                        Some(c) if e <= c => note_old(*id, b),
                        Some(_) => {}
                        None => note_old(*id, b),
                    }
                    if in_window(s, e) {
                        let f = mine_window.entry(*id).or_insert(b);
                        *f = (*f).min(b);
                        saw(b);
                    }
                }
            }
            if commit.is_some() {
                after_commit.push(mine_after);
            }
            in_window_first.push(if strata[i].is_some() {
                mine_window
            } else {
                BTreeMap::new()
            });
            devices.push(Device {
                updated: commit.is_some(),
                stratum: strata[i],
                reporting_from: first_report,
            });
        }
        Series {
            devices,
            checks,
            after_commit,
            old_release_first,
            in_window_first,
        }
    }

    /// Signatures the old release had logged by look `j`.
    pub(crate) fn old_release_by(&self, j: usize) -> BTreeSet<SignatureId> {
        self.old_release_first
            .iter()
            .filter(|&(_, &f)| f <= j)
            .map(|(id, _)| *id)
            .collect()
    }
}
