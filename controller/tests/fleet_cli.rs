//! `swellctl`'s fleet commands against the real controller: device provision, list (with
//! filters), show and revoke; release upload, list and show; audit list and verify; every list
//! and show in `--output json`; failures as one line on stderr with exit status 1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod service_support;

use std::process::Command;

use service_support::{
    ADMIN_TOKEN, Fixture, Keys, VIEWER_TOKEN, failed, image, json, manifest, now, ok, release_doc,
    swellctl,
};
use swell_proto::keys::pem;

/// Runs swellctl with `args`, the controller's URL and `token` in the environment, and a home
/// directory without a config file.
/// Provision two devices, filter them, show one, revoke it; the table and JSON forms agree.
#[test]
fn devices_provision_list_show_revoke() {
    let fx = Fixture::new();
    let c = fx.start();
    let home = fx.dir.path();
    let url = c.http.as_str();
    for (id, seed, cohort) in [("gw-1", 11u8, Some("canary")), ("gw-2", 12, None)] {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let path = home.join(format!("{id}.pub.pem"));
        std::fs::write(&path, pem::public_key_to_pem(&Keys::public(&key)).unwrap()).unwrap();
        let mut args = vec![
            "device",
            "provision",
            "--id",
            id,
            "--public-key",
            path.to_str().unwrap(),
            "--hardware",
            "gw-x86",
            "--zone",
            "Europe/Berlin",
            "--tag",
            "site=north",
        ];
        if let Some(cohort) = cohort {
            args.extend(["--cohort", cohort]);
        }
        let out = ok(&swellctl(home, url, ADMIN_TOKEN, &args));
        assert!(out.contains("id ") && out.contains(id), "{out}");
    }
    let all = json(&swellctl(
        home,
        url,
        VIEWER_TOKEN,
        &["device", "list", "--output", "json"],
    ));
    assert_eq!(all["devices"].as_array().unwrap().len(), 2);
    let canary = json(&swellctl(
        home,
        url,
        VIEWER_TOKEN,
        &[
            "device",
            "list",
            "--cohort",
            "canary",
            "--tag",
            "site=north",
            "--output",
            "json",
        ],
    ));
    let ids: Vec<&str> = canary["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gw-1"]);
    let table = ok(&swellctl(
        home,
        url,
        VIEWER_TOKEN,
        &["device", "list", "--zone", "Europe/Berlin"],
    ));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID"), "{table}");
    assert!(
        lines[1].starts_with("gw-1") && lines[1].contains("canary"),
        "{table}"
    );
    assert!(lines[2].starts_with("gw-2"), "{table}");
    let none = ok(&swellctl(
        home,
        url,
        VIEWER_TOKEN,
        &["device", "list", "--state", "committed"],
    ));
    assert_eq!(none.trim(), "no devices");

    let shown = json(&swellctl(
        home,
        url,
        VIEWER_TOKEN,
        &["device", "show", "gw-1", "--output", "json"],
    ));
    assert_eq!(shown["zone"], "Europe/Berlin");
    assert_eq!(shown["tags"]["site"], "north");

    // A viewer may not revoke; an admin may, once.
    let err = failed(&swellctl(
        home,
        url,
        VIEWER_TOKEN,
        &["device", "revoke", "gw-2"],
    ));
    assert!(
        err.contains("device revoke") && err.contains("HTTP 403"),
        "{err}"
    );
    let revoked = json(&swellctl(
        home,
        url,
        ADMIN_TOKEN,
        &[
            "device", "revoke", "gw-2", "--reason", "stolen", "--output", "json",
        ],
    ));
    assert_eq!(revoked["revoked"]["reason"], "stolen");
    let err = failed(&swellctl(
        home,
        url,
        ADMIN_TOKEN,
        &["device", "revoke", "gw-2"],
    ));
    assert!(
        err.contains("already revoked") && err.contains("HTTP 409"),
        "{err}"
    );
    let listed = ok(&swellctl(home, url, VIEWER_TOKEN, &["device", "list"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("gw-2") && l.contains("revoked")),
        "{listed}"
    );

    // Refusals are the server's reason, one line.
    let err = failed(&swellctl(
        home,
        url,
        VIEWER_TOKEN,
        &["device", "show", "nope"],
    ));
    assert_eq!(err.trim(), "error: device show: no device nope (HTTP 404)");
    let err = failed(&swellctl(
        home,
        url,
        ADMIN_TOKEN,
        &[
            "device",
            "provision",
            "--id",
            "gw-3",
            "--public-key",
            home.join("gw-1.pub.pem").to_str().unwrap(),
            "--hardware",
            "gw-x86",
            "--zone",
            "Mars/Olympus",
        ],
    ));
    assert!(err.contains("zone") && err.contains("HTTP 400"), "{err}");
    let err = failed(&swellctl(home, url, "wrong", &["device", "list"]));
    assert!(
        err.contains("unknown token") && err.contains("HTTP 401"),
        "{err}"
    );
    c.kill();
}

