//! Issue 6's scenarios a and b end to end: the real controller as a separate process with a
//! simulated clock, real agents on simulated boards enrolled with their ring tags and cohort.
//!
//! a. **The pipeline from the field** (28 devices, 20 of them in production): dev and test in
//!    parallel; then edu, sandbox and staging in parallel; an operator's approval; then
//!    production, whose first step is a 20% canary (the canary cohort first). A healthy 1.1.0
//!    goes through every step; then 1.2.0, whose trial fails its health check on the
//!    production canaries, is stopped at the canary and rolled back automatically. The test
//!    prints the controller's rollback duration, the canaries' own times from failing to being
//!    back on 1.1.0 watched from outside, and apart from both the simulated reboots the
//!    rollback took, read from the boards' consoles.
//! b. **Follow the sun** (16 devices in Tokyo, Kathmandu, Berlin and New York, a 02:00-04:00
//!    local window, the clock at 1200 times real time): every device starts inside its own
//!    zone's window, and the zones open east to west.

// A test fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod rollout_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::civil;
use jiff::tz::TimeZone;
use rollout_support::{Api, DeviceSpec, Fleet, FleetOptions, ZONES, describe_rollout, layout, ts};
use serde_json::Value;
use swell_agent::board;

/// How long one rollout (or one step of it) may take before the test gives up (real time).
const LIMIT: Duration = Duration::from_secs(60);

const TERMINAL: [&str; 4] = ["completed", "rolled_back", "aborted", "superseded"];

fn devices(r: &Value) -> &Vec<Value> {
    r["devices"].as_array().unwrap()
}

fn ids_where(r: &Value, keep: impl Fn(&Value) -> bool) -> Vec<String> {
    devices(r)
        .iter()
        .filter(|d| keep(d))
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until rollout `id` has ended, or stopped for an operator (paused, awaiting approval).
fn wait_stop(f: &Fleet, id: &str) -> Value {
    f.api.wait_rollout(id, "the end (or a stop)", LIMIT, |r| {
        r["status"] == "paused"
            || r["status"] == "awaiting_approval"
            || TERMINAL.iter().any(|s| r["status"] == *s)
    })
}

fn assert_status(f: &Fleet, r: &Value, status: &str) {
    assert_eq!(
        r["status"],
        status,
        "{}\nevents: {:#}\ndevices: {:#}\n{}",
        describe_rollout(r),
        r["events"],
        r["devices"],
        f.logs_tail(15)
    );
}

// ---------------------------------------------------------------------------------------------
// a. The pipeline from the field.

/// The field pipeline (docs/rollouts.md's worked example) with a window open all day, so only
/// the steps, the approval and the gates decide; minutes are seconds at 60 times.
const FIELD_PIPELINE: &str = r#"
name = "field pipeline"
zone_order = "east_to_west"

[window]
start = "00:00"
end = "23:59"

[limits]
max_in_flight = 20
max_starts_per_minute = 60

[defaults]
device_timeout = "10m"
success = { committed = "100%", soak = "2m" }
failure = { tolerate = 0, action = "pause" }

[[step]]
[[step.stage]]
name = "dev"
selector = { tags = { ring = "dev" } }

[[step.stage]]
name = "test"
selector = { tags = { ring = "test" } }

[[step]]
[[step.stage]]
name = "edu"
selector = { tags = { ring = "edu" } }

[[step.stage]]
name = "sandbox"
selector = { tags = { ring = "sandbox" } }

[[step.stage]]
name = "staging"
selector = { tags = { ring = "staging" } }

[[step]]
[[step.stage]]
name = "canary"
approval = true
selector = { tags = { ring = "production" } }
share = "20%"
failure = { tolerate = 0, action = "abort_and_rollback" }

[[step]]
[[step.stage]]
name = "production"
selector = { tags = { ring = "production" } }
failure = { tolerate = "10%", action = "abort_and_rollback" }
"#;

/// 28 devices, 7 per zone: dev 2, test 2, edu 1, sandbox 1, staging 2, production 20 (three of
/// them in the canary cohort, so the 20% canary is those three and one more).
fn field_layout() -> Vec<DeviceSpec> {
    let mut devices = layout(28, &ZONES, 2);
    for d in &mut devices {
        let ring = match d.id.as_str() {
            "gw-00" | "gw-07" => "dev",
            "gw-14" | "gw-21" => "test",
            "gw-01" => "edu",
            "gw-08" => "sandbox",
            "gw-15" | "gw-22" => "staging",
            _ => "production",
        };
        d.tags.insert("ring".into(), ring.into());
        if matches!(d.id.as_str(), "gw-02" | "gw-09" | "gw-16") {
            d.cohort = Some("canary".into());
        }
    }
    devices
}

/// Checks the steps ran in order: no device of a step started before every device of the step
/// before had committed. Returns the step of each stage.
fn assert_steps_in_order(r: &Value) {
    let mut by_step: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for d in devices(r) {
        by_step
            .entry(d["step"].as_u64().unwrap())
            .or_default()
            .push(d);
    }
    for (step, ds) in &by_step {
        let Some(before) = by_step.get(&(step - 1)) else {
            continue;
        };
        let last_commit = before
            .iter()
            .filter_map(|d| ts(&d["committed_at"]))
            .max()
            .unwrap();
        for d in ds.iter().filter(|d| !d["started_at"].is_null()) {
            let started = ts(&d["started_at"]).unwrap();
            assert!(
                started >= last_commit,
                "{} of step {step} started at {started}, before step {} ended ({last_commit})",
                d["id"],
                step - 1
            );
        }
    }
}

/// The wall-clock time in Unix milliseconds, as the boards' consoles write it.
fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// When a watcher first saw a device in each state, real time.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// First seen rolled back (or failed) on any version: the device reported its failure.
    failing: Option<Instant>,
    /// First seen settled back on the previous version.
    back: Option<Instant>,
}

