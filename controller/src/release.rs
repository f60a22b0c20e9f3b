//! `swellctl release`: creating, verifying and showing release manifests.
//!
//! `create` hashes the image as a stream, so an image of any size needs only the hashing
//! buffer in memory. `verify` performs the checks a device performs before it installs: the
//! manifest against the trust root (strict JSON, type, threshold of release keys, expiry),
//! then the image against the signed size and digest, then the device policy.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::Serialize;
use swell_proto::envelope::{self, Header, Opened};
use swell_proto::json::MAX_SAFE_INTEGER;
use swell_proto::limits::MAX_DOCUMENT_BYTES;
use swell_proto::{
    Artifact, DevicePolicy, HardwareId, KeyId, PublicKey, ReleaseDocument, ReleaseName, SemVer,
    Sha256Digest, TargetName, Timestamp, TrustRoot,
};

use crate::document::{self, valid_signers};
use crate::error::Error;
use crate::fsutil::{self, Overwrite};
use crate::hashing;
use crate::keys;
use crate::output::{Report, Table};
use crate::when::{When, future_expiry};

/// What `release create` is asked to make.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The image file.
    pub image: PathBuf,
    /// Where the image installs (`rootfs`, or a child device id).
    pub target: TargetName,
    /// The release's name.
    pub name: ReleaseName,
    /// Its semantic version.
    pub version: SemVer,
    /// Its anti-rollback counter.
    pub security_version: u64,
    /// Hardware it runs on.
    pub hardware: Vec<HardwareId>,
    /// When the manifest expires.
    pub expires: When,
    /// Private keys to sign with.
    pub keys: Vec<PathBuf>,
    /// Where to write the manifest; `<image>.manifest.json` if not given.
    pub out: Option<PathBuf>,
}

/// The default manifest path: `<image>.manifest.json`, beside the image.
pub fn default_manifest_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".manifest.json");
    PathBuf::from(s)
}

/// `release create`: hashes the image, writes the manifest signed by each key (or unsigned).
pub fn create(opts: &CreateOptions, now: Timestamp) -> Result<ReleaseReport, Error> {
    // Everything that can be refused cheaply is checked before the image is hashed, which
    // can take minutes for a large image.
    let expires = future_expiry(opts.expires, now)?;
    if opts.security_version > MAX_SAFE_INTEGER.unsigned_abs() {
        return Err(Error::Argument {
            arg: "--security-version",
            reason: format!(
                "{} is above 2^53-1, the largest JSON integer",
                opts.security_version
            ),
        });
    }
    let signing_keys = opts
        .keys
        .iter()
        .map(|p| keys::load_signing_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| default_manifest_path(&opts.image));
    if out.exists() {
        return Err(Error::Exists { path: out });
    }
    let mut hardware: Vec<HardwareId> = Vec::new();
    for hw in &opts.hardware {
        if !hardware.contains(hw) {
            hardware.push(hw.clone());
        }
    }

    let measured = hashing::hash_file(&opts.image)?;
    let doc = ReleaseDocument {
        name: opts.name.clone(),
        release_version: opts.version.clone(),
        security_version: opts.security_version,
        hardware,
        artifacts: vec![Artifact {
            target: opts.target.clone(),
            size: measured.size,
            sha256: measured.sha256,
        }],
    };
    doc.validate().map_err(Error::document(&out))?;
    let header = Header {
        version: 1,
        expires,
    };
    let mut env = envelope::envelope(header, &doc).map_err(Error::document(&out))?;
    for key in &signing_keys {
        env.add_signature(key);
    }
    document::write_envelope(&out, &env, Overwrite::Refuse)?;
    let canonical = env.signed.to_canonical();
    let mut report = ReleaseReport::new(&out, header, &doc, &canonical, now);
    report.signatures = signing_keys.iter().map(key_id).collect();
    Ok(report)
}

fn key_id(key: &SigningKey) -> KeyId {
    PublicKey::from(key.verifying_key()).key_id()
}

