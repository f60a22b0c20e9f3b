//! The device registry and inventory: who the devices are (id, key, hardware, zone, cohort,
//! tags, revoked) and what they last said (seen, online, running version, agent state, last
//! error, progress). Pure data and pure functions: [`Inventory::apply`] folds one verified
//! message into a device's inventory; [`Filter::matches`] selects devices for a list. The
//! types here do not derive serde: `records` converts them at the store's edge and `api` at
//! the HTTP edge.

use std::collections::BTreeMap;
use std::fmt;

use swell_proto::messages::{
    Heartbeat, Presence, Progress, ReleaseRef, Report, Running, Signals, UpdateState,
};
use swell_proto::{DeviceId, HardwareId, PublicKey, SemVer, Timestamp};

/// Longest label (cohort, tag key or tag value).
pub const MAX_LABEL_LEN: usize = 64;

/// Most tags on one device: tags select devices for rollouts, a handful is typical.
pub const MAX_TAGS: usize = 32;

/// A cohort name, tag key or tag value: 1 to 64 of `[A-Za-z0-9._-]`, starting with a letter or
/// digit, so it is safe in URLs, query strings and selectors.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(String);

impl Label {
    /// Validates `s`.
    pub fn new(s: &str) -> Result<Label, String> {
        let ok = !s.is_empty()
            && s.len() <= MAX_LABEL_LEN
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Label(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a valid label: 1 to {MAX_LABEL_LEN} of letters, digits, '.', '_', \
                 '-', starting with a letter or digit"
            ))
        }
    }

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A valid IANA time zone name, checked against the tz database bundled into the binary (so
/// it does not depend on the host's `/usr/share/zoneinfo`). The name is kept in the database's
/// own spelling, so `europe/berlin` is stored as `Europe/Berlin`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Zone(String);

impl Zone {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Zone, String> {
        let invalid = || format!("{name:?} is not an IANA time zone name (such as Europe/Berlin)");
        // jiff also accepts POSIX TZ strings and fixed offsets elsewhere; the database lookup
        // accepts only names it holds.
        if name.is_empty() || name.len() > MAX_LABEL_LEN {
            return Err(invalid());
        }
        let tz = jiff::tz::db().get(name).map_err(|_| invalid())?;
        let canonical = tz.iana_name().unwrap_or(name);
        Ok(Zone(canonical.to_owned()))
    }

    /// The zone's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A device as provisioned (enrollment will create the same record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The device id (its MQTT topic level).
    pub id: DeviceId,
    /// The key every message from the device must be signed with.
    pub public_key: PublicKey,
    /// Its hardware id (releases list the ones they run on).
    pub hardware: HardwareId,
    /// Its local time zone (maintenance windows are local).
    pub zone: Zone,
    /// Its cohort (`canary` devices are reached first), if any.
    pub cohort: Option<Label>,
    /// Free-form selectors.
    pub tags: BTreeMap<Label, Label>,
    /// When it was provisioned.
    pub provisioned_at: Timestamp,
    /// Who provisioned it (a token name, or `enrollment`).
    pub provisioned_by: String,
    /// Set once the device is revoked; a revoked device's messages are dropped.
    pub revoked: Option<Revocation>,
}

/// When and why a device was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub by: String,
    /// Why (free text from the operator).
    pub reason: String,
}

/// What the controller last heard from a device. Every field is what the device said in a
/// verified message, except `last_seen`, which is when the controller accepted it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    /// When the controller last accepted a message from the device.
    pub last_seen: Option<Timestamp>,
    /// Online per the last presence message (the offline one is the connection's last will).
    pub online: bool,
    /// The agent's version, from presence.
    pub agent_version: Option<String>,
    /// What the device runs.
    pub running: Option<Running>,
    /// The agent's update state.
    pub state: Option<UpdateState>,
    /// The release being installed or just rolled back from.
    pub target: Option<ReleaseRef>,
    /// The command the last report answered.
    pub command: Option<String>,
    /// The reason of the last failed or rolled-back report.
    pub last_error: Option<String>,
    /// Download or verification progress.
    pub progress: Option<Progress>,
    /// Seconds since boot, from the last heartbeat.
    pub uptime_s: Option<u64>,
    /// Named metrics from the last heartbeat.
    pub metrics: BTreeMap<String, i64>,
    /// The sequence number of the message `state` and `running` come from. One agent numbers
    /// all its messages from one counter, so a heartbeat built before a report but delivered
    /// after it (another topic, QoS 0) carries a lower number and does not turn the state back.
    pub state_seq: u64,
    /// The sequence number of the newest presence that said online. The agent numbers each
    /// connection's presence anew, so this changes every time it connects: a command
    /// published before then may have been lost with the broker's session for the device
    /// (a broker restarted without persistence keeps none).
    pub online_seq: u64,
}

