//! The rollout scenario against real devices reached over SSH (hil-tests/README.md, "Real
//! hardware"). It is `#[ignore]`d, so `cargo test` lists it as ignored with the reason; run it
//! with `--ignored` once the environment names a controller, a release, a plan and the
//! devices. Enabled without that configuration it fails, never skips.
//!
//! What it checks on real hardware: before the rollout each device's own agent (over SSH)
//! reports a settled state; the rollout ends; every device the rollout counts as succeeded
//! reports, on the device itself, Committed on the release; every other device that started
//! reports a settled state off the release (it went back).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One device: its id, how to reach it, and its agent's config path there.
struct Device {
    id: String,
    ssh: String,
    config: String,
}

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set; see hil-tests/README.md, \"Real hardware\""))
}

/// `SWELL_HIL_DEVICES` names a file of lines `ID SSH-TARGET AGENT-CONFIG` (`#` comments).
fn devices() -> Vec<Device> {
    let path = env("SWELL_HIL_DEVICES");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let list: Vec<Device> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(
                f.len(),
                3,
                "{path}: expected `ID SSH-TARGET AGENT-CONFIG`: {l:?}"
            );
            Device {
                id: f[0].to_owned(),
                ssh: f[1].to_owned(),
                config: f[2].to_owned(),
            }
        })
        .collect();
    assert!(!list.is_empty(), "{path} lists no device");
    list
}

/// `swell-agent status --output json` on the device, over SSH.
fn status(d: &Device) -> Value {
    let out = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", &d.ssh])
        .args([
            "swell-agent",
            "status",
            "--output",
            "json",
            "--config",
            &d.config,
        ])
        .output()
        .unwrap_or_else(|e| panic!("ssh {}: {e}", d.ssh));
    assert!(
        out.status.success(),
        "{} ({}): swell-agent status failed: {}",
        d.id,
        d.ssh,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn api(method: &str, path: &str, body: Option<&Value>) -> Value {
    let url = format!(
        "{}{path}",
        env("SWELL_HIL_CONTROLLER").trim_end_matches('/')
    );
    let auth = format!("Bearer {}", env("SWELL_HIL_TOKEN"));
    let mut resp = match (method, body) {
        ("POST", Some(b)) => ureq::post(&url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(serde_json::to_vec(b).unwrap().as_slice())
            .unwrap_or_else(|e| panic!("POST {url}: {e}")),
        _ => ureq::get(&url)
            .header("Authorization", &auth)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}")),
    };
    let text = resp.body_mut().read_to_string().unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: {e}: {text}"))
}

/// Scenario: a rollout of `SWELL_HIL_RELEASE` (NAME@VERSION, already uploaded) with the plan
/// in `SWELL_HIL_PLAN` over the devices in `SWELL_HIL_DEVICES`, through the controller at
/// `SWELL_HIL_CONTROLLER` (token `SWELL_HIL_TOKEN`); each device's own agent confirms the
/// outcome the rollout reports.
#[test]
#[ignore = "real hardware: set SWELL_HIL_CONTROLLER, SWELL_HIL_TOKEN, SWELL_HIL_RELEASE, SWELL_HIL_PLAN and SWELL_HIL_DEVICES, then run with --ignored (hil-tests/README.md)"]
fn rollout_on_real_devices() {
    let devices = devices();
    let release = env("SWELL_HIL_RELEASE");
    let (name, version) = release
        .split_once('@')
        .unwrap_or_else(|| panic!("SWELL_HIL_RELEASE {release:?} is not NAME@VERSION"));
    let plan_path = env("SWELL_HIL_PLAN");
    let plan = std::fs::read_to_string(&plan_path).unwrap_or_else(|e| panic!("{plan_path}: {e}"));
    let limit = Duration::from_secs(
        std::env::var("SWELL_HIL_TIMEOUT_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4 * 3600),
    );

    for d in &devices {
        let s = status(d);
        let state = s["state"].as_str().unwrap_or_default();
        assert!(
            ["idle", "committed", "rolled_back", "failed"].contains(&state),
            "{}: not settled before the rollout: {s}",
            d.id
        );
        println!("{}: {state}, {}", d.id, s["release"]);
    }

    let created = api(
        "POST",
        "/v1/rollouts",
        Some(&json!({"plan": plan, "release": {"name": name, "version": version}})),
    );
    let id = created["rollout"]["id"].as_str().unwrap().to_owned();
    println!("rollout {id} created");
    let started = Instant::now();
    let rollout = loop {
        let r = api("GET", &format!("/v1/rollouts/{id}"), None)["rollout"].clone();
        let st = r["status"].as_str().unwrap_or_default().to_owned();
        if ["completed", "rolled_back", "aborted", "superseded"].contains(&st.as_str()) {
            break r;
        }
        assert!(started.elapsed() < limit, "{id} still {st} after {limit:?}");
        std::thread::sleep(Duration::from_secs(5));
    };
    println!(
        "{id}: {} in {:.0} s; counts {}; rollback {}",
        rollout["status"],
        started.elapsed().as_secs_f64(),
        rollout["counts"],
        rollout["rollback"]
    );

    let target = format!("{name} {version}");
    for d in &devices {
        let Some(rd) = rollout["devices"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == d.id.as_str()))
        else {
            println!("{}: not in the rollout", d.id);
            continue;
        };
        let s = status(d);
        match rd["state"].as_str().unwrap_or_default() {
            "succeeded" => assert!(
                s["state"] == "committed" && s["release"] == target.as_str(),
                "{}: the rollout counts it succeeded, the device says {s}",
                d.id
            ),
            "rolled_back" | "failed" => assert!(
                !(s["state"] == "committed" && s["release"] == target.as_str()),
                "{}: the rollout counts it back, the device still runs {target}: {s}",
                d.id
            ),
            other => println!("{}: {other} in the rollout; the device says {s}", d.id),
        }
    }
}
