//! First-start enrollment: with `[enroll]` in the config and no device key yet, the agent
//! generates its Ed25519 key on the device (PKCS#8 PEM, mode 0600), presents its public key
//! with the enrollment token to the controller's `POST /v1/enroll`, and stores the client
//! certificate it gets back and the controller's CA certificate in its data directory. The
//! MQTT session then uses them for `mqtts://` unless `[mqtt]` names other files.
//!
//! | File | What |
//! |---|---|
//! | `[device] key` | the device key, written (0600, atomically) **before** enrolling, so a device that enrolled always still has the key it enrolled with |
//! | `data_dir/device.crt.pem` | the client certificate (CN = the device id) |
//! | `data_dir/ca.pem` | the controller's CA certificate |
//!
//! A start that finds the key but not the certificate enrolls again with the same key (the
//! first attempt may have failed before the controller answered); if the controller had in fact
//! registered it, it answers 409 and the operator re-provisions by hand.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde::Deserialize;
use serde_json::json;
use swell_proto::keys::pem;

use crate::config::Config;
use crate::driver::AgentError;

/// How long the enrollment request may take.
pub const ENROLL_TIMEOUT: Duration = Duration::from_secs(60);

/// `[enroll]`: where and how to enroll on first start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollConfig {
    /// The controller's base URL, such as `https://controller.example:8080`.
    pub url: String,
    /// The enrollment token.
    pub token: String,
    /// The device's IANA time zone, such as `Europe/Berlin`.
    pub zone: String,
    /// Tags the device asks for (the token's tags win).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// The client certificate's path.
pub fn cert_path(data_dir: &Path) -> PathBuf {
    data_dir.join("device.crt.pem")
}

/// The CA certificate's path.
pub fn ca_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ca.pem")
}

fn err(what: &str) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |e| AgentError::Setup(format!("{what}: {e}"))
}

/// Writes `bytes` to `path` atomically with `mode`: temp file, fsync, rename, fsync the
/// directory.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AgentError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err("creating the key directory"))?;
    let tmp = path.with_extension("tmp");
    let shown = path.display().to_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err(&shown))?;
    f.write_all(bytes).map_err(err(&shown))?;
    f.sync_all().map_err(err(&shown))?;
    std::fs::rename(&tmp, path).map_err(err(&shown))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err(&shown))
}

/// What the controller answers.
#[derive(Debug, Deserialize)]
struct Enrolled {
    certificate: String,
    ca: String,
}

/// Posts the application and returns the certificate and the CA certificate.
fn request(e: &EnrollConfig, config: &Config, key: &SigningKey) -> Result<Enrolled, AgentError> {
    let public = pem::public_key_to_pem(&key.verifying_key().into())
        .map_err(|e| AgentError::Setup(format!("device key: {e}")))?;
    let body = json!({
        "token": e.token, "id": config.device.id.as_str(),
        "hardware": config.device.hardware.as_str(), "zone": e.zone, "tags": e.tags,
        "public_key": public,
    });
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(ENROLL_TIMEOUT))
        .build()
        .new_agent();
    let url = format!("{}/v1/enroll", e.url.trim_end_matches('/'));
    let body = serde_json::to_vec(&body).map_err(|e| AgentError::Setup(e.to_string()))?;
    let mut resp = agent
        .post(&url)
        .header("Content-Type", "application/json")
        .send(&body[..])
        .map_err(|e| AgentError::Setup(format!("enrolling at {url}: {e}")))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| AgentError::Setup(format!("enrolling at {url}: {e}")))?;
    if status != 201 {
        let reason = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(AgentError::Setup(format!(
            "enrollment refused by {url} (HTTP {status}): {reason}"
        )));
    }
    serde_json::from_str(&text)
        .map_err(|e| AgentError::Setup(format!("enrolling at {url}: unexpected answer: {e}")))
}

