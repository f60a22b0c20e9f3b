//! Chaos (issue 6, scenario c): a rollout of a healthy release over 50 real agents on simulated
//! boards, each with its MQTT link through a fault proxy of its own, while a seeded RNG cuts
//! power to random devices at random instants (SIGKILL to the board and its agent, then the
//! board powers on again on the same directories), partitions random links or slows them
//! down for a few seconds; then everything is healed. Two rounds on one fleet (enrolling is
//! cheap, but two fleets of 50 in parallel would not fit 2 cores): `field`, faults of a few
//! seconds well within the device timeout, then `harsh`, faults aimed only at updating devices
//! and partitions longer than the device timeout.
//!
//! The plan tolerates 20% failures per stage with action `pause`: the release is healthy, so a
//! failure here is the field's fault (a device that lost power twice in its trial reverts, as
//! its boot ROM must), not the release's. Rolling every device back for that would punish the
//! fleet for the weather; pausing past the threshold hands it to an operator. The success gate
//! asks for the complement (80% committed), so a stage within its tolerance passes.
//!
//! Asserted: the rollout ends (completed, or paused with a reason that names failures beyond
//! the tolerance); its per-device outcomes match each device's own account (journal and boot
//! environment, read from the board's files as `swell-agent status` does): every device counted
//! succeeded runs the release, committed, and every device on the release is counted succeeded,
//! or failed with a reason that says it was not heard from within the device timeout (a link
//! down for longer than that; counted and printed apart: the rollout's figure is then an
//! undercount, which it admits);
//! no device ends on an unverified image or in a trial, and each runs its previous image or
//! the release. The figures (devices, cuts, partitions, time to end, outcomes) are printed.
//!
//! `SWELL_CHAOS_SEED=N` replays the RNG's choices (kinds, delays, durations, whether to aim at a
//! device in flight); the seed used is printed first. Which devices are in flight at a given
//! instant depends on timing, so two runs with one seed are alike, not identical.
//!
//! Figures on 2 cores (debug build): 50 devices enroll in about 2 s; the rollout ends in
//! 12-27 s under 10-25 power cuts, 4-20 partitions and 10 slowed links.

// A test fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod rollout_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rollout_support::{Fleet, FleetOptions, ZONES, describe_rollout, eventually, layout};
use serde_json::Value;
use swell_agent::bootenv::{BootEnvStore as _, BootVars};
use swell_proto::messages::Slot;

/// Fleet size.
const DEVICES: usize = 50;
/// The seed when `SWELL_CHAOS_SEED` is not set.
const DEFAULT_SEED: u64 = 0x5eed_0006;

/// One round of chaos: how much of what is injected, how hard, and the plan's device timeout.
struct Profile {
    name: &'static str,
    /// The release rolled out (healthy).
    version: &'static str,
    /// The plan's device timeout (simulated time, 60 times real time).
    device_timeout: &'static str,
    /// Power cuts at most.
    cuts: u32,
    /// Partitions at most.
    partitions: u32,
    /// Slowed links (50-400 ms per chunk each way) at most.
    slow: u32,
    /// Real milliseconds between two faults.
    every: (u64, u64),
    /// Real milliseconds a device stays without power.
    off: (u64, u64),
    /// Real milliseconds a partition lasts.
    partition: (u64, u64),
    /// Out of 10: how often a fault aims at a device in flight or soaking.
    aim: usize,
}

/// Faults of a few seconds, well within the device timeout (30 real seconds).
const FIELD: Profile = Profile {
    name: "field",
    version: "1.1.0",
    device_timeout: "30m",
    cuts: 25,
    partitions: 20,
    slow: 10,
    every: (150, 700),
    off: (100, 3000),
    partition: (1000, 4000),
    aim: 7,
};

/// Faults aimed at updating devices only, partitions up to 14 s past a 10 s device timeout:
/// some devices commit unheard, and the rollout must say so rather than claim otherwise.
const HARSH: Profile = Profile {
    name: "harsh",
    version: "1.2.0",
    device_timeout: "10m",
    cuts: 40,
    partitions: 20,
    slow: 10,
    every: (50, 250),
    off: (100, 800),
    partition: (3000, 14_000),
    aim: 10,
};
/// How long the rollout may take from its creation to its end (real time).
const ROLLOUT_LIMIT: Duration = Duration::from_secs(120);
/// How long the devices get to settle once everything is healed.
const SETTLE_LIMIT: Duration = Duration::from_secs(90);

