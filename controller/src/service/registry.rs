//! The registry handle: devices as the rest of the service sees them, kept in memory and
//! written through to the store.
//!
//! Every change is committed to the store first and applied to memory only once the commit
//! succeeded, so memory never shows what a restart would lose. Registrations change through
//! [`Registry::provision`] and [`Registry::revoke`] (operator actions, each with its audit
//! entry in the same batch); inventories and sequence high-water marks change through
//! [`Registry::accept`], which only the bus calls, one message at a time.
//!
//! This is the seam for enrollment: an enrollment handler verifies its token and calls
//! [`Registry::provision`] with the device's own public key, adding the token's consumption to
//! the same batch through [`Provision::extra`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, PoisonError, RwLock};

use serde_json::json;
use swell_proto::messages::Signals;
use swell_proto::topics::DeviceTopic;
use swell_proto::{DeviceId, HardwareId, PublicKey, Timestamp};

use super::audit::{self, AuditLog};
use super::db::{Db, DbError, keys};
use super::fleet::{
    Device, DeviceMessage, Filter, Inventory, Label, Registration, Revocation, Zone,
};
use super::records::{self, DeviceRecord, InventoryRecord};
use crate::store::{Batch, Table};

/// Longest revocation reason kept.
pub const MAX_REASON_LEN: usize = 1024;

/// Health-signal batches kept in memory per device, newest last: six hours at the agent's
/// default of one batch a minute, which covers a stage's soak window. A batch is a few hundred
/// bytes typically (at most about 40 KiB with 64 signatures), so a fleet of 10,000 devices
/// keeps a few hundred MiB at worst. The history is not stored: after a controller restart it
/// starts empty and refills as batches arrive.
pub const MAX_SIGNAL_HISTORY: usize = 360;

/// Why a registry change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A device with this id exists (revoked devices keep their id).
    #[error("device {0} already exists")]
    Exists(DeviceId),
    /// Another device is registered with this public key.
    #[error("public key {keyid} is already registered to device {device}")]
    KeyInUse {
        /// The key's id.
        keyid: swell_proto::KeyId,
        /// The device holding it.
        device: DeviceId,
    },
    /// No such device.
    #[error("no device {0}")]
    NotFound(DeviceId),
    /// The device is already revoked.
    #[error("device {0} is already revoked")]
    AlreadyRevoked(DeviceId),
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The audit details could not be built.
    #[error(transparent)]
    Details(#[from] audit::DetailsError),
}

/// What provisioning needs: the device's identity and placement.
#[derive(Debug, Clone)]
pub struct Provision {
    /// The device id.
    pub id: DeviceId,
    /// The key its messages are signed with.
    pub public_key: PublicKey,
    /// Its hardware id.
    pub hardware: HardwareId,
    /// Its time zone.
    pub zone: Zone,
    /// Its cohort.
    pub cohort: Option<Label>,
    /// Its tags.
    pub tags: BTreeMap<Label, Label>,
    /// More writes (and preconditions) to commit atomically with the registration, such as
    /// an enrollment token's use count.
    pub extra: Batch,
}

/// What the bus needs to know about a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// Not registered.
    Unknown,
    /// Registered and revoked.
    Revoked,
    /// Registered: messages must verify with this key.
    Active(PublicKey),
}

#[derive(Debug, Default)]
struct Cache {
    devices: BTreeMap<DeviceId, Device>,
    sequences: HashMap<(DeviceId, &'static str), u64>,
    /// Recent health-signal batches per device, oldest first, at most [`MAX_SIGNAL_HISTORY`].
    signals: HashMap<DeviceId, VecDeque<(Timestamp, Signals)>>,
}

/// The cloneable registry handle.
#[derive(Debug, Clone)]
pub struct Registry {
    db: Db,
    audit: AuditLog,
    cache: Arc<RwLock<Cache>>,
    changed: Arc<tokio::sync::Notify>,
}

fn topic_from_suffix(suffix: &str) -> Option<&'static str> {
    DeviceTopic::ALL
        .into_iter()
        .map(DeviceTopic::suffix)
        .find(|s| *s == suffix)
}

