//! The driver: the imperative shell around the update state machine.
//!
//! It feeds events to [`crate::update::step`], persists the returned state through the
//! journal — together with the signed reports the step produced — and only then performs the
//! returned actions. Long actions (download, verification, health checks) run as tasks that
//! send their outcome back as events.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use swell_proto::messages::{
    Action as CommandAction, Heartbeat, ReleaseRef, Report as WireReport, Running, Slot,
    UpdateState,
};
use swell_proto::topics::DeviceTopic;
use swell_proto::{DevicePolicy, TargetName, TrustRoot};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bootctl::{self, Boot};
use crate::config::Config;
use crate::download::{FetchOptions, FetchRequest, fetch_into_slot};
use crate::gateway::{self, Admission, Gateway};
use crate::journal::{Journal, JournalError, Outgoing, Persisted, SlotImage};
use crate::mqtt::{self, Inbound, Outbound, SessionSettings};
use crate::signals::queue::SignalQueue;
use crate::signals::{self, Collector};
use crate::signer::{Signer, now};
use crate::slots::{SlotPath, verify_slot};
use crate::update::{Action, BootInfo, Ctx, Event, Job, Settings, Source, State, step};
use crate::{health, keys};

/// Signals batches handed to the MQTT session at a time: enough to keep the lane busy, few
/// enough that a day's backlog stays on disk rather than in memory.
const SIGNALS_WINDOW: usize = 4;

/// The artifact target of the device's own A/B image.
pub const ROOTFS_TARGET: &str = "rootfs";

/// How often the machine sees a `Tick` (health deadlines) and progress heartbeats go out
/// during a download.
const TICK: Duration = Duration::from_secs(1);

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The journal could not be read or written: the agent must not act without it.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Setup failed (config, key, trust root, boot control, broker settings).
    #[error("{0}")]
    Setup(String),
    /// Another agent process holds the data directory.
    #[error("another swell-agent is running on data directory {0}")]
    Locked(PathBuf),
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to shut down.
    Shutdown,
    /// The update needs a reboot now.
    Reboot,
    /// Nothing left to do (only with [`RunMode::UntilSettled`]).
    Settled,
}

/// How long a run lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// A daemon: until shutdown or reboot.
    Daemon,
    /// Until no update is in progress and every report is delivered (tests, one-shot installs).
    UntilSettled,
}

/// The running agent.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    root: TrustRoot,
    journal: Journal,
    p: Persisted,
    boot: Boot,
    signer: Arc<Signer>,
    settings: Settings,
    queue: VecDeque<Event>,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    session: Option<mpsc::Sender<Outbound>>,
    connected: Arc<AtomicBool>,
    cancel_download: Arc<AtomicBool>,
    progress: Arc<(AtomicU64, AtomicU64)>,
    tasks: tokio::task::JoinSet<()>,
    reboot: bool,
    started: Instant,
    gateway: Gateway,
    signals: Option<SignalsState>,
    _lock: std::fs::File,
}

/// Health-signal collection (with `[signals]`): the collector, the durable queue, and the
/// queue ids handed to the session and not yet acknowledged.
#[derive(Debug)]
struct SignalsState {
    collector: Collector,
    services: Vec<signals::Service>,
    queue: SignalQueue,
    in_session: std::collections::BTreeSet<u64>,
}

/// A request to install from the command line (`swell-agent install`).
#[derive(Debug, Clone)]
pub struct LocalInstall {
    /// The signed release manifest.
    pub manifest: PathBuf,
    /// The image: a file path or an HTTP(S) URL.
    pub image: String,
}

fn setup<E: std::fmt::Display>(what: &str, path: &Path) -> impl FnOnce(E) -> AgentError {
    let where_ = format!("{what} {}", path.display());
    move |e| AgentError::Setup(format!("{where_}: {e}"))
}

