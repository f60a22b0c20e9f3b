//! The `swellctl` command line: clap definitions and [`run`], which the binary calls with the
//! parsed arguments, the current time and its standard output.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use swell_proto::{HardwareId, KeyId, ReleaseName, SemVer, TargetName, Timestamp};
use zeroize::Zeroizing;

use crate::client::cli as fleet;
use crate::client::commands;
use crate::document::{self, Expect};
use crate::error::Error;
use crate::fsutil::{self, DOCUMENT_MODE, Overwrite};
use crate::keys;
use crate::output::{OutputFormat, Report, Table, emit};
use crate::release::{self, CreateOptions, VerifyOptions};
use crate::rootcmd::{self, RoleSpec, RoleSpecs};
use crate::when::When;

/// Swell operator CLI: signing keys, trust roots, release manifests and signed documents.
#[derive(Debug, Parser)]
#[command(name = "swellctl", version, about, max_term_width = 100)]
pub struct Cli {
    /// Output format of what the command reports.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// The controller's base URL (else $SWELL_CONTROLLER, else ~/.config/swell/swellctl.toml).
    #[arg(long, global = true, value_name = "URL")]
    pub controller: Option<String>,
    /// The API token (else $SWELL_TOKEN, else ~/.config/swell/swellctl.toml).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate Ed25519 signing keys and print key ids.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Create, rotate, sign, verify and show trust roots (root.json).
    #[command(subcommand)]
    Root(RootCommand),
    /// Create, sign, verify and show release manifests.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Work with any signed document: payload for external signers, attach, sign.
    #[command(subcommand)]
    Document(DocumentCommand),
    /// The controller's devices: list, show, provision, revoke, install.
    #[command(subcommand)]
    Device(fleet::DeviceCommand),
    /// The controller's audit log: list and verify.
    #[command(subcommand)]
    Audit(fleet::AuditCommand),
    /// Enrollment tokens on the controller: create and list.
    #[command(subcommand)]
    EnrollToken(fleet::EnrollTokenCommand),
    /// Deploy locks on the controller: create, list, release.
    #[command(subcommand)]
    Lock(fleet::LockCommand),
    /// Rollouts on the controller: create (or dry-run), list, show, pause, resume, abort,
    /// approve, watch.
    #[command(subcommand)]
    Rollout(fleet::RolloutCommand),
}

/// `swellctl key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new key pair to PREFIX.pem (PKCS#8, mode 0600) and PREFIX.pub.pem (SPKI) and
    /// print its key id.
    Generate {
        /// Path prefix of the two files.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Print the key id of a public or private PEM key.
    Id {
        /// The key file.
        file: PathBuf,
    },
}

/// The role options of `root init` and `root rotate`.
#[derive(Debug, Args)]
pub struct RoleArgs {
    /// Key(s) of the root role, which signs trust roots (PEM files; repeatable).
    #[arg(long, value_name = "PUB.pem", num_args = 1..)]
    pub root_key: Vec<PathBuf>,
    /// Distinct root-role signatures required.
    #[arg(long, value_name = "N")]
    pub root_threshold: Option<u32>,
    /// Key(s) of the release role, which signs release manifests.
    #[arg(long, value_name = "PUB.pem", num_args = 1..)]
    pub release_key: Vec<PathBuf>,
    /// Distinct release-role signatures required.
    #[arg(long, value_name = "N")]
    pub release_threshold: Option<u32>,
    /// Key(s) of the controller role, which signs commands to devices.
    #[arg(long, value_name = "PUB.pem", num_args = 1..)]
    pub controller_key: Vec<PathBuf>,
    /// Distinct controller-role signatures required.
    #[arg(long, value_name = "N")]
    pub controller_threshold: Option<u32>,
}

impl RoleArgs {
    fn specs(&self) -> RoleSpecs {
        let spec = |keys: &Vec<PathBuf>, threshold| RoleSpec {
            keys: keys.clone(),
            threshold,
        };
        RoleSpecs {
            root: spec(&self.root_key, self.root_threshold),
            release: spec(&self.release_key, self.release_threshold),
            controller: spec(&self.controller_key, self.controller_threshold),
        }
    }
}