/// Enrolls if `[enroll]` is set and the device has no certificate yet (generating the key if
/// there is none), then points `[mqtt]` at the stored certificate and CA when it names none.
/// Blocking: call it from a blocking context.
pub fn ensure_enrolled(config: &mut Config) -> Result<(), AgentError> {
    let cert = cert_path(&config.data_dir);
    let ca = ca_path(&config.data_dir);
    if let Some(e) = config.enroll.clone()
        && !cert.exists()
    {
        let key = if config.device.key.exists() {
            crate::keys::load_device_key(&config.device.key)?
        } else {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed)
                .map_err(|e| AgentError::Setup(format!("no randomness for the key: {e}")))?;
            let key = SigningKey::from_bytes(&seed);
            let pem = pem::private_key_to_pem(&key)
                .map_err(|e| AgentError::Setup(format!("device key: {e}")))?;
            write_file(&config.device.key, pem.as_bytes(), 0o600)?;
            key
        };
        let enrolled = request(&e, config, &key)?;
        write_file(&ca, enrolled.ca.as_bytes(), 0o644)?;
        write_file(&cert, enrolled.certificate.as_bytes(), 0o644)?;
    }
    if let Some(mqtt) = &mut config.mqtt {
        if mqtt.cert.is_none() && cert.exists() {
            mqtt.cert = Some(cert);
        }
        if mqtt.ca.is_none() && ca.exists() {
            mqtt.ca = Some(ca);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Read as _};
    use std::net::TcpListener;

    use super::*;

    /// A one-request HTTP server answering `status` and `body`; returns its URL and a handle
    /// yielding the request body it received.
    fn server(status: u16, body: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut req = vec![0u8; len];
            reader.read_exact(&mut req).unwrap();
            write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            String::from_utf8(req).unwrap()
        });
        (url, handle)
    }

    fn config(dir: &Path, url: &str) -> Config {
        let text = format!(
            r#"data_dir = "{d}/data"
[device]
id = "gw-1"
hardware = "rpi4"
key = "{d}/keys/device.pem"
[trust]
root = "{d}/root.json"
[slots]
a = "{d}/a"
b = "{d}/b"
[boot]
backend = "uboot"
fw_env_config = "/etc/fw_env.config"
[mqtt]
url = "mqtts://broker:8883"
[enroll]
url = "{url}"
token = "swell-enroll-t"
zone = "Europe/Berlin"
tags = {{ rack = "r1" }}
"#,
            d = dir.display()
        );
        Config::parse(&text, Path::new("agent.toml")).unwrap()
    }

    /// First start: the key is made (0600), the public key and token are sent, the
    /// certificate and CA are stored and used for mqtts; a second start does not enroll again.
    #[test]
    fn first_start_enrolls_once() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (url, handle) = server(201, r#"{"id":"gw-1","certificate":"CERT","ca":"CA"}"#);
        let mut c = config(dir.path(), &url);
        ensure_enrolled(&mut c).unwrap();
        let sent: serde_json::Value = serde_json::from_str(&handle.join().unwrap()).unwrap();
        assert_eq!(sent["token"], "swell-enroll-t");
        assert_eq!(sent["id"], "gw-1");
        assert_eq!(sent["zone"], "Europe/Berlin");
        assert_eq!(sent["tags"]["rack"], "r1");
        let key = crate::keys::load_device_key(&c.device.key).unwrap();
        let sent_key = pem::public_key_from_pem(sent["public_key"].as_str().unwrap()).unwrap();
        assert_eq!(sent_key.to_bytes(), key.verifying_key().to_bytes());
        assert!(!sent.to_string().contains("PRIVATE"));
        let mode = std::fs::metadata(&c.device.key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mqtt = c.mqtt.as_ref().unwrap();
        assert_eq!(
            std::fs::read_to_string(mqtt.cert.as_ref().unwrap()).unwrap(),
            "CERT"
        );
        assert_eq!(
            std::fs::read_to_string(mqtt.ca.as_ref().unwrap()).unwrap(),
            "CA"
        );

        // Nobody listens at the URL now: a second start must not try.
        let mut again = config(dir.path(), "http://127.0.0.1:9");
        ensure_enrolled(&mut again).unwrap();
        assert_eq!(again.mqtt.unwrap().cert, Some(cert_path(&again.data_dir)));
    }

    /// A refusal is one line with the controller's reason; the key stays for the next try and
    /// no certificate is stored.
    #[test]
    fn refusal_names_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (url, handle) = server(403, r#"{"error":"the enrollment token has no uses left"}"#);
        let mut c = config(dir.path(), &url);
        let e = ensure_enrolled(&mut c).unwrap_err().to_string();
        handle.join().unwrap();
        assert!(e.contains("HTTP 403") && e.contains("no uses left"), "{e}");
        assert!(c.device.key.exists());
        assert!(!cert_path(&c.data_dir).exists());
    }
}
