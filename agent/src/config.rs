//! The agent's configuration: one TOML file, unknown fields refused, validated once at start.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use swell_proto::{DeviceId, HardwareId};

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config {path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the line and the field).
        detail: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config {path}: {field}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this device is.
    pub device: DeviceConfig,
    /// The trust root.
    pub trust: TrustConfig,
    /// The broker; without it the agent runs offline (local installs only).
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    /// The two slots.
    pub slots: SlotsConfig,
    /// The bootloader interface.
    pub boot: BootConfig,
    /// Health checks after a trial boot.
    #[serde(default)]
    pub health: HealthConfig,
    /// Where the agent keeps its journal.
    pub data_dir: PathBuf,
    /// Download settings.
    #[serde(default)]
    pub download: DownloadConfig,
    /// Microcontrollers behind this gateway, each on a serial line (`[[child]]` tables).
    #[serde(default, rename = "child")]
    pub children: Vec<crate::gateway::ChildConfig>,
    /// First-start enrollment with a token (see `crate::enroll`).
    #[serde(default)]
    pub enroll: Option<crate::enroll::EnrollConfig>,
    /// Health signals for the controller's verification (see `crate::signals`); none are
    /// collected without this table.
    #[serde(default)]
    pub signals: Option<SignalsConfig>,
}

/// `[signals]`: batches of health signals, one every `interval_secs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsConfig {
    /// Seconds per batch.
    #[serde(default = "default_signals_interval")]
    pub interval_secs: u64,
    /// Batches kept on disk while the broker is unreachable; the oldest are dropped beyond.
    #[serde(default = "default_signals_queue")]
    pub max_queued: usize,
    /// A file of `name value` lines (integers) an application keeps current; read at the end
    /// of each interval into the batch's metrics.
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
    /// Log files whose matching lines become error signatures (`[[signals.log]]` tables).
    #[serde(default, rename = "log")]
    pub logs: Vec<LogSource>,
    /// Watched services whose crashes are counted (`[[signals.service]]` tables).
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceWatch>,
}

/// One watched service: a command that prints how many times it has crashed so far (a
/// cumulative count, such as systemd's `NRestarts`:
/// `["systemctl", "show", "--property=NRestarts", "--value", "app.service"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceWatch {
    /// A name for messages.
    pub name: String,
    /// The command and its arguments; its standard output is one non-negative integer.
    pub crashes: Vec<String>,
}

/// One log file to follow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    /// The file. Followed from its end at agent start, across rotation (a new file under the
    /// name) and truncation.
    pub path: PathBuf,
    /// A line counts when it contains one of these strings (plain, case-sensitive substring
    /// match: no regular expressions).
    pub patterns: Vec<String>,
}

fn default_signals_interval() -> u64 {
    60
}

fn default_signals_queue() -> usize {
    crate::signals::queue::DEFAULT_MAX_QUEUED
}

/// The device's identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The device id (its MQTT topic level).
    pub id: DeviceId,
    /// The hardware id releases must list.
    pub hardware: HardwareId,
    /// The device's Ed25519 private key (PKCS#8 PEM); it signs every report.
    pub key: PathBuf,
}

/// The trust root.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// `root.json`, as provisioned (and later rotated).
    pub root: PathBuf,
}

/// The broker connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// CA certificate (PEM) for `mqtts://`.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; its key is the device key.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// MQTT keep-alive in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// Heartbeat period in seconds.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
}

fn default_keep_alive() -> u64 {
    30
}

fn default_heartbeat() -> u64 {
    60
}

/// The A/B slots: files or block devices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotsConfig {
    /// Slot A.
    pub a: PathBuf,
    /// Slot B.
    pub b: PathBuf,
}

/// Which bootloader environment the agent drives.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum BootConfig {
    /// U-Boot environment described by a libubootenv `fw_env.config`.
    Uboot {
        /// The `fw_env.config` file.
        fw_env_config: PathBuf,
        /// Trial boots before the bootloader falls back.
        #[serde(default = "default_bootlimit")]
        bootlimit: u32,
        /// Command that reboots the device.
        #[serde(default = "default_reboot")]
        reboot_command: Vec<String>,
    },
    /// GRUB environment block.
    Grub {
        /// The `grubenv` file.
        env: PathBuf,
        /// Trial boots before the bootloader falls back.
        #[serde(default = "default_bootlimit")]
        bootlimit: u32,
        /// Command that reboots the device.
        #[serde(default = "default_reboot")]
        reboot_command: Vec<String>,
    },
    /// The simulated board (tests and the demo): a U-Boot environment file driven by the
    /// board's boot ROM, which restarts the agent process on reboot.
    Simulated {
        /// The board's directory (environment file, boot counter).
        board: PathBuf,
        /// Trial boots before the boot ROM falls back.
        #[serde(default = "default_bootlimit")]
        bootlimit: u32,
    },
}

