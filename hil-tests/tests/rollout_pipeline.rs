//! Rollouts end to end: the real controller as a separate process (simulated clock at 60 times
//! real time, the executor ticking every 100 ms, a webhook) and 24 real agents on simulated
//! boards in four time zones, enrolled with tokens that carry their site, ring and cohort.
//!
//! One fleet goes through six scenarios, each starting from the state the previous one left
//! (enrolling 24 boards is the slow part), in the order 1 (with 4 inside it), 2, 6, 5, 3:
//!
//! 1. the field pipeline (dev and test in parallel, an approved canary, two waves) with a
//!    window that one zone is outside of at the start, 2 starts a minute and one device per
//!    site at a time: every device ends on 1.1.0 and every limit held;
//! 2. an unhealthy release stops at the canary and the canaries are back on 1.1.0;
//! 3. a failure in wave 2 rolls back every device that had started, the waves by command;
//! 4. (while 1 waits for its approval) a second rollout over the same devices is refused
//!    with 409 naming the active one;
//! 5. `kill -9` of the controller mid-rollout: the restarted controller finishes it without
//!    commanding any device twice;
//! 6. a deploy lock holds a running rollout past its devices' planned starts, and its release
//!    lets it finish.

// A test fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod rollout_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use jiff::civil;
use jiff::tz::TimeZone;
use rollout_support::{
    DeviceSpec, Fleet, FleetOptions, WEBHOOK_SECRET, ZONES, commands_of, layout, ts,
};
use serde_json::Value;

/// How long one rollout may take before the test gives up (real time).
const ROLLOUT_LIMIT: Duration = Duration::from_secs(150);

/// Scenario 1's plan: the window is device-local 06:00-02:00 (New York is at 05:15 when the
/// fleet starts, so it is outside); 2 starts a minute; one device per site at a time.
const PIPELINE: &str = r#"
name = "pipeline"

[window]
start = "06:00"
end = "02:00"

[limits]
max_in_flight = 4
max_starts_per_minute = 2
disruption_budget = { site = 1 }

[defaults]
device_timeout = "30m"
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
name = "canary"
approval = true
selector = { tags = { ring = "production" } }
share = "20%"

[[step]]
[[step.stage]]
name = "wave-1"
selector = { tags = { ring = "production" } }
share = "50%"

[[step]]
[[step.stage]]
name = "wave-2"
selector = { tags = { ring = "production" } }
"#;

/// The window of [`PIPELINE`], as local times.
const WINDOW: ((i8, i8), (i8, i8)) = ((6, 0), (2, 0));

/// Limits and gates for the later scenarios: a window open all day but one minute, so only the
/// gates and limits decide.
fn plan(name: &str, limits: &str, steps: &str) -> String {
    format!(
        "name = \"{name}\"\n\
         [window]\nstart = \"00:00\"\nend = \"23:59\"\n\
         [limits]\n{limits}\n\
         [defaults]\ndevice_timeout = \"10m\"\n\
         success = {{ committed = \"100%\", soak = \"2m\" }}\n\
         failure = {{ tolerate = 0, action = \"abort_and_rollback\" }}\n\
         {steps}"
    )
}

fn stage(name: &str, selector: &str, share: Option<&str>) -> String {
    let share = share.map_or_else(String::new, |s| format!("share = \"{s}\"\n"));
    format!("[[step]]\n[[step.stage]]\nname = \"{name}\"\nselector = {selector}\n{share}")
}

/// 24 devices, 6 per zone, sites of 2; rings dev (2), test (2) and production (20), three of
/// production in the canary cohort; none of dev, test or the canaries in New York.
fn fleet_layout() -> Vec<DeviceSpec> {
    let mut devices = layout(24, &ZONES, 2);
    for d in &mut devices {
        let ring = match d.id.as_str() {
            "gw-00" | "gw-12" => "dev",
            "gw-02" | "gw-06" => "test",
            _ => "production",
        };
        d.tags.insert("ring".into(), ring.into());
        if matches!(d.id.as_str(), "gw-01" | "gw-07" | "gw-13") {
            d.cohort = Some("canary".into());
        }
    }
    devices
}

