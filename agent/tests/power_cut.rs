//! Power cuts at every durable write of an update, on the simulated board, with the real
//! `swell-agent` binary.
//!
//! An update of a device that runs release 1.0.0 (slot B) to 2.0.0 (4 MiB, served over HTTP
//! with a checkpoint every MiB) is first run uncut with `SWELL_FAULT_TRACE=1`, which lists
//! every durable write point of every boot. Then, for each (boot, point), the same update runs
//! from the same starting device with `SWELL_FAULT_BOOT=boot SWELL_FAULT_KILL_AT=point`: the
//! agent SIGKILLs itself right after that write reached the disk, the board powers up again,
//! and the later boots must finish the job. After each run the device must tell the truth:
//!
//! - the board settles, in the expected final state (a healthy image: `committed` on 2.0.0;
//!   an unhealthy one: `rolled_back` to 1.0.0, the old slot booted);
//! - the booted slot holds exactly the expected image, the old slot is untouched, and both
//!   slots' journal records match what the slots hold; no trial is left armed;
//! - the journal's outbox holds the update's reports exactly once each, in order, every one
//!   verifying with the device key, sequence numbers rising strictly across the whole outbox,
//!   the last one naming the version and slot actually running;
//! - a download cut after a checkpoint resumes from that checkpoint (checked in the server's
//!   request log), not from the start.
//!
//! A cut before the install request itself is durable loses the request: the device must then
//! be exactly as before, and the same install, given again, must succeed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use common::{Device, Options, Output, Release, assert_increasing, digest_prefix, release, run};
use support::{Behaviour, TestServer};
use swell_agent::update::State;
use swell_proto::messages::{Slot, UpdateState};

const MIB: usize = 1 << 20;

/// The new image's size: four 1 MiB checkpoints' worth, so the slot write has three
/// checkpoints inside it.
const IMAGE_SIZE: usize = 4 * MIB;

/// Boards run at once: most of a run is waiting (health rounds, fsync), not computing.
const WORKERS: usize = 4;

/// How the update ends when nothing goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Committed on the new release, from the slot it was written to.
    Committed,
    /// Rolled back to the previous release, from the old slot.
    RolledBack,
}

/// One durable write point: the agent start (1-based) and the point within it (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    boot: usize,
    point: usize,
}

/// The update under test and the device it starts from.
struct Scenario {
    /// Runs 1.0.0 from slot B; its outbox holds the reports of that install.
    baseline: Device,
    v1: Release,
    v2: Release,
    /// The expected end, or `None` for "whichever, as long as the device tells the truth".
    outcome: Option<Outcome>,
}

impl Scenario {
    fn new(behaviour: &str, outcome: Option<Outcome>, bootlimit: Option<u32>) -> Self {
        let baseline = Device::new(Options {
            checkpoint_bytes: Some(MIB as u64),
            bootlimit,
            ..Options::default()
        });
        let v1 = release("1.0.0", 1, "healthy", 64 * 1024).build();
        let out = baseline.install(&v1);
        assert!(out.status.success(), "baseline install: {}", out.stderr);
        assert_eq!(baseline.status()["state"], "committed");
        assert_eq!(baseline.env().slot, Slot::B);
        let v2 = release("2.0.0", 2, behaviour, IMAGE_SIZE).build();
        Self {
            baseline,
            v1,
            v2,
            outcome,
        }
    }

    /// Runs the update on a copy of the baseline with `env` set for the board; returns the
    /// device, the board's output and the server's request log.
    fn update(&self, env: &[(&str, String)]) -> (Device, Output, Vec<support::Logged>) {
        let device = self.baseline.copy();
        let server = TestServer::start(self.v2.image.clone(), Behaviour::Normal);
        let manifest = device.write_file("2.0.0.manifest.json", &self.v2.manifest);
        let mut cmd = device.board_install(&manifest, &server.url());
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let out = run(cmd, common::RUN_LIMIT);
        let requests = server.requests();
        (device, out, requests)
    }

