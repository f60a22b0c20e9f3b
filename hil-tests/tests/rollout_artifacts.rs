//! Artifact faults (issue 6): the devices download their images through an [`ArtifactProxy`]
//! in front of the controller's API (the controller's `[http] public_url` is the proxy), which
//! truncates or corrupts the artifact responses. The real controller as a separate process
//! (simulated clock at 60 times real time), 10 real agents on simulated boards in four zones,
//! two of them in the canary cohort; the plan is a canary stage and a wave. One fleet goes
//! through both scenarios, in order:
//!
//! a. **A truncating server**: every artifact response is cut after [`CUT`] body bytes of the
//!    64 KiB image and its connection closed. Each device records how far it got, asks again
//!    with `Range: bytes=N-` from exactly there, and needs three responses for the image; the
//!    rollout of 1.1.0 completes on every device. Asserted from the proxy's log, request by
//!    request; the figures (requests, resumes, time to complete) are printed. The resume
//!    point is the checkpoint the agent writes when a transfer is cut short (what arrived,
//!    synced), not a periodic one: the default `checkpoint_bytes` (8 MiB) is left alone.
//! b. **A corrupting server**: one byte of every artifact response is inverted. Each canary
//!    downloads the whole image, finds that its digest is not the manifest's and says so,
//!    naming the URL, the expected digest and the one it got (checked against the digest of
//!    the image with that byte inverted); the canary gate trips (`abort_and_rollback`), no
//!    device of the wave starts or downloads, and every device still runs 1.1.0, committed,
//!    with no trial armed, by its own account. Then the server is healed and a new rollout of
//!    the same release completes on every device.

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
use swell_hil::faults::{ArtifactFault, ArtifactRequest};
use swell_proto::Sha256Digest;
use swell_proto::messages::Slot;

/// Fleet size.
const DEVICES: usize = 10;
/// The canary cohort.
const CANARIES: [&str; 2] = ["gw-00", "gw-05"];
/// Where the truncating server cuts each response's body: a 64 KiB image then takes three
/// responses (0, 24 000 and 48 000 onwards), the last one whole.
const CUT: u64 = 24_000;
/// The body offset of the byte the corrupting server inverts.
const CORRUPT_AT: u64 = 30_000;
/// How long a rollout may take before the test gives up (real time).
const LIMIT: Duration = Duration::from_secs(60);

/// The canaries first, then everyone else; open all day but one minute. The canary stage
/// tolerates one failure so that both canaries report before its gate trips: a gate that
/// tripped at the first report would cancel the second canary's download and leave its
/// report to chance. Two failures trip it, and nothing else may start.
fn plan(name: &str) -> String {
    format!(
        "name = \"{name}\"\n\
         [window]\nstart = \"00:00\"\nend = \"23:59\"\n\
         [limits]\nmax_in_flight = {DEVICES}\nmax_starts_per_minute = 120\n\
         [defaults]\ndevice_timeout = \"10m\"\n\
         success = {{ committed = \"100%\", soak = \"1m\" }}\n\
         failure = {{ tolerate = 0, action = \"abort_and_rollback\" }}\n\
         [[step]]\n[[step.stage]]\nname = \"canary\"\nselector = {{ cohort = \"canary\" }}\n\
         failure = {{ tolerate = 1, action = \"abort_and_rollback\" }}\n\
         [[step]]\n[[step.stage]]\nname = \"wave\"\nselector = {{}}\n"
    )
}

const TERMINAL: [&str; 4] = ["completed", "rolled_back", "aborted", "superseded"];

