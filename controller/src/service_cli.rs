//! `swell-controller`, the Swell controller service's command line: parsing, logging set-up,
//! the clock, the signals and the exit status; the service is [`crate::service`]. The
//! `swell-controller` binary is a one-line call of [`main`], and so is `swell-demo serve`.
//!
//! `serve` prints one line on standard output once it is ready,
//! `swell-controller listening http=ADDR mqtt=ADDR`, so scripts and tests can wait for it;
//! logs go to standard error.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::service::auth::{self, Role};
use crate::service::config::Config;
use crate::service::{Service, SystemClock};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

/// The Swell controller.
#[derive(Debug, Parser)]
#[command(name = "swell-controller", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller.
    Serve {
        /// The configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Generate an API token: prints the token, then its [[api.token]] entry for the config
    /// (which holds only the token's SHA-256).
    Token {
        /// The token's name (the audit log's actor).
        #[arg(long)]
        name: String,
        /// viewer, operator or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// Check a configuration file (and the root and key it names) without starting.
    CheckConfig {
        /// The configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Write a Mosquitto configuration (TLS with client certificates from the controller's CA,
    /// one topic subtree per device) into DIR; prints the mosquitto.conf path.
    MosquittoConfig {
        /// The controller's config (its data_dir holds the CA).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Where to write mosquitto.conf, acl and the certificates.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The broker's TLS listener.
        #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:8883")]
        listen: std::net::SocketAddr,
        /// A name or IP address devices reach the broker at (repeatable; default localhost
        /// and 127.0.0.1).
        #[arg(long, value_name = "NAME")]
        host: Vec<String>,
        /// The user mosquitto switches to when started as root (it must read server.key).
        #[arg(long, value_name = "USER")]
        user: Option<String>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not viewer, operator or admin"))
}

/// Parses the command line and runs it; the exit status says how it went.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Token { name, role } => token(&name, role),
        Command::MosquittoConfig {
            config,
            out,
            listen,
            host,
            user,
        } => mosquitto_config(&config, out, listen, host, user),
        Command::CheckConfig { config } => Config::load(&config)
            .map(|c| println!("ok: {} token(s), broker {:?}", c.tokens.len(), c.broker))
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn mosquitto_config(
    config: &std::path::Path,
    out: PathBuf,
    listen: std::net::SocketAddr,
    hosts: Vec<String>,
    user: Option<String>,
) -> anyhow::Result<()> {
    use crate::service::{Clock as _, ca, mosquitto};
    let config = Config::load(config)?;
    let now = SystemClock.now();
    let ca = ca::DeviceCa::open_or_create(&config.data_dir.join("ca"), now)?;
    let opts = mosquitto::MosquittoOptions {
        out,
        listen,
        hosts,
        user,
    };
    let path = mosquitto::write(&ca, &opts, now)?;
    println!("{}", path.display());
    Ok(())
}

fn token(name: &str, role: Role) -> anyhow::Result<()> {
    let mut random = Zeroizing::new([0u8; 32]);
    getrandom::fill(random.as_mut_slice())
        .map_err(|e| anyhow::anyhow!("cannot get randomness from the operating system: {e}"))?;
    let token = Zeroizing::new(auth::token_from_random(&random));
    // Check the name the way the config will, so the entry printed is one that loads.
    auth::TokenTable::default()
        .insert(name.to_owned(), role, auth::digest_of(&token))
        .map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}\n", token.as_str())?;
    write!(out, "{}", auth::toml_entry(name, role, &token))?;
    Ok(())
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttd=warn".into()),
        )
        .init();
    let config = Config::load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let clock = crate::service::clock_for(config.clock);
        let service = Service::start(config, clock).await?;
        service
            .serve(
                |addrs| {
                    let mqtt = addrs
                        .mqtt
                        .map_or_else(|| "external".to_owned(), |a| a.to_string());
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(
                        out,
                        "swell-controller listening http={} mqtt={mqtt}",
                        addrs.http
                    );
                    let _ = out.flush();
                },
                shutdown_signal(),
            )
            .await?;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
