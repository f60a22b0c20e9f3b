//! Continuous verification of a rollout stage: its updated devices' health signals against a
//! baseline of devices of the same hardware that do not run the release, over the stage's
//! soak, by [`crate::verification::analyze`]. This module only gathers the data (from the
//! registry's recent signal batches) and summarises the report; the engine turns the verdict
//! into the gate's decision.
//!
//! Batches are placed on the controller's clock: each covers the time from the device's
//! previous batch's receipt to its own (the first, its own measured length before its
//! receipt). Device clocks may be wrong, and under a simulated clock they run at another pace;
//! the updated devices and the baseline are measured the same way either way.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};
use swell_proto::messages::Signals;
use swell_proto::signals::template;
use swell_proto::{DeviceId, Timestamp};

use super::engine::{Run, fleet_device, jiff, running};
use super::record::DeviceState;
use crate::service::fleet::Device;
use crate::verification::{
    Arm, CounterPoint, DeviceMeta, DeviceSeries, GaugePoint, Signature, StageData, StageReport,
    Verdict, analyze,
};

/// The counters of a batch, by the names the policy's checks use.
fn counters(b: &Signals) -> [(&'static str, u64); 4] {
    [
        ("crashes", b.counters.crashes),
        ("restarts", b.counters.restarts),
        ("reboots", b.counters.reboots),
        ("health_check_failures", b.counters.health_check_failures),
    ]
}

/// Adds `history` (receipt time, batch) to `series`, keeping only the batches `keep` accepts
/// (measured on the release, or not).
fn add_batches(
    series: &mut DeviceSeries,
    history: &[(Timestamp, Signals)],
    keep: impl Fn(&Signals) -> bool,
    known: &mut BTreeSet<crate::verification::SignatureId>,
    catalog: &mut BTreeMap<crate::verification::SignatureId, Signature>,
) {
    let mut previous: Option<Timestamp> = None;
    for (at, b) in history {
        let length = (b.end.unix() - b.start.unix()).max(0);
        let start = previous.filter(|p| p < at).unwrap_or(at.plus_secs(-length));
        previous = Some(*at);
        if !keep(b) {
            for s in &b.signatures {
                known.insert(s.id);
            }
            continue;
        }
        let (start, end) = (jiff(start), jiff(*at));
        for (name, count) in counters(b) {
            series
                .counters
                .entry(name.to_owned())
                .or_default()
                .push(CounterPoint { start, end, count });
        }
        let mut gauge = |name: &str, value: f64| {
            series
                .gauges
                .entry(name.to_owned())
                .or_default()
                .push(GaugePoint { at: end, value });
        };
        // Whole units on the wire; the analysis reads floats.
        #[allow(clippy::cast_precision_loss)]
        {
            if let Some(m) = b.gauges.memory_kib {
                gauge("memory_kib", m as f64);
            }
            if let Some(c) = b.gauges.cpu_permille {
                gauge("cpu_percent", c as f64 / 10.0);
            }
            if let Some(t) = b.gauges.boot_time_s {
                gauge("boot_time_s", t as f64);
            }
            for (name, v) in &b.metrics {
                gauge(name, *v as f64);
            }
        }
        for s in &b.signatures {
            series
                .signatures
                .entry(s.id)
                .or_default()
                .push(CounterPoint {
                    start,
                    end,
                    count: s.count,
                });
            catalog.entry(s.id).or_insert_with(|| Signature {
                id: s.id,
                template: template(&s.example),
                example: s.example.clone(),
            });
        }
    }
}

/// The analysis of stage `stage` of `run` as of `now`, if the stage asks for verification and
/// has updated devices.
pub fn stage_report(
    run: &Run,
    stage: usize,
    fleet: &HashMap<DeviceId, Device>,
    history: &dyn Fn(&DeviceId) -> Vec<(Timestamp, Signals)>,
    now: Timestamp,
) -> Option<StageReport> {
    let (_, spec) = run.plan.stages().nth(stage)?;
    let policy = spec.verification?.policy(spec.success.soak).ok()?;
    let updated: Vec<(&DeviceId, Timestamp)> = run
        .devices
        .values()
        .filter(|d| {
            d.stage == stage && matches!(d.state, DeviceState::Soaking | DeviceState::Succeeded)
        })
        .filter_map(|d| Some((&d.id, d.committed_at?)))
        .collect();
    let soak_start = updated.iter().map(|(_, t)| *t).min()?;
    let release = &run.rec.release;
    let mut data = StageData::default();
    let mut hardware = BTreeSet::new();
    for (id, committed) in &updated {
        let Some(dev) = fleet.get(*id) else { continue };
        let Some(f) = fleet_device(dev) else { continue };
        hardware.insert(f.hardware.clone());
        let mut series = DeviceSeries::new(DeviceMeta {
            id: f.id,
            hardware: f.hardware,
            zone: f.zone,
            cohort: f.cohort,
            arm: Arm::Updated {
                committed: jiff(*committed),
            },
        });
        let on_release = |b: &Signals| {
            b.running.release.as_ref() == Some(&release.name)
                && b.running.version.as_ref() == Some(&release.version)
        };
        add_batches(
            &mut series,
            &history(id),
            on_release,
            &mut data.known_signatures,
            &mut data.catalog,
        );
        data.devices.push(series);
    }
    for (id, dev) in fleet {
        // The baseline: same hardware, not running the release, and not taken by this
        // rollout (or not yet started by it).
        let taken = run
            .devices
            .get(id)
            .is_some_and(|d| !matches!(d.state, DeviceState::Pending | DeviceState::NotStarted));
        if taken || running(dev).as_ref() == Some(release) {
            continue;
        }
        let Some(f) = fleet_device(dev) else { continue };
        if !hardware.contains(&f.hardware) {
            continue;
        }
        let mut series = DeviceSeries::new(DeviceMeta {
            id: f.id,
            hardware: f.hardware,
            zone: f.zone,
            cohort: f.cohort,
            arm: Arm::Baseline,
        });
        let mut known = BTreeSet::new();
        add_batches(
            &mut series,
            &history(id),
            |_| true,
            &mut known,
            &mut data.catalog,
        );
        // Whatever the baseline logs is not new to the release.
        data.known_signatures
            .extend(series.signatures.keys().copied());
        data.devices.push(series);
    }
    Some(analyze(&policy, &data, jiff(soak_start), jiff(now)))
}

/// The report as `rollout show` shows it under a stage's `verification`.
pub fn summary(report: &StageReport) -> Value {
    let reasons: Vec<String> = match &report.verdict {
        Some(Verdict::Fail(reasons)) => reasons.iter().map(ToString::to_string).collect(),
        Some(Verdict::Inconclusive(shortfalls)) => {
            shortfalls.iter().map(ToString::to_string).collect()
        }
        _ => Vec::new(),
    };
    json!({
        "verdict": report.verdict.as_ref().map(Verdict::name),
        "look": report.look,
        "looks": report.looks,
        "reporting": [report.reporting.0, report.reporting.1],
        "matched": [report.matched.0, report.matched.1],
        "reasons": reasons,
    })
}
