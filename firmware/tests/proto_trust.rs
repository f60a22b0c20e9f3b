//! The firmware shares the Linux trust model: its anchor is derived from a proto trust root,
//! key ids agree with proto's, images are signed by the same release keys, and an image's
//! header can be checked against the release manifest the gateway verified.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a failed test"
)]

mod common;

use common::{NEW, image_signed, key};
use swell_firmware::{ImageHeader, TrustAnchor};
use swell_proto::envelope::{Header, RoleKeys, sign_document};
use swell_proto::{
    Artifact, HardwareId, PublicKey, ReleaseDocument, ReleaseName, Roles, RootDocument, SemVer,
    Sha256Digest, TargetName, Timestamp, TrustRoot,
};

fn public(n: u8) -> PublicKey {
    PublicKey::from(key(n).verifying_key())
}

fn header() -> Header {
    Header {
        version: 1,
        expires: Timestamp::parse("2040-01-01T00:00:00Z").unwrap(),
    }
}

/// A root whose release role is keys 1 and 2 with threshold 2 (root key 5, controller 6).
fn root() -> TrustRoot {
    let role = |keys: &[u8], threshold| RoleKeys {
        keyids: keys.iter().map(|n| public(*n).key_id()).collect(),
        threshold,
    };
    let doc = RootDocument::new(
        &[public(1), public(2), public(5), public(6)],
        Roles {
            root: role(&[5], 1),
            release: role(&[1, 2], 2),
            controller: role(&[6], 1),
        },
    );
    let bytes = sign_document(header(), &doc, &[&key(5)]).unwrap();
    TrustRoot::from_trusted(&bytes).unwrap()
}

/// The anchor carries the release role: its keys, its threshold, proto's key ids.
#[test]
fn anchor_from_a_trust_root() {
    let root = root();
    let anchor = TrustAnchor::from_root(&root).unwrap();
    assert_eq!(anchor, common::anchor());
    assert_eq!(anchor.threshold(), 2);
    assert_eq!(anchor.root_version(), 1);
    let proto_ids: Vec<[u8; 32]> = root
        .document()
        .roles
        .release
        .keyids
        .iter()
        .map(|id| *id.as_bytes())
        .collect();
    assert_eq!(anchor.key_ids(), proto_ids.as_slice());
    // The binary form round-trips, as a bootloader would embed it.
    let mut buf = [0u8; 512];
    let n = anchor.encode(&mut buf).unwrap();
    assert_eq!(TrustAnchor::parse(&buf[..n]).unwrap(), anchor);
}

/// An image header is checked against the release manifest that ships it.
#[test]
fn header_matches_its_release_manifest() {
    let img = image_signed(NEW, &[&key(1), &key(2)]);
    let target = TargetName::new("sensor-17").unwrap();
    let doc = |version: &str, security_version, hardware: &str, size| ReleaseDocument {
        name: ReleaseName::new("sensor-fw").unwrap(),
        release_version: SemVer::new(version).unwrap(),
        security_version,
        hardware: vec![HardwareId::new(hardware).unwrap()],
        artifacts: vec![Artifact {
            target: target.clone(),
            size,
            sha256: Sha256Digest::of(&img),
        }],
    };
    let verified = |d: &ReleaseDocument| {
        let bytes = sign_document(header(), d, &[&key(1), &key(2)]).unwrap();
        root()
            .verify_release(&bytes, Timestamp::parse("2030-01-01T00:00:00Z").unwrap())
            .unwrap()
    };
    let h = ImageHeader::verify_block(
        &img[..swell_firmware::image::block_len(2)],
        &common::anchor(),
    )
    .unwrap();
    let len = img.len() as u64;
    let good = verified(&doc("1.1.0", 2, common::HARDWARE, len));
    assert_eq!(h.check_release(&good, &target, len), Ok(()));
    for bad in [
        doc("1.1.1", 2, common::HARDWARE, len),
        doc("1.1.0", 3, common::HARDWARE, len),
        doc("1.1.0", 2, "sensor-v3", len),
        doc("1.1.0", 2, common::HARDWARE, len + 1),
    ] {
        assert!(
            h.check_release(&verified(&bad), &target, len).is_err(),
            "{bad:?}"
        );
    }
}
