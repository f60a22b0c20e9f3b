//! The MQTT session: one connection to the broker, kept up with jittered exponential backoff.
//!
//! The driver talks to it through two channels. Reports go out one at a time in the order the
//! driver queued them (the same order as the journal's outbox): each is published with QoS 1
//! and the next waits for its PUBACK, so every PUBACK belongs to the head of the queue and the
//! driver can drop exactly that report from the journal. rumqttc retransmits an unacknowledged
//! publish after a reconnect by itself, so the session never sends one twice. Heartbeats and
//! the "online" presence go with QoS 0; the "offline" presence is the connection's last will,
//! signed afresh before every connection attempt so its sequence number is current.
//!
//! Health-signal batches (`signals`) share that one-at-a-time QoS 1 lane: reports go first,
//! then batches in the order the driver handed them over, each named by its queue id so the
//! driver deletes exactly the acknowledged file.
//!
//! Commands arrive with QoS 1 on a persistent session and manual acknowledgement: the driver
//! acknowledges a command only after the journal holds its effect, so a command is never lost
//! to a crash between delivery and persistence; a redelivery is recognised by its sequence
//! number.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, Publish, QoS, TlsConfiguration,
    Transport,
};
use swell_proto::limits::MAX_MESSAGE_BYTES;
use swell_proto::messages::Presence;
use swell_proto::topics::DeviceTopic;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::signer::{Signer, now};

/// Shortest wait before a reconnect attempt.
const BACKOFF_MIN: Duration = Duration::from_millis(200);

/// Longest wait between reconnect attempts: long enough not to hammer a recovering broker
/// with a whole fleet, short enough that a device is back within a minute of the broker.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Requests the session holds for the broker; generous enough that the driver never blocks.
const REQUEST_CAPACITY: usize = 64;

/// Why the session could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The broker URL is not `mqtt://host:port` or `mqtts://host:port`.
    #[error("broker URL {0:?}: expected mqtt://host:port or mqtts://host:port")]
    Url(String),
    /// A TLS file could not be read or used.
    #[error("TLS {what} {path}: {detail}")]
    Tls {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A message could not be signed.
    #[error("signing presence: {0}")]
    Sign(#[from] swell_proto::Error),
}

/// What the session tells the driver.
#[derive(Debug)]
pub enum Inbound {
    /// Connected (or reconnected) to the broker.
    Connected,
    /// The connection dropped; the session is backing off and will reconnect.
    Disconnected(String),
    /// A message on the command topic; acknowledge it with [`Outbound::Ack`] once handled.
    Command(Publish),
    /// The broker acknowledged the oldest queued report.
    Delivered,
    /// The broker acknowledged the signals batch with this queue id.
    SignalsDelivered(u64),
}

/// What the driver asks of the session.
#[derive(Debug)]
pub enum Outbound {
    /// Queue a signed report (QoS 1, in order).
    Report(Vec<u8>),
    /// Queue a signed signals batch with its queue id (QoS 1, in order, after reports).
    Signals(u64, Vec<u8>),
    /// Send a signed heartbeat now if connected (QoS 0; dropped when offline).
    Heartbeat(Vec<u8>),
    /// Acknowledge a command.
    Ack(Publish),
}

/// The session's settings.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The broker.
    pub mqtt: MqttConfig,
    /// The device key file, used as the TLS client key.
    pub device_key: PathBuf,
    /// The agent's version, announced in presence messages.
    pub agent_version: String,
}

fn parse_url(url: &str) -> Result<(bool, String, u16), SessionError> {
    let bad = || SessionError::Url(url.to_string());
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err(bad());
    };
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((tls, host.to_string(), port))
}

