//! Helpers shared by the planner tests: fleets written as text tables, plans from the data
//! directory, and a checker of every limit a schedule must respect.

// Each test file uses a different subset, and `pub` here only means "visible to the tests".
#![allow(dead_code, unreachable_pub)]
// Test helpers panic on the unexpected, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::Timestamp;
use swell_controller::planner::plan::Plan;
use swell_controller::planner::schedule::{PlannedStart, Schedule};
use swell_controller::planner::{FleetDevice, FleetSnapshot, Zone};
use swell_proto::{DeviceId, HardwareId, SemVer};

/// `controller/tests/data/plans/NAME`.
pub fn plan_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/plans")
        .join(name)
}

/// Loads and validates a plan from the data directory.
pub fn load_plan(name: &str) -> Plan {
    let path = plan_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Plan::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A device in `zone` with `key=value` tags (`cohort=...` sets the cohort), on gw-x86
/// running 1.4.2.
pub fn device(id: &str, zone: &str, labels: &[&str]) -> FleetDevice {
    let mut cohort = None;
    let mut tags = BTreeMap::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .unwrap_or_else(|| panic!("{l}: not key=value"));
        if k == "cohort" {
            cohort = Some(v.to_owned());
        } else {
            tags.insert(k.to_owned(), v.to_owned());
        }
    }
    FleetDevice {
        id: DeviceId::new(id).unwrap(),
        hardware: HardwareId::new("gw-x86").unwrap(),
        zone: Zone::new(zone).unwrap(),
        cohort,
        tags,
        version: Some(SemVer::new("1.4.2").unwrap()),
    }
}

/// A fleet from a table, one device a line: `id zone [key=value ...]`; `#` starts a comment.
/// `id*N` makes N devices `id-01` .. `id-N` with the same zone and labels.
pub fn fleet_devices(table: &str) -> Vec<FleetDevice> {
    let mut out = Vec::new();
    for line in table.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let id = words.next().unwrap();
        let zone = words.next().unwrap_or_else(|| panic!("{line}: no zone"));
        let labels: Vec<&str> = words.collect();
        match id.split_once('*') {
            None => out.push(device(id, zone, &labels)),
            Some((prefix, n)) => {
                let n: usize = n.parse().unwrap();
                for i in 1..=n {
                    out.push(device(&format!("{prefix}-{i:02}"), zone, &labels));
                }
            }
        }
    }
    out
}

/// [`fleet_devices`] as a snapshot.
pub fn fleet(table: &str) -> FleetSnapshot {
    FleetSnapshot::new(fleet_devices(table)).unwrap()
}

/// An instant.
pub fn at(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A plan: `window`, `limits` and `extra` top-level TOML, then the pipeline. Every stage
/// defaults to a 30-minute timeout, 100% committed after 10 minutes, no failure tolerated.
pub fn plan(head: &str, steps: &str) -> Plan {
    let text = format!(
        "{head}\n[defaults]\ndevice_timeout = \"30m\"\n\
         success = {{ committed = \"100%\", soak = \"10m\" }}\n\
         failure = {{ tolerate = 0, action = \"pause\" }}\n{steps}"
    );
    Plan::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Checks every rule a schedule must keep, whatever the plan: each start inside its device's
/// local window (and that window one the plan's window really produces for that zone and
/// date), every device of every stage started once, no start before its step may begin or
/// its zone opens, at most the per-minute cap of starts in each UTC minute, and the static
/// in-flight and disruption-budget bounds.
pub fn check(plan: &Plan, fleet: &FleetSnapshot, schedule: &Schedule) {
    let starts = schedule.starts();
    let limits = plan.limits();
    let mut seen = std::collections::BTreeSet::new();
    for s in &starts {
        let d = fleet
            .get(&s.start.device)
            .expect("scheduled device in the fleet");
        assert!(seen.insert(d.id.clone()), "{} started twice", d.id);
        assert_eq!(
            &d.zone, &s.zone.zone,
            "{} grouped under the wrong zone",
            d.id
        );
        assert!(
            s.window.contains(s.start.at),
            "{} starts at {} outside its window {} .. {}",
            d.id,
            s.start.at,
            s.window.start,
            s.window.end
        );
        let again = plan
            .window()
            .on(d.zone.tz(), s.window.local_date)
            .expect("the window opens on that date");
        assert_eq!(&again, s.window, "window of {} is not the plan's", d.id);
        assert!(s.start.at >= schedule.steps[s.step].not_before);
        assert!(s.start.at >= s.zone.opens);
    }
    let assigned: usize = schedule.assignment.stages.iter().map(Vec::len).sum();
    assert_eq!(seen.len(), assigned, "every assigned device starts once");

    // Per UTC minute: never above the plan's maximum (the ramp only lowers it).
    let mut per_minute: BTreeMap<i64, u32> = BTreeMap::new();
    for s in &starts {
        *per_minute
            .entry(s.start.at.as_millisecond().div_euclid(60_000))
            .or_default() += 1;
    }
    for (m, n) in &per_minute {
        assert!(
            *n <= limits.max_starts_per_minute,
            "{n} starts in minute {m} > {}",
            limits.max_starts_per_minute
        );
    }

    // In flight, statically: [at, in_flight_until).
    let overlap = |group: &[&PlannedStart<'_>]| -> u32 {
        let mut events: Vec<(Timestamp, i32)> = group
            .iter()
            .flat_map(|s| [(s.start.at, 1), (s.start.in_flight_until, -1)])
            .collect();
        events.sort();
        let (mut n, mut max) = (0i32, 0i32);
        for (_, e) in events {
            n += e;
            max = max.max(n);
        }
        u32::try_from(max).unwrap()
    };
    let all: Vec<&PlannedStart<'_>> = starts.iter().collect();
    assert!(
        overlap(&all) <= limits.max_in_flight,
        "max_in_flight exceeded"
    );
    for (key, n) in &limits.disruption_budget {
        let mut groups: BTreeMap<&str, Vec<&PlannedStart<'_>>> = BTreeMap::new();
        for s in &starts {
            let d = fleet.get(&s.start.device).unwrap();
            if let Some(v) = d.tags.get(key) {
                groups.entry(v).or_default().push(s);
            }
        }
        for (value, g) in groups {
            assert!(overlap(&g) <= *n, "budget {key}={value} exceeded");
        }
    }
}
