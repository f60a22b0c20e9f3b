//! What the end-to-end tests of the real `swell-agent` binary share: fixed-seed keys, a trust
//! root, signed releases and commands built with `swell-proto`, a simulated board in a
//! temporary directory with its configuration, a process runner with a deadline, and readers
//! for what the device leaves on disk (journal, outbox, boot environment, slots).
//!
//! Every test file that uses it says `mod common;` and uses a part of it.
// Test support: a failed unwrap here is a failed test, and not every file uses every helper.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use swell_agent::bootenv::{BootEnvStore as _, BootVars};
use swell_agent::journal::{Journal, Persisted};
use swell_proto::envelope::{Header, RoleKeys, sign_document};
use swell_proto::messages::{Action, Command as WireCommand, Report, Slot, open_device_message};
use swell_proto::root::{Roles, RootDocument};
use swell_proto::topics::DeviceTopic;
use swell_proto::{
    Artifact, DeviceId, HardwareId, PublicKey, ReleaseDocument, ReleaseName, SemVer, Sha256Digest,
    TargetName, Timestamp,
};

/// The agent binary under test.
pub const AGENT: &str = env!("CARGO_BIN_EXE_swell-agent");

/// The simulated device's id and hardware.
pub const DEVICE: &str = "sim-0001";
pub const HARDWARE: &str = "sim-board";

/// The release name every test release uses.
pub const RELEASE: &str = "sim-os";

/// The health check every simulated device runs: it fails on an image whose behaviour is
/// `unhealthy` (the board tells the agent its image's behaviour in this variable).
pub const HEALTH_CHECK: &str = "test \"$SWELL_BOARD_IMAGE_BEHAVIOUR\" != unhealthy";

/// How long one board run may take before the test gives up and kills it.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The seed of each key: the key is `SigningKey::from_bytes(&[seed; 32])`.
pub mod seed {
    pub const ROOT: u8 = 1;
    /// The release role has two keys and threshold 2.
    pub const RELEASE_1: u8 = 11;
    pub const RELEASE_2: u8 = 12;
    pub const CONTROLLER: u8 = 21;
    pub const DEVICE: u8 = 31;
    /// A key the trust root does not know.
    pub const OUTSIDER: u8 = 99;
}

/// The key with `seed`.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The public half of the key with `seed`.
pub fn public(seed: u8) -> PublicKey {
    PublicKey::from(key(seed).verifying_key())
}

/// The wall clock as a protocol timestamp.
pub fn now() -> Timestamp {
    swell_agent::signer::now()
}

/// A year from now: when valid documents expire.
pub fn valid_until() -> Timestamp {
    now().plus_secs(365 * 24 * 3600)
}

/// The device's id.
pub fn device_id() -> DeviceId {
    DeviceId::new(DEVICE).unwrap()
}

/// The trust root every device ships with: root role 1 of {ROOT}, release role 2 of
/// {RELEASE_1, RELEASE_2}, controller role 1 of {CONTROLLER}.
pub fn root_json() -> Vec<u8> {
    let role = |seeds: &[u8], threshold| RoleKeys {
        keyids: seeds.iter().map(|s| public(*s).key_id()).collect(),
        threshold,
    };
    let keys: Vec<PublicKey> = [
        seed::ROOT,
        seed::RELEASE_1,
        seed::RELEASE_2,
        seed::CONTROLLER,
    ]
    .map(public)
    .to_vec();
    let doc = RootDocument::new(
        &keys,
        Roles {
            root: role(&[seed::ROOT], 1),
            release: role(&[seed::RELEASE_1, seed::RELEASE_2], 2),
            controller: role(&[seed::CONTROLLER], 1),
        },
    );
    let header = Header {
        version: 1,
        expires: valid_until(),
    };
    sign_document(header, &doc, &[&key(seed::ROOT)]).unwrap()
}

/// A release to build: defaults are a valid manifest for the simulated device.
#[derive(Debug, Clone)]
pub struct ReleaseSpec {
    pub version: String,
    pub security_version: u64,
    pub hardware: Vec<String>,
    pub expires: Timestamp,
    pub signers: Vec<u8>,
    pub image: Vec<u8>,
}

