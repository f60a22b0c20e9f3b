//! Devices through the real `swell-controller` and its embedded broker: provisioning by public
//! key (with zone and cohort checks), the inventory updated from signed MQTT reports, and every
//! message that must not be believed dropped and counted: a forged signature, a replayed
//! sequence number, a report naming another device, an unknown device, a revoked device.

// Helpers outside #[test] functions panic on the unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod service_support;

use ed25519_dalek::SigningKey;
use serde_json::json;
use service_support::*;
use swell_proto::keys::pem;
use swell_proto::messages::{
    Heartbeat, Presence, Progress, ReleaseRef, Report, Running, Slot, UpdateState,
    sign_device_message,
};
use swell_proto::topics::DeviceTopic;
use swell_proto::{DeviceId, ReleaseName, SemVer};

fn device_key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[100 + n; 32])
}

fn provision_body(
    id: &str,
    key: &SigningKey,
    zone: &str,
    cohort: Option<&str>,
) -> serde_json::Value {
    let mut body = json!({
        "id": id,
        "public_key": pem::public_key_to_pem(&Keys::public(key)).unwrap(),
        "hardware": "gw-x86",
        "zone": zone,
        "tags": {"site": "berlin-1"},
    });
    if let Some(c) = cohort {
        body["cohort"] = c.into();
    }
    body
}

fn report(id: &str, state: UpdateState, version: &str, reason: Option<&str>) -> Report {
    Report {
        device: DeviceId::new(id).unwrap(),
        issued: now(),
        state,
        command: Some(format!("{id}.1")),
        target: Some(ReleaseRef {
            name: ReleaseName::new("gateway-os").unwrap(),
            version: SemVer::new("1.4.2").unwrap(),
        }),
        running: Running {
            release: Some(ReleaseName::new("gateway-os").unwrap()),
            version: Some(SemVer::new(version).unwrap()),
            slot: Slot::B,
            security_version: 3,
        },
        progress: Some(Progress {
            done: 10,
            total: 10,
        }),
        reason: reason.map(str::to_owned),
    }
}

fn topic(id: &str, kind: DeviceTopic) -> String {
    kind.for_device(&DeviceId::new(id).unwrap())
}

fn dropped(c: &Controller, reason: &str) -> u64 {
    c.metric(&format!(
        "swell_messages_dropped_total{{reason=\"{reason}\"}}"
    ))
}

/// Waits until the drop counter for `reason` reaches `n`.
fn wait_dropped(c: &Controller, reason: &str, n: u64) {
    eventually(&format!("{n} drop(s) for {reason}"), || {
        (dropped(c, reason) >= n).then_some(())
    });
    assert_eq!(dropped(c, reason), n, "{reason}");
}