/// A verified message from a device.
#[derive(Debug, Clone)]
pub enum DeviceMessage {
    /// A state report.
    Report(Report),
    /// A heartbeat.
    Heartbeat(Heartbeat),
    /// Online or offline.
    Presence(Presence),
    /// A batch of health signals. The inventory only notes that the device was heard from;
    /// the batch itself goes to the registry's signal history ([`super::registry::Registry::signals`]).
    Signals(Signals),
}

impl Inventory {
    /// Folds a verified message with sequence number `seq`, accepted at `now`, into the
    /// inventory.
    pub fn apply(&mut self, message: &DeviceMessage, seq: u64, now: Timestamp) {
        self.last_seen = Some(now);
        let newer = seq > self.state_seq;
        match message {
            DeviceMessage::Report(r) => {
                if newer {
                    self.running = Some(r.running.clone());
                    self.state = Some(r.state);
                    self.state_seq = seq;
                }
                // Reports arrive in order (QoS 1, one lane), so what only they carry is the
                // latest even when a later heartbeat already updated the state.
                self.target = r.target.clone();
                self.command = r.command.clone();
                self.progress = r.progress;
                if let Some(reason) = &r.reason {
                    self.last_error = Some(reason.clone());
                }
                // A device that reports is connected, whatever the retained presence said.
                self.online = true;
            }
            DeviceMessage::Heartbeat(h) => {
                if newer {
                    self.running = Some(h.running.clone());
                    self.state = Some(h.state);
                    self.uptime_s = Some(h.uptime_s);
                    self.metrics = h.metrics.clone();
                    self.state_seq = seq;
                }
                self.online = true;
            }
            DeviceMessage::Presence(p) => {
                self.online = p.online;
                if p.online {
                    self.online_seq = self.online_seq.max(seq);
                }
                self.agent_version = Some(p.agent_version.clone());
            }
            // A batch may have waited in the device's queue; it says nothing about now
            // beyond the device being connected to deliver it.
            DeviceMessage::Signals(_) => self.online = true,
        }
    }
}

/// A device: registration and inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Who it is.
    pub registration: Registration,
    /// What it last said.
    pub inventory: Inventory,
}

/// The snake_case name of an update state, as the wire and the API spell it.
pub fn state_name(state: UpdateState) -> &'static str {
    match state {
        UpdateState::Idle => "idle",
        UpdateState::Downloading => "downloading",
        UpdateState::Verifying => "verifying",
        UpdateState::Installed => "installed",
        UpdateState::Trial => "trial",
        UpdateState::Reverting => "reverting",
        UpdateState::Committed => "committed",
        UpdateState::RolledBack => "rolled_back",
        UpdateState::Failed => "failed",
    }
}

/// Every update state, for parsing and for metrics.
pub const ALL_STATES: [UpdateState; 9] = [
    UpdateState::Idle,
    UpdateState::Downloading,
    UpdateState::Verifying,
    UpdateState::Installed,
    UpdateState::Trial,
    UpdateState::Reverting,
    UpdateState::Committed,
    UpdateState::RolledBack,
    UpdateState::Failed,
];

/// Parses a state name; `unknown` means a device that has not reported yet.
pub fn parse_state(s: &str) -> Option<Option<UpdateState>> {
    if s == "unknown" {
        return Some(None);
    }
    ALL_STATES
        .into_iter()
        .find(|st| state_name(*st) == s)
        .map(Some)
}

