//! The agent against a real Mosquitto broker (interop suite): the simulated board runs the
//! agent daemon, a test client (rumqttc) plays the controller's side of the topics.
//!
//! Gated: runs only with `SWELL_INTEROP=1` (then a missing `mosquitto` is a failure). Each
//! test starts its own `mosquitto` on a free loopback port with a generated configuration and
//! stops it at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Daemon, Device, Options, Release, install_command, release, wait_for};
use rumqttc::{Client, Event, MqttOptions, Packet, Publish, QoS};
use support::{Behaviour, TestServer};
use swell_agent::update::State;
use swell_proto::messages::{Action, Presence, Report, Slot, UpdateState, open_device_message};
use swell_proto::topics::DeviceTopic;

/// How long any one expected message may take to arrive.
const LIMIT: Duration = Duration::from_secs(30);

fn enabled() -> bool {
    if std::env::var_os("SWELL_INTEROP").is_some_and(|v| v == "1") {
        return true;
    }
    println!("skipped: set SWELL_INTEROP=1");
    false
}

/// The `mosquitto` binary (Debian installs it in /usr/sbin, often not on a user's PATH).
fn mosquitto_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
        .expect("SWELL_INTEROP=1 but no `mosquitto` binary (apt-get install mosquitto)")
}

/// A free loopback port (the listener is closed again for the broker to take).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A Mosquitto broker of the test's own, listening on 127.0.0.1 only. Persistence is on (in
/// the test's directory) so that a broker restart keeps the sessions, as a production broker
/// does, unless the broker is [`Broker::volatile`]; the broker runs as the test's user.
struct Broker {
    daemon: Option<Daemon>,
    port: u16,
    dir: PathBuf,
    persistent: bool,
}

impl Broker {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, true)
    }

    /// A broker without persistence: a restart loses every session.
    fn volatile(dir: &Path) -> Self {
        Self::start_with(dir, false)
    }

    fn start_with(dir: &Path, persistent: bool) -> Self {
        let mut broker = Self {
            daemon: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            persistent,
        };
        broker.restart();
        broker
    }

    /// Starts the broker (again) on the same port and waits until it accepts connections.
    fn restart(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        let mut text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence {}\n\
             persistence_location {}/\nlog_dest stderr\nlog_type error\nlog_type warning\n",
            self.port,
            self.persistent,
            self.dir.display()
        );
        if is_root() {
            // Otherwise mosquitto drops to the `mosquitto` user, which cannot write here.
            text.push_str("user root\n");
        }
        std::fs::write(&conf, text).unwrap();
        let mut cmd = Command::new(mosquitto_binary());
        cmd.arg("-c").arg(&conf);
        let mut daemon = Daemon::start(cmd, &self.dir.join("mosquitto.log"));
        let addr = ("127.0.0.1", self.port);
        wait_for("mosquitto to listen", LIMIT, || {
            assert!(daemon.running(), "mosquitto exited: {}", daemon.log());
            TcpStream::connect(addr).ok()
        });
        self.daemon = Some(daemon);
    }

    /// Stops the broker as a service manager would (SIGTERM: it saves its sessions).
    fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill("TERM");
        }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