    /// The uncut update with every durable write traced: the labels of each boot's points.
    fn trace(&self) -> Vec<Vec<String>> {
        let (device, out, requests) = self.update(&[("SWELL_FAULT_TRACE", "1".into())]);
        assert!(out.status.success(), "uncut update: {}", out.stderr);
        self.assert_final(&device, "uncut");
        assert_eq!(requests.len(), 1, "{requests:?}");
        let mut boots: Vec<Vec<String>> = Vec::new();
        for line in out.stderr.lines() {
            let Some(rest) = line.strip_prefix("fault-point ") else {
                continue;
            };
            let (n, what) = rest.split_once(' ').unwrap();
            let n: usize = n.parse().unwrap();
            if n == 1 {
                boots.push(Vec::new());
            }
            let boot = boots.last_mut().unwrap();
            assert_eq!(n, boot.len() + 1, "points out of order:\n{}", out.stderr);
            boot.push(what.to_string());
        }
        boots
    }

    /// The slot the update writes: the one not running 1.0.0.
    fn new_slot(&self) -> Slot {
        Slot::A
    }

    /// Checks everything the device must say once the update has settled.
    fn assert_final(&self, device: &Device, context: &str) {
        let outcome = self
            .outcome
            .unwrap_or_else(|| match device.journal().state {
                State::Committed(_) => Outcome::Committed,
                State::RolledBack(..) => Outcome::RolledBack,
                other => panic!("{context}: final state {other:?}"),
            });
        let (booted, version, state) = match outcome {
            Outcome::Committed => (self.new_slot(), "2.0.0", UpdateState::Committed),
            Outcome::RolledBack => (self.new_slot().other(), "1.0.0", UpdateState::RolledBack),
        };
        // The boot environment: no trial armed, the expected slot boots.
        let env = device.env();
        assert_eq!(
            (env.slot, env.upgrade_available, env.bootcount),
            (booted, false, 0),
            "{context}: boot environment"
        );
        // The booted slot holds exactly the expected image; the old one was never touched.
        let expected = if version == "2.0.0" {
            &self.v2
        } else {
            &self.v1
        };
        assert!(
            device.slot_bytes(booted) == expected.image,
            "{context}: slot {booted:?} does not hold {version}"
        );
        assert!(
            device.slot_bytes(self.new_slot().other()) == self.v1.image,
            "{context}: the old slot was modified"
        );
        // The journal: the state, and slot records that match what the slots hold.
        let p = device.journal();
        match (&p.state, outcome) {
            (State::Committed(job), Outcome::Committed) => {
                assert_eq!(job.release.version.to_string(), "2.0.0");
            }
            (State::RolledBack(job, reason), Outcome::RolledBack) => {
                assert_eq!(job.release.version.to_string(), "2.0.0");
                let named = reason.contains("health command") && reason.contains("exited with");
                assert!(
                    named || self.outcome.is_none(),
                    "{context}: the reason does not name the failing check: {reason}"
                );
            }
            (other, _) => panic!("{context}: final state {other:?}"),
        }
        for slot in [Slot::A, Slot::B] {
            let record = p.slot(slot).unwrap_or_else(|| {
                panic!("{context}: no journal record for slot {slot:?}");
            });
            assert!(record.verified, "{context}: slot {slot:?} unverified");
            assert_eq!(
                digest_prefix(device.slot_path(slot), record.size),
                record.sha256,
                "{context}: slot {slot:?} does not hold what the journal says"
            );
        }
        let status = device.status();
        assert_eq!(
            status["release"],
            format!("{} 2.0.0", common::RELEASE),
            "{context}"
        );
        // The outbox: every report verifies, numbers rise across the whole outbox, and the
        // update's reports are there exactly once, in order, the last one true.
        let reports = device.outbox_reports();
        let seqs: Vec<u64> = reports.iter().map(|(s, _)| *s).collect();
        assert_increasing(&seqs);
        let baseline = self.baseline.journal().outbox.len();
        let story: Vec<UpdateState> = reports[baseline..].iter().map(|(_, r)| r.state).collect();
        if self.outcome.is_some() {
            assert_eq!(
                story,
                [
                    UpdateState::Downloading,
                    UpdateState::Verifying,
                    UpdateState::Installed,
                    UpdateState::Trial,
                    state,
                ],
                "{context}: the outbox does not tell the update once"
            );
        } else {
            // Some states may be skipped (the trial was cut short), none repeated or reordered.
            let order = [
                UpdateState::Downloading,
                UpdateState::Verifying,
                UpdateState::Installed,
                UpdateState::Trial,
                UpdateState::Committed,
                UpdateState::RolledBack,
            ];
            let ranks: Vec<usize> = story
                .iter()
                .map(|s| order.iter().position(|o| o == s).unwrap())
                .collect();
            assert!(
                story.starts_with(&order[..3])
                    && story.last() == Some(&state)
                    && ranks.windows(2).all(|w| w[0] < w[1]),
                "{context}: the outbox tells {story:?}"
            );
        }
        // The anti-rollback counter rises exactly when a commit was recorded (it stays raised
        // if the bootloader fell back before the commit reached the boot environment).
        let committed = story.contains(&UpdateState::Committed);
        assert_eq!(
            p.security_version,
            if committed { 2 } else { 1 },
            "{context}"
        );
        let (_, last) = reports.last().unwrap();
        assert_eq!(
            last.target
                .as_ref()
                .map(|t| t.version.to_string())
                .as_deref(),
            Some("2.0.0")
        );
        assert_eq!(
            last.running.version.as_ref().map(ToString::to_string),
            Some(version.to_string()),
            "{context}: the last report names the wrong version"
        );
        assert_eq!(
            last.running.slot, booted,
            "{context}: the last report names the wrong slot"
        );
    }
}

