//! `swellctl document payload`, `attach` and `sign`: signing with tools outside Swell. The
//! payload is the canonical `signed` value; an attached signature must verify over it.

mod common;

use common::Scratch;

/// Root with release role 2 of {k1, ext}, and an image manifest signed by k1 only.
fn setup(s: &Scratch) {
    s.key("k1");
    s.key("ext");
    s.root_with_release_keys(&["k1", "ext"], 2);
    s.write("app.img", b"an image");
    s.ok(
        "release create --image app.img --name os --version 1.0.0 --security-version 1 \
          --hardware hw-a --expires 1d --key k1.pem --out m.json",
    );
}

/// The payload is the canonical JSON of `signed`: no white space, sorted keys, the same value.
#[test]
fn payload_is_the_canonical_signed_value() {
    let s = Scratch::new();
    setup(&s);
    let stdout = s.ok("document payload m.json");
    s.ok("document payload m.json --out payload.bin");
    let payload = s.read("payload.bin");
    assert_eq!(stdout.as_bytes(), payload.as_slice());
    assert!(!payload.contains(&b'\n') && !payload.contains(&b' '));
    assert!(
        payload.starts_with(b"{\"_type\":\"release\",\"artifacts\":[{"),
        "{stdout}"
    );
    let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(value, s.read_json("m.json")["signed"]);
}

/// A raw signature made outside Swell over the payload is attached and counts toward the
/// threshold.
#[test]
fn attached_external_signature_verifies() {
    let s = Scratch::new();
    setup(&s);
    s.fails("release verify m.json --root root.json");
    s.ok("document payload m.json --out payload.bin");
    let sig = s.sign_raw("ext.pem", &s.read("payload.bin"));
    s.write("sig.bin", &sig);
    let out = s.ok("document attach m.json --public-key ext.pub.pem --signature sig.bin");
    assert!(out.contains(s.ok("key id ext.pem").trim()), "{out}");
    s.ok("release verify m.json --root root.json --image app.img");
}

/// A signature that does not verify over the payload, or is not 64 bytes, is refused and the
/// document is left unchanged.
#[test]
fn attach_refuses_bad_signatures() {
    let s = Scratch::new();
    setup(&s);
    let before = s.read("m.json");
    let mut sig = s.sign_raw("ext.pem", b"some other bytes");
    s.write("sig.bin", &sig);
    let ext = s.ok("key id ext.pem");
    let err = s.fails("document attach m.json --public-key ext.pub.pem --signature sig.bin");
    assert_eq!(
        err,
        format!(
            "error: document attach: sig.bin: the signature does not verify with key {} over the \
             payload of m.json; it was made over other bytes or with another key",
            ext.trim()
        )
    );
    sig[0] ^= 1;
    s.write("short.bin", &sig[..63]);
    let err = s.fails("document attach m.json --public-key ext.pub.pem --signature short.bin");
    assert_eq!(
        err,
        "error: document attach: short.bin: expected a raw 64-byte Ed25519 signature, found 63 bytes"
    );
    assert_eq!(s.read("m.json"), before);
}

/// `document sign` signs any envelope; `root sign` and `release sign` refuse the other type.
#[test]
fn typed_sign_commands_refuse_the_other_type() {
    let s = Scratch::new();
    setup(&s);
    let err = s.fails("root sign m.json --key k1.pem");
    assert_eq!(
        err,
        "error: root sign: m.json: wrong document type: expected \"root\", found \"release\""
    );
    let err = s.fails("release sign root.json --key k1.pem");
    assert_eq!(
        err,
        "error: release sign: root.json: wrong document type: expected \"release\", found \"root\""
    );
    s.ok("document sign m.json --key ext.pem");
    s.ok("release verify m.json --root root.json");
}
