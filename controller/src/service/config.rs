//! The controller's configuration: one TOML file, unknown fields refused, validated once by
//! [`Config::load`] into typed values (addresses parsed, the trust root verified, the controller
//! key read and checked against the root's controller role). Everything after start-up takes a
//! `Config` and never re-reads the file.
//!
//! Relative paths in the file are relative to the directory holding the file, so a config and
//! the files it names can move together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::Deserialize;
use swell_proto::keys::pem;
use swell_proto::{PublicKey, Sha256Digest, TrustRoot};
use zeroize::Zeroizing;

use super::auth::{Role, TokenTable};

/// Largest config file read: a config with thousands of tokens is still far below this.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Largest PEM key file read (a PEM Ed25519 key is under 200 bytes).
const MAX_KEY_BYTES: u64 = 16 * 1024;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("reading {what} {path}")]
    Read {
        /// Which file: `config`, `trust root`, `controller key`.
        what: &'static str,
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
    /// A value is out of range, inconsistent, or names an unusable file.
    #[error("config {path}: {field}: {why}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Where the store and the artifacts live.
    pub data_dir: PathBuf,
    /// The HTTP API.
    pub http: HttpConfig,
    /// The MQTT broker.
    pub broker: BrokerConfig,
    /// The trust root and the controller's signing key.
    pub trust: TrustConfig,
    /// The API's bearer tokens.
    pub tokens: TokenTable,
    /// The state store.
    pub store: StoreConfig,
    /// Where the service's time comes from.
    pub clock: ClockConfig,
    /// The rollout executor.
    pub rollouts: RolloutsConfig,
    /// Webhooks told about rollout events.
    pub webhooks: Vec<WebhookConfig>,
}

/// Where the service's time comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockConfig {
    /// The system clock.
    System,
    /// A simulated clock for tests and demonstrations: it shows `start` at the real instant
    /// `anchor` (by default, when the service starts) and runs `speed` times faster than real
    /// time. Maintenance windows, device timeouts and soaks all follow it; devices keep their
    /// own real clocks. With an `anchor`, a restarted controller continues the same timeline.
    Simulated {
        /// The instant the clock shows at `anchor`.
        start: swell_proto::Timestamp,
        /// How many simulated seconds pass per real second (1 to 3600).
        speed: f64,
        /// The real instant at which the clock showed `start`.
        anchor: Option<swell_proto::Timestamp>,
    },
}

/// The rollout executor's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutsConfig {
    /// How often (real milliseconds) the executor re-evaluates every active rollout when no
    /// device report wakes it earlier.
    pub tick_ms: u64,
}

/// Default [`RolloutsConfig::tick_ms`].
pub const DEFAULT_TICK_MS: u64 = 1000;

/// One webhook: where rollout events are POSTed and the secret their HMAC is keyed with.
#[derive(Clone)]
pub struct WebhookConfig {
    /// A name for logs and the audit log.
    pub name: String,
    /// `http://` or `https://` URL.
    pub url: String,
    /// The HMAC-SHA256 key (from `secret_file`).
    pub secret: Zeroizing<Vec<u8>>,
    /// The event kinds sent (`rollout.aborted`, ...); empty means every event.
    pub events: Vec<String>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// The HTTP API.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The base URL devices use to reach the controller (artifact downloads); `None` means
    /// `http://` + the bound address.
    pub public_url: Option<String>,
}

/// The MQTT broker.
#[derive(Debug, Clone)]
pub enum BrokerConfig {
    /// rumqttd inside the controller process.
    Embedded {
        /// Where the broker listens (port 0 picks a free port).
        listen: SocketAddr,
    },
    /// A broker run elsewhere (Mosquitto in production).
    External(ExternalBroker),
}

/// A broker run elsewhere.
#[derive(Debug, Clone)]
pub struct ExternalBroker {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Whether the URL asks for TLS.
    pub tls: bool,
    /// The host.
    pub host: String,
    /// The port.
    pub port: u16,
    /// CA certificate (PEM) for `mqtts://`.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// The MQTT client id (and, with `use_identity_as_username`, the certificate's CN).
    pub client_id: String,
}

/// The state store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    /// redb (the default).
    Redb,
    /// sled.
    Sled,
}

/// The state store.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// The backend.
    pub backend: StoreBackend,
}

