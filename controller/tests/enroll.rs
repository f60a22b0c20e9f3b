//! Enrollment against the real controller: an admin makes tokens (swellctl), devices enroll
//! with them and their own public keys and get certificates; cohort and tags come from the
//! token; used-up, unknown and wrong-role tokens, an invalid zone, a taken id or key are clear
//! 4xx errors that store nothing; the token state and the devices survive a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod service_support;

use std::process::Command;

use serde_json::{Value, json};
use service_support::{ADMIN_TOKEN, Controller, Fixture, Keys, OPERATOR_TOKEN};
use swell_proto::keys::pem;

fn swellctl(home: &std::path::Path, url: &str, args: &[&str]) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_swellctl"))
        .args(args)
        .args(["--output", "json"])
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env("SWELL_CONTROLLER", url)
        .env("SWELL_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn public_pem(seed: u8) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    pem::public_key_to_pem(&Keys::public(&key)).unwrap()
}

fn application(token: &str, id: &str, seed: u8, zone: &str) -> Value {
    json!({
        "token": token, "id": id, "hardware": "gw-x86", "zone": zone,
        "tags": {"site": "device-says", "rack": "r1"}, "public_key": public_pem(seed),
    })
}

fn enroll(c: &Controller, body: &Value) -> service_support::Resp {
    c.request("POST", "/v1/enroll", None)
        .header("Content-Type", "application/json")
        .send(&serde_json::to_vec(body).unwrap())
}

fn device_count(c: &Controller) -> usize {
    c.get_json("/v1/devices", ADMIN_TOKEN)["devices"]
        .as_array()
        .unwrap()
        .len()
}

/// Two devices enroll with a two-use canary token; the third is refused; every refusal stores
/// nothing; all of it survives a restart.
#[test]
fn tokens_enroll_devices_and_run_out() {
    let fx = Fixture::new();
    let c = fx.start();
    let home = fx.dir.path();
    let t = swellctl(
        home,
        &c.http,
        &[
            "enroll-token",
            "create",
            "--cohort",
            "canary",
            "--tag",
            "site=north",
            "--ttl",
            "1h",
            "--uses",
            "2",
        ],
    );
    let token = t["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("swell-enroll-"), "{t}");
    assert_eq!(t["uses_left"], 2);
    assert_eq!(t["status"], "active");

    let r = enroll(&c, &application(&token, "gw-1", 21, "Europe/Berlin"));
    assert_eq!(r.status, 201, "{}", r.text());
    let body = r.json();
    assert!(
        body["certificate"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert_eq!(
        body["ca"].as_str().unwrap(),
        std::fs::read_to_string(fx.data_dir().join("ca/ca.pem")).unwrap()
    );
    assert_eq!(body["cohort"], "canary");
    // The token's tags win over the device's; the device's others are kept.
    assert_eq!(body["tags"], json!({"rack": "r1", "site": "north"}));

    // Refusals: each a clear 4xx, nothing stored.
    enroll(&c, &application(&token, "gw-x", 22, "Mars/Olympus")).assert_error(400, "zone");
    enroll(&c, &application(&token, "gw-1", 23, "Europe/Berlin")).assert_error(409, "gw-1");
    enroll(&c, &application(&token, "gw-y", 21, "Europe/Berlin")).assert_error(409, "public key");
    enroll(&c, &application("swell-enroll-nope", "gw-z", 24, "UTC"))
        .assert_error(401, "unknown enrollment token");
    let mut no_token = application(&token, "gw-z", 24, "UTC");
    no_token.as_object_mut().unwrap().remove("token");
    enroll(&c, &no_token).assert_error(401, "missing enrollment token");
    let mut unknown_field = application(&token, "gw-z", 24, "UTC");
    unknown_field["cohort"] = json!("vip");
    enroll(&c, &unknown_field).assert_error(422, "unknown field");
    assert_eq!(device_count(&c), 1);

    // The token as the bearer works too; then it is used up.
    let mut bearer = application(&token, "gw-2", 25, "America/New_York");
    bearer.as_object_mut().unwrap().remove("token");
    let r = c
        .request("POST", "/v1/enroll", Some(&token))
        .header("Content-Type", "application/json")
        .send(&serde_json::to_vec(&bearer).unwrap());
    assert_eq!(r.status, 201, "{}", r.text());
    enroll(&c, &application(&token, "gw-3", 26, "UTC")).assert_error(403, "no uses left");
    assert_eq!(device_count(&c), 2);

    // Only admins make or list tokens.
    c.post_json(
        "/v1/enroll-tokens",
        OPERATOR_TOKEN,
        &json!({"ttl_s": 60, "uses": 1}),
    )
    .assert_error(403, "admin");
    c.post_json(
        "/v1/enroll-tokens",
        ADMIN_TOKEN,
        &json!({"ttl_s": 0, "uses": 1}),
    )
    .assert_error(400, "ttl_s");

    // Audit: the token's creation and both enrollments, never the secret.
    let audit = c.get_json("/v1/audit", ADMIN_TOKEN).to_string();
    assert!(audit.contains("enroll_token.create"));
    assert_eq!(audit.matches("\"device.provision\"").count(), 2);
    assert!(audit.contains(&format!("enroll-token:{}", t["id"].as_str().unwrap())));
    assert!(!audit.contains(&token));

    // A restart loses nothing: the devices, and the token stays used up.
    c.kill();
    let c = Controller::start(&fx.config);
    assert_eq!(device_count(&c), 2);
    let canary = c.get_json("/v1/devices?cohort=canary", ADMIN_TOKEN);
    assert_eq!(canary["devices"].as_array().unwrap().len(), 2);
    enroll(&c, &application(&token, "gw-3", 26, "UTC")).assert_error(403, "no uses left");
    let list = swellctl(home, &c.http, &["enroll-token", "list"]);
    assert_eq!(list["tokens"][0]["uses_left"], 0);
    assert_eq!(list["tokens"][0]["status"], "used_up");
    c.kill();
}

/// Many devices race for a single-use token: exactly one gets in.
#[test]
fn a_token_is_never_over_used() {
    let fx = Fixture::new();
    let c = fx.start();
    let t = c.post_json(
        "/v1/enroll-tokens",
        ADMIN_TOKEN,
        &json!({"ttl_s": 600, "uses": 1}),
    );
    assert_eq!(t.status, 201, "{}", t.text());
    let token = t.json()["token"].as_str().unwrap().to_owned();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u8)
            .map(|i| {
                let (c, token) = (&c, &token);
                s.spawn(move || {
                    enroll(c, &application(token, &format!("race-{i}"), 40 + i, "UTC")).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [201, 403, 409].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(device_count(&c), 1);
    c.kill();
}