impl Registry {
    /// Loads every device, inventory and high-water mark from the store.
    pub async fn open(db: Db, audit: AuditLog) -> Result<Registry, DbError> {
        let mut cache = Cache::default();
        for (_, v) in db.scan(Table::Devices, keys::REGISTRATION.into()).await? {
            let registration = DeviceRecord::parse(&v)?;
            cache.devices.insert(
                registration.id.clone(),
                Device {
                    registration,
                    inventory: Inventory::default(),
                },
            );
        }
        for (k, v) in db.scan(Table::Devices, keys::INVENTORY.into()).await? {
            let id = key_suffix(&k, keys::INVENTORY)?;
            if let Some(d) = cache.devices.get_mut(&id) {
                d.inventory = InventoryRecord::parse(&v)?;
            }
        }
        for (k, v) in db.scan(Table::Devices, keys::SEQUENCE.into()).await? {
            let rest = key_text(&k)?
                .strip_prefix(keys::SEQUENCE)
                .unwrap_or_default()
                .to_owned();
            let parsed = rest
                .split_once('/')
                .and_then(|(id, topic)| Some((DeviceId::new(id).ok()?, topic_from_suffix(topic)?)));
            let (id, topic) =
                parsed.ok_or_else(|| DbError::Corrupt(format!("sequence key {rest:?}")))?;
            cache
                .sequences
                .insert((id, topic), records::parse_counter(&v)?);
        }
        Ok(Registry {
            db,
            audit,
            cache: Arc::new(RwLock::new(cache)),
            changed: Arc::default(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        // A panic while holding the lock cannot leave the cache half-updated: every update is
        // a single insert after the store commit. So a poisoned lock is still consistent.
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves after the next accepted device message (or at once if one was accepted since
    /// the last call): the rollout executor reacts to reports as they arrive, not at its next
    /// tick. One waiter is meant (the executor).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// One device.
    pub fn get(&self, id: &DeviceId) -> Option<Device> {
        self.read().devices.get(id).cloned()
    }

    /// The devices `filter` selects, by id.
    pub fn list(&self, filter: &Filter) -> Vec<Device> {
        self.read()
            .devices
            .values()
            .filter(|d| filter.matches(d))
            .cloned()
            .collect()
    }

    /// Every device (for metrics).
    pub fn snapshot(&self) -> Vec<Device> {
        self.list(&Filter::default())
    }

    /// Registers a device (an operator's provisioning, or enrollment).
    pub async fn provision(
        &self,
        p: Provision,
        actor: &str,
        now: Timestamp,
    ) -> Result<Device, RegistryError> {
        // The audit writer's lock serializes every audited change, so the checks below stay
        // true until the commit.
        let mut w = self.audit.writer().await;
        {
            let cache = self.read();
            if cache.devices.contains_key(&p.id) {
                return Err(RegistryError::Exists(p.id));
            }
            let keyid = p.public_key.key_id();
            if let Some(other) = cache
                .devices
                .values()
                .find(|d| d.registration.public_key.key_id() == keyid)
            {
                return Err(RegistryError::KeyInUse {
                    keyid,
                    device: other.registration.id.clone(),
                });
            }
        }
        let registration = Registration {
            id: p.id,
            public_key: p.public_key,
            hardware: p.hardware,
            zone: p.zone,
            cohort: p.cohort,
            tags: p.tags,
            provisioned_at: now,
            provisioned_by: actor.to_owned(),
            revoked: None,
        };
        let key = keys::registration(&registration.id);
        let mut batch = p.extra;
        batch.require(Table::Devices, key.clone(), None).put(
            Table::Devices,
            key,
            records::to_bytes(&DeviceRecord::from_registration(&registration)),
        );
        let details = audit::details(&json!({
            "device": registration.id.as_str(),
            "keyid": registration.public_key.key_id().to_hex(),
            "hardware": registration.hardware.as_str(),
            "zone": registration.zone.as_str(),
            "cohort": registration.cohort.as_ref().map(Label::as_str),
            "tags": registration.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<BTreeMap<_, _>>(),
        }))?;
        w.append(&mut batch, now, actor, "device.provision", details);
        w.commit(batch).await.map_err(|e| {
            if e.is_conflict() {
                RegistryError::Exists(registration.id.clone())
            } else {
                e.into()
            }
        })?;
        let device = Device {
            registration,
            inventory: Inventory::default(),
        };
        self.write()
            .devices
            .insert(device.registration.id.clone(), device.clone());
        Ok(device)
    }

    /// Revokes a device: from now on its messages are dropped. The record stays, so the id
    /// and key cannot be reused by mistake and the history remains readable.
    pub async fn revoke(
        &self,
        id: &DeviceId,
        reason: &str,
        actor: &str,
        now: Timestamp,
    ) -> Result<Device, RegistryError> {
        let mut w = self.audit.writer().await;
        let mut device = self
            .get(id)
            .ok_or_else(|| RegistryError::NotFound(id.clone()))?;
        if device.registration.revoked.is_some() {
            return Err(RegistryError::AlreadyRevoked(id.clone()));
        }
        let key = keys::registration(id);
        let old = records::to_bytes(&DeviceRecord::from_registration(&device.registration));
        let reason: String = reason.chars().take(MAX_REASON_LEN).collect();
        device.registration.revoked = Some(Revocation {
            at: now,
            by: actor.to_owned(),
            reason: reason.clone(),
        });
        let mut batch = Batch::new();
        batch.require(Table::Devices, key.clone(), Some(old)).put(
            Table::Devices,
            key,
            records::to_bytes(&DeviceRecord::from_registration(&device.registration)),
        );
        let details = audit::details(&json!({"device": id.as_str(), "reason": reason}))?;
        w.append(&mut batch, now, actor, "device.revoke", details);
        w.commit(batch).await?;
        let mut cache = self.write();
        if let Some(d) = cache.devices.get_mut(id) {
            d.registration = device.registration.clone();
            device.inventory = d.inventory.clone();
        }
        Ok(device)
    }

    /// Who sent a message naming `id`.
    pub fn sender(&self, id: &DeviceId) -> Sender {
        match self.read().devices.get(id) {
            None => Sender::Unknown,
            Some(d) if d.registration.revoked.is_some() => Sender::Revoked,
            Some(d) => Sender::Active(d.registration.public_key),
        }
    }

    /// The recent health-signal batches of `id`, oldest first (in the order they were
    /// accepted, which is the order the device made them): at most [`MAX_SIGNAL_HISTORY`],
    /// kept in memory only. Empty for an unknown device or one that sent none since the
    /// controller started.
    pub fn signals(&self, id: &DeviceId) -> Vec<Signals> {
        self.read()
            .signals
            .get(id)
            .map(|h| h.iter().map(|(_, b)| b.clone()).collect())
            .unwrap_or_default()
    }

    /// [`signals`](Self::signals) with the controller's time of receipt of each batch: the
    /// analysis places batches on the controller's clock, not the device's.
    pub fn signals_received(&self, id: &DeviceId) -> Vec<(Timestamp, Signals)> {
        self.read()
            .signals
            .get(id)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The newest health-signal batch of `id`, if any arrived since the controller started.
    pub fn latest_signals(&self, id: &DeviceId) -> Option<Signals> {
        self.read()
            .signals
            .get(id)
            .and_then(|h| h.back().map(|(_, b)| b.clone()))
    }

    /// The highest sequence number accepted from `id` on `topic` (0 if none).
    pub fn high_water(&self, id: &DeviceId, topic: DeviceTopic) -> u64 {
        self.read()
            .sequences
            .get(&(id.clone(), topic.suffix()))
            .copied()
            .unwrap_or(0)
    }

    /// Stores a verified, fresh message: the new inventory and the new high-water mark, in one
    /// batch. Only the bus calls this, one message at a time.
    pub async fn accept(
        &self,
        id: &DeviceId,
        topic: DeviceTopic,
        seq: u64,
        message: &DeviceMessage,
        now: Timestamp,
    ) -> Result<(), DbError> {
        let Some(mut inventory) = self.get(id).map(|d| d.inventory) else {
            return Ok(());
        };
        inventory.apply(message, seq, now);
        let mut batch = Batch::new();
        batch
            .put(
                Table::Devices,
                keys::inventory(id),
                records::to_bytes(&InventoryRecord::from_inventory(&inventory)),
            )
            .put(
                Table::Devices,
                keys::sequence(id, topic.suffix()),
                records::counter_bytes(seq),
            );
        self.db.commit(batch).await?;
        {
            let mut cache = self.write();
            cache.sequences.insert((id.clone(), topic.suffix()), seq);
            if let Some(d) = cache.devices.get_mut(id) {
                d.inventory = inventory;
            }
            if let DeviceMessage::Signals(batch) = message {
                let history = cache.signals.entry(id.clone()).or_default();
                if history.len() >= MAX_SIGNAL_HISTORY {
                    history.pop_front();
                }
                history.push_back((now, batch.clone()));
            }
        }
        self.changed.notify_one();
        Ok(())
    }
}

fn key_text(key: &[u8]) -> Result<&str, DbError> {
    std::str::from_utf8(key).map_err(|_| DbError::Corrupt("a key is not UTF-8".into()))
}

fn key_suffix(key: &[u8], prefix: &str) -> Result<DeviceId, DbError> {
    let text = key_text(key)?;
    text.strip_prefix(prefix)
        .and_then(|id| DeviceId::new(id).ok())
        .ok_or_else(|| DbError::Corrupt(format!("device key {text:?}")))
}
