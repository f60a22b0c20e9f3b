//! Commands to devices: numbered, signed with the controller key, recorded, then published.
//!
//! A command's sequence number (its envelope `version`) is per device and strictly increasing
//! across controller restarts: the number is committed to the store, with the audit entry of
//! the command, *before* the command is published, so a crash can waste a number but never
//! reuse one. Agents drop a command whose number is not above the last they accepted.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use ed25519_dalek::SigningKey;
use serde_json::json;
use swell_proto::envelope::{self, Header};
use swell_proto::messages::{Action, Command};
use swell_proto::{DeviceId, Timestamp};
use tokio::sync::Mutex;
use tracing::info;

use super::audit::{self, AuditLog};
use super::bus::{Bus, BusError};
use super::db::{Db, DbError, keys};
use super::metrics::Metrics;
use super::records;
use super::registry::{Registry, Sender};
use crate::store::{Batch, Table};

/// How long a command stays valid: long enough for a device that is offline over a weekend to
/// still act on it when it reconnects (the persistent session keeps it queued), short enough
/// that a forgotten command does not fire weeks later.
pub const COMMAND_VALIDITY_SECS: i64 = 7 * 24 * 3600;

/// Why a command was not sent.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such device.
    #[error("no device {0}")]
    NotFound(DeviceId),
    /// The device is revoked.
    #[error("device {0} is revoked")]
    Revoked(DeviceId),
    /// The command could not be signed (a manifest that does not round-trip, for example).
    #[error("cannot sign the command: {0}")]
    Sign(#[from] swell_proto::Error),
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The broker client is stopped.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Audit details could not be built.
    #[error(transparent)]
    Details(#[from] audit::DetailsError),
}

/// A command that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Its id (`{device}.{seq}`), echoed in the device's reports.
    pub id: String,
    /// Its sequence number.
    pub seq: u64,
    /// The signed envelope as published: publishing it again is harmless (the device drops a
    /// sequence number it has seen), which is how a restarted controller finishes a send it
    /// recorded but may not have published.
    pub payload: Vec<u8>,
}

/// Why no install command can be built for a device.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The catalogue has no such release.
    #[error("no accepted release {0} {1}")]
    NoRelease(swell_proto::ReleaseName, swell_proto::SemVer),
    /// The release no longer verifies (expired, or the root changed).
    #[error("release {0} {1}: {2}")]
    Unverifiable(swell_proto::ReleaseName, swell_proto::SemVer, String),
    /// The device would refuse it (hardware, anti-rollback).
    #[error("device {0}: {1}")]
    Refused(DeviceId, String),
    /// The release has no `rootfs` artifact.
    #[error("release {0} {1} has no rootfs artifact")]
    NoRootfs(swell_proto::ReleaseName, swell_proto::SemVer),
}

/// The install command for `device` and release `name` `version`, checked first the way the
/// device will check it (a command it must refuse is better refused here), with the artifact
/// URL under `public_url`; and the detail recorded with it.
pub fn install_action(
    releases: &super::releases::Releases,
    public_url: &str,
    device: &super::fleet::Device,
    name: &swell_proto::ReleaseName,
    version: &swell_proto::SemVer,
    now: Timestamp,
) -> Result<(Action, serde_json::Value), InstallError> {
    let r = releases
        .get(name, version)
        .ok_or_else(|| InstallError::NoRelease(name.clone(), version.clone()))?;
    let verified = releases
        .reverify(&r.manifest, now)
        .map_err(|e| InstallError::Unverifiable(name.clone(), version.clone(), e.to_string()))?;
    let installed = device
        .inventory
        .running
        .as_ref()
        .map_or(0, |r| r.security_version);
    verified
        .admit(swell_proto::release::DevicePolicy {
            hardware: &device.registration.hardware,
            installed_security_version: installed,
        })
        .map_err(|e| InstallError::Refused(device.registration.id.clone(), e.to_string()))?;
    let rootfs = verified
        .document()
        .artifacts
        .iter()
        .find(|a| a.target.as_str() == "rootfs")
        .ok_or_else(|| InstallError::NoRootfs(name.clone(), version.clone()))?;
    // The manifest was parsed as JSON when it was accepted; an empty object would be refused
    // by the device, never silently accepted.
    let manifest: serde_json::Value =
        serde_json::from_slice(&r.manifest).unwrap_or_else(|_| json!({}));
    let url = format!("{public_url}/v1/artifacts/{}", rootfs.sha256);
    Ok((
        Action::Install { manifest, url },
        json!({"release": name.as_str(), "version": version.to_string()}),
    ))
}

