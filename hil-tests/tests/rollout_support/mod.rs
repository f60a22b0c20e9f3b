//! A simulated fleet for rollout scenarios: the real controller as a separate process (so a
//! test can `kill -9` it and start it again on the same data), real agents on simulated boards
//! that enroll with tokens carrying their tags and cohort, releases built, signed and uploaded
//! with `swellctl`, a webhook receiver that keeps every delivery, and small API helpers.
//!
//! The controller runs a simulated clock (`[clock]`, 60 times real time by default) anchored to
//! the real instant the config was written, so a restarted controller continues the same
//! timeline, and [`SimClock`] tells the test what the controller's clock shows.
//!
//! Every process runs in a process group of its own and is killed with its children when the
//! harness drops it; the temporary directory goes last.

// Each scenario file uses part of the harness, and `pub` here only means "visible to tests".
#![allow(unreachable_pub, dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;
use swell_agent::board;
use swell_controller::client::commands::{self, TokenArgs};
use swell_controller::client::{Client, Connection};
use swell_hil::faults::{ArtifactProxy, FaultProxy};
use swell_hil::fleet::{self, ProcessGroup};
use swell_proto::Timestamp;

/// The admin API token (its SHA-256 is in the controller's config).
pub const ADMIN: &str = "swell_rollout_admin_token";
/// The hardware id of every simulated board.
pub const HARDWARE: &str = fleet::HARDWARE;
/// The webhook's HMAC key.
pub const WEBHOOK_SECRET: &str = "rollout-test-webhook-secret-0123456789";
/// Simulated images are this large: big enough to download in pieces, small enough for 24
/// boards on 2 cores.
const IMAGE_SIZE: usize = 64 * 1024;
/// How long a process gets to come up.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Polls `f` every 100 ms until it gives `Ok`, or fails the test after `limit` with `what` and
/// the last `Err` (what was seen instead).
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; last seen: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Real now, in whole seconds (the resolution of the controller's config).
fn real_now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap()
}

fn proto_now() -> Timestamp {
    Timestamp::from_unix(jiff::Timestamp::now().as_second())
}

/// Parses an RFC 3339 time from the API.
pub fn ts(v: &Value) -> Option<jiff::Timestamp> {
    v.as_str()?.parse().ok()
}

/// The controller's simulated clock, as the test computes it from the same config.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    /// What the clock showed at `anchor`.
    pub start: jiff::Timestamp,
    /// The real instant at which it showed `start`.
    pub anchor: jiff::Timestamp,
    /// Simulated seconds per real second.
    pub speed: u32,
}

impl SimClock {
    /// What the controller's clock shows now.
    pub fn now(&self) -> jiff::Timestamp {
        let real = jiff::Timestamp::now().duration_since(self.anchor);
        let sim = jiff::SignedDuration::from_secs_f64(real.as_secs_f64() * f64::from(self.speed));
        self.start.checked_add(sim).unwrap()
    }

    /// Real time for `sim` simulated time.
    pub fn real(&self, sim: Duration) -> Duration {
        sim / self.speed
    }
}

/// One simulated board's identity: what its enrollment token and agent config say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// The device id.
    pub id: String,
    /// Its IANA time zone (the agent's `[enroll] zone`).
    pub zone: String,
    /// The token's tags.
    pub tags: BTreeMap<String, String>,
    /// The token's cohort.
    pub cohort: Option<String>,
}