/// Three devices are provisioned by public key, one in the canary cohort; invalid zones,
/// unknown fields, duplicate ids and reused keys are refused; lists filter by cohort, tag,
/// zone, state and version.
#[test]
fn provisioning_checks_zones_cohorts_and_uniqueness() {
    let fx = Fixture::new();
    let c = fx.start();
    for ((id, zone, cohort), i) in [
        ("gw-1", "Europe/Berlin", Some("canary")),
        ("gw-2", "America/New_York", None),
        ("gw-3", "Asia/Tokyo", None),
    ]
    .into_iter()
    .zip(0u8..)
    {
        let r = c.post_json(
            "/v1/devices",
            OPERATOR_TOKEN,
            &provision_body(id, &device_key(i), zone, cohort),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json()["state"], "unknown");
        assert_eq!(r.json()["provisioned_by"], "olga");
    }
    c.post_json(
        "/v1/devices",
        OPERATOR_TOKEN,
        &provision_body("gw-9", &device_key(9), "Mars/Olympus_Mons", None),
    )
    .assert_error(400, "not an IANA time zone");
    c.post_json(
        "/v1/devices",
        OPERATOR_TOKEN,
        &provision_body("gw-9", &device_key(9), "+02:00", None),
    )
    .assert_error(400, "not an IANA time zone");
    c.post_json(
        "/v1/devices",
        OPERATOR_TOKEN,
        &provision_body("gw-9", &device_key(9), "UTC", Some("can ary")),
    )
    .assert_error(400, "cohort");
    c.post_json(
        "/v1/devices",
        OPERATOR_TOKEN,
        &provision_body("gw-1", &device_key(9), "UTC", None),
    )
    .assert_error(409, "already exists");
    c.post_json(
        "/v1/devices",
        OPERATOR_TOKEN,
        &provision_body("gw-9", &device_key(0), "UTC", None),
    )
    .assert_error(409, "already registered to device gw-1");
    let mut extra = provision_body("gw-9", &device_key(9), "UTC", None);
    extra["colour"] = "blue".into();
    c.post_json("/v1/devices", OPERATOR_TOKEN, &extra)
        .assert_error(422, "unknown field");
    let mut bad_key = provision_body("gw-9", &device_key(9), "UTC", None);
    bad_key["public_key"] = "not a key".into();
    c.post_json("/v1/devices", OPERATOR_TOKEN, &bad_key)
        .assert_error(400, "public_key");
    c.request("POST", "/v1/devices", Some(OPERATOR_TOKEN))
        .header("Content-Type", "application/json")
        .send(&vec![b' '; 100 * 1024])
        .assert_error(413, "length limit");
    c.post_json(
        "/v1/devices",
        VIEWER_TOKEN,
        &provision_body("gw-9", &device_key(9), "UTC", None),
    )
    .assert_error(403, "needs operator");
    c.request("GET", "/v1/devices", None)
        .send(&[])
        .assert_error(401, "missing bearer token");

    let ids = |query: &str| -> Vec<String> {
        c.get_json(&format!("/v1/devices{query}"), VIEWER_TOKEN)["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(""), ["gw-1", "gw-2", "gw-3"]);
    assert_eq!(ids("?cohort=canary"), ["gw-1"]);
    assert_eq!(ids("?zone=Asia/Tokyo"), ["gw-3"]);
    assert_eq!(
        ids("?tag=site%3Dberlin-1&state=unknown"),
        ["gw-1", "gw-2", "gw-3"]
    );
    assert!(ids("?tag=site=paris").is_empty());
    assert!(ids("?version=1.0.0").is_empty());
    c.get("/v1/devices?state=flying", VIEWER_TOKEN)
        .assert_error(400, "not an update state");
    c.get("/v1/devices?colour=blue", VIEWER_TOKEN)
        .assert_error(400, "unknown query parameter");
    c.get("/v1/devices/gw-404", VIEWER_TOKEN)
        .assert_error(404, "no device gw-404");
    let shown = c.get_json("/v1/devices/gw-1", VIEWER_TOKEN);
    assert_eq!(shown["cohort"], "canary");
    assert_eq!(
        shown["keyid"],
        Keys::public(&device_key(0)).key_id().to_hex()
    );
}

/// Signed reports, heartbeats and presence published over MQTT update the inventory; a
/// forged report, a replay, a report naming another device, a message from an unknown device
/// and (after revocation) from a revoked device are dropped, counted and change nothing.
#[test]
fn mqtt_reports_update_the_inventory_and_bad_ones_are_dropped() {
    let fx = Fixture::new();
    let c = fx.start();
    for (id, i) in ["gw-1", "gw-2", "gw-3"].into_iter().zip(0u8..) {
        let cohort = (i == 0).then_some("canary");
        let r = c.post_json(
            "/v1/devices",
            OPERATOR_TOKEN,
            &provision_body(id, &device_key(i), "Europe/Berlin", cohort),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let mqtt = Mqtt::connect(c.mqtt, "test-device-sim");
    let key1 = device_key(0);
    let seq_base = 5u64 << 32;

    // gw-1 comes online and reports a committed update.
    let presence = Presence {
        device: DeviceId::new("gw-1").unwrap(),
        issued: now(),
        online: true,
        agent_version: "0.1.0".into(),
    };
    mqtt.publish(
        &topic("gw-1", DeviceTopic::Presence),
        sign_device_message(&presence, seq_base, now(), &key1).unwrap(),
        true,
    );
    let r = report("gw-1", UpdateState::Committed, "1.4.2", None);
    mqtt.publish(
        &topic("gw-1", DeviceTopic::Report),
        sign_device_message(&r, seq_base + 1, now(), &key1).unwrap(),
        false,
    );
    let shown = eventually("gw-1 committed", || {
        let d = c.get_json("/v1/devices/gw-1", VIEWER_TOKEN);
        (d["state"] == "committed").then_some(d)
    });
    assert_eq!(shown["online"], true);
    assert_eq!(shown["agent_version"], "0.1.0");
    assert_eq!(shown["running"]["version"], "1.4.2");
    assert_eq!(shown["running"]["slot"], "b");
    assert_eq!(shown["running"]["security_version"], 3);
    assert_eq!(shown["command"], "gw-1.1");
    assert_eq!(shown["progress"]["done"], 10);
    assert!(shown["last_seen"].is_string());
    assert_eq!(
        c.get_json(
            "/v1/devices?version=1.4.2&state=committed&cohort=canary",
            VIEWER_TOKEN
        )["devices"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // gw-2 fails with a reason, then sends a heartbeat.
    let key2 = device_key(1);
    let f = report(
        "gw-2",
        UpdateState::RolledBack,
        "1.4.1",
        Some("health check nginx failed"),
    );
    mqtt.publish(
        &topic("gw-2", DeviceTopic::Report),
        sign_device_message(&f, 7, now(), &key2).unwrap(),
        false,
    );
    let hb = Heartbeat {
        device: DeviceId::new("gw-2").unwrap(),
        issued: now(),
        uptime_s: 42,
        state: UpdateState::Idle,
        running: f.running.clone(),
        metrics: [("mem_kib".to_owned(), 2048)].into(),
    };
    mqtt.publish(
        &topic("gw-2", DeviceTopic::Health),
        sign_device_message(&hb, 8, now(), &key2).unwrap(),
        false,
    );
    let shown = eventually("gw-2 heartbeat", || {
        let d = c.get_json("/v1/devices/gw-2", VIEWER_TOKEN);
        (d["uptime_s"] == 42).then_some(d)
    });
    assert_eq!(shown["last_error"], "health check nginx failed");
    assert_eq!(shown["state"], "idle");
    assert_eq!(shown["metrics"]["mem_kib"], 2048);
    assert_eq!(
        c.metric("swell_messages_accepted_total{topic=\"report\"}"),
        2
    );

    // A forged report: gw-1's topic and name, signed with another key.
    let forged = report("gw-1", UpdateState::Failed, "6.6.6", Some("forged"));
    mqtt.publish(
        &topic("gw-1", DeviceTopic::Report),
        sign_device_message(&forged, seq_base + 50, now(), &fx.keys.other).unwrap(),
        false,
    );
    wait_dropped(&c, "signature", 1);
    // A replay: gw-1's genuine report again, same sequence number.
    mqtt.publish(
        &topic("gw-1", DeviceTopic::Report),
        sign_device_message(&r, seq_base + 1, now(), &key1).unwrap(),
        false,
    );
    wait_dropped(&c, "replay", 1);
    // An older sequence number, freshly signed by the genuine key, is a replay too.
    let older = report("gw-1", UpdateState::Failed, "1.0.0", Some("old"));
    mqtt.publish(
        &topic("gw-1", DeviceTopic::Report),
        sign_device_message(&older, seq_base, now(), &key1).unwrap(),
        false,
    );
    wait_dropped(&c, "replay", 2);
    // gw-2's key, gw-2 in the body, published on gw-1's topic: a report naming another device.
    let other = report("gw-2", UpdateState::Failed, "6.6.6", Some("elsewhere"));
    mqtt.publish(
        &topic("gw-1", DeviceTopic::Report),
        sign_device_message(&other, 1 << 40, now(), &key2).unwrap(),
        false,
    );
    // gw-1's key but naming gw-2 in the body, on gw-1's topic: also another device.
    let named = report("gw-2", UpdateState::Failed, "6.6.6", Some("named"));
    mqtt.publish(
        &topic("gw-1", DeviceTopic::Report),
        sign_device_message(&named, 1 << 40, now(), &key1).unwrap(),
        false,
    );
    wait_dropped(&c, "wrong_device", 1);
    wait_dropped(&c, "signature", 2);
    // An unknown device.
    let ghost = report("gw-404", UpdateState::Idle, "1.0.0", None);
    mqtt.publish(
        &topic("gw-404", DeviceTopic::Report),
        sign_device_message(&ghost, 1, now(), &device_key(40)).unwrap(),
        false,
    );
    wait_dropped(&c, "unknown_device", 1);
    // Garbage.
    mqtt.publish(
        &topic("gw-1", DeviceTopic::Report),
        b"{\"signed\":".to_vec(),
        false,
    );
    wait_dropped(&c, "malformed", 1);

    let d = c.get_json("/v1/devices/gw-1", VIEWER_TOKEN);
    assert_eq!(
        d["state"], "committed",
        "no dropped message changed the inventory"
    );
    assert_eq!(d["running"]["version"], "1.4.2");
    assert_eq!(d["last_error"], serde_json::Value::Null);

    // Revoke gw-3 (admin only): its genuine reports are dropped from then on.
    c.post_json(
        "/v1/devices/gw-3/revoke",
        OPERATOR_TOKEN,
        &json!({"reason": "stolen"}),
    )
    .assert_error(403, "needs admin");
    let revoked = c.post_json(
        "/v1/devices/gw-3/revoke",
        ADMIN_TOKEN,
        &json!({"reason": "stolen"}),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(revoked.json()["revoked"]["by"], "alice");
    c.post_json(
        "/v1/devices/gw-3/revoke",
        ADMIN_TOKEN,
        &json!({"reason": "again"}),
    )
    .assert_error(409, "already revoked");
    let key3 = device_key(2);
    let r3 = report("gw-3", UpdateState::Committed, "1.4.2", None);
    mqtt.publish(
        &topic("gw-3", DeviceTopic::Report),
        sign_device_message(&r3, 1, now(), &key3).unwrap(),
        false,
    );
    wait_dropped(&c, "revoked", 1);
    let d3 = c.get_json("/v1/devices/gw-3", VIEWER_TOKEN);
    assert_eq!(d3["state"], "unknown");
    assert_eq!(
        c.get_json("/v1/devices?revoked=true", VIEWER_TOKEN)["devices"][0]["id"],
        "gw-3"
    );
    assert_eq!(c.metric("swell_devices_revoked"), 1);

    // The sequence high-water marks survive a restart: the genuine report is still a replay,
    // and the retained presence the broker hands back is not counted as one.
    c.kill();
    let c = fx.start();
    let mqtt = Mqtt::connect(c.mqtt, "test-device-sim-2");
    mqtt.publish(
        &topic("gw-1", DeviceTopic::Report),
        sign_device_message(&r, seq_base + 1, now(), &key1).unwrap(),
        false,
    );
    wait_dropped(&c, "replay", 1);
    // gw-1 goes offline (its last will, the next sequence number).
    let offline = Presence {
        online: false,
        ..presence
    };
    mqtt.publish(
        &topic("gw-1", DeviceTopic::Presence),
        sign_device_message(&offline, seq_base + 2, now(), &key1).unwrap(),
        true,
    );
    eventually("gw-1 offline", || {
        (c.get_json("/v1/devices/gw-1", VIEWER_TOKEN)["online"] == false).then_some(())
    });
    // gw-2 reported and sent a heartbeat, so it counts as online; gw-1 no longer does.
    assert_eq!(c.metric("swell_devices_online"), 1);
    // The controller's own link: connected once, subscribed.
    assert_eq!(c.metric("swell_broker_connected"), 1);
    assert_eq!(c.metric("swell_broker_connections_total"), 1);
}