/// Where the points of the first boot fall: the request becomes durable, the checkpoints,
/// the end of the slot write.
struct Layout {
    /// The point after which the install request is durable (`Downloading` persisted).
    request_durable: usize,
    /// The "slot data" points: one per checkpoint, then the final one.
    slot_data: Vec<usize>,
}

impl Layout {
    fn of(boot1: &[String]) -> Self {
        let renames: Vec<usize> = positions(boot1, "journal rename");
        let slot_data = positions(boot1, "slot data");
        assert!(
            slot_data.len() >= 4,
            "expected three checkpoints and the end of the slot write: {boot1:?}"
        );
        for &s in &slot_data[..slot_data.len() - 1] {
            // A checkpoint: the slot synced, then the checkpoint file replaced.
            assert_eq!(
                (boot1[s].as_str(), boot1[s + 1].as_str()),
                ("journal temp file", "journal rename"),
                "{boot1:?}"
            );
        }
        Self {
            // The first journal write records the agent's start, the second the request.
            request_durable: renames[1],
            slot_data,
        }
    }

    /// The download requests the server should see after cut `point` of boot 1, and the
    /// offset the last one starts from.
    fn expected_requests(&self, point: usize) -> (usize, u64) {
        let last = *self.slot_data.last().unwrap();
        let checkpoints = &self.slot_data[..self.slot_data.len() - 1];
        if point == self.request_durable {
            // Cut before the download began: it starts in the next boot.
            (1, 0)
        } else if point <= last {
            // Cut during the slot write: resume from the last checkpoint on disk.
            let durable = checkpoints.iter().filter(|&&s| s + 2 <= point).count();
            (2, (durable * MIB) as u64)
        } else if point == last + 1 {
            // The image is complete and its checkpoint removed, but `Verifying` is not yet
            // durable: the download is redone from the start.
            (2, 0)
        } else {
            (1, 0)
        }
    }
}

/// 1-based positions of `label` in `points`.
fn positions(points: &[String], label: &str) -> Vec<usize> {
    points
        .iter()
        .enumerate()
        .filter(|(_, p)| *p == label)
        .map(|(i, _)| i + 1)
        .collect()
}