/// What `release verify` is asked to check.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The manifest.
    pub manifest: PathBuf,
    /// The trust root to verify it against.
    pub root: PathBuf,
    /// An image to check against the manifest's artifact.
    pub image: Option<PathBuf>,
    /// The artifact the image is for (`rootfs` if not given).
    pub target: Option<TargetName>,
    /// A device's hardware id, to check the release is built for it.
    pub hardware: Option<HardwareId>,
    /// The device's installed security version (anti-rollback), with `hardware`.
    pub installed_security_version: u64,
    /// The instant to check expiry at.
    pub at: Timestamp,
}

/// `release verify` (see the module documentation).
pub fn verify(opts: &VerifyOptions) -> Result<ReleaseReport, Error> {
    let root_path = &opts.root;
    let trust = TrustRoot::from_trusted(&fsutil::read_document(root_path)?)
        .map_err(Error::document(root_path))?;
    // Checked here, not only inside `verify_release`, so an expired root is reported against
    // the root file rather than the manifest.
    trust
        .check_fresh(opts.at)
        .map_err(Error::document(root_path))?;

    let path = &opts.manifest;
    let bytes = fsutil::read_document(path)?;
    let verified = trust
        .verify_release(&bytes, opts.at)
        .map_err(Error::document(path))?;
    let opened: Opened<ReleaseDocument> =
        envelope::open(&bytes, MAX_DOCUMENT_BYTES).map_err(Error::document(path))?;
    let keys = trust
        .document()
        .validate()
        .map_err(Error::document(root_path))?;
    let signed_by = valid_signers(&opened, &keys, &trust.document().roles.release);

    let image = match &opts.image {
        None => None,
        Some(image) => {
            let target = match &opts.target {
                Some(t) => t.clone(),
                None => TargetName::new("rootfs").map_err(|e| Error::Argument {
                    arg: "--target",
                    reason: e.to_string(),
                })?,
            };
            let artifact = verified
                .document()
                .artifact(&target)
                .map_err(Error::document(path))?;
            let measured = hashing::hash_file(image)?;
            artifact
                .check(measured.size, &measured.sha256)
                .map_err(Error::document(image))?;
            Some(ImageReport {
                file: image.display().to_string(),
                target,
                size: measured.size,
                sha256: measured.sha256,
            })
        }
    };

    let admitted = match &opts.hardware {
        None => None,
        Some(hardware) => {
            let policy = DevicePolicy {
                hardware,
                installed_security_version: opts.installed_security_version,
            };
            verified.admit(policy).map_err(Error::document(path))?;
            Some(Admission {
                hardware: hardware.clone(),
                installed_security_version: opts.installed_security_version,
            })
        }
    };

    let mut report = ReleaseReport::new(
        path,
        verified.header(),
        verified.document(),
        &opened.canonical,
        opts.at,
    );
    report.verified = true;
    report.signatures = opened.signatures.iter().map(|s| s.keyid).collect();
    report.signed_by = Some(signed_by);
    report.root = Some(RootRef {
        file: root_path.display().to_string(),
        version: trust.header().version,
    });
    report.image = image;
    report.admitted = admitted;
    Ok(report)
}

/// `release show`: the manifest's contents, without checking any signature.
pub fn show(path: &Path, now: Timestamp) -> Result<ReleaseReport, Error> {
    let opened: Opened<ReleaseDocument> = document::read_envelope(path)?
        .open()
        .map_err(Error::document(path))?;
    let mut report = ReleaseReport::new(path, opened.header, &opened.body, &opened.canonical, now);
    report.signatures = opened.signatures.iter().map(|s| s.keyid).collect();
    Ok(report)
}

/// The trust root a release was verified against.
#[derive(Debug, Serialize)]
pub struct RootRef {
    /// The root file.
    pub file: String,
    /// Its version.
    pub version: u64,
}

/// An image checked against the manifest.
#[derive(Debug, Serialize)]
pub struct ImageReport {
    /// The image file.
    pub file: String,
    /// The artifact it matched.
    pub target: TargetName,
    /// Its size.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: Sha256Digest,
}

