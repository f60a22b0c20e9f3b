//! The update state machine: a pure function from (state, event, now) to (state, actions).
//!
//! Nothing here touches a disk, a network or a clock. The driver persists the returned state
//! *before* it performs the returned actions, so after a power cut the persisted state names
//! the side effect that may have been interrupted, and every action is idempotent so that
//! replaying it is safe. The restart path is the [`Event::Booted`] event, which every state
//! handles by resuming or cleaning up.

use std::fmt;

use swell_proto::Sha256Digest;
use swell_proto::Timestamp;
use swell_proto::messages::{ReleaseRef, Running, Slot, UpdateState};

/// Identifies one boot of the device (Linux: `/proc/sys/kernel/random/boot_id`), so the
/// machine can tell "the reboot has not happened yet" from "the bootloader fell back".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootId(pub String);

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An HTTP(S) URL, fetched with Range resume.
    Url(String),
    /// A local file (offline install).
    File(std::path::PathBuf),
}

/// One update: a verified release's artifact going into the inactive slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The controller command that asked for it, if any.
    pub command: Option<String>,
    /// The release.
    pub release: ReleaseRef,
    /// The release's anti-rollback counter, committed with the image.
    pub security_version: u64,
    /// The artifact's exact size.
    pub size: u64,
    /// The artifact's digest.
    pub sha256: Sha256Digest,
    /// Where to fetch it.
    pub source: Source,
    /// The slot being written: always the one not running when the job began.
    pub slot: Slot,
    /// What ran when the job began; a revert goes back to it.
    pub previous: Running,
}

impl Job {
    /// What runs once this job's image is committed.
    pub fn running_after_commit(&self) -> Running {
        Running {
            release: Some(self.release.name.clone()),
            version: Some(self.release.version.clone()),
            slot: self.slot,
            security_version: self.security_version.max(self.previous.security_version),
        }
    }
}

/// What the boot control reports at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootInfo {
    /// This boot's id.
    pub boot_id: BootId,
    /// The slot this boot came from.
    pub slot: Slot,
    /// Whether this is a trial boot (`upgrade_available=1`): not yet committed.
    pub trial: bool,
}

/// The update state; each variant is persisted by the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No update in progress.
    Idle,
    /// Streaming the artifact into `job.slot`.
    Downloading(Job),
    /// Re-reading `job.slot` to check its digest.
    Verifying(Job),
    /// `job.slot` verified; the trial boot is being armed (`None`) or was armed during boot
    /// `BootId` and the reboot is pending. The arm is recorded only once it is on disk, so
    /// after a power cut `None` means "not known to be armed": arm again rather than take the
    /// old slot for a bootloader fallback.
    Installed(Job, Option<BootId>),
    /// Booted `job.slot` on trial; health must pass before the deadline.
    Trial(Job, Timestamp),
    /// Going back to `job.previous.slot` for the reason given; armed during boot `BootId`.
    Reverting(Job, BootId, String),
    /// `job`'s image passed health and is committed.
    Committed(Job),
    /// The device went back to `job.previous` for the reason given.
    RolledBack(Job, String),
    /// The update failed before the device switched images.
    Failed(Job, String),
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The agent started (after a reboot, a crash, or a plain restart).
    Booted(BootInfo),
    /// A verified install request (manifest, hardware and anti-rollback already checked).
    Install(Box<Job>),
    /// The artifact is in the slot and its streamed digest matched.
    Downloaded,
    /// Re-reading the slot gave the expected digest.
    Verified,
    /// The trial boot is armed in the boot environment (on disk).
    TrialArmed,
    /// The current step failed (download, write, verification, arming).
    StepFailed(String),
    /// Every health check passed through the soak period.
    HealthPassed,
    /// A health check failed.
    HealthFailed(String),
    /// Time passed; `now` is the step's clock.
    Tick,
    /// The controller asked to stop the update in progress.
    Cancel,
    /// The controller asked to go back to the previous image.
    Revert,
}