impl Agent {
    /// Starts the agent: lock the data directory, load trust root, key and journal, read the
    /// boot state, and feed the machine its `Booted` event.
    pub async fn start(mut config: Config) -> Result<Self, AgentError> {
        let journal = Journal::open(&config.data_dir)?;
        let lock = lock_data_dir(&config.data_dir)?;
        // With `[enroll]`, the first start makes the key and gets the certificate.
        config = tokio::task::spawn_blocking(move || {
            crate::enroll::ensure_enrolled(&mut config).map(|()| config)
        })
        .await
        .map_err(|e| AgentError::Setup(format!("enrollment task: {e}")))??;
        let root_bytes = std::fs::read(&config.trust.root)
            .map_err(setup("reading trust root", &config.trust.root))?;
        let root = TrustRoot::from_trusted(&root_bytes)
            .map_err(setup("trust root", &config.trust.root))?;
        let key = keys::load_device_key(&config.device.key)?;
        let mut p = journal.load()?.unwrap_or_else(Persisted::fresh);
        p.epoch += 1;
        journal.store(&p)?;
        let boot = bootctl::open(&config.boot).map_err(|e| AgentError::Setup(e.to_string()))?;
        let running_slot = match boot.info.slot {
            Slot::A => config.slots.a.clone(),
            Slot::B => config.slots.b.clone(),
        };
        let gateway = Gateway::new(&config, &root, running_slot);
        gateway.resume(&p);
        let signals = match &config.signals {
            Some(s) => {
                let dir = config.data_dir.join(signals::queue::DIR_NAME);
                let update_reboot = matches!(p.state, State::Installed(..) | State::Reverting(..));
                let facts = signals::start_facts(&dir, &boot.info.boot_id.0, update_reboot)?;
                // The host's uptime says nothing about a simulated board's image.
                let boot_time_s = std::env::var_os(bootctl::BOARD_BOOT_ID_ENV)
                    .is_none()
                    .then(|| signals::system::read("/proc/uptime"))
                    .flatten()
                    .and_then(|u| signals::system::uptime_secs(&u));
                Some(SignalsState {
                    collector: Collector::new(s, &boot.info.boot_id.0, facts, boot_time_s, now()),
                    services: s
                        .services
                        .iter()
                        .cloned()
                        .map(signals::Service::new)
                        .collect(),
                    queue: SignalQueue::open(&dir, s.max_queued)?,
                    in_session: std::collections::BTreeSet::new(),
                })
            }
            None => None,
        };
        let signer = Arc::new(Signer::new(config.device.id.clone(), key, p.epoch));
        let (events_tx, events_rx) = mpsc::channel(16);
        let settings = Settings {
            health_deadline_secs: i64::try_from(config.health.deadline_secs).unwrap_or(i64::MAX),
        };
        let mut agent = Self {
            config,
            root,
            journal,
            p,
            boot,
            signer,
            settings,
            queue: VecDeque::new(),
            events_tx,
            events_rx,
            session: None,
            connected: Arc::default(),
            cancel_download: Arc::default(),
            progress: Arc::default(),
            tasks: tokio::task::JoinSet::new(),
            reboot: false,
            started: Instant::now(),
            gateway,
            signals,
            _lock: lock,
        };
        let info = agent.boot.info.clone();
        agent.queue.push_back(Event::Booted(info));
        Ok(agent)
    }

    /// The persisted state (for `swell-agent status` and tests).
    pub fn persisted(&self) -> &Persisted {
        &self.p
    }

    /// What the device booted.
    pub fn boot_info(&self) -> &BootInfo {
        &self.boot.info
    }

    /// What the device runs now.
    pub fn running(&self) -> Running {
        self.p.state.running(&self.base_running())
    }

    fn base_running(&self) -> Running {
        let slot = self.boot.info.slot;
        let image = self.p.slot(slot);
        Running {
            release: image.map(|i| i.release.name.clone()),
            version: image.map(|i| i.release.version.clone()),
            slot,
            security_version: self.p.security_version,
        }
    }

