//! The controller's MQTT client: a cloneable [`Bus`] handle that publishes signed commands, and
//! a [`BusDriver`] that owns the connection, subscribes to every device topic and turns each
//! device message into an inventory update, or a counted, logged drop.
//!
//! A message from a device is believed only if, in this order: its topic is a device topic;
//! the device is registered and not revoked; the envelope verifies with the device's registered
//! key, names that same device and has not expired ([`open_device_message`]); and its sequence
//! number is above the highest one accepted from that device on that topic. The inventory and
//! the new high-water mark are stored in one batch before the message is acknowledged to the
//! broker, so a crash between the two leads to a redelivery that is then recognised as a
//! replay, never to a lost update.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, Incoming, MqttOptions, Publish, QoS};
use swell_proto::messages::{Heartbeat, Presence, Report, Signals, open_device_message};
use swell_proto::topics::{ALL_DEVICES, DeviceTopic};
use swell_proto::{DeviceId, PublicKey};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Clock;
use super::fleet::DeviceMessage;
use super::metrics::{DropReason, Metrics};
use super::registry::{Registry, Sender};

/// Requests the client queues for the event loop before a publish waits.
const REQUEST_CAPACITY: usize = 256;

/// Keep-alive with the broker.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// First wait before reconnecting; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest wait between reconnect attempts: one controller, so no jitter is needed to spread a
/// herd, and a broker restart is noticed within seconds.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why the bus could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A TLS file could not be read or used.
    #[error("broker TLS {what} {path}: {detail}")]
    Tls {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The client's request queue is closed (the driver stopped).
    #[error("the MQTT client is stopped: {0}")]
    Closed(String),
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id.
    pub client_id: String,
    /// TLS files, for `mqtts://`.
    pub tls: Option<TlsFiles>,
}

/// The TLS files of an external broker connection.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA certificate(s), PEM.
    pub ca: std::path::PathBuf,
    /// Client certificate and key, PEM, for mutual TLS.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// The handle: publishes commands; tells whether the subscription is in place.
#[derive(Debug, Clone)]
pub struct Bus {
    client: AsyncClient,
    subscribed: watch::Receiver<bool>,
}

/// The connection's driver; run it with [`BusDriver::run`].
pub struct BusDriver {
    client: AsyncClient,
    eventloop: EventLoop,
    subscribed: watch::Sender<bool>,
}

impl std::fmt::Debug for BusDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusDriver").finish_non_exhaustive()
    }
}

