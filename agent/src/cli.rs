//! The `swell-agent` command line: `run`, `install`, `status`, and `board` (the simulated
//! board's boot ROM, for tests and the demo).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::driver::{Agent, Exit, LocalInstall, RunMode};
use crate::journal::{Journal, Persisted, SlotImage};
use crate::update::State;

/// The exit code with which the agent asks the simulated board to reboot it.
pub const REBOOT_EXIT_CODE: u8 = 75;

/// Swell device agent: verified A/B updates with trial boot and automatic revert.
#[derive(Debug, Parser)]
#[command(name = "swell-agent", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent daemon.
    Run {
        /// The agent's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Exit once no update is in progress and every report is delivered.
        #[arg(long)]
        until_settled: bool,
    },
    /// Install a release from a local manifest and an image file or URL, through the same
    /// verification and state machine as a controller command.
    Install {
        /// The agent's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The signed release manifest.
        manifest: PathBuf,
        /// The image: a file path or an http(s):// URL.
        image: String,
    },
    /// Show the update state, the slots and what runs.
    Status {
        /// The agent's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Run a simulated board: its boot ROM boots the agent from the slots with U-Boot's
    /// bootcount semantics and restarts it on every reboot.
    Board {
        /// The agent's configuration file (its boot backend must be `simulated`).
        #[arg(long)]
        config: PathBuf,
        /// Exit when the agent settles instead of running it as a daemon.
        #[arg(long)]
        until_settled: bool,
        /// Arguments for the first boot's agent (for example `install M I`); later boots run
        /// the daemon.
        #[arg(last = true)]
        first_boot: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("starting the runtime: {e}")),
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(reason) => fail(&reason),
    }
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("error: {reason}");
    ExitCode::FAILURE
}

async fn dispatch(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Run {
            config,
            until_settled,
        } => {
            let mode = if until_settled {
                RunMode::UntilSettled
            } else {
                RunMode::Daemon
            };
            run_agent(&config, mode, None).await
        }
        Command::Install {
            config,
            manifest,
            image,
        } => {
            run_agent(
                &config,
                RunMode::UntilSettled,
                Some(LocalInstall { manifest, image }),
            )
            .await
        }
        Command::Status { config, output } => status(&config, output),
        Command::Board {
            config,
            until_settled,
            first_boot,
        } => {
            let config_file = config.clone();
            let config = Config::load(&config).map_err(|e| e.to_string())?;
            crate::board::run(&config_file, &config, until_settled, &first_boot)
                .await
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| e.to_string())
        }
    }
}

async fn run_agent(
    path: &std::path::Path,
    mode: RunMode,
    install: Option<LocalInstall>,
) -> Result<ExitCode, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let mut agent = Agent::start(config).await.map_err(|e| e.to_string())?;
    if let Some(request) = &install {
        agent.install_local(request)?;
    }
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let reboot = agent.reboot_handle();
    match agent.run(mode, shutdown).await.map_err(|e| e.to_string())? {
        Exit::Reboot => match reboot.reboot().map_err(|e| e.to_string())? {
            Some(code) => Ok(ExitCode::from(code)),
            None => Ok(ExitCode::SUCCESS),
        },
        Exit::Shutdown | Exit::Settled => Ok(ExitCode::SUCCESS),
    }
}

#[derive(Serialize)]
struct StatusView {
    device: String,
    state: String,
    release: Option<String>,
    reason: Option<String>,
    security_version: u64,
    slot_a: Option<SlotView>,
    slot_b: Option<SlotView>,
    unsent_reports: usize,
    /// Absent on a device that never updated a child, so its output stays as it was.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    children: Vec<ChildView>,
}

#[derive(Serialize)]
struct ChildView {
    id: String,
    state: String,
    release: Option<String>,
    reason: Option<String>,
    running: Option<swell_proto::messages::ChildRunning>,
}