impl DeviceSpec {
    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// `n` devices `gw-00`, `gw-01`, ... spread evenly over `zones` in order, in sites of
/// `site_size` devices (tag `site`, named after the zone's city and a number); no cohort.
pub fn layout(n: usize, zones: &[&str], site_size: usize) -> Vec<DeviceSpec> {
    let per_zone = n.div_ceil(zones.len());
    (0..n)
        .map(|i| {
            let zone = zones[i / per_zone];
            let city = zone.rsplit('/').next().unwrap_or(zone).to_lowercase();
            let site = format!("{city}-{}", (i % per_zone) / site_size + 1);
            DeviceSpec {
                id: format!("gw-{i:02}"),
                zone: zone.to_owned(),
                tags: BTreeMap::from([("site".to_owned(), site)]),
                cohort: None,
            }
        })
        .collect()
}

/// The controller process (`swell-demo serve`).
#[derive(Debug)]
pub struct Controller {
    process: Option<ProcessGroup>,
    config: PathBuf,
    log: PathBuf,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its embedded broker's address.
    pub mqtt: SocketAddr,
    /// How many times it was started.
    pub starts: u32,
}

impl Controller {
    /// Starts the controller on `config`, waiting for its "listening" line.
    fn start(config: &Path, log: &Path) -> Controller {
        let mut c = Controller {
            process: None,
            config: config.to_owned(),
            log: log.to_owned(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
            starts: 0,
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        assert!(self.process.is_none(), "the controller is already running");
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_swell-demo"));
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::piped())
            .stderr(log);
        let mut group =
            ProcessGroup::spawn(cmd).unwrap_or_else(|e| panic!("starting a process: {e}"));
        let stdout = group.take_stdout().unwrap();
        let (tx, rx) = mpsc::channel();
        // Reads the ready line, then drains stdout until the process ends.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = loop {
            match rx.recv_timeout(START_LIMIT) {
                Ok(l) if l.starts_with("swell-controller listening") => break l,
                Ok(_) => {}
                Err(e) => panic!(
                    "the controller did not start ({e}); its log:\n{}",
                    self.log_text()
                ),
            }
        };
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        self.http = addr("http=");
        self.mqtt = addr("mqtt=");
        self.process = Some(group);
    }

    /// `kill -9`: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts it again on the same config, data and ports.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Whether the process is running.
    pub fn running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ProcessGroup::running)
    }

    /// What it logged (all its starts).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A JSON API client with the admin token; 4xx and 5xx come back as values, not errors.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(http: SocketAddr) -> Api {
        Api {
            base: format!("http://{http}"),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(20)))
                .build()
                .new_agent(),
        }
    }

    /// The controller's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn answer(
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Value), String> {
        let mut resp = result.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    /// `GET path`: the status and the body, or why there was no answer.
    pub fn try_get(&self, path: &str) -> Result<(u16, Value), String> {
        Self::answer(
            self.agent
                .get(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {ADMIN}"))
                .call(),
        )
    }

    /// `POST path` with a JSON body.
    pub fn try_post(&self, path: &str, body: &Value) -> Result<(u16, Value), String> {
        Self::answer(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {ADMIN}"))
                .header("Content-Type", "application/json")
                .send(body.to_string().as_bytes()),
        )
    }

    /// `GET path`, which must answer 200.
    pub fn get(&self, path: &str) -> Value {
        match self.try_get(path) {
            Ok((200, v)) => v,
            other => panic!("GET {path}: {other:?}"),
        }
    }

    /// `POST path`, which must answer 2xx.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        match self.try_post(path, body) {
            Ok((s, v)) if (200..300).contains(&s) => v,
            other => panic!("POST {path} {body}: {other:?}"),
        }
    }

    /// `POST /v1/rollouts` of `plan` for release `os` `version`: the status and the body.
    pub fn create_rollout(&self, plan: &str, version: &str) -> (u16, Value) {
        let body = json!({"plan": plan, "release": {"name": "os", "version": version},
                          "dry_run": false, "supersedes": null});
        self.try_post("/v1/rollouts", &body).unwrap()
    }

    /// Creates a rollout that must be accepted; its id.
    pub fn start_rollout(&self, plan: &str, version: &str) -> String {
        match self.create_rollout(plan, version) {
            (201, v) => v["rollout"]["id"].as_str().unwrap().to_owned(),
            other => panic!("creating the rollout of {version}: {other:?}"),
        }
    }

    /// `GET /v1/rollouts/{id}`'s rollout.
    pub fn rollout(&self, id: &str) -> Value {
        self.get(&format!("/v1/rollouts/{id}"))["rollout"].take()
    }

    /// The rollout, or why it could not be read (the controller may be down).
    pub fn try_rollout(&self, id: &str) -> Result<Value, String> {
        match self.try_get(&format!("/v1/rollouts/{id}"))? {
            (200, mut v) => Ok(v["rollout"].take()),
            other => Err(format!("{other:?}")),
        }
    }

    /// Waits until rollout `id` satisfies `done`, describing it on the way.
    pub fn wait_rollout(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(&format!("{id}: {what}"), limit, || {
            let r = self.try_rollout(id)?;
            if done(&r) {
                Ok(r)
            } else {
                Err(describe_rollout(&r))
            }
        })
    }

    /// Waits until rollout `id` has status `status`.
    pub fn wait_status(&self, id: &str, status: &str, limit: Duration) -> Value {
        self.wait_rollout(id, &format!("status {status}"), limit, |r| {
            r["status"] == status
        })
    }

    /// Approves stage `stage` of rollout `id`.
    pub fn approve(&self, id: &str, stage: &str, reason: &str) -> Value {
        self.post(
            &format!("/v1/rollouts/{id}/approve"),
            &json!({"stage": stage, "reason": reason}),
        )
    }

    /// Creates a deploy lock; its id.
    pub fn lock(&self, reason: &str) -> String {
        let v = self.post("/v1/locks", &json!({"reason": reason}));
        v["lock"]["id"].as_str().unwrap().to_owned()
    }

    /// Releases lock `id`.
    pub fn release_lock(&self, id: &str, reason: &str) -> Value {
        self.post(
            &format!("/v1/locks/{id}/release"),
            &json!({"reason": reason}),
        )
    }

    /// The whole audit log.
    pub fn audit(&self) -> Vec<Value> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |e: &Value| e["seq"].as_u64().unwrap());
            let page = self.get(&format!("/v1/audit?after={after}"))["entries"]
                .as_array()
                .unwrap()
                .clone();
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    /// Every device as `GET /v1/devices` shows it, by id.
    pub fn devices(&self) -> Result<BTreeMap<String, Value>, String> {
        match self.try_get("/v1/devices")? {
            (200, v) => Ok(v["devices"]
                .as_array()
                .ok_or("no devices array")?
                .iter()
                .map(|d| (d["id"].as_str().unwrap_or_default().to_owned(), d.clone()))
                .collect()),
            other => Err(format!("{other:?}")),
        }
    }
}

