//! `[[child]]` tables: the microcontrollers behind this gateway, each on its own serial line.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;
use swell_proto::{DeviceId, HardwareId};

/// Baud rates the gateway sets. Every Linux UART driver knows these; a line that needs another
/// rate is configured outside the agent (udev, `stty`) and its `baud_rate` left out.
pub const BAUD_RATES: &[u32] = &[
    9_600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 500_000, 576_000, 921_600, 1_000_000,
    1_500_000, 2_000_000, 3_000_000, 4_000_000,
];

/// One child device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildConfig {
    /// The child's device id: releases name it as their artifact's `target`, and its reports
    /// carry it as `child`.
    pub id: DeviceId,
    /// The child's hardware id: releases for it must list it, and the MCU must report it.
    pub hardware: HardwareId,
    /// The serial line: a UART (`/dev/ttyUSB0`, `/dev/ttyAMA0`) or a pty.
    pub port: PathBuf,
    /// The line's speed. Absent: the agent leaves the speed as it is (set by udev or `stty`)
    /// and only puts the line in raw mode.
    #[serde(default)]
    pub baud_rate: Option<u32>,
    /// Milliseconds to wait for one answer before the request is sent again. Must cover the
    /// MCU's slowest answer: a FINISH hashes the whole image and checks its signatures, and
    /// a DATA that starts a flash page erases it first.
    #[serde(default = "default_answer_timeout")]
    pub answer_timeout_ms: u64,
    /// Milliseconds between two polls of the MCU while it swaps, runs its trial or reverts.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_ms: u64,
    /// Seconds after the swap was requested by which the MCU must have committed or reverted;
    /// after that the update is reported failed.
    #[serde(default = "default_settle_timeout")]
    pub settle_timeout_secs: u64,
    /// Transfer attempts (each resumes where the MCU's confirmed data ends) before the update
    /// fails.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

fn default_answer_timeout() -> u64 {
    2_000
}

fn default_poll_interval() -> u64 {
    500
}

fn default_settle_timeout() -> u64 {
    300
}

fn default_attempts() -> u32 {
    3
}

/// Checks the `[[child]]` tables against each other and the gateway's own id; on error,
/// returns the field and what is wrong with it.
pub fn validate(
    children: &[ChildConfig],
    gateway: &DeviceId,
) -> Result<(), (&'static str, String)> {
    let mut ids = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for c in children {
        if &c.id == gateway {
            return Err(("child.id", format!("{} is the gateway's own id", c.id)));
        }
        if !ids.insert(&c.id) {
            return Err(("child.id", format!("{} is listed twice", c.id)));
        }
        if !ports.insert(&c.port) {
            return Err((
                "child.port",
                format!("{} serves two children", c.port.display()),
            ));
        }
        if c.port.as_os_str().is_empty() {
            return Err(("child.port", "must name a serial device".to_string()));
        }
        if let Some(baud) = c.baud_rate
            && !BAUD_RATES.contains(&baud)
        {
            return Err((
                "child.baud_rate",
                format!(
                    "{baud} is not one of {BAUD_RATES:?}; leave it out and set the line with stty"
                ),
            ));
        }
        let positive = [
            ("child.answer_timeout_ms", c.answer_timeout_ms),
            ("child.poll_interval_ms", c.poll_interval_ms),
            ("child.settle_timeout_secs", c.settle_timeout_secs),
            ("child.attempts", u64::from(c.attempts)),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err((field, "must be at least 1".to_string()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const BASE: &str = r#"
data_dir = "/var/lib/swell"
[device]
id = "gw-1"
hardware = "rpi4"
key = "/etc/swell/device.pem"
[trust]
root = "/etc/swell/root.json"
[slots]
a = "/dev/mmcblk0p2"
b = "/dev/mmcblk0p3"
[boot]
backend = "uboot"
fw_env_config = "/etc/fw_env.config"
"#;

    fn parse(children: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{BASE}{children}"), Path::new("agent.toml"))
    }

    fn child(id: &str, port: &str, extra: &str) -> String {
        format!("[[child]]\nid = \"{id}\"\nhardware = \"sensor-v2\"\nport = \"{port}\"\n{extra}")
    }

    /// A child table gets the documented defaults; no table means no children.
    #[test]
    fn children_parse_with_defaults() {
        assert!(parse("").unwrap().children.is_empty());
        let c = parse(&child("mcu-1", "/dev/ttyUSB0", "baud_rate = 115200\n")).unwrap();
        let c = &c.children[0];
        assert_eq!((c.id.as_str(), c.baud_rate), ("mcu-1", Some(115_200)));
        assert_eq!(
            (
                c.answer_timeout_ms,
                c.poll_interval_ms,
                c.settle_timeout_secs,
                c.attempts
            ),
            (2_000, 500, 300, 3)
        );
    }

    /// Duplicates, the gateway's own id, odd baud rates, zero timeouts and unknown fields
    /// are refused with the field named.
    #[test]
    fn bad_children_are_refused() {
        let cases = [
            (
                format!(
                    "{}{}",
                    child("mcu-1", "/dev/ttyUSB0", ""),
                    child("mcu-1", "/dev/ttyUSB1", "")
                ),
                "child.id: mcu-1 is listed twice",
            ),
            (
                format!(
                    "{}{}",
                    child("mcu-1", "/dev/ttyUSB0", ""),
                    child("mcu-2", "/dev/ttyUSB0", "")
                ),
                "child.port",
            ),
            (child("gw-1", "/dev/ttyUSB0", ""), "the gateway's own id"),
            (
                child("mcu-1", "/dev/ttyUSB0", "baud_rate = 12345\n"),
                "child.baud_rate",
            ),
            (
                child("mcu-1", "/dev/ttyUSB0", "answer_timeout_ms = 0\n"),
                "child.answer_timeout_ms: must be at least 1",
            ),
            (
                child("mcu-1", "/dev/ttyUSB0", "parity = \"even\"\n"),
                "unknown field `parity`",
            ),
        ];
        for (text, needle) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
