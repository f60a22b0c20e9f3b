//! `swellctl key generate` and `key id`: PKCS#8 / SPKI PEM pairs whose key id is the SHA-256 of
//! the raw public key, written safely.

mod common;

use common::{Scratch, mode};

/// A new key pair is a 0600 PKCS#8 private key and an SPKI public key; the printed key id is
/// what `key id` reports for either file, and matches the raw key's SHA-256.
#[test]
fn generate_writes_a_pair_and_prints_its_id() {
    let s = Scratch::new();
    let id = s.key("signer");
    assert_eq!(id.len(), 64);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );

    let private = String::from_utf8(s.read("signer.pem")).unwrap();
    let public = String::from_utf8(s.read("signer.pub.pem")).unwrap();
    assert!(
        private.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "{private}"
    );
    assert!(
        public.starts_with("-----BEGIN PUBLIC KEY-----\n"),
        "{public}"
    );
    assert_eq!(mode(&s.path("signer.pem")), 0o600);

    assert_eq!(s.ok("key id signer.pem").trim(), id);
    assert_eq!(s.ok("key id signer.pub.pem").trim(), id);

    let key = swell_proto::keys::pem::public_key_from_pem(&public).unwrap();
    assert_eq!(swell_proto::Sha256Digest::of(&key.to_bytes()).to_hex(), id);
}

/// Two generated keys differ: the seed comes from the operating system.
#[test]
fn generated_keys_are_distinct() {
    let s = Scratch::new();
    assert_ne!(s.key("a"), s.key("b"));
    assert_ne!(s.read("a.pem"), s.read("b.pem"));
}

/// Generating over an existing key refuses, names the file, and leaves the key untouched.
#[test]
fn generate_refuses_to_overwrite() {
    let s = Scratch::new();
    s.key("k");
    let before = s.read("k.pem");
    let err = s.fails("key generate --out k");
    assert_eq!(
        err,
        "error: key generate: k.pem already exists; refusing to overwrite it"
    );
    assert_eq!(s.read("k.pem"), before);

    // A lone public half blocks generation too, and no private key is left behind.
    s.write("p.pub.pem", b"x");
    let err = s.fails("key generate --out p");
    assert_eq!(
        err,
        "error: key generate: p.pub.pem already exists; refusing to overwrite it"
    );
    assert!(!s.path("p.pem").exists());
}

/// `key id` of a file that is not a PEM Ed25519 key names the file and what was expected.
#[test]
fn key_id_refuses_non_keys() {
    let s = Scratch::new();
    s.write("notes.txt", b"hello");
    let err = s.fails("key id notes.txt");
    assert_eq!(
        err,
        "error: key id: notes.txt: not a PEM Ed25519 key \
         (expected \"BEGIN PRIVATE KEY\" or \"BEGIN PUBLIC KEY\")"
    );
    let err = s.fails("key id missing.pem");
    assert_eq!(
        err,
        "error: key id: cannot read missing.pem: No such file or directory (os error 2)"
    );
}