fn read_tls(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, BusError> {
    std::fs::read(path).map_err(|e| BusError::Tls {
        what,
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn tls_config(files: &TlsFiles) -> Result<rumqttc::TlsConfiguration, BusError> {
    use rumqttc::tokio_rustls::rustls;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let err = |what, path: &std::path::Path, detail: String| BusError::Tls {
        what,
        path: path.to_path_buf(),
        detail,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read_tls("CA certificate", &files.ca)?) {
        let cert = cert.map_err(|e| err("CA certificate", &files.ca, e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| err("CA certificate", &files.ca, e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("configuration", &files.ca, e.to_string()))?
        .with_root_certificates(roots);
    let config = match &files.client {
        Some((cert_path, key_path)) => {
            let chain = CertificateDer::pem_slice_iter(&read_tls("client certificate", cert_path)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err("client certificate", cert_path, e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(&read_tls("client key", key_path)?)
                .map_err(|e| err("client key", key_path, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| err("client certificate", cert_path, e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
}

/// Creates the client. Nothing connects until the driver runs.
pub fn connect(settings: &BusSettings) -> Result<(Bus, BusDriver), BusError> {
    let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    let max_packet = swell_proto::limits::MAX_MESSAGE_BYTES + 1024;
    options
        .set_keep_alive(KEEP_ALIVE)
        // A persistent session: the broker queues device reports (QoS 1) while the controller
        // restarts, and redelivers what was not acknowledged.
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(max_packet, max_packet);
    if let Some(files) = &settings.tls {
        options.set_transport(rumqttc::Transport::Tls(tls_config(files)?));
    }
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let (tx, rx) = watch::channel(false);
    Ok((
        Bus {
            client: client.clone(),
            subscribed: rx,
        },
        BusDriver {
            client,
            eventloop,
            subscribed: tx,
        },
    ))
}

impl Bus {
    /// Queues a signed command for `device` (QoS 1). The event loop sends it when connected;
    /// the persistent session retransmits it until the broker acknowledges it.
    pub async fn publish_command(
        &self,
        device: &DeviceId,
        payload: Vec<u8>,
    ) -> Result<(), BusError> {
        let topic = DeviceTopic::Command.for_device(device);
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| BusError::Closed(e.to_string()))
    }

    /// Waits until the subscription to every device topic is acknowledged, or `timeout`.
    /// Returns whether it is.
    pub async fn wait_subscribed(&self, timeout: Duration) -> bool {
        let mut rx = self.subscribed.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// What the driver's loop reacts to.
#[derive(Debug)]
enum Event {
    /// Stop: disconnect and return.
    Shutdown,
    /// Something from the connection.
    Mqtt(Result<MqttEvent, rumqttc::ConnectionError>),
}

/// What became of one incoming publish.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Verified, fresh, stored.
    Accepted,
    /// Not a message for the controller (its own commands echoed back), or a retained message
    /// already applied: nothing to count.
    Ignored,
    /// Dropped for a reason.
    Dropped(DropReason),
}

fn reason_for(e: &swell_proto::Error) -> DropReason {
    use swell_proto::Error as E;
    match e {
        E::BadSignature { .. } | E::UnknownKey { .. } | E::ThresholdUnmet { .. } => {
            DropReason::Signature
        }
        E::Expired { .. } => DropReason::Expired,
        // `open_device_message` reports a message naming another device than its topic this way.
        E::Invalid {
            what: "message", ..
        } => DropReason::WrongDevice,
        _ => DropReason::Malformed,
    }
}

fn open(
    topic: DeviceTopic,
    payload: &[u8],
    device: &DeviceId,
    key: &PublicKey,
    now: swell_proto::Timestamp,
) -> Result<(u64, DeviceMessage), swell_proto::Error> {
    Ok(match topic {
        DeviceTopic::Report => {
            let m = open_device_message::<Report>(payload, device, key, now)?;
            (m.seq, DeviceMessage::Report(m.message))
        }
        DeviceTopic::Health => {
            let m = open_device_message::<Heartbeat>(payload, device, key, now)?;
            (m.seq, DeviceMessage::Heartbeat(m.message))
        }
        DeviceTopic::Presence => {
            let m = open_device_message::<Presence>(payload, device, key, now)?;
            (m.seq, DeviceMessage::Presence(m.message))
        }
        DeviceTopic::Signals => {
            let m = open_device_message::<Signals>(payload, device, key, now)?;
            (m.seq, DeviceMessage::Signals(m.message))
        }
        DeviceTopic::Command => {
            return Err(swell_proto::Error::Malformed {
                what: "message",
                detail: "commands are not read by the controller".into(),
            });
        }
    })
}

/// Verifies one publish and records it. Counts and logs every drop.
pub async fn ingest(
    registry: &Registry,
    metrics: &Metrics,
    clock: &dyn Clock,
    publish: &Publish,
) -> Outcome {
    let outcome = check_and_store(registry, clock, publish).await;
    match &outcome {
        Outcome::Dropped(reason) => metrics.dropped(*reason),
        Outcome::Accepted => {
            if let Some((_, topic)) = DeviceTopic::parse(&publish.topic) {
                metrics.accepted(topic);
            }
        }
        Outcome::Ignored => {}
    }
    outcome
}

async fn check_and_store(registry: &Registry, clock: &dyn Clock, publish: &Publish) -> Outcome {
    let Some((device, topic)) = DeviceTopic::parse(&publish.topic) else {
        warn!(topic = %publish.topic, reason = "topic", "dropped a message on a topic that is not a device topic");
        return Outcome::Dropped(DropReason::Topic);
    };
    if topic == DeviceTopic::Command {
        return Outcome::Ignored;
    }
    let key = match registry.sender(&device) {
        Sender::Active(key) => key,
        Sender::Unknown => {
            warn!(device_id = %device, topic = topic.suffix(), reason = "unknown_device", "dropped a message from an unregistered device");
            return Outcome::Dropped(DropReason::UnknownDevice);
        }
        Sender::Revoked => {
            warn!(device_id = %device, topic = topic.suffix(), reason = "revoked", "dropped a message from a revoked device");
            return Outcome::Dropped(DropReason::Revoked);
        }
    };
    let now = clock.now();
    let (seq, message) = match open(topic, &publish.payload, &device, &key, now) {
        Ok(opened) => opened,
        Err(e) => {
            let reason = reason_for(&e);
            warn!(device_id = %device, topic = topic.suffix(), reason = reason.name(), error = %e, "dropped a message that does not verify");
            return Outcome::Dropped(reason);
        }
    };
    let high = registry.high_water(&device, topic);
    if seq <= high {
        // The broker hands the retained presence to every new subscription; the one already
        // applied comes back unchanged after each controller restart and is no replay.
        if publish.retain && seq == high {
            debug!(device_id = %device, seq, "retained presence already applied");
            return Outcome::Ignored;
        }
        warn!(device_id = %device, topic = topic.suffix(), seq, accepted = high, reason = "replay", "dropped a message whose sequence number is not above the last accepted");
        return Outcome::Dropped(DropReason::Replay);
    }
    if let Err(e) = registry.accept(&device, topic, seq, &message, now).await {
        warn!(device_id = %device, topic = topic.suffix(), reason = "store", error = %e, "could not record a verified message");
        return Outcome::Dropped(DropReason::Store);
    }
    if let DeviceMessage::Report(r) = &message {
        info!(device_id = %device, seq, state = super::fleet::state_name(r.state), command = r.command.as_deref().unwrap_or(""), "report");
    } else {
        debug!(device_id = %device, topic = topic.suffix(), seq, "accepted");
    }
    Outcome::Accepted
}

impl BusDriver {
    /// Runs the connection until `shutdown`: connects (and reconnects with backoff),
    /// subscribes, and ingests every device message.
    pub async fn run(
        mut self,
        registry: Registry,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let event = tokio::select! {
                // Cancel-safe: nothing is in progress when shutdown wins.
                () = shutdown.cancelled() => Event::Shutdown,
                // Cancel-safe per rumqttc: the event loop keeps its state between polls.
                e = self.eventloop.poll() => Event::Mqtt(e),
            };
            match event {
                Event::Shutdown => {
                    let _ = self.client.try_disconnect();
                    // Give the disconnect a moment to reach the broker, so it does not publish
                    // a stale session takeover; a dead broker does not hold up shutdown.
                    let _ = tokio::time::timeout(Duration::from_millis(500), async {
                        while self.eventloop.poll().await.is_ok() {}
                    })
                    .await;
                    return;
                }
                Event::Mqtt(Ok(MqttEvent::Incoming(Incoming::ConnAck(ack)))) => {
                    backoff = BACKOFF_MIN;
                    metrics.broker_connection();
                    info!(
                        session_present = ack.session_present,
                        "connected to the broker"
                    );
                    if let Err(e) = self.client.subscribe(ALL_DEVICES, QoS::AtLeastOnce).await {
                        warn!(error = %e, "could not queue the subscription");
                    }
                }
                Event::Mqtt(Ok(MqttEvent::Incoming(Incoming::SubAck(_)))) => {
                    metrics.broker_connected(true);
                    let _ = self.subscribed.send(true);
                }
                Event::Mqtt(Ok(MqttEvent::Incoming(Incoming::Publish(publish)))) => {
                    let outcome = ingest(&registry, &metrics, clock.as_ref(), &publish).await;
                    // A store failure leaves the message unacknowledged: the broker redelivers
                    // it on the next connection.
                    if outcome != Outcome::Dropped(DropReason::Store)
                        && let Err(e) = self.client.ack(&publish).await
                    {
                        warn!(error = %e, "could not queue an acknowledgement");
                    }
                }
                Event::Mqtt(Ok(_)) => {}
                Event::Mqtt(Err(e)) => {
                    metrics.broker_connected(false);
                    let _ = self.subscribed.send(false);
                    warn!(error = %e, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "broker connection lost");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}