/// The trust root and the key the controller signs commands with.
pub struct TrustConfig {
    /// The verified root.
    pub root: TrustRoot,
    /// Its file.
    pub root_path: PathBuf,
    /// The controller key: a key of the root's controller role.
    pub controller_key: SigningKey,
}

impl std::fmt::Debug for TrustConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is never printed.
        f.debug_struct("TrustConfig")
            .field("root_path", &self.root_path)
            .field("root_version", &self.root.header().version)
            .field(
                "controller_key",
                &PublicKey::from(self.controller_key.verifying_key()).key_id(),
            )
            .finish()
    }
}

/// The file's schema. Only this module sees it; the rest of the service sees [`Config`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: PathBuf,
    http: RawHttp,
    broker: RawBroker,
    trust: RawTrust,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    clock: Option<RawClock>,
    #[serde(default)]
    rollouts: RawRollouts,
    #[serde(default)]
    webhook: Vec<RawWebhook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClock {
    start: String,
    speed: f64,
    #[serde(default)]
    anchor: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRollouts {
    #[serde(default)]
    tick_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: String,
    url: String,
    secret_file: PathBuf,
    #[serde(default)]
    events: Vec<String>,
}

/// Largest webhook secret file read.
const MAX_SECRET_BYTES: u64 = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: String,
    #[serde(default)]
    public_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    mode: RawBrokerMode,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    insecure_listen_any: bool,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    ca: Option<PathBuf>,
    #[serde(default)]
    cert: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawBrokerMode {
    Embedded,
    External,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    root: PathBuf,
    controller_key: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    #[serde(default)]
    token: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    role: Role,
    sha256: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default)]
    backend: Option<RawBackend>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawBackend {
    Redb,
    Sled,
}

/// The embedded broker's default address: loopback only (see [`Config::load`]).
pub const DEFAULT_EMBEDDED_LISTEN: &str = "127.0.0.1:1883";

/// The controller's MQTT client id unless the config names another.
pub const DEFAULT_CLIENT_ID: &str = "swell-controller";

/// Splits `mqtt://host:port` or `mqtts://host:port` into (tls, host, port).
pub fn parse_broker_url(url: &str) -> Option<(bool, String, u16)> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else {
        (false, url.strip_prefix("mqtt://")?)
    };
    let (host, port) = rest.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return None;
    }
    Some((tls, host.to_owned(), port.parse().ok()?))
}

fn read_bounded(what: &'static str, path: &Path, limit: u64) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read as _;
    let read_err = |source| ConfigError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > limit {
        return Err(read_err(std::io::Error::other(format!(
            "larger than {limit} bytes"
        ))));
    }
    Ok(bytes)
}