/// The next instant at which it is 05:15 in New York: the controller's clock starts there.
fn clock_start() -> jiff::Timestamp {
    let tz = TimeZone::get("America/New_York").unwrap();
    let now = jiff::Timestamp::now().to_zoned(tz.clone());
    let at = civil::time(5, 15, 0, 0);
    let date = if now.time() < at {
        now.date()
    } else {
        now.date().tomorrow().unwrap()
    };
    date.to_datetime(at).to_zoned(tz).unwrap().timestamp()
}

/// Whether `at` lies in the window `start`-`end` of device-local time in `zone` (an end at or
/// before the start is on the next day).
fn in_window(at: jiff::Timestamp, zone: &str, (start, end): ((i8, i8), (i8, i8))) -> bool {
    let t = at.to_zoned(TimeZone::get(zone).unwrap()).time();
    let s = civil::time(start.0, start.1, 0, 0);
    let e = civil::time(end.0, end.1, 0, 0);
    if s < e {
        s <= t && t < e
    } else {
        t >= s || t < e
    }
}

fn local(at: jiff::Timestamp, zone: &str) -> String {
    at.to_zoned(TimeZone::get(zone).unwrap())
        .strftime("%H:%M:%S %Z")
        .to_string()
}

const TERMINAL: [&str; 4] = ["completed", "rolled_back", "aborted", "superseded"];

/// Waits until rollout `id` has ended, or stopped to wait for an operator (paused).
fn wait_end(f: &Fleet, id: &str) -> Value {
    f.api
        .wait_rollout(id, "the end (or a pause)", ROLLOUT_LIMIT, |r| {
            r["status"] == "paused" || TERMINAL.iter().any(|s| r["status"] == *s)
        })
}

fn assert_status(f: &Fleet, r: &Value, status: &str) {
    assert_eq!(
        r["status"],
        status,
        "{}\nevents: {:#}\ndevices: {:#}\n{}",
        rollout_support::describe_rollout(r),
        r["events"],
        r["devices"],
        f.logs_tail(15)
    );
}

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

/// Every webhook delivery so far carries a valid signature.
fn assert_signatures(f: &Fleet) {
    let all = f.hooks.deliveries();
    for d in &all {
        assert!(
            d.signature_valid(WEBHOOK_SECRET.as_bytes()),
            "bad signature on {} {}: {:?}",
            d.event,
            d.delivery,
            d
        );
        assert_eq!(d.json()["event"], d.event.as_str());
    }
}

#[test]
fn rollout_pipeline() {
    let began = Instant::now();
    let mut f = Fleet::start(
        fleet_layout(),
        FleetOptions {
            clock_start: clock_start(),
            speed: 60,
            tick_ms: 100,
        },
    );
    println!(
        "fleet: {} devices enrolled and online in {:.1} s (controller clock {} = New York {})",
        f.devices.len(),
        f.enrolled_in.as_secs_f64(),
        f.clock.now(),
        local(f.clock.now(), "America/New_York")
    );
    for (v, behaviour) in [
        ("1.1.0", "healthy"),
        ("1.2.0", "unhealthy"),
        ("1.3.0", "healthy"),
        ("1.4.0", "healthy"),
        ("1.5.0", "healthy"),
    ] {
        f.release(v, behaviour);
    }

    let phase = |name: &str, t: Instant| {
        println!("== {name}: {:.1} s", t.elapsed().as_secs_f64());
    };
    let t = Instant::now();
    pipeline(&f);
    phase("scenarios 1 and 4 (pipeline, overlap refused)", t);
    let t = Instant::now();
    bad_release_halts_at_the_canary(&f);
    phase("scenario 2 (bad release halts at the canary)", t);
    let t = Instant::now();
    a_lock_holds_the_rollout(&f, "1.3.0");
    phase("scenario 6 (deploy lock)", t);
    let t = Instant::now();
    controller_killed_mid_rollout(&mut f, "1.4.0");
    phase("scenario 5 (controller killed mid-rollout)", t);
    let t = Instant::now();
    failure_in_wave_2_rolls_back(&f, "1.5.0", "1.4.0");
    phase("scenario 3 (failure in wave 2)", t);
    assert_signatures(&f);
    println!(
        "all scenarios: {:.1} s, {} webhook deliveries, all signed correctly",
        began.elapsed().as_secs_f64(),
        f.hooks.deliveries().len()
    );
}