/// A release of `version` with `security_version` whose image is a simulated image with
/// `behaviour` (see `swell_agent::board::image`) of `size` bytes.
pub fn release(version: &str, security_version: u64, behaviour: &str, size: usize) -> ReleaseSpec {
    let seed = version.bytes().fold(7u64, |h, b| h * 31 + u64::from(b));
    ReleaseSpec {
        version: version.to_string(),
        security_version,
        hardware: vec![HARDWARE.to_string()],
        expires: valid_until(),
        signers: vec![seed::RELEASE_1, seed::RELEASE_2],
        image: swell_agent::board::image(behaviour, size, seed),
    }
}

/// A signed release: the manifest envelope and its image.
#[derive(Debug, Clone)]
pub struct Release {
    pub version: String,
    pub manifest: Vec<u8>,
    pub image: Vec<u8>,
    pub sha256: Sha256Digest,
}

impl ReleaseSpec {
    /// Signs the manifest.
    pub fn build(&self) -> Release {
        let sha256 = Sha256Digest::of(&self.image);
        let doc = ReleaseDocument {
            name: ReleaseName::new(RELEASE).unwrap(),
            release_version: SemVer::new(&self.version).unwrap(),
            security_version: self.security_version,
            hardware: self
                .hardware
                .iter()
                .map(|h| HardwareId::new(h).unwrap())
                .collect(),
            artifacts: vec![Artifact {
                target: TargetName::new("rootfs").unwrap(),
                size: self.image.len() as u64,
                sha256,
            }],
        };
        let header = Header {
            version: 1,
            expires: self.expires,
        };
        let keys: Vec<SigningKey> = self.signers.iter().map(|s| key(*s)).collect();
        let refs: Vec<&SigningKey> = keys.iter().collect();
        Release {
            version: self.version.clone(),
            manifest: sign_document(header, &doc, &refs).unwrap(),
            image: self.image.clone(),
            sha256,
        }
    }
}

/// A controller command for the device, signed by the controller role, with sequence number
/// `seq`.
pub fn command(seq: u64, id: &str, action: Action) -> Vec<u8> {
    let body = WireCommand {
        device: device_id(),
        id: id.to_string(),
        action,
    };
    let header = Header {
        version: seq,
        expires: valid_until(),
    };
    sign_document(header, &body, &[&key(seed::CONTROLLER)]).unwrap()
}

/// An install command for `release`, its image at `url`.
pub fn install_command(seq: u64, id: &str, release: &Release, url: &str) -> Vec<u8> {
    let action = Action::Install {
        manifest: serde_json::from_slice(&release.manifest).unwrap(),
        url: url.to_string(),
    };
    command(seq, id, action)
}

/// How the device is configured.
#[derive(Debug, Clone)]
pub struct Options {
    /// `[mqtt] url`, if the device talks to a broker.
    pub mqtt: Option<String>,
    /// `[health] deadline_secs`.
    pub health_deadline_secs: u64,
    /// `[download]` settings.
    pub stall_timeout_secs: u64,
    pub attempts: u32,
    pub checkpoint_bytes: Option<u64>,
    /// Where slot B lives, if not in the device's directory (a small file system, say).
    pub slot_b: Option<PathBuf>,
    /// `[boot] bootlimit`, if not the default.
    pub bootlimit: Option<u32>,
    /// Extra TOML appended to the configuration.
    pub extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mqtt: None,
            health_deadline_secs: 1,
            stall_timeout_secs: 5,
            attempts: 1,
            checkpoint_bytes: None,
            slot_b: None,
            bootlimit: None,
            extra: String::new(),
        }
    }
}

/// A simulated device in a temporary directory: slots `a.img` and `b.img`, data directory
/// `data/`, board directory `board/`, its key, the trust root and `agent.toml`. A new device
/// runs a factory image from slot A that no Swell release describes.
#[derive(Debug)]
pub struct Device {
    pub dir: tempfile::TempDir,
    pub options: Options,
    pub config: PathBuf,
    pub a: PathBuf,
    pub b: PathBuf,
    pub data: PathBuf,
    pub board: PathBuf,
}

/// The factory image in slot A of a new device.
pub fn factory_image() -> Vec<u8> {
    swell_agent::board::image("healthy", 64 * 1024, 0xfac7)
}

/// A TOML basic string (JSON's escapes are TOML's).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

impl Device {
    /// A new device running the factory image.
    pub fn new(options: Options) -> Self {
        let device = Self::empty(options);
        fs::write(&device.a, factory_image()).unwrap();
        device
    }

