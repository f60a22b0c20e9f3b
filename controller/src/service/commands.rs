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
        let result = self.send_inner(device, action, detail, actor, now).await;
        match &result {
            Ok(_) => self.metrics.command_sent(),
            Err(_) => self.metrics.command_failed(),
        }
        result
    }

    async fn send_inner(
        &self,
        device: &DeviceId,
        action: Action,
        detail: serde_json::Value,
        actor: &str,
        now: Timestamp,
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
        w.commit(batch).await?;
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(device.clone(), seq);

        self.bus.publish_command(device, payload).await?;
        info!(device_id = %device, command = %id, kind, "command sent");
        Ok(Sent { id, seq })
    }
}
