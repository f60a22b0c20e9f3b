//! The messages agents and the controller exchange over MQTT.
//!
//! Every message is a signed envelope. Commands are signed by the trust root's `controller`
//! role; everything a device sends is signed by the device's own Ed25519 key, registered at
//! enrollment. In both, the header's `version` is the message's **sequence number**: strictly
//! increasing per sender and topic, so the receiver drops anything at or below the last one it
//! accepted (a replay), and `expires` bounds how long a queued message stays acceptable.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::envelope::{self, Document, Header, Opened};
use crate::error::Error;
use crate::ids::{DeviceId, ReleaseName, SemVer};
use crate::keys::PublicKey;
use crate::limits::{
    MAX_BATCH_METRICS, MAX_BATCH_SIGNATURES, MAX_BOOT_ID_LEN, MAX_MESSAGE_BYTES, MAX_NAME_LEN,
    MAX_REASON_LEN,
};
use crate::root::{Role, TrustRoot};
use crate::signals::{MAX_EXAMPLE_BYTES, SignatureId};
use crate::time::Timestamp;

/// How long a device message stays acceptable after it was issued: reports queued on a device
/// that was offline for up to this long are still delivered and believed.
pub const DEVICE_MESSAGE_VALIDITY_SECS: i64 = 30 * 24 * 3600;

macro_rules! message {
    ($ty:ident, $tag:literal) => {
        impl Document for $ty {
            const TYPE: &'static str = $tag;
        }
    };
}

/// The A/B slot an image runs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// The other slot.
    pub const fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// What a device runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Running {
    /// The release name, if the image came from a Swell release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseName>,
    /// The release version, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<SemVer>,
    /// The slot it booted from.
    pub slot: Slot,
    /// The committed anti-rollback counter.
    pub security_version: u64,
}

/// The agent's update state, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// No update in progress.
    Idle,
    /// Streaming the image into the inactive slot.
    Downloading,
    /// Re-reading the written slot to check its digest.
    Verifying,
    /// Written and verified; trial boot armed, reboot pending.
    Installed,
    /// Booted the new image on trial; health checks running.
    Trial,
    /// Going back to the previous image (a failed trial, or a revert command); reboot pending.
    Reverting,
    /// The new image passed health checks and is committed.
    Committed,
    /// The device went back to its previous image (`reason` says why).
    RolledBack,
    /// The update failed before the device switched images (`reason` says why).
    Failed,
}

/// A release by name and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRef {
    /// The release name.
    pub name: ReleaseName,
    /// The release version.
    pub version: SemVer,
}

/// Bytes done of bytes total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Bytes written so far.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// Topic `report`: a state transition of the device's update, signed by the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The sender.
    pub device: DeviceId,
    /// When the device made the report.
    pub issued: Timestamp,
    /// The state entered.
    pub state: UpdateState,
    /// The command this report answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The release being installed (or just rolled back from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ReleaseRef>,
    /// What the device runs now.
    pub running: Running,
    /// Download or verification progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Why the device failed or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
message!(Report, "report");

/// What a child device (a microcontroller behind a gateway) runs now. A child has no A/B slots:
/// its bootloader swaps the new image into place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildRunning {
    /// The release name, if the image came from a Swell release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseName>,
    /// The image version, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<SemVer>,
    /// The committed anti-rollback counter.
    pub security_version: u64,
}

/// Topic `report` of the gateway: a state transition of one of its child devices, signed by
/// the gateway (which vouches for what its children say over their serial links). It travels in
/// the gateway's own topic subtree, so broker ACLs need no entry per child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildReport {
    /// The gateway that sent it.
    pub device: DeviceId,
    /// The child device the report is about.
    pub child: DeviceId,
    /// When the gateway made the report.
    pub issued: Timestamp,
    /// The child's update state.
    pub state: UpdateState,
    /// The command this report answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The release being installed on the child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ReleaseRef>,
    /// What the child runs now.
    pub running: ChildRunning,
    /// Why the child's update failed or was reverted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
message!(ChildReport, "child_report");

/// Topic `health`: a periodic heartbeat, signed by the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The sender.
    pub device: DeviceId,
    /// When the device sent it.
    pub issued: Timestamp,
    /// Seconds since the device booted.
    pub uptime_s: u64,
    /// The update state.
    pub state: UpdateState,
    /// What the device runs now.
    pub running: Running,
    /// Named integer metrics (memory in KiB, restarts, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, i64>,
}
message!(Heartbeat, "heartbeat");

/// Topic `presence` (retained): the device came online, or (as its last will) went offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    /// The sender.
    pub device: DeviceId,
    /// When the device made it (for a last will: when it connected).
    pub issued: Timestamp,
    /// Online or offline.
    pub online: bool,
    /// The agent's own version.
    pub agent_version: String,
}
message!(Presence, "presence");