/// A side effect for the driver to perform, after persisting the new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stream the artifact into the slot, resuming after what is durably written.
    Download(Job),
    /// Stop a download in progress.
    StopDownload,
    /// Re-read the slot and check its digest.
    VerifySlot(Job),
    /// Make the bootloader try `slot` once on the next boot (`upgrade_available=1`).
    ArmTrial(Slot),
    /// Make the bootloader boot `slot` normally, clearing any trial.
    BootNormally(Slot),
    /// Record the committed security version, and clear the trial in the boot environment.
    Commit(Job),
    /// Restart the device.
    Reboot,
    /// Run the health checks until `deadline`.
    StartHealthChecks(Timestamp),
    /// Report a state to the controller.
    Report(Report),
}

/// The content of a state report; the driver adds identity, sequence and signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The state entered.
    pub state: UpdateState,
    /// The command being answered.
    pub command: Option<String>,
    /// The release concerned.
    pub target: Option<ReleaseRef>,
    /// What runs now.
    pub running: Running,
    /// Why, for failures and rollbacks.
    pub reason: Option<String>,
}

/// The machine's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long after a trial boot health may take before the image is reverted.
    pub health_deadline_secs: i64,
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

impl State {
    /// The state's reported name.
    pub fn update_state(&self) -> UpdateState {
        match self {
            State::Idle => UpdateState::Idle,
            State::Downloading(_) => UpdateState::Downloading,
            State::Verifying(_) => UpdateState::Verifying,
            State::Installed(..) => UpdateState::Installed,
            State::Trial(..) => UpdateState::Trial,
            State::Reverting(..) => UpdateState::Reverting,
            State::Committed(_) => UpdateState::Committed,
            State::RolledBack(..) => UpdateState::RolledBack,
            State::Failed(..) => UpdateState::Failed,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Downloading(_) => "downloading",
            State::Verifying(_) => "verifying",
            State::Installed(..) => "installed",
            State::Trial(..) => "trial",
            State::Reverting(..) => "reverting",
            State::Committed(_) => "committed",
            State::RolledBack(..) => "rolled back",
            State::Failed(..) => "failed",
        }
    }

    /// The job in progress or last finished.
    pub fn job(&self) -> Option<&Job> {
        match self {
            State::Idle => None,
            State::Downloading(j)
            | State::Verifying(j)
            | State::Installed(j, _)
            | State::Trial(j, _)
            | State::Reverting(j, _, _)
            | State::Committed(j)
            | State::RolledBack(j, _)
            | State::Failed(j, _) => Some(j),
        }
    }

    /// Whether a new install may start (no update in progress).
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            State::Idle | State::Committed(_) | State::RolledBack(..) | State::Failed(..)
        )
    }

    /// What the device runs in this state, given what ran before any job (`base`).
    pub fn running(&self, base: &Running) -> Running {
        match self {
            State::Committed(j) => j.running_after_commit(),
            State::Trial(j, _) => Running {
                security_version: j.previous.security_version,
                ..j.running_after_commit()
            },
            State::Idle => base.clone(),
            State::Downloading(j)
            | State::Verifying(j)
            | State::Installed(j, _)
            | State::Reverting(j, _, _)
            | State::RolledBack(j, _)
            | State::Failed(j, _) => j.previous.clone(),
        }
    }
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Booted(_) => "boot",
            Event::Install(_) => "install",
            Event::Downloaded => "download complete",
            Event::Verified => "verification passed",
            Event::TrialArmed => "trial armed",
            Event::StepFailed(_) => "step failure",
            Event::HealthPassed => "health passed",
            Event::HealthFailed(_) => "health failure",
            Event::Tick => "tick",
            Event::Cancel => "cancel",
            Event::Revert => "revert",
        }
    }
}

fn report(state: UpdateState, job: &Job, running: Running, reason: Option<String>) -> Action {
    Action::Report(Report {
        state,
        command: job.command.clone(),
        target: Some(job.release.clone()),
        running,
        reason,
    })
}

