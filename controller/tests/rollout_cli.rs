//! `swellctl rollout`, client side: the simple-case flags become plan TOML the planner accepts
//! (and a bad flag is refused locally, named); `list`, `show` and `watch` render sample API
//! JSON (`tests/data/rollouts/*.json`, written to the rollouts spec) as pinned here; and
//! `watch`'s exit status, through the real binary against a tiny scripted HTTP server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use clap::Parser as _;
use expect_test::{Expect, expect};
use serde_json::{Value, json};
use swell_controller::cli::{Cli, run};
use swell_controller::client::rollout_view::{
    list_lines, show_lines, status_line, watch_lines, watch_screen,
};
use swell_controller::client::rollouts::{ReleaseArg, SimplePlan, simple_plan};
use swell_controller::planner::Plan;
use swell_controller::planner::plan::Amount;
use swell_proto::Timestamp;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/rollouts")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// `base` with `patch`'s keys replaced, recursively for objects (a JSON merge patch).
fn patched(base: &Value, patch: &Value) -> Value {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            let mut out = b.clone();
            for (k, v) in p {
                let merged = match b.get(k) {
                    Some(old) if v.is_object() => patched(old, v),
                    _ => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        _ => patch.clone(),
    }
}

fn os120() -> ReleaseArg {
    "os@1.2.0".parse().unwrap()
}

fn at(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

/// Runs swellctl's library entry with `args`; its output, or the one-line error.
fn swellctl_lib(args: &[&str]) -> Result<String, String> {
    let cli = Cli::try_parse_from(std::iter::once("swellctl").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    run(cli, at("2027-03-08T09:00:00Z"), &mut out).map_err(|e| {
        let mut s = e.to_string();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
        while let Some(cause) = src {
            s.push_str(&format!(": {cause}"));
            src = cause.source();
        }
        s
    })?;
    Ok(String::from_utf8(out).unwrap())
}

fn check(lines: &[String], expect: &Expect) {
    let mut text = lines.join("\n");
    text.push('\n');
    expect.assert_eq(&text);
}

// ---------------------------------------------------------------------------------------------
// Simple-case flags → plan TOML.

/// The defaults and `--window` alone: the canary cohort, then the rest, abort and roll back on
/// any failure; the planner accepts it.
#[test]
fn window_alone_makes_canary_cohort_then_rest() {
    let toml = swellctl_lib(&[
        "rollout",
        "create",
        "--release",
        "os@1.2.0",
        "--window",
        "02:00-04:00",
        "--print-plan",
    ])
    .unwrap();
    expect![[r##"
        # Made by swellctl rollout create from flags; pass an edited copy with --plan.
        name = "os 1.2.0"

        [window]
        start = "02:00"
        end = "04:00"

        [limits]
        max_in_flight = 10
        max_starts_per_minute = 10

        [defaults]
        device_timeout = "45m"
        success = { committed = "100%", soak = "30m" }
        failure = { tolerate = 0, action = "abort_and_rollback" }

        [[step]]
        [[step.stage]]
        name = "canary"
        selector = { cohort = "canary" }

        [[step]]
        [[step.stage]]
        name = "rest"
    "##]]
    .assert_eq(&toml);
    let plan = Plan::from_toml(&toml).unwrap();
    let names: Vec<&str> = plan
        .steps()
        .iter()
        .flat_map(|s| s.stages.iter().map(|st| st.name.as_str()))
        .collect();
    assert_eq!(names, ["canary", "rest"]);
    assert_eq!(plan.limits().max_in_flight, 10);
    assert_eq!(plan.limits().max_starts_per_minute, 10);
}

/// Every simple-case flag: a canary share, waves, limits, timeouts, a tolerated percentage
/// (the committed share leaves room for it), and approval before the first wave.
#[test]
fn every_flag_reaches_the_plan() {
    let toml = swellctl_lib(&[
        "rollout",
        "create",
        "--release",
        "os@1.2.0",
        "--window",
        "23:00-01:30",
        "--canary-share",
        "20%",
        "--waves",
        "25%,50%",
        "--max-in-flight",
        "4",
        "--starts-per-minute",
        "2",
        "--device-timeout",
        "1h",
        "--soak",
        "2h",
        "--tolerate",
        "10%",
        "--approval",
        "--print-plan",
    ])
    .unwrap();
    let plan = Plan::from_toml(&toml).unwrap();
    let stages: Vec<_> = plan.steps().iter().flat_map(|s| s.stages.iter()).collect();
    let summary: Vec<String> = stages
        .iter()
        .map(|s| {
            format!(
                "{} share={:?} approval={} timeout={}s committed={}% soak={}s tolerate={:?} {:?}",
                s.name,
                s.share,
                s.approval,
                s.device_timeout.as_secs(),
                s.success.committed_percent,
                s.success.soak.as_secs(),
                s.failure.tolerate,
                s.failure.action,
            )
        })
        .collect();
    check(
        &summary,
        &expect![[r#"
        canary share=Some(Percent(20)) approval=false timeout=3600s committed=90% soak=7200s tolerate=Percent(10) AbortAndRollback
        wave-1 share=Some(Percent(25)) approval=true timeout=3600s committed=90% soak=7200s tolerate=Percent(10) AbortAndRollback
        wave-2 share=Some(Percent(50)) approval=false timeout=3600s committed=90% soak=7200s tolerate=Percent(10) AbortAndRollback
        rest share=None approval=false timeout=3600s committed=90% soak=7200s tolerate=Percent(10) AbortAndRollback
    "#]],
    );
    assert_eq!(plan.steps().len(), 4, "one stage per step");
    assert_eq!(stages[0].share, Some(Amount::Percent(20)));
    assert_eq!(plan.limits().max_in_flight, 4);
    assert_eq!(plan.limits().max_starts_per_minute, 2);
}

/// A bad value is refused before anything travels, naming the flag it came from.
#[test]
fn bad_flags_are_refused_locally_by_name() {
    let base = SimplePlan {
        window: "02:00-04:00".into(),
        ..SimplePlan::default()
    };
    let cases: Vec<(SimplePlan, &str)> = vec![
        (
            SimplePlan {
                window: "02:00".into(),
                ..base.clone()
            },
            "--window: \"02:00\": expected START-END in device-local time, such as 02:00-04:00",
        ),
        (
            SimplePlan {
                window: "2am-4am".into(),
                ..base.clone()
            },
            "--window: \"2am\" is not a local time HH:MM (such as \"02:00\")",
        ),
        (
            SimplePlan {
                window: "02:00-02:00".into(),
                ..base.clone()
            },
            "--window:",
        ),
        (
            SimplePlan {
                canary_share: Some("0%".into()),
                ..base.clone()
            },
            "--canary-share: \"0%\" is neither a count nor a percentage from 1% to 100%",
        ),
        (
            SimplePlan {
                waves: vec!["25%".into(), "150%".into()],
                ..base.clone()
            },
            "--waves: \"150%\" is neither a count nor a percentage from 1% to 100%",
        ),
        (
            SimplePlan {
                max_in_flight: 0,
                ..base.clone()
            },
            "--max-in-flight: must be at least 1",
        ),
        (
            SimplePlan {
                starts_per_minute: 7000,
                ..base.clone()
            },
            "--starts-per-minute: at most 6000",
        ),
        (
            SimplePlan {
                device_timeout: "soon".into(),
                ..base.clone()
            },
            "--device-timeout: \"soon\" is not a duration",
        ),
        (
            SimplePlan {
                soak: "8d".into(),
                ..base.clone()
            },
            "--soak: \"8d\" is longer than 7 days",
        ),
        (
            SimplePlan {
                tolerate: "2".into(),
                ..base.clone()
            },
            "--tolerate: \"2\": give 0 or a percentage",
        ),
        (
            SimplePlan {
                tolerate: "100%".into(),
                ..base.clone()
            },
            "--tolerate: \"100%\": a percentage from 0% to 99%",
        ),
    ];
    for (flags, want) in cases {
        let err = simple_plan(&flags, &os120()).unwrap_err().to_string();
        assert!(
            err.starts_with(want),
            "{flags:?}: got {err:?}, want {want:?}"
        );
    }
    assert!(simple_plan(&base, &os120()).is_ok());
}

/// Flag combinations clap refuses: the simple-case flags with a plan file, no window without
/// a plan, `--starts` without `--dry-run`, a release without a version.
#[test]
fn clap_refuses_contradictions() {
    for args in [
        &["--plan", "p.toml", "--soak", "1h"][..],
        &["--print-plan"][..],
        &["--window", "02:00-04:00", "--starts"][..],
    ] {
        let mut all = vec!["rollout", "create", "--release", "os@1.2.0"];
        all.extend_from_slice(args);
        assert!(swellctl_lib(&all).is_err(), "{all:?}");
    }
    let err = swellctl_lib(&[
        "rollout",
        "create",
        "--release",
        "os",
        "--window",
        "02:00-04:00",
        "--print-plan",
    ])
    .unwrap_err();
    assert!(err.contains("expected NAME@VERSION"), "{err}");
}

/// A plan file is validated locally too, and the error names the file and the field.
#[test]
fn a_bad_plan_file_is_refused_locally() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    let good = simple_plan(
        &SimplePlan {
            window: "02:00-04:00".into(),
            ..SimplePlan::default()
        },
        &os120(),
    )
    .unwrap();
    std::fs::write(
        &path,
        good.replace("max_in_flight = 10", "max_in_flight = 0"),
    )
    .unwrap();
    let err = swellctl_lib(&[
        "--controller",
        "http://127.0.0.1:9",
        "rollout",
        "create",
        "--release",
        "os@1.2.0",
        "--plan",
        path.to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(
        err.starts_with("rollout create: --plan: ")
            && err.ends_with("p.toml: limits.max_in_flight: must be at least 1"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// `rollout list`: one row per rollout.
#[test]
fn list_table() {
    check(
        &list_lines(&fixture("list.json")),
        &expect![[r#"
        ID   NAME            RELEASE   STATUS       STEP  DEVICES  SUCCEEDED  FAILED  IN-FLIGHT  CREATED               BY
        r-2  os 1.3.0        os 1.3.0  rolled_back  1/2   10       0          1       0          2027-03-10T09:00:00Z  alice
        r-1  field pipeline  os 1.2.0  superseded   2/3   14       4          0       2          2027-03-08T09:00:00Z  bob
    "#]],
    );
    check(
        &list_lines(&json!({"rollouts": []})),
        &expect![[r#"
        no rollouts
    "#]],
    );
}

/// `rollout show` of a running rollout: header, stage table, a zone table per stage, events.
#[test]
fn show_running() {
    check(
        &show_lines(&fixture("running.json")["rollout"], false),
        &expect![[r#"
            rollout  r-1  field pipeline
            release  os 1.2.0
            status   running
            step     2 of 3
            created  2027-03-08T09:00:00Z by alice
            devices  14 devices: 4 succeeded, 2 in flight, 1 soaking, 7 pending

            STEP  STAGE   STATUS                     DEVICES  SUCCEEDED  FAILED  IN-FLIGHT  SOAKING  PENDING  REQUIRED
            1     dev     passed                     2        2          0       0          0        0        2
            1     test    passed                     2        2          0       0          0        0        2
            2     canary  running (approved by bob)  5        0          0       2          1        2        5
            3     rest    pending                    5        0          0       0          0        5        5

            step 1 stage dev: 2 committed + 30m soak; > 0 failed: pause; device timeout 45m
            ZONE           DEVICES  SUCCEEDED  FAILED  IN-FLIGHT  SOAKING  PENDING  ROLLBACK
            Europe/Berlin  2        2          0       0          0        0        0

            step 1 stage test: 2 committed + 30m soak; > 0 failed: pause; device timeout 45m
            ZONE           DEVICES  SUCCEEDED  FAILED  IN-FLIGHT  SOAKING  PENDING  ROLLBACK
            Europe/Berlin  2        2          0       0          0        0        0

            step 2 stage canary: 5 committed + 2h soak; > 0 failed: abort_and_rollback; device timeout 45m
            ZONE              DEVICES  SUCCEEDED  FAILED  IN-FLIGHT  SOAKING  PENDING  ROLLBACK
            Asia/Tokyo        3        0          0       2          1        0        0
            America/New_York  2        0          0       0          0        2        0

            TIME                  EVENT                      REASON
            2027-03-08T09:00:00Z  rollout.started            created by alice
            2027-03-09T03:00:30Z  rollout.step_advanced      step 1 passed: dev 2/2 committed, test 2/2 committed
            2027-03-09T03:00:30Z  rollout.awaiting_approval  stage canary needs an approval
            2027-03-09T08:00:00Z  rollout.approved           bob approved canary: dev and test look fine
        "#]],
    );
}

/// `rollout show --devices` of a rolled-back rollout: the reason, the lock holding it, the
/// rollback block with its duration and the device that did not go back, and the devices.
#[test]
fn show_rolled_back_with_devices() {
    check(
        &show_lines(&fixture("rolled-back.json")["rollout"], true),
        &expect![[r#"
            rollout     r-2  os 1.3.0
            release     os 1.3.0
            status      rolled_back
            reason      canary: 1 failed, 0 tolerated (dev-7: health check http failed)
            step        1 of 2
            held by     lock-2: automatic after r-2 rolled back: canary: 1 failed
            supersedes  r-1
            created     2027-03-10T09:00:00Z by alice
            devices     10 devices: 1 failed, 3 pending, 6 rolled back
            rollback    tripped 2027-03-11T01:20:00Z by dev-7: canary: 1 failed, 0 tolerated
                        [########..] 6/7 devices back, finished 2027-03-11T01:20:02Z after 1.8s
                        failed to roll back dev-3: offline since 01:10Z

            STEP  STAGE   STATUS                       DEVICES  SUCCEEDED  FAILED  IN-FLIGHT  SOAKING  PENDING  REQUIRED
            1     canary  tripped                      7        0          1       0          0        0        7
            2     rest    pending (approval required)  3        0          0       0          0        3        3

            step 1 stage canary: 7 committed + 30m soak; > 0 failed: abort_and_rollback; device timeout 45m
            ZONE           DEVICES  SUCCEEDED  FAILED  IN-FLIGHT  SOAKING  PENDING  ROLLBACK
            Europe/Berlin  7        0          1       0          0        0        6

            TIME                  EVENT                REASON
            2027-03-10T09:00:00Z  rollout.started      created by alice
            2027-03-11T01:20:00Z  rollout.aborted      canary: 1 failed, 0 tolerated (dev-7: health check http failed)
            2027-03-11T01:20:02Z  rollout.rolled_back  6 of 7 devices back on their previous release in 1.8s; dev-3 did not answer

            DEVICE  STEP  STAGE   ZONE           STATE        PLANNED               STARTED               COMMAND  PREVIOUS  REASON
            dev-3   1     canary  Europe/Berlin  failed       2027-03-11T01:00:00Z  2027-03-11T01:00:00Z  dev-3.9  os 1.2.0  rollback not acknowledged: offline
            dev-7   1     canary  Europe/Berlin  rolled_back  2027-03-11T01:05:00Z  2027-03-11T01:05:00Z  dev-7.3  os 1.2.0  health check http failed
        "#]],
    );
}

/// The watch screen on a terminal: a progress bar per step, stage and zone.
#[test]
fn watch_screen_running() {
    check(
        &watch_screen(
            &fixture("running.json")["rollout"],
            at("2027-03-09T17:30:00Z"),
            "1s",
        ),
        &expect![[r#"
            r-1  field pipeline  os 1.2.0    2027-03-09T17:30:00Z (every 1s)
            running, step 2 of 3

                                  PROGRESS      OK   FAILED  IN-FLIGHT  SOAKING  PENDING  STATUS
            step 1                [##########]  4/4  0       0          0        0
              dev                 [##########]  2/2  0       0          0        0        passed
                Europe/Berlin     [##########]  2/2  0       0          0        0
              test                [##########]  2/2  0       0          0        0        passed
                Europe/Berlin     [##########]  2/2  0       0          0        0
            step 2                [..........]  0/5  0       2          1        2
              canary              [..........]  0/5  0       2          1        2        running (approved by bob)
                Asia/Tokyo        [..........]  0/3  0       2          1        0
                America/New_York  [..........]  0/2  0       0          0        2
            step 3                [..........]  0/5  0       0          0        5
              rest                [..........]  0/5  0       0          0        5        pending

            2027-03-08T09:00:00Z r-1 rollout.started: created by alice
            2027-03-09T03:00:30Z r-1 rollout.step_advanced: step 1 passed: dev 2/2 committed, test 2/2 committed
            2027-03-09T03:00:30Z r-1 rollout.awaiting_approval: stage canary needs an approval
            2027-03-09T08:00:00Z r-1 rollout.approved: bob approved canary: dev and test look fine
        "#]],
    );
}

/// The three states the scripted server of the exit-status tests serves, for rollout r-2.
fn watch_script() -> Vec<Value> {
    let done = fixture("rolled-back.json");
    let running = patched(
        &done,
        &json!({"rollout": {
            "status": "running", "status_reason": null, "rollback": null, "held_by": [],
            "counts": {"pending": 5, "in_flight": 2, "soaking": 1, "succeeded": 2, "failed": 0,
                       "rolled_back": 0},
            "stages": [],
            "events": [{"at": "2027-03-10T09:00:00Z", "kind": "rollout.started",
                        "reason": "created by alice"}]}}),
    );
    let rolling_back = patched(
        &done,
        &json!({"rollout": {
            "status": "rolling_back", "held_by": [],
            "rollback": {"done": 3, "finished_at": null, "duration_ms": null, "failed": []},
            "events": [{"at": "2027-03-10T09:00:00Z", "kind": "rollout.started",
                        "reason": "created by alice"},
                       {"at": "2027-03-11T01:20:00Z", "kind": "rollout.aborted",
                        "reason": "canary: 1 failed, 0 tolerated (dev-7: health check http failed)"}]}}),
    );
    vec![running, rolling_back, done]
}

/// Without a terminal, watch prints a line per change (stamped with the poll's time) and per
/// new event (stamped with the event's); the waiting states say what they wait for.
#[test]
fn watch_lines_per_change() {
    let script = watch_script();
    let mut lines = Vec::new();
    let mut prev: Option<&Value> = None;
    for (i, state) in script.iter().enumerate() {
        let now = at("2027-03-11T01:19:58Z").plus_secs(i64::try_from(i).unwrap() * 2);
        let r = &state["rollout"];
        lines.extend(watch_lines(prev, r, now));
        // An unchanged poll prints nothing.
        assert!(watch_lines(Some(r), r, now.plus_secs(1)).is_empty());
        prev = Some(r);
    }
    check(
        &lines,
        &expect![[r#"
            2027-03-10T09:00:00Z r-2 rollout.started: created by alice
            01:19:58Z r-2 running step 1/2
            01:20:00Z r-2 rollout.aborted: canary: 1 failed, 0 tolerated (dev-7: health check http failed)
            01:20:00Z r-2 rolling_back step 1/2 | canary [..........] 0/7 ok 1 failed 0 in flight | rollback [####......] 3/7 back | canary: 1 failed, 0 tolerated (dev-7: health check http failed)
            01:20:02Z r-2 rollout.rolled_back: 6 of 7 devices back on their previous release in 1.8s; dev-3 did not answer
            01:20:02Z r-2 rolled_back step 1/2 | canary [..........] 0/7 ok 1 failed 0 in flight | rollback [########..] 6/7 back in 1.8s 1 failed | canary: 1 failed, 0 tolerated (dev-7: health check http failed)
        "#]],
    );

    let waiting: Vec<String> = [
        json!({"status": "paused", "status_reason": "paused by bob: checking dashboards"}),
        json!({"status": "held", "status_reason": "a lock holds it"}),
        json!({"status": "awaiting_approval", "stages": [
            {"step": 1, "name": "canary", "status": "awaiting_approval"}]}),
    ]
    .iter()
    .map(|p| {
        let r = patched(&fixture("running.json")["rollout"], p);
        status_line(&r)
    })
    .collect();
    check(
        &waiting,
        &expect![[r#"
        r-1 paused step 2/3 | canary [..........] 0/5 ok 0 failed 2 in flight 1 soaking | waiting: paused by bob: checking dashboards
        r-1 held step 2/3 | canary [..........] 0/5 ok 0 failed 2 in flight 1 soaking | waiting: a lock holds it
        r-1 awaiting_approval step 2/3 | canary [..........] 0/0 ok 0 failed 0 in flight | waiting: approval of canary (swellctl rollout approve r-1)
    "#]],
    );
}

// ---------------------------------------------------------------------------------------------
// `watch` exit status, through the binary and a scripted server.

/// Serves `GET /v1/rollouts/{id}` on 127.0.0.1:0 with `bodies` in turn (the last one again
/// once they run out); anything else is a 404. Returns the base URL and the paths requested.
fn scripted_server(bodies: Vec<Value>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut next = 0;
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // The rest of the head; a GET has no body.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
            log.lock().unwrap().push(path.clone());
            let (status, body) = if path.starts_with("/v1/rollouts/") && !bodies.is_empty() {
                let body = &bodies[next.min(bodies.len() - 1)];
                next += 1;
                ("200 OK", body.to_string())
            } else {
                (
                    "404 Not Found",
                    json!({"error": "no such path"}).to_string(),
                )
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

fn watch(url: &str, id: &str) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_swellctl"))
        .args([
            "--controller",
            url,
            "rollout",
            "watch",
            id,
            "--interval",
            "10ms",
        ])
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("SWELL_TOKEN")
        .output()
        .unwrap()
}

/// running → rolling_back → rolled_back: a line per state, then the one-line error and exit
/// status 3.
#[test]
fn watch_exits_3_when_rolled_back() {
    let (url, seen) = scripted_server(watch_script());
    let o = watch(&url, "r-2");
    let stdout = String::from_utf8(o.stdout).unwrap();
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(
        stderr,
        "error: rollout watch: rollout r-2 ended rolled_back: canary: 1 failed, 0 tolerated \
         (dev-7: health check http failed)\n"
    );
    let statuses: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split(' ').nth(2).filter(|_| l.contains(" step ")))
        .collect();
    assert_eq!(
        statuses,
        ["running", "rolling_back", "rolled_back"],
        "{stdout}"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert!(seen.lock().unwrap().iter().all(|p| p == "/v1/rollouts/r-2"));
}

/// running → completed: exit status 0, nothing on stderr.
#[test]
fn watch_exits_0_when_completed() {
    let running = fixture("running.json");
    let completed = patched(&running, &json!({"rollout": {"status": "completed"}}));
    let (url, _) = scripted_server(vec![running.clone(), running, completed]);
    let o = watch(&url, "r-1");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stderr.is_empty());
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .contains(" r-1 completed step 2/3 "),
        "{stdout}"
    );
}

/// Superseded: exit status 4; a paused rollout before it is watched through.
#[test]
fn watch_exits_4_when_superseded() {
    let running = fixture("running.json");
    let paused = patched(
        &running,
        &json!({"rollout": {"status": "paused", "status_reason": "paused by bob"}}),
    );
    let superseded = patched(
        &running,
        &json!({"rollout": {"status": "superseded", "status_reason": "superseded by r-3",
                            "superseded_by": "r-3"}}),
    );
    let (url, _) = scripted_server(vec![running, paused, superseded]);
    let o = watch(&url, "r-1");
    assert_eq!(o.status.code(), Some(4));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(stdout.contains("waiting: paused by bob"), "{stdout}");
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        "error: rollout watch: rollout r-1 ended superseded: superseded by r-3\n"
    );
}

/// An unknown rollout: the controller's 404 as one line, exit status 1.
#[test]
fn watch_of_an_unknown_rollout_fails_with_status_1() {
    let (url, _) = scripted_server(vec![]);
    let o = watch(&url, "r-9");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        "error: rollout watch: no such path (HTTP 404)\n"
    );
}