/// Events in a batch's interval `(start, end]`. Always increments, never running totals: a
/// lost batch loses only its own interval, and an agent restart needs no differencing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// Watched services that went away (exited or were killed) in the interval.
    pub crashes: u64,
    /// Watched services that came back under a new process id, plus restarts of the agent
    /// itself within one boot.
    pub restarts: u64,
    /// Boots the device went through that no update asked for (counted in the first batch
    /// after the boot).
    pub reboots: u64,
    /// Rounds of the configured health checks that failed.
    pub health_check_failures: u64,
}

/// Readings of a batch. Each is absent when the device cannot measure it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gauges {
    /// Memory in use at `end`, in KiB (Linux: `MemTotal - MemAvailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_kib: Option<u64>,
    /// Mean CPU use over the interval, all cores together, in tenths of a percent
    /// (0 to 1000). Integers only on the wire, so permille rather than a fractional percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_permille: Option<u64>,
    /// Seconds from the kernel's start to the agent's start, in this boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_time_s: Option<u64>,
}

/// Lines of one error signature in a batch's interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureCount {
    /// The signature (`signals::SignatureId::of_template` of the line's template).
    pub id: SignatureId,
    /// Matching lines in the interval, at least 1.
    pub count: u64,
    /// One of those lines, cut to [`MAX_EXAMPLE_BYTES`].
    pub example: String,
}

/// Topic `signals`: one batch of health signals, signed by the device. Batches cover
/// consecutive intervals `(start, end]` of one agent run; a device queues them on disk while
/// offline and sends them oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signals {
    /// The sender.
    pub device: DeviceId,
    /// When the device made the batch (at or after `end`).
    pub issued: Timestamp,
    /// The id of the boot the batch was measured in.
    pub boot: String,
    /// What the device ran during the interval.
    pub running: Running,
    /// Start of the interval (exclusive).
    pub start: Timestamp,
    /// End of the interval (inclusive).
    pub end: Timestamp,
    /// Event counts in the interval.
    pub counters: Counters,
    /// Readings.
    pub gauges: Gauges,
    /// Application metrics: name → value at `end`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, i64>,
    /// Error signatures seen in the interval, each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<SignatureCount>,
    /// Older batches the device dropped from its full queue since the previous batch.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}
message!(Signals, "signals");

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Whether `name` is a valid application metric name: 1 to [`MAX_NAME_LEN`] bytes of
/// lowercase ASCII letters, digits, `_`, `.` and `-`, starting with a letter.
pub fn is_metric_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

impl Signals {
    fn check(&self) -> Result<(), String> {
        if self.boot.is_empty()
            || self.boot.len() > MAX_BOOT_ID_LEN
            || !self.boot.bytes().all(|c| c.is_ascii_graphic())
        {
            return Err(format!(
                "boot id must be 1 to {MAX_BOOT_ID_LEN} printable ASCII characters"
            ));
        }
        if self.start > self.end || self.end > self.issued {
            return Err(format!(
                "interval ({}, {}] issued at {} is not in order",
                self.start, self.end, self.issued
            ));
        }
        if self.gauges.cpu_permille.is_some_and(|c| c > 1000) {
            return Err("cpu_permille is over 1000".into());
        }
        if self.metrics.len() > MAX_BATCH_METRICS {
            return Err(format!(
                "{} metrics, over {MAX_BATCH_METRICS}",
                self.metrics.len()
            ));
        }
        if let Some(name) = self.metrics.keys().find(|n| !is_metric_name(n)) {
            return Err(format!("metric name {name:?} is not a valid name"));
        }
        if self.signatures.len() > MAX_BATCH_SIGNATURES {
            return Err(format!(
                "{} signatures, over {MAX_BATCH_SIGNATURES}",
                self.signatures.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for sig in &self.signatures {
            if !seen.insert(sig.id) {
                return Err(format!("signature {} is listed twice", sig.id));
            }
            if sig.count == 0 {
                return Err(format!("signature {} has a count of 0", sig.id));
            }
            if sig.example.len() > MAX_EXAMPLE_BYTES {
                return Err(format!(
                    "the example of signature {} is {} bytes, over {MAX_EXAMPLE_BYTES}",
                    sig.id,
                    sig.example.len()
                ));
            }
        }
        Ok(())
    }
}

/// What a command asks a device to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Install the release: verify `manifest` (a signed release envelope), then fetch the
    /// device's artifact from `url`.
    Install {
        /// The signed release manifest envelope, verified by the device against its root.
        manifest: serde_json::Value,
        /// Where to download the artifact (HTTP or HTTPS, with Range support).
        url: String,
    },
    /// Go back to the image in the other slot, if it is the committed previous image.
    Revert,
    /// Stop an update in progress where that is safe (before the trial boot is armed).
    Cancel,
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// The wire form. serde lets a *unit* variant of an internally tagged enum ignore
        /// unknown fields even under `deny_unknown_fields` (`{"kind":"revert","x":1}` would
        /// pass); empty struct variants refuse them like every other Swell type.
        #[derive(Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
        enum Wire {
            Install {
                manifest: serde_json::Value,
                url: String,
            },
            Revert {},
            Cancel {},
        }
        Ok(match Wire::deserialize(d)? {
            Wire::Install { manifest, url } => Action::Install { manifest, url },
            Wire::Revert {} => Action::Revert,
            Wire::Cancel {} => Action::Cancel,
        })
    }
}

/// Topic `cmd`: an instruction to one device, signed by the controller role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The device addressed; a command for another device is refused.
    pub device: DeviceId,
    /// The command's id, echoed in the reports that answer it.
    pub id: String,
    /// What to do.
    pub action: Action,
}
message!(Command, "command");

