//! Simulated fleets with known truth. One call of [`simulate`] makes one stage: updated and
//! baseline devices with health series as agents would report them, from a seed.
//!
//! The fleet is built to be awkward in the ways real fleets are:
//!
//! - **devices differ**: each has its own crash, reboot, health-check-failure and error rates
//!   (gamma-distributed around the hardware's mean), and 2 % are flaky at ten times the rate;
//!   memory differs by hardware and by device, CPU more so;
//! - **days have a shape**: memory and CPU follow the local time of day, differently per
//!   zone and slightly per device;
//! - **updates reboot**: an updated device's memory starts low and warms up over minutes,
//!   then settles upward over hours, while the baseline has been up for days;
//! - **devices go quiet**: some never report, some stop mid-soak, batches get lost;
//! - **logs are noisy**: hundreds of known templates with a long tail, one-off lines never
//!   seen before on any release, and now and then a site incident that makes a third of a
//!   zone's devices (on both releases) log the same never-seen line.
//!
//! A [`Fault`] is what a bad release adds on its updated devices.

use std::collections::{BTreeMap, BTreeSet};
use std::f64::consts::PI;

use jiff::{SignedDuration, Timestamp};
use swell_proto::{DeviceId, HardwareId};

use super::rng::Rng;
use crate::planner::Zone;
use crate::verification::model::{
    Arm, CounterPoint, DeviceMeta, DeviceSeries, GaugePoint, StageData,
};
use crate::verification::signatures::{Signature, SignatureId};

/// One hardware model of the simulated fleet.
#[derive(Debug, Clone)]
pub struct HardwareModel {
    /// Its id.
    pub id: &'static str,
    /// Its share of the fleet.
    pub share: f64,
    /// Typical memory in use, KiB.
    pub memory_kib: f64,
    /// Typical CPU, percent.
    pub cpu_percent: f64,
    /// Mean crashes (restarts of watched services) per device-hour.
    pub crashes_per_hour: f64,
}

/// The simulated fleet's parameters. [`FleetModel::default`] is the fleet of
/// docs/verification.md.
#[derive(Debug, Clone)]
pub struct FleetModel {
    /// Hardware models.
    pub hardware: Vec<HardwareModel>,
    /// Zones, each with the UTC offset (hours) its daily pattern follows.
    pub zones: Vec<(&'static str, f64)>,
    /// Gamma shape of device-to-device variation in event rates (CV = 1/√shape).
    pub rate_shape: f64,
    /// Share of flaky devices and their rate multiplier.
    pub flaky: (f64, f64),
    /// Mean unexpected reboots per device-hour.
    pub reboots_per_hour: f64,
    /// Mean failed health checks per device-hour.
    pub health_failures_per_hour: f64,
    /// Log-normal σ of a device's memory level around its hardware's.
    pub memory_device_sd: f64,
    /// Amplitude of the daily memory cycle (fraction of level).
    pub memory_daily: f64,
    /// Per-sample memory noise (fraction).
    pub memory_noise: f64,
    /// Log-normal σ of a device's CPU level.
    pub cpu_device_sd: f64,
    /// Amplitude of the daily CPU cycle.
    pub cpu_daily: f64,
    /// Per-sample CPU noise.
    pub cpu_noise: f64,
    /// After a reboot memory starts this fraction low and recovers with this time constant
    /// (minutes).
    pub warm_up: (f64, f64),
    /// After a reboot memory also settles upward by this fraction with this time constant
    /// (hours); long-running devices have settled.
    pub settle: (f64, f64),
    /// Mean error lines per device-hour (gamma across devices, shape 1).
    pub errors_per_hour: f64,
    /// Known error templates and the Zipf exponent of their popularity.
    pub templates: (usize, f64),
    /// Device-hours of history before the stage: which templates the old release is known
    /// to log.
    pub history_device_hours: f64,
    /// Never-seen one-off lines per device-hour.
    pub one_offs_per_hour: f64,
    /// Chance per stage of a site incident, and the share of the zone's devices it hits.
    pub incident: (f64, f64),
    /// Share of devices that never report, that stop mid-soak, and of lost batches.
    pub silent: (f64, f64, f64),
    /// Minutes between an agent's batches.
    pub sample_minutes: i64,
    /// Minutes over which the stage's updated devices commit.
    pub commit_spread_minutes: f64,
}

impl Default for FleetModel {
    fn default() -> FleetModel {
        FleetModel {
            hardware: vec![
                HardwareModel {
                    id: "gw-a",
                    share: 0.6,
                    memory_kib: 180.0 * 1024.0,
                    cpu_percent: 12.0,
                    crashes_per_hour: 0.2,
                },
                HardwareModel {
                    id: "gw-b",
                    share: 0.4,
                    memory_kib: 420.0 * 1024.0,
                    cpu_percent: 25.0,
                    crashes_per_hour: 0.3,
                },
            ],
            zones: vec![
                ("Europe/Berlin", 1.0),
                ("America/New_York", -5.0),
                ("Asia/Tokyo", 9.0),
            ],
            rate_shape: 2.0,
            flaky: (0.02, 10.0),
            reboots_per_hour: 0.01,
            health_failures_per_hour: 0.03,
            memory_device_sd: 0.08,
            memory_daily: 0.03,
            memory_noise: 0.01,
            cpu_device_sd: 0.25,
            cpu_daily: 0.3,
            cpu_noise: 0.1,
            warm_up: (0.15, 4.0),
            settle: (0.01, 4.0),
            errors_per_hour: 1.0,
            templates: (300, 1.2),
            history_device_hours: 7.0 * 24.0 * 300.0,
            one_offs_per_hour: 0.003,
            incident: (0.1, 0.3),
            silent: (0.04, 0.04, 0.02),
            sample_minutes: 10,
            commit_spread_minutes: 15.0,
        }
    }
}

/// What a bad release does on the devices that run it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Nothing: a good release.
    None,
    /// Crash rate multiplied by this factor.
    CrashRate(f64),
    /// Memory level multiplied by this factor.
    MemoryLevel(f64),
    /// A new exception on this share of updated devices, each logging it at this rate per
    /// hour.
    NewException {
        /// Share of updated devices affected.
        share: f64,
        /// Lines per hour on an affected device.
        per_hour: f64,
    },
    /// Memory grows by this fraction of its level per hour after the update.
    Leak(f64),
}

