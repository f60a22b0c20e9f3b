//! The MQTT topic scheme. Everything about one device lives under
//! `swell/v1/devices/{device_id}/`, so a single broker ACL pattern
//! (`pattern readwrite swell/v1/devices/%u/#` in Mosquitto) confines a device to its subtree.

use alloc::format;
use alloc::string::String;

use crate::ids::DeviceId;

/// The prefix of every Swell topic; the `v1` level is the protocol's major version.
pub const PREFIX: &str = "swell/v1";

/// What the controller subscribes to: every device topic of every device.
pub const ALL_DEVICES: &str = "swell/v1/devices/+/+";

/// The topics of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceTopic {
    /// `cmd`: controller → device, signed commands (QoS 1).
    Command,
    /// `report`: device → controller, signed state reports (QoS 1).
    Report,
    /// `health`: device → controller, signed heartbeats (QoS 0).
    Health,
    /// `presence`: device → controller, signed online/offline, retained; the offline message
    /// is the connection's last will.
    Presence,
    /// `signals`: device → controller, signed health-signal batches (QoS 1), queued on the
    /// device while it is offline.
    Signals,
}

impl DeviceTopic {
    /// Every device topic.
    pub const ALL: [DeviceTopic; 5] = [
        DeviceTopic::Command,
        DeviceTopic::Report,
        DeviceTopic::Health,
        DeviceTopic::Presence,
        DeviceTopic::Signals,
    ];

    /// The last topic level.
    pub const fn suffix(self) -> &'static str {
        match self {
            DeviceTopic::Command => "cmd",
            DeviceTopic::Report => "report",
            DeviceTopic::Health => "health",
            DeviceTopic::Presence => "presence",
            DeviceTopic::Signals => "signals",
        }
    }

    /// The full topic for `device`.
    pub fn for_device(self, device: &DeviceId) -> String {
        format!("{PREFIX}/devices/{device}/{}", self.suffix())
    }

    /// Splits a device topic into its device id and kind; `None` for anything else.
    pub fn parse(topic: &str) -> Option<(DeviceId, DeviceTopic)> {
        let rest = topic.strip_prefix(PREFIX)?.strip_prefix("/devices/")?;
        let (device, suffix) = rest.split_once('/')?;
        let kind = DeviceTopic::ALL
            .into_iter()
            .find(|k| k.suffix() == suffix)?;
        Some((DeviceId::new(device).ok()?, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        let id = DeviceId::new("gw-7").unwrap();
        for kind in DeviceTopic::ALL {
            let topic = kind.for_device(&id);
            assert!(topic.starts_with("swell/v1/devices/gw-7/"));
            assert_eq!(DeviceTopic::parse(&topic), Some((id.clone(), kind)));
        }
        assert_eq!(DeviceTopic::parse("swell/v1/devices/gw-7/cmd/x"), None);
        assert_eq!(DeviceTopic::parse("swell/v1/devices/+/cmd"), None);
        assert_eq!(DeviceTopic::parse("swell/v2/devices/gw-7/cmd"), None);
    }
}