/// Seconds past the health deadline after which the machine reverts on its own. The health
/// checks enforce the deadline themselves and name the failing check; this is the backstop for
/// checks that hang.
pub const DEADLINE_GRACE_SECS: i64 = 30;

/// The result of a step: the next state and the actions to perform after persisting it.
pub type Step = (State, Vec<Action>);

/// The inputs of a step besides state and event.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The step's clock.
    pub now: Timestamp,
    /// The current boot's id.
    pub boot: &'a BootId,
    /// Settings.
    pub settings: Settings,
}

/// Advances the machine. Time and the boot id come only from `ctx`.
pub fn step(state: &State, event: Event, ctx: Ctx<'_>) -> Result<Step, Disallowed> {
    use Event as E;
    use State as S;
    let cancelled = || String::from("cancelled by the controller");
    Ok(match (state, event) {
        // A new install is accepted only when nothing is in progress.
        (s, E::Install(job)) if s.is_settled() => (
            S::Downloading((*job).clone()),
            vec![
                report(UpdateState::Downloading, &job, job.previous.clone(), None),
                Action::Download(*job),
            ],
        ),

        (S::Downloading(job), E::Downloaded) => (
            S::Verifying(job.clone()),
            vec![
                report(UpdateState::Verifying, job, job.previous.clone(), None),
                Action::VerifySlot(job.clone()),
            ],
        ),
        (S::Verifying(job), E::Verified) => (
            S::Installed(job.clone(), None),
            vec![Action::ArmTrial(job.slot)],
        ),
        (S::Installed(job, None), E::TrialArmed) => (
            S::Installed(job.clone(), Some(ctx.boot.clone())),
            vec![
                report(UpdateState::Installed, job, job.previous.clone(), None),
                Action::Reboot,
            ],
        ),
        (S::Downloading(job) | S::Verifying(job), E::StepFailed(reason)) => {
            failed(job, reason, None)
        }
        (S::Downloading(job) | S::Verifying(job), E::Cancel) => {
            failed(job, cancelled(), Some(Action::StopDownload))
        }
        (S::Installed(job, _), E::Cancel) => failed(
            job,
            cancelled(),
            Some(Action::BootNormally(job.previous.slot)),
        ),
        (S::Installed(job, _), E::StepFailed(reason)) => {
            failed(job, reason, Some(Action::BootNormally(job.previous.slot)))
        }

        // Restart paths: every state resumes or cleans up.
        (S::Idle | S::Failed(..) | S::RolledBack(..), E::Booted(_)) => (state.clone(), vec![]),
        (S::Downloading(job), E::Booted(_)) => (state.clone(), vec![Action::Download(job.clone())]),
        (S::Verifying(job), E::Booted(_)) => (state.clone(), vec![Action::VerifySlot(job.clone())]),
        (S::Installed(job, None), E::Booted(boot)) => {
            if boot.slot == job.slot && boot.trial {
                // The arm reached the disk just before the power cut, and the trial is on:
                // report the installed state that was not reported yet, then the trial.
                let (next, mut actions) = start_trial(job, ctx);
                let installed = report(UpdateState::Installed, job, job.previous.clone(), None);
                actions.insert(0, installed);
                (next, actions)
            } else {
                // The arm may never have reached the disk: arm (again) before rebooting.
                (state.clone(), vec![Action::ArmTrial(job.slot)])
            }
        }
        (S::Installed(job, Some(armed)), E::Booted(boot)) => {
            installed_booted(state, job, armed, &boot, ctx)
        }
        (S::Trial(job, deadline), E::Booted(boot)) => {
            if boot.slot == job.slot && boot.trial {
                (state.clone(), vec![Action::StartHealthChecks(*deadline)])
            } else {
                rolled_back(
                    job,
                    String::from(
                        "the new image failed during its trial and the bootloader fell back",
                    ),
                )
            }
        }
        (S::Reverting(job, armed, reason), E::Booted(boot)) => {
            if boot.boot_id != *armed && boot.slot == job.previous.slot {
                rolled_back(job, reason.clone())
            } else {
                // Not rebooted yet (or the revert did not take): arm it again.
                let next = S::Reverting(job.clone(), ctx.boot.clone(), reason.clone());
                (
                    next,
                    vec![Action::BootNormally(job.previous.slot), Action::Reboot],
                )
            }
        }
        (S::Committed(job), E::Booted(boot)) => {
            if boot.slot != job.slot {
                // The commit was persisted but not yet written to the boot environment, and the
                // reboots since (power cuts) used up the trial's boots: the bootloader fell
                // back. Say so rather than claim the new image runs.
                rolled_back(
                    job,
                    String::from(
                        "the bootloader fell back to the previous slot before the commit \
                         reached the boot environment",
                    ),
                )
            } else if boot.trial {
                // The commit was persisted but the boot environment not yet cleared.
                (state.clone(), vec![Action::Commit(job.clone())])
            } else {
                (state.clone(), vec![])
            }
        }

        (S::Trial(job, _), E::HealthPassed) => {
            let running = job.running_after_commit();
            (
                S::Committed(job.clone()),
                vec![
                    Action::Commit(job.clone()),
                    report(UpdateState::Committed, job, running, None),
                ],
            )
        }
        (S::Trial(job, _), E::HealthFailed(reason)) => revert(job, reason, ctx),
        (S::Trial(job, deadline), E::Tick)
            if ctx.now >= deadline.plus_secs(DEADLINE_GRACE_SECS) =>
        {
            let reason = format!("health checks did not finish by the deadline {deadline}");
            revert(job, reason, ctx)
        }
        (S::Committed(job), E::Revert) if job.previous.security_version >= job.security_version => {
            revert(job, String::from("reverted by the controller"), ctx)
        }
        (S::Committed(_), E::Revert) => {
            return Err(Disallowed {
                state: "committed to a higher security_version than the previous image",
                event: "revert",
            });
        }
        (s, E::Tick) => (s.clone(), vec![]),
        (s, e) => {
            return Err(Disallowed {
                state: s.name(),
                event: e.name(),
            });
        }
    })
}