/// A message a device signs.
pub trait DeviceMessage: Document {
    /// The device that sent it.
    fn device(&self) -> &DeviceId;

    /// Checks bounds on free-text fields.
    fn check_limits(&self) -> Result<(), Error> {
        Ok(())
    }
}

impl DeviceMessage for Report {
    fn device(&self) -> &DeviceId {
        &self.device
    }

    fn check_limits(&self) -> Result<(), Error> {
        check_reason("report", self.reason.as_deref())
    }
}

impl DeviceMessage for ChildReport {
    fn device(&self) -> &DeviceId {
        &self.device
    }

    fn check_limits(&self) -> Result<(), Error> {
        check_reason("child report", self.reason.as_deref())
    }
}

impl DeviceMessage for Heartbeat {
    fn device(&self) -> &DeviceId {
        &self.device
    }
}

impl DeviceMessage for Presence {
    fn device(&self) -> &DeviceId {
        &self.device
    }
}

impl DeviceMessage for Signals {
    fn device(&self) -> &DeviceId {
        &self.device
    }

    fn check_limits(&self) -> Result<(), Error> {
        self.check().map_err(|detail| Error::Invalid {
            what: "signals",
            detail,
        })
    }
}

/// Refuses a free-text reason longer than [`MAX_REASON_LEN`].
fn check_reason(what: &'static str, reason: Option<&str>) -> Result<(), Error> {
    match reason {
        Some(reason) if reason.len() > MAX_REASON_LEN => Err(Error::Invalid {
            what,
            detail: format!("reason is {} bytes, over {MAX_REASON_LEN}", reason.len()),
        }),
        _ => Ok(()),
    }
}

fn check_device(found: &DeviceId, expected: &DeviceId) -> Result<(), Error> {
    if found != expected {
        return Err(Error::Invalid {
            what: "message",
            detail: format!("it names device {found} but came for device {expected}"),
        });
    }
    Ok(())
}

/// A verified message with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced<T> {
    /// The sequence number (the header's `version`).
    pub seq: u64,
    /// The message.
    pub message: T,
}

/// Verifies a message from `device`, whose enrolled key is `key`: signed by that key, naming
/// that device, not expired at `now`. The caller still checks the sequence number.
pub fn open_device_message<T: DeviceMessage>(
    bytes: &[u8],
    device: &DeviceId,
    key: &PublicKey,
    now: Timestamp,
) -> Result<Sequenced<T>, Error> {
    let opened: Opened<T> = envelope::open(bytes, MAX_MESSAGE_BYTES)?;
    opened.check_single_key(key, "device")?;
    opened.check_expiry(now)?;
    check_device(opened.body.device(), device)?;
    opened.body.check_limits()?;
    Ok(Sequenced {
        seq: opened.header.version,
        message: opened.body,
    })
}

/// Builds a device message envelope with sequence number `seq`, valid for
/// [`DEVICE_MESSAGE_VALIDITY_SECS`] from `issued`, signed by the device's key. A message that
/// breaks the limits [`open_device_message`] enforces is refused here rather than sent.
pub fn sign_device_message<T: DeviceMessage>(
    message: &T,
    seq: u64,
    issued: Timestamp,
    key: &ed25519_dalek::SigningKey,
) -> Result<Vec<u8>, Error> {
    message.check_limits()?;
    let header = Header {
        version: seq,
        expires: issued.plus_secs(DEVICE_MESSAGE_VALIDITY_SECS),
    };
    envelope::sign_document(header, message, &[key])
}

impl TrustRoot {
    /// Verifies a command addressed to `device`: signed by the controller role, naming this
    /// device, neither it nor the root expired. The caller still checks the sequence number.
    pub fn verify_command(
        &self,
        bytes: &[u8],
        device: &DeviceId,
        now: Timestamp,
    ) -> Result<Sequenced<Command>, Error> {
        let opened: Opened<Command> = envelope::open(bytes, MAX_MESSAGE_BYTES)?;
        self.check(&opened, Role::Controller, now)?;
        check_device(&opened.body.device, device)?;
        Ok(Sequenced {
            seq: opened.header.version,
            message: opened.body,
        })
    }
}
