//! Helpers for the service tests: keys and a trust root, a config, the real `swell-controller`
//! binary started on ephemeral ports in a temporary data directory, an HTTP client, and an
//! MQTT client that publishes as a device.
//!
//! Nothing here sleeps to wait for something: [`eventually`] polls a condition until a
//! deadline.

// Each test file uses a different subset, and `pub` here only means "visible to the tests".
#![allow(dead_code, unreachable_pub)]
// Test helpers panic on the unexpected, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use swell_proto::envelope::{Header, sign_document};
use swell_proto::keys::pem;
use swell_proto::{
    Artifact, HardwareId, PublicKey, ReleaseDocument, ReleaseName, RoleKeys, Roles, RootDocument,
    SemVer, Sha256Digest, TargetName, Timestamp,
};
use tempfile::TempDir;

/// How long anything in these tests may take before it counts as a failure.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub const ADMIN_TOKEN: &str = "swell_admin_token_for_tests";
pub const OPERATOR_TOKEN: &str = "swell_operator_token_for_tests";
pub const VIEWER_TOKEN: &str = "swell_viewer_token_for_tests";

pub fn now() -> Timestamp {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Timestamp::from_unix(i64::try_from(secs).unwrap())
}

/// Polls `f` until it returns `Some`, or panics with `what` at the deadline.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The keys of a test installation, from fixed seeds.
pub struct Keys {
    pub root: SigningKey,
    pub release: SigningKey,
    pub controller: SigningKey,
    pub other: SigningKey,
}

impl Keys {
    pub fn new() -> Self {
        Self {
            root: SigningKey::from_bytes(&[1; 32]),
            release: SigningKey::from_bytes(&[2; 32]),
            controller: SigningKey::from_bytes(&[3; 32]),
            other: SigningKey::from_bytes(&[4; 32]),
        }
    }

    pub fn public(key: &SigningKey) -> PublicKey {
        PublicKey::from(key.verifying_key())
    }

    /// root.json: root, release and controller roles, one key each.
    pub fn root_json(&self) -> Vec<u8> {
        let role = |k: &SigningKey| RoleKeys {
            keyids: vec![Self::public(k).key_id()],
            threshold: 1,
        };
        let doc = RootDocument::new(
            &[
                Self::public(&self.root),
                Self::public(&self.release),
                Self::public(&self.controller),
            ],
            Roles {
                root: role(&self.root),
                release: role(&self.release),
                controller: role(&self.controller),
            },
        );
        let header = Header {
            version: 1,
            expires: now().plus_secs(365 * 86_400),
        };
        sign_document(header, &doc, &[&self.root]).unwrap()
    }
}

/// A deterministic image of `len` bytes.
pub fn image(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 31 + usize::from(salt)) % 251).unwrap())
        .collect()
}

/// The release document for `image`.
pub fn release_doc(name: &str, version: &str, image: &[u8]) -> ReleaseDocument {
    ReleaseDocument {
        name: ReleaseName::new(name).unwrap(),
        release_version: SemVer::new(version).unwrap(),
        security_version: 1,
        hardware: vec![HardwareId::new("gw-x86").unwrap()],
        artifacts: vec![Artifact {
            target: TargetName::new("rootfs").unwrap(),
            size: image.len() as u64,
            sha256: Sha256Digest::of(image),
        }],
    }
}

/// A manifest signed by `keys`, expiring at `expires`.
pub fn manifest(doc: &ReleaseDocument, expires: Timestamp, keys: &[&SigningKey]) -> Vec<u8> {
    sign_document(
        Header {
            version: 1,
            expires,
        },
        doc,
        keys,
    )
    .unwrap()
}

/// A temporary installation: keys, root, config and data directory.
pub struct Fixture {
    pub dir: TempDir,
    pub keys: Keys,
    pub config: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_config_extra("")
    }

    /// A fixture whose config has `extra` TOML appended.
    pub fn with_config_extra(extra: &str) -> Self {
        Self::with_broker("mode = \"embedded\"\nlisten = \"127.0.0.1:0\"", extra)
    }

    /// A fixture with `broker` as the body of the `[broker]` section.
    pub fn with_broker(broker: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::new();
        std::fs::write(dir.path().join("root.json"), keys.root_json()).unwrap();
        std::fs::write(
            dir.path().join("controller.pem"),
            pem::private_key_to_pem(&keys.controller).unwrap(),
        )
        .unwrap();
        let config = dir.path().join("controller.toml");
        let digest = |t: &str| swell_controller::service::auth::digest_of(t).to_hex();
        let text = format!(
            r#"data_dir = "data"

[http]
listen = "127.0.0.1:0"

[broker]
{broker}

[trust]
root = "root.json"
controller_key = "controller.pem"

[[api.token]]
name = "alice"
role = "admin"
sha256 = "{}"

[[api.token]]
name = "olga"
role = "operator"
sha256 = "{}"

[[api.token]]
name = "victor"
role = "viewer"
sha256 = "{}"
{extra}"#,
            digest(ADMIN_TOKEN),
            digest(OPERATOR_TOKEN),
            digest(VIEWER_TOKEN),
        );
        std::fs::write(&config, text).unwrap();
        Self { dir, keys, config }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    /// Starts the controller on this fixture.
    pub fn start(&self) -> Controller {
        Controller::start(&self.config)
    }
}