fn failed(job: &Job, reason: String, first: Option<Action>) -> Step {
    let mut actions: Vec<Action> = first.into_iter().collect();
    actions.push(report(
        UpdateState::Failed,
        job,
        job.previous.clone(),
        Some(reason.clone()),
    ));
    (State::Failed(job.clone(), reason), actions)
}

fn rolled_back(job: &Job, reason: String) -> Step {
    let actions = vec![report(
        UpdateState::RolledBack,
        job,
        job.previous.clone(),
        Some(reason.clone()),
    )];
    (State::RolledBack(job.clone(), reason), actions)
}

fn revert(job: &Job, reason: String, ctx: Ctx<'_>) -> Step {
    (
        State::Reverting(job.clone(), ctx.boot.clone(), reason),
        vec![Action::BootNormally(job.previous.slot), Action::Reboot],
    )
}

/// After a boot with a trial armed: not rebooted yet, booted the new image on trial, or the
/// bootloader already fell back to the previous one.
fn installed_booted(
    state: &State,
    job: &Job,
    armed: &BootId,
    boot: &BootInfo,
    ctx: Ctx<'_>,
) -> Step {
    if boot.boot_id == *armed {
        // Power was cut (or the agent restarted) before the reboot: arm again and reboot.
        return (
            state.clone(),
            vec![Action::ArmTrial(job.slot), Action::Reboot],
        );
    }
    if boot.slot == job.slot && boot.trial {
        return start_trial(job, ctx);
    }
    rolled_back(
        job,
        String::from("the new image did not come up and the bootloader fell back"),
    )
}

