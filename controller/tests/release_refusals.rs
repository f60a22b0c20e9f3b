//! `swellctl release verify` refuses every manifest or image a device must refuse, each with
//! one line on standard error that names the file and the reason, and exit status 1.

mod common;

use common::{Scratch, in_days, pseudo_random};
use serde_json::Value;

const VERIFY: &str = "release verify app.img.manifest.json --root root.json --image app.img";
const PREFIX: &str = "error: release verify: app.img.manifest.json: ";

/// Root with release role 2 of {k1, k2} (expiring in 365 days), a 1 MiB image, and its
/// manifest signed by `keys` (expiring in 30 days).
fn release_signed_by(keys: &[&str]) -> Scratch {
    let s = Scratch::new();
    s.key("k1");
    s.key("k2");
    s.root_with_release_keys(&["k1", "k2"], 2);
    s.write("app.img", &pseudo_random(1 << 20, 7));
    let keys: Vec<String> = keys.iter().map(|k| format!("--key {k}.pem")).collect();
    s.ok(&format!(
        "release create --image app.img --name gateway-os --version 1.4.2 --security-version 3 \
         --hardware hw-a --expires 30d {}",
        keys.join(" ")
    ));
    s
}

fn manifest(s: &Scratch) -> Value {
    s.read_json("app.img.manifest.json")
}

/// One signature of the two required: refused, naming the role and the count.
#[test]
fn threshold_unmet() {
    let s = Scratch::new();
    s.key("k1");
    s.key("k2");
    s.root_with_release_keys(&["k1", "k2"], 2);
    s.write("app.img", b"image");
    s.ok(
        "release create --image app.img --name os --version 1.0.0 --security-version 1 \
          --hardware hw-a --expires 1d --key k1.pem",
    );
    assert_eq!(
        s.fails(VERIFY),
        format!(
            "{PREFIX}threshold unmet for the release role: 1 valid signature(s) from distinct \
             keys, 2 required"
        )
    );
}

/// The same key's signature twice counts once.
#[test]
fn same_key_twice_counts_once() {
    let s = release_signed_by(&["k1", "k2"]);
    let mut m = manifest(&s);
    let sigs = m["signatures"].as_array_mut().unwrap();
    let first = sigs[0].clone();
    sigs[1] = first;
    s.write_json("app.img.manifest.json", &m);
    assert_eq!(
        s.fails(VERIFY),
        format!(
            "{PREFIX}threshold unmet for the release role: 1 valid signature(s) from distinct \
             keys, 2 required"
        )
    );
}

/// A manifest changed after signing (security version lowered) fails on a bad signature.
#[test]
fn tampered_manifest_has_a_bad_signature() {
    let s = release_signed_by(&["k1", "k2"]);
    let mut m = manifest(&s);
    m["signed"]["security_version"] = 2.into();
    s.write_json("app.img.manifest.json", &m);
    let err = s.fails(VERIFY);
    let first = m["signatures"][0]["keyid"].as_str().unwrap().to_owned();
    assert_eq!(
        err,
        format!("{PREFIX}bad signature by key {first} of the release role")
    );
}

/// A signature by a key the root does not list is named when the threshold is unmet.
#[test]
fn unknown_key() {
    let s = release_signed_by(&["k1", "k2"]);
    let stranger = s.key("stranger");
    // Replace k2's signature by the stranger's.
    let mut m = manifest(&s);
    let k2 = s.ok("key id k2.pem");
    m["signatures"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["keyid"] != k2.trim());
    s.write_json("app.img.manifest.json", &m);
    s.ok("release sign app.img.manifest.json --key stranger.pem");
    assert_eq!(
        s.fails(VERIFY),
        format!(
            "{PREFIX}signed by key {stranger}, which is not a key of the release role; 1 valid \
             signature(s) from distinct release keys, 2 required"
        )
    );
}

/// A manifest checked after its expiry (but while the root is valid) is refused, naming its
/// expiry and the instant of the check.
#[test]
fn expired_manifest() {
    let s = release_signed_by(&["k1", "k2"]);
    let expires = manifest(&s)["signed"]["expires"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = in_days(60);
    assert_eq!(
        s.fails(&format!("{VERIFY} --at {at}")),
        format!("{PREFIX}release expired at {expires} (now {at})")
    );
}

/// A trust root verified as a release manifest is refused by its `_type`.
#[test]
fn wrong_type() {
    let s = release_signed_by(&["k1", "k2"]);
    assert_eq!(
        s.fails("release verify root.json --root root.json"),
        "error: release verify: root.json: wrong document type: expected \"release\", found \
         \"root\""
    );
}

/// One flipped byte in the image: refused on its digest, naming the image and both digests.
#[test]
fn digest_mismatch() {
    let s = release_signed_by(&["k1", "k2"]);
    let mut image = s.read("app.img");
    image[12_345] ^= 0x01;
    s.write("app.img", &image);
    let err = s.fails(VERIFY);
    let expected = manifest(&s)["signed"]["artifacts"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let actual = swell_proto::Sha256Digest::of(&image).to_hex();
    assert_eq!(
        err,
        format!(
            "error: release verify: app.img: artifact rootfs: digest mismatch: manifest says \
             {expected}, image is {actual}"
        )
    );
}

/// An image one byte longer than signed: refused on its size.
#[test]
fn size_mismatch() {
    let s = release_signed_by(&["k1", "k2"]);
    let mut image = s.read("app.img");
    image.push(0);
    s.write("app.img", &image);
    assert_eq!(
        s.fails(VERIFY),
        "error: release verify: app.img: artifact rootfs: size mismatch: manifest says 1048576 \
         bytes, image is 1048577"
    );
}

/// A truncated manifest is malformed JSON, reported with the byte offset.
#[test]
fn malformed_json() {
    let s = release_signed_by(&["k1", "k2"]);
    let text = s.read("app.img.manifest.json");
    s.write("app.img.manifest.json", &text[..text.len() / 2]);
    let err = s.fails(VERIFY);
    assert!(
        err.starts_with(&format!(
            "{PREFIX}malformed JSON: unexpected end of JSON at byte "
        )),
        "{err}"
    );
}

/// A duplicate key (two `name`s, which different parsers would read differently) is refused,
/// and the reason is not repeated.
#[test]
fn duplicate_json_key() {
    let s = release_signed_by(&["k1", "k2"]);
    let text = String::from_utf8(s.read("app.img.manifest.json")).unwrap();
    let needle = "\"name\": \"gateway-os\",";
    assert!(text.contains(needle), "{text}");
    let text = text.replace(needle, &format!("{needle} \"name\": \"evil-os\","));
    s.write("app.img.manifest.json", text.as_bytes());
    let err = s.fails(VERIFY);
    assert!(
        err.starts_with(&format!(
            "{PREFIX}malformed JSON: duplicate key \"name\" at byte "
        )),
        "{err}"
    );
    assert_eq!(err.matches("duplicate key").count(), 1, "{err}");
}

/// An expired trust root is reported against the root file, not the manifest.
#[test]
fn expired_root_is_named() {
    let s = release_signed_by(&["k1", "k2"]);
    let err = s.fails(&format!("{VERIFY} --at {}", in_days(400)));
    assert!(
        err.starts_with("error: release verify: root.json: trust root expired at "),
        "{err}"
    );
}
