//! A simulated fleet of real devices around the real controller: keys and a trust root, the
//! controller in this process (embedded broker, redb store, HTTP API) on a simulated clock,
//! and N real agents, each on its own simulated A/B board in its own processes (this binary
//! re-executed as `swell-agent`), enrolled with tokens that give them a zone, a cohort and
//! tags. Releases are built with swellctl's library and uploaded through the API.
//!
//! The demo drives it; tests can too. Every process it starts is killed and reaped when the
//! [`Fleet`] is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser as _;
use serde_json::Value;
use swell_agent::board;
use swell_controller::client::commands::{self, TokenArgs};
use swell_controller::client::{Client, Connection};
use swell_controller::service::config::Config;
use swell_controller::service::{Addresses, Service};
use swell_proto::Timestamp;

/// The simulated boards' hardware id.
pub const HARDWARE: &str = "sim-board";
/// The admin token the fleet's controller accepts.
const ADMIN: &str = "swell_fleet_admin_token";

/// The current wall-clock time.
pub fn now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Timestamp::from_unix(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// The current wall-clock time in Unix milliseconds, as the boards' consoles write it.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs `swellctl ARGS` through swellctl's library; its output.
pub fn swellctl(args: &[&str]) -> Result<String> {
    let argv: Vec<&str> = std::iter::once("swellctl")
        .chain(args.iter().copied())
        .collect();
    let cli = swell_controller::cli::Cli::try_parse_from(argv)?;
    let mut out = Vec::new();
    swell_controller::cli::run(cli, now(), &mut out)
        .map_err(|e| anyhow::anyhow!("swellctl {}: {e}", args.join(" ")))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Polls `f` every 50 ms until it gives a value or `limit` passes.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Makes, in `keys`, the key pairs `root`, `release` and `controller` (PKCS#8 PEM, and
/// `.pub.pem`) and `root.json`: a trust root valid for a year whose three roles each hold one
/// key with threshold 1, signed by the root key.
pub fn trust_root(keys: &Path) -> Result<()> {
    std::fs::create_dir_all(keys).with_context(|| format!("creating {}", keys.display()))?;
    for k in ["root", "release", "controller"] {
        swellctl(&["key", "generate", "--out", &p(keys, k)])?;
    }
    swellctl(&[
        "root",
        "init",
        "--out",
        &p(keys, "root.json"),
        "--expires",
        "365d",
        "--root-key",
        &p(keys, "root.pub.pem"),
        "--release-key",
        &p(keys, "release.pub.pem"),
        "--controller-key",
        &p(keys, "controller.pub.pem"),
        "--root-threshold",
        "1",
        "--release-threshold",
        "1",
        "--controller-threshold",
        "1",
    ])?;
    swellctl(&[
        "root",
        "sign",
        &p(keys, "root.json"),
        "--key",
        &p(keys, "root.pem"),
    ])?;
    Ok(())
}

/// Writes a simulated image with `behaviour` (`healthy`, `unhealthy`, `crash`, `noisy`) of
/// `size` bytes at `image`, and its release manifest `name` `version` for [`HARDWARE`],
/// signed with the release key in `keys` (as `<image>.manifest.json`).
pub fn signed_image(
    keys: &Path,
    image: &Path,
    name: &str,
    version: &str,
    behaviour: &str,
    size: usize,
) -> Result<PathBuf> {
    let seed = version
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    std::fs::write(image, board::image(behaviour, size, seed))?;
    swellctl(&[
        "release",
        "create",
        "--image",
        &image.display().to_string(),
        "--name",
        name,
        "--version",
        version,
        "--security-version",
        "1",
        "--hardware",
        HARDWARE,
        "--expires",
        "30d",
        "--key",
        &p(keys, "release.pem"),
    ])?;
    let mut manifest = image.as_os_str().to_owned();
    manifest.push(".manifest.json");
    Ok(PathBuf::from(manifest))
}

/// One device of the fleet as asked for.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Its id.
    pub id: String,
    /// Its IANA zone.
    pub zone: String,
    /// Its cohort.
    pub cohort: Option<String>,
    /// Its tags.
    pub tags: Vec<(String, String)>,
}

/// What the fleet is made of.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// The work directory (created).
    pub dir: PathBuf,
    /// The devices.
    pub devices: Vec<DeviceSpec>,
    /// What the controller's simulated clock shows at start-up.
    pub clock_start: Timestamp,
    /// Simulated seconds per real second.
    pub speed: u32,
    /// Size of each image (bytes).
    pub image_size: usize,
}

/// A child process in a process group of its own; dropping it kills the whole group (a board
/// and the agent it booted, which would outlive a board killed alone) and reaps the leader.
#[derive(Debug)]
pub struct ProcessGroup(Child);

impl ProcessGroup {
    /// Starts `cmd` (standard input closed) as the leader of a new process group.
    pub fn spawn(mut cmd: Command) -> std::io::Result<ProcessGroup> {
        use std::os::unix::process::CommandExt as _;
        cmd.stdin(Stdio::null()).process_group(0);
        cmd.spawn().map(ProcessGroup)
    }

    /// The leader's process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// The leader's standard output, if it was piped and not taken yet.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.0.stdout.take()
    }

    /// SIGKILL to every process of the group, then reap the leader.
    pub fn kill(&mut self) {
        if let Some(pid) = i32::try_from(self.0.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.0.wait();
    }

    /// Whether the leader is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The controller in this process: the same `Service` that `swell-controller serve` runs, on
/// a runtime of its own. Dropping it shuts it down.
pub struct Controller {
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), swell_controller::service::ServiceError>>>,
    addresses: Addresses,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Starts the controller the config file at `path` describes (with its `[clock]`) and
    /// waits until it serves.
    pub fn start(path: &Path) -> Result<Controller> {
        let config = Config::load(path)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let clock = swell_controller::service::clock_for(config.clock);
        let service = runtime.block_on(Service::start(config, clock))?;
        let addresses = service.addresses();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let server = runtime.spawn(service.serve(
            move |_| {
                let _ = ready_tx.send(());
            },
            async {
                let _ = stopped.await;
            },
        ));
        let controller = Controller {
            runtime,
            stop: Some(stop),
            server: Some(server),
            addresses,
        };
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .context("the controller did not become ready")?;
        Ok(controller)
    }

    /// Where it listens.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// Shuts it down and says how its service ended.
    pub fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(server) => Ok(self.runtime.block_on(server)??),
            None => Ok(()),
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = self.runtime.block_on(server);
        }
    }
}

