//! The rollout executor: creates rollouts from a plan and a release, then drives them. One
//! task ([`Rollouts::run`]) wakes on every accepted device message and on a tick, and lets
//! each active rollout decide ([`engine::Run::tick`]) what to start, pass, trip, pause, abort,
//! take back or finish; operators' decisions (pause, resume, abort, approve) go through the
//! same path. Every change is stored before the commands it causes are sent, and each command
//! is stored with its sequence number and its signed envelope, so a controller killed at any
//! instant resumes where it was: no finished device is commanded again, no count is lost, and
//! a command recorded but perhaps never published is published again (the device drops a
//! duplicate by its sequence number).
//!
//! docs/rollouts.md describes the gates' semantics; `engine` implements them.

pub mod engine;
pub mod record;
pub mod verify;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swell_proto::messages::{Action, ReleaseRef};
use swell_proto::{DeviceId, Timestamp};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::engine::{Ctx, Effect, Hold, Run};
use self::record::{
    DeviceRecord, DeviceState, Key, RollbackKind, RolloutRecord, StageRecord, StageStatus, Status,
};
use super::Clock;
use super::audit::{self, AuditLog, CONTROLLER_ACTOR};
use super::commands::{Commands, Sent, install_action};
use super::db::{Db, DbError};
use super::fleet::Device;
use super::locks::{Locks, NewLock};
use super::records::{counter_bytes, parse_counter, to_bytes};
use super::registry::Registry;
use super::releases::Releases;
use super::webhooks::{self, Webhooks};
use crate::planner::{self, FleetSnapshot, Plan, render};
use crate::store::{Batch, Table};

/// The id counter's key in table `Meta`.
const SEQ_KEY: &[u8] = b"rollout-seq";

/// The largest plan accepted.
pub const MAX_PLAN_BYTES: usize = 64 * 1024;

/// Why a rollout request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// No such rollout.
    #[error("no rollout {0}")]
    NotFound(String),
    /// No such release.
    #[error("no accepted release {0} {1}")]
    NoRelease(String, String),
    /// The plan is invalid, or cannot be scheduled.
    #[error("plan: {0}")]
    Plan(String),
    /// Refused in the rollout's current state, or in conflict with another rollout.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A request to create a rollout.
#[derive(Debug, Clone)]
pub struct NewRollout {
    /// The plan's TOML text.
    pub plan: String,
    /// The release to roll out.
    pub release: ReleaseRef,
    /// Plan only.
    pub dry_run: bool,
    /// The active rollout this one replaces.
    pub supersedes: Option<String>,
}

/// What a create request gave.
#[derive(Debug)]
pub enum Created {
    /// The dry run: the table, the start list, the schedule's JSON, and the devices left out.
    DryRun(Value),
    /// The rollout, as `rollout show` shows it.
    Rollout(Value),
}

/// What the executor needs from the rest of the service.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The store.
    pub db: Db,
    /// The audit log.
    pub audit: AuditLog,
    /// Devices and their inventory.
    pub registry: Registry,
    /// The release catalogue.
    pub releases: Releases,
    /// Commands to devices.
    pub commands: Commands,
    /// Deploy locks.
    pub locks: Locks,
    /// Webhooks.
    pub webhooks: Webhooks,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The base URL of artifact downloads.
    pub public_url: Arc<str>,
    /// How often every rollout is evaluated without a device message.
    pub tick: Duration,
}

struct State {
    runs: BTreeMap<u64, Run>,
    next: u64,
}

/// The cloneable executor handle.
#[derive(Clone)]
pub struct Rollouts {
    deps: Deps,
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Rollouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollouts").finish_non_exhaustive()
    }
}

fn number_of(id: &str) -> Result<u64, RolloutError> {
    record::number(id).ok_or_else(|| RolloutError::NotFound(id.to_owned()))
}

