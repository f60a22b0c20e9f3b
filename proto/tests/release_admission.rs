//! What a device checks after the signatures: the release is built for its hardware, does not
//! go below its security version (anti-rollback), is internally consistent, and the image it
//! downloads has the size and SHA-256 the manifest promises.

mod common;

use common::{now, seed, trusted_root, valid_until};
use swell_proto::{
    DevicePolicy, Error, HardwareId, ReleaseDocument, Sha256Digest, TargetName, VerifiedRelease,
};

fn release() -> VerifiedRelease {
    common::verified_release()
}

fn policy(hardware: &HardwareId, installed_security_version: u64) -> DevicePolicy<'_> {
    DevicePolicy {
        hardware,
        installed_security_version,
    }
}

/// `release.json` (security_version 3, for rpi4-gateway and x86-gateway) is admitted on an
/// rpi4-gateway running security version 2 or 3: equal is allowed, so a release can be
/// re-installed or a newer build at the same level rolled out.
#[test]
fn matching_hardware_at_or_above_the_installed_level_is_admitted() {
    let rpi = HardwareId::new("rpi4-gateway").unwrap();
    release().admit(policy(&rpi, 2)).unwrap();
    release().admit(policy(&rpi, 3)).unwrap();
}

/// A device running security version 4 refuses security version 3: an attacker replaying an
/// old, validly signed release with a known hole cannot downgrade the fleet.
#[test]
fn lower_security_version_is_a_rollback() {
    let rpi = HardwareId::new("rpi4-gateway").unwrap();
    let err = release().admit(policy(&rpi, 4)).unwrap_err();
    assert_eq!(
        err,
        Error::Rollback {
            installed: 4,
            offered: 3
        }
    );
    assert_eq!(
        err.to_string(),
        "security_version 3 is below the installed 4 (anti-rollback)"
    );
}

/// A release for other boards is refused, and the error lists what it supports.
#[test]
fn other_hardware_is_refused() {
    let board = HardwareId::new("stm32-sensor").unwrap();
    let err = release().admit(policy(&board, 0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "release is built for hardware [rpi4-gateway, x86-gateway], not stm32-sensor"
    );
}

/// The downloaded image must match the manifest's size and digest; the target must exist.
#[test]
fn artifact_size_and_digest_are_checked() {
    let release = release();
    let rootfs = TargetName::new("rootfs").unwrap();
    let artifact = release.document().artifact(&rootfs).unwrap();
    let image = common::rootfs_image();
    let size = u64::try_from(image.len()).unwrap();
    artifact.check(size, &Sha256Digest::of(&image)).unwrap();

    let short = &image[..image.len() - 1];
    assert_eq!(
        artifact.check(size - 1, &Sha256Digest::of(short)),
        Err(Error::SizeMismatch {
            target: rootfs.clone(),
            expected: size,
            actual: size - 1,
        })
    );
    let mut flipped = image.clone();
    flipped[0] ^= 1;
    let err = artifact
        .check(size, &Sha256Digest::of(&flipped))
        .unwrap_err();
    assert_eq!(
        err,
        Error::DigestMismatch {
            target: rootfs.clone(),
            expected: artifact.sha256,
            actual: Sha256Digest::of(&flipped),
        }
    );
    let missing = TargetName::new("fan-mcu").unwrap();
    assert_eq!(
        release
            .document()
            .artifact(&missing)
            .unwrap_err()
            .to_string(),
        "release has no artifact for target fan-mcu"
    );
}

/// The manifest digest, the release's stable identity, is SHA-256 of the canonical `signed`
/// bytes, so the pretty-printed fixture and its canonical form name the same release.
#[test]
fn manifest_digest_is_over_the_canonical_signed_bytes() {
    let env = common::raw("release.json");
    assert_eq!(
        release().manifest_digest(),
        Sha256Digest::of(&env.signed.to_canonical())
    );
    let compact = trusted_root()
        .verify_release(&env.to_canonical(), now())
        .unwrap();
    assert_eq!(compact.manifest_digest(), release().manifest_digest());
}

/// A correctly signed manifest that lists no hardware, no artifacts, or one target twice is
/// refused: signers make mistakes too.
#[test]
fn inconsistent_manifests_are_refused() {
    let verify = |edit: fn(&mut ReleaseDocument)| {
        let mut doc: ReleaseDocument = common::body("release.json");
        edit(&mut doc);
        let bytes = common::sign(1, valid_until(), &doc, &[seed::RELEASE_1, seed::RELEASE_2]);
        trusted_root()
            .verify_release(&bytes, now())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        verify(|d| d.hardware.clear()),
        "invalid release manifest: it lists no hardware"
    );
    assert_eq!(
        verify(|d| d.artifacts.clear()),
        "invalid release manifest: it has no artifacts"
    );
    assert_eq!(
        verify(|d| d.artifacts.push(d.artifacts[0].clone())),
        "invalid release manifest: two artifacts target rootfs"
    );
}
