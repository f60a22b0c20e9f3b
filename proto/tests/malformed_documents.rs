//! Malformed documents: anything that is not exactly one strict JSON envelope of the expected
//! type, within the size limit, with every field known and well formed, is refused before any
//! of its content is believed.

mod common;

use common::{fixture, key_id, now, raw, seed, trusted_root, valid_until};
use swell_proto::json::{JsonError, JsonErrorKind, MAX_DEPTH};
use swell_proto::limits::{MAX_DOCUMENT_BYTES, MAX_MESSAGE_BYTES};
use swell_proto::messages::{self, Report};
use swell_proto::{Error, InvalidId, RootDocument, TrustRoot};

fn verify(bytes: &[u8]) -> Result<(), Error> {
    trusted_root().verify_release(bytes, now()).map(|_| ())
}

fn json_error(kind: JsonErrorKind, offset: usize) -> Error {
    Error::Json(JsonError { kind, offset })
}

fn malformed(what: &'static str, detail: &str) -> Error {
    Error::Malformed {
        what,
        detail: detail.to_string(),
    }
}

/// `duplicate-key.json` is `release.json` with a second `"security_version": 0` placed first
/// in `signed`. Parsers disagree on which duplicate wins, so Swell refuses them all; the error
/// points at the second occurrence.
#[test]
fn duplicate_key_is_refused() {
    let bytes = fixture("duplicate-key.json");
    let second = String::from_utf8(bytes.clone())
        .unwrap()
        .rfind("\"security_version\"")
        .unwrap();
    let err = verify(&bytes).unwrap_err();
    assert_eq!(
        err,
        json_error(
            JsonErrorKind::DuplicateKey("security_version".to_string()),
            second
        )
    );
    assert_eq!(
        err.to_string(),
        format!("malformed JSON: duplicate key \"security_version\" at byte {second}")
    );
}

/// `non-integer.json` writes `"security_version": 3.0`. Numbers are integers only, so that
/// `3.0`, `3e0` and `3` cannot be three spellings of one signed value.
#[test]
fn non_integer_is_refused() {
    let bytes = fixture("non-integer.json");
    let at = String::from_utf8(bytes.clone())
        .unwrap()
        .find("3.0")
        .unwrap();
    let err = verify(&bytes).unwrap_err();
    assert_eq!(err, json_error(JsonErrorKind::NonInteger, at));
    assert_eq!(
        err.to_string(),
        format!("malformed JSON: number is not an integer at byte {at}")
    );
}

/// `malformed.json` is the first half of `release.json`, as a cut download leaves it.
#[test]
fn truncated_document_is_refused() {
    let bytes = fixture("malformed.json");
    assert_eq!(
        verify(&bytes).unwrap_err(),
        json_error(JsonErrorKind::UnexpectedEnd, bytes.len())
    );
}

/// `unknown-field.json` is correctly signed but carries `"channel": "beta"`, a field this
/// version does not know. It is refused rather than ignored: a field a newer signer meant to
/// restrict the release must not be silently dropped by an older device.
#[test]
fn unknown_field_is_refused() {
    let err = verify(&fixture("unknown-field.json")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed release: unknown field `channel`, expected one of `name`, `release_version`, \
         `security_version`, `hardware`, `artifacts`"
    );
    assert!(matches!(
        err,
        Error::Malformed {
            what: "release",
            ..
        }
    ));
}

/// `bad-keyid.json` lists RELEASE_2's key under the id of another key. A key id is the SHA-256
/// of the raw key, so the mismatch is refused when the root is loaded.
#[test]
fn key_id_that_does_not_match_its_key_is_refused() {
    let err = TrustRoot::from_trusted(&fixture("bad-keyid.json")).unwrap_err();
    let (listed, actual) = (key_id(seed::OUTSIDER), key_id(seed::RELEASE_2));
    assert_eq!(
        err,
        Error::Invalid {
            what: "trust root",
            detail: format!(
                "key listed as {listed} has id {actual}: a key id is the SHA-256 of the raw key"
            ),
        }
    );
}

