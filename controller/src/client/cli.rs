//! The clap definitions of swellctl's fleet commands and their dispatch; `crate::cli` wires
//! them in beside the offline commands.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use swell_proto::Timestamp;

use super::commands::{self, DeviceFilter, ProvisionArgs, TokenArgs, parse_tag};
use super::{Client, Connection, default_config_path};
use crate::error::Error;
use crate::output::{OutputFormat, emit};
use crate::when::When;

/// The connection flags, resolved only by commands that talk to the controller.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    /// `--controller`.
    pub controller: Option<String>,
    /// `--token`.
    pub token: Option<String>,
}

impl Conn {
    /// A client: flags, then environment, then the config file.
    pub fn client(&self) -> Result<Client, Error> {
        let conn = Connection::resolve(
            self.controller.clone(),
            self.token.clone(),
            |k| std::env::var(k).ok(),
            default_config_path().as_deref(),
        )?;
        Ok(Client::new(conn))
    }
}

/// `swellctl device ...`
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List devices, filtered.
    List {
        /// Only devices with this tag (repeatable; all must match).
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_tag)]
        tag: Vec<(String, String)>,
        /// Only this cohort.
        #[arg(long)]
        cohort: Option<String>,
        /// Only devices running this version.
        #[arg(long = "version", value_name = "SEMVER")]
        running_version: Option<String>,
        /// Only devices in this update state (or `unknown`).
        #[arg(long)]
        state: Option<String>,
        /// Only devices in this IANA time zone.
        #[arg(long)]
        zone: Option<String>,
    },
    /// One device: registration and inventory.
    Show {
        /// The device id.
        id: String,
    },
    /// Register a device by its public key (pre-provisioning; agents can also enroll).
    Provision {
        /// The device id.
        #[arg(long)]
        id: String,
        /// The device's Ed25519 public key (SPKI PEM file).
        #[arg(long, value_name = "PUB.pem")]
        public_key: PathBuf,
        /// Its hardware id.
        #[arg(long)]
        hardware: String,
        /// Its IANA time zone, such as Europe/Berlin.
        #[arg(long)]
        zone: String,
        /// Its cohort, such as canary.
        #[arg(long)]
        cohort: Option<String>,
        /// A tag (repeatable).
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_tag)]
        tag: Vec<(String, String)>,
    },
    /// Cut a device off: its messages are dropped and it gets no commands (admin).
    Revoke {
        /// The device id.
        id: String,
        /// Why (kept in the device record and the audit log).
        #[arg(long, default_value = "revoked with swellctl")]
        reason: String,
    },
    /// Command one device to install an accepted release.
    Install {
        /// The device id.
        id: String,
        /// The release name.
        #[arg(long)]
        release: String,
        /// The release version.
        #[arg(long = "version", value_name = "SEMVER")]
        release_version: String,
    },
}

/// `swellctl audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Audit entries, oldest first.
    List {
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Check the hash chain; exit status 1 if any entry was modified, reordered or deleted.
    Verify,
}

/// `swellctl enroll-token ...`
#[derive(Debug, Subcommand)]
pub enum EnrollTokenCommand {
    /// Make a token; it is printed once (the controller keeps only its SHA-256).
    Create {
        /// Cohort of the devices that enroll with it.
        #[arg(long)]
        cohort: Option<String>,
        /// Tag of the devices that enroll with it (repeatable).
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_tag)]
        tag: Vec<(String, String)>,
        /// Lifetime: a span (1h, 7d) or an RFC 3339 UTC expiry.
        #[arg(long, value_name = "WHEN", default_value = "1h")]
        ttl: When,
        /// How many devices may enroll with it.
        #[arg(long, value_name = "N", default_value_t = 1)]
        uses: u32,
    },
    /// Tokens that still exist (unexpired, uses left), without their secrets.
    List,
}

