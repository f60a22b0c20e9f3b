//! The one error type of document verification. Each variant names the reason a document was
//! refused in words an operator can act on; none is a catch-all.

use alloc::string::String;

use crate::ids::{HardwareId, InvalidId, KeyId, TargetName};
use crate::json::JsonError;
use crate::time::Timestamp;

/// Why a signed document or message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input is larger than the limit for its kind.
    #[error("document is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The input is not strict JSON (duplicate keys and non-integer numbers included).
    #[error("malformed JSON: {0}")]
    Json(JsonError),
    /// The JSON is not a signed envelope, or a field has the wrong form.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// An identifier, digest or timestamp is invalid.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// The document's `_type` is not the one expected here.
    #[error("wrong document type: expected \"{expected}\", found \"{found}\"")]
    WrongType {
        /// The type required.
        expected: &'static str,
        /// The type the document declares.
        found: String,
    },
    /// The document's `spec_version` is one this build does not speak.
    #[error("unsupported spec_version {found}; this build speaks {supported}")]
    UnsupportedSpec {
        /// The version found.
        found: i64,
        /// The version supported.
        supported: u32,
    },
    /// More signatures than [`crate::limits::MAX_SIGNATURES`].
    #[error("{count} signatures, over the limit of {limit}")]
    TooManySignatures {
        /// How many the document carries.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A signature by a key of the role does not verify: the document was altered after
    /// signing, or the signature was made over something else.
    #[error("bad signature by key {keyid} of the {role} role")]
    BadSignature {
        /// The key whose signature failed.
        keyid: KeyId,
        /// The role being checked.
        role: String,
    },
    /// The threshold is unmet and a signature came from a key that is not in the role.
    #[error(
        "signed by key {keyid}, which is not a key of the {role} role; \
         {valid} valid signature(s) from distinct {role} keys, {threshold} required"
    )]
    UnknownKey {
        /// The unknown key.
        keyid: KeyId,
        /// The role being checked.
        role: String,
        /// Valid signatures from distinct keys of the role.
        valid: usize,
        /// The role's threshold.
        threshold: u32,
    },
    /// Fewer valid signatures from distinct keys of the role than its threshold.
    #[error(
        "threshold unmet for the {role} role: {valid} valid signature(s) from distinct keys, \
         {threshold} required"
    )]
    ThresholdUnmet {
        /// The role being checked.
        role: String,
        /// Valid signatures from distinct keys of the role.
        valid: usize,
        /// The role's threshold.
        threshold: u32,
    },
    /// The document (or the trust root it is checked against) has expired.
    #[error("{what} expired at {expires} (now {now})")]
    Expired {
        /// Which document.
        what: &'static str,
        /// Its expiry.
        expires: Timestamp,
        /// The instant of the check.
        now: Timestamp,
    },
    /// A root rotation does not go exactly one version up.
    #[error(
        "root version {offered} cannot follow trusted version {trusted}: \
         each rotation must raise the version by exactly one"
    )]
    RootVersion {
        /// The trusted root's version.
        trusted: u64,
        /// The offered root's version.
        offered: u64,
    },
    /// The trust root or manifest is internally inconsistent.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which document.
        what: &'static str,
        /// What is inconsistent.
        detail: String,
    },
    /// The release is not built for this device's hardware.
    #[error("release is built for hardware [{supported}], not {device}")]
    HardwareMismatch {
        /// The device's hardware id.
        device: HardwareId,
        /// The hardware ids the release lists, comma-separated.
        supported: String,
    },
    /// The release's `security_version` is below the one installed (anti-rollback).
    #[error("security_version {offered} is below the installed {installed} (anti-rollback)")]
    Rollback {
        /// The device's installed security version.
        installed: u64,
        /// The release's security version.
        offered: u64,
    },
    /// The manifest has no artifact for a target.
    #[error("release has no artifact for target {0}")]
    NoSuchArtifact(TargetName),
    /// An image's SHA-256 differs from the manifest's.
    #[error("artifact {target}: digest mismatch: manifest says {expected}, image is {actual}")]
    DigestMismatch {
        /// The artifact.
        target: TargetName,
        /// The digest in the manifest.
        expected: crate::Sha256Digest,
        /// The digest of the image.
        actual: crate::Sha256Digest,
    },
    /// An image's size differs from the manifest's.
    #[error("artifact {target}: size mismatch: manifest says {expected} bytes, image is {actual}")]
    SizeMismatch {
        /// The artifact.
        target: TargetName,
        /// The size in the manifest.
        expected: u64,
        /// The size of the image.
        actual: u64,
    },
}

// By hand rather than `#[from]`, which would also make the JSON error this error's source and
// have error-chain printers repeat its text after the message that already contains it.
impl From<JsonError> for Error {
    fn from(e: JsonError) -> Self {
        Error::Json(e)
    }
}