/// Runs the update cut at `cut` and checks the outcome.
fn cut_run(s: &Scenario, boots: &[Vec<String>], layout: &Layout, cut: Cut) {
    let context = format!("cut at boot {} point {}", cut.boot, cut.point);
    let label = &boots[cut.boot - 1][cut.point - 1];
    let (device, out, requests) = s.update(&[
        ("SWELL_FAULT_BOOT", cut.boot.to_string()),
        ("SWELL_FAULT_KILL_AT", cut.point.to_string()),
    ]);
    assert!(out.status.success(), "{context}: board: {}", out.stderr);
    let marker = format!(
        "fault-injection: SIGKILL at write point {} ({label})",
        cut.point
    );
    assert!(
        out.stderr.contains(&marker),
        "{context}: the agent was not cut where traced ({marker}):\n{}",
        out.stderr
    );
    if cut.boot == 1 && cut.point < layout.request_durable {
        // The request never became durable: nothing happened, and asking again works.
        assert_eq!(
            device.journal(),
            s.baseline.journal().with_epoch(device.journal().epoch),
            "{context}: the device changed"
        );
        assert!(requests.is_empty(), "{context}: {requests:?}");
        let manifest = device.path().join("2.0.0.manifest.json");
        let server = TestServer::start(s.v2.image.clone(), Behaviour::Normal);
        let again = run(
            device.board_install(&manifest, &server.url()),
            common::RUN_LIMIT,
        );
        assert!(again.status.success(), "{context}: again: {}", again.stderr);
        s.assert_final(&device, &context);
        return;
    }
    s.assert_final(&device, &context);
    let (count, from) = if cut.boot == 1 {
        layout.expected_requests(cut.point)
    } else {
        (1, 0)
    };
    assert_eq!(requests.len(), count, "{context}: {requests:?}");
    let last = requests.last().unwrap();
    let size = IMAGE_SIZE as u64;
    let expected = if from == 0 {
        (None, 200, size)
    } else {
        (Some(format!("bytes={from}-")), 206, size - from)
    };
    assert_eq!(
        (last.range.clone(), last.status, last.body_bytes),
        expected,
        "{context}: the download did not resume from the last checkpoint: {requests:?}"
    );
}

/// Cuts every traced point of every boot of the update (or of boot `only` alone); returns the
/// number of cuts.
fn sweep(s: &Scenario, behaviour: &str, only: Option<usize>) -> usize {
    let started = Instant::now();
    let boots = s.trace();
    let layout = Layout::of(&boots[0]);
    let cuts: VecDeque<Cut> = boots
        .iter()
        .enumerate()
        .filter(|(b, _)| only.is_none_or(|o| o == b + 1))
        .flat_map(|(b, points)| (1..=points.len()).map(move |point| Cut { boot: b + 1, point }))
        .collect();
    let total = cuts.len();
    let queue = Mutex::new(cuts);
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                loop {
                    // Take the guard in a statement of its own so the lock is not held
                    // during the run.
                    let next = queue.lock().unwrap().pop_front();
                    let Some(cut) = next else { break };
                    cut_run(s, &boots, &layout, cut);
                }
            });
        }
    });
    let per_boot: Vec<usize> = boots.iter().map(Vec::len).collect();
    println!(
        "{behaviour} image: {total} power-cut points covered (points per boot {per_boot:?}) in {:.1?}",
        started.elapsed()
    );
    total
}

/// A healthy 4 MiB image: every cut ends `committed` on 2.0.0, resuming the download from
/// its last checkpoint where the cut fell inside it.
#[test]
fn healthy_update_survives_a_cut_at_every_write() {
    let s = Scenario::new("healthy", Some(Outcome::Committed), None);
    let covered = sweep(&s, "healthy", None);
    assert!(covered >= 25, "only {covered} cut points");
}

/// An unhealthy image: every cut ends `rolled_back` to 1.0.0 with the old slot booted and the
/// failing health check named.
#[test]
fn unhealthy_update_rolls_back_after_a_cut_at_every_write() {
    let s = Scenario::new("unhealthy", Some(Outcome::RolledBack), None);
    let covered = sweep(&s, "unhealthy", None);
    assert!(covered >= 25, "only {covered} cut points");
}

/// With `bootlimit = 1` the trial has a single boot: a cut anywhere in the trial boot uses it
/// up, and the bootloader falls back to 1.0.0 on its own, even after the agent persisted the
/// commit but before the commit reached the boot environment. Whatever each cut leads to, the
/// device must tell the truth: a rollback with the old slot booted, or the commit with the new
/// one, and the journal, the slots and the last report agreeing with the boot environment.
#[test]
fn with_one_trial_boot_every_cut_of_the_trial_tells_the_truth() {
    let s = Scenario::new("healthy", None, Some(1));
    let covered = sweep(&s, "healthy, bootlimit 1, trial boot", Some(2));
    assert!(covered >= 5, "only {covered} cut points");
}

/// `Persisted` with another epoch: the only thing a lost request changes is the start count.
trait WithEpoch {
    fn with_epoch(self, epoch: u64) -> Self;
}

impl WithEpoch for swell_agent::journal::Persisted {
    fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }
}
