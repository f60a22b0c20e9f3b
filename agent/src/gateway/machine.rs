//! The update of one child device, as a sans-I/O state machine:
//! `step(&Entry, Event, Ctx) -> (Entry, Vec<Action>)`.
//!
//! It is separate from the gateway's own A/B machine (`crate::update`) and much smaller: the
//! MCU's bootloader does the swap, the trial and the revert by itself, so the gateway only
//! checks, stages, transfers, and then watches what the MCU says about itself.
//!
//! | state | meaning | reported |
//! |---|---|---|
//! | (none) | no update yet | — |
//! | `probing` | asking the MCU what it runs (hardware, committed counter, phase) | no |
//! | `downloading` | staging the image in the data directory | `downloading` |
//! | `transferring` | checking the staged image, then streaming it over the serial line | no (the MCU is still receiving: `downloading`) |
//! | `installed` | the MCU verified the image and requested the swap; it resets | `installed` |
//! | `trial` | the MCU runs the new image on trial | `trial` |
//! | `committed` | the new image confirmed itself on the MCU | `committed` |
//! | `rolled_back` | the MCU's bootloader put the previous image back | `rolled_back` |
//! | `failed` | the update stopped before the MCU switched images, or it never settled | `failed` |
//!
//! Every state but the settled ones is resumed on [`Event::Restarted`] by repeating its
//! action, which is safe because each is idempotent: the staging download resumes from its
//! checkpoint, the transfer from the MCU's confirmed offset, and watching is read-only.

use std::fmt;

use swell_firmware::Phase;
use swell_proto::messages::{ChildRunning, ReleaseRef, UpdateState};
use swell_proto::{DeviceId, HardwareId, Sha256Digest, Timestamp};

use crate::update::Source;

/// One child update: a verified release's artifact for one child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The child.
    pub child: DeviceId,
    /// The child's hardware id, as configured (the MCU must report the same).
    pub hardware: HardwareId,
    /// The controller command that asked for it, if any.
    pub command: Option<String>,
    /// The release.
    pub release: ReleaseRef,
    /// The release's anti-rollback counter.
    pub security_version: u64,
    /// The artifact's exact size.
    pub size: u64,
    /// The artifact's digest (of the whole image file).
    pub sha256: Sha256Digest,
    /// Where to fetch it.
    pub source: Source,
    /// The signed release manifest, verified at `admitted`; the staged image's header is
    /// checked against it (`ImageHeader::check_release`) before anything is sent.
    pub manifest: Vec<u8>,
    /// When the manifest was verified (and so the instant it is judged at again).
    pub admitted: Timestamp,
}

/// The image the MCU accepted: its identity and how long it has to settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The SHA-256 of the image's signed header (the firmware's *manifest digest*), which
    /// the MCU reports as its pending image.
    pub image: [u8; 32],
    /// When the gateway stops waiting for a commit or a revert.
    pub deadline: Timestamp,
}

/// A child's update state; each variant is persisted by the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Asking the MCU what it runs.
    Probing(Job),
    /// Staging the image.
    Downloading(Job),
    /// Checking the staged image and streaming it to the MCU.
    Transferring(Job),
    /// The swap is requested; the MCU resets into its bootloader.
    Installed(Job, Sent),
    /// The MCU runs the new image on trial.
    Trial(Job, Sent),
    /// The new image is committed.
    Committed(Job),
    /// The MCU went back to its previous image, for the reason given.
    RolledBack(Job, String),
    /// The update failed, for the reason given.
    Failed(Job, String),
}

/// What the gateway knows about one child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The child.
    pub child: DeviceId,
    /// Its update, if it ever had one.
    pub state: Option<State>,
    /// What it ran at its last answer, if it ever answered.
    pub running: Option<ChildRunning>,
}

/// What an MCU said about itself (its `INFO`), as the machine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Where its update stands.
    pub phase: Phase,
    /// Trial boots used in its current update cycle.
    pub attempts: u8,
    /// The manifest digest of its current cycle's image (zeros when it never had one).
    pub pending: [u8; 32],
    /// Its hardware id.
    pub hardware: String,
    /// What it runs: release and version from its image header, and its committed counter.
    pub running: ChildRunning,
}