    /// A device with keys, root and configuration but nothing in its slots.
    fn empty(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_path_buf();
        let device = Self {
            config: p.join("agent.toml"),
            a: p.join("a.img"),
            b: options.slot_b.clone().unwrap_or_else(|| p.join("b.img")),
            data: p.join("data"),
            board: p.join("board"),
            options,
            dir,
        };
        let pem = swell_proto::keys::pem::private_key_to_pem(&key(seed::DEVICE)).unwrap();
        fs::write(p.join("device.pem"), pem).unwrap();
        fs::write(p.join("root.json"), root_json()).unwrap();
        device.write_config();
        device
    }

    /// The same device, copied into a new directory: slots, journal and boot environment.
    pub fn copy(&self) -> Self {
        let copy = Self::empty(self.options.clone());
        fs::create_dir_all(&copy.data).unwrap();
        fs::create_dir_all(&copy.board).unwrap();
        for (from, to) in [
            (&self.a, &copy.a),
            (&self.b, &copy.b),
            (&self.journal_path(), &copy.journal_path()),
            (&self.board.join("uboot.env"), &copy.board.join("uboot.env")),
            (
                &self.board.join("boot-counter"),
                &copy.board.join("boot-counter"),
            ),
        ] {
            if from.exists() {
                fs::copy(from, to).unwrap();
            }
        }
        copy
    }

    /// (Re)writes `agent.toml` from the options.
    pub fn write_config(&self) {
        let o = &self.options;
        let p = self.dir.path();
        let path = |p: &Path| toml_str(&p.display().to_string());
        let mut text = format!(
            "data_dir = {data}\n\
             [device]\nid = \"{DEVICE}\"\nhardware = \"{HARDWARE}\"\nkey = {key}\n\
             [trust]\nroot = {root}\n\
             [slots]\na = {a}\nb = {b}\n\
             [boot]\nbackend = \"simulated\"\nboard = {board}\nbootlimit = {bootlimit}\n\
             [health]\ndeadline_secs = {deadline}\ninterval_secs = 1\n\
             [[health.check]]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", {check}]\n\
             [download]\nconnect_timeout_secs = 2\nstall_timeout_secs = {stall}\nattempts = {attempts}\n",
            data = path(&self.data),
            key = path(&p.join("device.pem")),
            root = path(&p.join("root.json")),
            a = path(&self.a),
            b = path(&self.b),
            board = path(&self.board),
            bootlimit = o.bootlimit.unwrap_or(3),
            deadline = o.health_deadline_secs,
            check = toml_str(HEALTH_CHECK),
            stall = o.stall_timeout_secs,
            attempts = o.attempts,
        );
        if let Some(bytes) = o.checkpoint_bytes {
            text.push_str(&format!("checkpoint_bytes = {bytes}\n"));
        }
        if let Some(url) = &o.mqtt {
            text.push_str(&format!(
                "[mqtt]\nurl = {}\nkeep_alive_secs = 5\nheartbeat_secs = 3600\n",
                toml_str(url)
            ));
        }
        text.push_str(&o.extra);
        fs::write(&self.config, text).unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn journal_path(&self) -> PathBuf {
        self.data.join(swell_agent::journal::FILE_NAME)
    }

    /// Writes `bytes` into the device's directory as `name`; returns the path.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path().join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes `release`'s manifest and image into the device's directory.
    pub fn stage(&self, release: &Release) -> (PathBuf, PathBuf) {
        let v = &release.version;
        (
            self.write_file(&format!("{v}.manifest.json"), &release.manifest),
            self.write_file(&format!("{v}.img"), &release.image),
        )
    }

    /// `swell-agent <args>` with this device's configuration appended.
    pub fn agent(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(AGENT);
        cmd.args(args).arg("--config").arg(&self.config);
        cmd
    }

    /// `swell-agent board --until-settled` whose first boot runs `install MANIFEST IMAGE`.
    pub fn board_install(&self, manifest: &Path, image: &str) -> Command {
        let mut cmd = self.agent(&["board", "--until-settled"]);
        cmd.arg("--")
            .args(["install", "--config"])
            .arg(&self.config)
            .arg(manifest)
            .arg(image);
        cmd
    }

    /// Installs `release` from local files on the board and waits until it settles.
    pub fn install(&self, release: &Release) -> Output {
        let (manifest, image) = self.stage(release);
        run(
            self.board_install(&manifest, &image.display().to_string()),
            RUN_LIMIT,
        )
    }