/// The example line of the simulated new exception.
pub const NEW_EXCEPTION_LINE: &str =
    "panic: index out of range [7] with length 7 in gateway::uplink::drain_queue";

/// One simulated stage.
#[derive(Debug, Clone)]
pub struct SimulatedStage {
    /// The data the analysis reads.
    pub data: StageData,
    /// When the soak started (the last updated device committed).
    pub soak_start: Timestamp,
    /// Each updated device's commit.
    pub commits: Vec<Timestamp>,
    /// The id of the fault's new exception.
    pub new_exception: SignatureId,
}

/// The shape of the stage to simulate.
#[derive(Debug, Clone, Copy)]
pub struct StageShape {
    /// Updated devices (the canary).
    pub updated: usize,
    /// Baseline candidates.
    pub baseline: usize,
    /// How long to simulate after the soak start.
    pub soak: SignedDuration,
}

/// The template catalog: the known templates' signatures and their cumulative popularity.
#[derive(Debug, Clone)]
pub struct Catalog {
    signatures: Vec<Signature>,
    cumulative: Vec<f64>,
    popularity: Vec<f64>,
    new_exception: Signature,
}

impl Catalog {
    /// The catalog of `model`: lines that look like a gateway's logs, templated for real.
    pub fn new(model: &FleetModel) -> Catalog {
        let (n, s) = model.templates;
        let verbs = [
            "read",
            "write",
            "connect to",
            "resolve",
            "open",
            "flush",
            "sync",
        ];
        let things = [
            "uplink",
            "modbus bus",
            "sensor",
            "cache",
            "journal",
            "mqtt session",
        ];
        let why = [
            "timed out",
            "was refused",
            "returned EIO",
            "hit a checksum mismatch",
        ];
        // Each template gets its own subsystem name, spelt in letters (digits would be
        // masked), so the n templates really are n signatures.
        let signatures: Vec<Signature> = (0..n)
            .map(|j| {
                Signature::of_line(&format!(
                    "{}: worker-{} could not {} {}: {} after {} ms",
                    letters(j),
                    j % 7,
                    verbs[j % verbs.len()],
                    things[(j / 7) % things.len()],
                    why[(j / 3) % why.len()],
                    100 + j
                ))
            })
            .collect();
        let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
        let total: f64 = weights.iter().sum();
        let popularity: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let mut acc = 0.0;
        let cumulative = popularity
            .iter()
            .map(|p| {
                acc += p;
                acc
            })
            .collect();
        Catalog {
            signatures,
            cumulative,
            popularity,
            new_exception: Signature::of_line(NEW_EXCEPTION_LINE),
        }
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        let u = rng.uniform();
        self.cumulative
            .partition_point(|&c| c < u)
            .min(self.signatures.len() - 1)
    }
}