impl Rollouts {
    /// Loads every rollout from the store.
    pub async fn open(deps: Deps) -> Result<Rollouts, DbError> {
        let mut headers = BTreeMap::new();
        let mut devices: BTreeMap<u64, BTreeMap<DeviceId, DeviceRecord>> = BTreeMap::new();
        for (k, v) in deps.db.scan(Table::Rollouts, b"r/".to_vec()).await? {
            match record::parse_key(&k)? {
                Key::Rollout(n) => {
                    headers.insert(n, record::parse::<RolloutRecord>("rollout", &v)?);
                }
                Key::Device(n) => {
                    let d: DeviceRecord = record::parse("rollout device", &v)?;
                    devices.entry(n).or_default().insert(d.id.clone(), d);
                }
            }
        }
        let next = match deps.db.get(Table::Meta, SEQ_KEY.to_vec()).await? {
            Some(b) => parse_counter(&b)?,
            None => 0,
        };
        let mut runs = BTreeMap::new();
        for (n, rec) in headers {
            let plan = Plan::from_toml(&rec.plan)
                .map_err(|e| DbError::Corrupt(format!("rollout {}: plan: {e}", rec.id)))?;
            let ds = devices.remove(&n).unwrap_or_default();
            runs.insert(n, Run::new(n, rec, ds, plan));
        }
        Ok(Rollouts {
            deps,
            state: Arc::new(Mutex::new(State { runs, next })),
            wake: Arc::default(),
        })
    }

    fn fleet(&self) -> HashMap<DeviceId, Device> {
        self.deps
            .registry
            .snapshot()
            .into_iter()
            .filter(|d| d.registration.revoked.is_none())
            .map(|d| (d.registration.id.clone(), d))
            .collect()
    }

    fn holding(&self, now: Timestamp) -> Vec<Hold> {
        self.deps
            .locks
            .holding(now)
            .into_iter()
            .map(|l| Hold {
                id: l.id,
                reason: l.reason,
            })
            .collect()
    }