/// Something that happened to a child's update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A verified install request (manifest, hardware, size and busy already checked).
    Install(Box<Job>),
    /// The agent started: resume whatever was in progress.
    Restarted,
    /// The MCU answered the probe.
    Probed(Seen),
    /// The image is staged and its streamed digest matched.
    Fetched,
    /// The MCU verified the image with this manifest digest and requested the swap (`DONE`),
    /// now or in an earlier run.
    Transferred([u8; 32]),
    /// The MCU answered a poll with a phase the watch does not wait through.
    Observed(Seen),
    /// The current step failed (probe, download, checks, transfer, or the settle deadline).
    StepFailed(String),
}

/// A side effect for the driver, performed after the new state is persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the MCU what it runs (`HELLO`).
    Probe(Job),
    /// Stage the image in the data directory, resuming from a checkpoint.
    Fetch(Job),
    /// Check the staged image (digest, header against the manifest, signatures against the
    /// trust root) and send it, resuming from the MCU's confirmed offset.
    Transfer(Job),
    /// Poll the MCU until its phase is none of `wait_while`, or the deadline passes.
    Watch {
        /// The update.
        job: Job,
        /// The image sent and the deadline.
        sent: Sent,
        /// Phases that are steps on the way, not outcomes.
        wait_while: &'static [Phase],
    },
    /// Remove the staged image and its checkpoint (the update is over).
    Cleanup,
    /// Report a state.
    Report(Report),
}

/// The content of a child report; the gateway adds its identity, sequence and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The state entered.
    pub state: UpdateState,
    /// The command being answered.
    pub command: Option<String>,
    /// The release concerned.
    pub target: Option<ReleaseRef>,
    /// What the child runs now, as it last said.
    pub running: ChildRunning,
    /// Why, for failures and rollbacks.
    pub reason: Option<String>,
}

/// The step's inputs besides state and event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// Now.
    pub now: Timestamp,
    /// Seconds from the swap request to the deadline for a commit or revert.
    pub settle_secs: i64,
}

/// An event that the state does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disallowed {
    /// The state's name.
    pub state: &'static str,
    /// The event's name.
    pub event: &'static str,
}

impl fmt::Display for Disallowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not allowed while {}", self.event, self.state)
    }
}

impl std::error::Error for Disallowed {}

/// Phases the watch waits through after the swap was requested: the bootloader has not yet
/// booted the new image, or is already putting the old one back.
pub const WAIT_INSTALLED: &[Phase] = &[Phase::Requested, Phase::Swapping, Phase::Reverting];

/// Phases the watch waits through during the trial.
pub const WAIT_TRIAL: &[Phase] = &[Phase::Trial, Phase::Reverting];

impl State {
    /// The reported name.
    pub fn update_state(&self) -> UpdateState {
        match self {
            State::Probing(_) => UpdateState::Idle,
            State::Downloading(_) | State::Transferring(_) => UpdateState::Downloading,
            State::Installed(..) => UpdateState::Installed,
            State::Trial(..) => UpdateState::Trial,
            State::Committed(_) => UpdateState::Committed,
            State::RolledBack(..) => UpdateState::RolledBack,
            State::Failed(..) => UpdateState::Failed,
        }
    }

    /// The name in the journal and in messages.
    pub fn name(&self) -> &'static str {
        match self {
            State::Probing(_) => "probing",
            State::Downloading(_) => "downloading",
            State::Transferring(_) => "transferring",
            State::Installed(..) => "installed",
            State::Trial(..) => "trial",
            State::Committed(_) => "committed",
            State::RolledBack(..) => "rolled back",
            State::Failed(..) => "failed",
        }
    }

    /// The update's job.
    pub fn job(&self) -> &Job {
        match self {
            State::Probing(j)
            | State::Downloading(j)
            | State::Transferring(j)
            | State::Installed(j, _)
            | State::Trial(j, _)
            | State::Committed(j)
            | State::RolledBack(j, _)
            | State::Failed(j, _) => j,
        }
    }

    /// Whether the update is over.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            State::Committed(_) | State::RolledBack(..) | State::Failed(..)
        )
    }

    /// Why it failed or rolled back.
    pub fn reason(&self) -> Option<&str> {
        match self {
            State::RolledBack(_, r) | State::Failed(_, r) => Some(r),
            _ => None,
        }
    }
}