/// One line about a rollout, for timeouts and progress output.
pub fn describe_rollout(r: &Value) -> String {
    let stages: Vec<String> = r["stages"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| format!("{}={}", s["name"].as_str().unwrap_or("?"), s["status"]))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} status={} reason={} step={} counts={} stages=[{}]",
        r["id"],
        r["status"],
        r["status_reason"],
        r["step"],
        r["counts"],
        stages.join(" ")
    )
}

/// One webhook request as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `X-Swell-Event`.
    pub event: String,
    /// `X-Swell-Delivery`.
    pub delivery: String,
    /// `X-Swell-Timestamp`.
    pub timestamp: String,
    /// `X-Swell-Signature`.
    pub signature: String,
    /// The body, as sent.
    pub body: String,
}

impl Delivery {
    /// Whether `X-Swell-Signature` is `sha256=` and the lowercase hex of
    /// HMAC-SHA256(`secret`, "<timestamp>.<body>").
    pub fn signature_valid(&self, secret: &[u8]) -> bool {
        let Some(hex) = self.signature.strip_prefix("sha256=") else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(self.timestamp.as_bytes());
        mac.update(b".");
        mac.update(self.body.as_bytes());
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        hex == want
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// An HTTP endpoint on 127.0.0.1 that answers every POST with 200 and keeps what it got.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Delivery>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WebhookReceiver {
    /// Starts listening on an ephemeral port.
    pub fn start() -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (got, stop) = (Arc::clone(&got), Arc::clone(&stop));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(s) = stream
                        && let Some(d) = receive(s)
                    {
                        got.lock().unwrap().push(d);
                    }
                }
            })
        };
        WebhookReceiver {
            addr,
            got,
            stop,
            thread: Some(thread),
        }
    }

    /// The URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every delivery so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// The deliveries about rollout `id`.
    pub fn for_rollout(&self, id: &str) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.json()["rollout"] == id)
            .collect()
    }

    /// Waits until rollout `id` has had a delivery of each of `events`; returns its deliveries.
    pub fn wait_for(&self, id: &str, events: &[&str], limit: Duration) -> Vec<Delivery> {
        eventually(&format!("webhooks {events:?} for {id}"), limit, || {
            let got = self.for_rollout(id);
            let missing: Vec<&&str> = events
                .iter()
                .filter(|e| !got.iter().any(|d| d.event == **e))
                .collect();
            if missing.is_empty() {
                Ok(got)
            } else {
                Err(format!(
                    "missing {missing:?}; got {:?}",
                    got.iter().map(|d| d.event.as_str()).collect::<Vec<_>>()
                ))
            }
        })
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP/1.1 request and answers 200 with `Connection: close`.
fn receive(stream: TcpStream) -> Option<Delivery> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let h = |k: &str| headers.get(k).cloned().unwrap_or_default();
    Some(Delivery {
        event: h("x-swell-event"),
        delivery: h("x-swell-delivery"),
        timestamp: h("x-swell-timestamp"),
        signature: h("x-swell-signature"),
        body: String::from_utf8(body).ok()?,
    })
}