/// `wrong-type.json` is a root document, signed by both release keys, handed over where a
/// release is expected. The `_type` is checked before anything else, so no threshold of any
/// role makes one kind of document pass for another.
#[test]
fn wrong_type_is_refused() {
    let err = verify(&fixture("wrong-type.json")).unwrap_err();
    assert_eq!(
        err,
        Error::WrongType {
            expected: "release",
            found: "root".to_string(),
        }
    );
    assert_eq!(
        err.to_string(),
        "wrong document type: expected \"release\", found \"root\""
    );
    // The other way round: a release where a root is expected.
    assert_eq!(
        trusted_root().rotate(&fixture("release.json")).unwrap_err(),
        Error::WrongType {
            expected: "root",
            found: "release".to_string(),
        }
    );
}

/// A document over `MAX_DOCUMENT_BYTES` is refused before it is parsed, even when it is
/// `release.json` padded with white space; at exactly the limit it still verifies.
#[test]
fn oversized_document_is_refused_before_parsing() {
    let mut bytes = fixture("release.json");
    bytes.resize(MAX_DOCUMENT_BYTES, b' ');
    verify(&bytes).unwrap();
    bytes.push(b' ');
    let err = verify(&bytes).unwrap_err();
    assert_eq!(
        err,
        Error::TooLarge {
            size: MAX_DOCUMENT_BYTES + 1,
            limit: MAX_DOCUMENT_BYTES,
        }
    );
    assert_eq!(
        err.to_string(),
        "document is 131073 bytes, over the 131072-byte limit"
    );
}