/// `swellctl lock ...`
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Take a deploy lock: while it holds, rollouts start no device (devices already updating
    /// finish).
    Create {
        /// Why (1 to 500 characters; shown on held rollouts and in the audit log).
        #[arg(long)]
        reason: String,
        /// When it stops holding by itself: a span (12h, 2d) or an RFC 3339 UTC instant.
        #[arg(long, value_name = "WHEN")]
        until: Option<When>,
        /// Weekly hours in one zone, such as "mon-fri 09:00-15:30 America/Los_Angeles" (days
        /// optional: every day); with --outside or --during.
        #[arg(long, value_name = "[DAYS] HH:MM-HH:MM ZONE", value_parser = super::locks::parse_freeze)]
        freeze: Option<super::locks::FreezeArg>,
        /// The lock holds outside the --freeze hours: deploys happen only within them.
        #[arg(long)]
        outside: bool,
        /// The lock holds during the --freeze hours.
        #[arg(long)]
        during: bool,
    },
    /// Locks, newest first: unreleased ones, or every lock with --all.
    List {
        /// Include released locks.
        #[arg(long)]
        all: bool,
    },
    /// Release a lock.
    Release {
        /// The lock id (lock-N).
        id: String,
        /// Why (kept in the lock and the audit log).
        #[arg(long)]
        reason: String,
    },
}

