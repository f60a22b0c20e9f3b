//! The fleet as the planner sees it: a snapshot of the devices a rollout may touch, each with
//! what selectors look at (hardware, cohort, tags, running version) and its IANA time zone.
//!
//! The service builds a [`FleetSnapshot`] from its registry (leaving revoked devices out); the
//! planner never reads the registry itself, so a schedule depends only on the snapshot it is
//! given.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use jiff::tz::{TimeZone, TimeZoneDatabase};
use swell_proto::{DeviceId, HardwareId, SemVer};

/// The tz database compiled into the binary. The planner resolves zone names only here, never
/// in `/usr/share/zoneinfo`, so a schedule is the same on every host: the host's database may
/// be older or newer than the one the tests were written against.
static BUNDLED: LazyLock<TimeZoneDatabase> = LazyLock::new(TimeZoneDatabase::bundled);

/// A device's IANA time zone, resolved against the bundled tz database.
///
/// Equality and order are by name, in the database's own spelling (`europe/london` is kept as
/// `Europe/London`).
#[derive(Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    /// Looks `name` up in the bundled tz database. Only IANA names are accepted: POSIX TZ
    /// strings and fixed offsets say nothing about future daylight saving rules.
    pub fn new(name: &str) -> Result<Zone, InvalidZone> {
        let tz = BUNDLED
            .get(name)
            .map_err(|_| InvalidZone(name.to_owned()))?;
        let name = tz.iana_name().unwrap_or(name).to_owned();
        Ok(Zone { name, tz })
    }

    /// The zone's IANA name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The zone's rules.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

impl PartialOrd for Zone {
    fn partial_cmp(&self, other: &Zone) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Zone {
    fn cmp(&self, other: &Zone) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

/// A name that is not in the bundled tz database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IANA time zone name (such as Europe/Berlin)")]
pub struct InvalidZone(pub String);

/// One device as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetDevice {
    /// Its id; schedules break every tie by it.
    pub id: DeviceId,
    /// Its hardware model.
    pub hardware: HardwareId,
    /// Its local time zone: maintenance windows are opened in it.
    pub zone: Zone,
    /// Its cohort (`canary`, ...), if any.
    pub cohort: Option<String>,
    /// Its tags (`site = "fra-2"`, `ring = "production"`, ...).
    pub tags: BTreeMap<String, String>,
    /// The version it last reported running, if it has reported one.
    pub version: Option<SemVer>,
}

/// The devices a rollout is planned over, in device id order whatever order they were given
/// in, each id once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSnapshot {
    devices: Vec<FleetDevice>,
}

/// Two devices in a snapshot share an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device {0} appears twice in the fleet snapshot")]
pub struct DuplicateDevice(pub DeviceId);

impl FleetSnapshot {
    /// Sorts `devices` by id and refuses duplicates, so the input order cannot reach the
    /// schedule.
    pub fn new(devices: impl IntoIterator<Item = FleetDevice>) -> Result<Self, DuplicateDevice> {
        let mut devices: Vec<FleetDevice> = devices.into_iter().collect();
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(w) = devices.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(DuplicateDevice(w[0].id.clone()));
        }
        Ok(FleetSnapshot { devices })
    }

    /// The devices, by id.
    pub fn devices(&self) -> &[FleetDevice] {
        &self.devices
    }

    /// The device with this id.
    pub fn get(&self, id: &DeviceId) -> Option<&FleetDevice> {
        self.devices
            .binary_search_by(|d| d.id.cmp(id))
            .ok()
            .map(|i| &self.devices[i])
    }

    /// How many devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str) -> FleetDevice {
        FleetDevice {
            id: DeviceId::new(id).unwrap(),
            hardware: HardwareId::new("gw").unwrap(),
            zone: Zone::new("Europe/London").unwrap(),
            cohort: None,
            tags: BTreeMap::new(),
            version: None,
        }
    }

    #[test]
    fn zones_are_iana_names_in_canonical_spelling() {
        assert_eq!(Zone::new("europe/london").unwrap().name(), "Europe/London");
        assert!(Zone::new("Mars/Olympus_Mons").is_err());
        assert!(Zone::new("").is_err());
    }

    #[test]
    fn snapshot_sorts_and_refuses_duplicates() {
        let s = FleetSnapshot::new([device("b"), device("a")]).unwrap();
        let ids: Vec<_> = s.devices().iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(s.get(&DeviceId::new("b").unwrap()).is_some());
        assert_eq!(
            FleetSnapshot::new([device("a"), device("a")]).unwrap_err(),
            DuplicateDevice(DeviceId::new("a").unwrap())
        );
    }
}