impl From<&crate::gateway::Entry> for ChildView {
    fn from(e: &crate::gateway::Entry) -> Self {
        use crate::gateway::State as S;
        let state = match &e.state {
            None => "idle",
            Some(S::Probing(_)) => "probing",
            Some(S::Downloading(_)) => "downloading",
            Some(S::Transferring(_)) => "transferring",
            Some(S::Installed(..)) => "installed",
            Some(S::Trial(..)) => "trial",
            Some(S::Committed(_)) => "committed",
            Some(S::RolledBack(..)) => "rolled_back",
            Some(S::Failed(..)) => "failed",
        };
        Self {
            id: e.child.to_string(),
            state: state.to_string(),
            release: e.state.as_ref().map(|s| {
                let r = &s.job().release;
                format!("{} {}", r.name, r.version)
            }),
            reason: e.state.as_ref().and_then(|s| s.reason()).map(String::from),
            running: e.running.clone(),
        }
    }
}

#[derive(Serialize)]
struct SlotView {
    release: String,
    version: String,
    security_version: u64,
    sha256: String,
    verified: bool,
}

impl From<&SlotImage> for SlotView {
    fn from(i: &SlotImage) -> Self {
        Self {
            release: i.release.name.to_string(),
            version: i.release.version.to_string(),
            security_version: i.security_version,
            sha256: i.sha256.to_hex(),
            verified: i.verified,
        }
    }
}

fn status(path: &std::path::Path, output: Output) -> Result<ExitCode, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let journal = Journal::open(&config.data_dir).map_err(|e| e.to_string())?;
    let p = journal
        .load()
        .map_err(|e| e.to_string())?
        .unwrap_or_else(Persisted::fresh);
    let reason = match &p.state {
        State::RolledBack(_, r) | State::Failed(_, r) | State::Reverting(_, _, r) => {
            Some(r.clone())
        }
        _ => None,
    };
    let view = StatusView {
        device: config.device.id.to_string(),
        state: serde_json::to_value(p.state.update_state())
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        release: p
            .state
            .job()
            .map(|j| format!("{} {}", j.release.name, j.release.version)),
        reason,
        security_version: p.security_version,
        slot_a: p.slots[0].as_ref().map(SlotView::from),
        slot_b: p.slots[1].as_ref().map(SlotView::from),
        unsent_reports: p.outbox.len(),
        children: p.children.iter().map(ChildView::from).collect(),
    };
    match output {
        Output::Json => {
            let text = serde_json::to_string_pretty(&view).map_err(|e| e.to_string())?;
            println!("{text}");
        }
        Output::Table => {
            println!("device            {}", view.device);
            println!("state             {}", view.state);
            println!(
                "release           {}",
                view.release.as_deref().unwrap_or("-")
            );
            if let Some(reason) = &view.reason {
                println!("reason            {reason}");
            }
            println!("security version  {}", view.security_version);
            for (name, slot) in [("slot a", &view.slot_a), ("slot b", &view.slot_b)] {
                match slot {
                    Some(s) => println!(
                        "{name}            {} {} (security {}, {}, sha256 {})",
                        s.release,
                        s.version,
                        s.security_version,
                        if s.verified { "verified" } else { "unverified" },
                        s.sha256
                    ),
                    None => println!("{name}            -"),
                }
            }
            println!("unsent reports    {}", view.unsent_reports);
            for c in &view.children {
                let runs = c.running.as_ref().map_or_else(
                    || "-".to_string(),
                    |r| {
                        let name = r.release.as_ref().map_or("?".into(), ToString::to_string);
                        let version = r.version.as_ref().map_or("?".into(), ToString::to_string);
                        format!("{name} {version} (security {})", r.security_version)
                    },
                );
                println!(
                    "child {}    {} {}, runs {runs}",
                    c.id,
                    c.state,
                    c.release.as_deref().unwrap_or("-")
                );
                if let Some(reason) = &c.reason {
                    println!("  reason          {reason}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