    /// Plans and, unless it is a dry run, creates a rollout.
    pub async fn create(&self, new: NewRollout, actor: &str) -> Result<Created, RolloutError> {
        if new.plan.len() > MAX_PLAN_BYTES {
            return Err(RolloutError::Plan(format!(
                "larger than {MAX_PLAN_BYTES} bytes"
            )));
        }
        let plan = Plan::from_toml(&new.plan).map_err(|e| RolloutError::Plan(e.to_string()))?;
        let release = self
            .deps
            .releases
            .get(&new.release.name, &new.release.version)
            .ok_or_else(|| {
                RolloutError::NoRelease(
                    new.release.name.to_string(),
                    new.release.version.to_string(),
                )
            })?;
        let now = self.deps.clock.now();
        let fleet = self.fleet();
        let mut current = Vec::new();
        let mut incompatible = Vec::new();
        let mut snapshot = Vec::new();
        for d in fleet.values() {
            if engine::running(d).as_ref() == Some(&new.release) {
                current.push(d.registration.id.clone());
            } else if !release.doc.hardware.contains(&d.registration.hardware) {
                incompatible.push(d.registration.id.clone());
            } else if let Some(f) = engine::fleet_device(d) {
                snapshot.push(f);
            }
        }
        current.sort();
        incompatible.sort();
        let snapshot = FleetSnapshot::new(snapshot)
            .map_err(|e| RolloutError::Plan(format!("duplicate device {}", e.0)))?;
        let selected = |ids: &[DeviceId]| -> Vec<DeviceId> {
            ids.iter()
                .filter(|id| {
                    fleet
                        .get(*id)
                        .and_then(engine::fleet_device)
                        .is_some_and(|f| plan.selector().matches(&f))
                })
                .cloned()
                .collect()
        };
        let already_current = selected(&current);
        let incompatible = selected(&incompatible);
        if new.dry_run {
            let schedule = planner::plan(&plan, &snapshot, engine::jiff(now))
                .map_err(|e| RolloutError::Plan(e.to_string()))?;
            let schedule_json: Value =
                serde_json::from_str(&render::json(&plan, &schedule)).unwrap_or(Value::Null);
            return Ok(Created::DryRun(json!({
                "dry_run": true,
                "table": render::table(&plan, &schedule),
                "starts": render::starts_table(&schedule),
                "schedule": schedule_json,
                "already_current": already_current,
                "incompatible": incompatible,
            })));
        }
        let assignment = planner::assign(&plan, &snapshot);

        let mut st = self.state.lock().await;
        if let Some(old) = &new.supersedes {
            let n = number_of(old)?;
            let run = st
                .runs
                .get(&n)
                .ok_or_else(|| RolloutError::NotFound(old.clone()))?;
            if run.rec.status.is_terminal() {
                return Err(RolloutError::Conflict(format!(
                    "{old} has ended ({}); there is nothing to supersede",
                    run.rec.status.name()
                )));
            }
        }
        let wanted: Vec<&DeviceId> = assignment.stages.iter().flatten().collect();
        for run in st.runs.values() {
            if run.rec.status.is_terminal() || new.supersedes.as_deref() == Some(&run.rec.id) {
                continue;
            }
            let clash: Vec<&DeviceId> = wanted
                .iter()
                .copied()
                .filter(|id| run.devices.contains_key(*id))
                .collect();
            if !clash.is_empty() {
                let mut names: Vec<String> =
                    clash.iter().take(3).map(ToString::to_string).collect();
                if clash.len() > 3 {
                    names.push(format!("{} more", clash.len() - 3));
                }
                return Err(RolloutError::Conflict(format!(
                    "devices {} are in active rollout {} ({} {}); supersede it \
                     (--supersedes {}) or wait for it to end",
                    names.join(", "),
                    run.rec.id,
                    run.rec.release.name,
                    run.rec.release.version,
                    run.rec.id
                )));
            }
        }

        let n = st.next + 1;
        let id = format!("r-{n}");
        let stage_count = plan.stages().count();
        let rec = RolloutRecord {
            id: id.clone(),
            release: new.release.clone(),
            plan: new.plan.clone(),
            created_at: now,
            created_by: actor.to_owned(),
            supersedes: new.supersedes.clone(),
            superseded_by: None,
            status: Status::Running,
            status_reason: None,
            step: 0,
            step_began: None,
            ramp_origin: None,
            stages: vec![
                StageRecord {
                    status: StageStatus::Pending,
                    approval: None,
                    waived: 0,
                };
                stage_count
            ],
            held_by: Vec::new(),
            rollback: None,
            events: Vec::new(),
        };
        let mut devices = BTreeMap::new();
        for (stage, ids) in assignment.stages.iter().enumerate() {
            for d in ids {
                let zone = fleet
                    .get(d)
                    .map(|x| x.registration.zone.as_str().to_owned())
                    .unwrap_or_default();
                devices.insert(d.clone(), DeviceRecord::pending(d.clone(), stage, zone));
            }
        }
        let mut run = Run::new(n, rec, devices, plan);
        run.changed = true;
        run.dirty = run.devices.keys().cloned().collect();
        let mut fx = Vec::new();
        let reason = format!(
            "{} {} to {} device(s) in {} step(s); {} already on it, {} of other hardware, {} \
             selected by no stage",
            new.release.name,
            new.release.version,
            run.devices.len(),
            run.plan.steps().len(),
            already_current.len(),
            incompatible.len(),
            assignment.unassigned.len()
        );
        run.event(now, "rollout.started", reason, &mut fx);

        let mut batch = Batch::new();
        batch.put(Table::Meta, SEQ_KEY.to_vec(), counter_bytes(n));
        let mut superseded = None;
        if let Some(old) = &new.supersedes {
            let on = number_of(old)?;
            if let Some(o) = st.runs.get_mut(&on) {
                o.rec.status = Status::Superseded;
                o.rec.superseded_by = Some(id.clone());
                o.rec.status_reason = Some(format!("superseded by {id}"));
                o.changed = true;
                let mut ofx = Vec::new();
                o.event(
                    now,
                    "rollout.superseded",
                    format!(
                        "superseded by {id} ({} {})",
                        new.release.name, new.release.version
                    ),
                    &mut ofx,
                );
                superseded = Some((on, ofx));
            }
        }
        let mut w = self.deps.audit.writer().await;
        if let Some((on, ofx)) = &superseded
            && let Some(o) = st.runs.get_mut(on)
        {
            self.stage_writes(o, ofx, actor, now, &mut batch, &mut w);
        }
        self.stage_writes(&mut run, &fx, actor, now, &mut batch, &mut w);
        w.commit(batch).await?;
        if let Some((on, _)) = superseded
            && let Some(o) = st.runs.get_mut(&on)
        {
            o.changed = false;
            o.dirty.clear();
        }
        run.changed = false;
        run.dirty.clear();
        self.deps.webhooks.notify();
        let shown = view::full(&run, now, &|l| self.deps.locks.get(l).map(|l| l.reason));
        st.next = n;
        st.runs.insert(n, run);
        drop(st);
        self.wake.notify_one();
        info!(rollout = %id, "rollout created");
        Ok(Created::Rollout(shown))
    }

