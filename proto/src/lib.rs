#![doc = include_str!("../README.md")]
#![no_std]

extern crate alloc;

pub mod envelope;
pub mod error;
mod hex;
pub mod ids;
pub mod json;
pub mod keys;
pub mod limits;
pub mod messages;
pub mod release;
pub mod root;
pub mod signals;
pub mod time;
pub mod topics;

pub use envelope::{Document, Header, Opened, RawEnvelope, RoleKeys, SignatureEntry};
pub use error::Error;
pub use ids::{
    DeviceId, HardwareId, InvalidId, KeyId, ReleaseName, SemVer, Sha256Digest, TargetName,
};
pub use keys::{PublicKey, Signature};
pub use release::{Artifact, DevicePolicy, ReleaseDocument, VerifiedRelease};
pub use root::{Role, Roles, RootDocument, TrustRoot};
pub use time::Timestamp;

/// The protocol version: the `spec_version` of every signed document and the `v1` of every
/// MQTT topic. A change that old agents cannot read raises it.
pub const SPEC_VERSION: u32 = 1;
