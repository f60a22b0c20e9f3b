//! `--output json`: every show and verify command prints one JSON object with the fields a
//! script needs, and nothing else on standard output.

mod common;

use common::{Scratch, pseudo_random};
use serde_json::Value;

fn json(s: &Scratch, line: &str) -> Value {
    let out = s.ok(&format!("{line} --output json"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{line}: not JSON ({e}):\n{out}"))
}

/// Release verify and show report name, versions, hardware, artifacts, signers, expiry, the
/// root, the image and the admission in JSON.
#[test]
fn release_reports_are_json() {
    let s = Scratch::new();
    let k1 = s.key("k1");
    s.root_with_release_keys(&["k1"], 1);
    let image = pseudo_random(4096, 3);
    s.write("app.img", &image);
    let created = json(
        &s,
        "release create --image app.img --name os --version 1.2.3 --security-version 9 \
         --hardware hw-a --expires 2098-05-06T07:08:09Z --key k1.pem",
    );
    assert_eq!(created["manifest"], "app.img.manifest.json");
    assert_eq!(created["signatures"], serde_json::json!([k1]));

    let v = json(
        &s,
        "release verify app.img.manifest.json --root root.json --image app.img --hardware hw-a",
    );
    assert_eq!(v["verified"], true);
    assert_eq!(v["name"], "os");
    assert_eq!(v["version"], "1.2.3");
    assert_eq!(v["security_version"], 9);
    assert_eq!(v["hardware"], serde_json::json!(["hw-a"]));
    assert_eq!(v["expires"], "2098-05-06T07:08:09Z");
    assert_eq!(v["expired"], false);
    assert_eq!(v["manifest_version"], 1);
    assert_eq!(v["signed_by"], serde_json::json!([k1]));
    assert_eq!(v["root"]["file"], "root.json");
    assert_eq!(v["root"]["version"], 1);
    let digest = swell_proto::Sha256Digest::of(&image).to_hex();
    assert_eq!(
        v["artifacts"],
        serde_json::json!([{ "target": "rootfs", "size": 4096, "sha256": digest }])
    );
    assert_eq!(v["image"]["file"], "app.img");
    assert_eq!(v["image"]["sha256"], digest);
    assert_eq!(v["admitted"]["hardware"], "hw-a");
    assert_eq!(v["admitted"]["installed_security_version"], 0);
    assert_eq!(v["manifest_digest"].as_str().unwrap().len(), 64);

    let shown = json(&s, "release show app.img.manifest.json");
    assert_eq!(shown["verified"], false);
    assert!(shown.get("signed_by").is_none());
    assert_eq!(shown["manifest_digest"], v["manifest_digest"]);
}

/// Root verify and show report version, expiry and each role's threshold and key ids.
#[test]
fn root_reports_are_json() {
    let s = Scratch::new();
    let k1 = s.key("k1");
    s.root_with_release_keys(&["k1"], 1);
    let r1 = s.ok("key id r1.pem").trim().to_owned();
    let v = json(&s, "root verify root.json");
    assert_eq!(v["file"], "root.json");
    assert_eq!(v["verified"], true);
    assert_eq!(v["version"], 1);
    assert_eq!(v["expired"], false);
    assert!(v["expires"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        v["roles"],
        serde_json::json!([
            { "name": "root", "threshold": 1, "keyids": [r1] },
            { "name": "release", "threshold": 1, "keyids": [k1] },
            { "name": "controller", "threshold": 1, "keyids": [r1] },
        ])
    );
    assert_eq!(v["signed_by"], serde_json::json!([r1]));
    let shown = json(&s, "root show root.json");
    assert_eq!(shown["verified"], false);
    assert_eq!(shown["roles"], v["roles"]);
    assert_eq!(shown["signatures"], serde_json::json!([r1]));
}

/// Key commands report the key id (and files) in JSON.
#[test]
fn key_reports_are_json() {
    let s = Scratch::new();
    let g = json(&s, "key generate --out k");
    assert_eq!(g["private_key"], "k.pem");
    assert_eq!(g["public_key"], "k.pub.pem");
    let id = json(&s, "key id k.pub.pem");
    assert_eq!(id["keyid"], g["keyid"]);
}

/// A failing command with `--output json` still prints its one error line on standard error
/// and nothing on standard output.
#[test]
fn failures_stay_on_stderr() {
    let s = Scratch::new();
    let err = s.fails("root show missing.json --output json");
    assert_eq!(
        err,
        "error: root show: cannot read missing.json: No such file or directory (os error 2)"
    );
}
