//! What the integration tests share: the fixed-seed keys the golden fixtures are signed with,
//! the fixed instants, and the fixture loader. Each test crate uses a part of it.
// Helpers, not tests, so clippy's allow-unwrap-in-tests does not reach them; a failed unwrap
// here is a failed test all the same.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use swell_proto::{DeviceId, KeyId, PublicKey, Timestamp, TrustRoot};

/// The seed of each fixture key: the key is `SigningKey::from_bytes(&[seed; 32])`.
pub(crate) mod seed {
    /// Root key in root v1, v2; removed by v3.
    pub(crate) const ROOT_1: u8 = 1;
    /// Root key added by v2.
    pub(crate) const ROOT_2: u8 = 2;
    /// Root key that replaces `ROOT_1` in v3.
    pub(crate) const ROOT_3: u8 = 3;
    /// First of the two release keys (threshold 2).
    pub(crate) const RELEASE_1: u8 = 11;
    /// Second release key.
    pub(crate) const RELEASE_2: u8 = 12;
    /// The controller key (threshold 1).
    pub(crate) const CONTROLLER: u8 = 21;
    /// Device `gw-0001`'s enrolled key.
    pub(crate) const DEVICE_1: u8 = 31;
    /// Device `gw-0002`'s enrolled key.
    pub(crate) const DEVICE_2: u8 = 32;
    /// A key no root or device knows.
    pub(crate) const OUTSIDER: u8 = 99;
}

/// The fixture key with `seed`.
pub(crate) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The public half of the fixture key with `seed`.
pub(crate) fn public(seed: u8) -> PublicKey {
    PublicKey::from(key(seed).verifying_key())
}

/// The key id of the fixture key with `seed`.
pub(crate) fn key_id(seed: u8) -> KeyId {
    public(seed).key_id()
}

fn instant(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap()
}

/// "Now" for every check: 2026-06-01T00:00:00Z.
pub(crate) fn now() -> Timestamp {
    instant("2026-06-01T00:00:00Z")
}

/// When valid documents expire: 2099-01-01T00:00:00Z.
pub(crate) fn valid_until() -> Timestamp {
    instant("2099-01-01T00:00:00Z")
}

/// When expired documents expired: 2020-01-01T00:00:00Z.
pub(crate) fn expired_at() -> Timestamp {
    instant("2020-01-01T00:00:00Z")
}

/// When the fixture devices issued their messages: 2026-05-31T12:00:00Z, half a day before
/// `now`, so they expire (30 days later) after it.
pub(crate) fn issued() -> Timestamp {
    instant("2026-05-31T12:00:00Z")
}

/// The first fixture device, `gw-0001`, whose key has seed [`seed::DEVICE_1`].
pub(crate) fn device_1() -> DeviceId {
    DeviceId::new("gw-0001").unwrap()
}

/// The second fixture device, `gw-0002`, whose key has seed [`seed::DEVICE_2`].
pub(crate) fn device_2() -> DeviceId {
    DeviceId::new("gw-0002").unwrap()
}

/// The enrolled key of a fixture device.
pub(crate) fn device_key(device: &DeviceId) -> PublicKey {
    match device.as_str() {
        "gw-0001" => public(seed::DEVICE_1),
        "gw-0002" => public(seed::DEVICE_2),
        other => panic!("no fixture key for device {other}"),
    }
}

/// `proto/tests/data/v1`, found through `CARGO_MANIFEST_DIR`.
pub(crate) fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1")
}

/// The bytes of the fixture `name` (such as `release.json`).
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The trust root devices ship with: `root.json` (version 1).
pub(crate) fn trusted_root() -> TrustRoot {
    TrustRoot::from_trusted(&fixture("root.json")).unwrap()
}

/// The image `release.json`'s `rootfs` artifact describes: 1 MiB of a fixed pattern.
pub(crate) fn rootfs_image() -> Vec<u8> {
    (0..1024 * 1024u32)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect()
}

/// The typed `signed` body of a fixture, header fields removed.
pub(crate) fn body<T: swell_proto::Document>(name: &str) -> T {
    swell_proto::envelope::open::<T>(&fixture(name), usize::MAX)
        .unwrap()
        .body
}

/// `body` with `version` and `expires`, signed by the fixture keys `signers`, as canonical bytes.
pub(crate) fn sign<T: swell_proto::Document>(
    version: u64,
    expires: Timestamp,
    body: &T,
    signers: &[u8],
) -> Vec<u8> {
    let keys: Vec<SigningKey> = signers.iter().map(|s| key(*s)).collect();
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let header = swell_proto::Header { version, expires };
    swell_proto::envelope::sign_document(header, body, &refs).unwrap()
}

/// A fixture envelope as a [`swell_proto::RawEnvelope`], to alter in a test.
pub(crate) fn raw(name: &str) -> swell_proto::RawEnvelope {
    swell_proto::RawEnvelope::parse(&fixture(name), usize::MAX).unwrap()
}

/// Bytes from hex text (either case), as test vectors are written.
pub(crate) fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd-length hex {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// 32 bytes from 64 hex digits.
pub(crate) fn hex32(text: &str) -> [u8; 32] {
    hex(text).try_into().unwrap()
}

/// `release.json` verified against `root.json` at [`now`].
pub(crate) fn verified_release() -> swell_proto::VerifiedRelease {
    trusted_root()
        .verify_release(&fixture("release.json"), now())
        .unwrap()
}
