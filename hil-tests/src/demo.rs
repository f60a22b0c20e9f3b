//! The README's main job, as far as Swell exists today: an operator's first hour (keys, a
//! trust root, signed releases) and a device on a simulated board that installs them — a good
//! release, one whose health check fails, one that never boots, and the ones it must refuse.
//!
//! Everything is real: the swellctl commands are the library behind `swellctl`, and the
//! device is the real agent in real processes (this binary re-executed as `swell-agent`) on a
//! simulated board whose boot ROM follows U-Boot's bootcount rules.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::Parser as _;
use swell_agent::board;
use swell_agent::journal::{Journal, Persisted};
use swell_proto::keys::pem::public_key_from_pem;
use swell_proto::messages::{Report, Slot, UpdateState, open_device_message};
use swell_proto::{DeviceId, Timestamp};

/// The demo device's hardware id.
const HARDWARE: &str = "demo-board";
/// The demo device's id.
const DEVICE: &str = "demo-device-1";
/// Size of each simulated image: big enough to stream in checkpoints, small enough to be quick.
const IMAGE_SIZE: usize = 8 << 20;

/// The command line: the fleet demo, or `tour`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "swell-demo",
    about = "Swell's end-to-end demo (see the README): a controller driving a simulated fleet"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<DemoCommand>,
    #[command(flatten)]
    fleet: crate::fleet_demo::FleetArgs,
}

#[derive(Debug, clap::Subcommand)]
enum DemoCommand {
    /// One device's story, without the controller: keys, a trust root, signed releases, and a
    /// device that commits a good release, reverts bad ones and refuses what it must.
    Tour(DemoArgs),
}

/// Options of the one-device tour.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Work in this directory (created; default: a new one under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the work directory afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// One install on the device and what came of it.
struct Outcome {
    what: String,
    expected: &'static str,
    got: String,
    seconds: f64,
}