/// Scenario 1: the pipeline over the whole fleet, with an approval before the canary; and,
/// while it waits for that approval, scenario 4: a second rollout over the same devices.
fn pipeline(f: &Fleet) {
    let id = f.api.start_rollout(PIPELINE, "1.1.0");
    let r = f.api.rollout(&id);
    let created = ts(&r["created_at"]).unwrap();
    let outside: Vec<&str> = ZONES
        .iter()
        .copied()
        .filter(|z| !in_window(created, z, WINDOW))
        .collect();
    println!(
        "{id} created at {created}: outside the 06:00-02:00 window: {:?}",
        outside
            .iter()
            .map(|z| format!("{z} ({})", local(created, z)))
            .collect::<Vec<_>>()
    );
    assert!(
        !outside.is_empty(),
        "the scenario needs a zone outside its window at the start"
    );
    let stage_of: BTreeMap<String, String> = devices(&r)
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["stage"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(stage_of.len(), 24);
    for c in ["gw-01", "gw-07", "gw-13"] {
        assert_eq!(stage_of[c], "canary", "the canary cohort goes first");
    }
    let count = |s: &str| stage_of.values().filter(|v| *v == s).count();
    assert_eq!(
        [
            count("dev"),
            count("test"),
            count("canary"),
            count("wave-1"),
            count("wave-2")
        ],
        [2, 2, 4, 8, 8]
    );

    let r = f
        .api
        .wait_rollout(&id, "awaiting the canary's approval", ROLLOUT_LIMIT, |r| {
            r["status"] == "awaiting_approval" || r["status"] == "paused"
        });
    assert_status(f, &r, "awaiting_approval");
    let canary = &r["stages"][2];
    assert_eq!(canary["status"], "awaiting_approval");
    assert!(
        devices(&r)
            .iter()
            .filter(|d| d["step"] != 1)
            .all(|d| d["started_at"].is_null()),
        "nothing after step 1 starts before the approval"
    );

    overlap_refused(f, &id);

    f.api.approve(&id, "canary", "dev and test soaked cleanly");
    let r = wait_end(f, &id);
    assert_status(f, &r, "completed");
    let c = &r["counts"];
    assert_eq!(
        (c["devices"].as_u64(), c["succeeded"].as_u64()),
        (Some(24), Some(24))
    );
    f.wait_versions(
        f.devices.iter().map(|d| d.id.as_str()),
        "1.1.0",
        ROLLOUT_LIMIT,
    );

    // Every start inside the device's own window.
    let mut per_minute: BTreeMap<i64, usize> = BTreeMap::new();
    for d in devices(&r) {
        let (did, zone) = (d["id"].as_str().unwrap(), d["zone"].as_str().unwrap());
        let started = ts(&d["started_at"]).unwrap();
        assert!(
            in_window(started, zone, WINDOW),
            "{did} started at {started} = {} local, outside 06:00-02:00",
            local(started, zone)
        );
        *per_minute
            .entry(started.as_second().div_euclid(60))
            .or_default() += 1;
    }
    let first_ny = devices(&r)
        .iter()
        .filter(|d| d["zone"] == "America/New_York")
        .filter_map(|d| ts(&d["started_at"]))
        .min()
        .unwrap();
    println!(
        "first New York start: {first_ny} = {} local",
        local(first_ny, "America/New_York")
    );
    // At most 2 starts in any UTC minute.
    let busiest = per_minute.values().max().copied().unwrap_or(0);
    println!(
        "starts per UTC minute: max {busiest} over {} minutes with starts",
        per_minute.len()
    );
    assert!(
        busiest <= 2,
        "more than 2 starts in a UTC minute: {per_minute:?}"
    );
    // Never two devices of one site between start and commit.
    let mut sites: BTreeMap<&str, Vec<(jiff::Timestamp, jiff::Timestamp, &str)>> = BTreeMap::new();
    for d in devices(&r) {
        let did = d["id"].as_str().unwrap();
        let site = f.spec(did).tag("site").unwrap();
        let span = (
            ts(&d["started_at"]).unwrap(),
            ts(&d["committed_at"]).unwrap(),
            did,
        );
        sites.entry(site).or_default().push(span);
    }
    for (site, spans) in &sites {
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                assert!(
                    a.1 <= b.0 || b.1 <= a.0,
                    "site {site}: {} [{}, {}) overlaps {} [{}, {})",
                    a.2,
                    a.0,
                    a.1,
                    b.2,
                    b.0,
                    b.1
                );
            }
        }
    }
    let span = |d: &Value| {
        ts(&d["committed_at"])
            .unwrap()
            .duration_since(ts(&d["started_at"]).unwrap())
            .as_secs()
    };
    let longest = devices(&r).iter().map(span).max().unwrap_or(0);
    println!(
        "{id}: 24/24 on 1.1.0; sites never overlapped; longest start-to-commit {longest} s simulated"
    );

    let hooks = f.hooks.wait_for(
        &id,
        &[
            "rollout.started",
            "rollout.awaiting_approval",
            "rollout.approved",
            "rollout.step_advanced",
            "rollout.completed",
        ],
        Duration::from_secs(30),
    );
    assert!(
        hooks
            .iter()
            .all(|d| d.signature_valid(WEBHOOK_SECRET.as_bytes())),
        "every webhook of {id} is signed"
    );
    println!(
        "{id} webhooks: {:?}",
        hooks.iter().map(|d| d.event.as_str()).collect::<Vec<_>>()
    );
}