type Outcome = (&'static str, Result<(), Error>);

/// Runs a `device` command.
pub fn device(
    cmd: DeviceCommand,
    format: OutputFormat,
    conn: &Conn,
    out: &mut dyn Write,
) -> Outcome {
    let client = conn.client();
    match cmd {
        DeviceCommand::List {
            tag,
            cohort,
            running_version,
            state,
            zone,
        } => ("device list", {
            let f = DeviceFilter {
                tags: tag,
                cohort,
                version: running_version,
                state,
                zone,
            };
            client.and_then(|c| emit(out, format, &commands::device_list(&c, &f)?))
        }),
        DeviceCommand::Show { id } => (
            "device show",
            client.and_then(|c| emit(out, format, &commands::device_show(&c, &id)?)),
        ),
        DeviceCommand::Provision {
            id,
            public_key,
            hardware,
            zone,
            cohort,
            tag,
        } => ("device provision", {
            let a = ProvisionArgs {
                id: &id,
                public_key: &public_key,
                hardware: &hardware,
                zone: &zone,
                cohort: cohort.as_deref(),
                tags: &tag,
            };
            client.and_then(|c| emit(out, format, &commands::device_provision(&c, &a)?))
        }),
        DeviceCommand::Revoke { id, reason } => (
            "device revoke",
            client.and_then(|c| emit(out, format, &commands::device_revoke(&c, &id, &reason)?)),
        ),
        DeviceCommand::Install {
            id,
            release,
            release_version,
        } => (
            "device install",
            client.and_then(|c| {
                let a = commands::device_install(&c, &id, &release, &release_version)?;
                emit(out, format, &a)
            }),
        ),
    }
}

/// Runs an `audit` command.
pub fn audit(cmd: AuditCommand, format: OutputFormat, conn: &Conn, out: &mut dyn Write) -> Outcome {
    let client = conn.client();
    match cmd {
        AuditCommand::List { after, limit } => (
            "audit list",
            client.and_then(|c| emit(out, format, &commands::audit_list(&c, after, limit)?)),
        ),
        AuditCommand::Verify => (
            "audit verify",
            client.and_then(|c| {
                let (answer, ok) = commands::audit_verify(&c)?;
                emit(out, format, &answer)?;
                if ok {
                    Ok(())
                } else {
                    let n = answer.json["problems"].as_array().map_or(0, Vec::len);
                    Err(Error::AuditBroken(n))
                }
            }),
        ),
    }
}

/// Runs an `enroll-token` command.
pub fn enroll_token(
    cmd: EnrollTokenCommand,
    format: OutputFormat,
    now: Timestamp,
    conn: &Conn,
    out: &mut dyn Write,
) -> Outcome {
    let client = conn.client();
    match cmd {
        EnrollTokenCommand::Create {
            cohort,
            tag,
            ttl,
            uses,
        } => ("enroll-token create", {
            let ttl_s = ttl.resolve(now).unix() - now.unix();
            match u64::try_from(ttl_s) {
                Ok(ttl_s) if ttl_s > 0 => {
                    let a = TokenArgs {
                        cohort,
                        tags: tag,
                        ttl_s,
                        uses,
                    };
                    client.and_then(|c| emit(out, format, &commands::enroll_token_create(&c, &a)?))
                }
                _ => Err(Error::Argument {
                    arg: "--ttl",
                    reason: "the token would already have expired".into(),
                }),
            }
        }),
        EnrollTokenCommand::List => (
            "enroll-token list",
            client.and_then(|c| emit(out, format, &commands::enroll_token_list(&c)?)),
        ),
    }
}

/// `swellctl rollout create`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RolloutCreateArgs {
    /// The release to roll out, as NAME@VERSION (os@1.2.0).
    #[arg(long, value_name = "NAME@VERSION")]
    pub release: super::rollouts::ReleaseArg,
    /// The plan file (TOML; see docs/rollouts.md). Without it, the flags below build one.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Plan only: print the schedule the controller would follow, and create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: also print every device's planned start.
    #[arg(long, requires = "dry_run")]
    pub starts: bool,
    /// Replace this active rollout (its devices not yet started move to the new one).
    #[arg(long, value_name = "ROLLOUT")]
    pub supersedes: Option<String>,
    /// Without --plan: the device-local maintenance window, START-END.
    #[arg(
        long,
        value_name = "HH:MM-HH:MM",
        required_unless_present = "plan",
        conflicts_with = "plan"
    )]
    pub window: Option<String>,
    /// Without --plan: a first stage `canary` of this share (20%) or count, the canary cohort
    /// first (default: the canary cohort alone).
    #[arg(long, value_name = "SHARE", conflicts_with = "plan")]
    pub canary_share: Option<String>,
    /// Without --plan: waves after the canary, each a share of what is left (25%,50%); a last
    /// stage `rest` takes the remainder.
    #[arg(
        long,
        value_name = "SHARE,...",
        value_delimiter = ',',
        conflicts_with = "plan"
    )]
    pub waves: Vec<String>,
    /// Without --plan: most devices updating at once.
    #[arg(long, value_name = "N", default_value_t = 10, conflicts_with = "plan")]
    pub max_in_flight: u32,
    /// Without --plan: most update starts a minute.
    #[arg(long, value_name = "N", default_value_t = 10, conflicts_with = "plan")]
    pub starts_per_minute: u32,
    /// Without --plan: longest time from a device's start to its commit.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "45m",
        conflicts_with = "plan"
    )]
    pub device_timeout: String,
    /// Without --plan: how long committed devices must stay healthy before a stage passes.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30m",
        conflicts_with = "plan"
    )]
    pub soak: String,
    /// Without --plan: failures tolerated per stage, 0 or a percentage (5%); one more aborts
    /// the rollout and rolls it back.
    #[arg(
        long,
        value_name = "0|N%",
        default_value = "0",
        conflicts_with = "plan"
    )]
    pub tolerate: String,
    /// Without --plan: an operator approves the stage after the canary.
    #[arg(long, conflicts_with = "plan")]
    pub approval: bool,
    /// Without --plan: print the plan the flags make, and exit without calling the controller.
    #[arg(long, conflicts_with = "plan")]
    pub print_plan: bool,
}

impl RolloutCreateArgs {
    fn simple_plan(&self) -> super::rollouts::SimplePlan {
        super::rollouts::SimplePlan {
            window: self.window.clone().unwrap_or_default(),
            canary_share: self.canary_share.clone(),
            waves: self.waves.clone(),
            max_in_flight: self.max_in_flight,
            starts_per_minute: self.starts_per_minute,
            device_timeout: self.device_timeout.clone(),
            soak: self.soak.clone(),
            tolerate: self.tolerate.clone(),
            approval: self.approval,
        }
    }
}