/// `swellctl root ...`
#[derive(Debug, Subcommand)]
pub enum RootCommand {
    /// Write a new, unsigned version 1 trust root.
    Init {
        /// The root file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Expiry: RFC 3339 UTC (2027-01-01T00:00:00Z) or a span from now (365d, 12h).
        #[arg(long, value_name = "WHEN")]
        expires: When,
        #[command(flatten)]
        roles: RoleArgs,
    },
    /// Add (or replace) a key's signature on a trust root, rewriting the file atomically.
    Sign {
        /// The root file.
        root: PathBuf,
        /// The private key (PKCS#8 PEM).
        #[arg(long, value_name = "PRIV.pem")]
        key: PathBuf,
    },
    /// Write the unsigned next version of a root; roles not given carry over. Holders of the
    /// old and of the new root role then sign it with `root sign`.
    Rotate {
        /// The current root.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The new root file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// New expiry (default: the old root's).
        #[arg(long, value_name = "WHEN")]
        expires: Option<When>,
        #[command(flatten)]
        roles: RoleArgs,
    },
    /// Verify a root: self-signed, or by rotation from a trusted root through a chain.
    Verify {
        /// The root to verify (the last link of a chain).
        root: PathBuf,
        /// A root already trusted (version N); ROOT is then verified by rotation from it.
        #[arg(long, value_name = "FIRST")]
        trusted: Option<PathBuf>,
        /// The roots between --trusted and ROOT, in version order.
        #[arg(long, value_name = "LINK", num_args = 1.., requires = "trusted")]
        chain: Vec<PathBuf>,
        /// Check expiry as of this instant (RFC 3339 UTC; default now).
        #[arg(long, value_name = "RFC3339")]
        at: Option<Timestamp>,
        /// Report an expired root instead of failing.
        #[arg(long)]
        allow_expired: bool,
    },
    /// Print a root's version, expiry, roles and keys, without verifying signatures.
    Show {
        /// The root file.
        root: PathBuf,
    },
}

/// `swellctl release ...`
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Hash an image and write its release manifest, signed by each --key.
    Create {
        /// The image file (hashed as a stream).
        #[arg(long, value_name = "PATH")]
        image: PathBuf,
        /// Where the image installs: rootfs or a child device id.
        #[arg(long, value_name = "TARGET", default_value = "rootfs")]
        target: TargetName,
        /// Release name, such as gateway-os.
        #[arg(long)]
        name: ReleaseName,
        /// Semantic version, such as 1.4.2.
        #[arg(long = "version", value_name = "SEMVER")]
        release_version: SemVer,
        /// Anti-rollback counter.
        #[arg(long, value_name = "N")]
        security_version: u64,
        /// Hardware id the release runs on (repeatable).
        #[arg(long, value_name = "HW", num_args = 1.., required = true)]
        hardware: Vec<HardwareId>,
        /// Expiry: RFC 3339 UTC or a span from now (90d, 12h); must be in the future.
        #[arg(long, value_name = "WHEN")]
        expires: When,
        /// Private key(s) to sign with (repeatable; none writes an unsigned manifest).
        #[arg(long, value_name = "PRIV.pem", num_args = 1..)]
        key: Vec<PathBuf>,
        /// The manifest file (default: IMAGE.manifest.json, beside the image).
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Add (or replace) a key's signature on a manifest, rewriting the file atomically.
    Sign {
        /// The manifest.
        manifest: PathBuf,
        /// The private key (PKCS#8 PEM).
        #[arg(long, value_name = "PRIV.pem")]
        key: PathBuf,
    },
    /// Verify a manifest against a trust root, and optionally an image and a device policy.
    Verify {
        /// The manifest.
        manifest: PathBuf,
        /// The trust root (verified as self-signed).
        #[arg(long, value_name = "ROOT")]
        root: PathBuf,
        /// An image to check against the manifest's size and digest.
        #[arg(long, value_name = "PATH")]
        image: Option<PathBuf>,
        /// The artifact the image is for (default rootfs).
        #[arg(long, value_name = "TARGET", requires = "image")]
        target: Option<TargetName>,
        /// A device's hardware id: check the release is built for it.
        #[arg(long, value_name = "HW")]
        hardware: Option<HardwareId>,
        /// The device's installed security version (anti-rollback check).
        #[arg(long, value_name = "N", requires = "hardware")]
        installed_security_version: Option<u64>,
        /// Check expiry as of this instant (RFC 3339 UTC; default now).
        #[arg(long, value_name = "RFC3339")]
        at: Option<Timestamp>,
    },
    /// Print a manifest file's contents without verifying signatures, or, given NAME VERSION,
    /// the release as the controller holds it.
    Show {
        /// The manifest file, or the release name.
        #[arg(value_name = "MANIFEST|NAME")]
        manifest: PathBuf,
        /// The release version: show the release from the controller.
        #[arg(value_name = "VERSION")]
        version: Option<String>,
    },
    /// Upload a signed manifest and its image to the controller (the image streamed).
    Upload {
        /// The signed manifest.
        manifest: PathBuf,
        /// The image.
        image: PathBuf,
        /// The artifact the image is (default: the manifest's only one).
        #[arg(long, value_name = "TARGET")]
        target: Option<String>,
    },
    /// The controller's accepted releases.
    List,
}