impl Entry {
    /// A child the gateway has never updated nor heard from.
    pub fn new(child: DeviceId) -> Self {
        Self {
            child,
            state: None,
            running: None,
        }
    }

    /// Whether a new update may start.
    pub fn is_settled(&self) -> bool {
        self.state.as_ref().is_none_or(State::is_settled)
    }

    /// The child's committed anti-rollback counter as it last said (0 if it never answered).
    pub fn committed_counter(&self) -> u64 {
        self.running.as_ref().map_or(0, |r| r.security_version)
    }
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Install(_) => "install",
            Event::Restarted => "restart",
            Event::Probed(_) => "probe result",
            Event::Fetched => "staged image",
            Event::Transferred(_) => "transfer result",
            Event::Observed(_) => "poll result",
            Event::StepFailed(_) => "step failure",
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn running_text(r: &ChildRunning) -> String {
    match (&r.release, &r.version) {
        (Some(name), Some(version)) => format!("{name} {version}"),
        (Some(name), None) => name.to_string(),
        _ => "an image without a readable header".to_string(),
    }
}

/// The transition table.
pub fn step(entry: &Entry, event: Event, ctx: Ctx) -> Result<(Entry, Vec<Action>), Disallowed> {
    let disallowed = |state: &'static str, event: &Event| Disallowed {
        state,
        event: event.name(),
    };
    let mut next = entry.clone();
    if let Event::Probed(seen) | Event::Observed(seen) = &event {
        next.running = Some(seen.running.clone());
    }
    let report =
        |running: &Option<ChildRunning>, state: UpdateState, job: &Job, reason: Option<&str>| {
            Action::Report(Report {
                state,
                command: job.command.clone(),
                target: Some(job.release.clone()),
                running: running.clone().unwrap_or(ChildRunning {
                    release: None,
                    version: None,
                    security_version: 0,
                }),
                reason: reason.map(str::to_string),
            })
        };
    let fail = |next: &mut Entry, job: &Job, reason: String| {
        let actions = vec![
            report(&next.running, UpdateState::Failed, job, Some(&reason)),
            Action::Cleanup,
        ];
        next.state = Some(State::Failed(job.clone(), reason));
        actions
    };
    let Some(state) = &entry.state else {
        return match event {
            Event::Install(job) => {
                next.state = Some(State::Probing((*job).clone()));
                Ok((next, vec![Action::Probe(*job)]))
            }
            Event::Restarted => Ok((next, vec![])),
            e => Err(disallowed("idle", &e)),
        };
    };
    let actions = match (state, event) {
        (s, Event::Install(job)) if s.is_settled() => {
            next.state = Some(State::Probing((*job).clone()));
            vec![Action::Probe(*job)]
        }
        (s, Event::Restarted) if s.is_settled() => vec![],
        (State::Probing(job), Event::Restarted) => vec![Action::Probe(job.clone())],
        (State::Probing(job), Event::Probed(seen)) => {
            if seen.hardware != job.hardware.as_str() {
                let reason = format!(
                    "child {} reports hardware {:?}, not the configured {}",
                    job.child, seen.hardware, job.hardware
                );
                fail(&mut next, job, reason)
            } else if seen.running.security_version > job.security_version {
                let reason = format!(
                    "security_version {} is below child {}'s committed {} (anti-rollback)",
                    job.security_version, job.child, seen.running.security_version
                );
                fail(&mut next, job, reason)
            } else if !seen.phase.is_settled() {
                let reason = format!(
                    "child {} is busy: its last update is {} (trial boot {})",
                    job.child, seen.phase, seen.attempts
                );
                fail(&mut next, job, reason)
            } else {
                next.state = Some(State::Downloading(job.clone()));
                vec![
                    report(&next.running, UpdateState::Downloading, job, None),
                    Action::Fetch(job.clone()),
                ]
            }
        }
        (State::Downloading(job), Event::Restarted) => vec![Action::Fetch(job.clone())],
        (State::Downloading(job), Event::Fetched) => {
            next.state = Some(State::Transferring(job.clone()));
            vec![Action::Transfer(job.clone())]
        }
        (State::Transferring(job), Event::Restarted) => vec![Action::Transfer(job.clone())],
        (State::Transferring(job), Event::Transferred(image)) => {
            let sent = Sent {
                image,
                deadline: ctx.now.plus_secs(ctx.settle_secs),
            };
            next.state = Some(State::Installed(job.clone(), sent));
            vec![
                report(&next.running, UpdateState::Installed, job, None),
                Action::Watch {
                    job: job.clone(),
                    sent,
                    wait_while: WAIT_INSTALLED,
                },
            ]
        }
        (
            State::Probing(job) | State::Downloading(job) | State::Transferring(job),
            Event::StepFailed(reason),
        ) => fail(&mut next, job, reason),
        (State::Installed(job, sent), Event::Restarted) => vec![Action::Watch {
            job: job.clone(),
            sent: *sent,
            wait_while: WAIT_INSTALLED,
        }],
        (State::Trial(job, sent), Event::Restarted) => vec![Action::Watch {
            job: job.clone(),
            sent: *sent,
            wait_while: WAIT_TRIAL,
        }],
        (State::Installed(job, sent) | State::Trial(job, sent), Event::Observed(seen)) => {
            let on_trial = matches!(state, State::Trial(..));
            observe(&mut next, job, *sent, on_trial, &seen, &report, &fail)
        }
        (State::Installed(job, _) | State::Trial(job, _), Event::StepFailed(reason)) => {
            fail(&mut next, job, reason)
        }
        (s, e) => return Err(disallowed(s.name(), &e)),
    };
    Ok((next, actions))
}

