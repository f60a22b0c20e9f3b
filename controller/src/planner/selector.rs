//! Which devices a rollout or a stage selects.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use swell_proto::{DeviceId, HardwareId};

use super::fleet::FleetDevice;

/// Criteria on a device; every criterion given must hold (an empty selector selects every
/// device). Within a list, any entry may match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Tags the device must carry, each with this value.
    pub tags: BTreeMap<String, String>,
    /// Hardware models, any of which.
    pub hardware: BTreeSet<HardwareId>,
    /// The cohort the device must be in.
    pub cohort: Option<String>,
    /// A requirement on the version the device reports running (`<1.5.0`, `>=1.2, <1.4`).
    /// A device that has reported no version does not match one.
    pub version: Option<VersionReq>,
    /// Explicit device ids, any of which.
    pub devices: BTreeSet<DeviceId>,
}

/// A semantic version requirement, as Cargo writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionReq(semver::VersionReq);

impl VersionReq {
    /// Parses a requirement such as `>=1.4.0, <1.5.0`.
    pub fn new(s: &str) -> Result<VersionReq, String> {
        semver::VersionReq::parse(s)
            .map(VersionReq)
            .map_err(|e| format!("{s:?} is not a version requirement such as \"<1.5.0\": {e}"))
    }

    /// Whether `version` satisfies it.
    pub fn matches(&self, version: &swell_proto::SemVer) -> bool {
        // `SemVer` keeps its `semver::Version` private; its text form is exact.
        semver::Version::parse(&version.to_string()).is_ok_and(|v| self.0.matches(&v))
    }
}

impl fmt::Display for VersionReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Selector {
    /// Whether `device` meets every criterion.
    pub fn matches(&self, device: &FleetDevice) -> bool {
        self.tags.iter().all(|(k, v)| device.tags.get(k) == Some(v))
            && (self.hardware.is_empty() || self.hardware.contains(&device.hardware))
            && self
                .cohort
                .as_ref()
                .is_none_or(|c| device.cohort.as_ref() == Some(c))
            && self
                .version
                .as_ref()
                .is_none_or(|req| device.version.as_ref().is_some_and(|v| req.matches(v)))
            && (self.devices.is_empty() || self.devices.contains(&device.id))
    }

    /// Whether it has no criterion.
    pub fn is_empty(&self) -> bool {
        *self == Selector::default()
    }
}

impl fmt::Display for Selector {
    /// A compact one-line form: `tags ring=dev, hardware gw-x86|gw-arm, cohort canary`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.push(format!("tags {}", tags.join(",")));
        }
        if !self.hardware.is_empty() {
            let hw: Vec<&str> = self.hardware.iter().map(HardwareId::as_str).collect();
            parts.push(format!("hardware {}", hw.join("|")));
        }
        if let Some(c) = &self.cohort {
            parts.push(format!("cohort {c}"));
        }
        if let Some(v) = &self.version {
            parts.push(format!("version {v}"));
        }
        if !self.devices.is_empty() {
            parts.push(format!("{} listed devices", self.devices.len()));
        }
        if parts.is_empty() {
            f.write_str("all")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::fleet::Zone;
    use swell_proto::SemVer;

    fn device(version: Option<&str>) -> FleetDevice {
        FleetDevice {
            id: DeviceId::new("gw-1").unwrap(),
            hardware: HardwareId::new("gw-x86").unwrap(),
            zone: Zone::new("UTC").unwrap(),
            cohort: Some("canary".into()),
            tags: [("site".to_owned(), "fra".to_owned())].into(),
            version: version.map(|v| SemVer::new(v).unwrap()),
        }
    }

    #[test]
    fn every_criterion_must_hold() {
        let d = device(Some("1.4.2"));
        assert!(Selector::default().matches(&d));
        let mut s = Selector {
            tags: [("site".to_owned(), "fra".to_owned())].into(),
            hardware: [HardwareId::new("gw-arm").unwrap(), d.hardware.clone()].into(),
            cohort: Some("canary".into()),
            version: Some(VersionReq::new("<1.5.0").unwrap()),
            devices: [d.id.clone()].into(),
        };
        assert!(s.matches(&d));
        assert_eq!(
            s.to_string(),
            "tags site=fra, hardware gw-arm|gw-x86, cohort canary, version <1.5.0, 1 listed devices"
        );
        s.version = Some(VersionReq::new(">=1.5.0").unwrap());
        assert!(!s.matches(&d));
        s.version = Some(VersionReq::new("<1.5.0").unwrap());
        assert!(
            !s.matches(&device(None)),
            "no reported version matches no requirement"
        );
        s.cohort = Some("beta".into());
        assert!(!s.matches(&d));
    }
}