    /// Queues a local install (verified exactly like a controller command).
    pub fn install_local(&mut self, request: &LocalInstall) -> Result<(), String> {
        let manifest = std::fs::read(&request.manifest)
            .map_err(|e| format!("reading manifest {}: {e}", request.manifest.display()))?;
        let source =
            if request.image.starts_with("http://") || request.image.starts_with("https://") {
                Source::Url(request.image.clone())
            } else {
                Source::File(PathBuf::from(&request.image))
            };
        // A release for a child behind this gateway goes to the gateway's own machine.
        match self
            .gateway
            .admit(&self.p, &manifest, source.clone(), None, now())
        {
            Ok(Admission::Child(child, job)) => {
                return self
                    .apply_child(&child, gateway::Event::Install(job))
                    .map_err(|e| e.to_string());
            }
            Ok(Admission::NotForChildren) => {}
            Err(refusal) => return Err(refusal.reason),
        }
        let job = self.admit(&manifest, source, None)?;
        self.queue.push_back(Event::Install(Box::new(job)));
        Ok(())
    }

    /// Verifies a release for this device and builds its job.
    fn admit(
        &self,
        manifest: &[u8],
        source: Source,
        command: Option<String>,
    ) -> Result<Job, String> {
        let release = self
            .root
            .verify_release(manifest, now())
            .map_err(|e| format!("release refused: {e}"))?;
        release
            .admit(DevicePolicy {
                hardware: &self.config.device.hardware,
                installed_security_version: self.p.security_version,
            })
            .map_err(|e| format!("release refused: {e}"))?;
        let doc = release.document();
        let target = TargetName::new(ROOTFS_TARGET).map_err(|e| e.to_string())?;
        let artifact = doc
            .artifact(&target)
            .map_err(|e| format!("release refused: {e}"))?;
        if !self.p.state.is_settled() {
            let busy = self
                .p
                .state
                .job()
                .map(|j| j.release.version.to_string())
                .unwrap_or_default();
            return Err(format!("busy: the update to {busy} is still in progress"));
        }
        let previous = self.running();
        Ok(Job {
            command,
            release: ReleaseRef {
                name: doc.name.clone(),
                version: doc.release_version.clone(),
            },
            security_version: doc.security_version,
            size: artifact.size,
            sha256: artifact.sha256,
            source,
            slot: previous.slot.other(),
            previous,
        })
    }