fn read_tls(what: &'static str, path: &Path) -> Result<Vec<u8>, SessionError> {
    std::fs::read(path).map_err(|e| SessionError::Tls {
        what,
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn tls_config(settings: &SessionSettings) -> Result<TlsConfiguration, SessionError> {
    use rumqttc::tokio_rustls::rustls;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let mqtt = &settings.mqtt;
    let tls_err = |what, path: &Path, detail: String| SessionError::Tls {
        what,
        path: path.to_path_buf(),
        detail,
    };
    let ca_path = mqtt
        .ca
        .as_deref()
        .ok_or_else(|| SessionError::Url(mqtt.url.clone()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read_tls("CA certificate", ca_path)?) {
        let cert = cert.map_err(|e| tls_err("CA certificate", ca_path, e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| tls_err("CA certificate", ca_path, e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("configuration", ca_path, e.to_string()))?
        .with_root_certificates(roots);
    let config = match &mqtt.cert {
        Some(cert_path) => {
            let chain = CertificateDer::pem_slice_iter(&read_tls("client certificate", cert_path)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_err("client certificate", cert_path, e.to_string()))?;
            let key_pem = read_tls("device key", &settings.device_key)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| tls_err("device key", &settings.device_key, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_err("client certificate", cert_path, e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

/// Signs one connection's presence pair: the "online" message it will publish after
/// connecting, then the "offline" last will. Signing in that order gives the will the higher
/// sequence number, so the controller accepts it after the online message.
fn presence_pair(
    signer: &Signer,
    agent_version: &str,
) -> Result<(Vec<u8>, LastWill), SessionError> {
    let presence = |online| Presence {
        device: signer.device().clone(),
        issued: now(),
        online,
        agent_version: agent_version.to_string(),
    };
    let online = presence(true);
    let online = signer.sign(&online, online.issued)?;
    let offline = presence(false);
    let offline = signer.sign(&offline, offline.issued)?;
    let topic = DeviceTopic::Presence.for_device(signer.device());
    Ok((
        online,
        LastWill::new(topic, offline, QoS::AtLeastOnce, true),
    ))
}

/// Builds the client options (persistent session, manual acks, packet size from the protocol's
/// limit, TLS for `mqtts://`, the signed last will) and the "online" presence to publish once
/// connected.
pub fn options(
    settings: &SessionSettings,
    signer: &Signer,
) -> Result<(MqttOptions, Vec<u8>), SessionError> {
    let (tls, host, port) = parse_url(&settings.mqtt.url)?;
    let (online, will) = presence_pair(signer, &settings.agent_version)?;
    let mut options = MqttOptions::new(signer.device().as_str(), host, port);
    options
        .set_keep_alive(Duration::from_secs(settings.mqtt.keep_alive_secs))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_MESSAGE_BYTES + 1024, MAX_MESSAGE_BYTES + 1024)
        .set_last_will(will);
    if tls {
        options.set_transport(Transport::Tls(tls_config(settings)?));
    }
    Ok((options, online))
}

/// Jittered exponential backoff ("full jitter" over a doubling ceiling).
#[derive(Debug)]
struct Backoff {
    attempt: u32,
    seed: u64,
}

impl Backoff {
    fn new(seed: u64) -> Self {
        Self {
            attempt: 0,
            seed: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next(&mut self) -> Duration {
        // xorshift64: the jitter only has to spread a fleet's reconnects, not be secret.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let ceiling = BACKOFF_MIN
            .saturating_mul(1 << self.attempt.min(10))
            .min(BACKOFF_MAX);
        self.attempt += 1;
        let fraction = (self.seed % 1000) as u32;
        BACKOFF_MIN.max(ceiling * fraction / 1000)
    }
}

struct Session {
    client: AsyncClient,
    eventloop: EventLoop,
    signer: Arc<Signer>,
    agent_version: String,
    online: Vec<u8>,
    queue: VecDeque<Vec<u8>>,
    signals: SignalsQueue,
    in_flight: Option<InFlight>,
    connected: bool,
}

/// The one QoS 1 publish awaiting its PUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    /// The head of the report queue.
    Report,
    /// The head of the signals queue, with its id.
    Signals(u64),
}

/// Runs the session until `shutdown` is cancelled or the driver hangs up.
pub async fn run(
    settings: SessionSettings,
    signer: Arc<Signer>,
    mut from_driver: mpsc::Receiver<Outbound>,
    to_driver: mpsc::Sender<Inbound>,
    shutdown: CancellationToken,
) -> Result<(), SessionError> {
    let (options, online) = options(&settings, &signer)?;
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let mut s = Session {
        client,
        eventloop,
        signer,
        agent_version: settings.agent_version.clone(),
        online,
        queue: VecDeque::new(),
        signals: VecDeque::new(),
        in_flight: None,
        connected: false,
    };
    let seed = std::process::id().into();
    let mut backoff = Backoff::new(seed);
    let topics = Topics {
        report: DeviceTopic::Report.for_device(s.signer.device()),
        signals: DeviceTopic::Signals.for_device(s.signer.device()),
    };
    let command_topic = DeviceTopic::Command.for_device(s.signer.device());
    loop {
        // One `poll` future lives until it completes, whatever the other branches do in the
        // meantime: `poll` is not cancel-safe while it connects (rumqttc drops a half-made
        // connection with the future, and the broker then publishes that connection's will,
        // "offline", which carries a higher sequence number than the next "online").
        let event = {
            let poll = s.eventloop.poll();
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    // Cancel-safe: nothing is in progress when shutdown is observed.
                    () = shutdown.cancelled() => {
                        let _ = s.client.disconnect().await;
                        return Ok(());
                    }
                    // Cancel-safe: `recv` loses nothing if another branch wins.
                    request = from_driver.recv() => match request {
                        None => return Ok(()),
                        Some(Outbound::Report(payload)) => s.queue.push_back(payload),
                        Some(Outbound::Signals(id, payload)) => s.signals.push_back((id, payload)),
                        Some(Outbound::Heartbeat(payload)) if s.connected => {
                            let topic = DeviceTopic::Health.for_device(s.signer.device());
                            let _ = s.client.try_publish(topic, QoS::AtMostOnce, false, payload);
                        }
                        Some(Outbound::Heartbeat(_)) => {}
                        Some(Outbound::Ack(publish)) => {
                            let _ = s.client.ack(&publish).await;
                        }
                    },
                    // Not cancelled: the pinned future is polled again on the next round.
                    event = &mut poll => break event,
                }
                send_head(
                    &s.client,
                    (&s.queue, &s.signals),
                    &mut s.in_flight,
                    s.connected,
                    &topics,
                )
                .await;
            }
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                s.connected = true;
                backoff.reset();
                if !ack.session_present {
                    // A new session (a broker restarted without persistence): rumqttc drops
                    // every publish the old one had not acknowledged, so the one in flight
                    // will never get its PUBACK. Send it again, or the queue stalls forever.
                    s.in_flight = None;
                }
                let _ = s.client.subscribe(&command_topic, QoS::AtLeastOnce).await;
                let topic = DeviceTopic::Presence.for_device(s.signer.device());
                let online = s.online.clone();
                let _ = s.client.publish(topic, QoS::AtMostOnce, true, online).await;
                let _ = to_driver.send(Inbound::Connected).await;
            }
            Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == command_topic => {
                let _ = to_driver.send(Inbound::Command(p)).await;
            }
            Ok(Event::Incoming(Incoming::PubAck(_))) if s.in_flight.is_some() => {
                match s.in_flight.take() {
                    Some(InFlight::Report) => {
                        s.queue.pop_front();
                        let _ = to_driver.send(Inbound::Delivered).await;
                    }
                    Some(InFlight::Signals(id)) => {
                        s.signals.pop_front();
                        let _ = to_driver.send(Inbound::SignalsDelivered(id)).await;
                    }
                    None => {}
                }
            }
            Ok(_) => {}
            Err(e) => {
                let was_connected = std::mem::replace(&mut s.connected, false);
                if was_connected {
                    let _ = to_driver.send(Inbound::Disconnected(e.to_string())).await;
                }
                // The next connection gets a fresh pair, numbered after everything so far.
                if let Ok((online, will)) = presence_pair(&s.signer, &s.agent_version) {
                    s.online = online;
                    s.eventloop.mqtt_options.set_last_will(will);
                }
                let delay = backoff.next();
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
        }
        send_head(
            &s.client,
            (&s.queue, &s.signals),
            &mut s.in_flight,
            s.connected,
            &topics,
        )
        .await;
    }
}

/// Signals batches waiting in the session, with their queue ids, oldest first.
type SignalsQueue = VecDeque<(u64, Vec<u8>)>;

/// The device's outgoing QoS 1 topics.
struct Topics {
    report: String,
    signals: String,
}

/// Publishes the oldest queued report, else the oldest signals batch, if connected and
/// nothing is awaiting its PUBACK.
async fn send_head(
    client: &AsyncClient,
    (reports, signals): (&VecDeque<Vec<u8>>, &SignalsQueue),
    in_flight: &mut Option<InFlight>,
    connected: bool,
    topics: &Topics,
) {
    if !connected || in_flight.is_some() {
        return;
    }
    let (topic, payload, next) = if let Some(head) = reports.front() {
        (&topics.report, head.clone(), InFlight::Report)
    } else if let Some((id, head)) = signals.front() {
        (&topics.signals, head.clone(), InFlight::Signals(*id))
    } else {
        return;
    };
    let sent = client.publish(topic, QoS::AtLeastOnce, false, payload);
    if sent.await.is_ok() {
        *in_flight = Some(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1883").unwrap(),
            (false, "127.0.0.1".into(), 1883)
        );
        assert_eq!(
            parse_url("mqtts://broker:8883").unwrap(),
            (true, "broker".into(), 8883)
        );
        for bad in ["tcp://x:1", "mqtt://x", "mqtt://:1", "mqtt://x:port"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    /// Backoff stays within its bounds and its ceiling grows until the cap.
    #[test]
    fn backoff_is_bounded_and_jittered() {
        let mut b = Backoff::new(42);
        let delays: Vec<Duration> = (0..20).map(|_| b.next()).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= BACKOFF_MIN && *d <= BACKOFF_MAX)
        );
        assert!(delays[15..].iter().any(|d| *d > Duration::from_secs(2)));
        b.reset();
        assert!(b.next() <= BACKOFF_MIN * 2);
    }
}
