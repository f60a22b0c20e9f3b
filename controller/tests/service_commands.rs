//! Commands through the real `swell-controller`: an operator asks for an install, a revert or
//! a cancel; the device's command topic receives a command signed by the controller role that
//! the trust root verifies, numbered above every earlier one, across a kill -9 too.

// Helpers outside #[test] functions panic on the unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod service_support;

use serde_json::json;
use service_support::*;
use swell_proto::messages::{Action, Command};
use swell_proto::topics::DeviceTopic;
use swell_proto::{DeviceId, Sha256Digest, TrustRoot};

fn provision(c: &Controller, id: &str, seed: u8, hardware: &str) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let r = c.post_json(
        "/v1/devices",
        OPERATOR_TOKEN,
        &json!({
            "id": id,
            "public_key": swell_proto::keys::pem::public_key_to_pem(&Keys::public(&key)).unwrap(),
            "hardware": hardware,
            "zone": "UTC",
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

/// Receives the next command on the subscribed topic and verifies it as the device would.
fn receive(mqtt: &Mqtt, root: &TrustRoot, device: &str) -> (u64, Command) {
    let p = mqtt.next_publish();
    let id = DeviceId::new(device).unwrap();
    assert_eq!(p.topic, DeviceTopic::Command.for_device(&id));
    let verified = root.verify_command(&p.payload, &id, now()).unwrap();
    (verified.seq, verified.message)
}

/// Install, revert and cancel commands arrive signed and numbered 1, 2, 3; after a kill -9
/// the next is 4; the audit log records each; commands the device would refuse, or for
/// devices that cannot take them, are refused to the operator instead.
#[test]
fn commands_are_signed_numbered_and_audited() {
    let fx = Fixture::new();
    let root = TrustRoot::from_trusted(&std::fs::read(fx.path("root.json")).unwrap()).unwrap();
    let c = fx.start();
    provision(&c, "gw-1", 11, "gw-x86");
    provision(&c, "gw-arm", 12, "gw-arm64");
    let img = image(50_000, 7);
    let m = manifest(
        &release_doc("gateway-os", "1.4.2", &img),
        now().plus_secs(86_400),
        &[&fx.keys.release],
    );
    upload(&c, "gateway-os", "1.4.2", &m, &img);

    let mqtt = Mqtt::connect(c.mqtt, "test-gw-1");
    mqtt.subscribe(&DeviceTopic::Command.for_device(&DeviceId::new("gw-1").unwrap()));

    let sent = c.post_json(
        "/v1/devices/gw-1/commands",
        OPERATOR_TOKEN,
        &json!({"kind": "install", "release": "gateway-os", "version": "1.4.2"}),
    );
    assert_eq!(sent.status, 202, "{}", sent.text());
    assert_eq!(sent.json()["command"], "gw-1.1");
    let (seq, cmd) = receive(&mqtt, &root, "gw-1");
    assert_eq!(seq, 1);
    assert_eq!(cmd.id, "gw-1.1");
    let Action::Install { manifest, url } = cmd.action else {
        panic!("not an install: {:?}", cmd.action)
    };
    assert_eq!(
        url,
        format!("{}/v1/artifacts/{}", c.http, Sha256Digest::of(&img))
    );
    let embedded = serde_json::to_vec(&manifest).unwrap();
    let release = root.verify_release(&embedded, now()).unwrap();
    assert_eq!(release.document().release_version.to_string(), "1.4.2");
    let fetched = c.request("GET", &url[c.http.len()..], None).send(&[]);
    assert_eq!(fetched.body, img);

    for (kind, n) in [("revert", 2), ("cancel", 3)] {
        let r = c.post_json(
            "/v1/devices/gw-1/commands",
            OPERATOR_TOKEN,
            &json!({"kind": kind}),
        );
        assert_eq!(r.status, 202, "{}", r.text());
        let (seq, cmd) = receive(&mqtt, &root, "gw-1");
        assert_eq!(seq, n);
        assert_eq!(cmd.id, format!("gw-1.{n}"));
    }

    // Refusals: wrong role, unknown fields, unknown device or release, wrong hardware.
    c.post_json(
        "/v1/devices/gw-1/commands",
        VIEWER_TOKEN,
        &json!({"kind": "revert"}),
    )
    .assert_error(403, "needs operator");
    c.post_json(
        "/v1/devices/gw-1/commands",
        OPERATOR_TOKEN,
        &json!({"kind": "revert", "now": true}),
    )
    .assert_error(422, "unknown field");
    c.post_json(
        "/v1/devices/gw-9/commands",
        OPERATOR_TOKEN,
        &json!({"kind": "revert"}),
    )
    .assert_error(404, "no device gw-9");
    c.post_json(
        "/v1/devices/gw-1/commands",
        OPERATOR_TOKEN,
        &json!({"kind": "install", "release": "gateway-os", "version": "9.9.9"}),
    )
    .assert_error(404, "no accepted release");
    c.post_json(
        "/v1/devices/gw-arm/commands",
        OPERATOR_TOKEN,
        &json!({"kind": "install", "release": "gateway-os", "version": "1.4.2"}),
    )
    .assert_error(409, "gw-arm64");

    // Numbers keep rising after a kill -9.
    drop(mqtt);
    c.kill();
    let c = fx.start();
    let mqtt = Mqtt::connect(c.mqtt, "test-gw-1b");
    mqtt.subscribe(&DeviceTopic::Command.for_device(&DeviceId::new("gw-1").unwrap()));
    let r = c.post_json(
        "/v1/devices/gw-1/commands",
        OPERATOR_TOKEN,
        &json!({"kind": "revert"}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let (seq, _) = receive(&mqtt, &root, "gw-1");
    assert_eq!(seq, 4);
    assert_eq!(c.metric("swell_commands_sent_total"), 1);

    // A revoked device gets no commands.
    let revoked = c.post_json(
        "/v1/devices/gw-1/revoke",
        ADMIN_TOKEN,
        &json!({"reason": "rma"}),
    );
    assert_eq!(revoked.status, 200);
    c.post_json(
        "/v1/devices/gw-1/commands",
        OPERATOR_TOKEN,
        &json!({"kind": "revert"}),
    )
    .assert_error(409, "revoked");

    let audit = c.get_json("/v1/audit", VIEWER_TOKEN);
    let sends: Vec<&serde_json::Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "command.send")
        .collect();
    assert_eq!(sends.len(), 4);
    assert_eq!(sends[0]["details"]["kind"], "install");
    assert_eq!(sends[0]["details"]["detail"]["version"], "1.4.2");
    assert_eq!(sends[3]["details"]["command"], "gw-1.4");
    assert_eq!(c.get_json("/v1/audit/verify", VIEWER_TOKEN)["ok"], true);
}