    /// Runs until shutdown, a reboot, or (with `UntilSettled`) nothing left to do.
    pub async fn run(
        mut self,
        mode: RunMode,
        shutdown: CancellationToken,
    ) -> Result<Exit, AgentError> {
        let mut inbound = self.start_session(&shutdown)?;
        let mut tick = tokio::time::interval(TICK);
        let heartbeat_secs = self
            .config
            .mqtt
            .as_ref()
            .map_or(60, |m| m.heartbeat_secs)
            .max(1);
        let mut heartbeat = tokio::time::interval(Duration::from_secs(heartbeat_secs));
        let signals_period = Duration::from_secs(
            self.config
                .signals
                .as_ref()
                .map_or(3600, |s| s.interval_secs)
                .max(1),
        );
        let mut signals_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + signals_period, signals_period);
        self.feed_signals();
        let exit = loop {
            while let Some(event) = self.queue.pop_front() {
                self.apply(event)?;
                if self.reboot {
                    break;
                }
            }
            if self.reboot {
                break Exit::Reboot;
            }
            let delivered = self.session.is_none() || self.p.outbox.is_empty();
            let settled = self.p.state.is_settled() && Gateway::is_settled(&self.p);
            if mode == RunMode::UntilSettled && settled && delivered {
                break Exit::Settled;
            }
            tokio::select! {
                // Cancel-safe: nothing is half done between loop iterations.
                () = shutdown.cancelled() => break Exit::Shutdown,
                // Cancel-safe: `recv` loses nothing if another branch wins.
                Some(event) = self.events_rx.recv() => self.queue.push_back(event),
                Some(message) = recv_opt(&mut inbound) => self.on_inbound(message)?,
                // Cancel-safe: `recv` loses nothing if another branch wins.
                Some((child, event)) = self.gateway.recv() => self.apply_child(&child, event)?,
                _ = tick.tick() => {
                    if let Some(s) = &mut self.signals {
                        s.collector.poll_logs();
                    }
                    self.queue.push_back(Event::Tick);
                    if matches!(self.p.state, State::Downloading(_)) {
                        self.send_heartbeat();
                    }
                }
                _ = heartbeat.tick() => self.send_heartbeat(),
                _ = signals_tick.tick(), if self.signals.is_some() => self.end_signals_interval()?,
            }
        };
        // Never stop between a slot write and its journal record: stop the download at a
        // chunk boundary (it checkpoints) and wait for every task.
        self.cancel_download.store(true, Ordering::SeqCst);
        self.gateway.shutdown().await;
        while self.tasks.join_next().await.is_some() {}
        Ok(exit)
    }

    fn start_session(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<mpsc::Receiver<Inbound>>, AgentError> {
        let Some(mqtt) = self.config.mqtt.clone() else {
            return Ok(None);
        };
        let (to_session, from_driver) = mpsc::channel(64);
        let (to_driver, inbound) = mpsc::channel(64);
        let settings = SessionSettings {
            mqtt,
            device_key: self.config.device.key.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        // Fail fast on bad broker settings rather than inside the background task.
        mqtt::options(&settings, &self.signer).map_err(|e| AgentError::Setup(e.to_string()))?;
        for message in &self.p.outbox {
            let _ = to_session.try_send(Outbound::Report(message.payload.clone()));
        }
        let signer = Arc::clone(&self.signer);
        let token = shutdown.child_token();
        tokio::spawn(async move {
            if let Err(e) = mqtt::run(settings, signer, from_driver, to_driver, token).await {
                eprintln!("swell-agent: MQTT session stopped: {e}");
            }
        });
        self.session = Some(to_session);
        Ok(Some(inbound))
    }

    fn on_inbound(&mut self, message: Inbound) -> Result<(), AgentError> {
        match message {
            Inbound::Connected => self.connected.store(true, Ordering::SeqCst),
            Inbound::Disconnected(_) => self.connected.store(false, Ordering::SeqCst),
            Inbound::Delivered => {
                if !self.p.outbox.is_empty() {
                    self.p.outbox.remove(0);
                    self.journal.store(&self.p)?;
                }
            }
            Inbound::SignalsDelivered(id) => {
                if let Some(s) = &mut self.signals {
                    s.in_session.remove(&id);
                    s.queue.remove(id);
                }
                self.feed_signals();
            }
            Inbound::Command(publish) => {
                self.on_command(&publish.payload)?;
                self.send(Outbound::Ack(publish));
            }
        }
        Ok(())
    }

    /// Handles a command: verify, drop replays, apply, persist — then the caller acks it.
    fn on_command(&mut self, payload: &[u8]) -> Result<(), AgentError> {
        let device = self.config.device.id.clone();
        let command = match self.root.verify_command(payload, &device, now()) {
            Ok(command) => command,
            Err(e) => return self.reject(None, None, format!("command refused: {e}")),
        };
        if command.seq <= self.p.last_command_seq {
            // A QoS 1 redelivery or a replay: already handled.
            return Ok(());
        }
        self.p.last_command_seq = command.seq;
        let id = command.message.id.clone();
        let event = match command.message.action {
            CommandAction::Install { manifest, url } => {
                let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
                let source = Source::Url(url.clone());
                match self
                    .gateway
                    .admit(&self.p, &bytes, source, Some(id.clone()), now())
                {
                    Ok(Admission::Child(child, job)) => {
                        return self.apply_child(&child, gateway::Event::Install(job));
                    }
                    Ok(Admission::NotForChildren) => {}
                    Err(refusal) => return self.reject_child(Some(id), refusal),
                }
                match self.admit(&bytes, Source::Url(url), Some(id.clone())) {
                    Ok(job) => Event::Install(Box::new(job)),
                    Err(reason) => return self.reject(Some(id), None, reason),
                }
            }
            CommandAction::Revert => Event::Revert,
            CommandAction::Cancel => Event::Cancel,
        };
        let target = self.p.state.job().map(|j| j.release.clone());
        match step(&self.p.state, event.clone(), self.ctx()) {
            Ok(_) => {
                self.apply(event)?;
                Ok(())
            }
            Err(disallowed) => {
                self.reject(Some(id), target, format!("command refused: {disallowed}"))
            }
        }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            now: now(),
            boot: &self.boot.info.boot_id,
            settings: self.settings,
        }
    }

    /// Reports a refused command without changing the update state.
    fn reject(
        &mut self,
        command: Option<String>,
        target: Option<ReleaseRef>,
        reason: String,
    ) -> Result<(), AgentError> {
        eprintln!("swell-agent: {reason}");
        let report = crate::update::machine::Report {
            state: UpdateState::Failed,
            command,
            target,
            running: self.running(),
            reason: Some(reason),
        };
        let payload = self.sign_report(&report)?;
        self.publish_refusal(payload)
    }

    /// Queues a refusal report durably (no state changes with it), then sends it.
    fn publish_refusal(&mut self, payload: Vec<u8>) -> Result<(), AgentError> {
        self.p.enqueue(Outgoing {
            topic: DeviceTopic::Report,
            payload: payload.clone(),
        });
        self.journal.store(&self.p)?;
        self.send(Outbound::Report(payload));
        Ok(())
    }

    /// Reports a refused install: about the child it targeted if that is known, else as the
    /// gateway's own refusal. The state does not change.
    fn reject_child(
        &mut self,
        command: Option<String>,
        refusal: gateway::Refusal,
    ) -> Result<(), AgentError> {
        let Some(child) = refusal.child else {
            return self.reject(command, None, refusal.reason);
        };
        eprintln!("swell-agent: {}", refusal.reason);
        let payload = self
            .gateway
            .refusal_report(
                &self.signer,
                &child,
                &self.p,
                command,
                &refusal.reason,
                now(),
            )
            .map_err(AgentError::Setup)?;
        self.publish_refusal(payload)
    }

    /// One step of a child's update: transition, persist (with the step's reports), then act.
    fn apply_child(
        &mut self,
        child: &swell_proto::DeviceId,
        event: gateway::Event,
    ) -> Result<(), AgentError> {
        let stepped = self
            .gateway
            .step(&mut self.p, &self.signer, child, event, now())
            .map_err(AgentError::Setup)?;
        // A late result the state no longer takes.
        let Some(stepped) = stepped else {
            return Ok(());
        };
        if stepped.changed {
            self.journal.store(&self.p)?;
        }
        for payload in stepped.reports {
            self.send(Outbound::Report(payload));
        }
        self.gateway.perform(child, stepped.actions);
        Ok(())
    }

    fn sign_report(&self, r: &crate::update::machine::Report) -> Result<Vec<u8>, AgentError> {
        let issued = now();
        let mut reason = r.reason.clone();
        if let Some(text) = reason.as_mut() {
            truncate_utf8(text, swell_proto::limits::MAX_REASON_LEN);
        }
        let wire = WireReport {
            device: self.config.device.id.clone(),
            issued,
            state: r.state,
            command: r.command.clone(),
            target: r.target.clone(),
            running: r.running.clone(),
            progress: None,
            reason,
        };
        self.signer
            .sign(&wire, issued)
            .map_err(|e| AgentError::Setup(format!("signing a report: {e}")))
    }

    /// One step: transition, bookkeeping, persist (with the step's reports), then act.
    fn apply(&mut self, event: Event) -> Result<(), AgentError> {
        let (next, actions) = match step(&self.p.state, event, self.ctx()) {
            Ok(step) => step,
            // Late results of cancelled work, or events the state ignores.
            Err(_) => return Ok(()),
        };
        let kept = (self.p.slots.clone(), self.p.security_version);
        let previous = std::mem::replace(&mut self.p.state, next);
        self.bookkeep(&previous);
        let mut reports = Vec::new();
        for action in &actions {
            if let Action::Report(report) = action {
                let payload = self.sign_report(report)?;
                self.p.enqueue(Outgoing {
                    topic: DeviceTopic::Report,
                    payload: payload.clone(),
                });
                reports.push(payload);
            }
        }
        // Persist the intent before any side effect. A step that changed nothing (a tick, a
        // restart that resumes) is not written again: the journal would otherwise be rewritten
        // every second on flash.
        let changed = previous != self.p.state
            || !reports.is_empty()
            || kept != (self.p.slots.clone(), self.p.security_version);
        if changed {
            self.journal.store(&self.p)?;
        }
        for payload in reports {
            self.send(Outbound::Report(payload));
        }
        for action in actions {
            self.perform(action);
        }
        Ok(())
    }

    /// Slot contents and the committed security version follow the state.
    fn bookkeep(&mut self, previous: &State) {
        match &self.p.state {
            State::Downloading(job) if !matches!(previous, State::Downloading(_)) => {
                // The slot is about to be overwritten: it no longer holds a known image.
                self.p.set_slot(job.slot, None);
            }
            State::Installed(job, _) => {
                let image = SlotImage {
                    release: job.release.clone(),
                    security_version: job.security_version,
                    sha256: job.sha256,
                    size: job.size,
                    verified: true,
                };
                self.p.set_slot(job.slot, Some(image));
            }
            State::Committed(job) => {
                self.p.security_version = self.p.security_version.max(job.security_version);
            }
            _ => {}
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Report(_) => {}
            Action::Download(job) => self.spawn_download(job),
            Action::StopDownload => self.cancel_download.store(true, Ordering::SeqCst),
            Action::VerifySlot(job) => {
                let slot = SlotPath::new(job.slot, self.slot_path(job.slot));
                self.spawn_blocking(move || match verify_slot(&slot, job.size, &job.sha256) {
                    Ok(()) => Event::Verified,
                    Err(e) => Event::StepFailed(format!("verification: {e}")),
                });
            }
            Action::ArmTrial(slot) => match self.boot.control.arm_trial(slot) {
                // The machine records the arm only now that it is on disk.
                Ok(()) => self.queue.push_back(Event::TrialArmed),
                Err(e) => self
                    .queue
                    .push_back(Event::StepFailed(format!("arming the trial boot: {e}"))),
            },
            Action::BootNormally(slot) => {
                if let Err(e) = self.boot.control.boot_normally(slot) {
                    self.queue
                        .push_back(Event::StepFailed(format!("setting the boot slot: {e}")));
                }
            }
            Action::Commit(_) => {
                if let Err(e) = self.boot.control.commit() {
                    // The state says Committed; the next start sees the trial flag still set
                    // and commits again.
                    eprintln!("swell-agent: committing the boot environment: {e}");
                }
            }
            Action::Reboot => self.reboot = true,
            Action::StartHealthChecks(deadline) => {
                let (config, connected) = (self.config.health.clone(), Arc::clone(&self.connected));
                let tx = self.events_tx.clone();
                self.tasks.spawn(async move {
                    let verdict = health::run(config, deadline, connected).await;
                    let _ = tx.send(verdict).await;
                });
            }
        }
    }

    fn slot_path(&self, slot: Slot) -> PathBuf {
        match slot {
            Slot::A => self.config.slots.a.clone(),
            Slot::B => self.config.slots.b.clone(),
        }
    }

    fn spawn_blocking(&mut self, work: impl FnOnce() -> Event + Send + 'static) {
        let tx = self.events_tx.clone();
        self.tasks.spawn(async move {
            if let Ok(event) = tokio::task::spawn_blocking(work).await {
                let _ = tx.send(event).await;
            }
        });
    }

    fn spawn_download(&mut self, job: Job) {
        self.cancel_download.store(false, Ordering::SeqCst);
        let active = self.slot_path(job.slot.other());
        let mut request = FetchRequest::for_job(
            &job,
            self.slot_path(job.slot),
            active,
            &self.config.data_dir,
        );
        let d = &self.config.download;
        request.options = FetchOptions {
            connect_timeout: Duration::from_secs(d.connect_timeout_secs),
            stall_timeout: Duration::from_secs(d.stall_timeout_secs),
            checkpoint_every: d.checkpoint_bytes,
            ..request.options
        };
        let attempts = d.attempts;
        let cancel = Arc::clone(&self.cancel_download);
        let progress = Arc::clone(&self.progress);
        self.spawn_blocking(move || {
            let mut report = |done, total| {
                progress.0.store(done, Ordering::Relaxed);
                progress.1.store(total, Ordering::Relaxed);
            };
            let mut attempt = 1;
            loop {
                match fetch_into_slot(&request, &cancel, &mut report) {
                    Ok(()) => return Event::Downloaded,
                    Err(e) if e.is_transient() && attempt < attempts => {
                        // Backoff between attempts: 1 s, 2 s, 4 s ... capped at 30 s, in
                        // slices so that a cancel is seen within a tenth of a second.
                        let wait = Duration::from_secs((1 << (attempt - 1)).min(30));
                        let until = Instant::now() + wait;
                        while Instant::now() < until && !cancel.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        attempt += 1;
                    }
                    // Every download error names what failed and where.
                    Err(e) => return Event::StepFailed(e.to_string()),
                }
            }
        });
    }

    fn send(&self, message: Outbound) {
        if let Some(session) = &self.session {
            let _ = session.try_send(message);
        }
    }

    /// Ends a signals interval: the batch is signed and queued on disk, one round of the
    /// health checks starts for the next batch, and the session gets what fits its window.
    fn end_signals_interval(&mut self) -> Result<(), AgentError> {
        let running = self.running();
        let device = self.config.device.id.clone();
        let Some(s) = &mut self.signals else {
            return Ok(());
        };
        let dropped = s.queue.make_room(&s.in_session);
        let at = now();
        let batch = s.collector.finish(&device, running, dropped, at);
        match self.signer.sign(&batch, at) {
            Ok(payload) => {
                s.queue.push(&payload)?;
            }
            Err(e) => eprintln!("swell-agent: signing a signals batch: {e}"),
        }
        for service in &s.services {
            let service = service.clone();
            let crashes = s.collector.crashes();
            // Detached like the health round below: a poll ends within its timeout.
            tokio::spawn(async move { service.poll(&crashes).await });
        }
        if !self.config.health.checks.is_empty() {
            let checks = self.config.health.checks.clone();
            let connected = Arc::clone(&self.connected);
            let failures = s.collector.health_failures();
            // Detached: a round ends within its checks' timeouts, and nothing waits for it.
            tokio::spawn(async move {
                if health::check_all(&checks, &connected).await.is_err() {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        self.feed_signals();
        Ok(())
    }

    /// Hands queued batches to the session, oldest first, up to [`SIGNALS_WINDOW`] awaiting
    /// acknowledgement.
    fn feed_signals(&mut self) {
        let Some(session) = &self.session else {
            return;
        };
        let Some(s) = &mut self.signals else {
            return;
        };
        let next: Vec<u64> = s
            .queue
            .ids()
            .filter(|id| !s.in_session.contains(id))
            .take(SIGNALS_WINDOW.saturating_sub(s.in_session.len()))
            .collect();
        for id in next {
            let Some(payload) = s.queue.read(id) else {
                continue;
            };
            if session.try_send(Outbound::Signals(id, payload)).is_err() {
                break;
            }
            s.in_session.insert(id);
        }
    }

    fn send_heartbeat(&self) {
        if self.session.is_none() {
            return;
        }
        let mut metrics = std::collections::BTreeMap::new();
        if matches!(self.p.state, State::Downloading(_)) {
            let done = self.progress.0.load(Ordering::Relaxed);
            let total = self.progress.1.load(Ordering::Relaxed);
            metrics.insert(
                "download_done".to_string(),
                i64::try_from(done).unwrap_or(i64::MAX),
            );
            metrics.insert(
                "download_total".to_string(),
                i64::try_from(total).unwrap_or(i64::MAX),
            );
        }
        let issued = now();
        let beat = Heartbeat {
            device: self.config.device.id.clone(),
            issued,
            uptime_s: self.started.elapsed().as_secs(),
            state: self.p.state.update_state(),
            running: self.running(),
            metrics,
        };
        if let Ok(payload) = self.signer.sign(&beat, issued) {
            self.send(Outbound::Heartbeat(payload));
        }
    }

    /// What performs the reboot an update asks for, once the run has ended.
    pub fn reboot_handle(&self) -> bootctl::Rebooter {
        bootctl::Rebooter::new(&self.config.boot)
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

fn lock_data_dir(dir: &Path) -> Result<std::fs::File, AgentError> {
    let path = dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(setup("opening lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AgentError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(setup("locking", &path)(e)),
    }
}
