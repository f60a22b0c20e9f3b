//! The gateway: updates microcontrollers attached to this device over serial lines, and
//! reports them to the controller as child devices.
//!
//! A release for a child names the child's device id as its artifact's `target`. The gateway
//! verifies the JSON manifest against its own trust root (signatures, expiry, the child's
//! hardware id, anti-rollback against the counter the child last reported), asks the MCU what
//! it runs (`HELLO`), stages the image in the data directory with the same resumable, hashed
//! download as the A/B slots, checks the image header against the manifest and the trust
//! root's release role, and streams it with the firmware's `transfer::Sender`. The MCU's
//! bootloader swaps and boots the image on trial; the gateway polls until the MCU committed it
//! or reverted it, and reports each step as a [`ChildReport`] signed with the gateway's key.
//!
//! Each child's update is a small sans-I/O machine ([`machine`]), separate from the gateway's
//! own A/B machine, persisted in the journal's `children` before its actions run, and
//! resumed at the next start: a staging download from its checkpoint, a transfer from the
//! offset the MCU confirmed.
//!
//! **Architecture invariant:** nothing reaches the MCU before the staged image has passed
//! the manifest's digest, `ImageHeader::check_release` and the release role's signatures; the
//! MCU checks again before it writes a byte, and its bootloader before it swaps.

pub mod config;
pub mod link;
pub mod machine;
pub mod record;
pub mod serial;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use swell_firmware::TrustAnchor;
use swell_proto::messages::ChildReport;
use swell_proto::messages::ReleaseRef;
use swell_proto::{DeviceId, DevicePolicy, TargetName, Timestamp, TrustRoot};
use tokio::sync::mpsc;

pub use config::ChildConfig;
pub use machine::{Entry, Event, Job, State};
pub use record::ChildRecord;

use crate::config::Config;
use crate::driver::ROOTFS_TARGET;
use crate::journal::{Outgoing, Persisted};
use crate::signer::Signer;
use crate::update::Source;
use link::Shared;
use machine::{Action, Ctx, step};

/// Largest child image the gateway accepts. The transfer holds the image in memory, and MCU
/// flash is counted in KiB to a few MiB; 16 MiB leaves room without letting a manifest make
/// the agent allocate without bound.
pub const MAX_IMAGE: u64 = 16 << 20;

/// Where a verified install goes.
#[derive(Debug)]
pub enum Admission {
    /// The release has no artifact for any configured child: the gateway's own A/B path.
    NotForChildren,
    /// An update of one child.
    Child(DeviceId, Box<Job>),
}

/// A refused install, and the child it was for when that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The child the release targets, if it got that far.
    pub child: Option<DeviceId>,
    /// Why, as one line starting with `release refused:` or `busy:`.
    pub reason: String,
}

/// The result of one step, for the driver: persist (if `changed`), publish `reports`, then
/// hand `actions` back to [`Gateway::perform`].
#[derive(Debug)]
pub struct Stepped {
    /// Whether the persisted state changed.
    pub changed: bool,
    /// Signed reports, already in the outbox.
    pub reports: Vec<Vec<u8>>,
    /// What to do once the journal is written.
    pub actions: Vec<Action>,
}

/// The gateway: configured children, their tasks, and the channel their results come back on.
#[derive(Debug)]
pub struct Gateway {
    device: DeviceId,
    children: Vec<ChildConfig>,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<(DeviceId, Event)>,
    rx: mpsc::UnboundedReceiver<(DeviceId, Event)>,
    tasks: tokio::task::JoinSet<()>,
}

/// Default seconds to wait for a child that is no longer configured (only its failure is
/// reported).
const UNCONFIGURED_SETTLE_SECS: i64 = 300;