/// What the MCU's answer after the swap request means.
fn observe(
    next: &mut Entry,
    job: &Job,
    sent: Sent,
    on_trial: bool,
    seen: &Seen,
    report: &impl Fn(&Option<ChildRunning>, UpdateState, &Job, Option<&str>) -> Action,
    fail: &impl Fn(&mut Entry, &Job, String) -> Vec<Action>,
) -> Vec<Action> {
    if seen.pending != sent.image {
        let reason = format!(
            "child {} is in another update (image {}) than the one sent ({})",
            job.child,
            hex(&seen.pending),
            hex(&sent.image)
        );
        return fail(next, job, reason);
    }
    let watch = |wait_while| Action::Watch {
        job: job.clone(),
        sent,
        wait_while,
    };
    match seen.phase {
        Phase::Trial if on_trial => vec![watch(WAIT_TRIAL)],
        Phase::Trial => {
            next.state = Some(State::Trial(job.clone(), sent));
            vec![
                report(&next.running, UpdateState::Trial, job, None),
                watch(WAIT_TRIAL),
            ]
        }
        Phase::Requested | Phase::Swapping | Phase::Reverting => {
            vec![watch(if on_trial { WAIT_TRIAL } else { WAIT_INSTALLED })]
        }
        Phase::Committed => {
            next.state = Some(State::Committed(job.clone()));
            vec![
                report(&next.running, UpdateState::Committed, job, None),
                Action::Cleanup,
            ]
        }
        Phase::Reverted => {
            let now_runs = next.running.as_ref().map_or_else(String::new, running_text);
            let reason = format!(
                "the MCU's bootloader reverted to {now_runs} after {} trial boot(s): the new \
                 image never confirmed itself",
                seen.attempts
            );
            next.state = Some(State::RolledBack(job.clone(), reason.clone()));
            vec![
                report(&next.running, UpdateState::RolledBack, job, Some(&reason)),
                Action::Cleanup,
            ]
        }
        Phase::Refused => fail(
            next,
            job,
            format!(
                "the MCU's bootloader refused the image when verifying it before the swap \
                 (child {})",
                job.child
            ),
        ),
        Phase::Idle | Phase::Receiving => fail(
            next,
            job,
            format!(
                "child {} no longer has the update it accepted (phase {})",
                job.child, seen.phase
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swell_proto::{ReleaseName, SemVer};

    const IMAGE: [u8; 32] = [7; 32];

    fn job() -> Job {
        Job {
            child: DeviceId::new("mcu-1").unwrap(),
            hardware: HardwareId::new("sensor-v2").unwrap(),
            command: Some("c-1".into()),
            release: ReleaseRef {
                name: ReleaseName::new("sensor-fw").unwrap(),
                version: SemVer::new("1.1.0").unwrap(),
            },
            security_version: 2,
            size: 100,
            sha256: Sha256Digest::of(b"x"),
            source: Source::File("/tmp/x".into()),
            manifest: b"{}".to_vec(),
            admitted: Timestamp::from_unix(1),
        }
    }

    fn ctx() -> Ctx {
        Ctx {
            now: Timestamp::from_unix(1000),
            settle_secs: 60,
        }
    }

    fn seen(phase: Phase, version: &str, counter: u64) -> Seen {
        Seen {
            phase,
            attempts: 1,
            pending: IMAGE,
            hardware: "sensor-v2".into(),
            running: ChildRunning {
                release: Some(ReleaseName::new("sensor-fw").unwrap()),
                version: Some(SemVer::new(version).unwrap()),
                security_version: counter,
            },
        }
    }

    fn sent() -> Sent {
        Sent {
            image: IMAGE,
            deadline: Timestamp::from_unix(1060),
        }
    }

    fn run(entry: &Entry, events: Vec<Event>) -> (Entry, Vec<Action>) {
        let mut entry = entry.clone();
        let mut all = Vec::new();
        for e in events {
            let (next, actions) = step(&entry, e, ctx()).unwrap();
            entry = next;
            all.extend(actions);
        }
        (entry, all)
    }

    fn reports(actions: &[Action]) -> Vec<UpdateState> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Report(r) => Some(r.state),
                _ => None,
            })
            .collect()
    }

    /// A healthy update reports downloading, installed, trial and committed, each with what
    /// the MCU said it ran at that moment.
    #[test]
    fn happy_path_reports_every_phase() {
        let fresh = Entry::new(DeviceId::new("mcu-1").unwrap());
        let (entry, actions) = run(
            &fresh,
            vec![
                Event::Install(Box::new(job())),
                Event::Probed(seen(Phase::Idle, "1.0.0", 1)),
                Event::Fetched,
                Event::Transferred(IMAGE),
                Event::Observed(seen(Phase::Trial, "1.1.0", 1)),
                Event::Observed(seen(Phase::Committed, "1.1.0", 2)),
            ],
        );
        assert_eq!(
            reports(&actions),
            [
                UpdateState::Downloading,
                UpdateState::Installed,
                UpdateState::Trial,
                UpdateState::Committed
            ]
        );
        assert_eq!(entry.state, Some(State::Committed(job())));
        assert_eq!(entry.committed_counter(), 2);
        let Some(Action::Report(last)) = actions.iter().rev().nth(1) else {
            panic!("{actions:?}")
        };
        assert_eq!(last.running.version.as_ref().unwrap().to_string(), "1.1.0");
    }

    /// The probe refuses other hardware, a lower counter and a busy MCU, reporting `failed`
    /// before anything is staged or sent.
    #[test]
    fn probe_refuses_before_anything_is_written() {
        let probing = run(
            &Entry::new(DeviceId::new("mcu-1").unwrap()),
            vec![Event::Install(Box::new(job()))],
        )
        .0;
        let mut other = seen(Phase::Idle, "1.0.0", 1);
        other.hardware = "sensor-v3".into();
        for (s, needle) in [
            (other, "hardware"),
            (seen(Phase::Committed, "1.2.0", 3), "anti-rollback"),
            (seen(Phase::Trial, "1.0.5", 1), "busy"),
        ] {
            let (entry, actions) = run(&probing, vec![Event::Probed(s)]);
            let reason = entry.state.as_ref().unwrap().reason().unwrap().to_string();
            assert!(reason.contains(needle), "{reason}");
            assert_eq!(reports(&actions), [UpdateState::Failed]);
            assert!(
                !actions
                    .iter()
                    .any(|a| matches!(a, Action::Fetch(_) | Action::Transfer(_)))
            );
        }
    }

    /// An image the MCU never confirmed is reported rolled back with what runs again; the
    /// trial is reported only if the MCU was seen in it.
    #[test]
    fn revert_is_reported_rolled_back() {
        let installed = run(
            &Entry::new(DeviceId::new("mcu-1").unwrap()),
            vec![
                Event::Install(Box::new(job())),
                Event::Probed(seen(Phase::Idle, "1.0.0", 1)),
                Event::Fetched,
                Event::Transferred(IMAGE),
            ],
        )
        .0;
        let mut reverted = seen(Phase::Reverted, "1.0.0", 1);
        reverted.attempts = 3;
        let (entry, actions) = run(&installed, vec![Event::Observed(reverted.clone())]);
        assert_eq!(reports(&actions), [UpdateState::RolledBack]);
        let reason = entry.state.unwrap().reason().unwrap().to_string();
        assert!(
            reason.contains("sensor-fw 1.0.0 after 3 trial boot"),
            "{reason}"
        );
        let (_, actions) = run(
            &installed,
            vec![
                Event::Observed(seen(Phase::Trial, "1.1.0", 1)),
                Event::Observed(reverted),
            ],
        );
        assert_eq!(
            reports(&actions),
            [UpdateState::Trial, UpdateState::RolledBack]
        );
    }

    /// Every unsettled state resumes with its own action; settled ones do nothing.
    #[test]
    fn restart_repeats_the_interrupted_action() {
        let j = job();
        let cases: Vec<(State, Option<&str>)> = vec![
            (State::Probing(j.clone()), Some("probe")),
            (State::Downloading(j.clone()), Some("fetch")),
            (State::Transferring(j.clone()), Some("transfer")),
            (State::Installed(j.clone(), sent()), Some("watch")),
            (State::Trial(j.clone(), sent()), Some("watch")),
            (State::Committed(j.clone()), None),
            (State::Failed(j.clone(), "x".into()), None),
        ];
        for (state, expect) in cases {
            let entry = Entry {
                state: Some(state.clone()),
                ..Entry::new(j.child.clone())
            };
            let (next, actions) = step(&entry, Event::Restarted, ctx()).unwrap();
            assert_eq!(next, entry, "a restart changes nothing");
            let got = actions.first().map(|a| match a {
                Action::Probe(_) => "probe",
                Action::Fetch(_) => "fetch",
                Action::Transfer(_) => "transfer",
                Action::Watch { .. } => "watch",
                _ => "other",
            });
            assert_eq!(got, expect, "{state:?}");
        }
    }

    /// Events that make no sense in a state are refused by name.
    #[test]
    fn disallowed_events_are_named() {
        let downloading = Entry {
            state: Some(State::Downloading(job())),
            ..Entry::new(job().child)
        };
        let e = step(&downloading, Event::Install(Box::new(job())), ctx()).unwrap_err();
        assert_eq!(e.to_string(), "install is not allowed while downloading");
        let e = step(&Entry::new(job().child), Event::Fetched, ctx()).unwrap_err();
        assert_eq!(e.to_string(), "staged image is not allowed while idle");
    }

    /// A poll that shows another update than the one sent fails the job rather than report
    /// someone else's outcome as this one's.
    #[test]
    fn another_image_is_not_this_update() {
        let installed = Entry {
            state: Some(State::Installed(job(), sent())),
            ..Entry::new(job().child)
        };
        let mut other = seen(Phase::Committed, "9.0.0", 9);
        other.pending = [1; 32];
        let (entry, actions) = step(&installed, Event::Observed(other), ctx()).unwrap();
        assert_eq!(reports(&actions), [UpdateState::Failed]);
        assert!(
            entry
                .state
                .unwrap()
                .reason()
                .unwrap()
                .contains("another update")
        );
    }
}
