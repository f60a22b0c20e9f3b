//! Counters, and the Prometheus text exposition of them and of the fleet's gauges.
//!
//! The exposition is written by hand (format 0.0.4: `# HELP`, `# TYPE`, then samples): a few
//! dozen lines do not justify a metrics framework, and every name is visible here.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use swell_proto::topics::DeviceTopic;

use super::fleet::{ALL_STATES, Device, state_name};

/// Why a device message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The topic is not a device topic the controller reads.
    Topic,
    /// No device with that id is registered.
    UnknownDevice,
    /// The device is revoked.
    Revoked,
    /// The signature is not the device's.
    Signature,
    /// The message names another device than its topic.
    WrongDevice,
    /// The message has expired.
    Expired,
    /// The message is not a valid signed message of its topic's type.
    Malformed,
    /// Its sequence number is not above the last one accepted (a replay or a duplicate).
    Replay,
    /// The store failed while recording it.
    Store,
}

impl DropReason {
    /// Every reason, in exposition order.
    pub const ALL: [DropReason; 9] = [
        DropReason::Topic,
        DropReason::UnknownDevice,
        DropReason::Revoked,
        DropReason::Signature,
        DropReason::WrongDevice,
        DropReason::Expired,
        DropReason::Malformed,
        DropReason::Replay,
        DropReason::Store,
    ];

    /// The label value.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Topic => "topic",
            DropReason::UnknownDevice => "unknown_device",
            DropReason::Revoked => "revoked",
            DropReason::Signature => "signature",
            DropReason::WrongDevice => "wrong_device",
            DropReason::Expired => "expired",
            DropReason::Malformed => "malformed",
            DropReason::Replay => "replay",
            DropReason::Store => "store",
        }
    }
}

/// Device topics that carry messages to the controller.
const INBOUND: [DeviceTopic; 4] = [
    DeviceTopic::Report,
    DeviceTopic::Health,
    DeviceTopic::Presence,
    DeviceTopic::Signals,
];

fn inbound_index(topic: DeviceTopic) -> usize {
    INBOUND.iter().position(|t| *t == topic).unwrap_or(0)
}

/// The service's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    accepted: [AtomicU64; INBOUND.len()],
    dropped: [AtomicU64; DropReason::ALL.len()],
    commands_sent: AtomicU64,
    command_failures: AtomicU64,
    uploads_accepted: AtomicU64,
    uploads_refused: AtomicU64,
    artifact_requests: AtomicU64,
    broker_connected: AtomicBool,
    broker_connections: AtomicU64,
}