fn default_bootlimit() -> u32 {
    3
}

fn default_reboot() -> Vec<String> {
    vec!["systemctl".into(), "reboot".into()]
}

/// Health checks after a trial boot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Seconds after the trial boot by which every check must have passed.
    #[serde(default = "default_deadline")]
    pub deadline_secs: u64,
    /// Seconds the checks must keep passing before the image is committed.
    #[serde(default)]
    pub soak_secs: u64,
    /// Seconds between rounds of checks.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// The checks.
    #[serde(default, rename = "check")]
    pub checks: Vec<HealthCheck>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            deadline_secs: default_deadline(),
            soak_secs: 0,
            interval_secs: default_interval(),
            checks: Vec::new(),
        }
    }
}

fn default_deadline() -> u64 {
    300
}

fn default_interval() -> u64 {
    5
}

/// One health check.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HealthCheck {
    /// Run a command; it passes when it exits with `expect_exit` within `timeout_secs`.
    Command {
        /// Program and arguments.
        command: Vec<String>,
        /// The exit code that means healthy.
        #[serde(default)]
        expect_exit: i32,
        /// How long one run may take.
        #[serde(default = "default_check_timeout")]
        timeout_secs: u64,
    },
    /// GET a URL; it passes on `expect_status`.
    Http {
        /// The URL (`http://` or `https://`).
        url: String,
        /// The status that means healthy.
        #[serde(default = "default_status")]
        expect_status: u16,
        /// How long one request may take.
        #[serde(default = "default_check_timeout")]
        timeout_secs: u64,
    },
    /// The agent is connected to the broker (the controller can reach the device).
    Controller,
}

fn default_check_timeout() -> u64 {
    10
}

fn default_status() -> u16 {
    200
}

/// Download settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadConfig {
    /// Seconds to establish a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds without data after which a download counts as stalled.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_secs: u64,
    /// Attempts for transient failures before the update fails.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Bytes between download checkpoints (slot synced, resume point recorded). The download
    /// reads 1 MiB at a time, so values below that checkpoint after every read.
    #[serde(default = "default_checkpoint_bytes")]
    pub checkpoint_bytes: u64,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            connect_timeout_secs: default_connect_timeout(),
            stall_timeout_secs: default_stall_timeout(),
            attempts: default_attempts(),
            checkpoint_bytes: default_checkpoint_bytes(),
        }
    }
}