/// A running `swell-controller serve`; killed when dropped.
pub struct Controller {
    child: Child,
    pub http: String,
    pub mqtt: std::net::SocketAddr,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Controller {
    pub fn start(config: &Path) -> Controller {
        let mut child = Command::new(env!("CARGO_BIN_EXE_swell-controller"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,rumqttd=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the controller did not report ready; stderr:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
        };
        let rest = line
            .strip_prefix("swell-controller listening http=")
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        let (http, mqtt) = rest.split_once(" mqtt=").unwrap();
        Controller {
            child,
            http: format!("http://{http}"),
            mqtt: mqtt.parse().unwrap(),
            stderr: lines,
        }
    }

    /// Kills the process (SIGKILL: nothing gets to flush) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself (bounded by [`DEADLINE`]).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        eventually("the controller to exit", || self.child.try_wait().unwrap())
    }

    /// The log lines so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// A request as `token` (or none).
    pub fn request(&self, method: &str, path: &str, token: Option<&str>) -> Req {
        Req {
            method: method.to_owned(),
            url: self.url(path),
            token: token.map(str::to_owned),
            headers: Vec::new(),
        }
    }

    pub fn get(&self, path: &str, token: &str) -> Resp {
        self.request("GET", path, Some(token)).send(&[])
    }

    /// GET a JSON document that must be 200.
    pub fn get_json(&self, path: &str, token: &str) -> serde_json::Value {
        let r = self.get(path, token);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    pub fn post_json(&self, path: &str, token: &str, body: &serde_json::Value) -> Resp {
        self.request("POST", path, Some(token))
            .header("Content-Type", "application/json")
            .send(&serde_json::to_vec(body).unwrap())
    }

    /// A counter or gauge from /metrics.
    pub fn metric(&self, sample: &str) -> u64 {
        let text = self.get("/metrics", VIEWER_TOKEN).text();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Req {
    method: String,
    url: String,
    token: Option<String>,
    headers: Vec<(String, String)>,
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a JSON error with `status` whose message contains `needle`.
    pub fn assert_error(&self, status: u16, needle: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        let message = self.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            message.contains(needle),
            "error {message:?} does not contain {needle:?}"
        );
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEADLINE))
        .build()
        .new_agent()
}

impl Req {
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    fn finish(resp: ureq::http::Response<ureq::Body>) -> Resp {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = resp
            .into_body()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .unwrap();
        Resp {
            status,
            headers,
            body,
        }
    }

    fn build(&self) -> ureq::http::request::Builder {
        let mut b = ureq::http::Request::builder()
            .method(self.method.as_str())
            .uri(&self.url);
        if let Some(t) = &self.token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        b
    }

    /// Sends `body` (with its Content-Length).
    pub fn send(self, body: &[u8]) -> Resp {
        let req = self.build().body(body.to_vec()).unwrap();
        Self::finish(agent().run(req).unwrap())
    }

    /// Sends `body` chunked, without a Content-Length.
    pub fn send_chunked(self, body: &[u8]) -> Resp {
        let mut reader = std::io::Cursor::new(body.to_vec());
        let req = self
            .build()
            .body(ureq::SendBody::from_reader(&mut reader))
            .unwrap();
        Self::finish(agent().run(req).unwrap())
    }
}

/// An MQTT client publishing as whoever it likes (the embedded broker has no ACLs).
pub struct Mqtt {
    client: rumqttc::Client,
    acks: mpsc::Receiver<rumqttc::Event>,
}

impl Mqtt {
    pub fn connect(addr: std::net::SocketAddr, client_id: &str) -> Mqtt {
        let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = rumqttc::Client::new(options, 64);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(e) => {
                        if tx.send(e).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let mqtt = Mqtt { client, acks: rx };
        mqtt.wait_for("CONNACK", |e| {
            matches!(e, rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_)))
        });
        mqtt
    }

    fn wait_for(&self, what: &str, f: impl Fn(&rumqttc::Event) -> bool) -> rumqttc::Event {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            let e = self
                .acks
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what} from the broker"));
            if f(&e) {
                return e;
            }
        }
    }

    /// Publishes with QoS 1 and waits for the broker's PUBACK.
    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
            .unwrap();
        self.wait_for("PUBACK", |e| {
            matches!(e, rumqttc::Event::Incoming(rumqttc::Incoming::PubAck(_)))
        });
    }

    /// Subscribes and waits for the SUBACK.
    pub fn subscribe(&self, filter: &str) {
        self.client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .unwrap();
        self.wait_for("SUBACK", |e| {
            matches!(e, rumqttc::Event::Incoming(rumqttc::Incoming::SubAck(_)))
        });
    }

    /// The next message published to this client.
    pub fn next_publish(&self) -> rumqttc::Publish {
        match self.wait_for("PUBLISH", |e| {
            matches!(e, rumqttc::Event::Incoming(rumqttc::Incoming::Publish(_)))
        }) {
            rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)) => p,
            _ => unreachable!(),
        }
    }
}

/// Uploads a release (manifest, then image) as the operator and asserts it is accepted.
pub fn upload(c: &Controller, name: &str, version: &str, manifest: &[u8], image: &[u8]) {
    let m = c
        .request(
            "PUT",
            &format!("/v1/releases/{name}/{version}/manifest"),
            Some(OPERATOR_TOKEN),
        )
        .send(manifest);
    assert_eq!(m.status, 202, "manifest: {}", m.text());
    let i = c
        .request(
            "PUT",
            &format!("/v1/releases/{name}/{version}/image"),
            Some(OPERATOR_TOKEN),
        )
        .send(image);
    assert_eq!(i.status, 201, "image: {}", i.text());
}

/// The real `swellctl` binary against the controller at `url` with `token`, with `home` as
/// its home (no config file of the user's).
pub fn swellctl(home: &Path, url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swellctl"))
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env("SWELL_CONTROLLER", url)
        .env("SWELL_TOKEN", token)
        .output()
        .unwrap()
}

/// Standard output of a successful run.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "swellctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Standard output of a successful run, as JSON.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).unwrap()
}

/// The one-line error of a failed run.
pub fn failed(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    err
}