impl Config {
    /// Reads and validates the config file at `path`, and the trust root and key it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = read_bounded("config", path, MAX_CONFIG_BYTES)?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: "not UTF-8".into(),
        })?;
        Self::from_toml(&text, path)
    }

    /// Validates `text`, the contents of the config file at `path` (relative paths in it are
    /// taken relative to that file's directory).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // One line: the parser's message and where, without its multi-line snippet.
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            ConfigError::Parse {
                path: path.to_path_buf(),
                detail: match line {
                    Some(line) => format!("line {line}: {}", e.message()),
                    None => e.message().to_owned(),
                },
            }
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let invalid = |field: &'static str, why: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            why,
        };

        let http = HttpConfig {
            listen: raw.http.listen.parse().map_err(|_| {
                invalid(
                    "http.listen",
                    format!("{:?} is not host:port", raw.http.listen),
                )
            })?,
            public_url: match raw.http.public_url {
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                    Some(url.trim_end_matches('/').to_owned())
                }
                Some(url) => {
                    return Err(invalid(
                        "http.public_url",
                        format!("{url:?} must start with http:// or https://"),
                    ));
                }
                None => None,
            },
        };

        let broker = broker_config(&raw.broker, &resolve, &invalid)?;
        let trust = trust_config(&raw.trust, &resolve, &invalid)?;

        let mut tokens = TokenTable::default();
        for t in raw.api.token {
            let digest = Sha256Digest::from_hex(&t.sha256)
                .map_err(|e| invalid("api.token.sha256", format!("token {:?}: {e}", t.name)))?;
            tokens
                .insert(t.name, t.role, digest)
                .map_err(|why| invalid("api.token", why))?;
        }

        let store = StoreConfig {
            backend: match raw.store.backend {
                None | Some(RawBackend::Redb) => StoreBackend::Redb,
                Some(RawBackend::Sled) => StoreBackend::Sled,
            },
        };

        let clock = match raw.clock {
            None => ClockConfig::System,
            Some(c) => {
                let start = swell_proto::Timestamp::parse(&c.start)
                    .map_err(|e| invalid("clock.start", format!("{:?}: {e}", c.start)))?;
                if !(1.0..=3600.0).contains(&c.speed) {
                    return Err(invalid(
                        "clock.speed",
                        format!("{} is not from 1 to 3600", c.speed),
                    ));
                }
                let anchor = c
                    .anchor
                    .map(|a| {
                        swell_proto::Timestamp::parse(&a)
                            .map_err(|e| invalid("clock.anchor", format!("{a:?}: {e}")))
                    })
                    .transpose()?;
                ClockConfig::Simulated {
                    start,
                    speed: c.speed,
                    anchor,
                }
            }
        };
        let rollouts = RolloutsConfig {
            tick_ms: match raw.rollouts.tick_ms {
                None => DEFAULT_TICK_MS,
                Some(ms @ 10..=60_000) => ms,
                Some(ms) => {
                    return Err(invalid(
                        "rollouts.tick_ms",
                        format!("{ms} is not from 10 to 60000"),
                    ));
                }
            },
        };
        let mut webhooks = Vec::new();
        for w in raw.webhook {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(invalid(
                    "webhook.url",
                    format!(
                        "webhook {:?}: {:?} must start with http:// or https://",
                        w.name, w.url
                    ),
                ));
            }
            if let Some(bad) = w
                .events
                .iter()
                .find(|e| !super::webhooks::EVENT_KINDS.contains(&e.as_str()))
            {
                return Err(invalid(
                    "webhook.events",
                    format!(
                        "webhook {:?}: {bad:?} is not one of {}",
                        w.name,
                        super::webhooks::EVENT_KINDS.join(", ")
                    ),
                ));
            }
            if webhooks.iter().any(|h: &WebhookConfig| h.name == w.name) {
                return Err(invalid(
                    "webhook.name",
                    format!("{:?} is used twice", w.name),
                ));
            }
            let secret = Zeroizing::new(read_bounded(
                "webhook secret",
                &resolve(&w.secret_file),
                MAX_SECRET_BYTES,
            )?);
            let trimmed = secret.trim_ascii();
            if trimmed.len() < 16 {
                return Err(invalid(
                    "webhook.secret_file",
                    format!("webhook {:?}: the secret must be at least 16 bytes", w.name),
                ));
            }
            webhooks.push(WebhookConfig {
                name: w.name,
                url: w.url,
                secret: Zeroizing::new(trimmed.to_vec()),
                events: w.events,
            });
        }

        Ok(Config {
            data_dir: resolve(&raw.data_dir),
            http,
            broker,
            trust,
            tokens,
            store,
            clock,
            rollouts,
            webhooks,
        })
    }
}

