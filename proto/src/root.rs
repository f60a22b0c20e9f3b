//! The trust root (`root.json`): which keys may sign for which role, and how many must.
//!
//! Roles: `root` signs trust roots (and their rotations), `release` signs release manifests,
//! `controller` signs the commands the controller sends to devices. Rotation follows TUF: a
//! new root must carry the next version and be signed by a threshold of the trusted root role
//! *and* of its own root role, so a chain of rotations verifies one link at a time from the
//! root a device shipped with.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::envelope::{self, Document, Header, Opened, RoleKeys};
use crate::error::Error;
use crate::ids::KeyId;
use crate::keys::PublicKey;
use crate::limits::MAX_DOCUMENT_BYTES;
use crate::time::Timestamp;

/// A public key as the trust root lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Always `ed25519`.
    pub keytype: String,
    /// The 32-byte raw public key in lowercase hex.
    pub public: String,
}

impl KeyEntry {
    /// The entry for `key`.
    pub fn ed25519(key: &PublicKey) -> Self {
        Self {
            keytype: String::from("ed25519"),
            public: crate::hex::encode(&key.to_bytes()),
        }
    }

    fn decode(&self, keyid: &KeyId) -> Result<PublicKey, Error> {
        let invalid = |detail: String| Error::Invalid {
            what: "trust root",
            detail,
        };
        if self.keytype != "ed25519" {
            return Err(invalid(format!(
                "key {keyid} has unsupported keytype {:?}",
                self.keytype
            )));
        }
        let raw = crate::hex::decode32(&self.public)
            .ok_or_else(|| invalid(format!("key {keyid} is not 64 lowercase hex digits")))?;
        let key = PublicKey::from_bytes(&raw)?;
        if key.key_id() != *keyid {
            return Err(invalid(format!(
                "key listed as {keyid} has id {}: a key id is the SHA-256 of the raw key",
                key.key_id()
            )));
        }
        Ok(key)
    }
}

/// The roles of a trust root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    /// Signs trust roots.
    pub root: RoleKeys,
    /// Signs release manifests.
    pub release: RoleKeys,
    /// Signs commands to devices.
    pub controller: RoleKeys,
}

/// A role of the trust root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Signs trust roots.
    Root,
    /// Signs release manifests.
    Release,
    /// Signs commands to devices.
    Controller,
}

impl Role {
    /// The role's name in `root.json`.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Release => "release",
            Role::Controller => "controller",
        }
    }
}

impl Roles {
    /// The keys of `role`.
    pub fn get(&self, role: Role) -> &RoleKeys {
        match role {
            Role::Root => &self.root,
            Role::Release => &self.release,
            Role::Controller => &self.controller,
        }
    }

    /// The roles with their names, in a fixed order.
    pub fn iter(&self) -> [(&'static str, &RoleKeys); 3] {
        [Role::Root, Role::Release, Role::Controller].map(|r| (r.name(), self.get(r)))
    }
}

/// The `signed` part of `root.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootDocument {
    /// Every key any role uses, by key id.
    pub keys: BTreeMap<KeyId, KeyEntry>,
    /// The roles.
    pub roles: Roles,
}

/// A root's header `version` starts at 1; each rotation adds exactly 1. After `expires` the
/// root verifies nothing until it is rotated.
impl Document for RootDocument {
    const TYPE: &'static str = "root";
}

