//! Interop with OpenSSL, the contract in DESIGN.md: Swell keys are PKCS#8 / SPKI PEM that
//! OpenSSL reads, `openssl genpkey -algorithm ed25519` keys sign Swell documents, and raw
//! Ed25519 signatures over `swellctl document payload` move both ways.
//!
//! Gated: runs only with `SWELL_INTEROP=1` (CI sets it and installs `openssl`); otherwise each
//! test prints "skipped: set SWELL_INTEROP=1" and passes. When enabled, a missing `openssl`
//! binary is a failure, not a skip.

mod common;

use std::process::{Command, Output};

use common::{Scratch, in_days, pseudo_random};

/// Whether the suite is enabled; prints the skip notice if not.
fn enabled() -> bool {
    if std::env::var("SWELL_INTEROP").as_deref() == Ok("1") {
        return true;
    }
    println!("skipped: set SWELL_INTEROP=1");
    false
}

/// Runs `openssl args...` in the scratch directory and asserts it succeeded.
fn openssl(s: &Scratch, args: &[&str]) -> Output {
    let out = openssl_status(s, args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `openssl args...` in the scratch directory, whatever its exit status.
fn openssl_status(s: &Scratch, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(s.dir.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}); SWELL_INTEROP=1 needs the openssl binary installed")
        })
}

/// Three Swell keys s1..s3 and one OpenSSL key `ossl` (with `ossl.pub.pem` from OpenSSL); a
/// root whose release role is 2 of those 4.
fn four_keys_two_required(s: &Scratch) {
    for k in ["s1", "s2", "s3"] {
        s.key(k);
    }
    openssl(s, &["genpkey", "-algorithm", "ed25519", "-out", "ossl.pem"]);
    openssl(
        s,
        &["pkey", "-in", "ossl.pem", "-pubout", "-out", "ossl.pub.pem"],
    );
    s.root_with_release_keys(&["s1", "s2", "s3", "ossl"], 2);
}

/// The scenario: release threshold 2 of 4 (three Swell keys, one OpenSSL key), a
/// 64 MiB image. Signed by one Swell key and the OpenSSL key it verifies; signed by one key it
/// fails on the threshold; with one flipped byte it fails on the digest; checked after its
/// expiry it fails on the expiry.
#[test]
fn two_of_four_with_an_openssl_key_over_a_64_mib_image() {
    if !enabled() {
        return;
    }
    let s = Scratch::new();
    four_keys_two_required(&s);
    let mut image = pseudo_random(64 << 20, 2027);
    s.write("app.img", &image);
    let create = |keys: &str, out: &str| {
        s.ok(&format!(
            "release create --image app.img --name gateway-os --version 3.1.0 \
             --security-version 7 --hardware gw-x86 --expires 30d {keys} --out {out}"
        ))
    };

    create("--key s1.pem --key ossl.pem", "good.json");
    let out = s.ok("release verify good.json --root root.json --image app.img --hardware gw-x86");
    assert!(out.contains("image             app.img matches artifact rootfs (67108864 bytes)"));
    let ossl = s.ok("key id ossl.pub.pem");
    assert!(
        out.contains(ossl.trim()),
        "the OpenSSL key is not among the signers:\n{out}"
    );

    create("--key s2.pem", "one.json");
    let err = s.fails("release verify one.json --root root.json --image app.img");
    assert_eq!(
        err,
        "error: release verify: one.json: threshold unmet for the release role: \
         1 valid signature(s) from distinct keys, 2 required"
    );

    let at = in_days(45);
    let err = s.fails(&format!(
        "release verify good.json --root root.json --at {at}"
    ));
    assert!(
        err.starts_with("error: release verify: good.json: release expired at "),
        "{err}"
    );
    assert!(err.ends_with(&format!("(now {at})")), "{err}");

    image[(64 << 20) / 2] ^= 0x80;
    s.write("app.img", &image);
    let err = s.fails("release verify good.json --root root.json --image app.img");
    assert!(
        err.starts_with("error: release verify: app.img: artifact rootfs: digest mismatch: "),
        "{err}"
    );
}

/// A signature made by the `openssl` binary over `swellctl document payload` is attached with
/// `document attach` and counts in Swell's verification.
#[test]
fn openssl_signature_verifies_in_swell() {
    if !enabled() {
        return;
    }
    let s = Scratch::new();
    four_keys_two_required(&s);
    s.write("app.img", b"a small image");
    s.ok(
        "release create --image app.img --name os --version 1.0.0 --security-version 1 \
          --hardware hw --expires 1d --key s1.pem --out m.json",
    );
    s.fails("release verify m.json --root root.json");

    s.ok("document payload m.json --out payload.bin");
    openssl(
        &s,
        &[
            "pkeyutl",
            "-sign",
            "-inkey",
            "ossl.pem",
            "-rawin",
            "-in",
            "payload.bin",
            "-out",
            "sig.bin",
        ],
    );
    assert_eq!(s.read("sig.bin").len(), 64);
    s.ok("document attach m.json --public-key ossl.pub.pem --signature sig.bin");
    s.ok("release verify m.json --root root.json --image app.img");
}

/// A Swell signature (base64 in the manifest) verifies with `openssl pkeyutl -verify` over the
/// payload, and fails there once the payload changes.
#[test]
fn swell_signature_verifies_in_openssl() {
    if !enabled() {
        return;
    }
    let s = Scratch::new();
    s.key("s1");
    s.write("app.img", b"another image");
    s.ok(
        "release create --image app.img --name os --version 1.0.0 --security-version 1 \
          --hardware hw --expires 1d --key s1.pem --out m.json",
    );
    s.ok("document payload m.json --out payload.bin");
    let m = s.read_json("m.json");
    let sig = m["signatures"][0]["sig"].as_str().unwrap().to_owned();
    s.write("sig.b64", sig.as_bytes());
    openssl(
        &s,
        &["base64", "-d", "-A", "-in", "sig.b64", "-out", "sig.bin"],
    );
    assert_eq!(s.read("sig.bin").len(), 64);

    let verify = [
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "s1.pub.pem",
        "-rawin",
    ];
    let out = openssl(
        &s,
        &[&verify[..], &["-in", "payload.bin", "-sigfile", "sig.bin"]].concat(),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Signature Verified Successfully"));

    let mut payload = s.read("payload.bin");
    payload[10] ^= 1;
    s.write("tampered.bin", &payload);
    let out = openssl_status(
        &s,
        &[&verify[..], &["-in", "tampered.bin", "-sigfile", "sig.bin"]].concat(),
    );
    assert!(
        !out.status.success(),
        "openssl accepted a signature over other bytes"
    );
}

/// OpenSSL reads Swell's private keys and derives the same public key Swell wrote; Swell reads
/// OpenSSL's keys and gives both halves the same key id.
#[test]
fn keys_move_between_openssl_and_swell() {
    if !enabled() {
        return;
    }
    let s = Scratch::new();
    s.key("s1");
    let out = openssl(&s, &["pkey", "-in", "s1.pem", "-pubout"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().as_bytes(),
        s.read("s1.pub.pem")
    );
    // OpenSSL also sees it as an Ed25519 key.
    let text = openssl(&s, &["pkey", "-in", "s1.pem", "-noout", "-text"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("ED25519 Private-Key"));

    openssl(&s, &["genpkey", "-algorithm", "ed25519", "-out", "o.pem"]);
    openssl(
        &s,
        &["pkey", "-in", "o.pem", "-pubout", "-out", "o.pub.pem"],
    );
    assert_eq!(s.ok("key id o.pem"), s.ok("key id o.pub.pem"));
}