/// Runs the demo with the process's arguments.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(DemoCommand::Tour(args)) => run(args),
        None => std::env::current_exe()
            .context("cannot find this program to boot the agents with")
            .and_then(|me| crate::fleet_demo::run(&cli.fleet, &me)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Timestamp::from_unix(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Runs `swellctl ARGS` through swellctl's library and prints the command and its output.
fn swellctl(dir: &Path, args: &[&str]) -> Result<String> {
    println!("  $ swellctl {}", args.join(" "));
    let mut argv = vec!["swellctl".to_string()];
    for arg in args {
        argv.push(
            if arg.contains('/') || arg.ends_with(".json") || arg.ends_with(".img") {
                dir.join(arg).display().to_string()
            } else {
                (*arg).to_string()
            },
        );
    }
    let cli = swell_controller::cli::Cli::try_parse_from(&argv)?;
    let mut out = Vec::new();
    let result = swell_controller::cli::run(cli, now(), &mut out);
    let text = String::from_utf8_lossy(&out).replace(&format!("{}/", dir.display()), "");
    for line in text.lines() {
        println!("    {line}");
    }
    match result {
        Ok(()) => Ok(text),
        Err(e) => {
            let reason = anyhow::Error::new(e)
                .chain()
                .map(ToString::to_string)
                .collect::<Vec<_>>();
            let reason = reason
                .join(": ")
                .replace(&format!("{}/", dir.display()), "");
            println!("    refused: {reason}");
            bail!(reason)
        }
    }
}

fn run(args: &DemoArgs) -> Result<()> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("swell-demo-{}", std::process::id())),
    };
    if dir.exists() {
        bail!("{} exists; pass a new --dir", dir.display());
    }
    for sub in ["keys", "images", "device"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    println!("Swell demo: signed releases on a simulated A/B device");
    println!("work directory: {}\n", dir.display());
    let result = story(&dir);
    if args.keep || result.is_err() {
        println!("\nThe work directory is kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn story(dir: &Path) -> Result<()> {
    println!("1. Keys and a trust root: three release keys, two of which must sign.\n");
    for key in ["root", "release-1", "release-2", "release-3", "controller"] {
        swellctl(dir, &["key", "generate", "--out", &format!("keys/{key}")])?;
    }
    swellctl(
        dir,
        &[
            "root",
            "init",
            "--out",
            "root.json",
            "--expires",
            "365d",
            "--root-key",
            "keys/root.pub.pem",
            "--root-threshold",
            "1",
            "--release-key",
            "keys/release-1.pub.pem",
            "keys/release-2.pub.pem",
            "keys/release-3.pub.pem",
            "--release-threshold",
            "2",
            "--controller-key",
            "keys/controller.pub.pem",
            "--controller-threshold",
            "1",
        ],
    )?;
    swellctl(
        dir,
        &["root", "sign", "root.json", "--key", "keys/root.pem"],
    )?;

    println!("\n2. Releases, hashed while streamed and signed by two release keys.\n");
    let releases = [
        ("1.1.0", "healthy", 1),
        ("1.2.0", "unhealthy", 1),
        ("1.3.0", "crash", 1),
        ("2.0.0", "healthy", 2),
    ];
    for (i, (version, behaviour, security)) in releases.iter().enumerate() {
        let image = format!("images/demo-os-{version}.img");
        let seed = u64::try_from(i).unwrap_or(0) + 10;
        std::fs::write(dir.join(&image), board::image(behaviour, IMAGE_SIZE, seed))?;
        swellctl(
            dir,
            &[
                "release",
                "create",
                "--image",
                &image,
                "--name",
                "demo-os",
                "--version",
                version,
                "--security-version",
                &security.to_string(),
                "--hardware",
                HARDWARE,
                "--expires",
                "30d",
                "--key",
                "keys/release-1.pem",
                "--key",
                "keys/release-2.pem",
            ],
        )?;
    }
    let one_key = "images/demo-os-1.1.0-one-key.img";
    std::fs::copy(dir.join("images/demo-os-1.1.0.img"), dir.join(one_key))?;
    swellctl(
        dir,
        &[
            "release",
            "create",
            "--image",
            one_key,
            "--name",
            "demo-os",
            "--version",
            "1.1.1",
            "--security-version",
            "1",
            "--hardware",
            HARDWARE,
            "--expires",
            "30d",
            "--key",
            "keys/release-3.pem",
        ],
    )?;
    println!("\n   The operator checks a release the way a device will, then a tampered copy:\n");
    let good = "images/demo-os-1.1.0.img";
    swellctl(
        dir,
        &[
            "release",
            "verify",
            &format!("{good}.manifest.json"),
            "--root",
            "root.json",
            "--image",
            good,
            "--hardware",
            HARDWARE,
        ],
    )?;
    let tampered = "images/demo-os-1.1.0-tampered.img";
    let mut bytes = std::fs::read(dir.join(good))?;
    bytes[IMAGE_SIZE / 2] ^= 0x01;
    std::fs::write(dir.join(tampered), bytes)?;
    let refused = swellctl(
        dir,
        &[
            "release",
            "verify",
            &format!("{good}.manifest.json"),
            "--root",
            "root.json",
            "--image",
            tampered,
        ],
    );
    if refused.is_ok() {
        bail!("a tampered image verified");
    }
    std::fs::copy(
        dir.join(format!("{good}.manifest.json")),
        dir.join(format!("{tampered}.manifest.json")),
    )?;

    println!("\n3. A device: factory image 1.0.0 in slot A, the agent on a simulated board");
    println!("   (U-Boot environment, bootlimit 2, health check = the image's own behaviour).\n");
    let device = Device::provision(dir)?;
    let mut outcomes = Vec::new();
    for (what, image, expected) in [
        ("install 1.1.0", "images/demo-os-1.1.0.img", "committed"),
        (
            "install 1.2.0 (health check fails)",
            "images/demo-os-1.2.0.img",
            "rolled_back",
        ),
        (
            "install 1.3.0 (never boots)",
            "images/demo-os-1.3.0.img",
            "rolled_back",
        ),
        ("install 1.1.1 (one signature of 2)", one_key, "refused"),
        ("install a tampered 1.1.0", tampered, "failed"),
        (
            "install 2.0.0 (security version 2)",
            "images/demo-os-2.0.0.img",
            "committed",
        ),
        (
            "install 1.1.0 again (downgrade)",
            "images/demo-os-1.1.0.img",
            "refused",
        ),
    ] {
        outcomes.push(device.install(what, image, expected)?);
    }

    println!("\n4. Summary\n");
    println!(
        "  {:<38} {:<12} {:<12} {:>8}",
        "step", "expected", "result", "seconds"
    );
    let mut all_ok = true;
    for o in &outcomes {
        let mark = if o.got == o.expected {
            ""
        } else {
            "  <-- unexpected"
        };
        all_ok &= o.got == o.expected;
        println!(
            "  {:<38} {:<12} {:<12} {:>8.2}{mark}",
            o.what, o.expected, o.got, o.seconds
        );
    }
    let p = device.journal()?;
    println!(
        "\n  The device runs {}, and holds {} signed reports for the controller.",
        running(&p),
        p.outbox.len()
    );
    if !all_ok {
        bail!("an install did not end as expected");
    }
    println!("  Every outcome is the one expected.");
    Ok(())
}

struct Device {
    dir: PathBuf,
    config: PathBuf,
    public: swell_proto::PublicKey,
}

impl Device {
    fn provision(dir: &Path) -> Result<Self> {
        let dev = dir.join("device");
        swellctl(dir, &["key", "generate", "--out", "device/device-key"])?;
        let public = public_key_from_pem(&std::fs::read_to_string(dev.join("device-key.pub.pem"))?)
            .map_err(|e| anyhow::anyhow!("device key: {e}"))?;
        std::fs::write(
            dev.join("slot-a.img"),
            board::image("healthy", IMAGE_SIZE, 1),
        )?;
        std::fs::write(dev.join("slot-b.img"), b"")?;
        let d = dev.display();
        let config = format!(
            "data_dir = \"{d}/data\"\n\
             [device]\nid = \"{DEVICE}\"\nhardware = \"{HARDWARE}\"\nkey = \"{d}/device-key.pem\"\n\
             [trust]\nroot = \"{}\"\n\
             [slots]\na = \"{d}/slot-a.img\"\nb = \"{d}/slot-b.img\"\n\
             [boot]\nbackend = \"simulated\"\nboard = \"{d}/board\"\nbootlimit = 2\n\
             [health]\ndeadline_secs = 3\ninterval_secs = 1\n\
             [[health.check]]\nkind = \"command\"\n\
             command = [\"sh\", \"-c\", \"test \\\"${}\\\" != unhealthy\"]\n",
            dir.join("root.json").display(),
            board::BEHAVIOUR_ENV,
        );
        let path = dev.join("agent.toml");
        std::fs::write(&path, config)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config: path,
            public,
        })
    }

    fn journal(&self) -> Result<Persisted> {
        let journal = Journal::open(&self.dir.join("device/data"))?;
        Ok(journal.load()?.unwrap_or_else(Persisted::fresh))
    }

    fn install(&self, what: &str, image: &str, expected: &'static str) -> Result<Outcome> {
        println!("  -- {what}");
        let seen = self.journal()?.outbox.len();
        let exe = std::env::current_exe()?;
        let manifest = self.dir.join(format!("{image}.manifest.json"));
        let config = self.config.display().to_string();
        let started = Instant::now();
        let output = Command::new(exe)
            .args([
                "board",
                "--config",
                &config,
                "--until-settled",
                "--",
                "install",
                "--config",
                &config,
            ])
            .arg(&manifest)
            .arg(self.dir.join(image))
            .output()
            .context("starting the simulated board")?;
        let seconds = started.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let got = if output.status.success() {
            let p = self.journal()?;
            self.print_reports(&p, seen)?;
            let state = p.state.update_state();
            serde_json::to_value(state)?
                .as_str()
                .unwrap_or_default()
                .to_string()
        } else {
            // The agent's own one-line error comes first; the board's summary of it follows.
            let reason = stderr
                .lines()
                .find(|l| l.starts_with("error: "))
                .unwrap_or_default();
            let reason = reason
                .trim_start_matches("error: ")
                .replace(&format!("{}/", self.dir.display()), "");
            println!("     refused before anything was written: {reason}");
            String::from("refused")
        };
        let p = self.journal()?;
        println!("     now running {}  ({seconds:.2} s)", running(&p));
        Ok(Outcome {
            what: what.to_string(),
            expected,
            got,
            seconds,
        })
    }

    /// Prints the reports the agent queued since `seen`, each verified with the device key.
    fn print_reports(&self, p: &Persisted, seen: usize) -> Result<()> {
        let device = DeviceId::new(DEVICE)?;
        let mut last_seq = 0;
        for message in p.outbox.iter().skip(seen) {
            let report =
                open_device_message::<Report>(&message.payload, &device, &self.public, now())
                    .map_err(|e| anyhow::anyhow!("a report does not verify: {e}"))?;
            if report.seq <= last_seq {
                bail!("report sequence numbers went backwards");
            }
            last_seq = report.seq;
            let r = report.message;
            let mut line = format!(
                "     report #{:<14} {:<12}",
                seq_text(report.seq),
                state_name(r.state)
            );
            let _ = write!(line, " running {}", version_of(&r.running));
            if let Some(reason) = &r.reason {
                let _ = write!(line, "  reason: {reason}");
            }
            println!("{line}");
        }
        Ok(())
    }
}

fn seq_text(seq: u64) -> String {
    format!("{}.{}", seq >> 32, seq & 0xffff_ffff)
}

fn state_name(state: UpdateState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn version_of(r: &swell_proto::messages::Running) -> String {
    let slot = if r.slot == Slot::A { "A" } else { "B" };
    match &r.version {
        Some(v) => format!("{v} (slot {slot})"),
        None => format!("factory 1.0.0 (slot {slot})"),
    }
}

fn running(p: &Persisted) -> String {
    let base = swell_proto::messages::Running {
        release: None,
        version: None,
        slot: p.state.job().map_or(Slot::A, |j| j.previous.slot),
        security_version: p.security_version,
    };
    version_of(&p.state.running(&base))
}
