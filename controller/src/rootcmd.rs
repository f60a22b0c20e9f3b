//! `swellctl root`: making, rotating, verifying and showing trust roots (`root.json`).
//!
//! A new root (from `init` or `rotate`) is written unsigned; the key holders then add their
//! signatures one by one with `root sign` (see [`crate::document::sign_file`]), each on their
//! own machine, so no single place ever holds a threshold of root keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use swell_proto::envelope::{self, Header, Opened};
use swell_proto::limits::MAX_DOCUMENT_BYTES;
use swell_proto::root::KeyEntry;
use swell_proto::{KeyId, Role, RoleKeys, Roles, RootDocument, Timestamp, TrustRoot};

use crate::document::{self, valid_signers};
use crate::error::Error;
use crate::fsutil::{self, Overwrite};
use crate::keys;
use crate::output::{Report, Table};
use crate::when::{When, future_expiry};

/// The keys and threshold given for one role on the command line.
#[derive(Debug, Clone, Default)]
pub struct RoleSpec {
    /// Public (or private) PEM key files.
    pub keys: Vec<PathBuf>,
    /// Distinct signatures required.
    pub threshold: Option<u32>,
}

/// The three roles as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct RoleSpecs {
    /// `--root-key`, `--root-threshold`.
    pub root: RoleSpec,
    /// `--release-key`, `--release-threshold`.
    pub release: RoleSpec,
    /// `--controller-key`, `--controller-threshold`.
    pub controller: RoleSpec,
}

impl RoleSpecs {
    /// The spec of `role` and the names of its two options.
    fn get(&self, role: Role) -> (&RoleSpec, &'static str, &'static str) {
        match role {
            Role::Root => (&self.root, "--root-key", "--root-threshold"),
            Role::Release => (&self.release, "--release-key", "--release-threshold"),
            Role::Controller => (
                &self.controller,
                "--controller-key",
                "--controller-threshold",
            ),
        }
    }
}

/// Builds one role from its spec, taking what is not given from `old` (for a rotation) and
/// adding the keys it uses to `keys`.
fn build_role(
    role: Role,
    specs: &RoleSpecs,
    old: Option<&RootDocument>,
    keys: &mut BTreeMap<KeyId, KeyEntry>,
) -> Result<RoleKeys, Error> {
    let (spec, key_arg, threshold_arg) = specs.get(role);
    let name = role.name();
    let old_role = old.map(|o| (o, o.roles.get(role)));
    let keyids = match old_role {
        _ if !spec.keys.is_empty() => {
            let mut ids = Vec::new();
            for path in &spec.keys {
                let key = keys::load_public_key(path)?;
                keys.insert(key.key_id(), KeyEntry::ed25519(&key));
                ids.push(key.key_id());
            }
            ids
        }
        Some((o, old_role)) => {
            for id in &old_role.keyids {
                if let Some(entry) = o.keys.get(id) {
                    keys.insert(*id, entry.clone());
                }
            }
            old_role.keyids.clone()
        }
        None => {
            return Err(Error::Argument {
                arg: key_arg,
                reason: format!("the {name} role needs at least one key"),
            });
        }
    };
    let threshold = match (spec.threshold, old_role) {
        (Some(t), _) => t,
        (None, Some((_, old_role))) => old_role.threshold,
        (None, None) => {
            return Err(Error::Argument {
                arg: threshold_arg,
                reason: format!("the {name} role needs a threshold"),
            });
        }
    };
    Ok(RoleKeys { keyids, threshold })
}

/// Builds a root document from `specs`, carrying over from `old` what is not given. Keys no
/// role uses any more are dropped.
fn build(specs: &RoleSpecs, old: Option<&RootDocument>) -> Result<RootDocument, Error> {
    let mut keys = BTreeMap::new();
    let roles = Roles {
        root: build_role(Role::Root, specs, old, &mut keys)?,
        release: build_role(Role::Release, specs, old, &mut keys)?,
        controller: build_role(Role::Controller, specs, old, &mut keys)?,
    };
    Ok(RootDocument { keys, roles })
}

/// `root init`: writes an unsigned version 1 root to `out`.
pub fn init(
    out: &Path,
    expires: When,
    specs: &RoleSpecs,
    now: Timestamp,
) -> Result<RootReport, Error> {
    let expires = future_expiry(expires, now)?;
    let doc = build(specs, None)?;
    write_new_root(
        out,
        Header {
            version: 1,
            expires,
        },
        &doc,
        now,
    )
}

/// `root rotate`: writes the unsigned successor of the root at `from` to `out`: version + 1,
/// the roles given in `specs`, the others carried over.
pub fn rotate(
    from: &Path,
    out: &Path,
    expires: Option<When>,
    specs: &RoleSpecs,
    now: Timestamp,
) -> Result<RootReport, Error> {
    let old: Opened<RootDocument> = document::read_envelope(from)?
        .open()
        .map_err(Error::document(from))?;
    let version = old
        .header
        .version
        .checked_add(1)
        .ok_or_else(|| Error::Argument {
            arg: "--from",
            reason: format!(
                "{}: version {} cannot be raised",
                from.display(),
                old.header.version
            ),
        })?;
    let expires = match expires {
        Some(when) => future_expiry(when, now)?,
        None if old.header.expires > now => old.header.expires,
        None => {
            return Err(Error::Argument {
                arg: "--expires",
                reason: format!(
                    "the old root expires at {}, which is not in the future; give a new expiry",
                    old.header.expires
                ),
            });
        }
    };
    let doc = build(specs, Some(&old.body))?;
    write_new_root(out, Header { version, expires }, &doc, now)
}