    /// Adds a rollout's changed records and its decisions (audit entries and webhook
    /// deliveries) to `batch`.
    fn stage_writes(
        &self,
        run: &mut Run,
        fx: &[Effect],
        actor: &str,
        now: Timestamp,
        batch: &mut Batch,
        w: &mut audit::AuditWriter<'_>,
    ) {
        if run.changed {
            batch.put(
                Table::Rollouts,
                record::rollout_key(run.n),
                to_bytes(&run.rec),
            );
        }
        for id in &run.dirty {
            if let Some(d) = run.devices.get(id) {
                batch.put(Table::Rollouts, record::device_key(run.n, id), to_bytes(d));
            }
        }
        for e in fx {
            if let Effect::Event { kind, reason } = e {
                let details = json!({
                    "rollout": run.rec.id,
                    "release": run.rec.release,
                    "reason": reason,
                });
                // Strings and integers only, so this cannot fail; if it ever did, the entry
                // still records what happened, with the conversion's error.
                let recorded = audit::details(&details)
                    .unwrap_or_else(|e| swell_proto::json::Value::String(e.to_string()));
                w.append(batch, now, actor, kind, recorded);
                self.deps.webhooks.enqueue(
                    batch,
                    &webhooks::Event {
                        kind: (*kind).to_owned(),
                        at: now,
                        rollout: run.rec.id.clone(),
                        release: Some(run.rec.release.clone()),
                        reason: reason.clone(),
                        detail: json!({
                            "status": view::status(run),
                            "step": run.rec.step + 1,
                            "counts": view::counts(run.counts(None)),
                            "rollback": run.rec.rollback,
                        }),
                    },
                );
            }
        }
    }

    /// Stores what `fx` decided and carries out its commands.
    async fn apply(&self, run: &mut Run, fx: Vec<Effect>, actor: &str, now: Timestamp) {
        if !self.store(run, &fx, actor, now).await {
            return;
        }
        for e in fx {
            match e {
                Effect::Install(id) => self.send_install(run, &id, now).await,
                Effect::Rollback(id, kind) => self.send_rollback(run, &id, kind, now).await,
                Effect::Republish(id) => {
                    if let Some((cmd, payload)) =
                        run.devices.get(&id).and_then(|d| d.unacked.clone())
                    {
                        info!(device_id = %id, command = %cmd, "publishing a recorded command again");
                        if let Err(e) = self
                            .deps
                            .commands
                            .republish(&id, payload.into_bytes())
                            .await
                        {
                            warn!(device_id = %id, error = %e, "cannot publish the command again");
                        }
                    }
                }
                Effect::Event { .. } | Effect::AutoLock { .. } => {}
            }
        }
        if run.changed || !run.dirty.is_empty() {
            self.store(run, &[], actor, now).await;
        }
    }

    /// Stores the rollout's changes and decisions in one batch; `false` if that failed (then
    /// nothing is sent, and the next tick tries again from the same in-memory state).
    async fn store(&self, run: &mut Run, fx: &[Effect], actor: &str, now: Timestamp) -> bool {
        let events = fx.iter().any(|e| matches!(e, Effect::Event { .. }));
        if !run.changed && run.dirty.is_empty() && !events {
            return true;
        }
        let mut batch = Batch::new();
        let mut w = self.deps.audit.writer().await;
        self.stage_writes(run, fx, actor, now, &mut batch, &mut w);
        let mut lock = None;
        for e in fx {
            if let Effect::AutoLock { reason } = e {
                lock = Some(self.deps.locks.create_in(
                    &mut batch,
                    &mut w,
                    NewLock {
                        reason: reason.clone(),
                        until: None,
                        freeze: None,
                        auto_from: Some(run.rec.id.clone()),
                    },
                    CONTROLLER_ACTOR,
                    now,
                ));
            }
        }
        let result = if w.has_entries() {
            w.commit(batch).await.map(|_| ())
        } else {
            drop(w);
            self.deps.db.commit(batch).await
        };
        match result {
            Ok(()) => {
                run.changed = false;
                run.dirty.clear();
                if let Some(l) = lock {
                    self.deps.locks.installed(l);
                }
                if events {
                    self.deps.webhooks.notify();
                }
                true
            }
            Err(e) => {
                error!(rollout = %run.rec.id, error = %e, "cannot store the rollout; retrying at the next tick");
                false
            }
        }
    }