/// A device list filter; every given criterion must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Tags that must all be present with these values.
    pub tags: Vec<(Label, Label)>,
    /// The cohort.
    pub cohort: Option<Label>,
    /// The running version.
    pub version: Option<SemVer>,
    /// The update state (`Some(None)`: devices that have not reported a state).
    pub state: Option<Option<UpdateState>>,
    /// The time zone.
    pub zone: Option<Zone>,
    /// Online or offline.
    pub online: Option<bool>,
    /// Revoked or not.
    pub revoked: Option<bool>,
}

impl Filter {
    /// Whether `device` passes every criterion.
    pub fn matches(&self, device: &Device) -> bool {
        let reg = &device.registration;
        let inv = &device.inventory;
        self.tags.iter().all(|(k, v)| reg.tags.get(k) == Some(v))
            && self
                .cohort
                .as_ref()
                .is_none_or(|c| reg.cohort.as_ref() == Some(c))
            && self
                .version
                .as_ref()
                .is_none_or(|v| inv.running.as_ref().and_then(|r| r.version.as_ref()) == Some(v))
            && self.state.is_none_or(|s| inv.state == s)
            && self.zone.as_ref().is_none_or(|z| &reg.zone == z)
            && self.online.is_none_or(|o| inv.online == o)
            && self.revoked.is_none_or(|r| reg.revoked.is_some() == r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swell_proto::messages::Slot;

    fn device(id: &str, cohort: Option<&str>, tags: &[(&str, &str)]) -> Device {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        Device {
            registration: Registration {
                id: DeviceId::new(id).unwrap(),
                public_key: PublicKey::from(key.verifying_key()),
                hardware: HardwareId::new("gw-x86").unwrap(),
                zone: Zone::new("Europe/Berlin").unwrap(),
                cohort: cohort.map(|c| Label::new(c).unwrap()),
                tags: tags
                    .iter()
                    .map(|(k, v)| (Label::new(k).unwrap(), Label::new(v).unwrap()))
                    .collect(),
                provisioned_at: Timestamp::from_unix(0),
                provisioned_by: "t".into(),
                revoked: None,
            },
            inventory: Inventory::default(),
        }
    }

    #[test]
    fn zones_come_from_the_bundled_database() {
        assert_eq!(
            Zone::new("Europe/Berlin").unwrap().as_str(),
            "Europe/Berlin"
        );
        assert_eq!(
            Zone::new("America/Argentina/Buenos_Aires")
                .unwrap()
                .as_str(),
            "America/Argentina/Buenos_Aires"
        );
        assert_eq!(Zone::new("UTC").unwrap().as_str(), "UTC");
        for bad in [
            "",
            "Mars/Olympus_Mons",
            "Europe/Berlin/x",
            "+02:00",
            "EST5EDT,M3.2.0,M11.1.0",
            "../etc/passwd",
        ] {
            assert!(Zone::new(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn labels_use_the_safe_alphabet() {
        assert!(Label::new("canary").is_ok());
        assert!(Label::new("site-a.1_b").is_ok());
        for bad in ["", "-x", "a=b", "a b", "a/b", &"x".repeat(65)] {
            assert!(Label::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_combine_criteria() {
        let mut d = device("gw-1", Some("canary"), &[("site", "a"), ("role", "edge")]);
        d.inventory.apply(
            &DeviceMessage::Report(Report {
                device: d.registration.id.clone(),
                issued: Timestamp::from_unix(10),
                state: UpdateState::Committed,
                command: None,
                target: None,
                running: Running {
                    release: None,
                    version: Some(SemVer::new("1.2.0").unwrap()),
                    slot: Slot::B,
                    security_version: 1,
                },
                progress: None,
                reason: None,
            }),
            1,
            Timestamp::from_unix(11),
        );
        let l = |s: &str| Label::new(s).unwrap();
        let yes = [
            Filter::default(),
            Filter {
                tags: vec![(l("site"), l("a"))],
                ..Filter::default()
            },
            Filter {
                cohort: Some(l("canary")),
                ..Filter::default()
            },
            Filter {
                version: Some(SemVer::new("1.2.0").unwrap()),
                ..Filter::default()
            },
            Filter {
                state: Some(Some(UpdateState::Committed)),
                ..Filter::default()
            },
            Filter {
                zone: Some(Zone::new("Europe/Berlin").unwrap()),
                online: Some(true),
                revoked: Some(false),
                ..Filter::default()
            },
        ];
        for f in &yes {
            assert!(f.matches(&d), "{f:?}");
        }
        let no = [
            Filter {
                tags: vec![(l("site"), l("a")), (l("role"), l("core"))],
                ..Filter::default()
            },
            Filter {
                cohort: Some(l("main")),
                ..Filter::default()
            },
            Filter {
                version: Some(SemVer::new("1.3.0").unwrap()),
                ..Filter::default()
            },
            Filter {
                state: Some(None),
                ..Filter::default()
            },
            Filter {
                zone: Some(Zone::new("UTC").unwrap()),
                ..Filter::default()
            },
            Filter {
                revoked: Some(true),
                ..Filter::default()
            },
        ];
        for f in &no {
            assert!(!f.matches(&d), "{f:?}");
        }
    }

    #[test]
    fn presence_sets_online_and_reports_keep_the_last_error() {
        let mut inv = Inventory::default();
        let id = DeviceId::new("gw-1").unwrap();
        let presence = |online| {
            DeviceMessage::Presence(Presence {
                device: id.clone(),
                issued: Timestamp::from_unix(1),
                online,
                agent_version: "0.1.0".into(),
            })
        };
        inv.apply(&presence(true), 4, Timestamp::from_unix(2));
        assert!(inv.online);
        assert_eq!(inv.online_seq, 4, "a connection's presence numbers it");
        inv.apply(&presence(false), 5, Timestamp::from_unix(2));
        assert_eq!(inv.online_seq, 4, "going offline is not a new connection");
        inv.apply(&presence(false), 1, Timestamp::from_unix(2));
        assert!(!inv.online);
        assert_eq!(inv.last_seen, Some(Timestamp::from_unix(2)));
        let running = Running {
            release: None,
            version: None,
            slot: Slot::A,
            security_version: 0,
        };
        let report = |state, reason: Option<&str>| {
            DeviceMessage::Report(Report {
                device: id.clone(),
                issued: Timestamp::from_unix(3),
                state,
                command: Some("c1".into()),
                target: None,
                running: running.clone(),
                progress: None,
                reason: reason.map(str::to_owned),
            })
        };
        inv.apply(
            &report(UpdateState::RolledBack, Some("health check failed")),
            2,
            Timestamp::from_unix(4),
        );
        inv.apply(&report(UpdateState::Idle, None), 3, Timestamp::from_unix(5));
        assert_eq!(inv.last_error.as_deref(), Some("health check failed"));
        assert_eq!(inv.state, Some(UpdateState::Idle));
        assert!(inv.online);
    }

    /// A heartbeat signed before the last report but accepted after it (another topic) does
    /// not turn the state back.
    #[test]
    fn an_older_heartbeat_does_not_turn_the_state_back() {
        let mut inv = Inventory::default();
        let id = DeviceId::new("gw-1").unwrap();
        let running = |v: &str| Running {
            release: None,
            version: Some(SemVer::new(v).unwrap()),
            slot: Slot::B,
            security_version: 0,
        };
        inv.apply(
            &DeviceMessage::Report(Report {
                device: id.clone(),
                issued: Timestamp::from_unix(10),
                state: UpdateState::Committed,
                command: Some("gw-1.4".into()),
                target: None,
                running: running("1.3.0"),
                progress: None,
                reason: None,
            }),
            11,
            Timestamp::from_unix(10),
        );
        let beat = |seq: u64, state| {
            let h = Heartbeat {
                device: id.clone(),
                issued: Timestamp::from_unix(10),
                uptime_s: 5,
                state,
                running: running("1.3.0"),
                metrics: BTreeMap::new(),
            };
            (DeviceMessage::Heartbeat(h), seq)
        };
        let (old, seq) = beat(10, UpdateState::Trial);
        inv.apply(&old, seq, Timestamp::from_unix(11));
        assert_eq!(inv.state, Some(UpdateState::Committed));
        assert_eq!(inv.last_seen, Some(Timestamp::from_unix(11)));
        let (new, seq) = beat(12, UpdateState::Committed);
        inv.apply(&new, seq, Timestamp::from_unix(12));
        assert_eq!(
            (inv.state, inv.state_seq),
            (Some(UpdateState::Committed), 12)
        );
    }
}