fn write_new_root(
    out: &Path,
    header: Header,
    doc: &RootDocument,
    now: Timestamp,
) -> Result<RootReport, Error> {
    doc.validate().map_err(Error::document(out))?;
    let env = envelope::envelope(header, doc).map_err(Error::document(out))?;
    document::write_envelope(out, &env, Overwrite::Refuse)?;
    Ok(RootReport::new(out, header, doc, Vec::new(), now))
}

/// `root verify`: verifies `root` as self-signed, or, given `trusted`, verifies `trusted` and
/// follows `chain` and then `root` as rotations from it. An expired result is refused unless
/// `allow_expired`.
pub fn verify(
    root: &Path,
    trusted: Option<&Path>,
    chain: &[PathBuf],
    at: Timestamp,
    allow_expired: bool,
) -> Result<RootReport, Error> {
    // Read once: the signers reported are those of the very bytes verified.
    let bytes = fsutil::read_document(root)?;
    let mut followed = Vec::new();
    let trust = match trusted {
        None => TrustRoot::from_trusted(&bytes).map_err(Error::document(root))?,
        Some(first) => {
            let mut trust = TrustRoot::from_trusted(&fsutil::read_document(first)?)
                .map_err(Error::document(first))?;
            followed.push(first.display().to_string());
            for link in chain {
                trust = trust
                    .rotate(&fsutil::read_document(link)?)
                    .map_err(Error::document(link))?;
                followed.push(link.display().to_string());
            }
            trust.rotate(&bytes).map_err(Error::document(root))?
        }
    };
    if !allow_expired {
        trust.check_fresh(at).map_err(Error::document(root))?;
    }
    let opened: Opened<RootDocument> =
        envelope::open(&bytes, MAX_DOCUMENT_BYTES).map_err(Error::document(root))?;
    let keys = trust.document().validate().map_err(Error::document(root))?;
    let signed_by = valid_signers(&opened, &keys, &trust.document().roles.root);
    let mut report = RootReport::new(
        root,
        trust.header(),
        trust.document(),
        opened.signatures.iter().map(|s| s.keyid).collect(),
        at,
    );
    report.verified = true;
    report.chain = followed;
    report.signed_by = Some(signed_by);
    Ok(report)
}

/// `root show`: the root's contents, without checking any signature.
pub fn show(root: &Path, now: Timestamp) -> Result<RootReport, Error> {
    let opened: Opened<RootDocument> = document::read_envelope(root)?
        .open()
        .map_err(Error::document(root))?;
    let signatures = opened.signatures.iter().map(|s| s.keyid).collect();
    Ok(RootReport::new(
        root,
        opened.header,
        &opened.body,
        signatures,
        now,
    ))
}

/// One role of a root, as reported.
#[derive(Debug, Serialize)]
pub struct RoleReport {
    /// `root`, `release` or `controller`.
    pub name: &'static str,
    /// Distinct signatures required.
    pub threshold: u32,
    /// The role's key ids.
    pub keyids: Vec<KeyId>,
}

/// What `root init`, `rotate`, `verify` and `show` report.
#[derive(Debug, Serialize)]
pub struct RootReport {
    /// The root file.
    pub file: String,
    /// Whether its signatures (and chain) were verified.
    pub verified: bool,
    /// For a chain: the roots verified before this one, from the trusted one on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// The root's version.
    pub version: u64,
    /// Its expiry.
    pub expires: Timestamp,
    /// Whether it had expired at `checked_at`.
    pub expired: bool,
    /// The instant of the check.
    pub checked_at: Timestamp,
    /// The roles.
    pub roles: Vec<RoleReport>,
    /// Key ids of all signatures present, verified or not.
    pub signatures: Vec<KeyId>,
    /// For `verify`: the root-role keys of this root whose signatures verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<Vec<KeyId>>,
}

impl RootReport {
    fn new(
        file: &Path,
        header: Header,
        doc: &RootDocument,
        signatures: Vec<KeyId>,
        at: Timestamp,
    ) -> Self {
        let roles = doc
            .roles
            .iter()
            .into_iter()
            .map(|(name, role)| RoleReport {
                name,
                threshold: role.threshold,
                keyids: role.keyids.clone(),
            })
            .collect();
        Self {
            file: file.display().to_string(),
            verified: false,
            chain: Vec::new(),
            version: header.version,
            expires: header.expires,
            expired: header.expires <= at,
            checked_at: at,
            roles,
            signatures,
            signed_by: None,
        }
    }
}

impl Report for RootReport {
    fn table(&self) -> Table {
        let mut t = Table::new();
        t.row("root", &self.file);
        let verified = match (self.verified, self.chain.is_empty()) {
            (false, _) => "no (signatures not checked)".to_owned(),
            (true, true) => "yes (signed by a threshold of its own root role)".to_owned(),
            (true, false) => format!("yes (rotation chain from {})", self.chain.join(" -> ")),
        };
        t.row("verified", verified).row("version", self.version);
        let expiry = if self.expired {
            format!("{} (EXPIRED at {})", self.expires, self.checked_at)
        } else {
            self.expires.to_string()
        };
        t.row("expires", expiry);
        for role in &self.roles {
            t.row(
                format!("{} role", role.name),
                format!(
                    "threshold {} of {} key(s)",
                    role.threshold,
                    role.keyids.len()
                ),
            );
            t.list("", &role.keyids, "");
        }
        t.list("signatures", &self.signatures, "none");
        if let Some(signed_by) = &self.signed_by {
            t.list("signed by", signed_by, "none");
        }
        t
    }
}