/// Watches `ids` through `GET /v1/devices` every 5 ms until `stop`, recording when each was
/// first seen failing and back on `previous`. A measurement from outside, so its
/// resolution is the poll interval plus one API round trip.
fn watch(
    api: Api,
    ids: Vec<String>,
    previous: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BTreeMap<String, Seen>> {
    std::thread::spawn(move || {
        let mut seen: BTreeMap<String, Seen> =
            ids.iter().map(|i| (i.clone(), Seen::default())).collect();
        while !stop.load(Ordering::SeqCst) {
            let Ok(all) = api.devices() else { continue };
            let now = Instant::now();
            for (id, s) in &mut seen {
                let Some(d) = all.get(id) else { continue };
                let state = d["state"].as_str().unwrap_or_default();
                if matches!(state, "reverting" | "rolled_back" | "failed") && s.failing.is_none() {
                    s.failing = Some(now);
                }
                if state == "rolled_back"
                    && d["running"]["version"] == previous.as_str()
                    && s.back.is_none()
                {
                    s.back = Some(now);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    })
}

/// Scenario a: the field pipeline with 1.1.0 (healthy, through every step), then with 1.2.0
/// whose trial fails its health check on the production canaries: the canary stage trips, the
/// rollout is rolled back automatically, and production beyond the canary never starts.
#[test]
fn field_pipeline_canary_fails_and_rolls_back() {
    let began = Instant::now();
    let f = Fleet::start(
        field_layout(),
        FleetOptions {
            clock_start: jiff::Timestamp::now(),
            speed: 60,
            tick_ms: 100,
        },
    );
    println!(
        "a: {} devices enrolled and online in {:.1} s",
        f.devices.len(),
        f.enrolled_in.as_secs_f64()
    );
    f.release("1.1.0", "healthy");
    f.release("1.2.0", "healthy");

    // 1.1.0 through every step.
    let t = Instant::now();
    let id = f.api.start_rollout(FIELD_PIPELINE, "1.1.0");
    let r = f.api.rollout(&id);
    let stage_of: BTreeMap<String, String> = devices(&r)
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["stage"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let count = |s: &str| stage_of.values().filter(|v| *v == s).count();
    let stages = [
        "dev",
        "test",
        "edu",
        "sandbox",
        "staging",
        "canary",
        "production",
    ];
    assert_eq!(stages.map(count), [2, 2, 1, 1, 2, 4, 16], "{stage_of:?}");
    for c in ["gw-02", "gw-09", "gw-16"] {
        assert_eq!(stage_of[c], "canary", "the canary cohort goes first");
    }
    let r = wait_stop(&f, &id);
    assert_status(&f, &r, "awaiting_approval");
    assert_eq!(r["stages"][5]["status"], "awaiting_approval");
    assert!(
        devices(&r)
            .iter()
            .filter(|d| d["step"].as_u64() >= Some(3))
            .all(|d| d["started_at"].is_null()),
        "nothing after the pre-production rings starts before the approval"
    );
    let approved_at = f.clock.now();
    f.api
        .approve(&id, "canary", "pre-production soaked cleanly");
    let r = wait_stop(&f, &id);
    assert_status(&f, &r, "completed");
    assert_eq!(r["counts"]["succeeded"], 28);
    assert_steps_in_order(&r);
    for d in devices(&r).iter().filter(|d| d["step"].as_u64() >= Some(3)) {
        assert!(
            ts(&d["started_at"]).unwrap()
                >= approved_at
                    .checked_sub(jiff::SignedDuration::from_secs(5))
                    .unwrap()
        );
    }
    f.wait_versions(f.devices.iter().map(|d| d.id.as_str()), "1.1.0", LIMIT);
    println!(
        "a: {id} (1.1.0): completed, 28/28 on 1.1.0 through dev+test, edu+sandbox+staging, \
         approval, canary (4), production (16) in {:.1} s real",
        t.elapsed().as_secs_f64()
    );

    // 1.2.0: the production canaries' trial fails its health check.
    let t = Instant::now();
    let id = f.api.start_rollout(FIELD_PIPELINE, "1.2.0");
    let r = f.api.rollout(&id);
    let canaries = ids_where(&r, |d| d["stage"] == "canary");
    assert_eq!(canaries.len(), 4);
    for c in &canaries {
        f.fail_health(c, true);
    }
    let r = wait_stop(&f, &id);
    assert_status(&f, &r, "awaiting_approval");
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(
        f.api.clone(),
        canaries.clone(),
        "1.1.0".into(),
        Arc::clone(&stop),
    );
    let approved_ms = unix_ms();
    f.api
        .approve(&id, "canary", "pre-production soaked cleanly");
    let r = wait_stop(&f, &id);
    f.wait_versions(canaries.iter().map(String::as_str), "1.1.0", LIMIT);
    stop.store(true, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    for c in &canaries {
        f.fail_health(c, false);
    }
    assert_status(&f, &r, "rolled_back");
    let rb = &r["rollback"];
    let tripped_by = rb["tripped_by"].as_str().unwrap_or_default();
    assert!(
        canaries.iter().any(|c| c == tripped_by),
        "a canary trips the gate: {rb}"
    );
    for d in devices(&r).iter().filter(|d| d["stage"] == "production") {
        assert_eq!(d["state"], "not_started", "{d}");
    }
    let started = ids_where(&r, |d| !d["started_at"].is_null());
    f.wait_versions(started.iter().map(String::as_str), "1.1.0", LIMIT);
    let ms = rb["duration_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rollback duration: {rb}"));
    assert!(ms < 5_000, "rollback took {ms} ms, the target is under 5 s");

    let first_failing = seen.values().filter_map(|s| s.failing).min().unwrap();
    let last_back = seen.values().filter_map(|s| s.back).max().unwrap();
    // Each started device rebooted once out of 1.2.0 back into its old slot after the
    // approval: the canaries by themselves (their health check failed), the others by command.
    let mut down: Vec<u64> = Vec::new();
    for d in &started {
        let lines = board::read_console(&f.board_dir(d)).unwrap();
        let back: Vec<board::Reboot> = board::reboots(&lines)
            .into_iter()
            .filter(|b| b.at_ms >= approved_ms && !b.trial && b.from != b.to)
            .collect();
        assert_eq!(
            back.len(),
            1,
            "{d}: one reboot back into the old slot: {back:?}"
        );
        down.push(back[0].down_ms);
    }
    down.sort_unstable();
    let pre_prod = started.len() - canaries.len();
    println!(
        "a: {id} (1.2.0, health check fails on the canaries {canaries:?}): rolled_back in {:.1} s \
         real; tripped by {tripped_by} ({}); production beyond the canary never started; \
         {pre_prod} pre-production devices reverted by command, all {} started devices back on 1.1.0",
        t.elapsed().as_secs_f64(),
        rb["reason"],
        started.len()
    );
    println!(
        "a: ROLLBACK rollback.duration_ms = {ms} ms (controller, monotonic: from processing the \
         first failing canary report to processing the last of the {} devices' reports of \
         1.1.0; the first canary's own reboot back into its old slot happened before its \
         failing report and is not in it, the other devices' reboots are)",
        started.len()
    );
    println!(
        "a: ROLLBACK canaries watched from the API (5 ms polls): first failing canary seen -> \
         last canary seen back on 1.1.0: {} ms",
        last_back.duration_since(first_failing).as_millis()
    );
    println!(
        "a: REBOOT simulated reboots in the rollback, per device from the agent's exit to the \
         old slot's agent starting (board consoles): {} reboots, median {} ms, max {} ms, \
         total {} ms; the rest of the rollback time is the controller, MQTT and the agents \
         starting and reporting. A real device adds its own reboot, devices in parallel.",
        down.len(),
        down[down.len() / 2],
        down[down.len() - 1],
        down.iter().sum::<u64>()
    );
    println!("a: whole scenario {:.1} s", began.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// b. Follow the sun.

/// b's window, local time.
const NIGHT: (i8, i8) = (2, 4);

/// Simulated seconds per real second: Tokyo's 02:00 (17:00Z) to New York's 04:00 (09:00Z) is
/// 16 simulated hours, 48 s real. A real install (one to a few seconds under load) is under
/// an hour simulated, inside the 3-hour device timeout; a 10-minute soak is half a second.
const SUN_SPEED: u32 = 1200;

const FOLLOW_THE_SUN: &str = r#"
name = "follow the sun"
zone_order = "east_to_west"

[window]
start = "02:00"
end = "04:00"

[limits]
max_in_flight = 16
max_starts_per_minute = 30

[defaults]
device_timeout = "3h"
success = { committed = "100%", soak = "10m" }
failure = { tolerate = 0, action = "pause" }

[[step]]
[[step.stage]]
name = "everyone"
"#;

fn local(at: jiff::Timestamp, zone: &str) -> String {
    at.to_zoned(TimeZone::get(zone).unwrap())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// Scenario b: 16 devices in four zones, a 02:00-04:00 window in each device's own time, the
/// clock at 1200 times real time: every device starts
/// inside its own zone's window, and the zones open east to west.
#[test]
fn follow_the_sun() {
    let began = Instant::now();
    // The next 16:00Z: Tokyo's window opens at 17:00Z (3 s real later), Kathmandu's at
    // 20:15Z, Berlin's at 00:00Z or 01:00Z, New York's at 06:00Z or 07:00Z. Within a day of
    // real time, because the devices keep their real clocks and enrollment tokens and
    // certificates are checked against both.
    let f = Fleet::start(
        layout(16, &ZONES, 2),
        FleetOptions {
            clock_start: next_utc(16),
            speed: SUN_SPEED,
            tick_ms: 100,
        },
    );
    f.release("1.1.0", "healthy");
    let created_real = Instant::now();
    let id = f.api.start_rollout(FOLLOW_THE_SUN, "1.1.0");
    let created = ts(&f.api.rollout(&id)["created_at"]).unwrap();
    println!(
        "b: {} devices online in {:.1} s; {id} created at {created} (Tokyo {})",
        f.devices.len(),
        f.enrolled_in.as_secs_f64(),
        local(created, "Asia/Tokyo")
    );
    assert!(
        ZONES.iter().all(|z| !in_night(created, z)),
        "the sweep starts before any zone's window"
    );
    let r = f
        .api
        .wait_rollout(&id, "the end (or a stop)", Duration::from_secs(80), |r| {
            r["status"] == "paused" || TERMINAL.iter().any(|s| r["status"] == *s)
        });
    let real = created_real.elapsed();
    assert_status(&f, &r, "completed");
    assert_eq!(r["counts"]["succeeded"], 16);

    let mut first_by_zone: BTreeMap<&str, jiff::Timestamp> = BTreeMap::new();
    let mut starts = Vec::new();
    for d in devices(&r) {
        let (did, zone) = (d["id"].as_str().unwrap(), d["zone"].as_str().unwrap());
        let started = ts(&d["started_at"]).unwrap();
        assert!(
            in_night(started, zone),
            "{did} started at {started} = {} local, outside 02:00-04:00",
            local(started, zone)
        );
        let first = first_by_zone.entry(zone).or_insert(started);
        *first = (*first).min(started);
        starts.push(started);
    }
    for pair in ZONES.windows(2) {
        assert!(
            first_by_zone[pair[0]] < first_by_zone[pair[1]],
            "{} opened at {} , not before {} at {}",
            pair[0],
            first_by_zone[pair[0]],
            pair[1],
            first_by_zone[pair[1]]
        );
    }
    for z in ZONES {
        println!(
            "b: {z:<17} first start {} = {}",
            first_by_zone[z],
            local(first_by_zone[z], z)
        );
    }
    let last_commit = devices(&r)
        .iter()
        .filter_map(|d| ts(&d["committed_at"]))
        .max()
        .unwrap();
    let first_start = starts.iter().min().copied().unwrap();
    let sim = last_commit.duration_since(first_start);
    let sim_minutes = sim.as_secs_f64() / 60.0;
    println!(
        "b: FIGURES 16 devices, first start to last commit {:.0} simulated minutes \
         ({:.1} h); {:.2} devices per simulated minute over the sweep (bounded by the windows, \
         not the fleet); rollout created to completed {:.1} s real at {SUN_SPEED}x = {:.1} devices \
         per real minute; whole test {:.1} s",
        sim_minutes,
        sim_minutes / 60.0,
        16.0 / sim_minutes,
        real.as_secs_f64(),
        16.0 * 60.0 / real.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
}

/// Whether `at` lies in 02:00-04:00 local time in `zone`.
fn in_night(at: jiff::Timestamp, zone: &str) -> bool {
    let t = at.to_zoned(TimeZone::get(zone).unwrap()).time();
    civil::time(NIGHT.0, 0, 0, 0) <= t && t < civil::time(NIGHT.1, 0, 0, 0)
}

/// The next instant after now at which it is `hour`:00 UTC.
fn next_utc(hour: i8) -> jiff::Timestamp {
    let now = jiff::Timestamp::now().to_zoned(TimeZone::UTC);
    let at = civil::time(hour, 0, 0, 0);
    let date = if now.time() < at {
        now.date()
    } else {
        now.date().tomorrow().unwrap()
    };
    date.to_datetime(at)
        .to_zoned(TimeZone::UTC)
        .unwrap()
        .timestamp()
}
