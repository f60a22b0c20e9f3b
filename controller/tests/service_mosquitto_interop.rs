//! The controller against an external broker (`broker.mode = "external"`): a Mosquitto process
//! this test starts on a free loopback port. Runs only with `SWELL_INTEROP=1`; then a missing
//! `mosquitto` binary is a failure.
//!
//! The test still uses ids unique to the run, clears the retained presence it published and
//! ends the controller's persistent session, so it stays correct against a shared broker too.

// Helpers outside #[test] functions panic on the unexpected, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod service_support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::json;
use service_support::*;
use swell_proto::messages::{Presence, Report, Running, Slot, UpdateState, sign_device_message};
use swell_proto::topics::DeviceTopic;
use swell_proto::{DeviceId, SemVer};

/// A Mosquitto process, killed when dropped.
struct Broker(std::process::Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Mosquitto on a free loopback port with a config written into `dir`.
fn mosquitto(dir: &std::path::Path) -> (Broker, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let child = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("SWELL_INTEROP=1 needs the mosquitto binary");
    let broker = Broker(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually("mosquitto to listen", || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()
    });
    (broker, addr)
}

/// Ends the persistent session of `client_id` (a clean-session connect discards it).
fn end_session(addr: SocketAddr, client_id: &str) {
    let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_clean_session(true);
    let (client, mut connection) = rumqttc::Client::new(options, 8);
    for event in connection.iter() {
        if matches!(
            event,
            Ok(rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_))) | Err(_)
        ) {
            break;
        }
    }
    let _ = client.disconnect();
}

/// With Mosquitto as the broker, a provisioned device's signed presence and report update the
/// inventory, a forged report is dropped, and commands reach the device's topic.
#[test]
fn inventory_updates_through_mosquitto() {
    if std::env::var_os("SWELL_INTEROP").is_none() {
        eprintln!("skipped: set SWELL_INTEROP=1");
        return;
    }
    let broker_dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = mosquitto(broker_dir.path());
    let run = format!("{}-{}", std::process::id(), now().unix());
    let client_id = format!("swell-controller-test-{run}");
    let fx = Fixture::with_broker(
        &format!("mode = \"external\"\nurl = \"mqtt://{addr}\"\nclient_id = \"{client_id}\""),
        "",
    );
    let c = fx.start();
    let id = format!("gw-{run}");
    let device = DeviceId::new(&id).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
    let r = c.post_json(
        "/v1/devices",
        OPERATOR_TOKEN,
        &json!({
            "id": id,
            "public_key": swell_proto::keys::pem::public_key_to_pem(&Keys::public(&key)).unwrap(),
            "hardware": "gw-x86",
            "zone": "Europe/Lisbon",
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    let mqtt = Mqtt::connect(addr, &format!("sim-{run}"));
    mqtt.subscribe(&DeviceTopic::Command.for_device(&device));
    let presence = Presence {
        device: device.clone(),
        issued: now(),
        online: true,
        agent_version: "0.1.0".into(),
    };
    let presence_topic = DeviceTopic::Presence.for_device(&device);
    mqtt.publish(
        &presence_topic,
        sign_device_message(&presence, 1, now(), &key).unwrap(),
        true,
    );
    let report = Report {
        device: device.clone(),
        issued: now(),
        state: UpdateState::Idle,
        command: None,
        target: None,
        running: Running {
            release: None,
            version: Some(SemVer::new("2.0.0").unwrap()),
            slot: Slot::A,
            security_version: 0,
        },
        progress: None,
        reason: None,
    };
    let report_topic = DeviceTopic::Report.for_device(&device);
    let forged = sign_device_message(&report, 2, now(), &fx.keys.other).unwrap();
    mqtt.publish(&report_topic, forged, false);
    mqtt.publish(
        &report_topic,
        sign_device_message(&report, 3, now(), &key).unwrap(),
        false,
    );
    let shown = eventually("the report through Mosquitto", || {
        let d = c.get_json(&format!("/v1/devices/{id}"), VIEWER_TOKEN);
        (d["state"] == "idle").then_some(d)
    });
    assert_eq!(shown["online"], true);
    assert_eq!(shown["running"]["version"], "2.0.0");
    assert_eq!(
        c.metric("swell_messages_dropped_total{reason=\"signature\"}"),
        1
    );

    let sent = c.post_json(
        &format!("/v1/devices/{id}/commands"),
        OPERATOR_TOKEN,
        &json!({"kind": "cancel"}),
    );
    assert_eq!(sent.status, 202, "{}", sent.text());
    let p = mqtt.next_publish();
    let root = swell_proto::TrustRoot::from_trusted(&fx.keys.root_json()).unwrap();
    assert_eq!(
        root.verify_command(&p.payload, &device, now()).unwrap().seq,
        1
    );

    // Leave Mosquitto as it was: no retained presence, no persistent controller session.
    mqtt.publish(&presence_topic, Vec::new(), true);
    c.kill();
    end_session(addr, &client_id);
}