/// The controller's side: a persistent MQTT session subscribed to everything under the
/// device's subtree, which also publishes commands. Received messages arrive on a channel.
struct Controller {
    client: Client,
    messages: mpsc::Receiver<Publish>,
    /// Every report received, by sequence number.
    seen: Mutex<BTreeMap<u64, Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Controller {
    /// Connects as client `id` (each client its own id: a broker drops the older of two
    /// connections with one id).
    fn connect(port: u16, id: &str) -> Self {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_clean_session(false);
        let (client, mut connection) = Client::new(options, 64);
        let (tx, messages) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let topic = format!("swell/v1/devices/{}/#", common::DEVICE);
        let thread = {
            let (client, stop) = (client.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match connection.recv_timeout(Duration::from_millis(200)) {
                        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                            // (Re)subscribe on every connection; the persistent session
                            // keeps queued messages across a broker restart.
                            let _ = client.try_subscribe(topic.as_str(), QoS::AtLeastOnce);
                        }
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                            let _ = tx.send(p);
                        }
                        Ok(Ok(_)) | Err(_) => {}
                        // The broker is down: rumqttc reconnects on the next poll; pace it.
                        Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })
        };
        Self {
            client,
            messages,
            seen: Mutex::default(),
            stop,
            thread: Some(thread),
        }
    }

    /// Publishes a command for the device (QoS 1, not retained).
    fn send(&self, payload: &[u8]) {
        let topic = DeviceTopic::Command.for_device(&common::device_id());
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .unwrap();
    }

    /// The next message on the device's `suffix` topic (others are skipped).
    fn next_on(&self, topic: DeviceTopic) -> Publish {
        let want = topic.for_device(&common::device_id());
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let p = self
                .messages
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no message on {want} within {LIMIT:?}"));
            if p.topic == want {
                return p;
            }
        }
    }

    /// Waits until this client's subscription is in place on the broker: a probe it publishes
    /// under the device's subtree comes back to it.
    fn wait_subscribed(&self) {
        let topic = format!("swell/v1/devices/{}/probe", common::DEVICE);
        let deadline = Instant::now() + LIMIT;
        loop {
            self.client
                .publish(topic.as_str(), QoS::AtMostOnce, false, b"probe".to_vec())
                .unwrap();
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "not subscribed within {LIMIT:?}");
            if let Ok(p) = self
                .messages
                .recv_timeout(left.min(Duration::from_millis(200)))
                && p.topic == topic
            {
                return;
            }
        }
    }

    /// New reports until one in state `last` (inclusive), each verified with the device key.
    ///
    /// Reports are delivered at least once: one the broker received but whose PUBACK the
    /// agent had not processed when it rebooted (or lost the broker) is sent again from the
    /// journal's outbox. A controller drops a report whose sequence number it has seen; so
    /// does this, after checking that the bytes are the same signed report.
    fn reports_until(&self, last: UpdateState) -> Vec<(u64, Report)> {
        let mut out: Vec<(u64, Report)> = Vec::new();
        loop {
            let p = self.next_on(DeviceTopic::Report);
            let (seq, report) = common::verify_report(&p.payload);
            let mut seen = self.seen.lock().unwrap();
            if let Some(earlier) = seen.get(&seq) {
                assert_eq!(
                    earlier.as_slice(),
                    &p.payload[..],
                    "two different reports with sequence number {seq}"
                );
                continue;
            }
            seen.insert(seq, p.payload.to_vec());
            let done = report.state == last;
            out.push((seq, report));
            if done {
                return out;
            }
        }
    }

    /// The next presence message, verified with the device key, and its retain flag.
    fn presence(&self) -> (u64, Presence, bool) {
        let p = self.next_on(DeviceTopic::Presence);
        let opened = open_device_message::<Presence>(
            &p.payload,
            &common::device_id(),
            &common::public(common::seed::DEVICE),
            common::now(),
        )
        .unwrap();
        (opened.seq, opened.message, p.retain)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A broker, the controller's client, and a device whose board runs the agent daemon.
struct Rig {
    broker: Broker,
    controller: Controller,
    device: Device,
    board: Daemon,
}

impl Rig {
    fn start(options: Options) -> Self {
        let scratch = tempfile::tempdir().unwrap().keep();
        let broker = Broker::start(&scratch);
        let controller = Controller::connect(broker.port, "test-controller");
        let device = Device::new(Options {
            mqtt: Some(broker.url()),
            ..options
        });
        let board = Daemon::start(device.agent(&["board"]), &device.path().join("board.log"));
        let rig = Self {
            broker,
            controller,
            device,
            board,
        };
        // The agent subscribes to its commands before it announces itself online.
        let (_, presence, _) = rig.controller.presence();
        assert!(presence.online, "{presence:?}");
        rig
    }

    /// Installs `release` through a command with `seq`, served by `server`.
    fn command_install(&self, seq: u64, release: &Release, server: &TestServer) -> Vec<u8> {
        let command = install_command(seq, &format!("c-{seq}"), release, &server.url());
        self.controller.send(&command);
        command
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // SIGINT is Ctrl-C: the agent shuts down cleanly, then the broker stops.
        if self.board.running() {
            self.board.kill("INT");
        }
        self.broker.stop();
        let _ = std::fs::remove_dir_all(&self.broker.dir);
    }
}

fn states(reports: &[(u64, Report)]) -> Vec<UpdateState> {
    reports.iter().map(|(_, r)| r.state).collect()
}

fn seqs(reports: &[(u64, Report)]) -> Vec<u64> {
    reports.iter().map(|(s, _)| *s).collect()
}

/// (a) The agent connects and publishes a retained "online" presence; a signed install
/// command makes it install, and the controller sees `downloading`, `verifying`, `installed`,
/// `trial`, `committed` in that order, each signed by the device with rising sequence numbers,
/// the last naming the new version in slot B.
#[test]
fn a_command_installs_and_every_state_is_reported() {
    if !enabled() {
        return;
    }
    let rig = Rig::start(Options::default());
    // A late subscriber still learns that the device is online: the presence is retained.
    let late = Controller::connect(rig.broker.port, "test-late-subscriber");
    let (_, presence, retained) = late.presence();
    assert!(
        presence.online && retained,
        "{presence:?} retained={retained}"
    );
    drop(late);

    let v1 = release("1.0.0", 1, "healthy", 1 << 20).build();
    let server = TestServer::start(v1.image.clone(), Behaviour::Normal);
    rig.command_install(1, &v1, &server);
    let reports = rig.controller.reports_until(UpdateState::Committed);
    assert_eq!(
        states(&reports),
        [
            UpdateState::Downloading,
            UpdateState::Verifying,
            UpdateState::Installed,
            UpdateState::Trial,
            UpdateState::Committed,
        ]
    );
    common::assert_increasing(&seqs(&reports));
    for (_, r) in &reports {
        assert_eq!(r.command.as_deref(), Some("c-1"));
    }
    let (_, committed) = reports.last().unwrap();
    assert_eq!(
        (
            committed.running.version.as_ref().map(ToString::to_string),
            committed.running.slot
        ),
        (Some("1.0.0".to_string()), Slot::B)
    );
    // Every report was acknowledged by the broker, so none is left in the outbox.
    wait_for("the outbox to empty", LIMIT, || {
        rig.device.journal().outbox.is_empty().then_some(())
    });
}

/// (b) The same command delivered again (a QoS 1 redelivery or a replay of its bytes) does
/// not start a second install. The next command (seq 2, a cancel, refused because nothing is
/// in progress) is the barrier: commands are handled in order, so once its answer arrives
/// the replay has been handled, and nothing but that answer was reported in between.
#[test]
fn a_replayed_command_does_not_install_twice() {
    if !enabled() {
        return;
    }
    let rig = Rig::start(Options::default());
    let v1 = release("1.0.0", 1, "healthy", 1 << 20).build();
    let server = TestServer::start(v1.image.clone(), Behaviour::Normal);
    let command = rig.command_install(1, &v1, &server);
    let first = rig.controller.reports_until(UpdateState::Committed);

    rig.controller.send(&command);
    rig.controller
        .send(&common::command(2, "c-2", Action::Cancel));
    let after = rig.controller.reports_until(UpdateState::Failed);
    assert_eq!(states(&after), [UpdateState::Failed], "{after:?}");
    let (_, refusal) = &after[0];
    assert_eq!(refusal.command.as_deref(), Some("c-2"));
    let reason = refusal.reason.as_deref().unwrap();
    assert!(reason.contains("cancel is not allowed"), "{reason}");
    // The refusal reports what runs: still 1.0.0, committed.
    assert_eq!(
        refusal.running.version.as_ref().map(ToString::to_string),
        Some("1.0.0".to_string())
    );
    assert_eq!(server.requests().len(), 1, "the image was fetched again");
    let journal = rig.device.journal();
    assert!(matches!(journal.state, State::Committed(_)));
    assert_eq!(journal.last_command_seq, 2);
    let mut all = first;
    all.extend(after);
    common::assert_increasing(&seqs(&all));
}

/// (c) The broker goes down while an update is under way; the update finishes offline (the
/// journal says `committed`), and once the broker is back on the same port the reports made
/// meanwhile arrive, in order, ending with `committed`.
#[test]
fn reports_made_while_the_broker_is_down_arrive_later() {
    if !enabled() {
        return;
    }
    // A stall timeout of 1 s and a retry let the test take the broker down mid-download.
    let mut rig = Rig::start(Options {
        stall_timeout_secs: 1,
        attempts: 3,
        ..Options::default()
    });
    let v1 = release("1.0.0", 1, "healthy", 2 << 20).build();
    let server = TestServer::start(v1.image.clone(), Behaviour::StallAfter(1 << 20));
    rig.command_install(1, &v1, &server);
    let online = rig.controller.reports_until(UpdateState::Downloading);

    rig.broker.stop();
    server.set_behaviour(Behaviour::Normal);
    wait_for("the update to commit offline", LIMIT, || {
        matches!(rig.device.journal().state, State::Committed(_)).then_some(())
    });
    let unsent = rig.device.journal().outbox.len();
    assert!(unsent >= 4, "only {unsent} reports waited for the broker");

    rig.broker.restart();
    let later = rig.controller.reports_until(UpdateState::Committed);
    let mut all = online;
    all.extend(later);
    assert_eq!(
        states(&all),
        [
            UpdateState::Downloading,
            UpdateState::Verifying,
            UpdateState::Installed,
            UpdateState::Trial,
            UpdateState::Committed,
        ],
        "{all:?}"
    );
    common::assert_increasing(&seqs(&all));
    wait_for("the outbox to empty", LIMIT, || {
        rig.device.journal().outbox.is_empty().then_some(())
    });
}

/// A TCP relay between the agent and the broker that can hold back what the agent sends: a
/// PUBLISH the agent sent while [`Relay::hold`] is set sits here, sent and never acknowledged,
/// as one in flight when a broker dies does. Held bytes are lost with their connection.
struct Relay {
    port: u16,
    hold: Arc<AtomicBool>,
    held: Arc<AtomicU64>,
}

impl Relay {
    fn start(upstream: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicU64::new(0));
        let (h, b) = (Arc::clone(&hold), Arc::clone(&held));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                // Refused upstream: the client's socket closes as it is dropped.
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (h, b) = (Arc::clone(&h), Arc::clone(&b));
                std::thread::spawn(move || pump(client, server, Some((&h, &b))));
                std::thread::spawn(move || pump(server2, client2, None));
            }
        });
        Self { port, hold, held }
    }

    fn hold(&self, on: bool) {
        self.hold.store(on, Ordering::SeqCst);
    }

    /// Bytes from the agent that waited in the relay so far.
    fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either ends; while the hold flag is set, what was read waits