/// Upload a release (manifest, then the streamed image), list and show it; a tampered
/// manifest is refused with the controller's reason and nothing is stored.
#[test]
fn releases_upload_list_show() {
    let fx = Fixture::new();
    let c = fx.start();
    let home = fx.dir.path();
    let url = c.http.as_str();
    let img = image(300_000, 7);
    let doc = release_doc("gateway-os", "1.4.2", &img);
    let m = manifest(&doc, now().plus_secs(86_400), &[&fx.keys.release]);
    std::fs::write(home.join("app.img"), &img).unwrap();
    std::fs::write(home.join("app.img.manifest.json"), &m).unwrap();
    let mut tampered: serde_json::Value = serde_json::from_slice(&m).unwrap();
    tampered["signed"]["security_version"] = 9.into();
    std::fs::write(
        home.join("bad.json"),
        serde_json::to_vec(&tampered).unwrap(),
    )
    .unwrap();

    let man = home.join("app.img.manifest.json");
    let imgp = home.join("app.img");
    let bad = home.join("bad.json");
    let err = failed(&swellctl(
        home,
        url,
        ADMIN_TOKEN,
        &[
            "release",
            "upload",
            bad.to_str().unwrap(),
            imgp.to_str().unwrap(),
        ],
    ));
    assert!(
        err.contains("release upload") && err.contains("HTTP 422"),
        "{err}"
    );
    let empty = ok(&swellctl(home, url, VIEWER_TOKEN, &["release", "list"]));
    assert_eq!(empty.trim(), "no releases");

    let up = json(&swellctl(
        home,
        url,
        ADMIN_TOKEN,
        &[
            "release",
            "upload",
            man.to_str().unwrap(),
            imgp.to_str().unwrap(),
            "--output",
            "json",
        ],
    ));
    assert_eq!(up["name"], "gateway-os");
    assert_eq!(up["artifacts"][0]["size"], 300_000);
    let list = json(&swellctl(
        home,
        url,
        VIEWER_TOKEN,
        &["release", "list", "--output", "json"],
    ));
    assert_eq!(list["releases"][0]["version"], "1.4.2");
    let table = ok(&swellctl(home, url, VIEWER_TOKEN, &["release", "list"]));
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("gateway-os  1.4.2"),
        "{table}"
    );
    let shown = json(&swellctl(
        home,
        url,
        VIEWER_TOKEN,
        &["release", "show", "gateway-os", "1.4.2", "--output", "json"],
    ));
    assert_eq!(shown["accepted_by"], "alice");
    // The served artifact is the uploaded image.
    let served = ureq::get(shown["artifacts"][0]["url"].as_str().unwrap())
        .call()
        .unwrap()
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()
        .unwrap();
    assert_eq!(served, img);
    // The local form of `release show` still reads a file.
    let local = ok(&swellctl(
        home,
        url,
        VIEWER_TOKEN,
        &["release", "show", man.to_str().unwrap()],
    ));
    assert!(local.contains("gateway-os"), "{local}");
    c.kill();
}

/// The audit log lists what was done and verifies.
#[test]
fn audit_list_and_verify() {
    let fx = Fixture::new();
    let c = fx.start();
    let home = fx.dir.path();
    let url = c.http.as_str();
    let list = json(&swellctl(
        home,
        url,
        VIEWER_TOKEN,
        &["audit", "list", "--output", "json"],
    ));
    assert_eq!(list["entries"][0]["action"], "controller.start");
    let table = ok(&swellctl(home, url, VIEWER_TOKEN, &["audit", "list"]));
    assert!(
        table.lines().nth(1).unwrap().contains("controller.start"),
        "{table}"
    );
    let v = json(&swellctl(
        home,
        url,
        VIEWER_TOKEN,
        &["audit", "verify", "--output", "json"],
    ));
    assert_eq!(v["ok"], true);
    let t = ok(&swellctl(home, url, VIEWER_TOKEN, &["audit", "verify"]));
    assert!(t.starts_with("ok       yes"), "{t}");
    c.kill();
}

/// Without a controller URL, or with one nobody listens on, the failure is one clear line.
#[test]
fn connection_failures_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_swellctl"))
        .args(["device", "list"])
        .env("HOME", dir.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("SWELL_CONTROLLER")
        .env_remove("SWELL_TOKEN")
        .output()
        .unwrap();
    let err = failed(&o);
    assert!(err.contains("no controller URL"), "{err}");
    // A config file supplies it; port 9 on loopback refuses connections.
    let cfg = dir.path().join(".config/swell");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("swellctl.toml"),
        "controller = \"http://127.0.0.1:9\"\ntoken = \"t\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_swellctl"))
        .args(["release", "list"])
        .env("HOME", dir.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("SWELL_CONTROLLER")
        .env_remove("SWELL_TOKEN")
        .output()
        .unwrap();
    let err = failed(&o);
    assert!(
        err.contains("cannot reach the controller at http://127.0.0.1:9"),
        "{err}"
    );
}
