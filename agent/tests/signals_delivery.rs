//! Health signals end to end on the device: a simulated board running a `noisy` image, the
//! agent's `[signals]` tailing the board's application log every second, its broker away.
//! Batches queue on disk; the board is killed (a power cut) with batches still queued; after
//! a restart with the broker up, the queued batches are published first, in order, the noisy
//! image's error shows up as its signature, the reboot is counted, and delivered batches are
//! deleted from the queue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use common::{Daemon, Device, Options, device_id, public, seed, wait_for};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use swell_agent::board::{APP_LOG, NOISY_LINE};
use swell_proto::messages::{Signals, open_device_message};
use swell_proto::signals::Signature;
use swell_proto::topics::DeviceTopic;

const LIMIT: Duration = Duration::from_secs(60);

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// rumqttd on `addr`, on a thread of its own for the rest of the test process.
fn start_broker(addr: SocketAddr) {
    let config = format!(
        "id = 0\n[router]\nid = 0\nmax_connections = 100\nmax_outgoing_packet_count = 200\n\
         max_segment_size = 104857600\nmax_segment_count = 10\n\
         [v4.1]\nname = \"v4\"\nlisten = \"{addr}\"\nnext_connection_delay_ms = 1\n\
         [v4.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 300000\n\
         max_inflight_count = 100\ndynamic_filters = true\n"
    );
    let config: rumqttd::Config = toml::from_str(&config).unwrap();
    std::thread::spawn(move || {
        let _ = rumqttd::Broker::new(config).start();
    });
    wait_for("the broker to listen", LIMIT, || {
        TcpStream::connect(addr).ok()
    });
}

/// A subscriber to the device's `signals` topic; batches arrive on the receiver, verified.
fn subscribe(addr: SocketAddr) -> mpsc::Receiver<(u64, Vec<u8>, Signals)> {
    let mut options = MqttOptions::new("test-controller", addr.ip().to_string(), addr.port());
    options.set_max_packet_size(300_000, 300_000);
    let (client, mut connection) = Client::new(options, 64);
    let topic = DeviceTopic::Signals.for_device(&device_id());
    client.subscribe(&topic, QoS::AtLeastOnce).unwrap();
    let (tx, rx) = mpsc::channel();
    let (subscribed_tx, subscribed) = mpsc::channel();
    std::thread::spawn(move || {
        let _client = client;
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let opened = open_device_message::<Signals>(
                        &p.payload,
                        &device_id(),
                        &public(seed::DEVICE),
                        common::now(),
                    )
                    .expect("a signals batch that does not verify");
                    if tx
                        .send((opened.seq, p.payload.to_vec(), opened.message))
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    subscribed.recv_timeout(LIMIT).unwrap();
    rx
}

/// The queued batch files, oldest first.
fn queued(data: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(data.join("signals"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

#[test]
fn queued_batches_survive_a_power_cut_and_carry_the_noisy_signature() {
    let addr = free_addr();
    let device = Device::new(Options {
        mqtt: Some(format!("mqtt://{addr}")),
        ..Options::default()
    });
    // The image in slot A is a noisy one.
    std::fs::write(
        &device.a,
        swell_agent::board::image("noisy", 64 * 1024, 0xfac7),
    )
    .unwrap();
    let log = device.board.join(APP_LOG);
    let mut options = device.options.clone();
    options.extra = format!(
        "[signals]\ninterval_secs = 1\n[[signals.log]]\npath = {}\npatterns = [\"ERROR\"]\n",
        serde_json::to_string(&log.display().to_string()).unwrap()
    );
    let device = Device { options, ..device };
    device.write_config();

    // No broker yet: batches pile up on disk.
    let mut board = Daemon::start(device.agent(&["board"]), &device.path().join("board-1.log"));
    let before = wait_for("three queued batches", LIMIT, || {
        let q = queued(&device.data);
        (q.len() >= 3).then_some(q)
    });
    board.kill("KILL");
    let before_cut = queued(&device.data);
    assert!(before_cut.len() >= before.len());
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(NOISY_LINE),
        "the noisy image logged nothing"
    );

    // Power back, broker up: the queue goes out, oldest first.
    start_broker(addr);
    let batches = subscribe(addr);
    let _board = Daemon::start(device.agent(&["board"]), &device.path().join("board-2.log"));
    let mut received = Vec::new();
    // The board writes the line behind a timestamp, which templating masks.
    let noisy = Signature::of_line(&format!("{} {NOISY_LINE}", common::now())).id;
    let deadline = std::time::Instant::now() + LIMIT;
    let mut saw_noise = false;
    let mut saw_reboot = false;
    while received.len() < before_cut.len() || !saw_noise || !saw_reboot {
        assert!(
            std::time::Instant::now() < deadline,
            "after {} batches: noisy signature seen {saw_noise}, reboot seen {saw_reboot}",
            received.len()
        );
        let (seq, payload, batch) = batches
            .recv_timeout(LIMIT)
            .expect("no more signals batches");
        saw_noise |= batch
            .signatures
            .iter()
            .any(|s| s.id == noisy && s.count >= 1);
        saw_reboot |= batch.counters.reboots == 1;
        received.push((seq, payload, batch));
    }
    // The batches queued before the cut come first, byte for byte and in order.
    for (queued, (_, payload, _)) in before_cut.iter().zip(&received) {
        assert_eq!(queued, payload);
    }
    let seqs: Vec<u64> = received.iter().map(|r| r.0).collect();
    common::assert_increasing(&seqs);
    // Consecutive batches of one run share their boundaries.
    let first_run: Vec<&Signals> = received
        .iter()
        .map(|r| &r.2)
        .filter(|b| b.boot == received[0].2.boot)
        .collect();
    assert!(first_run.windows(2).all(|w| w[0].end == w[1].start));
    // Delivered batches leave the queue.
    wait_for("the queued batches to be deleted", LIMIT, || {
        let now = queued(&device.data);
        (!before_cut.iter().any(|b| now.contains(b))).then_some(())
    });
}
