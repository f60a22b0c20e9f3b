//! `swellctl release create`, `sign`, `verify` and `show` on the happy path: a streamed image
//! hash, a manifest signed by a threshold of release keys, and the device-side checks.

mod common;

use common::{Scratch, pseudo_random};

/// Root with release role 2 of {k1, k2}, and a 3 MiB + 5 byte image (crossing hash buffers).
fn setup(s: &Scratch) -> Vec<u8> {
    s.key("k1");
    s.key("k2");
    s.root_with_release_keys(&["k1", "k2"], 2);
    let image = pseudo_random(3 * 1024 * 1024 + 5, 1);
    s.write("app.img", &image);
    image
}

/// A manifest created with both keys verifies, with the image, hardware and anti-rollback
/// checks, and the report says what was verified.
#[test]
fn create_then_verify_with_image_and_policy() {
    let s = Scratch::new();
    let image = setup(&s);
    s.ok(
        "release create --image app.img --name gateway-os --version 1.4.2 \
          --security-version 3 --hardware hw-a --hardware hw-b --expires 30d \
          --key k1.pem --key k2.pem",
    );
    // The manifest lands beside the image by default, and records its size and digest.
    let m = s.read_json("app.img.manifest.json");
    let artifact = &m["signed"]["artifacts"][0];
    assert_eq!(artifact["target"], "rootfs");
    assert_eq!(artifact["size"], image.len() as u64);
    assert_eq!(
        artifact["sha256"],
        swell_proto::Sha256Digest::of(&image).to_hex()
    );
    assert_eq!(m["signed"]["_type"], "release");
    assert_eq!(m["signed"]["version"], 1);
    assert_eq!(m["signatures"].as_array().unwrap().len(), 2);

    let out = s.ok(
        "release verify app.img.manifest.json --root root.json --image app.img \
                    --hardware hw-b --installed-security-version 3",
    );
    for want in [
        "verified          yes, against root.json (root version 1)",
        "name              gateway-os",
        "version           1.4.2",
        "security version  3",
        "image             app.img matches artifact rootfs (3145733 bytes)",
        "admitted          hardware hw-b, installed security version 3",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

/// An unsigned manifest gains signatures one key holder at a time with `release sign`.
#[test]
fn unsigned_manifest_signed_later() {
    let s = Scratch::new();
    setup(&s);
    s.ok(
        "release create --image app.img --name os --version 2.0.0-rc.1 --security-version 0 \
          --hardware hw-a --expires 2099-01-01T00:00:00Z --out m.json --target rootfs",
    );
    let err = s.fails("release verify m.json --root root.json");
    assert!(
        err.ends_with("0 valid signature(s) from distinct keys, 2 required"),
        "{err}"
    );
    s.ok("release sign m.json --key k2.pem");
    s.ok("release sign m.json --key k1.pem");
    s.ok("release verify m.json --root root.json --image app.img");
    let out = s.ok("release show m.json");
    assert!(
        out.contains("expires           2099-01-01T00:00:00Z"),
        "{out}"
    );
    assert!(out.contains("no (signatures not checked)"), "{out}");
}

/// `release create` refuses an expiry that is not in the future and an existing manifest,
/// before it hashes anything.
#[test]
fn create_refuses_past_expiry_and_overwrite() {
    let s = Scratch::new();
    setup(&s);
    let create = |expires: &str| {
        format!(
            "release create --image app.img --name os --version 1.0.0 --security-version 1 \
             --hardware hw-a --expires {expires} --key k1.pem"
        )
    };
    let err = s.fails(&create("2001-01-01T00:00:00Z"));
    assert!(
        err.starts_with(
            "error: release create: --expires: 2001-01-01T00:00:00Z is not in the future"
        ),
        "{err}"
    );
    s.ok(&create("1h"));
    let err = s.fails(&create("1h"));
    assert_eq!(
        err,
        "error: release create: app.img.manifest.json already exists; refusing to overwrite it"
    );
    let err = s.fails(
        "release create --image nope.img --name os --version 1.0.0 \
                       --security-version 1 --hardware hw-a --expires 1d --out n.json",
    );
    assert_eq!(
        err,
        "error: release create: cannot read nope.img: No such file or directory (os error 2)"
    );
}

/// Device policy: a release for other hardware, or below the installed security version, is
/// refused with the reason.
#[test]
fn device_policy_refusals() {
    let s = Scratch::new();
    setup(&s);
    s.ok(
        "release create --image app.img --name os --version 1.0.0 --security-version 4 \
          --hardware hw-a --hardware hw-b --expires 1d --key k1.pem --key k2.pem",
    );
    let err = s.fails("release verify app.img.manifest.json --root root.json --hardware hw-z");
    assert_eq!(
        err,
        "error: release verify: app.img.manifest.json: release is built for hardware \
         [hw-a, hw-b], not hw-z"
    );
    let err = s.fails(
        "release verify app.img.manifest.json --root root.json --hardware hw-a \
                       --installed-security-version 5",
    );
    assert_eq!(
        err,
        "error: release verify: app.img.manifest.json: security_version 4 is below the \
         installed 5 (anti-rollback)"
    );
    let err = s.fails(
        "release verify app.img.manifest.json --root root.json --image app.img \
                       --target mcu-1",
    );
    assert_eq!(
        err,
        "error: release verify: app.img.manifest.json: release has no artifact for target mcu-1"
    );
}