/// A running fleet.
pub struct Fleet {
    /// The work directory.
    pub dir: PathBuf,
    /// The controller's addresses.
    pub addresses: Addresses,
    /// An admin client of its API.
    pub client: Client,
    spec: FleetSpec,
    // Boards before the controller: dropped first, so agents stop before the broker does.
    boards: Vec<ProcessGroup>,
    controller: Controller,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("dir", &self.dir)
            .field("devices", &self.boards.len())
            .finish_non_exhaustive()
    }
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

impl Fleet {
    /// Makes keys and a trust root, starts the controller, starts and enrolls every device,
    /// and waits until all are online. `agent` is the program the boards boot as the agent
    /// (a multi-call binary that is also `swell-agent`).
    pub fn start(spec: FleetSpec, agent: &Path) -> Result<Fleet> {
        let dir = spec.dir.clone();
        trust_root(&dir.join("keys"))?;

        let digest = swell_controller::service::auth::digest_of(ADMIN).to_hex();
        let config = format!(
            "data_dir = \"controller-data\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [broker]\nmode = \"embedded\"\nlisten = \"127.0.0.1:0\"\n\
             [trust]\nroot = \"keys/root.json\"\ncontroller_key = \"keys/controller.pem\"\n\
             [clock]\nstart = \"{start}\"\nspeed = {speed}\n\
             [rollouts]\ntick_ms = 100\n\
             [[api.token]]\nname = \"operator\"\nrole = \"admin\"\nsha256 = \"{digest}\"\n",
            start = spec.clock_start,
            speed = spec.speed,
        );
        let config_path = dir.join("controller.toml");
        std::fs::write(&config_path, config)?;
        let controller = Controller::start(&config_path)?;
        let addresses = controller.addresses();
        let http = format!("http://{}", addresses.http);
        let mqtt = format!(
            "mqtt://{}",
            addresses
                .mqtt
                .context("the embedded broker has no address")?
        );
        let client = Client::new(Connection {
            base: http.clone(),
            token: Some(ADMIN.into()),
        });

        let mut fleet = Fleet {
            dir,
            addresses,
            client,
            spec,
            boards: Vec::new(),
            controller,
        };
        let devices = fleet.spec.devices.clone();
        for d in &devices {
            let token = fleet.token(d)?;
            let board = fleet.start_board(d, &mqtt, &http, &token, agent)?;
            fleet.boards.push(board);
        }
        let n = devices.len();
        eventually(
            "every device enrolled and online",
            Duration::from_secs(180),
            || {
                let list = commands::device_list(&fleet.client, &commands::DeviceFilter::default())
                    .ok()?
                    .json;
                let online = list["devices"]
                    .as_array()?
                    .iter()
                    .filter(|d| d["online"] == true && d["running"].is_object())
                    .count();
                (online == n).then_some(())
            },
        )?;
        Ok(fleet)
    }

    fn token(&self, d: &DeviceSpec) -> Result<String> {
        let a = TokenArgs {
            cohort: d.cohort.clone(),
            tags: d.tags.clone(),
            ttl_s: 3600,
            uses: 1,
        };
        let t = commands::enroll_token_create(&self.client, &a)?.json;
        t["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token in the answer")
    }