/// How the fleet's controller runs.
#[derive(Debug, Clone, Copy)]
pub struct FleetOptions {
    /// What the controller's clock shows when the config is written.
    pub clock_start: jiff::Timestamp,
    /// Simulated seconds per real second.
    pub speed: u32,
    /// The executor's tick, real milliseconds.
    pub tick_ms: u64,
}

/// The controller, the boards, and everything they share.
#[derive(Debug)]
pub struct Fleet {
    /// The boards, as specified.
    pub devices: Vec<DeviceSpec>,
    /// The controller's clock.
    pub clock: SimClock,
    /// The API as admin.
    pub api: Api,
    /// The webhook's receiving end.
    pub hooks: WebhookReceiver,
    /// The controller process.
    pub controller: Controller,
    /// How long the boards took from their start to all online.
    pub enrolled_in: Duration,
    /// Each device's board, by position in `devices`; `None` while its power is cut.
    boards: Vec<Option<ProcessGroup>>,
    /// Each device's MQTT link through a fault proxy, by position in `devices` (empty unless
    /// started with [`Fleet::start_proxied`]).
    proxies: Vec<FaultProxy>,
    /// The artifact server's fault proxy (only if started with
    /// [`Fleet::start_with_artifact_proxy`]).
    artifacts: Option<ArtifactProxy>,
    // Last: the processes above must be gone before their files are.
    dir: tempfile::TempDir,
}

impl Fleet {
    /// Keys, a signed root, a controller with a simulated clock and a webhook, and one board
    /// per device that enrolls with a token of its own (its tags and cohort); returns once every
    /// device is online.
    pub fn start(devices: Vec<DeviceSpec>, options: FleetOptions) -> Fleet {
        Fleet::start_with(devices, options, |_| String::new())
    }

    /// [`Fleet::start`], with `agent_extra(board)` appended to each agent's config: TOML
    /// tables the harness does not write itself (`[signals]`, ...), given the board's
    /// directory (where the simulated system's application log, [`board::APP_LOG`], is).
    pub fn start_with(
        devices: Vec<DeviceSpec>,
        options: FleetOptions,
        agent_extra: impl Fn(&Path) -> String,
    ) -> Fleet {
        Fleet::start_inner(devices, options, false, None, agent_extra)
    }

    /// [`Fleet::start`], with each agent's MQTT connection through a [`FaultProxy`] of its
    /// own ([`Fleet::proxy`]), so a test can partition or slow one device's link. A separate
    /// constructor rather than a field of [`FleetOptions`], whose struct literals elsewhere
    /// would otherwise all have to change.
    pub fn start_proxied(devices: Vec<DeviceSpec>, options: FleetOptions) -> Fleet {
        Fleet::start_inner(devices, options, true, None, |_| String::new())
    }