impl Gateway {
    /// The gateway for `config`'s children, verifying against `root`, never writing `active`
    /// (the gateway's running slot).
    pub fn new(config: &Config, root: &TrustRoot, active: PathBuf) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let anchor = TrustAnchor::from_root(root).map_err(|e| {
            format!("the trust root's release role cannot be used for firmware images: {e}")
        });
        Self {
            device: config.device.id.clone(),
            children: config.children.clone(),
            shared: Arc::new(Shared {
                root: root.clone(),
                anchor,
                data_dir: config.data_dir.clone(),
                active,
                download: config.download.clone(),
                cancel: Arc::default(),
            }),
            tx,
            rx,
            tasks: tokio::task::JoinSet::new(),
        }
    }

    fn child(&self, id: &DeviceId) -> Option<&ChildConfig> {
        self.children.iter().find(|c| &c.id == id)
    }

    /// Queues the resumption of every child update the journal shows in progress.
    pub fn resume(&self, p: &Persisted) {
        for entry in &p.children {
            if entry.is_settled() {
                continue;
            }
            let event = if self.child(&entry.child).is_some() {
                Event::Restarted
            } else {
                Event::StepFailed(format!(
                    "child {} is no longer in the configuration",
                    entry.child
                ))
            };
            let _ = self.tx.send((entry.child.clone(), event));
        }
    }

    /// The next result of a child's task. Cancel-safe.
    pub async fn recv(&mut self) -> Option<(DeviceId, Event)> {
        self.rx.recv().await
    }

    /// Whether no child update is in progress.
    pub fn is_settled(p: &Persisted) -> bool {
        p.children.iter().all(Entry::is_settled)
    }

    /// Verifies a release and, if it targets one configured child, builds that child's job.
    /// Nothing is written and the MCU is not asked anything.
    pub fn admit(
        &self,
        p: &Persisted,
        manifest: &[u8],
        source: Source,
        command: Option<String>,
        now: Timestamp,
    ) -> Result<Admission, Refusal> {
        let refuse = |child: Option<&DeviceId>, reason: String| Refusal {
            child: child.cloned(),
            reason,
        };
        let release = self
            .shared
            .root
            .verify_release(manifest, now)
            .map_err(|e| refuse(None, format!("release refused: {e}")))?;
        let doc = release.document();
        let targeted: Vec<&ChildConfig> = self
            .children
            .iter()
            .filter(|c| {
                doc.artifacts
                    .iter()
                    .any(|a| a.target.as_str() == c.id.as_str())
            })
            .collect();
        let child = match targeted.as_slice() {
            [] => return Ok(Admission::NotForChildren),
            [child] => *child,
            many => {
                let names: Vec<&str> = many.iter().map(|c| c.id.as_str()).collect();
                return Err(refuse(
                    None,
                    format!(
                        "release refused: it has artifacts for children {}; one install \
                         updates one device",
                        names.join(", ")
                    ),
                ));
            }
        };
        let id = Some(&child.id);
        if doc
            .artifacts
            .iter()
            .any(|a| a.target.as_str() == ROOTFS_TARGET)
        {
            return Err(refuse(
                id,
                format!(
                    "release refused: it has artifacts for both {ROOTFS_TARGET} and child {}; \
                     one install updates one device",
                    child.id
                ),
            ));
        }
        let entry = p.children.iter().find(|e| e.child == child.id);
        release
            .admit(DevicePolicy {
                hardware: &child.hardware,
                installed_security_version: entry.map_or(0, Entry::committed_counter),
            })
            .map_err(|e| refuse(id, format!("release refused: child {}: {e}", child.id)))?;
        let target = TargetName::new(child.id.as_str())
            .map_err(|e| refuse(id, format!("release refused: {e}")))?;
        let artifact = doc
            .artifact(&target)
            .map_err(|e| refuse(id, format!("release refused: {e}")))?;
        if artifact.size > MAX_IMAGE {
            return Err(refuse(
                id,
                format!(
                    "release refused: the image for child {} is {} bytes, over the gateway's \
                     limit of {MAX_IMAGE}",
                    child.id, artifact.size
                ),
            ));
        }
        if let Some(busy) = entry
            .and_then(|e| e.state.as_ref())
            .filter(|s| !s.is_settled())
        {
            let j = busy.job();
            return Err(refuse(
                id,
                format!(
                    "busy: the update of child {} to {} is still in progress",
                    child.id, j.release.version
                ),
            ));
        }
        Ok(Admission::Child(
            child.id.clone(),
            Box::new(Job {
                child: child.id.clone(),
                hardware: child.hardware.clone(),
                command,
                release: ReleaseRef {
                    name: doc.name.clone(),
                    version: doc.release_version.clone(),
                },
                security_version: doc.security_version,
                size: artifact.size,
                sha256: artifact.sha256,
                source,
                manifest: manifest.to_vec(),
                admitted: now,
            }),
        ))
    }

    /// One step of `child`'s machine: transition, sign the step's reports into the outbox,
    /// and return what the driver must persist, publish and perform. `None` when the state
    /// does not take the event (a late result, or a child never heard of).
    pub fn step(
        &self,
        p: &mut Persisted,
        signer: &Signer,
        child: &DeviceId,
        event: Event,
        now: Timestamp,
    ) -> Result<Option<Stepped>, String> {
        let settle_secs = self.child(child).map_or(UNCONFIGURED_SETTLE_SECS, |c| {
            i64::try_from(c.settle_timeout_secs).unwrap_or(i64::MAX)
        });
        let index = match p.children.iter().position(|e| &e.child == child) {
            Some(i) => i,
            None => {
                p.children.push(Entry::new(child.clone()));
                p.children.len() - 1
            }
        };
        let ctx = Ctx { now, settle_secs };
        let Ok((next, actions)) = step(&p.children[index], event, ctx) else {
            if p.children[index].state.is_none() && p.children[index].running.is_none() {
                p.children.remove(index);
            }
            return Ok(None);
        };
        let mut changed = next != p.children[index];
        p.children[index] = next;
        let mut reports = Vec::new();
        let mut rest = Vec::new();
        for action in actions {
            match action {
                Action::Report(r) => {
                    let payload = self.sign(signer, child, &r, now)?;
                    p.enqueue(Outgoing {
                        topic: swell_proto::topics::DeviceTopic::Report,
                        payload: payload.clone(),
                    });
                    reports.push(payload);
                    changed = true;
                }
                other => rest.push(other),
            }
        }
        Ok(Some(Stepped {
            changed,
            reports,
            actions: rest,
        }))
    }

    /// A signed `failed` report about `child` for a refused command; the state is unchanged.
    pub fn refusal_report(
        &self,
        signer: &Signer,
        child: &DeviceId,
        p: &Persisted,
        command: Option<String>,
        reason: &str,
        now: Timestamp,
    ) -> Result<Vec<u8>, String> {
        let running = p
            .children
            .iter()
            .find(|e| &e.child == child)
            .and_then(|e| e.running.clone())
            .unwrap_or(swell_proto::messages::ChildRunning {
                release: None,
                version: None,
                security_version: 0,
            });
        let report = machine::Report {
            state: swell_proto::messages::UpdateState::Failed,
            command,
            target: None,
            running,
            reason: Some(reason.to_string()),
        };
        self.sign(signer, child, &report, now)
    }

    fn sign(
        &self,
        signer: &Signer,
        child: &DeviceId,
        r: &machine::Report,
        now: Timestamp,
    ) -> Result<Vec<u8>, String> {
        let mut reason = r.reason.clone();
        if let Some(text) = reason.as_mut() {
            truncate_utf8(text, swell_proto::limits::MAX_REASON_LEN);
        }
        let wire = ChildReport {
            device: self.device.clone(),
            child: child.clone(),
            issued: now,
            state: r.state,
            command: r.command.clone(),
            target: r.target.clone(),
            running: r.running.clone(),
            reason,
        };
        signer
            .sign(&wire, now)
            .map_err(|e| format!("signing a report about child {child}: {e}"))
    }

    /// Performs a step's actions: each long one on a blocking thread whose result comes back
    /// through [`Gateway::recv`].
    pub fn perform(&mut self, child: &DeviceId, actions: Vec<Action>) {
        while self.tasks.try_join_next().is_some() {}
        let Some(config) = self.child(child).cloned() else {
            return;
        };
        for action in actions {
            let shared = Arc::clone(&self.shared);
            let work: Box<dyn FnOnce() -> Option<Event> + Send> = match action {
                Action::Report(_) => continue,
                Action::Cleanup => {
                    // Best effort: a leftover staging file is overwritten by the next update.
                    let _ = std::fs::remove_file(shared.staged(&config));
                    let _ = std::fs::remove_file(shared.checkpoint(&config));
                    continue;
                }
                Action::Probe(_) => {
                    let c = config.clone();
                    Box::new(move || link::probe(&shared, &c))
                }
                Action::Fetch(job) => {
                    let c = config.clone();
                    Box::new(move || link::fetch(&shared, &c, &job))
                }
                Action::Transfer(job) => {
                    let c = config.clone();
                    Box::new(move || link::transfer(&shared, &c, &job))
                }
                Action::Watch {
                    sent, wait_while, ..
                } => {
                    let c = config.clone();
                    Box::new(move || link::watch(&shared, &c, sent, wait_while))
                }
            };
            let tx = self.tx.clone();
            let id = child.clone();
            self.tasks.spawn_blocking(move || {
                if let Some(event) = work() {
                    let _ = tx.send((id, event));
                }
            });
        }
    }

    /// Stops every task (a transfer stops between two requests; the MCU keeps what it
    /// confirmed) and waits for them.
    pub async fn shutdown(&mut self) {
        self.shared.cancel.store(true, Ordering::SeqCst);
        while self.tasks.join_next().await.is_some() {}
    }
}

fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ed25519_dalek::SigningKey;
    use swell_proto::envelope::{Header, RoleKeys, sign_document};
    use swell_proto::root::{Roles, RootDocument};
    use swell_proto::{Artifact, HardwareId, PublicKey, ReleaseDocument, ReleaseName, SemVer};
    use swell_proto::{Sha256Digest, Timestamp};

    use super::*;

    const NOW: Timestamp = Timestamp::from_unix(1_800_000_000);

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn root() -> TrustRoot {
        let public = |s: u8| PublicKey::from(key(s).verifying_key());
        let role = |s: u8| RoleKeys {
            keyids: vec![public(s).key_id()],
            threshold: 1,
        };
        let doc = RootDocument::new(
            &[public(1), public(2), public(3)],
            Roles {
                root: role(1),
                release: role(2),
                controller: role(3),
            },
        );
        let header = Header {
            version: 1,
            expires: NOW.plus_secs(3600),
        };
        TrustRoot::from_trusted(&sign_document(header, &doc, &[&key(1)]).unwrap()).unwrap()
    }

    fn gateway() -> Gateway {
        let text = r#"
data_dir = "/nonexistent/swell"
[device]
id = "gw-1"
hardware = "rpi4"
key = "/k.pem"
[trust]
root = "/root.json"
[slots]
a = "/a"
b = "/b"
[boot]
backend = "simulated"
board = "/board"
[[child]]
id = "mcu-1"
hardware = "sensor-v2"
port = "/dev/ttyUSB0"
[[child]]
id = "mcu-2"
hardware = "sensor-v2"
port = "/dev/ttyUSB1"
"#;
        let config = Config::parse(text, Path::new("agent.toml")).unwrap();
        Gateway::new(&config, &root(), "/a".into())
    }

    /// A release for `targets`, each artifact of `size` bytes, for hardware sensor-v2.
    fn release(targets: &[&str], size: u64) -> Vec<u8> {
        let doc = ReleaseDocument {
            name: ReleaseName::new("sensor-fw").unwrap(),
            release_version: SemVer::new("1.1.0").unwrap(),
            security_version: 2,
            hardware: vec![HardwareId::new("sensor-v2").unwrap()],
            artifacts: targets
                .iter()
                .map(|t| Artifact {
                    target: TargetName::new(t).unwrap(),
                    size,
                    sha256: Sha256Digest::of(t.as_bytes()),
                })
                .collect(),
        };
        let header = Header {
            version: 1,
            expires: NOW.plus_secs(3600),
        };
        sign_document(header, &doc, &[&key(2)]).unwrap()
    }

    fn admit(gw: &Gateway, p: &Persisted, manifest: &[u8]) -> Result<Admission, Refusal> {
        gw.admit(p, manifest, Source::Url("http://x/y".into()), None, NOW)
    }

    /// One configured child target goes to the gateway; no configured child leaves the
    /// release to the A/B path; several devices at once are refused by name.
    #[test]
    fn installs_are_routed_by_artifact_target() {
        let gw = gateway();
        let p = Persisted::fresh();
        let Ok(Admission::Child(child, job)) = admit(&gw, &p, &release(&["mcu-1"], 100)) else {
            panic!("not routed to the child")
        };
        assert_eq!((child.as_str(), job.size), ("mcu-1", 100));
        for other in [&["rootfs"][..], &["mcu-9"]] {
            assert!(matches!(
                admit(&gw, &p, &release(other, 100)),
                Ok(Admission::NotForChildren)
            ));
        }
        let e = admit(&gw, &p, &release(&["rootfs", "mcu-1"], 100)).unwrap_err();
        assert_eq!(e.child.as_ref().map(DeviceId::as_str), Some("mcu-1"));
        assert!(
            e.reason.contains("both rootfs and child mcu-1"),
            "{}",
            e.reason
        );
        let e = admit(&gw, &p, &release(&["mcu-1", "mcu-2"], 100)).unwrap_err();
        assert!(e.reason.contains("children mcu-1, mcu-2"), "{}", e.reason);
        let e = admit(&gw, &p, &release(&["mcu-1"], MAX_IMAGE + 1)).unwrap_err();
        assert!(
            e.reason.contains("over the gateway's limit"),
            "{}",
            e.reason
        );
    }

    /// A child with an update in progress, or a counter above the release's, refuses it.
    #[test]
    fn busy_children_and_rollbacks_are_refused() {
        let gw = gateway();
        let mut p = Persisted::fresh();
        let Ok(Admission::Child(_, job)) = admit(&gw, &p, &release(&["mcu-1"], 100)) else {
            panic!()
        };
        let mut entry = Entry::new(job.child.clone());
        entry.state = Some(State::Downloading(*job));
        p.children.push(entry);
        let e = admit(&gw, &p, &release(&["mcu-1"], 100)).unwrap_err();
        assert!(
            e.reason.starts_with("busy: the update of child mcu-1"),
            "{}",
            e.reason
        );
        p.children[0].state = None;
        p.children[0].running = Some(swell_proto::messages::ChildRunning {
            release: None,
            version: None,
            security_version: 3,
        });
        let e = admit(&gw, &p, &release(&["mcu-1"], 100)).unwrap_err();
        assert!(e.reason.contains("anti-rollback"), "{}", e.reason);
    }
}
