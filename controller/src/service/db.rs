//! The service's view of the store: async access (the store is synchronous, so every call runs
//! on tokio's blocking pool) and the key layout.
//!
//! | Table | Key | Value |
//! |---|---|---|
//! | `devices` | `reg/{device}` | registration (JSON, `records::DeviceRecord`) |
//! | `devices` | `inv/{device}` | inventory (JSON, `records::InventoryRecord`) |
//! | `devices` | `seq/{device}/{topic}` | highest accepted sequence number from the device on `topic` (decimal) |
//! | `devices` | `cmd/{device}` | last command sequence number used for the device (decimal) |
//! | `releases` | `rel/{name}/{version}` | accepted release (JSON, `records::ReleaseRecord`) |
//! | `releases` | `staged/{name}/{version}` | verified manifest waiting for its image(s) |
//! | `audit` | `{seq:020}` | audit entry (canonical JSON) |
//! | `meta` | `audit/head` | `{seq} {hash}` of the newest audit entry |
//!
//! Registration and inventory are separate keys so the API (which writes registrations) and the
//! bus (which writes inventories) never overwrite each other's changes.

use std::sync::Arc;

use crate::store::{self, Batch, Entry, Store, Table};

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A blocking store call panicked or was cancelled.
    #[error("store call did not complete: {0}")]
    Join(String),
    /// A stored value does not parse: the store was changed outside the controller.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

impl DbError {
    /// Whether a batch precondition failed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, DbError::Store(e) if e.is_conflict())
    }
}

/// Store keys.
pub mod keys {
    use swell_proto::{DeviceId, ReleaseName, SemVer};

    /// The audit head in `meta`.
    pub const AUDIT_HEAD: &[u8] = b"audit/head";
    /// Prefix of registrations in `devices`.
    pub const REGISTRATION: &str = "reg/";
    /// Prefix of inventories in `devices`.
    pub const INVENTORY: &str = "inv/";
    /// Prefix of sequence high-water marks in `devices`.
    pub const SEQUENCE: &str = "seq/";
    /// Prefix of command sequence numbers in `devices`.
    pub const COMMAND_SEQ: &str = "cmd/";
    /// Prefix of accepted releases in `releases`.
    pub const RELEASE: &str = "rel/";
    /// Prefix of staged manifests in `releases`.
    pub const STAGED: &str = "staged/";

    /// `reg/{device}`.
    pub fn registration(id: &DeviceId) -> Vec<u8> {
        format!("{REGISTRATION}{id}").into_bytes()
    }

    /// `inv/{device}`.
    pub fn inventory(id: &DeviceId) -> Vec<u8> {
        format!("{INVENTORY}{id}").into_bytes()
    }

    /// `seq/{device}/{topic}`.
    pub fn sequence(id: &DeviceId, topic: &str) -> Vec<u8> {
        format!("{SEQUENCE}{id}/{topic}").into_bytes()
    }

    /// `cmd/{device}`.
    pub fn command_seq(id: &DeviceId) -> Vec<u8> {
        format!("{COMMAND_SEQ}{id}").into_bytes()
    }

    /// `rel/{name}/{version}`.
    pub fn release(name: &ReleaseName, version: &SemVer) -> Vec<u8> {
        format!("{RELEASE}{name}/{version}").into_bytes()
    }

    /// `staged/{name}/{version}`.
    pub fn staged(name: &ReleaseName, version: &SemVer) -> Vec<u8> {
        format!("{STAGED}{name}/{version}").into_bytes()
    }
}

/// A cloneable async handle on the store.
#[derive(Debug, Clone)]
pub struct Db {
    store: Arc<dyn Store>,
}

impl Db {
    /// Wraps an open store.
    pub fn new(store: Arc<dyn Store>) -> Db {
        Db { store }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, store::Error> + Send + 'static,
    ) -> Result<T, DbError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| DbError::Join(e.to_string()))?
            .map_err(DbError::from)
    }

    /// The value at `key`.
    pub async fn get(&self, table: Table, key: Vec<u8>) -> Result<Option<Vec<u8>>, DbError> {
        self.blocking(move |s| s.get(table, &key)).await
    }

    /// Entries under `prefix`, in key order.
    pub async fn scan(&self, table: Table, prefix: Vec<u8>) -> Result<Vec<Entry>, DbError> {
        self.blocking(move |s| s.scan(table, &prefix)).await
    }

    /// Commits `batch` atomically and durably.
    pub async fn commit(&self, batch: Batch) -> Result<(), DbError> {
        self.blocking(move |s| s.commit(&batch)).await
    }
}
