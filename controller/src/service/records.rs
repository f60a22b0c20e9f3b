//! The stored forms of the service's state, and their conversion to and from the internal
//! types. These are the only serde types of persisted state (an IPC boundary with the future);
//! `fleet`, `releases` and `audit` work on the internal types.
//!
//! Every record refuses unknown fields, so a value written by a newer controller is reported
//! as corrupt rather than silently half-read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use swell_proto::messages::{Progress, ReleaseRef, Running, UpdateState};
use swell_proto::{DeviceId, HardwareId, PublicKey, Timestamp};

use super::db::DbError;
use super::fleet::{Inventory, Label, Registration, Revocation, Zone};

/// A stored registration.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    id: DeviceId,
    /// The raw 32-byte Ed25519 key in lowercase hex.
    public_key: String,
    hardware: HardwareId,
    zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cohort: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
    provisioned_at: Timestamp,
    provisioned_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked: Option<RevocationRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationRecord {
    at: Timestamp,
    by: String,
    reason: String,
}

/// A stored inventory.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_seen: Option<Timestamp>,
    #[serde(default)]
    online: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    running: Option<Running>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<UpdateState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<ReleaseRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uptime_s: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metrics: BTreeMap<String, i64>,
    #[serde(default)]
    state_seq: u64,
    #[serde(default)]
    online_seq: u64,
}

/// A stored release or staged manifest: the signed manifest exactly as uploaded, and who
/// uploaded it when. Everything else is read back out of the manifest.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRecord {
    /// The signed manifest envelope, as uploaded.
    pub manifest: String,
    /// When it was accepted (or staged).
    pub at: Timestamp,
    /// The token name that uploaded it.
    pub by: String,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(format!("{what}: {e}"))
}

/// Serializes a record. Records hold only strings, integers and maps, so this cannot fail;
/// an empty value would be reported as corrupt on the next read rather than panic here.
pub fn to_bytes(record: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

fn hex_key(key: &PublicKey) -> String {
    key.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn key_from_hex(s: &str) -> Option<PublicKey> {
    if s.len() != 64 {
        return None;
    }
    let mut raw = [0u8; 32];
    for (i, out) in raw.iter_mut().enumerate() {
        *out = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    PublicKey::from_bytes(&raw).ok()
}

impl DeviceRecord {
    /// The stored form of `reg`.
    pub fn from_registration(reg: &Registration) -> DeviceRecord {
        DeviceRecord {
            id: reg.id.clone(),
            public_key: hex_key(&reg.public_key),
            hardware: reg.hardware.clone(),
            zone: reg.zone.as_str().to_owned(),
            cohort: reg.cohort.as_ref().map(|c| c.as_str().to_owned()),
            tags: reg
                .tags
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
                .collect(),
            provisioned_at: reg.provisioned_at,
            provisioned_by: reg.provisioned_by.clone(),
            revoked: reg.revoked.as_ref().map(|r| RevocationRecord {
                at: r.at,
                by: r.by.clone(),
                reason: r.reason.clone(),
            }),
        }
    }

    /// Parses and validates a stored registration.
    pub fn parse(bytes: &[u8]) -> Result<Registration, DbError> {
        let r: DeviceRecord = serde_json::from_slice(bytes).map_err(|e| corrupt("device", e))?;
        let what = format!("device {}", r.id);
        let label = |s: &str| Label::new(s).map_err(|e| corrupt(&what, e));
        Ok(Registration {
            public_key: key_from_hex(&r.public_key)
                .ok_or_else(|| corrupt(&what, "public key is not 64 hex digits of a valid key"))?,
            hardware: r.hardware,
            zone: Zone::new(&r.zone).map_err(|e| corrupt(&what, e))?,
            cohort: r.cohort.as_deref().map(label).transpose()?,
            tags: r
                .tags
                .iter()
                .map(|(k, v)| Ok((label(k)?, label(v)?)))
                .collect::<Result<_, DbError>>()?,
            provisioned_at: r.provisioned_at,
            provisioned_by: r.provisioned_by,
            revoked: r.revoked.map(|x| Revocation {
                at: x.at,
                by: x.by,
                reason: x.reason,
            }),
            id: r.id,
        })
    }
}

impl InventoryRecord {
    /// The stored form of `inv`.
    pub fn from_inventory(inv: &Inventory) -> InventoryRecord {
        InventoryRecord {
            last_seen: inv.last_seen,
            online: inv.online,
            agent_version: inv.agent_version.clone(),
            running: inv.running.clone(),
            state: inv.state,
            target: inv.target.clone(),
            command: inv.command.clone(),
            last_error: inv.last_error.clone(),
            progress: inv.progress,
            uptime_s: inv.uptime_s,
            metrics: inv.metrics.clone(),
            state_seq: inv.state_seq,
            online_seq: inv.online_seq,
        }
    }

    /// Parses a stored inventory.
    pub fn parse(bytes: &[u8]) -> Result<Inventory, DbError> {
        let r: InventoryRecord =
            serde_json::from_slice(bytes).map_err(|e| corrupt("inventory", e))?;
        Ok(Inventory {
            last_seen: r.last_seen,
            online: r.online,
            agent_version: r.agent_version,
            running: r.running,
            state: r.state,
            target: r.target,
            command: r.command,
            last_error: r.last_error,
            progress: r.progress,
            uptime_s: r.uptime_s,
            metrics: r.metrics,
            state_seq: r.state_seq,
            online_seq: r.online_seq,
        })
    }
}

/// Parses a stored decimal counter.
pub fn parse_counter(bytes: &[u8]) -> Result<u64, DbError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt("counter", String::from_utf8_lossy(bytes)))
}

/// The stored form of a counter.
pub fn counter_bytes(n: u64) -> Vec<u8> {
    n.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_round_trip() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let reg = Registration {
            id: DeviceId::new("gw-1").unwrap(),
            public_key: PublicKey::from(key.verifying_key()),
            hardware: HardwareId::new("gw-x86").unwrap(),
            zone: Zone::new("Asia/Tokyo").unwrap(),
            cohort: Some(Label::new("canary").unwrap()),
            tags: [(Label::new("site").unwrap(), Label::new("a").unwrap())].into(),
            provisioned_at: Timestamp::from_unix(5),
            provisioned_by: "alice".into(),
            revoked: Some(Revocation {
                at: Timestamp::from_unix(6),
                by: "bob".into(),
                reason: "stolen".into(),
            }),
        };
        let bytes = to_bytes(&DeviceRecord::from_registration(&reg));
        assert_eq!(DeviceRecord::parse(&bytes).unwrap(), reg);
        assert!(DeviceRecord::parse(b"{\"id\":\"x\"}").is_err());
    }

    #[test]
    fn counters_round_trip() {
        assert_eq!(parse_counter(&counter_bytes(42)).unwrap(), 42);
        assert!(parse_counter(b"-1").is_err());
    }
}
