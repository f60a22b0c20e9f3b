//! Hand-built stages for the verification tests: every value is written down, nothing is
//! random, so each test's scenario is exactly what its doc comment says.
#![allow(dead_code, unreachable_pub)]

use jiff::{SignedDuration, Timestamp};
use swell_controller::planner::Zone;
use swell_controller::verification::{
    Arm, CounterPoint, DeviceMeta, DeviceSeries, GaugePoint, Signature, StageData,
};
use swell_proto::{DeviceId, HardwareId};

/// The soak start of every hand-built stage.
pub fn soak_start() -> Timestamp {
    "2027-03-01T08:00:00Z".parse().unwrap()
}

/// `soak_start() + minutes`.
pub fn at(minutes: i64) -> Timestamp {
    soak_start()
        .checked_add(SignedDuration::from_mins(minutes))
        .unwrap()
}

/// Updated devices commit 10 minutes before the soak starts.
pub fn updated() -> Arm {
    Arm::Updated { committed: at(-10) }
}

/// The soak of `Policy::recommended()`, minutes.
pub const SOAK: i64 = 480;

/// A device that reports every 10 minutes from an hour before the soak to its end (8 h):
/// no crashes, reboots or failed health checks; memory `memory` KiB plus a wobble of
/// ±0.5 % that is the same on every device at the same instant; CPU 10 %.
pub fn device(id: &str, hardware: &str, zone: &str, arm: Arm, memory: f64) -> DeviceSeries {
    let mut d = DeviceSeries::new(DeviceMeta {
        id: DeviceId::new(id).unwrap(),
        hardware: HardwareId::new(hardware).unwrap(),
        zone: Zone::new(zone).unwrap(),
        cohort: None,
        arm,
    });
    let mut counters = Vec::new();
    let mut memory_points = Vec::new();
    let mut cpu = Vec::new();
    for k in -5..=SOAK / 10 {
        let (start, end) = (at(10 * (k - 1)), at(10 * k));
        counters.push(CounterPoint {
            start,
            end,
            count: 0,
        });
        let wobble = 1.0 + 0.005 * ((k % 4) as f64 - 1.5) / 1.5;
        memory_points.push(GaugePoint {
            at: end,
            value: memory * wobble,
        });
        cpu.push(GaugePoint {
            at: end,
            value: 10.0,
        });
    }
    for name in ["crashes", "reboots", "health_check_failures"] {
        d.counters.insert(name.into(), counters.clone());
    }
    d.gauges.insert("memory_kib".into(), memory_points);
    d.gauges.insert("cpu_percent".into(), cpu);
    d
}

/// `updated` updated and `baseline` baseline devices of one hardware model in one zone,
/// memory 100 000 KiB + 1 000 per device number (so devices differ), the updated ones
/// multiplied by `memory_factor`.
pub fn stage(updated_n: usize, baseline_n: usize, memory_factor: f64) -> StageData {
    let mut data = StageData::default();
    for i in 0..updated_n {
        let memory = (100_000.0 + 1_000.0 * i as f64) * memory_factor;
        data.devices.push(device(
            &format!("new-{i:03}"),
            "gw-a",
            "Europe/Berlin",
            updated(),
            memory,
        ));
    }
    for i in 0..baseline_n {
        let memory = 100_000.0 + 1_000.0 * (i % updated_n.max(1)) as f64 + 7.0 * i as f64;
        data.devices.push(device(
            &format!("old-{i:03}"),
            "gw-a",
            "Europe/Berlin",
            Arm::Baseline,
            memory,
        ));
    }
    data
}

/// Makes device `index` of `data` log `line` once in each 10-minute batch ending from
/// `from_minute` to `to_minute`, and records the signature in the catalog.
pub fn log(data: &mut StageData, index: usize, line: &str, from_minute: i64, to_minute: i64) {
    let sig = Signature::of_line(line);
    let points = data.devices[index].signatures.entry(sig.id).or_default();
    for m in (from_minute..=to_minute).step_by(10) {
        points.push(CounterPoint {
            start: at(m - 10),
            end: at(m),
            count: 1,
        });
    }
    data.catalog.entry(sig.id).or_insert(sig);
}
