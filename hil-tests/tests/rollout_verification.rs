//! Continuous verification end to end (issue 8): the real controller as a separate process
//! (simulated clock at 60 times real time, the executor ticking every 100 ms) and 12 real
//! agents on simulated boards in one zone, each sending a health-signal batch every second
//! (`[signals]`) with its board's application log followed for `ERROR` lines.
//!
//! The plan's `canary` stage (the 4 devices of the canary cohort) compares its updated devices
//! with the 8 others, not yet updated, over a 10-minute soak (10 s real); `rest` follows. Any
//! failure aborts and rolls back.
//!
//! 1. A healthy release, 1.1.0: the canary's verification passes (or, on data too thin, is
//!    inconclusive, which this plan lets pass; the test says which), and the rollout completes
//!    on every device.
//! 2. Release 1.2.0's image is `noisy`: it passes its health checks, so the canaries commit,
//!    but it logs an error line the fleet never logged. Verification fails the canary stage
//!    naming the new signature with its example line, the canaries are reverted by command to
//!    1.1.0, and `rest` never starts.

// A test fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod rollout_support;

use std::path::Path;
use std::time::{Duration, Instant};

use jiff::civil;
use jiff::tz::TimeZone;
use rollout_support::{
    DeviceSpec, Fleet, FleetOptions, commands_of, describe_rollout, eventually, layout, ts,
};
use serde_json::Value;
use swell_agent::board::{APP_LOG, NOISY_LINE};
use swell_proto::Timestamp;
use swell_proto::signals::Signature;

/// Every board's zone: one zone, so the canaries and the baseline share the local time of day.
const ZONE: &str = "Europe/Berlin";

/// The canary cohort: every third device.
const CANARIES: [&str; 4] = ["gw-00", "gw-03", "gw-06", "gw-09"];

/// How long one rollout, or one wait within it, may take before the test gives up (real time).
const ROLLOUT_LIMIT: Duration = Duration::from_secs(60);

/// How the executor's abort reason for a failed verification begins.
const ABORT_PREFIX: &str = "stage canary: verification failed:";

/// The plan of both rollouts: the canary cohort with verification over a 10-minute soak, then
/// everyone else. The window is open all day but one minute, so only the gates decide.
const PLAN: &str = r#"
name = "verified canary"

[window]
start = "00:00"
end = "23:59"

[limits]
max_in_flight = 4
max_starts_per_minute = 20

[defaults]
device_timeout = "10m"
failure = { tolerate = 0, action = "abort_and_rollback" }

[[step]]
[[step.stage]]
name = "canary"
selector = { cohort = "canary" }
success = { committed = "100%", soak = "10m" }
verification = { min_updated = 3, min_baseline = 5, inconclusive = "pass" }

[[step]]
[[step.stage]]
name = "rest"
success = { committed = "100%", soak = "2m" }
"#;

const TERMINAL: [&str; 4] = ["completed", "rolled_back", "aborted", "superseded"];

/// 12 devices in [`ZONE`], sites of 2, the [`CANARIES`] in the canary cohort.
fn fleet_layout() -> Vec<DeviceSpec> {
    let mut devices = layout(12, &[ZONE], 2);
    for d in &mut devices {
        if CANARIES.contains(&d.id.as_str()) {
            d.cohort = Some("canary".into());
        }
    }
    devices
}

/// Health signals every second, the board's application log followed for `ERROR` lines.
fn signals_config(board: &Path) -> String {
    format!(
        "[signals]\ninterval_secs = 1\n\
         [[signals.log]]\npath = \"{}\"\npatterns = [\"ERROR\"]\n",
        board.join(APP_LOG).display()
    )
}

/// Today's 09:00 in [`ZONE`]: the controller's clock starts there, so the test's two hours of
/// simulated time stay inside the window.
fn clock_start() -> jiff::Timestamp {
    let tz = TimeZone::get(ZONE).unwrap();
    let today = jiff::Timestamp::now().to_zoned(tz.clone()).date();
    today
        .to_datetime(civil::time(9, 0, 0, 0))
        .to_zoned(tz)
        .unwrap()
        .timestamp()
}