/// `swellctl document ...`
#[derive(Debug, Subcommand)]
pub enum DocumentCommand {
    /// Write the canonical bytes of the document's `signed` value: what signatures cover
    /// (for `openssl pkeyutl -sign -rawin` or an HSM).
    Payload {
        /// The signed document (any type).
        file: PathBuf,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Attach a raw 64-byte Ed25519 signature made elsewhere, after checking it verifies.
    Attach {
        /// The signed document (any type).
        file: PathBuf,
        /// The signer's public key (SPKI PEM; a private key works too).
        #[arg(long, value_name = "PUB.pem")]
        public_key: PathBuf,
        /// The raw signature file.
        #[arg(long, value_name = "SIG.bin")]
        signature: PathBuf,
    },
    /// Add (or replace) a key's signature on a document of any type.
    Sign {
        /// The signed document.
        file: PathBuf,
        /// The private key (PKCS#8 PEM).
        #[arg(long, value_name = "PRIV.pem")]
        key: PathBuf,
    },
}

/// A failed command: its name, such as `release verify`, and why.
#[derive(Debug, thiserror::Error)]
#[error("{command}")]
pub struct Failure {
    /// The command, as typed.
    pub command: &'static str,
    /// Why it failed (boxed: proto's errors carry names and instants, and a failure is rare).
    #[source]
    pub source: Box<Error>,
}

/// What `key generate` reports.
#[derive(Debug, Serialize)]
struct KeyReport {
    keyid: KeyId,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
    public_key: String,
}

impl Report for KeyReport {
    /// Just the key id, so `KEYID=$(swellctl key id k.pem)` works.
    fn table(&self) -> Table {
        let mut t = Table::new();
        t.row("", self.keyid);
        t
    }
}

/// What `document payload --out` reports.
#[derive(Debug, Serialize)]
struct PayloadReport {
    file: String,
    payload: String,
    bytes: usize,
}

impl Report for PayloadReport {
    fn table(&self) -> Table {
        let mut t = Table::new();
        t.row("document", &self.file)
            .row("payload", &self.payload)
            .row("bytes", self.bytes);
        t
    }
}

/// Runs `cli` with `now` as the current time, writing reports to `out`.
pub fn run(cli: Cli, now: Timestamp, out: &mut dyn Write) -> Result<(), Failure> {
    let format = cli.output;
    let conn = fleet::Conn {
        controller: cli.controller,
        token: cli.token,
    };
    let (command, result) = match cli.command {
        Command::Key(c) => key(c, format, out),
        Command::Root(c) => root(c, format, now, out),
        Command::Release(c) => release(c, format, now, &conn, out),
        Command::Document(c) => document(c, format, out),
        Command::Device(c) => fleet::device(c, format, &conn, out),
        Command::Audit(c) => fleet::audit(c, format, &conn, out),
        Command::EnrollToken(c) => fleet::enroll_token(c, format, now, &conn, out),
        Command::Lock(c) => crate::client::locks::run(c, format, now, &conn, out),
        Command::Rollout(c) => fleet::rollout(c, format, now, &conn, out),
    };
    result.map_err(|source| Failure {
        command,
        source: Box::new(source),
    })
}

type Outcome = (&'static str, Result<(), Error>);

fn key(cmd: KeyCommand, format: OutputFormat, out: &mut dyn Write) -> Outcome {
    match cmd {
        KeyCommand::Generate { out: prefix } => ("key generate", {
            let mut seed = Zeroizing::new([0u8; 32]);
            getrandom::fill(seed.as_mut_slice())
                .map_err(|e| Error::Random(e.to_string()))
                .and_then(|()| keys::generate(&prefix, &seed))
                .and_then(|g| {
                    let report = KeyReport {
                        keyid: g.keyid,
                        private_key: Some(g.private_key.display().to_string()),
                        public_key: g.public_key.display().to_string(),
                    };
                    emit(out, format, &report)
                })
        }),
        KeyCommand::Id { file } => ("key id", {
            keys::load_public_key(&file).and_then(|key| {
                let report = KeyReport {
                    keyid: key.key_id(),
                    private_key: None,
                    public_key: file.display().to_string(),
                };
                emit(out, format, &report)
            })
        }),
    }
}

fn root(cmd: RootCommand, format: OutputFormat, now: Timestamp, out: &mut dyn Write) -> Outcome {
    match cmd {
        RootCommand::Init {
            out: path,
            expires,
            roles,
        } => ("root init", {
            rootcmd::init(&path, expires, &roles.specs(), now).and_then(|r| emit(out, format, &r))
        }),
        RootCommand::Sign { root, key } => ("root sign", {
            document::sign_file(&root, &key, document::typed::<swell_proto::RootDocument>())
                .and_then(|r| emit(out, format, &r))
        }),
        RootCommand::Rotate {
            from,
            out: path,
            expires,
            roles,
        } => ("root rotate", {
            rootcmd::rotate(&from, &path, expires, &roles.specs(), now)
                .and_then(|r| emit(out, format, &r))
        }),
        RootCommand::Verify {
            root,
            trusted,
            chain,
            at,
            allow_expired,
        } => ("root verify", {
            let at = at.unwrap_or(now);
            rootcmd::verify(&root, trusted.as_deref(), &chain, at, allow_expired)
                .and_then(|r| emit(out, format, &r))
        }),
        RootCommand::Show { root } => (
            "root show",
            rootcmd::show(&root, now).and_then(|r| emit(out, format, &r)),
        ),
    }
}

fn release(
    cmd: ReleaseCommand,
    format: OutputFormat,
    now: Timestamp,
    conn: &fleet::Conn,
    out: &mut dyn Write,
) -> Outcome {
    match cmd {
        ReleaseCommand::Create {
            image,
            target,
            name,
            release_version,
            security_version,
            hardware,
            expires,
            key,
            out: manifest,
        } => ("release create", {
            let opts = CreateOptions {
                image,
                target,
                name,
                version: release_version,
                security_version,
                hardware,
                expires,
                keys: key,
                out: manifest,
            };
            release::create(&opts, now).and_then(|r| emit(out, format, &r))
        }),
        ReleaseCommand::Sign { manifest, key } => ("release sign", {
            document::sign_file(
                &manifest,
                &key,
                document::typed::<swell_proto::ReleaseDocument>(),
            )
            .and_then(|r| emit(out, format, &r))
        }),
        ReleaseCommand::Verify {
            manifest,
            root,
            image,
            target,
            hardware,
            installed_security_version,
            at,
        } => ("release verify", {
            let opts = VerifyOptions {
                manifest,
                root,
                image,
                target,
                hardware,
                installed_security_version: installed_security_version.unwrap_or(0),
                at: at.unwrap_or(now),
            };
            release::verify(&opts).and_then(|r| emit(out, format, &r))
        }),
        ReleaseCommand::Show {
            manifest,
            version: None,
        } => (
            "release show",
            release::show(&manifest, now).and_then(|r| emit(out, format, &r)),
        ),
        ReleaseCommand::Show {
            manifest: name,
            version: Some(version),
        } => (
            "release show",
            conn.client().and_then(|c| {
                let a = commands::release_show(&c, &name.to_string_lossy(), &version)?;
                emit(out, format, &a)
            }),
        ),
        ReleaseCommand::Upload {
            manifest,
            image,
            target,
        } => (
            "release upload",
            conn.client().and_then(|c| {
                let a = commands::release_upload(&c, &manifest, &image, target.as_deref())?;
                emit(out, format, &a)
            }),
        ),
        ReleaseCommand::List => (
            "release list",
            conn.client()
                .and_then(|c| emit(out, format, &commands::release_list(&c)?)),
        ),
    }
}

fn document(cmd: DocumentCommand, format: OutputFormat, out: &mut dyn Write) -> Outcome {
    match cmd {
        DocumentCommand::Payload { file, out: None } => ("document payload", {
            document::payload(&file).and_then(|bytes| {
                out.write_all(&bytes)
                    .and_then(|()| out.flush())
                    .map_err(Error::Output)
            })
        }),
        DocumentCommand::Payload {
            file,
            out: Some(path),
        } => ("document payload", {
            document::payload(&file).and_then(|bytes| {
                fsutil::write_atomic(&path, &bytes, DOCUMENT_MODE, Overwrite::Replace)?;
                let report = PayloadReport {
                    file: file.display().to_string(),
                    payload: path.display().to_string(),
                    bytes: bytes.len(),
                };
                emit(out, format, &report)
            })
        }),
        DocumentCommand::Attach {
            file,
            public_key,
            signature,
        } => ("document attach", {
            document::attach(&file, &public_key, &signature).and_then(|r| emit(out, format, &r))
        }),
        DocumentCommand::Sign { file, key } => ("document sign", {
            document::sign_file(&file, &key, Expect::Any).and_then(|r| emit(out, format, &r))
        }),
    }
}