/// `swellctl rollout ...`
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout of a release from a plan (or from flags for simple cases).
    Create(Box<RolloutCreateArgs>),
    /// Rollouts, newest first.
    List,
    /// One rollout: status, locks holding it, rollback, stages, zones, recent events.
    Show {
        /// The rollout id (r-N).
        id: String,
        /// Also list every device of the rollout.
        #[arg(long)]
        devices: bool,
    },
    /// Stop starting devices until resumed (devices already updating finish).
    Pause {
        /// The rollout id.
        id: String,
        /// Why (kept in the rollout's events and the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Resume a paused rollout.
    Resume {
        /// The rollout id.
        id: String,
        /// Why.
        #[arg(long, default_value = "resumed with swellctl")]
        reason: String,
    },
    /// Abort a rollout and roll back every device that took the release.
    Abort {
        /// The rollout id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Approve a stage that waits for approval (default: every stage waiting now).
    Approve {
        /// The rollout id.
        id: String,
        /// The stage to approve.
        #[arg(long)]
        stage: Option<String>,
        /// Why.
        #[arg(long, default_value = "approved with swellctl")]
        reason: String,
    },
    /// Follow a rollout until it ends: exit status 0 when it completed, 3 when it rolled back
    /// or was aborted, 4 when it was superseded.
    Watch {
        /// The rollout id.
        id: String,
        /// Time between polls (500ms, 1s, 1m).
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = super::rollouts::parse_interval)]
        interval: std::time::Duration,
    },
}

/// Runs a `rollout` command. `now` is when swellctl started; `watch` stamps its lines with it
/// plus the (monotonic) time elapsed since.
pub fn rollout(
    cmd: RolloutCommand,
    format: OutputFormat,
    now: Timestamp,
    conn: &Conn,
    out: &mut dyn Write,
) -> Outcome {
    use super::rollouts::{self, CreateRequest, WatchMode, WatchOptions};
    match cmd {
        RolloutCommand::Create(a) => ("rollout create", {
            let plan = match &a.plan {
                Some(path) => rollouts::read_plan(path),
                None => rollouts::simple_plan(&a.simple_plan(), &a.release),
            };
            plan.and_then(|plan| {
                if a.print_plan {
                    return emit(out, format, &rollouts::print_plan(&plan));
                }
                let req = CreateRequest {
                    plan: &plan,
                    release: &a.release,
                    dry_run: a.dry_run,
                    supersedes: a.supersedes.as_deref(),
                    starts: a.starts,
                };
                emit(out, format, &rollouts::create(&conn.client()?, &req)?)
            })
        }),
        RolloutCommand::List => (
            "rollout list",
            conn.client()
                .and_then(|c| emit(out, format, &rollouts::list(&c)?)),
        ),
        RolloutCommand::Show { id, devices } => (
            "rollout show",
            conn.client()
                .and_then(|c| emit(out, format, &rollouts::show(&c, &id, devices)?)),
        ),
        RolloutCommand::Pause { id, reason } => (
            "rollout pause",
            conn.client()
                .and_then(|c| emit(out, format, &rollouts::pause(&c, &id, &reason)?)),
        ),
        RolloutCommand::Resume { id, reason } => (
            "rollout resume",
            conn.client()
                .and_then(|c| emit(out, format, &rollouts::resume(&c, &id, &reason)?)),
        ),
        RolloutCommand::Abort { id, reason } => (
            "rollout abort",
            conn.client()
                .and_then(|c| emit(out, format, &rollouts::abort(&c, &id, &reason)?)),
        ),
        RolloutCommand::Approve { id, stage, reason } => (
            "rollout approve",
            conn.client().and_then(|c| {
                let a = rollouts::approve(&c, &id, stage.as_deref(), &reason)?;
                emit(out, format, &a)
            }),
        ),
        RolloutCommand::Watch { id, interval } => ("rollout watch", {
            use std::io::IsTerminal as _;
            let mode = match format {
                OutputFormat::Json => WatchMode::Json,
                OutputFormat::Table if std::io::stdout().is_terminal() => WatchMode::Screen,
                OutputFormat::Table => WatchMode::Lines,
            };
            let started = std::time::Instant::now();
            let mut clock = || {
                let elapsed = i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
                now.plus_secs(elapsed)
            };
            let opts = WatchOptions { interval, mode };
            conn.client().and_then(|c| {
                rollouts::watch(&c, &id, opts, out, &mut clock, &mut std::thread::sleep)
            })
        }),
    }
}
