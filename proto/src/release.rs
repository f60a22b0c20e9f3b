//! Release manifests: what a release is, for which hardware, and the digests of its images.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::envelope::{self, Document, Header, Opened};
use crate::error::Error;
use crate::ids::{HardwareId, ReleaseName, SemVer, Sha256Digest, TargetName};
use crate::limits::MAX_DOCUMENT_BYTES;
use crate::root::{Role, TrustRoot};
use crate::time::Timestamp;

/// One installable image of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Where it goes: `rootfs` (the inactive A/B slot) or a child device's id.
    pub target: TargetName,
    /// Exact size in bytes; a download is capped at this.
    pub size: u64,
    /// SHA-256 of the image.
    pub sha256: Sha256Digest,
}

impl Artifact {
    /// Checks an image's measured size and digest against this artifact.
    pub fn check(&self, size: u64, digest: &Sha256Digest) -> Result<(), Error> {
        if size != self.size {
            return Err(Error::SizeMismatch {
                target: self.target.clone(),
                expected: self.size,
                actual: size,
            });
        }
        if *digest != self.sha256 {
            return Err(Error::DigestMismatch {
                target: self.target.clone(),
                expected: self.sha256,
                actual: *digest,
            });
        }
        Ok(())
    }
}

/// The `signed` part of a release manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseDocument {
    /// The release's name, such as `gateway-os`.
    pub name: ReleaseName,
    /// The release's semantic version.
    pub release_version: SemVer,
    /// Anti-rollback counter: devices refuse releases below the one they run.
    pub security_version: u64,
    /// Hardware ids the release runs on.
    pub hardware: Vec<HardwareId>,
    /// The images.
    pub artifacts: Vec<Artifact>,
}

/// A manifest's header `version` is its revision (re-issuing a release with a new expiry
/// raises it); after `expires` the manifest is refused.
impl Document for ReleaseDocument {
    const TYPE: &'static str = "release";
}

impl ReleaseDocument {
    /// Checks that the manifest lists hardware, has artifacts, and targets each at most once.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |detail: String| Error::Invalid {
            what: "release manifest",
            detail,
        };
        if self.hardware.is_empty() {
            return Err(invalid(String::from("it lists no hardware")));
        }
        if self.artifacts.is_empty() {
            return Err(invalid(String::from("it has no artifacts")));
        }
        let mut targets = BTreeSet::new();
        for a in &self.artifacts {
            if !targets.insert(&a.target) {
                return Err(invalid(format!("two artifacts target {}", a.target)));
            }
        }
        Ok(())
    }

    /// The artifact for `target`.
    pub fn artifact(&self, target: &TargetName) -> Result<&Artifact, Error> {
        self.artifacts
            .iter()
            .find(|a| &a.target == target)
            .ok_or_else(|| Error::NoSuchArtifact(target.clone()))
    }
}

/// A release manifest whose signatures, threshold and expiry have been verified against a
/// trust root. It can only be made by [`TrustRoot::verify_release`].
#[derive(Debug, Clone)]
pub struct VerifiedRelease {
    header: Header,
    doc: ReleaseDocument,
    digest: Sha256Digest,
}

/// What a device checks beyond the signatures before it installs a release.
#[derive(Debug, Clone, Copy)]
pub struct DevicePolicy<'a> {
    /// The device's hardware id.
    pub hardware: &'a HardwareId,
    /// The security version of the image it runs (committed).
    pub installed_security_version: u64,
}

impl VerifiedRelease {
    /// The manifest.
    pub fn document(&self) -> &ReleaseDocument {
        &self.doc
    }

    /// The manifest's revision and expiry.
    pub fn header(&self) -> Header {
        self.header
    }

    /// SHA-256 of the manifest's canonical `signed` bytes: the release's stable identity.
    pub fn manifest_digest(&self) -> Sha256Digest {
        self.digest
    }

    /// Checks that a device with `policy` may install this release: it is built for the
    /// device's hardware and does not go below its security version.
    pub fn admit(&self, policy: DevicePolicy<'_>) -> Result<(), Error> {
        if !self.doc.hardware.contains(policy.hardware) {
            let supported: Vec<&str> = self.doc.hardware.iter().map(HardwareId::as_str).collect();
            return Err(Error::HardwareMismatch {
                device: policy.hardware.clone(),
                supported: supported.join(", "),
            });
        }
        if self.doc.security_version < policy.installed_security_version {
            return Err(Error::Rollback {
                installed: policy.installed_security_version,
                offered: self.doc.security_version,
            });
        }
        Ok(())
    }
}

impl TrustRoot {
    /// Verifies a release manifest: strict JSON within the size limit, `_type`, a threshold
    /// of distinct release keys, a consistent manifest, and neither it nor this root expired.
    pub fn verify_release(&self, bytes: &[u8], now: Timestamp) -> Result<VerifiedRelease, Error> {
        let opened: Opened<ReleaseDocument> = envelope::open(bytes, MAX_DOCUMENT_BYTES)?;
        self.check(&opened, Role::Release, now)?;
        opened.body.validate()?;
        let digest = Sha256Digest::of(&opened.canonical);
        Ok(VerifiedRelease {
            header: opened.header,
            doc: opened.body,
            digest,
        })
    }
}