/// The cloneable command sender.
#[derive(Debug, Clone)]
pub struct Commands {
    db: Db,
    audit: AuditLog,
    registry: Registry,
    bus: Bus,
    metrics: Arc<Metrics>,
    key: Arc<SigningKey>,
    last: Arc<std::sync::Mutex<HashMap<DeviceId, u64>>>,
    order: Arc<Mutex<()>>,
}

/// The kind of an action, for logs and the audit log.
pub fn action_kind(action: &Action) -> &'static str {
    match action {
        Action::Install { .. } => "install",
        Action::Revert => "revert",
        Action::Cancel => "cancel",
    }
}

impl Commands {
    /// A sender signing with `key`.
    pub fn new(
        db: Db,
        audit: AuditLog,
        registry: Registry,
        bus: Bus,
        metrics: Arc<Metrics>,
        key: SigningKey,
    ) -> Commands {
        Commands {
            db,
            audit,
            registry,
            bus,
            metrics,
            key: Arc::new(key),
            last: Arc::default(),
            order: Arc::default(),
        }
    }

    async fn last_seq(&self, device: &DeviceId) -> Result<u64, DbError> {
        let cached = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(device)
            .copied();
        if let Some(n) = cached {
            return Ok(n);
        }
        match self
            .db
            .get(Table::Devices, keys::command_seq(device))
            .await?
        {
            Some(bytes) => records::parse_counter(&bytes),
            None => Ok(0),
        }
    }

    /// Signs, records and publishes `action` for `device` on behalf of `actor`.
    pub async fn send(
        &self,
        device: &DeviceId,
        action: Action,
        detail: serde_json::Value,
        actor: &str,
        now: Timestamp,
    ) -> Result<Sent, CommandError> {
        self.send_with(device, action, detail, actor, now, |_, _| {})
            .await
    }

    /// [`send`](Self::send), with `record` adding the caller's own writes about the command
    /// to the batch that allocates its sequence number, so that the caller's record of the
    /// command and the number are stored together or not at all.
    pub async fn send_with(
        &self,
        device: &DeviceId,
        action: Action,
        detail: serde_json::Value,
        actor: &str,
        now: Timestamp,
        record: impl FnOnce(&Sent, &mut Batch),
    ) -> Result<Sent, CommandError> {
        let result = self
            .send_inner(device, action, detail, actor, now, record)
            .await;
        match &result {
            Ok(_) => self.metrics.command_sent(),
            Err(_) => self.metrics.command_failed(),
        }
        result
    }

    /// Publishes a command recorded earlier again (see [`Sent::payload`]).
    pub async fn republish(&self, device: &DeviceId, payload: Vec<u8>) -> Result<(), BusError> {
        self.bus.publish_command(device, payload).await
    }

    async fn send_inner(
        &self,
        device: &DeviceId,
        action: Action,
        detail: serde_json::Value,
        actor: &str,
        now: Timestamp,
        record: impl FnOnce(&Sent, &mut Batch),
    ) -> Result<Sent, CommandError> {
        match self.registry.sender(device) {
            Sender::Unknown => return Err(CommandError::NotFound(device.clone())),
            Sender::Revoked => return Err(CommandError::Revoked(device.clone())),
            Sender::Active(_) => {}
        }
        // One command at a time, so numbers are allocated and published in the same order and
        // the device sees them rising.
        let _order = self.order.lock().await;
        let last = self.last_seq(device).await?;
        let seq = last + 1;
        let id = format!("{device}.{seq}");
        let kind = action_kind(&action);
        let command = Command {
            device: device.clone(),
            id: id.clone(),
            action,
        };
        let header = Header {
            version: seq,
            expires: now.plus_secs(COMMAND_VALIDITY_SECS),
        };
        let payload = envelope::sign_document(header, &command, &[self.key.as_ref()])?;

        let mut w = self.audit.writer().await;
        let mut batch = Batch::new();
        let key = keys::command_seq(device);
        let old = (last > 0).then(|| records::counter_bytes(last));
        batch.require(Table::Devices, key.clone(), old).put(
            Table::Devices,
            key,
            records::counter_bytes(seq),
        );
        let details = audit::details(&json!({
            "device": device.as_str(),
            "command": id,
            "kind": kind,
            "detail": detail,
        }))?;
        w.append(&mut batch, now, actor, "command.send", details);
        let sent = Sent { id, seq, payload };
        record(&sent, &mut batch);
        w.commit(batch).await?;
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(device.clone(), seq);

        self.bus
            .publish_command(device, sent.payload.clone())
            .await?;
        info!(device_id = %device, command = %sent.id, kind, "command sent");
        Ok(sent)
    }
}
