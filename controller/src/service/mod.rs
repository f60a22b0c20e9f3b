//! The controller service, `swell-controller serve`: the broker (embedded or external), the
//! store, the device registry and inventory, releases and artifacts, commands, the audit log
//! and the HTTP API, wired together by [`Service::start`] and run by [`Service::serve`].
//!
//! ```text
//!              HTTP (axum)                               MQTT
//!  swellctl ──▶ api ──▶ registry ◀── bus (BusDriver) ◀── broker ◀── agents
//!                 │  ──▶ releases ──▶ data_dir/artifacts/<sha256> ──▶ agents (HTTP Range)
//!                 │  ──▶ commands ──▶ bus (Bus) ──▶ broker ──▶ agents
//!                 └────▶ audit
//!        registry, releases, commands, audit ──▶ db ──▶ store (redb | sled)
//! ```
//!
//! Long-lived parts are a cloneable handle plus a driver: [`bus::Bus`] and [`bus::BusDriver`],
//! the axum server. [`Service::serve`] runs the drivers until its `shutdown` future resolves,
//! then cancels them through one [`CancellationToken`] and waits for them on a [`TaskTracker`].
//! The clock is an input ([`Clock`]); nothing below `main` reads the system time directly.

pub mod api;
pub mod audit;
pub mod auth;
pub mod broker;
pub mod bus;
pub mod ca;
pub mod commands;
pub mod config;
pub mod db;
pub mod enroll;
pub mod enroll_api;
pub mod fleet;
pub mod locks;
pub mod metrics;
pub mod mosquitto;
pub mod records;
pub mod registry;
pub mod releases;
pub mod rollouts;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use swell_proto::Timestamp;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use self::audit::{AuditLog, CONTROLLER_ACTOR};
use self::bus::{BusSettings, TlsFiles};
use self::config::{BrokerConfig, Config, StoreBackend};
use self::db::Db;
use self::metrics::Metrics;
use self::registry::Registry;
use self::releases::Releases;
use crate::store::Engine;

/// How long start-up waits for the broker to acknowledge the controller's subscription before
/// it reports ready anyway (and keeps retrying in the background). Messages published before
/// the subscription exists are not delivered to the controller, so tests and operators are
/// better served by a ready line that means "listening to devices".
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Timestamp::from_unix(i64::try_from(secs).unwrap_or(i64::MAX))
    }
}

/// A simulated clock (`[clock]` in the config): it showed `start` at the real instant
/// `anchor` and runs `speed` times faster than real time. Anchoring it to a real instant
/// (rather than to the process's start) keeps one timeline across controller restarts.
#[derive(Debug, Clone, Copy)]
pub struct SimulatedClock {
    start: Timestamp,
    speed: f64,
    anchor: SystemTime,
}

impl SimulatedClock {
    /// A clock that showed `start` at `anchor` and runs `speed` times real time.
    pub fn new(start: Timestamp, speed: f64, anchor: SystemTime) -> SimulatedClock {
        SimulatedClock {
            start,
            speed,
            anchor,
        }
    }
}

impl Clock for SimulatedClock {
    fn now(&self) -> Timestamp {
        let real = SystemTime::now()
            .duration_since(self.anchor)
            .map_or(0.0, |d| d.as_secs_f64());
        // Whole simulated seconds; a run would need centuries to lose precision here.
        #[allow(clippy::cast_possible_truncation)]
        let secs = (real * self.speed) as i64;
        self.start.plus_secs(secs)
    }
}

/// The clock `config` asks for.
pub fn clock_for(config: config::ClockConfig) -> Arc<dyn Clock> {
    match config {
        config::ClockConfig::System => Arc::new(SystemClock),
        config::ClockConfig::Simulated {
            start,
            speed,
            anchor,
        } => {
            let anchor = anchor.map_or_else(SystemTime::now, |a| {
                UNIX_EPOCH + Duration::from_secs(u64::try_from(a.unix()).unwrap_or(0))
            });
            Arc::new(SimulatedClock::new(start, speed, anchor))
        }
    }
}