    fn start_board(
        &self,
        d: &DeviceSpec,
        mqtt: &str,
        http: &str,
        token: &str,
        agent: &Path,
    ) -> Result<ProcessGroup> {
        let bd = self.device_dir(&d.id);
        std::fs::create_dir_all(&bd)?;
        // The factory image: healthy, from no release.
        std::fs::write(bd.join("slot-a.img"), board::image("healthy", 4096, 1))?;
        std::fs::write(bd.join("slot-b.img"), b"")?;
        let b = bd.display();
        let config = format!(
            "data_dir = \"{b}/data\"\n\
             [device]\nid = \"{id}\"\nhardware = \"{HARDWARE}\"\nkey = \"{b}/device-key.pem\"\n\
             [trust]\nroot = \"{root}\"\n\
             [mqtt]\nurl = \"{mqtt}\"\nheartbeat_secs = 1\n\
             [enroll]\nurl = \"{http}\"\ntoken = \"{token}\"\nzone = \"{zone}\"\n\
             [slots]\na = \"{b}/slot-a.img\"\nb = \"{b}/slot-b.img\"\n\
             [boot]\nbackend = \"simulated\"\nboard = \"{b}/board\"\nbootlimit = 2\n\
             [health]\ndeadline_secs = 4\ninterval_secs = 1\n\
             [[health.check]]\nkind = \"command\"\n\
             command = [\"sh\", \"-c\", \"test \\\"${behaviour}\\\" != unhealthy\"]\n",
            id = d.id,
            zone = d.zone,
            root = self.dir.join("keys/root.json").display(),
            behaviour = board::BEHAVIOUR_ENV,
        );
        let path = bd.join("agent.toml");
        std::fs::write(&path, config)?;
        let mut cmd = Command::new(agent);
        cmd.args(["board", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(bd.join("board.log"))?);
        ProcessGroup::spawn(cmd).with_context(|| format!("starting the board of {}", d.id))
    }

    fn device_dir(&self, id: &str) -> PathBuf {
        self.dir.join("devices").join(id)
    }

    /// The reboots into the other slot for good (a revert or a boot ROM's fallback, not an
    /// install's trial) that the boards' consoles logged from `since_ms` (Unix milliseconds).
    pub fn reboots_back(&self, since_ms: u64) -> Result<Vec<board::Reboot>> {
        let mut out = Vec::new();
        for d in &self.spec.devices {
            let console = self.device_dir(&d.id).join("board");
            let lines = board::read_console(&console)
                .with_context(|| format!("reading the console log in {}", console.display()))?;
            out.extend(
                board::reboots(&lines)
                    .into_iter()
                    .filter(|r| r.at_ms >= since_ms && !r.trial && r.from != r.to),
            );
        }
        Ok(out)
    }

    /// Builds an image with `behaviour` (`healthy`, `unhealthy`, `crash`), makes and signs
    /// release `version` of it, and uploads it.
    pub fn release(&self, name: &str, version: &str, behaviour: &str) -> Result<()> {
        let dir = self.dir.join("releases");
        std::fs::create_dir_all(&dir)?;
        let image = dir.join(format!("{name}-{version}.img"));
        let manifest = signed_image(
            &self.dir.join("keys"),
            &image,
            name,
            version,
            behaviour,
            self.spec.image_size,
        )?;
        commands::release_upload(&self.client, &manifest, &image, None)?;
        Ok(())
    }

    /// Creates a rollout of `name` `version` with `plan` (TOML); its id.
    pub fn rollout(&self, plan: &str, name: &str, version: &str) -> Result<String> {
        let body = serde_json::json!({
            "plan": plan,
            "release": {"name": name, "version": version},
        });
        let v: Value = self.client.send_json("POST", "/v1/rollouts", &body)?;
        v["rollout"]["id"]
            .as_str()
            .map(str::to_owned)
            .context("no rollout id in the answer")
    }

    /// The rollout as `GET /v1/rollouts/{id}` shows it.
    pub fn show(&self, id: &str) -> Result<Value> {
        let v = swell_controller::client::rollouts::fetch(&self.client, id)?;
        Ok(v["rollout"].clone())
    }

    /// The admin token of the fleet's controller.
    pub fn admin_token(&self) -> &'static str {
        ADMIN
    }

    /// Blocks until SIGINT (Ctrl-C) or SIGTERM.
    pub fn wait_for_interrupt(&self) {
        self.controller.runtime.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let terminate = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = terminate => {}
            }
        });
    }

    /// The devices as `GET /v1/devices` lists them.
    pub fn devices(&self) -> Result<Vec<Value>> {
        let list = commands::device_list(&self.client, &commands::DeviceFilter::default())?.json;
        Ok(list["devices"].as_array().cloned().unwrap_or_default())
    }
}