/// Waits until rollout `id` has ended, or paused.
fn wait_end(f: &Fleet, id: &str) -> Value {
    f.api.wait_rollout(id, "the end (or a pause)", LIMIT, |r| {
        r["status"] == "paused" || TERMINAL.iter().any(|s| r["status"] == *s)
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

fn rollout_devices(r: &Value) -> BTreeMap<String, Value> {
    r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_owned(), d.clone()))
        .collect()
}

/// A device's own account, read as `rollout_chaos.rs` reads it: its journal (through
/// `swell-agent status`) and its board's boot environment.
#[derive(Debug)]
struct Own {
    /// The journal's update state.
    state: String,
    /// Whether the boot environment has a trial armed.
    trial: bool,
    /// The version of the booted slot's image (`None`: the factory image).
    running: Option<String>,
    status: Value,
}

fn own_account(dir: &Path, id: &str) -> Own {
    let board = dir.join("boards").join(id);
    let out = Command::new(env!("CARGO_BIN_EXE_swell-demo"))
        .args(["status", "--output", "json", "--config"])
        .arg(board.join("agent.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let env = swell_agent::bootctl::sim_env_store(&board.join("board"))
        .unwrap()
        .load()
        .unwrap();
    let vars = BootVars::default();
    let slot = vars.slot(&env).unwrap().unwrap_or(Slot::A);
    let view = &status[if slot == Slot::A { "slot_a" } else { "slot_b" }];
    Own {
        state: status["state"].as_str().unwrap_or_default().to_owned(),
        trial: vars.upgrade_available(&env).unwrap(),
        running: view["version"].as_str().map(str::to_owned),
        status,
    }
}

/// The artifact requests the proxy saw since it had seen `mark`.
fn requests_since(f: &Fleet, mark: usize) -> Vec<ArtifactRequest> {
    f.artifacts().requests().split_off(mark)
}

#[test]
fn rollout_artifacts() {
    let mut devices = layout(DEVICES, &ZONES, 2);
    for d in &mut devices {
        if CANARIES.contains(&d.id.as_str()) {
            d.cohort = Some("canary".into());
        }
    }
    let f = Fleet::start_with_artifact_proxy(
        devices,
        FleetOptions {
            clock_start: jiff::Timestamp::now(),
            speed: 60,
            tick_ms: 100,
        },
    );
    println!(
        "fleet: {} devices enrolled and online in {:.1} s; artifacts through {}",
        f.devices.len(),
        f.enrolled_in.as_secs_f64(),
        f.artifacts().url()
    );
    f.release("1.1.0", "healthy");
    f.release("1.2.0", "healthy");

    let t = Instant::now();
    truncating_server(&f, "1.1.0");
    println!(
        "== scenario a (truncating server): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    corrupting_server(&f, "1.2.0", "1.1.0");
    println!(
        "== scenario b (corrupting server): {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// The size of release `version`'s image, as built by [`Fleet::release`].
fn image(f: &Fleet, version: &str) -> Vec<u8> {
    std::fs::read(f.dir().join(format!("os-{version}.img"))).unwrap()
}

/// Scenario a: every artifact response cut after [`CUT`] bytes; each device resumes from
/// where the cut came, and the rollout completes.
fn truncating_server(f: &Fleet, version: &str) {
    let size = image(f, version).len() as u64;
    assert!(
        size > 2 * CUT,
        "the image ({size} bytes) must need resuming twice"
    );
    let mark = f.artifacts().requests().len();
    f.artifacts()
        .set_fault(ArtifactFault::Truncate { after: CUT });

    let began = Instant::now();
    let id = f.api.start_rollout(&plan("truncating server"), version);
    let r = wait_end(f, &id);
    let took = began.elapsed();
    assert_status(f, &r, "completed");
    assert_eq!(
        r["counts"]["succeeded"],
        DEVICES,
        "{}",
        describe_rollout(&r)
    );
    f.wait_versions(f.devices.iter().map(|d| d.id.as_str()), version, LIMIT);
    f.artifacts().set_fault(ArtifactFault::Pass);

    // Request by request: a fresh download from 0, then one resume from each cut, each cut
    // again after CUT bytes of its own body until the rest fits.
    let seen = requests_since(f, mark);
    let mut per_offset: BTreeMap<u64, usize> = BTreeMap::new();
    for q in &seen {
        let from = q.resume_offset().unwrap_or(0);
        assert!(
            q.range.is_none() || from > 0,
            "a Range request must be a resume: {q:?}"
        );
        let rest = size - from;
        let want_status = if q.range.is_some() { 206 } else { 200 };
        assert_eq!(
            (q.status, q.body_bytes, q.truncated),
            (Some(want_status), rest.min(CUT), rest > CUT),
            "{q:?}"
        );
        *per_offset.entry(from).or_default() += 1;
    }
    // Every device started once and resumed from exactly the cuts: nothing started over
    // from 0, nothing asked for a range it already had.
    let n = DEVICES;
    assert_eq!(
        per_offset,
        BTreeMap::from([(0, n), (CUT, n), (2 * CUT, n)]),
        "requests per starting offset"
    );
    let resumes = seen.iter().filter(|q| q.range.is_some()).count();
    let cut = seen.iter().filter(|q| q.truncated).count();
    let bytes: u64 = seen.iter().map(|q| q.body_bytes).sum();
    assert_eq!(bytes, size * n as u64, "no byte fetched twice");
    println!(
        "{id} ({version}) through a server that cuts every response after {CUT} bytes of a \
         {size}-byte image: completed in {:.1} s, {n}/{n} on {version}; {} artifact requests, \
         {cut} cut short, {resumes} resumed with Range (from {CUT} and {}), {bytes} body bytes \
         in all (= {n} images, nothing fetched twice)",
        took.as_secs_f64(),
        seen.len(),
        2 * CUT
    );
}

/// Scenario b: every artifact response has one byte inverted; the canaries refuse the image
/// with a digest mismatch, the gate trips, nothing else starts and every device keeps
/// `previous`; healed, the same release goes out to everyone.
#[allow(clippy::too_many_lines)] // One scenario, read top to bottom.
fn corrupting_server(f: &Fleet, version: &str, previous: &str) {
    let good = image(f, version);
    let size = good.len() as u64;
    let mut bad = good.clone();
    bad[usize::try_from(CORRUPT_AT).unwrap()] ^= 0xff;
    let expected = Sha256Digest::of(&good).to_hex();
    let got = Sha256Digest::of(&bad).to_hex();
    let mark = f.artifacts().requests().len();
    f.artifacts()
        .set_fault(ArtifactFault::Corrupt { at: CORRUPT_AT });

    let began = Instant::now();
    let id = f.api.start_rollout(&plan("corrupting server"), version);
    let r = wait_end(f, &id);
    let took = began.elapsed();
    assert_status(f, &r, "rolled_back");
    let rb = &r["rollback"];
    assert!(
        CANARIES.iter().any(|c| rb["tripped_by"] == *c),
        "the canary gate trips: {rb}"
    );
    let why = r["status_reason"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("stage canary: 2 of 2 devices failed") && why.contains("digest mismatch"),
        "the gate names the stage and the cause: {why}"
    );
    let outcome = rollout_devices(&r);
    let url = format!("{}/v1/artifacts/{expected}", f.artifacts().url());
    // The device's own words, as it reported them: what failed, where, and both digests.
    let says_mismatch = |text: &str| {
        text.contains(&format!(
            "digest mismatch for server {url}: expected SHA-256 {expected}, got {got}"
        ))
    };
    for c in CANARIES {
        let d = &outcome[c];
        assert_eq!(d["stage"], "canary");
        assert_eq!(d["state"], "failed", "{d}");
        let reason = d["reason"].as_str().unwrap_or_default();
        assert!(says_mismatch(reason), "{c}: the rollout's reason: {reason}");
    }
    let wave: Vec<&Value> = outcome.values().filter(|d| d["stage"] == "wave").collect();
    assert_eq!(wave.len(), DEVICES - CANARIES.len());
    for d in &wave {
        assert!(d["started_at"].is_null(), "a wave device started: {d}");
        assert_eq!(d["state"], "not_started", "{d}");
    }
    // The API's device view says the same.
    let all = f.api.devices().unwrap();
    for c in CANARIES {
        let last = all[c]["last_error"].as_str().unwrap_or_default();
        assert!(says_mismatch(last), "{c}: last_error {last}");
    }

    // Only the canaries downloaded: one whole, corrupted response each, nothing retried (a
    // wrong digest is not worth a retry).
    let seen = requests_since(f, mark);
    assert_eq!(seen.len(), CANARIES.len(), "{seen:#?}");
    for q in &seen {
        assert_eq!(
            (q.range.as_deref(), q.status, q.body_bytes),
            (None, Some(200), size)
        );
        assert!(q.corrupted && !q.truncated, "{q:?}");
    }

    // Every device still runs the previous release, committed, with no trial armed, by its
    // own account; the controller's inventory agrees.
    let ids: Vec<&str> = f.devices.iter().map(|d| d.id.as_str()).collect();
    let own: BTreeMap<&str, Own> = eventually("every device settled", LIMIT, || {
        let mut own = BTreeMap::new();
        for id in &ids {
            let o = own_account(f.dir(), id);
            // The canaries' journals end their failed update; until then they are not settled.
            if o.trial || !matches!(o.state.as_str(), "committed" | "idle" | "failed") {
                return Err(format!("{id}: trial={} {}", o.trial, o.status));
            }
            own.insert(*id, o);
        }
        Ok(own)
    });
    for (id, o) in &own {
        assert_eq!(
            o.running.as_deref(),
            Some(previous),
            "{id} runs its previous image: {:#}",
            o.status
        );
    }
    let versions = f.versions().unwrap();
    for id in &ids {
        assert_eq!(
            versions[*id].as_deref(),
            Some(previous),
            "inventory of {id}"
        );
    }
    let canary_states: Vec<String> = CANARIES
        .iter()
        .map(|c| format!("{c} {}", own[c].state))
        .collect();
    println!(
        "{id} ({version}) through a server that inverts body byte {CORRUPT_AT}: {} in {:.1} s, \
         tripped by {}; {} artifact requests (the canaries'), 0 retries; canaries' agents: {}; \
         all {DEVICES} still on {previous}, none in a trial; the rollout: {}; a canary: {}",
        r["status"],
        took.as_secs_f64(),
        rb["tripped_by"],
        seen.len(),
        canary_states.join(", "),
        r["status_reason"],
        outcome[CANARIES[0]]["reason"]
    );

    // Healed: the same release, a new rollout, every device.
    f.artifacts().set_fault(ArtifactFault::Pass);
    let mark = f.artifacts().requests().len();
    let began = Instant::now();
    let id = f.api.start_rollout(&plan("healed server"), version);
    let r = wait_end(f, &id);
    let took = began.elapsed();
    assert_status(f, &r, "completed");
    assert_eq!(
        r["counts"]["succeeded"],
        DEVICES,
        "{}",
        describe_rollout(&r)
    );
    f.wait_versions(ids.iter().copied(), version, LIMIT);
    let seen = requests_since(f, mark);
    assert_eq!(seen.len(), DEVICES, "one whole download each: {seen:#?}");
    assert!(
        seen.iter()
            .all(|q| q.status == Some(200) && q.body_bytes == size && !q.corrupted),
        "{seen:#?}"
    );
    println!(
        "{id} ({version}) once healed: completed in {:.1} s, {DEVICES}/{DEVICES} on {version}",
        took.as_secs_f64()
    );
}