/// Scenario 4: while `active` runs, a rollout over the same devices is refused with 409
/// naming `active`, and nothing is created.
fn overlap_refused(f: &Fleet, active: &str) {
    let before = f.api.get("/v1/rollouts")["rollouts"]
        .as_array()
        .unwrap()
        .len();
    let other = plan(
        "overlap",
        "max_in_flight = 4\nmax_starts_per_minute = 10",
        &stage("everyone", "{}", None),
    );
    let (status, body) = f.api.create_rollout(&other, "1.3.0");
    println!("overlap: HTTP {status}: {}", body["error"]);
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("active rollout {active} ")),
        "{error}"
    );
    let after = f.api.get("/v1/rollouts")["rollouts"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "a refused rollout is not created");
}

/// Scenario 2: release 1.2.0's image fails its health check; the canary stage (the canary
/// cohort, no failure tolerated) trips, nothing else starts, and the canaries are on 1.1.0.
fn bad_release_halts_at_the_canary(f: &Fleet) {
    let steps = stage("canary", "{ cohort = \"canary\" }", None) + &stage("rest", "{}", None);
    let p = plan(
        "bad release",
        "max_in_flight = 4\nmax_starts_per_minute = 20\ndisruption_budget = { site = 1 }",
        &steps,
    );
    let id = f.api.start_rollout(&p, "1.2.0");
    let r = wait_end(f, &id);
    assert_status(f, &r, "rolled_back");
    let canaries = ids_where(&r, |d| d["stage"] == "canary");
    assert_eq!(canaries, ["gw-01", "gw-07", "gw-13"]);
    let started = ids_where(&r, |d| !d["started_at"].is_null());
    assert!(
        started.iter().all(|d| canaries.contains(d)),
        "only canaries started: {started:?}"
    );
    assert!(!started.is_empty());
    for d in devices(&r).iter().filter(|d| d["stage"] == "rest") {
        assert_eq!(d["state"], "not_started", "{d}");
    }
    f.wait_versions(canaries.iter().map(String::as_str), "1.1.0", ROLLOUT_LIMIT);
    let rb = &r["rollback"];
    let ms = rb["duration_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rollback duration: {rb}"));
    println!(
        "{id} (1.2.0, unhealthy): rolled_back; {} canaries started, all back on 1.1.0; \
         tripped by {} ({}); rollback took {ms} ms",
        started.len(),
        rb["tripped_by"],
        rb["reason"]
    );
    f.hooks.wait_for(
        &id,
        &["rollout.started", "rollout.aborted", "rollout.rolled_back"],
        Duration::from_secs(30),
    );
}