impl RootDocument {
    /// A root document listing `keys`.
    pub fn new(keys: &[PublicKey], roles: Roles) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|k| (k.key_id(), KeyEntry::ed25519(k)))
                .collect(),
            roles,
        }
    }

    /// Decodes every key and checks that the roles can be satisfied.
    pub fn validate(&self) -> Result<BTreeMap<KeyId, PublicKey>, Error> {
        let invalid = |detail: String| Error::Invalid {
            what: "trust root",
            detail,
        };
        let keys = self
            .keys
            .iter()
            .map(|(id, entry)| entry.decode(id).map(|k| (*id, k)))
            .collect::<Result<BTreeMap<_, _>, Error>>()?;
        for (name, role) in self.roles.iter() {
            let mut seen = Vec::new();
            for id in &role.keyids {
                if !keys.contains_key(id) {
                    return Err(invalid(format!(
                        "role {name} names key {id}, which is not listed"
                    )));
                }
                if seen.contains(&id) {
                    return Err(invalid(format!("role {name} lists key {id} twice")));
                }
                seen.push(id);
            }
            let have = u32::try_from(role.keyids.len()).unwrap_or(u32::MAX);
            if role.threshold == 0 || role.threshold > have {
                return Err(invalid(format!(
                    "role {name} has threshold {} with {have} key(s): it must be 1 to {have}",
                    role.threshold
                )));
            }
        }
        Ok(keys)
    }
}

/// A verified trust root: the only way to obtain one is to verify it.
#[derive(Debug, Clone)]
pub struct TrustRoot {
    header: Header,
    doc: RootDocument,
    keys: BTreeMap<KeyId, PublicKey>,
}

impl TrustRoot {
    /// Loads the root a device or controller is provisioned with. It must be signed by a
    /// threshold of its own root role. Expiry is checked when the root is used, not here, so
    /// an expired root can still be rotated.
    pub fn from_trusted(bytes: &[u8]) -> Result<Self, Error> {
        let opened: Opened<RootDocument> = envelope::open(bytes, MAX_DOCUMENT_BYTES)?;
        if opened.header.version == 0 {
            return Err(Error::Invalid {
                what: "trust root",
                detail: String::from("version must be at least 1"),
            });
        }
        let keys = opened.body.validate()?;
        opened.check_role(&keys, &opened.body.roles.root, "root")?;
        Ok(Self {
            header: opened.header,
            doc: opened.body,
            keys,
        })
    }

    /// Verifies `bytes` as the next root after this one and returns it.
    pub fn rotate(&self, bytes: &[u8]) -> Result<Self, Error> {
        let opened: Opened<RootDocument> = envelope::open(bytes, MAX_DOCUMENT_BYTES)?;
        let offered = opened.header.version;
        if Some(offered) != self.header.version.checked_add(1) {
            return Err(Error::RootVersion {
                trusted: self.header.version,
                offered,
            });
        }
        let keys = opened.body.validate()?;
        let trusted_role = format!("root (trusted version {})", self.header.version);
        opened.check_role(&self.keys, &self.doc.roles.root, &trusted_role)?;
        let new_role = format!("root (new version {offered})");
        opened.check_role(&keys, &opened.body.roles.root, &new_role)?;
        Ok(Self {
            header: opened.header,
            doc: opened.body,
            keys,
        })
    }

    /// Follows a chain of rotations from this root, one version at a time.
    pub fn rotate_chain<'a>(
        &self,
        chain: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, Error> {
        chain
            .into_iter()
            .try_fold(self.clone(), |root, next| root.rotate(next))
    }

    /// Fails with [`Error::Expired`] if the root has expired at `now`.
    pub fn check_fresh(&self, now: Timestamp) -> Result<(), Error> {
        if self.header.expires <= now {
            return Err(Error::Expired {
                what: "trust root",
                expires: self.header.expires,
                now,
            });
        }
        Ok(())
    }

    /// Checks `opened` against `role` of this root, and that neither the root nor the
    /// document has expired at `now`.
    pub fn check<T: Document>(
        &self,
        opened: &Opened<T>,
        role: Role,
        now: Timestamp,
    ) -> Result<(), Error> {
        self.check_fresh(now)?;
        opened.check_role(&self.keys, self.doc.roles.get(role), role.name())?;
        opened.check_expiry(now)
    }

    /// The root document.
    pub fn document(&self) -> &RootDocument {
        &self.doc
    }

    /// The root's version and expiry.
    pub fn header(&self) -> Header {
        self.header
    }
}