/// Two stages (a fifth of the fleet, then the rest), open all day; 6 devices in flight (so the
/// rollout lasts long enough for the faults to land on updating devices); the device timeout
/// is the profile's.
const PLAN: &str = r#"
name = "chaos"

[window]
start = "00:00"
end = "23:59"

[limits]
max_in_flight = 6
max_starts_per_minute = 30

[defaults]
device_timeout = "@TIMEOUT@"
success = { committed = "80%", soak = "3m" }
failure = { tolerate = "20%", action = "pause" }

[[step]]
[[step.stage]]
name = "first"
selector = {}
share = "20%"

[[step]]
[[step.stage]]
name = "rest"
selector = {}
"#;

/// splitmix64: small, seedable, good enough to pick victims and delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// A fault in force and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    PowerCut(String),
    Partition(String),
    Slow(String),
}

impl Fault {
    fn device(&self) -> &str {
        match self {
            Fault::PowerCut(d) | Fault::Partition(d) | Fault::Slow(d) => d,
        }
    }

    /// Ends the fault.
    fn heal(&self, f: &mut Fleet) {
        match self {
            Fault::PowerCut(id) => f.power_on(id),
            Fault::Partition(id) => f.proxy(id).heal(),
            Fault::Slow(id) => f.proxy(id).set_latency(Duration::ZERO),
        }
    }
}

const ENDED: [&str; 5] = [
    "completed",
    "paused",
    "rolled_back",
    "aborted",
    "superseded",
];

fn rollout_devices(r: &Value) -> BTreeMap<String, Value> {
    r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_owned(), d.clone()))
        .collect()
}

/// A device's own account: its journal (`swell-agent status`) and its boot environment.
#[derive(Debug)]
struct Own {
    /// The journal's update state.
    state: String,
    /// Whether the boot environment says a trial is under way.
    trial: bool,
    /// The version of the booted slot's image (`None`: the factory image).
    running: Option<String>,
    /// Whether the booted slot's image is verified (the factory image counts as verified).
    verified: bool,
    status: Value,
}

fn own_account(dir: &Path, id: &str) -> Result<Own, String> {
    let board = dir.join("boards").join(id);
    let out = Command::new(env!("CARGO_BIN_EXE_swell-demo"))
        .args(["status", "--output", "json", "--config"])
        .arg(board.join("agent.toml"))
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let status: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let mut store =
        swell_agent::bootctl::sim_env_store(&board.join("board")).map_err(|e| e.to_string())?;
    let env = store.load().map_err(|e| e.to_string())?;
    let vars = BootVars::default();
    let trial = vars.upgrade_available(&env).map_err(|e| e.to_string())?;
    let slot = vars
        .slot(&env)
        .map_err(|e| e.to_string())?
        .unwrap_or(Slot::A);
    let view = &status[if slot == Slot::A { "slot_a" } else { "slot_b" }];
    Ok(Own {
        state: status["state"].as_str().unwrap_or_default().to_owned(),
        trial,
        running: view["version"].as_str().map(str::to_owned),
        verified: view.is_null() || view["verified"] == true,
        status,
    })
}