/// Scenario 3: release `version` is healthy, but one wave-2 device's trial fails: the rollout
/// aborts, every device that started is back on `previous` (the canary and the waves by a
/// revert command), and the last stage never starts.
fn failure_in_wave_2_rolls_back(f: &Fleet, version: &str, previous: &str) {
    let steps = stage("canary", "{ cohort = \"canary\" }", None)
        + &stage("wave-1", "{}", Some("25%"))
        + &stage("wave-2", "{}", Some("50%"))
        + &stage("rest", "{}", None);
    // Two in flight at most, so wave 2 still has devices to start when it begins.
    let p = plan(
        "failure in wave 2",
        "max_in_flight = 2\nmax_starts_per_minute = 20",
        &steps,
    );
    let id = f.api.start_rollout(&p, version);
    let r = f
        .api
        .wait_rollout(&id, "wave-2 running", ROLLOUT_LIMIT, |r| {
            r["stages"][2]["status"] == "running"
                || TERMINAL.iter().any(|s| r["status"] == *s)
                || r["status"] == "paused"
        });
    assert_eq!(
        r["stages"][2]["status"],
        "running",
        "{}",
        rollout_support::describe_rollout(&r)
    );
    // The wave-2 device that starts last: it is surely still pending when its switch is set.
    let victim = devices(&r)
        .iter()
        .filter(|d| d["stage"] == "wave-2" && d["state"] == "pending")
        .max_by_key(|d| (ts(&d["planned_at"]), d["id"].as_str().map(str::to_owned)))
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .expect("a wave-2 device not yet started");
    f.fail_health(&victim, true);
    let r = wait_end(f, &id);
    f.fail_health(&victim, false);
    assert_status(f, &r, "rolled_back");
    let rb = &r["rollback"];
    assert_eq!(rb["tripped_by"], victim.as_str(), "{rb}");
    let started = ids_where(&r, |d| !d["started_at"].is_null());
    for d in devices(&r) {
        let did = d["id"].as_str().unwrap();
        let stage = d["stage"].as_str().unwrap();
        if stage == "rest" {
            assert!(d["started_at"].is_null(), "{did} of the last stage started");
            assert_eq!(d["state"], "not_started");
        }
        if did == victim {
            assert_eq!(d["state"], "failed", "{d}");
        } else if !d["committed_at"].is_null() {
            // It took the release: a rollback command took it back.
            assert_eq!(d["state"], "rolled_back", "{d}");
        }
    }
    for s in ["canary", "wave-1"] {
        assert!(
            devices(&r)
                .iter()
                .filter(|d| d["stage"] == s)
                .all(|d| d["state"] == "rolled_back"),
            "every {s} device rolled back"
        );
    }
    let audit = f.api.audit();
    let reverts = commands_of(&audit, &id, "revert");
    for did in ids_where(&r, |d| d["state"] == "rolled_back") {
        assert_eq!(reverts.get(&did), Some(&1), "{did}: one revert command");
    }
    f.wait_versions(started.iter().map(String::as_str), previous, ROLLOUT_LIMIT);
    let ms = rb["duration_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rollback duration: {rb}"));
    let by_stage = |s: &str| {
        devices(&r)
            .iter()
            .filter(|d| d["stage"] == s && !d["started_at"].is_null())
            .count()
    };
    println!(
        "{id} ({version}, {victim} fails its trial in wave 2): rolled_back; started: \
         canary {}, wave-1 {}, wave-2 {}, rest {}; {} reverted by command, all {} back on \
         {previous}; rollback took {ms} ms",
        by_stage("canary"),
        by_stage("wave-1"),
        by_stage("wave-2"),
        by_stage("rest"),
        reverts.len(),
        started.len()
    );
}

/// A one-stage plan over every device, 2 starts a minute, no in-flight cap to speak of.
fn everyone(name: &str) -> String {
    plan(
        name,
        "max_in_flight = 24\nmax_starts_per_minute = 2",
        &stage("everyone", "{}", None),
    )
}