/// Per-device parameters.
struct Device {
    meta: DeviceMeta,
    zone_offset: f64,
    commit: Option<Timestamp>,
    crash_rate: f64,
    reboot_rate: f64,
    health_rate: f64,
    memory: f64,
    memory_daily: f64,
    phase_hours: f64,
    cpu: f64,
    error_rate: f64,
    silent_from: Option<Timestamp>,
    affected: bool,
}

/// `j` written in lowercase letters, `svc-a`, `svc-b`, … `svc-ba`.
fn letters(mut j: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + u8::try_from(j % 26).unwrap_or(0));
        j /= 26;
        if j == 0 {
            break;
        }
    }
    s.reverse();
    format!("svc-{}", String::from_utf8_lossy(&s))
}

/// Words for never-seen one-off lines: four of 24 give 331 776 messages, so two devices of
/// one stage almost never print the same one.
const WORDS: [&str; 24] = [
    "unexpected",
    "stale",
    "orphaned",
    "spurious",
    "truncated",
    "duplicate",
    "late",
    "malformed",
    "inode",
    "lease",
    "frame",
    "token",
    "watchdog",
    "ring",
    "cursor",
    "page",
    "reset",
    "stall",
    "skew",
    "overflow",
    "drift",
    "storm",
    "glitch",
    "wedge",
];

fn minutes(m: f64) -> SignedDuration {
    SignedDuration::try_from_secs_f64((m * 60.0).round()).unwrap_or(SignedDuration::ZERO)
}

fn hours(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64() / 3600.0
}