    /// [`Fleet::start`], with the controller's `[http] public_url` (the base of the artifact
    /// URLs in install commands) pointing at an [`ArtifactProxy`] in front of its API
    /// ([`Fleet::artifacts`]), so a test can truncate or corrupt the devices' downloads.
    pub fn start_with_artifact_proxy(devices: Vec<DeviceSpec>, options: FleetOptions) -> Fleet {
        // Bound first: the controller reads public_url once, at start, and only then tells its
        // own address, which becomes the proxy's upstream.
        let proxy = ArtifactProxy::bind().unwrap();
        Fleet::start_inner(devices, options, false, Some(proxy), |_| String::new())
    }

    fn start_inner(
        devices: Vec<DeviceSpec>,
        options: FleetOptions,
        proxied: bool,
        artifacts: Option<ArtifactProxy>,
        agent_extra: impl Fn(&Path) -> String,
    ) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p = |n: &str| d.join(n).display().to_string();
        fleet::trust_root(d).unwrap();
        std::fs::write(d.join("webhook.secret"), WEBHOOK_SECRET).unwrap();
        let hooks = WebhookReceiver::start();
        let clock = SimClock {
            start: jiff::Timestamp::from_second(options.clock_start.as_second()).unwrap(),
            anchor: real_now(),
            speed: options.speed,
        };
        let config = d.join("controller.toml");
        let write_config = |http: &str, mqtt: &str| {
            let digest = swell_controller::service::auth::digest_of(ADMIN).to_hex();
            let text = format!(
                "data_dir = \"{data}\"\n\
                 [http]\nlisten = \"{http}\"\n{public_url}\
                 [broker]\nmode = \"embedded\"\nlisten = \"{mqtt}\"\n\
                 [trust]\nroot = \"root.json\"\ncontroller_key = \"controller.pem\"\n\
                 [[api.token]]\nname = \"alice\"\nrole = \"admin\"\nsha256 = \"{digest}\"\n\
                 [clock]\nstart = \"{start}\"\nspeed = {speed}.0\nanchor = \"{anchor}\"\n\
                 [rollouts]\ntick_ms = {tick}\n\
                 [[webhook]]\nname = \"test\"\nurl = \"{url}\"\nsecret_file = \"webhook.secret\"\n",
                data = p("controller-data"),
                public_url = artifacts
                    .as_ref()
                    .map_or_else(String::new, |a| format!("public_url = \"{}\"\n", a.url())),
                start = clock.start,
                speed = clock.speed,
                anchor = clock.anchor,
                tick = options.tick_ms,
                url = hooks.url(),
            );
            std::fs::write(&config, text).unwrap();
        };
        write_config("127.0.0.1:0", "127.0.0.1:0");
        let controller = Controller::start(&config, &d.join("controller.log"));
        // A restart must come back on the same addresses: the agents know these.
        write_config(&controller.http.to_string(), &controller.mqtt.to_string());
        if let Some(a) = &artifacts {
            a.set_upstream(controller.http);
        }
        let api = Api::new(controller.http);
        let client = Client::new(Connection {
            base: api.base().to_owned(),
            token: Some(ADMIN.into()),
        });