/// A device message over `MAX_MESSAGE_BYTES` is refused the same way.
#[test]
fn oversized_message_is_refused_before_parsing() {
    let mut bytes = fixture("report-downloading.json");
    bytes.resize(MAX_MESSAGE_BYTES + 1, b'\n');
    let device = common::device_1();
    let err = messages::open_device_message::<Report>(
        &bytes,
        &device,
        &common::device_key(&device),
        now(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::TooLarge {
            size: MAX_MESSAGE_BYTES + 1,
            limit: MAX_MESSAGE_BYTES,
        }
    );
}

/// A `spec_version` this build does not speak is refused by name, so an operator sees "upgrade
/// the agent" rather than a signature error.
#[test]
fn unknown_spec_version_is_refused() {
    let mut env = raw("release.json");
    let swell_proto::json::Value::Object(fields) = &mut env.signed else {
        unreachable!("a fixture's signed value is an object")
    };
    fields.insert("spec_version".to_string(), swell_proto::json::Value::Int(2));
    env.signatures.clear();
    env.add_signature(&common::key(seed::RELEASE_1));
    env.add_signature(&common::key(seed::RELEASE_2));
    let err = verify(&env.to_canonical()).unwrap_err();
    assert_eq!(
        err,
        Error::UnsupportedSpec {
            found: 2,
            supported: 1,
        }
    );
    assert_eq!(
        err.to_string(),
        "unsupported spec_version 2; this build speaks 1"
    );
}

/// Envelopes of the wrong shape are refused with what is wrong, before any signature is
/// checked. Each case edits `release.json`'s canonical text.
#[test]
fn envelope_shape_is_strict() {
    let canonical = String::from_utf8(raw("release.json").to_canonical()).unwrap();
    let sig = &raw("release.json").signatures[0];
    let sig_text = serde_json::to_value(sig.sig).unwrap();
    let sig_text = sig_text.as_str().unwrap();
    let cases: Vec<(String, Error)> = vec![
        (
            "[]".to_string(),
            malformed("envelope", "expected a JSON object"),
        ),
        (
            r#"{"signatures":[]}"#.to_string(),
            malformed("envelope", "no \"signed\""),
        ),
        (
            r#"{"signed":{}}"#.to_string(),
            malformed("envelope", "no \"signatures\""),
        ),
        (
            r#"{"signatures":[],"signed":[]}"#.to_string(),
            malformed("envelope", "\"signed\" is not an object"),
        ),
        (
            r#"{"signatures":{},"signed":{}}"#.to_string(),
            malformed("envelope", "\"signatures\" is not an array"),
        ),
        (
            canonical.replacen("{\"signatures\"", "{\"comment\":\"hi\",\"signatures\"", 1),
            malformed("envelope", "unknown field \"comment\""),
        ),
        (
            canonical.replacen("{\"signatures\":[", "{\"signatures\":[7,", 1),
            malformed(
                "signature",
                "invalid type: integer `7`, expected struct SignatureEntry",
            ),
        ),
        // The signature with its last base64 character changed so that its unused low bits are
        // set: the same 64 bytes, a second spelling. Standard padded base64 only.
        (
            canonical.replacen(sig_text, &non_canonical_base64(sig_text), 1),
            malformed("signature", "signature is not padded standard base64"),
        ),
        (
            canonical.replacen(sig_text, sig_text.trim_end_matches('='), 1),
            malformed("signature", "signature is not padded standard base64"),
        ),
        (
            canonical.replacen(sig_text, &sig_text[4..], 1),
            malformed("signature", "signature is not 64 bytes"),
        ),
        (
            canonical.replacen(&sig.keyid.to_hex(), &sig.keyid.to_hex().to_uppercase(), 1),
            Error::Malformed {
                what: "signature",
                detail: format!(
                    "invalid key id {:?}: expected 64 lowercase hex digits",
                    sig.keyid.to_hex().to_uppercase()
                ),
            },
        ),
        (
            canonical.replacen("\"_type\":\"release\",", "", 1),
            malformed("document", "no string \"_type\""),
        ),
        (
            canonical.replacen("\"spec_version\":1,", "", 1),
            malformed("document", "no integer \"spec_version\""),
        ),
        (
            canonical.replacen("\"version\":1", "\"version\":-1", 1),
            malformed("release", "no non-negative \"version\""),
        ),
        (
            canonical.replacen("2099-01-01T00:00:00Z", "2099-01-01T00:00:00+00:00", 1),
            Error::InvalidId(InvalidId {
                what: "timestamp",
                value: "2099-01-01T00:00:00+00:00".to_string(),
                why: "expected RFC 3339 UTC such as 2027-01-31T00:00:00Z",
            }),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(verify(text.as_bytes()).unwrap_err(), expected, "{text}");
    }
}

/// `text`, a padded base64 string of 64 bytes (two unused low bits in its last character), with
/// those unused bits set.
fn non_canonical_base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let body = text.trim_end_matches('=');
    let last = body.as_bytes()[body.len() - 1];
    let index = ALPHABET
        .iter()
        .position(|c| *c == last)
        .unwrap_or(usize::MAX);
    assert_eq!(
        index & 0b11,
        0,
        "a canonical last character has its low bits clear"
    );
    let changed = char::from(ALPHABET[index | 0b01]);
    format!("{}{changed}==", &body[..body.len() - 1])
}

/// Nesting deeper than `MAX_DEPTH` is refused without recursing further, so a hostile document
/// cannot exhaust a microcontroller's stack.
#[test]
fn deep_nesting_is_refused() {
    let depth = MAX_DEPTH + 1;
    let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    assert_eq!(
        verify(text.as_bytes()).unwrap_err(),
        json_error(JsonErrorKind::TooDeep, MAX_DEPTH)
    );
}

/// Keys in a root must be canonical, valid, large-order Ed25519 points in lowercase hex, of
/// keytype `ed25519`.
#[test]
fn bad_public_keys_in_a_root_are_refused() {
    fn load(edit: impl FnOnce(&mut swell_proto::root::KeyEntry)) -> Error {
        let mut doc: RootDocument = common::body("root.json");
        edit(doc.keys.get_mut(&key_id(seed::RELEASE_1)).unwrap());
        TrustRoot::from_trusted(&common::sign(1, valid_until(), &doc, &[seed::ROOT_1])).unwrap_err()
    }
    let id = key_id(seed::RELEASE_1);
    assert_eq!(
        load(|k| k.keytype = "rsa".to_string()),
        Error::Invalid {
            what: "trust root",
            detail: format!("key {id} has unsupported keytype \"rsa\""),
        }
    );
    assert_eq!(
        load(|k| k.public = k.public.to_uppercase()),
        Error::Invalid {
            what: "trust root",
            detail: format!("key {id} is not 64 lowercase hex digits"),
        }
    );
    // The identity point: small order, so one signature would verify for every message.
    let identity = format!("01{}", "00".repeat(31));
    assert_eq!(
        load(|k| k.public = identity.clone()),
        Error::InvalidId(InvalidId {
            what: "public key",
            value: identity.clone(),
            why: "a small-order Ed25519 key",
        })
    );
}
