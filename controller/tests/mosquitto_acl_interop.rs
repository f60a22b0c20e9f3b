//! Device confinement on a real Mosquitto configured by `swell-controller mosquitto-config`:
//! over TLS with client certificates from the controller's CA, device A (its own certificate)
//! publishes under device B's topics and under its own. Neither B nor the controller receives
//! the impostor's message; the controller receives A's own.
//!
//! Gated: runs only with `SWELL_INTEROP=1` (then the `mosquitto` binary is required; `.ci/run`
//! installs it). Without it the test says so and passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod service_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use rumqttc::tokio_rustls::rustls;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, Transport};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use service_support::{DEADLINE, Fixture, now};
use swell_controller::service::ca::DeviceCa;
use swell_proto::keys::pem;
use swell_proto::{DeviceId, PublicKey};

/// A received publish: topic and payload.
type Message = (String, Vec<u8>);

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn whoami() -> String {
    let o = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tls(ca: &Path, cert: &[u8], key: &[u8]) -> Transport {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&std::fs::read(ca).unwrap()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    Transport::Tls(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
}

/// A connected client whose received publishes (topic, payload) arrive on the receiver, and
/// whose SUBACKs count on the second one.
fn client(id: &str, port: u16, transport: Transport) -> (Client, Receiver<Message>, Receiver<()>) {
    let mut o = MqttOptions::new(id, "localhost", port);
    o.set_transport(transport);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = Client::new(o, 16);
    let (tx, rx) = mpsc::channel();
    let (acks, acks_rx) = mpsc::channel();
    let id = id.to_owned();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = acks.send(());
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("{id}: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    });
    (client, rx, acks_rx)
}

/// Messages on `rx` until one with `payload` arrives (which must within the deadline).
fn until(rx: &Receiver<Message>, payload: &[u8]) -> Vec<Message> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let m = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("timed out; saw {seen:?}"));
        let done = m.1 == payload;
        seen.push(m);
        if done {
            return seen;
        }
    }
}

#[test]
fn an_impostor_cannot_publish_under_another_device() {
    if std::env::var("SWELL_INTEROP").as_deref() != Ok("1") {
        eprintln!("skipped: set SWELL_INTEROP=1 (and install mosquitto) to run");
        return;
    }
    let fx = Fixture::new();
    let port = free_port();
    let out = fx.dir.path().join("mosquitto");
    let st = Command::new(env!("CARGO_BIN_EXE_swell-controller"))
        .args(["mosquitto-config", "--config"])
        .arg(&fx.config)
        .arg("--out")
        .arg(&out)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--host",
            "localhost",
        ])
        // Started by this test's user, mosquitto must stay that user to read server.key.
        .args(["--user", &whoami()])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let conf = out.join("mosquitto.conf");
    assert_eq!(
        String::from_utf8(st.stdout).unwrap().trim(),
        conf.display().to_string()
    );
    let _broker = Broker(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("SWELL_INTEROP=1 needs the mosquitto binary"),
    );
    service_support::eventually("mosquitto to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });

    // Device certificates from the same CA the controller made (its data_dir/ca).
    let ca = DeviceCa::open_or_create(&fx.data_dir().join("ca"), now()).unwrap();
    let device = |id: &str, seed: u8| {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let cert = ca
            .issue_device(
                &DeviceId::new(id).unwrap(),
                &PublicKey::from(key.verifying_key()),
                now(),
            )
            .unwrap();
        let key_pem = pem::private_key_to_pem(&key).unwrap();
        tls(&out.join("ca.pem"), cert.as_bytes(), key_pem.as_bytes())
    };
    let controller_tls = tls(
        &out.join("ca.pem"),
        &std::fs::read(out.join("controller.pem")).unwrap(),
        &std::fs::read(out.join("controller.key")).unwrap(),
    );

    let (ctl, ctl_rx, ctl_acks) = client("swell-controller", port, controller_tls);
    ctl.subscribe("swell/v1/devices/#", QoS::AtLeastOnce)
        .unwrap();
    let (b, b_rx, b_acks) = client("dev-b", port, device("dev-b", 2));
    b.subscribe("swell/v1/devices/dev-b/#", QoS::AtLeastOnce)
        .unwrap();
    ctl_acks.recv_timeout(DEADLINE).unwrap();
    b_acks.recv_timeout(DEADLINE).unwrap();

    let (a, _a_rx, _) = client("dev-a", port, device("dev-a", 1));
    a.publish(
        "swell/v1/devices/dev-b/report",
        QoS::AtLeastOnce,
        false,
        b"impostor".to_vec(),
    )
    .unwrap();
    a.publish(
        "swell/v1/devices/dev-a/report",
        QoS::AtLeastOnce,
        false,
        b"own".to_vec(),
    )
    .unwrap();
    // Mosquitto forwards one client's messages in order: once A's own message reached the
    // controller, the impostor's would have arrived before it.
    let seen = until(&ctl_rx, b"own");
    assert_eq!(
        seen,
        [("swell/v1/devices/dev-a/report".to_owned(), b"own".to_vec())],
        "the controller saw the impostor's message"
    );
    // B's subtree is reachable by the controller, and B saw nothing before that.
    ctl.publish(
        "swell/v1/devices/dev-b/cmd",
        QoS::AtLeastOnce,
        false,
        b"sentinel".to_vec(),
    )
    .unwrap();
    let seen = until(&b_rx, b"sentinel");
    assert_eq!(
        seen,
        [(
            "swell/v1/devices/dev-b/cmd".to_owned(),
            b"sentinel".to_vec()
        )],
        "device B received the impostor's message"
    );
}