/// Why the service did not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A directory under `data_dir` could not be created.
    #[error("cannot create {}", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("cannot open the store")]
    Store(#[from] crate::store::Error),
    /// The store's content could not be loaded.
    #[error("cannot load state")]
    Db(#[from] db::DbError),
    /// The release catalogue could not be loaded.
    #[error("cannot load releases")]
    Releases(#[from] releases::UploadError),
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The MQTT client could not be set up.
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen for HTTP on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server")]
    Http(#[source] std::io::Error),
    /// The device CA could not be opened or made.
    #[error("device CA")]
    Ca(#[from] ca::CaError),
    /// A blocking start-up step panicked.
    #[error("start-up task failed: {0}")]
    Join(String),
}

/// The addresses the service is reachable at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The HTTP API.
    pub http: SocketAddr,
    /// The MQTT broker (the embedded broker's address, or the external broker's as resolved
    /// from its URL when that is an IP address).
    pub mqtt: Option<SocketAddr>,
}

/// A started service: everything opened and bound, drivers not yet running.
#[derive(Debug)]
pub struct Service {
    addresses: Addresses,
    listener: tokio::net::TcpListener,
    state: api::AppState,
    driver: bus::BusDriver,
    bus: bus::Bus,
}

fn engine(backend: StoreBackend) -> Engine {
    match backend {
        StoreBackend::Redb => Engine::Redb,
        StoreBackend::Sled => Engine::Sled,
    }
}

impl Service {
    /// Opens the store, loads the state, starts the embedded broker (if configured), binds the
    /// HTTP listener and prepares the MQTT client.
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Service, ServiceError> {
        let artifacts = config.data_dir.join("artifacts");
        std::fs::create_dir_all(&artifacts).map_err(|source| ServiceError::DataDir {
            path: artifacts.clone(),
            source,
        })?;
        let engine = engine(config.store.backend);
        let store_path = config.data_dir.join(format!("state.{}", engine.name()));
        let store = tokio::task::spawn_blocking(move || engine.open(&store_path))
            .await
            .map_err(|e| ServiceError::Join(e.to_string()))??;
        let db = Db::new(Arc::from(store));
        let audit = AuditLog::open(db.clone()).await?;
        let registry = Registry::open(db.clone(), audit.clone()).await?;
        let root = Arc::new(config.trust.root.clone());
        if let Err(e) = root.check_fresh(clock.now()) {
            warn!(error = %e, "the trust root has expired: releases will be refused until it is rotated");
        }
        let releases = Releases::open(db.clone(), audit.clone(), root, artifacts).await?;
        let ca_dir = config.data_dir.join("ca");
        let ca_now = clock.now();
        let ca = tokio::task::spawn_blocking(move || ca::DeviceCa::open_or_create(&ca_dir, ca_now))
            .await
            .map_err(|e| ServiceError::Join(e.to_string()))??;
        let enrollment =
            enroll::Enrollment::new(db.clone(), audit.clone(), registry.clone(), Arc::new(ca));

        let (settings, mqtt_addr) = match &config.broker {
            BrokerConfig::Embedded { listen } => {
                let listen = *listen;
                let addr = tokio::task::spawn_blocking(move || broker::start(listen))
                    .await
                    .map_err(|e| ServiceError::Join(e.to_string()))??;
                let host = if addr.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else {
                    addr.ip().to_string()
                };
                let settings = BusSettings {
                    host,
                    port: addr.port(),
                    client_id: config::DEFAULT_CLIENT_ID.to_owned(),
                    tls: None,
                };
                (settings, Some(addr))
            }
            BrokerConfig::External(ext) => {
                let tls = ext.tls.then(|| TlsFiles {
                    ca: ext.ca.clone().unwrap_or_default(),
                    client: ext.cert.clone().zip(ext.key.clone()),
                });
                let settings = BusSettings {
                    host: ext.host.clone(),
                    port: ext.port,
                    client_id: ext.client_id.clone(),
                    tls,
                };
                let addr = ext
                    .host
                    .parse::<std::net::IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, ext.port));
                (settings, addr)
            }
        };
        let (bus, driver) = bus::connect(&settings)?;

        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| ServiceError::Listen {
                addr: config.http.listen,
                source,
            })?;
        let http = listener
            .local_addr()
            .map_err(|source| ServiceError::Listen {
                addr: config.http.listen,
                source,
            })?;
        let public_url = config.http.public_url.clone().unwrap_or_else(|| {
            if http.ip().is_unspecified() {
                warn!(%http, "http.public_url is not set and the API listens on every address: \
                    artifact URLs in commands name {http}, which devices cannot reach");
            }
            format!("http://{http}")
        });
        let metrics = Arc::new(Metrics::default());
        let commands = commands::Commands::new(
            db.clone(),
            audit.clone(),
            registry.clone(),
            bus.clone(),
            Arc::clone(&metrics),
            config.trust.controller_key.clone(),
        );
        let locks = locks::Locks::open(db.clone(), audit.clone()).await?;
        let webhooks = webhooks::Webhooks::open(
            db.clone(),
            audit.clone(),
            config.webhooks.clone(),
            Arc::clone(&clock),
        )
        .await?;
        let public_url: Arc<str> = Arc::from(public_url.as_str());
        let rollouts = rollouts::Rollouts::open(rollouts::Deps {
            db: db.clone(),
            audit: audit.clone(),
            registry: registry.clone(),
            releases: releases.clone(),
            commands: commands.clone(),
            locks: locks.clone(),
            webhooks: webhooks.clone(),
            clock: Arc::clone(&clock),
            public_url: Arc::clone(&public_url),
            tick: Duration::from_millis(config.rollouts.tick_ms),
        })
        .await?;
        let state = api::AppState {
            registry,
            releases,
            commands,
            audit,
            metrics,
            clock,
            tokens: Arc::new(config.tokens),
            public_url,
            enrollment,
            locks,
            webhooks,
            rollouts,
        };
        let details = audit::details(&json!({
            "http": http.to_string(),
            "mqtt": mqtt_addr.map(|a| a.to_string()),
            "store": engine.name(),
            "root_version": config.trust.root.header().version,
            "tokens": state.tokens.len(),
        }))
        .map_err(|e| ServiceError::Join(e.to_string()))?;
        state
            .audit
            .record(
                state.clock.now(),
                CONTROLLER_ACTOR,
                "controller.start",
                details,
            )
            .await?;
        Ok(Service {
            addresses: Addresses {
                http,
                mqtt: mqtt_addr,
            },
            listener,
            state,
            driver,
            bus,
        })
    }

    /// Where the service listens.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// Runs the bus driver until the subscription to device topics is acknowledged (or
    /// [`SUBSCRIBE_TIMEOUT`]), calls `ready`, then serves until `shutdown` resolves and every
    /// task has finished.
    pub async fn serve(
        self,
        ready: impl FnOnce(Addresses),
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServiceError> {
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let Service {
            addresses,
            listener,
            state,
            driver,
            bus,
        } = self;

        tracker.spawn(state.webhooks.clone().run(token.clone()));
        tracker.spawn(state.rollouts.clone().run(token.clone()));
        tracker.spawn(driver.run(
            state.registry.clone(),
            Arc::clone(&state.metrics),
            Arc::clone(&state.clock),
            token.clone(),
        ));
        if !bus.wait_subscribed(SUBSCRIBE_TIMEOUT).await {
            warn!("the broker has not acknowledged the subscription yet; device messages may wait");
        }

        let app = api::router(state);
        let http_token = token.clone();
        let server = tracker.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(http_token.cancelled_owned())
                .await
        });
        tracker.close();
        info!(http = %addresses.http, mqtt = ?addresses.mqtt, "controller ready");
        ready(addresses);

        tokio::select! {
            () = shutdown => info!("shutting down"),
            () = token.cancelled() => {}
        }
        token.cancel();
        tracker.wait().await;
        match server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServiceError::Http(e)),
            Err(e) => Err(ServiceError::Join(e.to_string())),
        }
    }
}
