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