fn default_checkpoint_bytes() -> u64 {
    crate::download::CHECKPOINT_EVERY
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_stall_timeout() -> u64 {
    30
}

fn default_attempts() -> u32 {
    5
}

/// The parser's message on one line, prefixed with where: its `Display` is a multi-line
/// snippet, and the agent reports an error as one line on stderr.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`, naming `path` in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: one_line(text, &e),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field, why: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            why: why.to_string(),
        };
        if self.slots.a == self.slots.b {
            return Err(invalid("slots", "slot a and slot b are the same path"));
        }
        if let Some(mqtt) = &self.mqtt {
            let tls = mqtt.url.starts_with("mqtts://");
            if !tls && !mqtt.url.starts_with("mqtt://") {
                return Err(invalid("mqtt.url", "must start with mqtt:// or mqtts://"));
            }
            if tls && mqtt.ca.is_none() && self.enroll.is_none() {
                return Err(invalid("mqtt.ca", "mqtts:// needs a CA certificate"));
            }
            if mqtt.keep_alive_secs < 5 {
                return Err(invalid("mqtt.keep_alive_secs", "must be at least 5"));
            }
        }
        let bootlimit = match &self.boot {
            BootConfig::Uboot { bootlimit, .. }
            | BootConfig::Grub { bootlimit, .. }
            | BootConfig::Simulated { bootlimit, .. } => *bootlimit,
        };
        if bootlimit == 0 {
            return Err(invalid("boot.bootlimit", "must be at least 1"));
        }
        if let BootConfig::Uboot { reboot_command, .. } | BootConfig::Grub { reboot_command, .. } =
            &self.boot
            && reboot_command.is_empty()
        {
            return Err(invalid("boot.reboot_command", "must name a program"));
        }
        let h = &self.health;
        if h.interval_secs == 0 {
            return Err(invalid("health.interval_secs", "must be at least 1"));
        }
        if h.soak_secs >= h.deadline_secs {
            return Err(invalid(
                "health.soak_secs",
                "must be shorter than health.deadline_secs",
            ));
        }
        for check in &h.checks {
            if let HealthCheck::Command { command, .. } = check
                && command.is_empty()
            {
                return Err(invalid("health.check.command", "must name a program"));
            }
        }
        if self.download.attempts == 0 {
            return Err(invalid("download.attempts", "must be at least 1"));
        }
        if self.download.checkpoint_bytes == 0 {
            return Err(invalid("download.checkpoint_bytes", "must be at least 1"));
        }
        crate::gateway::config::validate(&self.children, &self.device.id)
            .map_err(|(field, why)| invalid(field, &why))?;
        if let Some(s) = &self.signals {
            if s.interval_secs == 0 {
                return Err(invalid("signals.interval_secs", "must be at least 1"));
            }
            if s.max_queued == 0 {
                return Err(invalid("signals.max_queued", "must be at least 1"));
            }
            for log in &s.logs {
                if log.patterns.is_empty() || log.patterns.iter().any(String::is_empty) {
                    return Err(invalid(
                        "signals.log.patterns",
                        "must list at least one pattern, none of them empty",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("agent.toml"))
    }

    /// A minimal file gives the documented defaults.
    #[test]
    fn minimal_config_has_defaults() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.device.id.as_str(), "gw-1");
        assert!(c.mqtt.is_none());
        assert_eq!(c.health.deadline_secs, 300);
        let BootConfig::Uboot {
            bootlimit,
            reboot_command,
            ..
        } = &c.boot
        else {
            panic!()
        };
        assert_eq!((*bootlimit, reboot_command[0].as_str()), (3, "systemctl"));
    }

    /// Health checks of every kind parse.
    #[test]
    fn health_checks_parse() {
        let text = format!(
            "{BASE}\n[health]\ndeadline_secs = 120\nsoak_secs = 30\n\
             [[health.check]]\nkind = \"command\"\ncommand = [\"systemctl\", \"is-active\", \"app\"]\n\
             [[health.check]]\nkind = \"http\"\nurl = \"http://127.0.0.1:8080/healthz\"\n\
             [[health.check]]\nkind = \"controller\"\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.health.checks.len(), 3);
    }

    /// Unknown fields, bad ids and inconsistent values are refused with the field named.
    #[test]
    fn refuses_bad_configs() {
        let unknown = format!("{BASE}\ncolour = \"blue\"\n");
        let e = parse(&unknown).unwrap_err().to_string();
        assert!(e.contains("colour") && e.contains(", column "), "{e}");
        assert!(!e.contains('\n'), "not one line: {e}");
        let bad_id = BASE.replace("gw-1", "gw/1");
        assert!(
            parse(&bad_id)
                .unwrap_err()
                .to_string()
                .contains("device id")
        );
        let same = BASE.replace("mmcblk0p3", "mmcblk0p2");
        assert!(parse(&same).unwrap_err().to_string().contains("slots"));
        let tls = format!("{BASE}\n[mqtt]\nurl = \"mqtts://broker:8883\"\n");
        assert!(parse(&tls).unwrap_err().to_string().contains("mqtt.ca"));
        let soak = format!("{BASE}\n[health]\ndeadline_secs = 10\nsoak_secs = 10\n");
        assert!(parse(&soak).unwrap_err().to_string().contains("soak"));
        let no_patterns =
            format!("{BASE}\n[signals]\n[[signals.log]]\npath = \"/x.log\"\npatterns = []\n");
        assert!(
            parse(&no_patterns)
                .unwrap_err()
                .to_string()
                .contains("signals.log.patterns")
        );
    }

    /// `[signals]` with its defaults and a log source.
    #[test]
    fn signals_parse() {
        let text = format!(
            "{BASE}\n[signals]\n[[signals.log]]\npath = \"/var/log/app.log\"\n\
             patterns = [\"ERROR\", \"panic\"]\n"
        );
        let s = parse(&text).unwrap().signals.unwrap();
        assert_eq!((s.interval_secs, s.max_queued), (60, 1440));
        assert_eq!(s.logs[0].patterns, ["ERROR", "panic"]);
        assert!(parse(BASE).unwrap().signals.is_none());
    }
}
