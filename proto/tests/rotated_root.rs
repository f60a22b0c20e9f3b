//! Root rotation (TUF 5.3): a device that shipped with root v1 follows v2, v3, ... one version at
//! a time; each new root must be signed by a threshold of the trusted root role *and* of its
//! own root role.

mod common;

use common::{fixture, key_id, now, seed, trusted_root, valid_until};
use swell_proto::{Error, RootDocument, TrustRoot};

/// v1 → v2 (adds ROOT_2, root threshold 2) → v3 (replaces ROOT_1 by ROOT_3) verifies link by
/// link, and the release keys, unchanged across the chain, still verify `release.json`.
#[test]
fn rotation_chain_verifies_one_link_at_a_time() {
    let v1 = trusted_root();
    let v2 = v1.rotate(&fixture("root-v2.json")).unwrap();
    let v3 = v2.rotate(&fixture("root-v3.json")).unwrap();
    assert_eq!(v3.header().version, 3);
    assert_eq!(
        v3.document().roles.root.keyids,
        [key_id(seed::ROOT_2), key_id(seed::ROOT_3)]
    );
    v3.verify_release(&fixture("release.json"), now()).unwrap();

    let chained = v1
        .rotate_chain(
            [fixture("root-v2.json"), fixture("root-v3.json")]
                .iter()
                .map(Vec::as_slice),
        )
        .unwrap();
    assert_eq!(chained.document(), v3.document());
    assert_eq!(chained.header(), v3.header());
}

/// `root-version-skip.json` is version 3, validly signed by v1's root key, offered to a device
/// on v1: refused, so no link of the chain (and no key change in it) can be skipped.
#[test]
fn version_skip_is_refused() {
    let err = trusted_root()
        .rotate(&fixture("root-version-skip.json"))
        .unwrap_err();
    assert_eq!(
        err,
        Error::RootVersion {
            trusted: 1,
            offered: 3
        }
    );
    assert_eq!(
        err.to_string(),
        "root version 3 cannot follow trusted version 1: each rotation must raise the version \
         by exactly one"
    );
    let v3_direct = trusted_root().rotate(&fixture("root-v3.json")).unwrap_err();
    assert_eq!(
        v3_direct,
        Error::RootVersion {
            trusted: 1,
            offered: 3
        }
    );
}

/// Offering the trusted root again, or an older one, is refused: rotation never goes back.
#[test]
fn replayed_or_older_root_is_refused() {
    let v1 = trusted_root();
    assert_eq!(
        v1.rotate(&fixture("root.json")).unwrap_err(),
        Error::RootVersion {
            trusted: 1,
            offered: 1
        }
    );
    let v2 = v1.rotate(&fixture("root-v2.json")).unwrap();
    assert_eq!(
        v2.rotate(&fixture("root.json")).unwrap_err(),
        Error::RootVersion {
            trusted: 2,
            offered: 1
        }
    );
}

/// `rotation-missing-old-signatures.json`: a v2 that gives the root role to ROOT_2, signed only
/// by ROOT_2. Whoever holds a new key cannot enrol it without the trusted root role.
#[test]
fn rotation_needs_the_trusted_root_role() {
    let err = trusted_root()
        .rotate(&fixture("rotation-missing-old-signatures.json"))
        .unwrap_err();
    assert_eq!(
        err,
        Error::UnknownKey {
            keyid: key_id(seed::ROOT_2),
            role: "root (trusted version 1)".to_string(),
            valid: 0,
            threshold: 1,
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "signed by key {}, which is not a key of the root (trusted version 1) role; 0 valid \
             signature(s) from distinct root (trusted version 1) keys, 1 required",
            key_id(seed::ROOT_2)
        )
    );
}

/// `rotation-missing-new-signatures.json`: the same v2 signed only by ROOT_1. The new root role
/// must show it holds its keys, or a typo in a key would lock every device out at the next
/// rotation.
#[test]
fn rotation_needs_the_new_root_role() {
    let err = trusted_root()
        .rotate(&fixture("rotation-missing-new-signatures.json"))
        .unwrap_err();
    assert_eq!(
        err,
        Error::UnknownKey {
            keyid: key_id(seed::ROOT_1),
            role: "root (new version 2)".to_string(),
            valid: 0,
            threshold: 1,
        }
    );
}

/// After v3 removed ROOT_1, a v4 signed by ROOT_1 and ROOT_2 is refused: v3's root role needs
/// two of ROOT_2 and ROOT_3, and a removed key counts for nothing.
#[test]
fn removed_root_key_no_longer_counts() {
    let v3 = trusted_root()
        .rotate_chain(
            [fixture("root-v2.json"), fixture("root-v3.json")]
                .iter()
                .map(Vec::as_slice),
        )
        .unwrap();
    let doc: RootDocument = common::body("root-v3.json");
    let v4 = common::sign(4, valid_until(), &doc, &[seed::ROOT_1, seed::ROOT_2]);
    assert_eq!(
        v3.rotate(&v4).unwrap_err(),
        Error::UnknownKey {
            keyid: key_id(seed::ROOT_1),
            role: "root (trusted version 3)".to_string(),
            valid: 1,
            threshold: 2,
        }
    );
    let v4 = common::sign(4, valid_until(), &doc, &[seed::ROOT_2, seed::ROOT_3]);
    assert_eq!(v3.rotate(&v4).unwrap().header().version, 4);
}

/// A root loaded as the device's provisioned root must satisfy its own root role, and version 0
/// is not a version.
#[test]
fn provisioned_root_must_be_self_signed() {
    let doc: RootDocument = common::body("root.json");
    let by_release_keys = common::sign(1, valid_until(), &doc, &[seed::RELEASE_1]);
    assert_eq!(
        TrustRoot::from_trusted(&by_release_keys).unwrap_err(),
        Error::UnknownKey {
            keyid: key_id(seed::RELEASE_1),
            role: "root".to_string(),
            valid: 0,
            threshold: 1,
        }
    );
    let version_zero = common::sign(0, valid_until(), &doc, &[seed::ROOT_1]);
    assert_eq!(
        TrustRoot::from_trusted(&version_zero).unwrap_err(),
        Error::Invalid {
            what: "trust root",
            detail: "version must be at least 1".to_string(),
        }
    );
}