    /// `swell-agent status --output json`.
    pub fn status(&self) -> serde_json::Value {
        let out = run(self.agent(&["status", "--output", "json"]), RUN_LIMIT);
        assert!(out.status.success(), "status failed: {}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// The persisted state, read with the agent's own journal code.
    pub fn journal(&self) -> Persisted {
        Journal::open(&self.data)
            .unwrap()
            .load()
            .unwrap()
            .expect("no journal")
    }

    /// The boot environment, read as the boot ROM reads it.
    pub fn env(&self) -> BootEnv {
        let mut store = swell_agent::bootctl::sim_env_store(&self.board).unwrap();
        let env = store.load().unwrap();
        let vars = BootVars::default();
        BootEnv {
            slot: vars.slot(&env).unwrap().unwrap_or(Slot::A),
            upgrade_available: vars.upgrade_available(&env).unwrap(),
            bootcount: vars.bootcount(&env).unwrap(),
        }
    }

    pub fn slot_path(&self, slot: Slot) -> &Path {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }

    /// The bytes of `slot`.
    pub fn slot_bytes(&self, slot: Slot) -> Vec<u8> {
        fs::read(self.slot_path(slot)).unwrap()
    }

    /// Every report in the journal's outbox, each verified with the device key, with its
    /// sequence number, oldest first.
    pub fn outbox_reports(&self) -> Vec<(u64, Report)> {
        self.journal()
            .outbox
            .iter()
            .map(|o| {
                assert_eq!(o.topic, DeviceTopic::Report);
                verify_report(&o.payload)
            })
            .collect()
    }
}

/// Verifies a signed report from the device with its key; returns its sequence number and
/// content.
pub fn verify_report(payload: &[u8]) -> (u64, Report) {
    let opened = open_device_message::<Report>(payload, &device_id(), &public(seed::DEVICE), now())
        .unwrap_or_else(|e| {
            panic!(
                "report does not verify with the device key: {e}: {}",
                String::from_utf8_lossy(payload)
            )
        });
    (opened.seq, opened.message)
}

/// Asserts that sequence numbers rise strictly.
pub fn assert_increasing(seqs: &[u64]) {
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers do not rise strictly: {seqs:?}"
    );
}

/// What the boot environment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEnv {
    /// The slot the boot ROM boots next.
    pub slot: Slot,
    /// A trial is armed.
    pub upgrade_available: bool,
    pub bootcount: u32,
}

/// A finished process.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` in a process group of its own, with no stdin, collecting its output. If it is
/// still running after `limit`, the whole group is killed and the test fails.
pub fn run(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let pid = child.id();
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    // A watchdog kills the group if the process outlives its limit; the normal path waits on
    // the process's exit and tells the watchdog.
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let timed_out = finished.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout);
        if timed_out {
            kill_group(pid, "KILL");
        }
        timed_out
    });
    let status = child.wait().unwrap();
    let _ = done.send(());
    let timed_out = watchdog.join().unwrap();
    let out = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    assert!(
        !timed_out,
        "{cmd:?} did not finish within {limit:?}; stderr:\n{}",
        out.stderr
    );
    out
}

/// Sends `signal` (a name for kill(1)) to the process group `pgid`.
pub fn kill_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), "--".to_string(), format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// A long-running process (a board running the daemon, a broker) in its own process group,
/// killed with its children when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    pub stderr_path: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with stdout and stderr going to `log` (a file the test can read).
    pub fn start(mut cmd: Command, log: &Path) -> Self {
        let file = fs::File::create(log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        Self {
            child,
            stderr_path: log.to_path_buf(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What it has written so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Kills the whole group with `signal` and waits for the leader.
    pub fn kill(&mut self, signal: &str) -> ExitStatus {
        kill_group(self.child.id(), signal);
        self.child.wait().unwrap()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.running() {
            self.kill("KILL");
        }
    }
}

/// Polls `probe` until it returns `Some`, or fails the test after `limit` naming `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SHA-256 of the first `len` bytes of `path`.
pub fn digest_prefix(path: &Path, len: u64) -> Sha256Digest {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .unwrap()
        .take(len)
        .read_to_end(&mut bytes)
        .unwrap();
    Sha256Digest::of(&bytes)
}
