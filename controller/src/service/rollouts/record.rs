//! A rollout's stored state: one [`RolloutRecord`] (the plan, the status, the gates' state,
//! the decisions) and one [`DeviceRecord`] per device it takes, so that a change to one device
//! rewrites one small value. Every record refuses unknown fields, like the rest of the store.
//!
//! Keys in table `Rollouts`: `r/<n:010>` for a rollout, `r/<n:010>/d/<device>` for its devices;
//! the id counter is `rollout-seq` in table `Meta`.

use serde::{Deserialize, Serialize};
use swell_proto::messages::ReleaseRef;
use swell_proto::{DeviceId, Timestamp};

use crate::service::db::DbError;

/// Where a rollout is. `Running` covers "held by a lock" and "awaiting approval", which are
/// worked out from the locks and the stages rather than stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Starting devices and advancing as the gates allow.
    Running,
    /// Stopped by an operator or a failure gate with the `pause` action; devices in flight
    /// finish, nothing new starts.
    Paused,
    /// Aborted: every device that took the release is being taken back.
    RollingBack,
    /// Aborted and every device that took the release is back (or listed as not).
    RolledBack,
    /// Aborted with nothing to take back.
    Aborted,
    /// Every step passed.
    Completed,
    /// Replaced by a newer rollout (`superseded_by`).
    Superseded,
}

impl Status {
    /// Whether the rollout has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::RolledBack | Status::Aborted | Status::Completed | Status::Superseded
        )
    }

    /// The API's name.
    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::RollingBack => "rolling_back",
            Status::RolledBack => "rolled_back",
            Status::Aborted => "aborted",
            Status::Completed => "completed",
            Status::Superseded => "superseded",
        }
    }
}

/// Where a stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// Its step has not begun.
    Pending,
    /// Its step has begun; it waits for an operator's approval.
    AwaitingApproval,
    /// Starting its devices and counting their outcomes.
    Running,
    /// Its success gate passed.
    Passed,
    /// Its failure gate tripped (or its success gate can no longer pass).
    Tripped,
}

impl StageStatus {
    /// The API's name.
    pub fn name(self) -> &'static str {
        match self {
            StageStatus::Pending => "pending",
            StageStatus::AwaitingApproval => "awaiting_approval",
            StageStatus::Running => "running",
            StageStatus::Passed => "passed",
            StageStatus::Tripped => "tripped",
        }
    }
}

/// Who decided, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The token name.
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// Why, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A stage's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRecord {
    /// Where it is.
    pub status: StageStatus,
    /// The approval, once given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Decision>,
    /// Failures an operator accepted by resuming after this stage's gate paused the rollout;
    /// the gate counts only failures beyond them.
    #[serde(default)]
    pub waived: usize,
}

/// The rollback of an aborted rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRecord {
    /// Why the rollout aborted.
    pub reason: String,
    /// When the report that tripped the gate arrived (or when an operator aborted).
    pub tripped_at: Timestamp,
    /// The device whose report tripped the gate, if a gate tripped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tripped_by: Option<DeviceId>,
    /// When the last device reported its previous release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Real milliseconds from the controller processing the tripping report to it processing
    /// the last device's report of its previous release, measured on the monotonic clock when
    /// one controller process saw both (`None` across a restart, or while rolling back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// One decision, as `rollout show` lists it and the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    /// When.
    pub at: Timestamp,
    /// `rollout.step_advanced`, ...
    pub kind: String,
    /// What happened and why, for people.
    pub reason: String,
}

/// A rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRecord {
    /// `r-<n>`.
    pub id: String,
    /// The release it installs.
    pub release: ReleaseRef,
    /// The plan's TOML text, as submitted.
    pub plan: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Who created it.
    pub created_by: String,
    /// The rollout it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// The rollout that replaced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// Where it is.
    pub status: Status,
    /// Why it is paused, aborted, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// The current step, from 0.
    pub step: usize,
    /// When the current step began (`None`: not yet, a lock holds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_began: Option<Timestamp>,
    /// Where the current step's start-rate ramp counts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_origin: Option<Timestamp>,
    /// Per stage, in pipeline order.
    pub stages: Vec<StageRecord>,
    /// The locks holding it when it last looked (so a hold is announced once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<String>,
    /// The rollback, once aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
    /// Every decision, oldest first.
    #[serde(default)]
    pub events: Vec<EventRecord>,
}

