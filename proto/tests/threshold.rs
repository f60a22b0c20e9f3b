//! Thresholds: a role is satisfied by valid signatures from *distinct* keys of that role; a bad
//! signature by a key of the role is an error on its own; keys outside the role never count.

mod common;

use common::{fixture, key_id, now, raw, seed, trusted_root, valid_until};
use swell_proto::envelope::RoleKeys;
use swell_proto::limits::MAX_SIGNATURES;
use swell_proto::{Error, ReleaseDocument, RootDocument, Signature, SignatureEntry, TrustRoot};

fn release_body() -> ReleaseDocument {
    common::body("release.json")
}

fn verify(bytes: &[u8]) -> Result<(), Error> {
    trusted_root().verify_release(bytes, now()).map(|_| ())
}

/// `release.json` is signed by both release keys (threshold 2) and verifies.
#[test]
fn threshold_of_distinct_keys_verifies() {
    verify(&fixture("release.json")).unwrap();
}

/// `threshold-unmet.json` carries one release signature where two are required.
#[test]
fn threshold_unmet_is_refused() {
    let err = verify(&fixture("threshold-unmet.json")).unwrap_err();
    assert_eq!(
        err,
        Error::ThresholdUnmet {
            role: "release".to_string(),
            valid: 1,
            threshold: 2,
        }
    );
    assert_eq!(
        err.to_string(),
        "threshold unmet for the release role: 1 valid signature(s) from distinct keys, 2 required"
    );
}

/// `same-key-twice.json` carries RELEASE_1's valid signature twice: one key counts once, so a
/// single compromised key cannot meet a threshold of 2 by repeating itself.
#[test]
fn same_key_twice_counts_once() {
    let env = raw("same-key-twice.json");
    assert_eq!(env.signatures.len(), 2);
    assert_eq!(env.signatures[0], env.signatures[1]);
    assert_eq!(
        verify(&fixture("same-key-twice.json")).unwrap_err(),
        Error::ThresholdUnmet {
            role: "release".to_string(),
            valid: 1,
            threshold: 2,
        }
    );
}

/// `bad-signature.json`: both release keys signed, then the rootfs digest was swapped. The first
/// signature checked fails, and that alone refuses the document.
#[test]
fn tampered_document_is_a_bad_signature() {
    let err = verify(&fixture("bad-signature.json")).unwrap_err();
    assert_eq!(
        err,
        Error::BadSignature {
            keyid: key_id(seed::RELEASE_1),
            role: "release".to_string(),
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "bad signature by key {} of the release role",
            key_id(seed::RELEASE_1)
        )
    );
}

/// `release.json` plus a third, broken signature by RELEASE_1: the threshold is met by the two
/// good ones, and the document is still refused, because a role key's bad signature means
/// someone altered or mis-signed the document.
#[test]
fn bad_signature_is_an_error_even_when_the_threshold_is_met() {
    let mut env = raw("release.json");
    env.signatures.push(SignatureEntry {
        keyid: key_id(seed::RELEASE_1),
        sig: Signature([7; 64]),
    });
    assert_eq!(
        verify(&env.to_canonical()).unwrap_err(),
        Error::BadSignature {
            keyid: key_id(seed::RELEASE_1),
            role: "release".to_string(),
        }
    );
}

/// `unknown-key.json` is signed by RELEASE_1 and a key no root lists: the threshold is unmet and
/// the error names the stranger, which is what an operator needs to see.
#[test]
fn unknown_key_is_named_when_the_threshold_is_unmet() {
    let err = verify(&fixture("unknown-key.json")).unwrap_err();
    assert_eq!(
        err,
        Error::UnknownKey {
            keyid: key_id(seed::OUTSIDER),
            role: "release".to_string(),
            valid: 1,
            threshold: 2,
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "signed by key {}, which is not a key of the release role; 1 valid signature(s) \
             from distinct release keys, 2 required",
            key_id(seed::OUTSIDER)
        )
    );
}

