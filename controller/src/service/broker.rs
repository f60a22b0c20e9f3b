//! The embedded MQTT broker: rumqttd in the controller's process, so one binary runs a whole
//! installation with no setup.
//!
//! **It cannot confine a device to its own topics.** rumqttd 0.20 has no per-client topic ACLs,
//! so any client that reaches it can publish under any device's topics and read every command.
//! The controller still drops every message that does not verify against the named device's
//! key, and commands are signed, so nothing is *believed* that should not be; but an impostor
//! can watch and flood. That is why `config` keeps the embedded broker on loopback unless the
//! operator sets `insecure_listen_any = true`, and why production uses an external broker
//! (Mosquitto with a per-device pattern ACL).
//!
//! rumqttd's `Broker::start` blocks its thread for good and offers no shutdown, so the broker
//! runs on its own thread until the process exits. It cannot report the port it bound either,
//! so port 0 is resolved here: bind `ip:0`, note the port, release it, hand it to rumqttd.
//! Another process could take the port in that instant; the start-up probe then fails loudly.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use swell_proto::limits::MAX_MESSAGE_BYTES;
use tracing::{error, info};

/// Bytes of MQTT packet overhead allowed above the protocol's largest payload (topic, packet
/// id, properties).
const PACKET_HEADROOM: usize = 4096;

/// How long the broker gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No free port could be found.
    #[error("embedded broker: cannot find a free port on {ip}")]
    Port {
        /// The address asked for.
        ip: std::net::IpAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// rumqttd refused its configuration.
    #[error("embedded broker: configuration refused: {0}")]
    Config(String),
    /// The broker did not start listening in time.
    #[error("embedded broker: nothing listens on {0} after {START_TIMEOUT:?} (is the port taken?)")]
    NotListening(SocketAddr),
    /// The broker thread could not be started.
    #[error("embedded broker: cannot start its thread: {0}")]
    Thread(std::io::Error),
}

/// The rumqttd configuration for one v4 (MQTT 3.1.1) listener on `listen`.
pub fn rumqttd_config_toml(listen: SocketAddr) -> String {
    let max_payload = MAX_MESSAGE_BYTES + PACKET_HEADROOM;
    format!(
        r#"id = 0

[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "swell-v4"
listen = "{listen}"
next_connection_delay_ms = 1

[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = {max_payload}
max_inflight_count = 100
dynamic_filters = true
"#
    )
}

/// Resolves port 0 to a free port on the same address.
fn resolve_port(listen: SocketAddr) -> Result<SocketAddr, BrokerError> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    let probe = TcpListener::bind(listen).map_err(|source| BrokerError::Port {
        ip: listen.ip(),
        source,
    })?;
    let addr = probe.local_addr().map_err(|source| BrokerError::Port {
        ip: listen.ip(),
        source,
    })?;
    drop(probe);
    Ok(addr)
}

/// Starts rumqttd on `listen` (port 0: a free port) and waits until it accepts connections.
/// Returns the address it listens on.
pub fn start(listen: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let addr = resolve_port(listen)?;
    let config: rumqttd::Config = toml::from_str(&rumqttd_config_toml(addr))
        .map_err(|e| BrokerError::Config(e.to_string()))?;
    std::thread::Builder::new()
        .name("swell-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    // Probe until it listens. A loopback connect either succeeds or is refused at once, so
    // this loop is bounded by the deadline, not by connect timeouts.
    let probe_addr = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&probe_addr, Duration::from_millis(200)).is_ok() {
            info!(mqtt = %addr, "embedded broker listening");
            return Ok(addr);
        }
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening(addr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated configuration is one rumqttd accepts, with the protocol's payload limit.
    #[test]
    fn config_parses_as_rumqttd_config() {
        let addr: SocketAddr = "127.0.0.1:18830".parse().unwrap();
        let config: rumqttd::Config = toml::from_str(&rumqttd_config_toml(addr)).unwrap();
        let v4 = config.v4.unwrap();
        let server = v4.get("1").unwrap();
        assert_eq!(server.listen, addr);
        assert!(server.connections.max_payload_size > MAX_MESSAGE_BYTES);
    }

    #[test]
    fn port_zero_is_resolved() {
        let addr = resolve_port("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
    }
}
