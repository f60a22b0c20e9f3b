//! Enrollment: tokens an admin makes, and the one unauthenticated registration path, where a
//! device presents a token with its own freshly generated public key and receives its mTLS
//! client certificate.
//!
//! A token is stored only as its SHA-256 (table `tokens`, key = the digest's hex) with its
//! cohort, tags, expiry and remaining uses. Enrolling registers the device through
//! [`Registry::provision`] with the token's decrement in the **same batch**, conditional on
//! the token record being exactly what was read: of two concurrent enrollments with the last
//! use of a token, one commits and the other's batch fails its precondition, so a token is
//! never used more often than it allows. The certificate is issued before anything is
//! stored, so a refused or failed enrollment leaves nothing behind.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use swell_proto::keys::pem;
use swell_proto::{DeviceId, HardwareId, Timestamp};

use super::audit::{self, AuditLog};
use super::auth::digest_of;
use super::ca::{CaError, DeviceCa};
use super::db::{Db, DbError};
use super::fleet::{Device, Label, MAX_TAGS, Zone};
use super::registry::{Provision, Registry, RegistryError};
use crate::store::{Batch, Table};

/// Most devices one token may enroll: a token is a credential; a bigger fleet gets several.
pub const MAX_TOKEN_USES: u32 = 100_000;

/// Longest token lifetime: a year. Tokens are meant to be short-lived.
pub const MAX_TOKEN_TTL_S: u64 = 365 * 86_400;

/// The prefix of every enrollment token, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "swell-enroll-";

/// Why a token could not be made or a device could not enroll.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The request is malformed (zone, key, labels, ttl, uses).
    #[error("{0}")]
    Invalid(String),
    /// No such token.
    #[error("unknown enrollment token")]
    UnknownToken,
    /// The token has expired.
    #[error("the enrollment token expired at {0}")]
    Expired(Timestamp),
    /// The token has no uses left.
    #[error("the enrollment token has no uses left")]
    UsedUp,
    /// Another enrollment used the token at the same moment; the request may be retried.
    #[error("the enrollment token was used by a concurrent enrollment; retry")]
    Contended,
    /// The device id or key is taken.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The CA could not issue the certificate.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The audit details could not be built.
    #[error(transparent)]
    Details(#[from] audit::DetailsError),
}

/// A token as stored (serde form; the secret is never stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    id: String,
    cohort: Option<String>,
    tags: BTreeMap<String, String>,
    expires: Timestamp,
    uses: u32,
    uses_left: u32,
    created_at: Timestamp,
    created_by: String,
}

/// What a token grants, as listed (never the secret).
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    /// A short public name: the first 12 hex digits of the token's SHA-256.
    pub id: String,
    /// Cohort given to devices.
    pub cohort: Option<String>,
    /// Tags given to devices.
    pub tags: BTreeMap<String, String>,
    /// Expiry.
    pub expires: Timestamp,
    /// Uses it was made with.
    pub uses: u32,
    /// Uses left.
    pub uses_left: u32,
    /// `active`, `expired` or `used_up`.
    pub status: &'static str,
    /// When it was made.
    pub created_at: Timestamp,
    /// By whom.
    pub created_by: String,
}

fn info(r: &TokenRecord, now: Timestamp) -> TokenInfo {
    let status = if r.uses_left == 0 {
        "used_up"
    } else if r.expires <= now {
        "expired"
    } else {
        "active"
    };
    TokenInfo {
        id: r.id.clone(),
        cohort: r.cohort.clone(),
        tags: r.tags.clone(),
        expires: r.expires,
        uses: r.uses,
        uses_left: r.uses_left,
        status,
        created_at: r.created_at,
        created_by: r.created_by.clone(),
    }
}

/// What `enroll-token create` asks for.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    /// Cohort of the devices enrolled with it.
    pub cohort: Option<String>,
    /// Their tags.
    pub tags: BTreeMap<String, String>,
    /// Lifetime in seconds.
    pub ttl_s: u64,
    /// How many devices may enroll with it.
    pub uses: u32,
}

/// What a device presents.
#[derive(Debug, Clone)]
pub struct Application {
    /// The token.
    pub token: String,
    /// Its id.
    pub id: DeviceId,
    /// Its hardware id.
    pub hardware: HardwareId,
    /// Its IANA zone name.
    pub zone: String,
    /// Its own tags (the token's win on conflict).
    pub tags: BTreeMap<String, String>,
    /// Its public key, SPKI PEM.
    pub public_key: String,
}

/// What an enrolled device receives.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The registered device.
    pub device: Device,
    /// Its client certificate, PEM.
    pub certificate: String,
    /// The CA certificate, PEM.
    pub ca: String,
}

fn labels(tags: &BTreeMap<String, String>) -> Result<BTreeMap<Label, Label>, EnrollError> {
    if tags.len() > MAX_TAGS {
        return Err(EnrollError::Invalid(format!(
            "tags: at most {MAX_TAGS} tags"
        )));
    }
    tags.iter()
        .map(|(k, v)| Ok((Label::new(k)?, Label::new(v)?)))
        .collect::<Result<_, String>>()
        .map_err(|e| EnrollError::Invalid(format!("tags: {e}")))
}

/// The cloneable enrollment handle.
#[derive(Debug, Clone)]
pub struct Enrollment {
    db: Db,
    audit: AuditLog,
    registry: Registry,
    ca: Arc<DeviceCa>,
}