/// Extra signatures from keys outside the role (a stranger, or the controller) are ignored once
/// the threshold is met, so a key holder can co-sign without breaking anything.
#[test]
fn unknown_keys_are_ignored_when_the_threshold_is_met() {
    let mut env = raw("release.json");
    env.add_signature(&common::key(seed::OUTSIDER));
    env.add_signature(&common::key(seed::CONTROLLER));
    assert_eq!(env.signatures.len(), 4);
    verify(&env.to_canonical()).unwrap();
}

/// A key of another role of the same root does not count for this role: the controller key
/// cannot stand in for a release key.
#[test]
fn keys_of_another_role_do_not_count() {
    let bytes = common::sign(
        1,
        valid_until(),
        &release_body(),
        &[seed::RELEASE_1, seed::CONTROLLER],
    );
    assert_eq!(
        verify(&bytes).unwrap_err(),
        Error::UnknownKey {
            keyid: key_id(seed::CONTROLLER),
            role: "release".to_string(),
            valid: 1,
            threshold: 2,
        }
    );
}

/// More than `MAX_SIGNATURES` entries are refused before any is checked, bounding the work a
/// hostile document can cause.
#[test]
fn too_many_signatures_are_refused_unchecked() {
    let mut env = raw("release.json");
    let entry = env.signatures[0].clone();
    env.signatures.resize(MAX_SIGNATURES + 1, entry);
    assert_eq!(
        verify(&env.to_canonical()).unwrap_err(),
        Error::TooManySignatures {
            count: MAX_SIGNATURES + 1,
            limit: MAX_SIGNATURES,
        }
    );
    // Exactly the limit is checked: both release keys plus thirty repeats of RELEASE_1.
    env.signatures.truncate(MAX_SIGNATURES);
    verify(&env.to_canonical()).unwrap();
}

fn root_with(edit: impl FnOnce(&mut RootDocument)) -> Result<TrustRoot, Error> {
    let mut doc: RootDocument = common::body("root.json");
    edit(&mut doc);
    TrustRoot::from_trusted(&common::sign(1, valid_until(), &doc, &[seed::ROOT_1]))
}

fn invalid_root(detail: String) -> Error {
    Error::Invalid {
        what: "trust root",
        detail,
    }
}

/// `unsatisfiable-threshold.json` asks for 3 release signatures from 2 keys: refused when the
/// root is loaded, not when the first release fails to verify.
#[test]
fn unsatisfiable_threshold_is_refused() {
    let err = TrustRoot::from_trusted(&fixture("unsatisfiable-threshold.json")).unwrap_err();
    assert_eq!(
        err,
        invalid_root("role release has threshold 3 with 2 key(s): it must be 1 to 2".to_string())
    );
    assert_eq!(
        err.to_string(),
        "invalid trust root: role release has threshold 3 with 2 key(s): it must be 1 to 2"
    );
}

/// A threshold of 0 would let an unsigned document through: refused.
#[test]
fn zero_threshold_is_refused() {
    let err = root_with(|doc| doc.roles.controller.threshold = 0).unwrap_err();
    assert_eq!(
        err,
        invalid_root(
            "role controller has threshold 0 with 1 key(s): it must be 1 to 1".to_string()
        )
    );
}

/// A role that lists one key twice would make a threshold of 2 look met by one key holder.
#[test]
fn role_listing_a_key_twice_is_refused() {
    let release_1 = key_id(seed::RELEASE_1);
    let err = root_with(|doc| {
        doc.roles.release = RoleKeys {
            keyids: vec![release_1, release_1],
            threshold: 2,
        }
    })
    .unwrap_err();
    assert_eq!(
        err,
        invalid_root(format!("role release lists key {release_1} twice"))
    );
}

/// A role naming a key id the root does not list cannot be satisfied by that key.
#[test]
fn role_naming_an_unlisted_key_is_refused() {
    let outsider = key_id(seed::OUTSIDER);
    let err = root_with(|doc| doc.roles.controller.keyids = vec![outsider]).unwrap_err();
    assert_eq!(
        err,
        invalid_root(format!(
            "role controller names key {outsider}, which is not listed"
        ))
    );
}