        let began = Instant::now();
        let mut boards = Vec::new();
        let mut proxies = Vec::new();
        for spec in &devices {
            let args = TokenArgs {
                cohort: spec.cohort.clone(),
                tags: spec
                    .tags
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                // Simulated seconds: a week is under three real hours at 60 times.
                ttl_s: 7 * 86_400,
                uses: 1,
            };
            let token = commands::enroll_token_create(&client, &args).unwrap().json["token"]
                .as_str()
                .unwrap()
                .to_owned();
            let extra = agent_extra(&board_dir(d, &spec.id));
            let mqtt = if proxied {
                let proxy = FaultProxy::start(controller.mqtt).unwrap();
                let addr = proxy.addr();
                proxies.push(proxy);
                addr
            } else {
                controller.mqtt
            };
            write_board(d, spec, &controller, mqtt, &token, &extra);
            boards.push(Some(power_on(d, &spec.id)));
        }
        let fleet = Fleet {
            devices,
            clock,
            api,
            hooks,
            controller,
            enrolled_in: Duration::ZERO,
            boards,
            proxies,
            artifacts,
            dir,
        };
        fleet.wait_online(START_LIMIT);
        Fleet {
            enrolled_in: began.elapsed(),
            ..fleet
        }
    }

    /// Waits until every device is enrolled, online and has reported what it runs.
    pub fn wait_online(&self, limit: Duration) {
        eventually("every device online", limit, || {
            let all = self.api.devices()?;
            let missing: Vec<&str> = self
                .devices
                .iter()
                .filter(|s| {
                    all.get(&s.id)
                        .is_none_or(|d| d["online"] != true || d["running"].is_null())
                })
                .map(|s| s.id.as_str())
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not yet: {missing:?}"))
            }
        });
    }

    /// Device `id`'s MQTT fault proxy (the fleet must be [`Fleet::start_proxied`]).
    pub fn proxy(&self, id: &str) -> &FaultProxy {
        &self.proxies[self.index(id)]
    }

    /// The artifact server's fault proxy (the fleet must be
    /// [`Fleet::start_with_artifact_proxy`]).
    pub fn artifacts(&self) -> &ArtifactProxy {
        self.artifacts
            .as_ref()
            .expect("the fleet was started without an artifact proxy")
    }

    fn index(&self, id: &str) -> usize {
        self.devices.iter().position(|d| d.id == id).unwrap()
    }

    /// Cuts device `id`'s power: SIGKILL to its board and the agent the board booted, no
    /// shutdown, no flush. Nothing if it is already off.
    pub fn power_cut(&mut self, id: &str) {
        let i = self.index(id);
        if let Some(mut board) = self.boards[i].take() {
            board.kill();
        }
    }

    /// Powers device `id` on again: its board starts on the same config and directories, so
    /// the boot ROM and the agent's journal decide what runs. Nothing if it is on.
    pub fn power_on(&mut self, id: &str) {
        let i = self.index(id);
        if self.boards[i].is_none() {
            self.boards[i] = Some(power_on(self.dir.path(), id));
        }
    }

    /// Whether device `id`'s board is powered (started and not cut).
    pub fn powered(&self, id: &str) -> bool {
        self.boards[self.index(id)].is_some()
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Builds an image of `behaviour` (`healthy`, `unhealthy`, `crash`, `noisy`), signs it as
    /// release `os` `version` with `swellctl release create` and uploads it.
    pub fn release(&self, version: &str, behaviour: &str) {
        let d = self.dir();
        let image = d.join(format!("os-{version}.img"));
        let manifest =
            fleet::signed_image(d, &image, "os", version, behaviour, IMAGE_SIZE).unwrap();
        let client = Client::new(Connection {
            base: self.api.base().to_owned(),
            token: Some(ADMIN.into()),
        });
        commands::release_upload(&client, &manifest, &image, None).unwrap();
    }

    /// The version each device reports running (`None` for the release-less first image).
    pub fn versions(&self) -> Result<BTreeMap<String, Option<String>>, String> {
        Ok(self
            .api
            .devices()?
            .into_iter()
            .map(|(id, d)| (id, d["running"]["version"].as_str().map(str::to_owned)))
            .collect())
    }

    /// Waits until every device in `ids` runs `version` and is settled (`committed` or
    /// `rolled_back`, nothing in progress).
    pub fn wait_versions<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str> + Clone,
        version: &str,
        limit: Duration,
    ) {
        eventually(&format!("devices on {version}"), limit, || {
            let all = self.api.devices()?;
            let wrong: Vec<String> = ids
                .clone()
                .into_iter()
                .filter_map(|id| {
                    let d = all.get(id)?;
                    let v = d["running"]["version"].as_str();
                    let settled = matches!(
                        d["state"].as_str(),
                        Some("committed" | "rolled_back" | "idle")
                    );
                    (v != Some(version) || !settled)
                        .then(|| format!("{id}: {} {}", d["state"], d["running"]["version"]))
                })
                .collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wrong.join(", "))
            }
        });
    }

    /// Makes device `id`'s health check fail (or pass again): its next trial boot fails.
    pub fn fail_health(&self, id: &str, fail: bool) {
        let f = self.dir().join("boards").join(id).join("fail-health");
        if fail {
            std::fs::write(f, b"").unwrap();
        } else {
            let _ = std::fs::remove_file(f);
        }
    }

    /// The simulated board directory of device `id` (its boot environment and application
    /// log).
    pub fn board_dir(&self, id: &str) -> PathBuf {
        board_dir(self.dir(), id)
    }

    /// The spec of device `id`.
    pub fn spec(&self, id: &str) -> &DeviceSpec {
        self.devices.iter().find(|d| d.id == id).unwrap()
    }

    /// The last lines of every log, for a failing test.
    pub fn logs_tail(&self, lines: usize) -> String {
        let tail = |t: String| {
            let v: Vec<&str> = t.lines().collect();
            v[v.len().saturating_sub(lines)..].join("\n")
        };
        let mut out = format!("controller:\n{}\n", tail(self.controller.log_text()));
        for s in &self.devices {
            let log = self.dir().join("boards").join(&s.id).join("board.log");
            out.push_str(&format!(
                "{}:\n{}\n",
                s.id,
                tail(std::fs::read_to_string(log).unwrap_or_default())
            ));
        }
        out
    }
}