fn broker_config(
    raw: &RawBroker,
    resolve: &dyn Fn(&Path) -> PathBuf,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<BrokerConfig, ConfigError> {
    // Each mode refuses the other mode's fields, so a typo'd mode is not silently half-used.
    let foreign = |field: &'static str, present: bool, mode: &str| {
        if present {
            Err(invalid(field, format!("not used with mode = \"{mode}\"")))
        } else {
            Ok(())
        }
    };
    match raw.mode {
        RawBrokerMode::Embedded => {
            foreign("broker.url", raw.url.is_some(), "embedded")?;
            foreign("broker.ca", raw.ca.is_some(), "embedded")?;
            foreign("broker.cert", raw.cert.is_some(), "embedded")?;
            foreign("broker.key", raw.key.is_some(), "embedded")?;
            foreign("broker.client_id", raw.client_id.is_some(), "embedded")?;
            let text = raw.listen.as_deref().unwrap_or(DEFAULT_EMBEDDED_LISTEN);
            let listen: SocketAddr = text
                .parse()
                .map_err(|_| invalid("broker.listen", format!("{text:?} is not ip:port")))?;
            // The embedded broker cannot confine a device to its own topics, so anyone who can
            // reach it can publish as any device (the controller still drops what does not
            // verify, but can be flooded) and read every command. Loopback keeps it to this
            // machine unless the operator says otherwise, in writing.
            if !listen.ip().is_loopback() && !raw.insecure_listen_any {
                return Err(invalid(
                    "broker.listen",
                    format!(
                        "{listen} is not a loopback address; the embedded broker cannot enforce \
                         per-device topic ACLs, so it listens beyond this machine only with \
                         insecure_listen_any = true (use an external broker such as Mosquitto \
                         in production)"
                    ),
                ));
            }
            Ok(BrokerConfig::Embedded { listen })
        }
        RawBrokerMode::External => {
            foreign("broker.listen", raw.listen.is_some(), "external")?;
            foreign(
                "broker.insecure_listen_any",
                raw.insecure_listen_any,
                "external",
            )?;
            let url = raw
                .url
                .clone()
                .ok_or_else(|| invalid("broker.url", "required with mode = \"external\"".into()))?;
            let (tls, host, port) = parse_broker_url(&url).ok_or_else(|| {
                invalid(
                    "broker.url",
                    format!("{url:?}: expected mqtt://host:port or mqtts://host:port"),
                )
            })?;
            if tls && raw.ca.is_none() {
                return Err(invalid("broker.ca", "required for mqtts://".into()));
            }
            if !tls && (raw.ca.is_some() || raw.cert.is_some() || raw.key.is_some()) {
                return Err(invalid(
                    "broker.url",
                    "TLS files are given but the URL is mqtt://; use mqtts://".into(),
                ));
            }
            if raw.cert.is_some() != raw.key.is_some() {
                return Err(invalid(
                    "broker.cert",
                    "a client certificate needs its key (broker.key), and the other way round"
                        .into(),
                ));
            }
            let client_id = raw
                .client_id
                .clone()
                .unwrap_or_else(|| DEFAULT_CLIENT_ID.into());
            if client_id.is_empty() || client_id.len() > 64 {
                return Err(invalid("broker.client_id", "1 to 64 characters".into()));
            }
            Ok(BrokerConfig::External(ExternalBroker {
                url,
                tls,
                host,
                port,
                ca: raw.ca.as_deref().map(resolve),
                cert: raw.cert.as_deref().map(resolve),
                key: raw.key.as_deref().map(resolve),
                client_id,
            }))
        }
    }
}

fn trust_config(
    raw: &RawTrust,
    resolve: &dyn Fn(&Path) -> PathBuf,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<TrustConfig, ConfigError> {
    let root_path = resolve(&raw.root);
    let limit = swell_proto::limits::MAX_DOCUMENT_BYTES as u64;
    let root_bytes = read_bounded("trust root", &root_path, limit)?;
    let root = TrustRoot::from_trusted(&root_bytes)
        .map_err(|e| invalid("trust.root", format!("{}: {e}", root_path.display())))?;

    let key_path = resolve(&raw.controller_key);
    let key_bytes = Zeroizing::new(read_bounded("controller key", &key_path, MAX_KEY_BYTES)?);
    let key_text = std::str::from_utf8(&key_bytes).map_err(|_| {
        invalid(
            "trust.controller_key",
            format!("{}: not PEM text", key_path.display()),
        )
    })?;
    let controller_key = pem::private_key_from_pem(key_text).map_err(|e| {
        invalid(
            "trust.controller_key",
            format!(
                "{}: {} (expected a PKCS#8 PEM Ed25519 private key)",
                key_path.display(),
                e.why
            ),
        )
    })?;
    let keyid = PublicKey::from(controller_key.verifying_key()).key_id();
    let role = &root.document().roles.controller;
    if !role.keyids.contains(&keyid) {
        return Err(invalid(
            "trust.controller_key",
            format!(
                "key {keyid} is not a key of the trust root's controller role, so devices would \
                 refuse every command it signs"
            ),
        ));
    }
    if role.threshold > 1 {
        return Err(invalid(
            "trust.controller_key",
            format!(
                "the root's controller role needs {} signatures; the controller signs with one key",
                role.threshold
            ),
        ));
    }
    Ok(TrustConfig {
        root,
        root_path,
        controller_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse() {
        assert_eq!(
            parse_broker_url("mqtt://127.0.0.1:1883"),
            Some((false, "127.0.0.1".into(), 1883))
        );
        assert_eq!(
            parse_broker_url("mqtts://broker.example:8883"),
            Some((true, "broker.example".into(), 8883))
        );
        for bad in [
            "tcp://x:1",
            "mqtt://x",
            "mqtt://:1",
            "mqtt://x:port",
            "mqtt://a/b:1",
        ] {
            assert_eq!(parse_broker_url(bad), None, "{bad}");
        }
    }
}