impl Enrollment {
    /// The handle.
    pub fn new(db: Db, audit: AuditLog, registry: Registry, ca: Arc<DeviceCa>) -> Enrollment {
        Enrollment {
            db,
            audit,
            registry,
            ca,
        }
    }

    /// The CA.
    pub fn ca(&self) -> &DeviceCa {
        &self.ca
    }

    /// Makes a token from `random` (32 bytes from the OS), stores its digest, audited.
    /// Returns the secret (shown once) and what it grants.
    pub async fn create_token(
        &self,
        spec: TokenSpec,
        random: &[u8; 32],
        actor: &str,
        now: Timestamp,
    ) -> Result<(String, TokenInfo), EnrollError> {
        if spec.uses == 0 || spec.uses > MAX_TOKEN_USES {
            return Err(EnrollError::Invalid(format!(
                "uses: between 1 and {MAX_TOKEN_USES}"
            )));
        }
        if spec.ttl_s == 0 || spec.ttl_s > MAX_TOKEN_TTL_S {
            return Err(EnrollError::Invalid(format!(
                "ttl_s: between 1 and {MAX_TOKEN_TTL_S} seconds"
            )));
        }
        if let Some(c) = &spec.cohort {
            Label::new(c).map_err(|e| EnrollError::Invalid(format!("cohort: {e}")))?;
        }
        labels(&spec.tags)?;
        let secret = format!(
            "{TOKEN_PREFIX}{}",
            random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let digest = digest_of(&secret).to_hex();
        let ttl = i64::try_from(spec.ttl_s).unwrap_or(i64::MAX);
        let record = TokenRecord {
            id: digest[..12].to_owned(),
            cohort: spec.cohort,
            tags: spec.tags,
            expires: now.plus_secs(ttl),
            uses: spec.uses,
            uses_left: spec.uses,
            created_at: now,
            created_by: actor.to_owned(),
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| DbError::Corrupt(e.to_string()))?;
        let mut w = self.audit.writer().await;
        let mut batch = Batch::new();
        batch
            .require(Table::Tokens, digest.clone().into_bytes(), None)
            .put(Table::Tokens, digest.into_bytes(), bytes);
        let details = audit::details(&json!({
            "token": record.id, "cohort": record.cohort, "tags": record.tags,
            "expires": record.expires, "uses": record.uses,
        }))?;
        w.append(&mut batch, now, actor, "enroll_token.create", details);
        w.commit(batch).await?;
        Ok((secret, info(&record, now)))
    }

    /// Every token, newest first.
    pub async fn list_tokens(&self, now: Timestamp) -> Result<Vec<TokenInfo>, EnrollError> {
        let mut out = Vec::new();
        for (_, v) in self.db.scan(Table::Tokens, Vec::new()).await? {
            let r: TokenRecord = serde_json::from_slice(&v)
                .map_err(|e| DbError::Corrupt(format!("token record: {e}")))?;
            out.push(info(&r, now));
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Enrolls a device: checks the token and the application, issues the certificate, then
    /// registers the device and uses the token in one conditional batch.
    pub async fn enroll(&self, app: Application, now: Timestamp) -> Result<Enrolled, EnrollError> {
        let digest = digest_of(app.token.trim()).to_hex().into_bytes();
        let old = self
            .db
            .get(Table::Tokens, digest.clone())
            .await?
            .ok_or(EnrollError::UnknownToken)?;
        let mut record: TokenRecord = serde_json::from_slice(&old)
            .map_err(|e| DbError::Corrupt(format!("token record: {e}")))?;
        if record.uses_left == 0 {
            return Err(EnrollError::UsedUp);
        }
        if record.expires <= now {
            return Err(EnrollError::Expired(record.expires));
        }
        let public_key = pem::public_key_from_pem(&app.public_key)
            .map_err(|e| EnrollError::Invalid(format!("public_key: {e}")))?;
        let zone = Zone::new(&app.zone).map_err(|e| EnrollError::Invalid(format!("zone: {e}")))?;
        let mut tags = app.tags.clone();
        tags.extend(record.tags.clone());
        let tags = labels(&tags)?;
        let cohort = record
            .cohort
            .as_deref()
            .map(Label::new)
            .transpose()
            .map_err(|e| EnrollError::Invalid(format!("cohort: {e}")))?;
        let certificate = self.ca.issue_device(&app.id, &public_key, now)?;

        record.uses_left -= 1;
        let new = serde_json::to_vec(&record).map_err(|e| DbError::Corrupt(e.to_string()))?;
        let mut extra = Batch::new();
        extra
            .require(Table::Tokens, digest.clone(), Some(old))
            .put(Table::Tokens, digest, new);
        let p = Provision {
            id: app.id.clone(),
            public_key,
            hardware: app.hardware,
            zone,
            cohort,
            tags,
            extra,
        };
        let actor = format!("enroll-token:{}", record.id);
        let device = match self.registry.provision(p, &actor, now).await {
            Ok(d) => d,
            // The batch's preconditions are the device's absence and the token's old
            // record; if the device is still absent, the token changed under us.
            Err(RegistryError::Exists(id)) if self.registry.get(&id).is_none() => {
                return Err(EnrollError::Contended);
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Enrolled {
            device,
            certificate,
            ca: self.ca.cert_pem().to_owned(),
        })
    }
}