/// Where a device is in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Not started.
    Pending,
    /// Told to install; not yet committed.
    InFlight,
    /// Committed on the release; soaking.
    Soaking,
    /// Committed and healthy through the soak.
    Succeeded,
    /// Failed, rolled itself back, or timed out. Not offered the release again.
    Failed,
    /// Being taken back to its previous release.
    RollingBack,
    /// Back on its previous release.
    RolledBack,
    /// Could not be taken back (`reason` says why): an operator must look.
    RollbackFailed,
    /// Never started: the rollout ended first.
    NotStarted,
}

impl DeviceState {
    /// The API's name.
    pub fn name(self) -> &'static str {
        match self {
            DeviceState::Pending => "pending",
            DeviceState::InFlight => "in_flight",
            DeviceState::Soaking => "soaking",
            DeviceState::Succeeded => "succeeded",
            DeviceState::Failed => "failed",
            DeviceState::RollingBack => "rolling_back",
            DeviceState::RolledBack => "rolled_back",
            DeviceState::RollbackFailed => "rollback_failed",
            DeviceState::NotStarted => "not_started",
        }
    }
}

/// How a device is being taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackKind {
    /// Told to stop an update in progress.
    Cancel,
    /// Told to boot its other slot, which holds the previous image.
    Revert,
    /// Told to install its previous release again (the revert was refused).
    Reinstall,
}

/// One device of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    /// The device.
    pub id: DeviceId,
    /// Its stage, by index in pipeline order.
    pub stage: usize,
    /// Its zone when the rollout was created.
    pub zone: String,
    /// Where it is.
    pub state: DeviceState,
    /// The planned start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_at: Option<Timestamp>,
    /// The earliest it may start (its window opened and its zone's turn came).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// The end of its window: it does not start at or after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<Timestamp>,
    /// When it was told to install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// The install command's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// When it first reported Committed on the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<Timestamp>,
    /// Why it failed or could not be taken back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The release it ran when it started (`None`: none reported, a factory image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ReleaseRef>,
    /// The last rollback command, what kind, and when it was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<(RollbackKind, String, Timestamp)>,
    /// The last command sent and not yet acknowledged by a report: `(id, signed envelope)`.
    /// A restarted controller publishes it again (the device drops it if it has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unacked: Option<(String, String)>,
}

impl DeviceRecord {
    /// A device of stage `stage` that has not started.
    pub fn pending(id: DeviceId, stage: usize, zone: String) -> DeviceRecord {
        DeviceRecord {
            id,
            stage,
            zone,
            state: DeviceState::Pending,
            planned_at: None,
            not_before: None,
            window_end: None,
            started_at: None,
            command: None,
            committed_at: None,
            reason: None,
            previous: None,
            rollback: None,
            unacked: None,
        }
    }
}

/// The key of rollout `n`.
pub fn rollout_key(n: u64) -> Vec<u8> {
    format!("r/{n:010}").into_bytes()
}

/// The key of `device` in rollout `n`.
pub fn device_key(n: u64, device: &DeviceId) -> Vec<u8> {
    format!("r/{n:010}/d/{device}").into_bytes()
}

/// The rollout number of id `r-<n>`.
pub fn number(id: &str) -> Option<u64> {
    id.strip_prefix("r-")?
        .parse()
        .ok()
        .filter(|n| *n > 0 && format!("r-{n}") == id)
}

/// What a key in table `Rollouts` under `r/` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A rollout.
    Rollout(u64),
    /// A device of a rollout.
    Device(u64),
}

/// Parses a key under `r/`.
pub fn parse_key(key: &[u8]) -> Result<Key, DbError> {
    let text = std::str::from_utf8(key).map_err(|_| corrupt("a key is not UTF-8"))?;
    let rest = text
        .strip_prefix("r/")
        .ok_or_else(|| corrupt(&format!("key {text:?}")))?;
    let (n, device) = match rest.split_once("/d/") {
        Some((n, _)) => (n, true),
        None => (rest, false),
    };
    let n: u64 = n.parse().map_err(|_| corrupt(&format!("key {text:?}")))?;
    Ok(if device {
        Key::Device(n)
    } else {
        Key::Rollout(n)
    })
}

fn corrupt(what: &str) -> DbError {
    DbError::Corrupt(format!("rollouts: {what}"))
}

/// Parses a stored record.
pub fn parse<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, DbError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(&format!("{what}: {e}")))
}