    async fn send(
        &self,
        run: &mut Run,
        id: &DeviceId,
        action: Action,
        detail: Value,
        now: Timestamp,
        fill: impl Fn(&mut DeviceRecord, &Sent),
    ) -> Result<(), String> {
        let Some(rec) = run.devices.get(id).cloned() else {
            return Err("not in the rollout".into());
        };
        let key = record::device_key(run.n, id);
        let result = self
            .deps
            .commands
            .send_with(id, action, detail, CONTROLLER_ACTOR, now, |sent, batch| {
                let mut r = rec.clone();
                fill(&mut r, sent);
                batch.put(Table::Rollouts, key, to_bytes(&r));
            })
            .await;
        match result {
            Ok(sent) => {
                if let Some(d) = run.devices.get_mut(id) {
                    fill(d, &sent);
                }
                let online_seq = self
                    .deps
                    .registry
                    .get(id)
                    .map_or(0, |d| d.inventory.online_seq);
                run.published(&sent.id, online_seq);
                Ok(())
            }
            Err(e) => Err(format!("command not sent: {e}")),
        }
    }

    async fn send_install(&self, run: &mut Run, id: &DeviceId, now: Timestamp) {
        let release = run.rec.release.clone();
        let built = self
            .deps
            .registry
            .get(id)
            .ok_or_else(|| format!("no device {id}"))
            .and_then(|dev| {
                install_action(
                    &self.deps.releases,
                    &self.deps.public_url,
                    &dev,
                    &release.name,
                    &release.version,
                    now,
                )
                .map_err(|e| e.to_string())
            });
        let result = match built {
            Ok((action, mut detail)) => {
                detail["rollout"] = json!(run.rec.id);
                self.send(run, id, action, detail, now, |d, sent| {
                    d.command = Some(sent.id.clone());
                    d.unacked = Some((
                        sent.id.clone(),
                        String::from_utf8_lossy(&sent.payload).into_owned(),
                    ));
                })
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(reason) = result {
            warn!(rollout = %run.rec.id, device_id = %id, %reason, "install not started");
            if let Some(d) = run.devices.get_mut(id) {
                d.state = DeviceState::Failed;
                d.reason = Some(reason);
                run.dirty.insert(id.clone());
            }
        }
    }

    async fn send_rollback(
        &self,
        run: &mut Run,
        id: &DeviceId,
        kind: RollbackKind,
        now: Timestamp,
    ) {
        let detail = json!({"rollout": run.rec.id, "rollback": true});
        let action = match kind {
            RollbackKind::Cancel => Ok((Action::Cancel, detail)),
            RollbackKind::Revert => Ok((Action::Revert, detail)),
            RollbackKind::Reinstall => {
                let previous = run.devices.get(id).and_then(|d| d.previous.clone());
                match (previous, self.deps.registry.get(id)) {
                    (Some(p), Some(dev)) => install_action(
                        &self.deps.releases,
                        &self.deps.public_url,
                        &dev,
                        &p.name,
                        &p.version,
                        now,
                    )
                    .map(|(a, mut d)| {
                        d["rollout"] = json!(run.rec.id);
                        d["rollback"] = json!(true);
                        (a, d)
                    })
                    .map_err(|e| format!("the revert was refused and the previous release cannot be installed: {e}")),
                    _ => Err("the revert was refused and no previous release is known".into()),
                }
            }
        };
        let result = match action {
            Ok((action, detail)) => {
                self.send(run, id, action, detail, now, |d, sent| {
                    d.rollback = Some((kind, sent.id.clone(), now));
                    d.unacked = Some((
                        sent.id.clone(),
                        String::from_utf8_lossy(&sent.payload).into_owned(),
                    ));
                    if kind != RollbackKind::Cancel {
                        d.state = DeviceState::RollingBack;
                    }
                })
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(reason) = result {
            warn!(rollout = %run.rec.id, device_id = %id, %reason, "rollback command not sent");
            if kind != RollbackKind::Cancel
                && let Some(d) = run.devices.get_mut(id)
            {
                d.state = DeviceState::RollbackFailed;
                d.reason = Some(reason);
                run.dirty.insert(id.clone());
            }
        }
    }

    /// The verification reports of the current step's running stages that ask for one; their
    /// summaries are kept on the run for `rollout show`.
    fn verdicts(
        &self,
        run: &mut Run,
        fleet: &HashMap<DeviceId, Device>,
        now: Timestamp,
    ) -> BTreeMap<usize, crate::verification::StageReport> {
        let mut out = BTreeMap::new();
        for i in 0..run.stages.len() {
            if run.stages[i].step != run.rec.step
                || run.rec.stages[i].status != StageStatus::Running
            {
                continue;
            }
            let history = |id: &DeviceId| self.deps.registry.signals_received(id);
            if let Some(report) = verify::stage_report(run, i, fleet, &history, now) {
                run.verification.insert(i, verify::summary(&report));
                out.insert(i, report);
            }
        }
        out
    }

    /// One evaluation of every active rollout.
    pub async fn tick(&self) {
        let mut st = self.state.lock().await;
        let now = self.deps.clock.now();
        let fleet = self.fleet();
        let holding = self.holding(now);
        let none = BTreeMap::new();
        let ctx = Ctx {
            now,
            instant: Instant::now(),
            fleet: &fleet,
            holding: &holding,
            verdicts: &none,
        };
        for run in st.runs.values_mut() {
            if run.rec.status.is_terminal() {
                continue;
            }
            let verdicts = self.verdicts(run, &fleet, now);
            let ctx = Ctx {
                verdicts: &verdicts,
                ..ctx
            };
            let fx = run.tick(&ctx);
            self.apply(run, fx, CONTROLLER_ACTOR, now).await;
        }
    }

    /// Drives every rollout until `token` is cancelled: on each accepted device message, each
    /// operator decision, and every tick.
    pub async fn run(self, token: CancellationToken) {
        let mut interval = tokio::time::interval(self.deps.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = self.deps.registry.changed() => {}
                () = self.wake.notified() => {}
                _ = interval.tick() => {}
            }
            self.tick().await;
        }
    }

    /// Every rollout's summary, newest first.
    pub async fn list(&self) -> Vec<Value> {
        let st = self.state.lock().await;
        st.runs.values().rev().map(view::summary).collect()
    }

    /// One rollout, whole.
    pub async fn show(&self, id: &str) -> Result<Value, RolloutError> {
        let n = number_of(id)?;
        let st = self.state.lock().await;
        let run = st
            .runs
            .get(&n)
            .ok_or_else(|| RolloutError::NotFound(id.to_owned()))?;
        Ok(view::full(run, self.deps.clock.now(), &|l| {
            self.deps.locks.get(l).map(|l| l.reason)
        }))
    }

    /// An operator's decision on rollout `id`: `decide` changes the run (or refuses), then
    /// the change is stored and carried out like the executor's own.
    async fn decide(
        &self,
        id: &str,
        actor: &str,
        decide: impl FnOnce(&mut Run, &Ctx<'_>, &mut Vec<Effect>) -> Result<(), RolloutError>,
    ) -> Result<Value, RolloutError> {
        let n = number_of(id)?;
        let mut st = self.state.lock().await;
        let run = st
            .runs
            .get_mut(&n)
            .ok_or_else(|| RolloutError::NotFound(id.to_owned()))?;
        let now = self.deps.clock.now();
        let fleet = self.fleet();
        let holding = self.holding(now);
        let verdicts = self.verdicts(run, &fleet, now);
        let ctx = Ctx {
            now,
            instant: Instant::now(),
            fleet: &fleet,
            holding: &holding,
            verdicts: &verdicts,
        };
        let mut fx = Vec::new();
        decide(run, &ctx, &mut fx)?;
        self.apply(run, fx, actor, now).await;
        let shown = view::full(run, now, &|l| self.deps.locks.get(l).map(|l| l.reason));
        drop(st);
        self.wake.notify_one();
        Ok(shown)
    }

    /// Pauses a running rollout: nothing new starts, devices in flight finish.
    pub async fn pause(&self, id: &str, reason: &str, actor: &str) -> Result<Value, RolloutError> {
        self.decide(id, actor, |run, ctx, fx| {
            if run.rec.status != Status::Running {
                return Err(not_now(run, "pause"));
            }
            run.pause(ctx.now, format!("paused by {actor}: {reason}"), fx);
            Ok(())
        })
        .await
    }

    /// Resumes a paused rollout. Failures that tripped a `pause` gate are accepted: the gate
    /// counts only failures beyond them.
    pub async fn resume(&self, id: &str, reason: &str, actor: &str) -> Result<Value, RolloutError> {
        self.decide(id, actor, |run, ctx, fx| {
            if run.rec.status != Status::Paused {
                return Err(not_now(run, "resume"));
            }
            let mut waived = Vec::new();
            for i in 0..run.stages.len() {
                if run.stages[i].step == run.rec.step
                    && run.rec.stages[i].status == StageStatus::Tripped
                {
                    let failed = run.counts(Some(i)).failed;
                    run.rec.stages[i].status = StageStatus::Running;
                    run.rec.stages[i].waived = failed;
                    waived.push(format!(
                        "{} failure(s) in {} accepted",
                        failed, run.stages[i].name
                    ));
                }
            }
            run.rec.status = Status::Running;
            run.rec.status_reason = None;
            run.changed = true;
            run.replan();
            let mut why = format!("resumed by {actor}: {reason}");
            if !waived.is_empty() {
                why.push_str(&format!(" ({})", waived.join("; ")));
            }
            run.event(ctx.now, "rollout.resumed", why, fx);
            Ok(())
        })
        .await
    }

    /// Aborts a rollout and takes back every device that took the release.
    pub async fn abort(&self, id: &str, reason: &str, actor: &str) -> Result<Value, RolloutError> {
        self.decide(id, actor, |run, ctx, fx| {
            if !matches!(run.rec.status, Status::Running | Status::Paused) {
                return Err(not_now(run, "abort"));
            }
            run.abort(
                ctx,
                format!("aborted by {actor}: {reason}"),
                None,
                ctx.now,
                fx,
            );
            Ok(())
        })
        .await
    }

    /// Approves the stages of the current step that wait for approval (or the one named).
    pub async fn approve(
        &self,
        id: &str,
        stage: Option<&str>,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<Value, RolloutError> {
        self.decide(id, actor, |run, ctx, fx| {
            if run.rec.status.is_terminal() {
                return Err(not_now(run, "approve"));
            }
            let waiting: Vec<usize> = (0..run.stages.len())
                .filter(|i| {
                    run.rec.stages[*i].status == StageStatus::AwaitingApproval
                        && stage.is_none_or(|s| run.stages[*i].name == s)
                })
                .collect();
            if waiting.is_empty() {
                return Err(RolloutError::Conflict(match stage {
                    Some(s) if !run.stages.iter().any(|x| x.name == s) => {
                        format!("{} has no stage {s:?}", run.rec.id)
                    }
                    Some(s) => format!("stage {s} of {} is not awaiting approval", run.rec.id),
                    None => format!("no stage of {} is awaiting approval", run.rec.id),
                }));
            }
            for i in waiting {
                run.rec.stages[i].status = StageStatus::Running;
                run.rec.stages[i].approval = Some(record::Decision {
                    by: actor.to_owned(),
                    at: ctx.now,
                    reason: reason.map(str::to_owned),
                });
                let why = match reason {
                    Some(r) => format!("stage {} approved by {actor}: {r}", run.stages[i].name),
                    None => format!("stage {} approved by {actor}", run.stages[i].name),
                };
                run.event(ctx.now, "rollout.approved", why, fx);
            }
            run.changed = true;
            run.replan();
            Ok(())
        })
        .await
    }
}

fn not_now(run: &Run, what: &str) -> RolloutError {
    RolloutError::Conflict(format!(
        "cannot {what} {}: it is {}",
        run.rec.id,
        view::status(run)
    ))
}