/// The device policy a release was admitted under.
#[derive(Debug, Serialize)]
pub struct Admission {
    /// The device's hardware id.
    pub hardware: HardwareId,
    /// The device's installed security version.
    pub installed_security_version: u64,
}

/// What `release create`, `verify` and `show` report.
#[derive(Debug, Serialize)]
pub struct ReleaseReport {
    /// The manifest file.
    pub manifest: String,
    /// Whether it was verified against a trust root.
    pub verified: bool,
    /// The release's name.
    pub name: ReleaseName,
    /// Its semantic version.
    pub version: SemVer,
    /// Its anti-rollback counter.
    pub security_version: u64,
    /// Hardware it runs on.
    pub hardware: Vec<HardwareId>,
    /// Its images.
    pub artifacts: Vec<Artifact>,
    /// The manifest's revision (header `version`).
    pub manifest_version: u64,
    /// The manifest's expiry.
    pub expires: Timestamp,
    /// Whether it had expired at `checked_at`.
    pub expired: bool,
    /// The instant of the check.
    pub checked_at: Timestamp,
    /// SHA-256 of the canonical signed bytes: the release's stable identity.
    pub manifest_digest: Sha256Digest,
    /// Key ids of all signatures present, verified or not.
    pub signatures: Vec<KeyId>,
    /// For `verify`: release-role keys whose signatures verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<Vec<KeyId>>,
    /// For `verify`: the trust root used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<RootRef>,
    /// For `verify --image`: the image checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageReport>,
    /// For `verify --hardware`: the device policy admitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admitted: Option<Admission>,
}

impl ReleaseReport {
    fn new(
        file: &Path,
        header: Header,
        doc: &ReleaseDocument,
        canonical: &[u8],
        at: Timestamp,
    ) -> Self {
        Self {
            manifest: file.display().to_string(),
            verified: false,
            name: doc.name.clone(),
            version: doc.release_version.clone(),
            security_version: doc.security_version,
            hardware: doc.hardware.clone(),
            artifacts: doc.artifacts.clone(),
            manifest_version: header.version,
            expires: header.expires,
            expired: header.expires <= at,
            checked_at: at,
            manifest_digest: Sha256Digest::of(canonical),
            signatures: Vec::new(),
            signed_by: None,
            root: None,
            image: None,
            admitted: None,
        }
    }
}

impl Report for ReleaseReport {
    fn table(&self) -> Table {
        let mut t = Table::new();
        t.row("manifest", &self.manifest);
        let verified = match &self.root {
            Some(root) if self.verified => {
                format!("yes, against {} (root version {})", root.file, root.version)
            }
            _ => "no (signatures not checked)".to_owned(),
        };
        t.row("verified", verified)
            .row("name", &self.name)
            .row("version", &self.version)
            .row("security version", self.security_version)
            .list("hardware", &self.hardware, "none");
        let artifacts = self
            .artifacts
            .iter()
            .map(|a| format!("{}  {} bytes  sha256 {}", a.target, a.size, a.sha256));
        t.list("artifacts", artifacts, "none");
        t.row("manifest version", self.manifest_version);
        let expiry = if self.expired {
            format!("{} (EXPIRED at {})", self.expires, self.checked_at)
        } else {
            self.expires.to_string()
        };
        t.row("expires", expiry)
            .list("signatures", &self.signatures, "none");
        if let Some(signed_by) = &self.signed_by {
            t.list("signed by", signed_by, "none");
        }
        if let Some(image) = &self.image {
            t.row(
                "image",
                format!(
                    "{} matches artifact {} ({} bytes)",
                    image.file, image.target, image.size
                ),
            );
        }
        if let Some(a) = &self.admitted {
            t.row(
                "admitted",
                format!(
                    "hardware {}, installed security version {}",
                    a.hardware, a.installed_security_version
                ),
            );
        }
        t.row("manifest digest", self.manifest_digest);
        t
    }
}