/// The signature the `noisy` image's line makes (the board writes it after a timestamp, which
/// the templating masks, so any instant gives the same id).
fn noisy_signature() -> Signature {
    let at = Timestamp::from_unix(jiff::Timestamp::now().as_second());
    Signature::of_line(&format!("{at} {NOISY_LINE}"))
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

fn ended(r: &Value) -> bool {
    r["status"] == "paused" || TERMINAL.iter().any(|s| r["status"] == *s)
}

/// Waits until rollout `id` has ended, or stopped to wait for an operator (paused).
fn wait_end(f: &Fleet, id: &str) -> Value {
    f.api
        .wait_rollout(id, "the end (or a pause)", ROLLOUT_LIMIT, ended)
}

fn assert_status(f: &Fleet, r: &Value, status: &str) {
    assert_eq!(
        r["status"],
        status,
        "{}\nstages: {:#}\nevents: {:#}\ndevices: {:#}\n{}",
        describe_rollout(r),
        r["stages"],
        r["events"],
        r["devices"],
        f.logs_tail(15)
    );
}

/// The canary stage's verification, as `GET /v1/rollouts/{id}` shows it.
fn verification(r: &Value) -> &Value {
    &r["stages"][0]["verification"]
}

fn reasons(v: &Value) -> Vec<&str> {
    v["reasons"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The latest `committed_at` of the canary stage's devices: when the stage's soak began.
fn canaries_committed(r: &Value) -> Option<jiff::Timestamp> {
    let canaries: Vec<&Value> = devices(r)
        .iter()
        .filter(|d| d["stage"] == "canary")
        .collect();
    if canaries.is_empty() {
        return None;
    }
    canaries
        .iter()
        .map(|d| ts(&d["committed_at"]))
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}

/// What the test saw of the canary stage's verification while polling.
struct Verdict {
    /// The rollout when the verdict was first seen (or when it ended without one).
    rollout: Value,
    /// Real time from first seeing every canary committed to first seeing the verdict.
    committed_to_verdict: Option<Duration>,
}

/// Polls rollout `id` until its canary stage has a verdict (or the rollout ended without one),
/// noting when every canary was first seen committed.
fn watch_verdict(f: &Fleet, id: &str) -> Verdict {
    let mut committed: Option<Instant> = None;
    let rollout = eventually(
        &format!("{id}: the canary's verdict"),
        ROLLOUT_LIMIT,
        || {
            let r = f.api.try_rollout(id)?;
            if committed.is_none() && canaries_committed(&r).is_some() {
                committed = Some(Instant::now());
            }
            if !verification(&r)["verdict"].is_null() || ended(&r) {
                Ok(r)
            } else {
                Err(format!(
                    "{}; verification: {}",
                    describe_rollout(&r),
                    verification(&r)
                ))
            }
        },
    );
    Verdict {
        committed_to_verdict: committed.map(|c| c.elapsed()),
        rollout,
    }
}

/// Whether board `id`'s application log holds the `noisy` image's line.
fn logged_noise(f: &Fleet, id: &str) -> bool {
    std::fs::read_to_string(f.board_dir(id).join(APP_LOG)).is_ok_and(|log| log.contains(NOISY_LINE))
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(|| "?".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
}

/// Simulated time from `from` to `to`, for the figures.
fn sim_span(from: Option<jiff::Timestamp>, to: Option<jiff::Timestamp>) -> String {
    match (from, to) {
        (Some(a), Some(b)) => format!("{} s simulated", b.duration_since(a).as_secs()),
        _ => "? (a time is missing)".to_owned(),
    }
}

#[test]
fn rollout_verification() {
    let began = Instant::now();
    let f = Fleet::start_with(
        fleet_layout(),
        FleetOptions {
            clock_start: clock_start(),
            speed: 60,
            tick_ms: 100,
        },
        signals_config,
    );
    println!(
        "fleet: {} devices enrolled and online in {:.1} s, signals every second",
        f.devices.len(),
        f.enrolled_in.as_secs_f64()
    );
    f.release("1.1.0", "healthy");
    f.release("1.2.0", "noisy");

    let t = Instant::now();
    good_release_passes(&f);
    println!(
        "== scenario 1 (good release): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    noisy_release_is_stopped(&f);
    println!(
        "== scenario 2 (noisy release): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!("all: {:.1} s", began.elapsed().as_secs_f64());
}

/// Scenario 1: healthy release 1.1.0 passes the canary's verification and completes.
fn good_release_passes(f: &Fleet) {
    let id = f.api.start_rollout(PLAN, "1.1.0");
    let r = f.api.rollout(&id);
    assert_eq!(ids_where(&r, |d| d["stage"] == "canary"), CANARIES);
    assert_eq!(ids_where(&r, |d| d["stage"] == "rest").len(), 8);

    let seen = watch_verdict(f, &id);
    let r = wait_end(f, &id);
    assert_status(f, &r, "completed");
    let v = verification(&r);
    let verdict = v["verdict"].as_str().unwrap_or_else(|| {
        panic!(
            "{id} completed without a verdict: {v:#}\n{}",
            describe_rollout(&r)
        )
    });
    assert_eq!(
        verification(&seen.rollout)["verdict"],
        verdict,
        "the verdict changed after it was given"
    );
    match verdict {
        "pass" => {
            let reporting = (v["reporting"][0].as_u64(), v["reporting"][1].as_u64());
            assert!(
                reporting.0 >= Some(3) && reporting.1 >= Some(5),
                "a pass with fewer reporting than required: {v:#}"
            );
        }
        "inconclusive" => assert!(
            !reasons(v).is_empty(),
            "an inconclusive verdict says why: {v:#}"
        ),
        other => panic!("a good release's verdict: {other}: {v:#}"),
    }
    for s in 0..2 {
        assert_eq!(r["stages"][s]["status"], "passed", "{:#}", r["stages"][s]);
    }
    assert_eq!(r["counts"]["succeeded"], 12, "{}", r["counts"]);
    f.wait_versions(
        f.devices.iter().map(|d| d.id.as_str()),
        "1.1.0",
        ROLLOUT_LIMIT,
    );
    assert!(
        f.devices.iter().all(|d| !logged_noise(f, &d.id)),
        "the healthy image logs no error"
    );
    let advanced = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "rollout.step_advanced")
        .and_then(|e| ts(&e["at"]));
    println!(
        "{id} (1.1.0, healthy): completed, 12/12 on 1.1.0; canary verdict {verdict} at look {} \
         of {}, reporting {} (updated, baseline); {} real after every canary committed, \
         {} from the last commit to the step advance; reasons: {:?}",
        v["look"],
        v["looks"],
        v["reporting"],
        seconds(seen.committed_to_verdict),
        sim_span(canaries_committed(&r), advanced),
        reasons(v)
    );
}

/// Scenario 2: release 1.2.0's `noisy` image passes its health checks but logs a new error;
/// verification fails the canary stage and the canaries are reverted to 1.1.0.
fn noisy_release_is_stopped(f: &Fleet) {
    let signature = noisy_signature();
    let id = f.api.start_rollout(PLAN, "1.2.0");
    let seen = watch_verdict(f, &id);
    let r = wait_end(f, &id);
    assert_status(f, &r, "rolled_back");

    // The verdict: the new signature, named with its example line.
    let v = verification(&r);
    assert_eq!(v["verdict"], "fail", "{v:#}\n{}", describe_rollout(&r));
    assert_eq!(verification(&seen.rollout)["verdict"], "fail", "{v:#}");
    let named = format!("new error signature {}", signature.id);
    let reason = reasons(v)
        .into_iter()
        .find(|x| x.contains(&named))
        .unwrap_or_else(|| panic!("no reason names {named:?} ({}): {v:#}", signature.template));
    assert!(reason.contains(NOISY_LINE), "no example line: {reason}");

    // The abort: its reason, in the rollout and in its event.
    let status_reason = r["status_reason"].as_str().unwrap_or_default();
    assert!(
        status_reason.starts_with(ABORT_PREFIX) && status_reason.contains(NOISY_LINE),
        "status_reason: {status_reason:?}"
    );
    let aborted = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "rollout.aborted")
        .unwrap_or_else(|| panic!("no rollout.aborted event: {:#}", r["events"]));
    let abort_reason = aborted["reason"].as_str().unwrap_or_default();
    assert!(
        abort_reason.starts_with(ABORT_PREFIX) && abort_reason.contains(NOISY_LINE),
        "rollout.aborted: {abort_reason:?}"
    );

    // The canaries committed (their health checks passed) and were reverted by command; the
    // rest never started.
    let canaries = ids_where(&r, |d| d["stage"] == "canary");
    assert_eq!(canaries, CANARIES);
    for d in devices(&r) {
        let did = d["id"].as_str().unwrap();
        if d["stage"] == "canary" {
            assert!(!d["committed_at"].is_null(), "{did} committed 1.2.0: {d}");
            assert_eq!(d["state"], "rolled_back", "{d}");
            assert!(logged_noise(f, did), "{did}'s 1.2.0 logged its error");
        } else {
            assert!(d["started_at"].is_null(), "{did} of rest started: {d}");
            assert_eq!(d["state"], "not_started", "{d}");
            assert!(!logged_noise(f, did), "{did} never ran 1.2.0");
        }
    }
    assert_eq!(r["stages"][0]["status"], "tripped", "{:#}", r["stages"][0]);
    assert!(
        !matches!(
            r["stages"][1]["status"].as_str(),
            Some("running" | "passed")
        ),
        "rest never started: {:#}",
        r["stages"][1]
    );
    let audit = f.api.audit();
    let audited = audit
        .iter()
        .find(|e| e["action"] == "rollout.aborted" && e["details"]["rollout"] == id.as_str())
        .unwrap_or_else(|| panic!("no rollout.aborted audit entry for {id}"));
    assert_eq!(audited["details"]["reason"], abort_reason, "{audited:#}");
    let reverts = commands_of(&audit, &id, "revert");
    for c in CANARIES {
        assert_eq!(
            reverts.get(c),
            Some(&1),
            "{c}: one revert command: {reverts:?}"
        );
    }
    f.wait_versions(CANARIES, "1.1.0", ROLLOUT_LIMIT);

    let rb = &r["rollback"];
    let ms = rb["duration_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rollback duration: {rb}"));
    let hooks = f.hooks.wait_for(
        &id,
        &["rollout.started", "rollout.aborted", "rollout.rolled_back"],
        Duration::from_secs(30),
    );
    let hook = hooks.iter().find(|d| d.event == "rollout.aborted").unwrap();
    assert_eq!(hook.json()["reason"], abort_reason, "{}", hook.body);
    println!(
        "{id} (1.2.0, noisy): rolled_back; 4/4 canaries committed 1.2.0, then reverted by \
         command, all back on 1.1.0; rest not started; verdict fail at look {} of {}, \
         reporting {} (updated, baseline); {} real after every canary committed, {} from the \
         last commit to the trip; rollback took {ms} ms",
        v["look"],
        v["looks"],
        v["reporting"],
        seconds(seen.committed_to_verdict),
        sim_span(canaries_committed(&r), ts(&rb["tripped_at"])),
    );
    println!("{id} reasons: {:#?}", reasons(v));
    println!("{id} status_reason: {status_reason}");
}