/// The new image booted on trial: report it and start the health checks.
fn start_trial(job: &Job, ctx: Ctx<'_>) -> Step {
    let deadline = ctx.now.plus_secs(ctx.settings.health_deadline_secs);
    let running = State::Trial(job.clone(), deadline).running(&job.previous);
    (
        State::Trial(job.clone(), deadline),
        vec![
            report(UpdateState::Trial, job, running, None),
            Action::StartHealthChecks(deadline),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use swell_proto::{ReleaseName, SemVer};

    const SETTINGS: Settings = Settings {
        health_deadline_secs: 600,
    };

    fn boot(id: &str) -> BootId {
        BootId(id.to_string())
    }

    fn job() -> Job {
        Job {
            command: Some("cmd-1".into()),
            release: ReleaseRef {
                name: ReleaseName::new("gateway-os").unwrap(),
                version: SemVer::new("2.0.0").unwrap(),
            },
            security_version: 3,
            size: 1024,
            sha256: Sha256Digest::of(b"image"),
            source: Source::Url("http://127.0.0.1/image".into()),
            slot: Slot::B,
            previous: Running {
                release: Some(ReleaseName::new("gateway-os").unwrap()),
                version: Some(SemVer::new("1.0.0").unwrap()),
                slot: Slot::A,
                security_version: 3,
            },
        }
    }

    fn run(state: &State, event: Event, boot_id: &str, now: i64) -> Result<Step, Disallowed> {
        let b = boot(boot_id);
        step(
            state,
            event,
            Ctx {
                now: Timestamp::from_unix(now),
                boot: &b,
                settings: SETTINGS,
            },
        )
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

    /// The happy path: every state is reported, the trial is armed before the reboot, and the
    /// commit comes only after health passed on the new slot.
    #[test]
    fn happy_path_commits_after_health() {
        let j = job();
        let (s, a) = run(&State::Idle, Event::Install(Box::new(j.clone())), "b1", 0).unwrap();
        assert_eq!(s, State::Downloading(j.clone()));
        assert_eq!(a.last(), Some(&Action::Download(j.clone())));
        let (s, a) = run(&s, Event::Downloaded, "b1", 1).unwrap();
        assert_eq!(s, State::Verifying(j.clone()));
        assert_eq!(reports(&a), [UpdateState::Verifying]);
        let (s, a) = run(&s, Event::Verified, "b1", 2).unwrap();
        assert_eq!(s, State::Installed(j.clone(), None));
        assert_eq!(a, [Action::ArmTrial(Slot::B)]);
        let (s, a) = run(&s, Event::TrialArmed, "b1", 2).unwrap();
        assert_eq!(s, State::Installed(j.clone(), Some(boot("b1"))));
        assert_eq!(reports(&a), [UpdateState::Installed]);
        assert_eq!(a.last(), Some(&Action::Reboot));
        let booted = BootInfo {
            boot_id: boot("b2"),
            slot: Slot::B,
            trial: true,
        };
        let (s, a) = run(&s, Event::Booted(booted), "b2", 100).unwrap();
        let deadline = Timestamp::from_unix(700);
        assert_eq!(s, State::Trial(j.clone(), deadline));
        assert!(a.contains(&Action::StartHealthChecks(deadline)));
        let (s, a) = run(&s, Event::HealthPassed, "b2", 200).unwrap();
        assert_eq!(s, State::Committed(j.clone()));
        assert_eq!(a[0], Action::Commit(j.clone()));
        let Action::Report(r) = &a[1] else {
            panic!("expected a report")
        };
        assert_eq!((r.state, r.running.slot), (UpdateState::Committed, Slot::B));
        assert_eq!(r.running.version, Some(SemVer::new("2.0.0").unwrap()));
    }

    /// A failed health check reverts to the previous slot and reports RolledBack with the
    /// reason only once the device actually runs the previous image again.
    #[test]
    fn failed_health_reverts_then_reports_after_reboot() {
        let j = job();
        let s = State::Trial(j.clone(), Timestamp::from_unix(700));
        let (s, a) = run(&s, Event::HealthFailed("http probe: 503".into()), "b2", 300).unwrap();
        assert_eq!(
            s,
            State::Reverting(j.clone(), boot("b2"), "http probe: 503".into())
        );
        assert_eq!(a, [Action::BootNormally(Slot::A), Action::Reboot]);
        assert!(reports(&a).is_empty());
        let back = BootInfo {
            boot_id: boot("b3"),
            slot: Slot::A,
            trial: false,
        };
        let (s, a) = run(&s, Event::Booted(back), "b3", 400).unwrap();
        assert_eq!(s, State::RolledBack(j.clone(), "http probe: 503".into()));
        let Action::Report(r) = &a[0] else {
            panic!("expected a report")
        };
        assert_eq!(r.running, j.previous);
        assert_eq!(r.reason.as_deref(), Some("http probe: 503"));
    }

    /// The deadline plus the grace for hung checks passing during the trial counts as a
    /// failure; a tick before it does not.
    #[test]
    fn health_deadline_reverts() {
        let j = job();
        let s = State::Trial(j.clone(), Timestamp::from_unix(700));
        let last_quiet = 700 + DEADLINE_GRACE_SECS - 1;
        assert_eq!(
            run(&s, Event::Tick, "b2", last_quiet).unwrap(),
            (s.clone(), vec![])
        );
        let (next, _) = run(&s, Event::Tick, "b2", last_quiet + 1).unwrap();
        assert!(matches!(next, State::Reverting(_, _, ref r) if r.contains("deadline")));
    }

    /// A power cut after the trial was armed but before the reboot: the same boot id comes
    /// back, so the machine arms again and reboots rather than assuming the image failed.
    #[test]
    fn restart_before_reboot_rearms() {
        let j = job();
        let s = State::Installed(j.clone(), Some(boot("b1")));
        let same = BootInfo {
            boot_id: boot("b1"),
            slot: Slot::A,
            trial: false,
        };
        let (next, a) = run(&s, Event::Booted(same), "b1", 5).unwrap();
        assert_eq!(next, s);
        assert_eq!(a, [Action::ArmTrial(Slot::B), Action::Reboot]);
    }

    /// A power cut after `Installed` was persisted but before the arm reached the boot
    /// environment: the device comes back on the old slot with a new boot id, which is not a
    /// bootloader fallback. The machine arms again; had the arm reached the disk, the device
    /// is on the new slot on trial and the trial starts.
    #[test]
    fn cut_before_the_arm_is_on_disk_arms_again() {
        let j = job();
        let s = State::Installed(j.clone(), None);
        let old_slot = BootInfo {
            boot_id: boot("b2"),
            slot: Slot::A,
            trial: false,
        };
        let (next, a) = run(&s, Event::Booted(old_slot), "b2", 5).unwrap();
        assert_eq!(next, s);
        assert_eq!(a, [Action::ArmTrial(Slot::B)]);
        let on_trial = BootInfo {
            boot_id: boot("b2"),
            slot: Slot::B,
            trial: true,
        };
        let (next, a) = run(&s, Event::Booted(on_trial), "b2", 5).unwrap();
        assert!(matches!(next, State::Trial(..)), "{next:?}");
        assert_eq!(reports(&a), [UpdateState::Installed, UpdateState::Trial]);
    }

    /// The new image never came up: the bootloader fell back to slot A by itself, and the
    /// agent reports RolledBack with the version actually running.
    #[test]
    fn bootloader_fallback_is_reported() {
        let j = job();
        let s = State::Installed(j.clone(), Some(boot("b1")));
        let fell_back = BootInfo {
            boot_id: boot("b4"),
            slot: Slot::A,
            trial: false,
        };
        let (next, a) = run(&s, Event::Booted(fell_back), "b4", 5).unwrap();
        assert!(matches!(next, State::RolledBack(..)));
        let Action::Report(r) = &a[0] else {
            panic!("expected a report")
        };
        assert_eq!(
            (r.state, r.running.slot),
            (UpdateState::RolledBack, Slot::A)
        );
        let s = State::Trial(j.clone(), Timestamp::from_unix(700));
        let fell_back = BootInfo {
            boot_id: boot("b5"),
            slot: Slot::A,
            trial: false,
        };
        assert!(matches!(
            run(&s, Event::Booted(fell_back), "b5", 5).unwrap().0,
            State::RolledBack(..)
        ));
    }

    /// A power cut after `Committed` was persisted but before the boot environment was
    /// cleared, with the trial's boots used up: the device comes back on the previous slot, and
    /// the machine reports a rollback instead of a committed image that does not run.
    #[test]
    fn fallback_after_an_unwritten_commit_is_a_rollback() {
        let j = job();
        let on_a = BootInfo {
            boot_id: boot("b3"),
            slot: Slot::A,
            trial: false,
        };
        let (next, a) = run(&State::Committed(j.clone()), Event::Booted(on_a), "b3", 5).unwrap();
        assert!(
            matches!(&next, State::RolledBack(_, r) if r.contains("before the commit")),
            "{next:?}"
        );
        let Action::Report(r) = &a[0] else {
            panic!("expected a report")
        };
        assert_eq!(
            (r.state, r.running.slot),
            (UpdateState::RolledBack, Slot::A)
        );
    }

    /// Restarts resume the interrupted step: the download, the verification, the health
    /// checks, the commit of the boot environment.
    #[test]
    fn restarts_resume() {
        let j = job();
        let on_a = BootInfo {
            boot_id: boot("b1"),
            slot: Slot::A,
            trial: false,
        };
        let on_b_trial = BootInfo {
            boot_id: boot("b2"),
            slot: Slot::B,
            trial: true,
        };
        let d = Timestamp::from_unix(700);
        let cases = [
            (
                State::Downloading(j.clone()),
                on_a.clone(),
                vec![Action::Download(j.clone())],
            ),
            (
                State::Verifying(j.clone()),
                on_a.clone(),
                vec![Action::VerifySlot(j.clone())],
            ),
            (
                State::Trial(j.clone(), d),
                on_b_trial.clone(),
                vec![Action::StartHealthChecks(d)],
            ),
            (
                State::Committed(j.clone()),
                on_b_trial,
                vec![Action::Commit(j.clone())],
            ),
            (State::Idle, on_a, vec![]),
        ];
        for (state, info, want) in cases {
            let (next, actions) = run(&state, Event::Booted(info), "bx", 10).unwrap();
            assert_eq!((next, actions), (state.clone(), want), "{state:?}");
        }
    }

    /// One update at a time: an install while another is in progress is disallowed, and a
    /// revert below the committed security version is refused.
    #[test]
    fn refuses_what_is_unsafe() {
        let j = job();
        for s in [
            State::Downloading(j.clone()),
            State::Verifying(j.clone()),
            State::Installed(j.clone(), None),
            State::Installed(j.clone(), Some(boot("b1"))),
            State::Trial(j.clone(), Timestamp::from_unix(9)),
            State::Reverting(j.clone(), boot("b1"), "x".into()),
        ] {
            let e = run(&s, Event::Install(Box::new(j.clone())), "b1", 0).unwrap_err();
            assert_eq!(e.event, "install");
        }
        let mut higher = j.clone();
        higher.security_version = 4;
        let e = run(&State::Committed(higher), Event::Revert, "b1", 0).unwrap_err();
        assert!(e.to_string().contains("security_version"));
        assert!(matches!(
            run(&State::Committed(j.clone()), Event::Revert, "b1", 0)
                .unwrap()
                .0,
            State::Reverting(..)
        ));
    }

    /// Cancel before the reboot is safe and leaves the previous slot booting normally; after
    /// the trial began it is not allowed.
    #[test]
    fn cancel_only_before_reboot() {
        let j = job();
        let (s, a) = run(
            &State::Installed(j.clone(), Some(boot("b1"))),
            Event::Cancel,
            "b1",
            0,
        )
        .unwrap();
        assert!(matches!(s, State::Failed(..)));
        assert_eq!(a[0], Action::BootNormally(Slot::A));
        let (s, a) = run(&State::Downloading(j.clone()), Event::Cancel, "b1", 0).unwrap();
        assert!(matches!(s, State::Failed(..)));
        assert_eq!(a[0], Action::StopDownload);
        assert!(
            run(
                &State::Trial(j.clone(), Timestamp::from_unix(9)),
                Event::Cancel,
                "b1",
                0
            )
            .is_err()
        );
    }
}