/// (and the counter counts it). Then shuts both down.
fn pump(mut from: TcpStream, mut to: TcpStream, hold: Option<(&AtomicBool, &AtomicU64)>) {
    use std::io::{Read as _, Write as _};
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if let Some((flag, held)) = hold
            && flag.load(Ordering::SeqCst)
        {
            held.fetch_add(n as u64, Ordering::SeqCst);
            while flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// (e) A report in flight (published, no PUBACK yet) when a broker without persistence goes
/// down is sent again to the restarted broker. The new session has none of the old one's
/// state and rumqttc drops what the old one had not acknowledged, so an agent that kept
/// waiting for that PUBACK would never report again.
#[test]
fn a_report_in_flight_when_a_broker_loses_its_sessions_is_sent_again() {
    if !enabled() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap().keep();
    let broker = Broker::volatile(&scratch);
    let relay = Relay::start(broker.port);
    let controller = Controller::connect(broker.port, "test-controller");
    let device = Device::new(Options {
        mqtt: Some(format!("mqtt://127.0.0.1:{}", relay.port)),
        ..Options::default()
    });
    let board = Daemon::start(device.agent(&["board"]), &device.path().join("board.log"));
    let mut rig = Rig {
        broker,
        controller,
        device,
        board,
    };
    let (_, presence, _) = rig.controller.presence();
    assert!(presence.online, "{presence:?}");

    // A revert with nothing to revert to is refused: a report, and no reboot that would start
    // a fresh agent. Its PUBLISH stays in the relay.
    relay.hold(true);
    rig.controller
        .send(&common::command(1, "c-revert", Action::Revert));
    // Its PUBLISH (hundreds of bytes; the command's PUBACK is 4, a PINGREQ 2) is in the relay.
    wait_for("the refusal published into the relay", LIMIT, || {
        (relay.held() > 200 && !rig.device.journal().outbox.is_empty()).then_some(())
    });
    rig.broker.stop();
    rig.broker.restart();
    rig.controller.wait_subscribed();
    relay.hold(false);
    let reports = rig.controller.reports_until(UpdateState::Failed);
    let (_, refusal) = reports.last().unwrap();
    assert_eq!(refusal.command.as_deref(), Some("c-revert"), "{reports:?}");
    assert!(
        refusal
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("command refused")),
        "{refusal:?}"
    );
    wait_for("the outbox to empty", LIMIT, || {
        rig.device.journal().outbox.is_empty().then_some(())
    });
}

/// (d) The board loses power (its processes are killed): the broker publishes the agent's
/// last will, a retained "offline" presence signed by the device, numbered after the
/// connection's "online".
#[test]
fn killing_the_agent_publishes_its_signed_last_will() {
    if !enabled() {
        return;
    }
    let mut rig = Rig::start(Options::default());
    let late = Controller::connect(rig.broker.port, "test-late-subscriber");
    let (online_seq, online, _) = late.presence();
    assert!(online.online);
    drop(late);

    rig.board.kill("KILL");
    let (will_seq, will, _) = rig.controller.presence();
    assert!(!will.online, "{will:?}");
    assert_eq!(will.device, common::device_id());
    assert!(
        will_seq > online_seq,
        "the will ({will_seq}) is not numbered after the online presence ({online_seq})"
    );
    // It is retained: a controller that connects later sees the device offline.
    let late = Controller::connect(rig.broker.port, "test-late-subscriber-2");
    let (_, presence, retained) = late.presence();
    assert!(!presence.online && retained);
}