/// Simulates one stage of `shape` with `fault` on the updated devices, from `seed`. A model
/// without hardware, zones or templates gives a stage without devices.
pub fn simulate(
    model: &FleetModel,
    catalog: &Catalog,
    shape: StageShape,
    fault: Fault,
    seed: u64,
) -> SimulatedStage {
    let mut rng = Rng::new(seed);
    if model.hardware.is_empty() || model.zones.is_empty() || catalog.signatures.is_empty() {
        return SimulatedStage {
            data: StageData::default(),
            soak_start: Timestamp::UNIX_EPOCH,
            commits: Vec::new(),
            new_exception: catalog.new_exception.id,
        };
    }
    // Stages start at any time of day in a week of March 2027.
    let base = Timestamp::from_second(1_803_859_200).unwrap_or(Timestamp::UNIX_EPOCH);
    let t0 = base
        .checked_add(minutes(rng.between(0.0, 7.0 * 24.0 * 60.0).floor()))
        .unwrap_or(base);
    let data_start = t0.checked_sub(SignedDuration::from_hours(1)).unwrap_or(t0);

    let hardware_cum: Vec<f64> = {
        let mut acc = 0.0;
        model
            .hardware
            .iter()
            .map(|h| {
                acc += h.share;
                acc
            })
            .collect()
    };
    let zones: Vec<Zone> = model
        .zones
        .iter()
        .filter_map(|(name, _)| Zone::new(name).ok())
        .collect();
    let mut devices = Vec::with_capacity(shape.updated + shape.baseline);
    let mut commits = Vec::new();
    for i in 0..shape.updated + shape.baseline {
        let updated = i < shape.updated;
        let u = rng.uniform() * hardware_cum.last().copied().unwrap_or(1.0);
        let h = hardware_cum
            .partition_point(|&c| c < u)
            .min(model.hardware.len() - 1);
        let hw = &model.hardware[h];
        let z = rng.below(zones.len());
        let commit = updated.then(|| {
            t0.checked_add(minutes(rng.between(0.0, model.commit_spread_minutes)))
                .unwrap_or(t0)
        });
        if let Some(c) = commit {
            commits.push(c);
        }
        let flaky = if rng.chance(model.flaky.0) {
            model.flaky.1
        } else {
            1.0
        };
        let silent_from = if rng.chance(model.silent.0) {
            Some(data_start)
        } else if rng.chance(model.silent.1) {
            let span = 60.0 * (1.0 + shape.soak.as_secs_f64() / 3600.0);
            Some(
                data_start
                    .checked_add(minutes(rng.between(0.0, span)))
                    .unwrap_or(t0),
            )
        } else {
            None
        };
        let (prefix, cohort) = if updated {
            ("canary", Some("canary".to_owned()))
        } else {
            ("fleet", None)
        };
        // Ids from these fixed ASCII patterns and the model's hardware names always pass
        // the name rule.
        #[allow(clippy::expect_used)]
        let id = DeviceId::new(&format!("{prefix}-{i:04}")).expect("a valid device id");
        #[allow(clippy::expect_used)]
        let hardware = HardwareId::new(hw.id).expect("a valid hardware id");
        devices.push(Device {
            meta: DeviceMeta {
                id,
                hardware,
                zone: zones[z].clone(),
                cohort,
                arm: match commit {
                    Some(committed) => Arm::Updated { committed },
                    None => Arm::Baseline,
                },
            },
            zone_offset: model.zones[z].1,
            commit,
            crash_rate: hw.crashes_per_hour * flaky * rng.gamma_mean_one(model.rate_shape),
            reboot_rate: model.reboots_per_hour * rng.gamma_mean_one(model.rate_shape),
            health_rate: model.health_failures_per_hour * rng.gamma_mean_one(model.rate_shape),
            memory: hw.memory_kib * (model.memory_device_sd * rng.normal()).exp(),
            memory_daily: model.memory_daily * rng.between(0.5, 1.5),
            phase_hours: rng.normal(),
            cpu: hw.cpu_percent * (model.cpu_device_sd * rng.normal()).exp(),
            error_rate: model.errors_per_hour * rng.gamma_mean_one(1.0),
            silent_from,
            affected: match fault {
                Fault::NewException { share, .. } => updated && rng.chance(share),
                _ => false,
            },
        });
    }
    let soak_start = commits.iter().copied().max().unwrap_or(t0);
    let end = soak_start.checked_add(shape.soak).unwrap_or(soak_start);

    // Which templates the old release is known to log: those that history would have shown.
    let mean_errors = model.errors_per_hour * model.history_device_hours;
    let known: BTreeSet<SignatureId> = catalog
        .signatures
        .iter()
        .zip(&catalog.popularity)
        .filter(|(_, p)| rng.chance(1.0 - (-mean_errors * **p).exp()))
        .map(|(s, _)| s.id)
        .collect();

    // A site incident: one zone, one hour, a third of its devices, both releases.
    let incident = rng.chance(model.incident.0).then(|| {
        let zone = zones[rng.below(zones.len())].clone();
        let from = t0
            .checked_add(minutes(rng.between(0.0, shape.soak.as_secs_f64() / 60.0)))
            .unwrap_or(t0);
        let line = format!("dns: upstream {} unreachable for uplink", rng.below(1000));
        (zone, from, Signature::of_line(&line))
    });

    let mut data = StageData {
        devices: Vec::with_capacity(devices.len()),
        catalog: BTreeMap::new(),
        known_signatures: known,
    };
    let step = SignedDuration::from_mins(model.sample_minutes);
    for d in &devices {
        let mut series = DeviceSeries::new(d.meta.clone());
        let hit_by_incident = incident
            .as_ref()
            .is_some_and(|(zone, _, _)| *zone == d.meta.zone && rng.chance(model.incident.1));
        // Agents are not synchronised: each sends its batches at its own offset. An updated
        // device's batch that spans its commit is cut there, so no batch mixes releases.
        let mut t = data_start
            .checked_add(minutes(rng.between(0.0, model.sample_minutes as f64)))
            .unwrap_or(data_start);
        let mut prev = data_start;
        let mut crashes = Vec::new();
        let mut reboots = Vec::new();
        let mut health = Vec::new();
        let mut memory = Vec::new();
        let mut cpu = Vec::new();
        let mut sigs: BTreeMap<SignatureId, Vec<CounterPoint>> = BTreeMap::new();
        let mut crossed_commit = false;
        while t <= end {
            let (start, stop) = match d.commit {
                Some(c) if !crossed_commit && t > c => {
                    crossed_commit = true;
                    (prev, c)
                }
                _ => (prev, t),
            };
            let next = if stop < t { stop } else { t };
            let dt = hours(start, stop);
            let after = d.commit.is_some_and(|c| start >= c);
            let quiet = d.silent_from.is_some_and(|s| stop >= s) || rng.chance(model.silent.2);
            if dt > 0.0 && !quiet {
                let point = |count| CounterPoint {
                    start,
                    end: stop,
                    count,
                };
                let crash_factor = match fault {
                    Fault::CrashRate(f) if after => f,
                    _ => 1.0,
                };
                crashes.push(point(rng.poisson(d.crash_rate * crash_factor * dt)));
                reboots.push(point(rng.poisson(d.reboot_rate * dt)));
                health.push(point(rng.poisson(d.health_rate * dt)));

                let local = stop.as_second() as f64 / 3600.0 + d.zone_offset - d.phase_hours;
                let daily = (2.0 * PI * (local - 8.0) / 24.0).sin();
                let since = d.commit.map(|c| hours(c, stop)).filter(|&h| h >= 0.0);
                let (warm, settle) = match since {
                    Some(h) => (
                        1.0 - model.warm_up.0 * (-h * 60.0 / model.warm_up.1).exp(),
                        1.0 + model.settle.0 * (1.0 - (-h / model.settle.1).exp()),
                    ),
                    None => (1.0, 1.0 + model.settle.0),
                };
                let fault_memory = match (fault, since) {
                    (Fault::MemoryLevel(f), Some(_)) => f,
                    (Fault::Leak(per_hour), Some(h)) => 1.0 + per_hour * h,
                    _ => 1.0,
                };
                let mem = d.memory
                    * (1.0 + d.memory_daily * daily)
                    * (1.0 + model.memory_noise * rng.normal())
                    * warm
                    * settle
                    * fault_memory;
                memory.push(GaugePoint {
                    at: stop,
                    value: mem.round(),
                });
                let load = d.cpu
                    * (1.0 + model.cpu_daily * daily)
                    * (1.0 + model.cpu_noise * rng.normal());
                cpu.push(GaugePoint {
                    at: stop,
                    value: (load * 10.0).round().max(1.0) / 10.0,
                });

                let mut lines: BTreeMap<SignatureId, u64> = BTreeMap::new();
                for _ in 0..rng.poisson(d.error_rate * dt) {
                    let s = &catalog.signatures[catalog.pick(&mut rng)];
                    *lines.entry(s.id).or_default() += 1;
                    data.catalog.entry(s.id).or_insert_with(|| s.clone());
                }
                for _ in 0..rng.poisson(model.one_offs_per_hour * dt) {
                    let mut word = || WORDS[rng.below(WORDS.len())];
                    let line = format!(
                        "kernel: {} {} {} {} at {}",
                        word(),
                        word(),
                        word(),
                        word(),
                        rng.below(1 << 20)
                    );
                    let s = Signature::of_line(&line);
                    *lines.entry(s.id).or_default() += 1;
                    data.catalog.entry(s.id).or_insert(s);
                }
                if let Some((_, from, s)) = &incident
                    && hit_by_incident
                {
                    let until = from
                        .checked_add(SignedDuration::from_hours(1))
                        .unwrap_or(*from);
                    if stop > *from && start < until {
                        let n = rng.poisson(5.0 * dt);
                        if n > 0 {
                            *lines.entry(s.id).or_default() += n;
                            data.catalog.entry(s.id).or_insert_with(|| s.clone());
                        }
                    }
                }
                if let Fault::NewException { per_hour, .. } = fault
                    && d.affected
                    && after
                {
                    let n = rng.poisson(per_hour * dt);
                    if n > 0 {
                        let s = &catalog.new_exception;
                        *lines.entry(s.id).or_default() += n;
                        data.catalog.entry(s.id).or_insert_with(|| s.clone());
                    }
                }
                for (id, count) in lines {
                    sigs.entry(id).or_default().push(CounterPoint {
                        start,
                        end: stop,
                        count,
                    });
                }
            }
            prev = next;
            if next == t {
                t = t.checked_add(step).unwrap_or(Timestamp::MAX);
            }
        }
        series.counters.insert("crashes".into(), crashes);
        series.counters.insert("reboots".into(), reboots);
        series
            .counters
            .insert("health_check_failures".into(), health);
        series.gauges.insert("memory_kib".into(), memory);
        series.gauges.insert("cpu_percent".into(), cpu);
        series.signatures = sigs;
        data.devices.push(series);
    }
    SimulatedStage {
        data,
        soak_start,
        commits,
        new_exception: catalog.new_exception.id,
    }
}