#[test]
fn rollout_chaos() {
    let seed = std::env::var("SWELL_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    println!("chaos seed {seed} (SWELL_CHAOS_SEED={seed} replays the choices)");
    let mut rng = Rng(seed);
    let mut f = Fleet::start_proxied(
        layout(DEVICES, &ZONES, 5),
        FleetOptions {
            clock_start: jiff::Timestamp::now(),
            speed: 60,
            tick_ms: 100,
        },
    );
    println!(
        "fleet: {} devices enrolled and online in {:.1} s, each link through a fault proxy",
        f.devices.len(),
        f.enrolled_in.as_secs_f64()
    );
    for p in [&FIELD, &HARSH] {
        f.release(p.version, "healthy");
    }
    for p in [&FIELD, &HARSH] {
        chaos_round(&mut f, &mut rng, p);
    }
}

/// One rollout of `p.version` under `p`'s faults, and the checks of its end.
#[allow(clippy::too_many_lines)] // One scenario, read top to bottom.
fn chaos_round(f: &mut Fleet, rng: &mut Rng, p: &Profile) {
    let version = p.version;
    println!(
        "== round {}: {version}, device timeout {}",
        p.name, p.device_timeout
    );
    let ids: Vec<String> = f.devices.iter().map(|d| d.id.clone()).collect();
    let dir = f.dir().to_owned();
    let previous: BTreeMap<String, Option<String>> = ids
        .iter()
        .map(|id| (id.clone(), own_account(&dir, id).unwrap().running))
        .collect();

    let began = Instant::now();
    let rollout = f
        .api
        .start_rollout(&PLAN.replace("@TIMEOUT@", p.device_timeout), version);
    let (mut cuts, mut partitions, mut slowed, mut on_updating) = (0u32, 0u32, 0u32, 0u32);
    let mut in_force: Vec<(Instant, Fault)> = Vec::new();
    let mut next_fault = Instant::now() + rng.millis(p.every.0, p.every.1);
    let mut last_poll = Instant::now() - Duration::from_secs(1);
    let mut last = Value::Null;
    let ended = loop {
        let now = Instant::now();
        assert!(
            now - began < ROLLOUT_LIMIT,
            "the rollout did not end in {ROLLOUT_LIMIT:?}: {}\n{}",
            describe_rollout(&last),
            f.logs_tail(10)
        );
        // Faults whose time is up end.
        let (due, keep): (Vec<_>, Vec<_>) = in_force.into_iter().partition(|(t, _)| *t <= now);
        in_force = keep;
        for (_, fault) in due {
            fault.heal(f);
        }
        if now - last_poll >= Duration::from_millis(250) {
            last_poll = now;
            // The controller is up throughout; a failed read is just retried.
            if let Ok(r) = f.api.try_rollout(&rollout) {
                if ENDED.iter().any(|s| r["status"] == *s) {
                    break r;
                }
                last = r;
            }
        }
        if now >= next_fault && (cuts < p.cuts || partitions < p.partitions || slowed < p.slow) {
            next_fault = now + rng.millis(p.every.0, p.every.1);
            // Mostly a device that is updating right now: that is where a fault hurts.
            let busy: Vec<String> = last["devices"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|d| d["state"] == "in_flight" || d["state"] == "soaking")
                        .map(|d| d["id"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let victim = if !busy.is_empty() && rng.below(10) < p.aim {
                busy[rng.below(busy.len())].clone()
            } else {
                ids[rng.below(ids.len())].clone()
            };
            let faulted = in_force.iter().any(|(_, fault)| fault.device() == victim);
            // A kind with budget left, at random.
            let kinds: Vec<u8> = [
                (0, cuts < p.cuts),
                (1, partitions < p.partitions),
                (2, slowed < p.slow),
            ]
            .into_iter()
            .filter_map(|(k, left)| left.then_some(k))
            .collect();
            let kind = kinds[rng.below(kinds.len())];
            if !faulted {
                if busy.contains(&victim) {
                    on_updating += 1;
                }
                if kind == 0 {
                    f.power_cut(&victim);
                    cuts += 1;
                    let off = rng.millis(p.off.0, p.off.1);
                    println!(
                        "{:6.1} s  power cut {victim} for {:.1} s",
                        began.elapsed().as_secs_f64(),
                        off.as_secs_f64()
                    );
                    in_force.push((now + off, Fault::PowerCut(victim)));
                } else if kind == 2 {
                    let latency = rng.millis(50, 400);
                    f.proxy(&victim).set_latency(latency);
                    slowed += 1;
                    let off = rng.millis(1000, 4000);
                    println!(
                        "{:6.1} s  slow link {victim} by {} ms for {:.1} s",
                        began.elapsed().as_secs_f64(),
                        latency.as_millis(),
                        off.as_secs_f64()
                    );
                    in_force.push((now + off, Fault::Slow(victim)));
                } else {
                    f.proxy(&victim).partition();
                    partitions += 1;
                    let off = rng.millis(p.partition.0, p.partition.1);
                    println!(
                        "{:6.1} s  partition {victim} for {:.1} s",
                        began.elapsed().as_secs_f64(),
                        off.as_secs_f64()
                    );
                    in_force.push((now + off, Fault::Partition(victim)));
                }
            }
        }
        // A polling interval, shortened to the next fault's start or end.
        let wake = in_force
            .iter()
            .map(|(t, _)| *t)
            .chain([next_fault, now + Duration::from_millis(100)])
            .min()
            .unwrap();
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    };
    let time_to_end = began.elapsed();
    // Heal everything that is still cut.
    for (_, fault) in in_force {
        fault.heal(f);
    }
    println!(
        "{rollout}: {} after {:.1} s ({cuts} power cuts, {partitions} partitions, {slowed} slow \
         links; {on_updating} of them on a device in flight or soaking); {}",
        ended["status"],
        time_to_end.as_secs_f64(),
        describe_rollout(&ended)
    );

    let status = ended["status"].as_str().unwrap().to_owned();
    assert!(
        status == "completed" || status == "paused",
        "a healthy release under tolerated chaos completes or pauses: {}\nevents: {:#}",
        describe_rollout(&ended),
        ended["events"]
    );
    if status == "paused" {
        let reason = ended["status_reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("failed") && reason.contains("tolerated"),
            "a pause names the failures beyond the tolerance: {reason}"
        );
    }

    // Once healed, every device comes back online, and the rollout has nobody in flight (a
    // pause stops new starts, not the devices already updating).
    f.wait_online(SETTLE_LIMIT);
    let r = f
        .api
        .wait_rollout(&rollout, "no device in flight", SETTLE_LIMIT, |r| {
            r["devices"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["state"] != "in_flight" && d["state"] != "soaking")
        });
    assert_eq!(r["status"], status.as_str(), "{}", describe_rollout(&r));
    let outcomes = rollout_devices(&r);

    // Each device's own account, once it is settled: no trial, nothing in progress.
    let own: BTreeMap<String, Own> = eventually("every device settled", SETTLE_LIMIT, || {
        let mut all = BTreeMap::new();
        for id in &ids {
            let o = own_account(&dir, id).map_err(|e| format!("{id}: {e}"))?;
            if o.trial || !matches!(o.state.as_str(), "committed" | "idle" | "rolled_back") {
                return Err(format!("{id}: trial={} {}", o.trial, o.status));
            }
            all.insert(id.clone(), o);
        }
        Ok(all)
    });

    let mut mismatches = Vec::new();
    let mut unconfirmed = Vec::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ids {
        let o = &own[id];
        let rd = &outcomes[id];
        let state = rd["state"].as_str().unwrap_or_default();
        *counts.entry(state.to_owned()).or_default() += 1;
        let on_release = o.running.as_deref() == Some(version);
        assert!(
            o.verified,
            "{id} runs an unverified image: {:#}\nrollout: {rd}",
            o.status
        );
        assert!(
            on_release || o.running == previous[id],
            "{id} runs neither its previous image ({:?}) nor {version}: {:#}",
            previous[id],
            o.status
        );
        if state == "succeeded" && !(on_release && o.state == "committed") {
            mismatches.push(format!(
                "{id}: counted succeeded, runs {:?} ({})",
                o.running, o.state
            ));
        }
        // Not heard from in time (its link was down past the device timeout): the rollout
        // counts it failed without claiming it is off the release, and says why. Counted
        // apart; any other outcome for a device on the release is a disagreement.
        let reason = rd["reason"].as_str().unwrap_or_default();
        let unheard = state == "failed"
            && (reason.starts_with("silent since") || reason.contains("within the device timeout"));
        if on_release && unheard {
            unconfirmed.push(format!("{id} ({reason})"));
        } else if on_release && state != "succeeded" {
            mismatches.push(format!(
                "{id}: runs {version} ({}), counted {state}: {rd}",
                o.state
            ));
        }
    }
    // What the controller's inventory says each device runs agrees with the device.
    let versions = f.versions().unwrap();
    for id in &ids {
        if versions[id] != own[id].running {
            mismatches.push(format!(
                "{id}: inventory says {:?}, the device {:?}",
                versions[id], own[id].running
            ));
        }
    }
    println!(
        "figures: {DEVICES} devices, {cuts} power cuts, {partitions} partitions, {slowed} slow \
         links ({on_updating} faults on updating devices), rollout {status} in {:.1} s; outcomes {counts:?}; {} on {version}, {} on their previous image",
        time_to_end.as_secs_f64(),
        own.values()
            .filter(|o| o.running.as_deref() == Some(version))
            .count(),
        ids.iter()
            .filter(|id| own[*id].running == previous[*id])
            .count()
    );
    if !unconfirmed.is_empty() {
        println!(
            "{} devices run {version}, committed, but the rollout counts them failed, unheard \
             within the device timeout: {}",
            unconfirmed.len(),
            unconfirmed.join("; ")
        );
    }
    assert!(
        mismatches.is_empty(),
        "the rollout's outcomes and the devices disagree:\n{}",
        mismatches.join("\n")
    );
    if status == "completed" {
        let failed = counts.get("failed").copied().unwrap_or(0)
            + counts.get("rolled_back").copied().unwrap_or(0);
        assert!(
            failed <= DEVICES / 5,
            "completed with {failed} failures, more than 20% tolerated"
        );
    }
}