/// The simulated board directory of device `id` under the fleet's directory `dir`: the
/// agent config's `[boot] board`.
fn board_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join("boards").join(id).join("board")
}

/// Writes board `spec`'s slots and agent config (broker at `mqtt`; health check: the image's
/// behaviour and the `fail-health` switch; then `extra`).
fn write_board(
    dir: &Path,
    spec: &DeviceSpec,
    controller: &Controller,
    mqtt: SocketAddr,
    token: &str,
    extra: &str,
) {
    let d = dir.join("boards").join(&spec.id);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("slot-a.img"), board::image("healthy", IMAGE_SIZE, 1)).unwrap();
    std::fs::write(d.join("slot-b.img"), b"").unwrap();
    let dd = d.display();
    let config = format!(
        "data_dir = \"{dd}/data\"\n\
         [device]\nid = \"{id}\"\nhardware = \"{HARDWARE}\"\nkey = \"{dd}/device-key.pem\"\n\
         [trust]\nroot = \"{root}\"\n\
         [mqtt]\nurl = \"mqtt://{mqtt}\"\nheartbeat_secs = 1\n\
         [enroll]\nurl = \"http://{http}\"\ntoken = \"{token}\"\nzone = \"{zone}\"\n\
         [slots]\na = \"{dd}/slot-a.img\"\nb = \"{dd}/slot-b.img\"\n\
         [boot]\nbackend = \"simulated\"\nboard = \"{board}\"\nbootlimit = 2\n\
         [health]\ndeadline_secs = 3\ninterval_secs = 1\n\
         [[health.check]]\nkind = \"command\"\n\
         command = [\"sh\", \"-c\", 'test \"${env}\" != unhealthy && test ! -e \"{dd}/fail-health\"']\n\
         {extra}",
        id = spec.id,
        board = board_dir(dir, &spec.id).display(),
        root = dir.join("root.json").display(),
        http = controller.http,
        zone = spec.zone,
        env = board::BEHAVIOUR_ENV,
    );
    std::fs::write(d.join("agent.toml"), config).unwrap();
}

/// Boots the board of device `id` written by [`write_board`], its log appended to
/// `board.log`.
fn power_on(dir: &Path, id: &str) -> ProcessGroup {
    let d = dir.join("boards").join(id);
    let path = d.join("agent.toml");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join("board.log"))
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_swell-demo"));
    cmd.args(["board", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log);
    ProcessGroup::spawn(cmd).unwrap_or_else(|e| panic!("starting a process: {e}"))
}

/// Four zones from east to west, one with a 45-minute offset.
pub const ZONES: [&str; 4] = [
    "Asia/Tokyo",
    "Asia/Kathmandu",
    "Europe/Berlin",
    "America/New_York",
];

/// Per device, how many commands of `kind` (`install`, `revert`, ...) rollout `id` sent,
/// from the audit log.
pub fn commands_of(audit: &[Value], id: &str, kind: &str) -> BTreeMap<String, usize> {
    let mut per_device = BTreeMap::new();
    for e in audit {
        let d = &e["details"];
        if e["action"] == "command.send" && d["detail"]["rollout"] == id && d["kind"] == kind {
            *per_device
                .entry(d["device"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    per_device
}