/// Gauges computed at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// Accepted releases.
    pub releases: usize,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// A message accepted from a device on `topic`.
    pub fn accepted(&self, topic: DeviceTopic) {
        bump(&self.accepted[inbound_index(topic)]);
    }

    /// A message dropped.
    pub fn dropped(&self, reason: DropReason) {
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        bump(&self.dropped[i]);
    }

    /// How many messages were dropped for `reason`.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.dropped[i].load(Ordering::Relaxed)
    }

    /// A command published.
    pub fn command_sent(&self) {
        bump(&self.commands_sent);
    }

    /// A command that could not be sent.
    pub fn command_failed(&self) {
        bump(&self.command_failures);
    }

    /// A release upload step accepted or refused.
    pub fn upload(&self, accepted: bool) {
        bump(if accepted {
            &self.uploads_accepted
        } else {
            &self.uploads_refused
        });
    }

    /// An artifact request served.
    pub fn artifact_request(&self) {
        bump(&self.artifact_requests);
    }

    /// The bus connected to the broker and subscribed (`true`), or lost the connection.
    pub fn broker_connected(&self, connected: bool) {
        self.broker_connected.store(connected, Ordering::Relaxed);
    }

    /// The broker accepted a connection of the bus.
    pub fn broker_connection(&self) {
        bump(&self.broker_connections);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, devices: &[Device], gauges: Gauges) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };

        let mut by_state: Vec<(String, u64)> = ALL_STATES
            .iter()
            .map(|s| {
                let n = devices
                    .iter()
                    .filter(|d| d.registration.revoked.is_none() && d.inventory.state == Some(*s))
                    .count();
                (format!("{{state=\"{}\"}}", state_name(*s)), n as u64)
            })
            .collect();
        let unknown = devices
            .iter()
            .filter(|d| d.registration.revoked.is_none() && d.inventory.state.is_none())
            .count();
        by_state.push(("{state=\"unknown\"}".into(), unknown as u64));
        family(
            "swell_devices",
            "gauge",
            "Registered, unrevoked devices by reported update state.",
            &by_state,
        );
        let online = devices
            .iter()
            .filter(|d| d.registration.revoked.is_none() && d.inventory.online)
            .count();
        family(
            "swell_devices_online",
            "gauge",
            "Unrevoked devices whose last presence said online.",
            &[(String::new(), online as u64)],
        );
        let revoked = devices
            .iter()
            .filter(|d| d.registration.revoked.is_some())
            .count();
        family(
            "swell_devices_revoked",
            "gauge",
            "Revoked devices.",
            &[(String::new(), revoked as u64)],
        );
        family(
            "swell_releases",
            "gauge",
            "Accepted releases.",
            &[(String::new(), gauges.releases as u64)],
        );
        let accepted: Vec<(String, u64)> = INBOUND
            .iter()
            .zip(&self.accepted)
            .map(|(t, c)| (format!("{{topic=\"{}\"}}", t.suffix()), load(c)))
            .collect();
        family(
            "swell_messages_accepted_total",
            "counter",
            "Device messages verified and recorded, by topic.",
            &accepted,
        );
        let dropped: Vec<(String, u64)> = DropReason::ALL
            .iter()
            .zip(&self.dropped)
            .map(|(r, c)| (format!("{{reason=\"{}\"}}", r.name()), load(c)))
            .collect();
        family(
            "swell_messages_dropped_total",
            "counter",
            "Device messages dropped, by reason.",
            &dropped,
        );
        family(
            "swell_commands_sent_total",
            "counter",
            "Signed commands published to devices.",
            &[(String::new(), load(&self.commands_sent))],
        );
        family(
            "swell_command_failures_total",
            "counter",
            "Commands that could not be signed, stored or published.",
            &[(String::new(), load(&self.command_failures))],
        );
        family(
            "swell_uploads_total",
            "counter",
            "Release upload requests (manifest or image), by result.",
            &[
                ("{result=\"accepted\"}".into(), load(&self.uploads_accepted)),
                ("{result=\"refused\"}".into(), load(&self.uploads_refused)),
            ],
        );
        family(
            "swell_artifact_requests_total",
            "counter",
            "Artifact download requests answered.",
            &[(String::new(), load(&self.artifact_requests))],
        );
        family(
            "swell_broker_connected",
            "gauge",
            "1 while the controller is connected to the broker and subscribed to the devices.",
            &[(
                String::new(),
                u64::from(self.broker_connected.load(Ordering::Relaxed)),
            )],
        );
        family(
            "swell_broker_connections_total",
            "counter",
            "Connections the broker accepted from the controller (more than 1: reconnects).",
            &[(String::new(), load(&self.broker_connections))],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_samples() {
        let m = Metrics::default();
        m.dropped(DropReason::Replay);
        m.dropped(DropReason::Replay);
        m.accepted(DeviceTopic::Report);
        let text = m.render(&[], Gauges { releases: 2 });
        assert!(
            text.contains("# TYPE swell_messages_dropped_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("swell_messages_dropped_total{reason=\"replay\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("swell_messages_accepted_total{topic=\"report\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("swell_releases 2\n"), "{text}");
        assert!(
            text.contains("swell_devices{state=\"unknown\"} 0\n"),
            "{text}"
        );
        assert_eq!(m.dropped_count(DropReason::Replay), 2);
    }
}