/// Scenario 6: a deploy lock holds a running rollout: no device starts while pending devices'
/// planned starts pass; releasing it lets the rollout finish.
fn a_lock_holds_the_rollout(f: &Fleet, version: &str) {
    let id = f.api.start_rollout(&everyone("held by a lock"), version);
    f.api
        .wait_rollout(&id, "a device done and some pending", ROLLOUT_LIMIT, |r| {
            let c = &r["counts"];
            c["soaking"].as_u64().unwrap_or(0) + c["succeeded"].as_u64().unwrap_or(0) >= 1
                && c["pending"].as_u64().unwrap_or(0) >= 4
        });
    let lock = f.api.lock("change freeze: the test holds deploys");
    let held = f.api.wait_status(&id, "held", Duration::from_secs(10));
    assert_eq!(held["held_by"][0]["id"], lock.as_str());
    let started_when_held: BTreeSet<String> = ids_where(&held, |d| !d["started_at"].is_null())
        .into_iter()
        .collect();
    let held_real = Instant::now();
    // Until a pending device's planned start is well past by the controller's clock.
    let (r, overdue, planned) = rollout_support::eventually(
        "a pending device's planned start to pass",
        Duration::from_secs(60),
        || {
            let r = f.api.try_rollout(&id)?;
            let now = f.clock.now();
            let late = devices(&r)
                .iter()
                .filter(|d| d["state"] == "pending")
                .filter_map(|d| Some((ts(&d["planned_at"])?, d["id"].as_str()?.to_owned())))
                .filter(|(at, _)| at.as_second() + 30 < now.as_second())
                .min();
            match late {
                Some((at, did)) => Ok((r, did, at)),
                None => Err(rollout_support::describe_rollout(&r)),
            }
        },
    );
    assert_status(f, &r, "held");
    let started_now: BTreeSet<String> = ids_where(&r, |d| !d["started_at"].is_null())
        .into_iter()
        .collect();
    assert_eq!(
        started_when_held, started_now,
        "no device starts while the lock holds"
    );
    let still = devices(&r)
        .iter()
        .find(|d| d["id"] == overdue.as_str())
        .unwrap();
    assert_eq!(still["state"], "pending");
    println!(
        "{id} held by {lock} with {} started: {overdue} still pending at {} (planned {planned}), \
         {:.1} s real after the hold",
        started_now.len(),
        f.clock.now(),
        held_real.elapsed().as_secs_f64()
    );
    f.api.release_lock(&lock, "freeze over");
    let r = wait_end(f, &id);
    assert_status(f, &r, "completed");
    assert_eq!(r["counts"]["succeeded"], 24);
    f.wait_versions(
        f.devices.iter().map(|d| d.id.as_str()),
        version,
        ROLLOUT_LIMIT,
    );
    f.hooks.wait_for(
        &id,
        &["rollout.held", "rollout.resumed", "rollout.completed"],
        Duration::from_secs(30),
    );
}

/// Scenario 5: `kill -9` of the controller while devices are pending, in flight and done; the
/// restarted controller finishes the rollout, and the audit log shows one install command per
/// device.
fn controller_killed_mid_rollout(f: &mut Fleet, version: &str) {
    let id = f
        .api
        .start_rollout(&everyone("killed mid-rollout"), version);
    let r = f.api.wait_rollout(
        &id,
        "devices done, in flight and pending",
        ROLLOUT_LIMIT,
        |r| {
            let c = &r["counts"];
            let n = |k: &str| c[k].as_u64().unwrap_or(0);
            n("soaking") + n("succeeded") >= 2 && n("in_flight") >= 1 && n("pending") >= 4
        },
    );
    f.controller.kill9();
    let killed = Instant::now();
    println!("{id}: controller killed with {}", r["counts"]);
    f.controller.restart();
    println!(
        "{id}: controller back after {:.2} s (start #{})",
        killed.elapsed().as_secs_f64(),
        f.controller.starts
    );
    let r = wait_end(f, &id);
    assert_status(f, &r, "completed");
    let c = &r["counts"];
    assert_eq!(
        (c["devices"].as_u64(), c["succeeded"].as_u64()),
        (Some(24), Some(24))
    );
    let installs = commands_of(&f.api.audit(), &id, "install");
    let twice: Vec<_> = installs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "devices commanded twice: {twice:?}");
    assert_eq!(installs.len(), 24, "{installs:?}");
    f.wait_versions(
        f.devices.iter().map(|d| d.id.as_str()),
        version,
        ROLLOUT_LIMIT,
    );
    f.hooks.wait_for(
        &id,
        &["rollout.started", "rollout.completed"],
        Duration::from_secs(60),
    );
    println!("{id}: completed after the restart, 24/24 on {version}, one install command each");
}
