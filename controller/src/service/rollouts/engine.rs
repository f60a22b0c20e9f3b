//! The executor's decisions for one rollout, without I/O: [`Run::tick`] reads what the devices
//! last reported (the registry's inventory), the locks that hold and the time, changes the
//! rollout's records in memory and returns the [`Effect`]s the driver must carry out (commands
//! to send, decisions to record). The driver stores the changed records *before* it sends a
//! command, and records each command with its sequence number, so a crash at any point leaves
//! either nothing sent or a command the next start publishes again.
//!
//! A device's progress is read from its inventory: the command its last report echoed, its
//! update state and the release it runs. A report about an older command says nothing about
//! the new one, and heartbeats carry the state but not the command, so "settled, on the
//! release" and "settled, not on the release" are decided only once the device has echoed the
//! command.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use swell_proto::messages::{ReleaseRef, UpdateState};
use swell_proto::{DeviceId, Timestamp};

use super::record::{
    DeviceRecord, DeviceState, EventRecord, RollbackKind, RollbackRecord, RolloutRecord,
    StageStatus, Status,
};
use crate::planner::plan::{FailureAction, Inconclusive};
use crate::planner::{self, Assignment, FleetDevice, FleetSnapshot, Plan};
use crate::service::fleet::{Device, state_name};
use crate::verification::{StageReport, Verdict};

/// What a stage's gates need, fixed when the rollout is created.
#[derive(Debug, Clone)]
pub struct StageInfo {
    /// Its step, from 0.
    pub step: usize,
    /// Its name.
    pub name: String,
    /// Whether it waits for an approval.
    pub approval: bool,
    /// Its devices.
    pub devices: usize,
    /// Devices that must succeed.
    pub required: usize,
    /// Failures tolerated.
    pub tolerated: usize,
    /// What a tripped gate does.
    pub action: FailureAction,
    /// The soak, seconds.
    pub soak_s: i64,
    /// The device timeout, seconds.
    pub timeout_s: i64,
}

/// The stages of `plan` with `counts[i]` devices in stage `i`.
pub fn stage_infos(plan: &Plan, counts: &[usize]) -> Vec<StageInfo> {
    plan.stages()
        .enumerate()
        .map(|(i, (step, s))| {
            let n = counts.get(i).copied().unwrap_or(0);
            StageInfo {
                step,
                name: s.name.clone(),
                approval: s.approval,
                devices: n,
                required: s.success.required_of(n),
                tolerated: s.failure.tolerate.tolerated_of(n),
                action: s.failure.action,
                soak_s: s.success.soak.as_secs(),
                timeout_s: s.device_timeout.as_secs(),
            }
        })
        .collect()
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send the install command to a device (already marked in flight).
    Install(DeviceId),
    /// Send a rollback command of this kind.
    Rollback(DeviceId, RollbackKind),
    /// Publish the device's unacknowledged command again.
    Republish(DeviceId),
    /// A decision to audit and announce (already added to the rollout's events).
    Event {
        /// `rollout.paused`, ...
        kind: &'static str,
        /// For people.
        reason: String,
    },
    /// Lock deploys: the rollout aborted and its plan says `lock_on_abort`.
    AutoLock {
        /// The lock's reason.
        reason: String,
    },
}

/// A lock that holds, as the executor needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The lock's id.
    pub id: String,
    /// Its reason.
    pub reason: String,
}

/// What a tick sees.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The controller's time.
    pub now: Timestamp,
    /// The monotonic time, for the rollback's duration.
    pub instant: Instant,
    /// Every enrolled, unrevoked device.
    pub fleet: &'a HashMap<DeviceId, Device>,
    /// The locks that hold now.
    pub holding: &'a [Hold],
    /// The verification reports of the stages that ask for one, by stage index.
    pub verdicts: &'a BTreeMap<usize, StageReport>,
}

/// A rollout in memory: its records, its plan, and what changed since it was last stored.
#[derive(Debug)]
pub struct Run {
    /// Its number (`r-<n>`).
    pub n: u64,
    /// The rollout record.
    pub rec: RolloutRecord,
    /// Its devices.
    pub devices: BTreeMap<DeviceId, DeviceRecord>,
    /// The parsed plan.
    pub plan: Plan,
    /// Per stage, in pipeline order.
    pub stages: Vec<StageInfo>,
    /// Devices changed since the last store.
    pub dirty: BTreeSet<DeviceId>,
    /// Whether the rollout record changed since the last store.
    pub changed: bool,
    /// The latest verification summaries by stage (recomputed, not stored).
    pub verification: BTreeMap<usize, serde_json::Value>,
    replan: bool,
    tripped: Option<Instant>,
    /// Commands this process published, each with the device's `online_seq` at the time.
    published: BTreeMap<String, u64>,
    last_failure: Option<(DeviceId, Timestamp)>,
}

/// Whether the agent is between updates (nothing in progress).
fn settled(state: Option<UpdateState>) -> bool {
    matches!(
        state,
        None | Some(
            UpdateState::Idle
                | UpdateState::Committed
                | UpdateState::RolledBack
                | UpdateState::Failed
        )
    )
}

/// The release a device runs, if it reported one.
pub fn running(d: &Device) -> Option<ReleaseRef> {
    let r = d.inventory.running.as_ref()?;
    Some(ReleaseRef {
        name: r.release.clone()?,
        version: r.version.clone()?,
    })
}

fn describe(d: &Device) -> String {
    let state = d.inventory.state.map_or("unknown", state_name);
    let on = running(d).map_or_else(
        || "no release".to_owned(),
        |r| format!("{} {}", r.name, r.version),
    );
    match &d.inventory.last_error {
        Some(e) => format!("{state} on {on}: {e}"),
        None => format!("{state} on {on}"),
    }
}

/// The device as the planner sees it.
pub fn fleet_device(d: &Device) -> Option<FleetDevice> {
    let reg = &d.registration;
    Some(FleetDevice {
        id: reg.id.clone(),
        hardware: reg.hardware.clone(),
        zone: planner::Zone::new(reg.zone.as_str()).ok()?,
        cohort: reg.cohort.as_ref().map(|c| c.as_str().to_owned()),
        tags: reg
            .tags
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
            .collect(),
        version: d.inventory.running.as_ref().and_then(|r| r.version.clone()),
    })
}

/// The planner's form of a time.
pub fn jiff(t: Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t.unix()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn ours(t: jiff::Timestamp) -> Timestamp {
    Timestamp::from_unix(t.as_second())
}

/// Per-bucket device counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Devices.
    pub devices: usize,
    /// Not started (or never will be).
    pub pending: usize,
    /// Installing.
    pub in_flight: usize,
    /// Committed, soaking.
    pub soaking: usize,
    /// Committed and soaked.
    pub succeeded: usize,
    /// Failed (or could not be taken back).
    pub failed: usize,
    /// Being taken back.
    pub rolling_back: usize,
    /// Taken back.
    pub rolled_back: usize,
}

impl Counts {
    /// Counts `records`.
    pub fn of<'a>(records: impl Iterator<Item = &'a DeviceRecord>) -> Counts {
        let mut c = Counts::default();
        for d in records {
            c.devices += 1;
            match d.state {
                DeviceState::Pending | DeviceState::NotStarted => c.pending += 1,
                DeviceState::InFlight => c.in_flight += 1,
                DeviceState::Soaking => c.soaking += 1,
                DeviceState::Succeeded => c.succeeded += 1,
                DeviceState::Failed | DeviceState::RollbackFailed => c.failed += 1,
                DeviceState::RollingBack => c.rolling_back += 1,
                DeviceState::RolledBack => c.rolled_back += 1,
            }
        }
        c
    }
}

impl Run {
    /// A rollout loaded or just created.
    pub fn new(
        n: u64,
        rec: RolloutRecord,
        devices: BTreeMap<DeviceId, DeviceRecord>,
        plan: Plan,
    ) -> Run {
        let mut counts = vec![0usize; plan.stages().count()];
        for d in devices.values() {
            if let Some(c) = counts.get_mut(d.stage) {
                *c += 1;
            }
        }
        let stages = stage_infos(&plan, &counts);
        Run {
            n,
            rec,
            devices,
            plan,
            stages,
            dirty: BTreeSet::new(),
            changed: false,
            verification: BTreeMap::new(),
            // A loaded rollout re-plans its pending devices: their windows may have passed
            // while the controller was down.
            replan: true,
            tripped: None,
            published: BTreeMap::new(),
            last_failure: None,
        }
    }

    /// The counts of stage `i` (all stages with `None`).
    pub fn counts(&self, stage: Option<usize>) -> Counts {
        Counts::of(
            self.devices
                .values()
                .filter(|d| stage.is_none_or(|s| d.stage == s)),
        )
    }

    /// Records a decision; the driver audits and announces it.
    pub fn event(
        &mut self,
        now: Timestamp,
        kind: &'static str,
        reason: String,
        fx: &mut Vec<Effect>,
    ) {
        self.rec.events.push(EventRecord {
            at: now,
            kind: kind.to_owned(),
            reason: reason.clone(),
        });
        self.changed = true;
        fx.push(Effect::Event { kind, reason });
    }

    fn set(&mut self, id: &DeviceId, f: impl FnOnce(&mut DeviceRecord)) {
        if let Some(d) = self.devices.get_mut(id) {
            f(d);
            self.dirty.insert(id.clone());
        }
    }

    /// Marks a command as published by this process while the device's connection was the
    /// one whose presence has sequence number `online_seq` (so it is published again only if
    /// the device connects anew before acknowledging it).
    pub fn published(&mut self, command: &str, online_seq: u64) {
        self.published.insert(command.to_owned(), online_seq);
    }

    /// One evaluation: observe the devices, apply the gates, take back or advance and start.
    pub fn tick(&mut self, ctx: &Ctx<'_>) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.rec.status.is_terminal() {
            return fx;
        }
        self.observe(ctx, &mut fx);
        if self.rec.status == Status::RollingBack {
            self.roll_back(ctx, &mut fx);
        } else {
            // A gate that aborts takes devices back at once (`abort` calls `roll_back`).
            self.gates(ctx, &mut fx);
        }
        if self.rec.status == Status::Running && !self.hold(ctx, &mut fx) {
            self.advance(ctx, &mut fx);
            if self.rec.status == Status::Running {
                self.replan_if_needed(ctx, &mut fx);
                self.start(ctx, &mut fx);
            }
        }
        fx
    }

    /// Reads every started device's progress from its inventory.
    fn observe(&mut self, ctx: &Ctx<'_>, fx: &mut Vec<Effect>) {
        let now = ctx.now;
        let ids: Vec<DeviceId> = self.devices.keys().cloned().collect();
        for id in ids {
            let rec = &self.devices[&id];
            let timeout = self.stages.get(rec.stage).map_or(0, |s| s.timeout_s);
            let soak = self.stages.get(rec.stage).map_or(0, |s| s.soak_s);
            let Some(dev) = ctx.fleet.get(&id) else {
                if matches!(rec.state, DeviceState::InFlight | DeviceState::Soaking) {
                    self.fail(&id, now, "the device was revoked".into());
                }
                continue;
            };
            let inv = &dev.inventory;
            // Acknowledged: a report echoed the command. One not acknowledged is published
            // again when this process never published it (a restart) or the device has
            // connected anew since (the broker may have lost it with the device's session).
            if let Some((cmd, _)) = &rec.unacked {
                if inv.command.as_deref() == Some(cmd) {
                    self.set(&id, |d| d.unacked = None);
                } else if self
                    .published
                    .get(cmd)
                    .is_none_or(|&at| inv.online_seq > at)
                {
                    self.published.insert(cmd.clone(), inv.online_seq);
                    fx.push(Effect::Republish(id.clone()));
                }
            }
            let rec = &self.devices[&id];
            let on_release = running(dev).as_ref() == Some(&self.rec.release);
            match rec.state {
                DeviceState::InFlight => {
                    let Some(cmd) = rec.command.clone() else {
                        // Marked in flight, but the command was never recorded: never sent.
                        self.set(&id, |d| {
                            d.state = DeviceState::Pending;
                            d.started_at = None;
                        });
                        continue;
                    };
                    let cancel = rec
                        .rollback
                        .as_ref()
                        .filter(|r| r.0 == RollbackKind::Cancel)
                        .map(|r| r.1.clone());
                    let echoed = inv.command.as_deref() == Some(cmd.as_str())
                        || (cancel.is_some() && inv.command == cancel);
                    if echoed && settled(inv.state) {
                        if on_release && inv.state == Some(UpdateState::Committed) {
                            let at = inv.last_seen.unwrap_or(now);
                            self.set(&id, |d| {
                                d.state = DeviceState::Soaking;
                                d.committed_at = Some(at);
                            });
                        } else if !on_release {
                            let why = describe(dev);
                            self.fail(&id, inv.last_seen.unwrap_or(now), why);
                        }
                    }
                    let rec = &self.devices[&id];
                    let started = rec.started_at.unwrap_or(now);
                    if rec.state == DeviceState::InFlight && now >= started.plus_secs(timeout) {
                        let why = format!(
                            "no Committed report within the device timeout ({} s); last: {}",
                            timeout,
                            describe(dev)
                        );
                        self.fail(&id, now, why);
                    }
                }
                DeviceState::Soaking => {
                    let committed = rec.committed_at.unwrap_or(now);
                    if !(on_release && inv.state == Some(UpdateState::Committed)) {
                        let why = format!("left the release during the soak: {}", describe(dev));
                        self.fail(&id, inv.last_seen.unwrap_or(now), why);
                    } else if now >= committed.plus_secs(soak) {
                        let seen = inv.last_seen.unwrap_or(committed);
                        if seen >= committed.plus_secs(soak) {
                            self.set(&id, |d| d.state = DeviceState::Succeeded);
                        } else if now >= committed.plus_secs(soak + timeout) {
                            let why = format!("silent since {seen}, during the soak");
                            self.fail(&id, now, why);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn fail(&mut self, id: &DeviceId, at: Timestamp, reason: String) {
        self.set(id, |d| {
            d.state = DeviceState::Failed;
            d.reason = Some(reason);
        });
        self.last_failure = Some((id.clone(), at));
    }

    /// Passes or trips the current step's running stages.
    fn gates(&mut self, ctx: &Ctx<'_>, fx: &mut Vec<Effect>) {
        for i in 0..self.stages.len() {
            if self.stages[i].step != self.rec.step
                || self.rec.stages[i].status != StageStatus::Running
            {
                continue;
            }
            let info = self.stages[i].clone();
            let c = self.counts(Some(i));
            let waived = self.rec.stages[i].waived;
            let failed = c.failed.saturating_sub(waived);
            let resolved = c.succeeded + c.failed;
            // The verification verdict, for a stage that asks for one: `Some(true)` passed
            // (or inconclusive and the plan accepts that), `Some(false)` not yet.
            let check = self
                .plan
                .stages()
                .nth(i)
                .and_then(|(_, s)| s.verification.map(|v| v.inconclusive));
            let report = ctx.verdicts.get(&i).and_then(|r| r.verdict.as_ref());
            let mut pause_anyway = false;
            let verified = matches!(
                (check, report),
                (None, _)
                    | (Some(_), Some(Verdict::Pass))
                    | (Some(Inconclusive::Pass), Some(Verdict::Inconclusive(_)))
            );
            let verdict = if let Some(Verdict::Fail(reasons)) = report {
                let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                Some(format!(
                    "stage {}: verification failed: {}",
                    info.name,
                    why.join("; ")
                ))
            } else if let (Some(Inconclusive::Pause), Some(Verdict::Inconclusive(short))) =
                (check, report)
            {
                pause_anyway = true;
                let why: Vec<String> = short.iter().map(ToString::to_string).collect();
                Some(format!(
                    "stage {}: verification inconclusive: {}",
                    info.name,
                    why.join("; ")
                ))
            } else if failed > info.tolerated {
                let last = self
                    .devices
                    .values()
                    .filter(|d| d.stage == i && d.state == DeviceState::Failed)
                    .find(|d| self.last_failure.as_ref().is_some_and(|(f, _)| *f == d.id))
                    .or_else(|| {
                        self.devices
                            .values()
                            .find(|d| d.stage == i && d.state == DeviceState::Failed)
                    })
                    .map(|d| format!("; {}: {}", d.id, d.reason.as_deref().unwrap_or("failed")))
                    .unwrap_or_default();
                Some(format!(
                    "stage {}: {} of {} devices failed, more than the {} tolerated{last}",
                    info.name, c.failed, info.devices, info.tolerated
                ))
            } else if resolved == info.devices {
                if c.succeeded + waived >= info.required && !verified {
                    // Waiting for the verdict.
                    None
                } else if c.succeeded + waived >= info.required {
                    self.rec.stages[i].status = StageStatus::Passed;
                    self.changed = true;
                    None
                } else {
                    Some(format!(
                        "stage {}: only {} of {} devices committed and soaked, {} required",
                        info.name, c.succeeded, info.devices, info.required
                    ))
                }
            } else {
                None
            };
            if let Some(reason) = verdict {
                self.rec.stages[i].status = StageStatus::Tripped;
                self.changed = true;
                match info.action {
                    _ if pause_anyway => {
                        if self.rec.status == Status::Running {
                            self.rec.status = Status::Paused;
                            self.rec.status_reason = Some(reason.clone());
                            self.event(ctx.now, "rollout.paused", reason, fx);
                        }
                    }
                    FailureAction::Pause => {
                        if self.rec.status == Status::Running {
                            self.rec.status = Status::Paused;
                            self.rec.status_reason = Some(reason.clone());
                            self.event(ctx.now, "rollout.paused", reason, fx);
                        }
                    }
                    FailureAction::AbortAndRollback => {
                        let (by, at) = self
                            .last_failure
                            .clone()
                            .map_or((None, ctx.now), |(d, t)| (Some(d), t));
                        self.abort(ctx, reason, by, at, fx);
                    }
                }
            }
        }
    }

    /// Stops the rollout and starts taking back every device that took the release.
    pub fn abort(
        &mut self,
        ctx: &Ctx<'_>,
        reason: String,
        by: Option<DeviceId>,
        at: Timestamp,
        fx: &mut Vec<Effect>,
    ) {
        self.rec.status = Status::RollingBack;
        self.rec.status_reason = Some(reason.clone());
        self.rec.rollback = Some(RollbackRecord {
            reason: reason.clone(),
            tripped_at: at,
            tripped_by: by,
            finished_at: None,
            duration_ms: None,
        });
        self.tripped = Some(ctx.instant);
        self.changed = true;
        self.event(ctx.now, "rollout.aborted", reason.clone(), fx);
        if self.plan.lock_on_abort() {
            fx.push(Effect::AutoLock {
                reason: format!("rollout {} aborted: {reason}", self.rec.id),
            });
        }
        self.roll_back(ctx, fx);
    }

    /// Takes devices back; ends the rollout when none is left to take back.
    fn roll_back(&mut self, ctx: &Ctx<'_>, fx: &mut Vec<Effect>) {
        let now = ctx.now;
        let ids: Vec<DeviceId> = self.devices.keys().cloned().collect();
        for id in ids {
            let rec = self.devices[&id].clone();
            let timeout = self.stages.get(rec.stage).map_or(0, |s| s.timeout_s);
            let dev = ctx.fleet.get(&id);
            let on_release = dev.and_then(running).as_ref() == Some(&self.rec.release);
            match rec.state {
                DeviceState::Pending => self.set(&id, |d| d.state = DeviceState::NotStarted),
                DeviceState::InFlight => {
                    let busy_before_trial = dev.is_some_and(|d| {
                        matches!(
                            d.inventory.state,
                            Some(UpdateState::Downloading | UpdateState::Verifying)
                        ) || d.inventory.command != rec.command
                    });
                    if rec.rollback.is_none() && rec.command.is_some() && busy_before_trial {
                        fx.push(Effect::Rollback(id.clone(), RollbackKind::Cancel));
                    }
                }
                // A device that failed while on the release (silent past its timeout, or
                // failed in the soak) is taken back like one that succeeded.
                DeviceState::Soaking | DeviceState::Succeeded | DeviceState::Failed => {
                    if on_release {
                        self.set(&id, |d| {
                            d.state = DeviceState::RollingBack;
                            d.rollback = None;
                        });
                        fx.push(Effect::Rollback(id.clone(), RollbackKind::Revert));
                    } else if rec.state != DeviceState::Failed {
                        self.set(&id, |d| d.state = DeviceState::RolledBack);
                    }
                }
                DeviceState::RollingBack => {
                    let Some((kind, cmd, sent)) = rec.rollback.clone() else {
                        // Marked, but the command was never recorded: send it (again).
                        fx.push(Effect::Rollback(id.clone(), RollbackKind::Revert));
                        continue;
                    };
                    let Some(dev) = dev else {
                        self.set(&id, |d| {
                            d.state = DeviceState::RollbackFailed;
                            d.reason = Some("the device was revoked".into());
                        });
                        continue;
                    };
                    // The agent's reports about a revert carry the install's command id (the
                    // job's), so a revert shows as the device settling off the release; only a
                    // refusal echoes the revert's own id.
                    let echoed = dev.inventory.command.as_deref() == Some(cmd.as_str());
                    let settled_now = settled(dev.inventory.state);
                    if settled_now && !on_release {
                        self.set(&id, |d| d.state = DeviceState::RolledBack);
                    } else if settled_now && echoed {
                        if kind == RollbackKind::Revert && rec.previous.is_some() {
                            fx.push(Effect::Rollback(id.clone(), RollbackKind::Reinstall));
                        } else {
                            let why = format!("could not be taken back: {}", describe(dev));
                            self.set(&id, |d| {
                                d.state = DeviceState::RollbackFailed;
                                d.reason = Some(why);
                            });
                        }
                    } else if now >= sent.plus_secs(timeout) {
                        let why = format!(
                            "no report of the previous release within {timeout} s; last: {}",
                            describe(dev)
                        );
                        self.set(&id, |d| {
                            d.state = DeviceState::RollbackFailed;
                            d.reason = Some(why);
                        });
                    }
                }
                _ => {}
            }
        }
        let c = self.counts(None);
        let waiting = self.devices.values().any(|d| {
            matches!(
                d.state,
                DeviceState::InFlight
                    | DeviceState::RollingBack
                    | DeviceState::Soaking
                    | DeviceState::Succeeded
            )
        });
        if !waiting && fx.iter().all(|e| !matches!(e, Effect::Rollback(..))) {
            let failed: Vec<String> = self
                .devices
                .values()
                .filter(|d| d.state == DeviceState::RollbackFailed)
                .map(|d| d.id.to_string())
                .collect();
            let duration = self.tripped.map(|t| {
                u64::try_from(ctx.instant.duration_since(t).as_millis()).unwrap_or(u64::MAX)
            });
            let took_back = c.rolled_back;
            let started = self.devices.values().any(|d| d.started_at.is_some());
            self.rec.status = if started {
                Status::RolledBack
            } else {
                Status::Aborted
            };
            if let Some(rb) = &mut self.rec.rollback {
                rb.finished_at = Some(now);
                rb.duration_ms = duration;
            }
            self.changed = true;
            let took = duration.map_or_else(String::new, |ms| format!(" in {ms} ms"));
            let back = self
                .devices
                .values()
                .filter(|d| {
                    d.started_at.is_some()
                        && matches!(d.state, DeviceState::RolledBack | DeviceState::Failed)
                })
                .count();
            let reason = if failed.is_empty() {
                format!(
                    "{back} device(s) that started are back on their previous release{took} ({took_back} by a rollback command)"
                )
            } else {
                format!(
                    "{back} device(s) that started are back on their previous release{took} ({took_back} by a rollback command); {} could not be taken back: {}",
                    failed.len(),
                    failed.join(", ")
                )
            };
            // With nothing started, the abort's own event said everything.
            if self.rec.status == Status::RolledBack {
                self.event(now, "rollout.rolled_back", reason, fx);
            }
        }
    }

    /// Whether a lock holds the rollout; announces a hold and its end once.
    fn hold(&mut self, ctx: &Ctx<'_>, fx: &mut Vec<Effect>) -> bool {
        let ids: Vec<String> = ctx.holding.iter().map(|h| h.id.clone()).collect();
        if ids != self.rec.held_by {
            if ids.is_empty() {
                let reason = format!("{} no longer held; resuming", self.rec.held_by.join(", "));
                self.event(ctx.now, "rollout.resumed", reason, fx);
                self.replan = true;
            } else {
                let reason = ctx
                    .holding
                    .iter()
                    .map(|h| format!("held by {}: {}", h.id, h.reason))
                    .collect::<Vec<_>>()
                    .join("; ");
                self.event(ctx.now, "rollout.held", reason, fx);
            }
            self.rec.held_by = ids;
            self.changed = true;
        }
        !self.rec.held_by.is_empty()
    }

    /// Begins the current step if it has not begun; moves to the next when every stage of
    /// the current one passed.
    fn advance(&mut self, ctx: &Ctx<'_>, fx: &mut Vec<Effect>) {
        loop {
            if self.rec.step_began.is_none() {
                self.begin_step(ctx, fx);
            }
            let current: Vec<usize> = (0..self.stages.len())
                .filter(|i| self.stages[*i].step == self.rec.step)
                .collect();
            if current
                .iter()
                .any(|i| self.rec.stages[*i].status == StageStatus::Running)
            {
                // Empty stages pass at once.
                self.gates(ctx, fx);
            }
            if !current
                .iter()
                .all(|i| self.rec.stages[*i].status == StageStatus::Passed)
            {
                return;
            }
            let summary = current
                .iter()
                .map(|i| {
                    let c = self.counts(Some(*i));
                    format!(
                        "{} {}/{} succeeded",
                        self.stages[*i].name, c.succeeded, c.devices
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let steps = self.plan.steps().len();
            if self.rec.step + 1 >= steps {
                let c = self.counts(None);
                self.rec.status = Status::Completed;
                self.rec.status_reason = None;
                self.changed = true;
                let reason = format!(
                    "all {steps} step(s) passed; {} of {} devices succeeded, {} failed",
                    c.succeeded, c.devices, c.failed
                );
                self.event(ctx.now, "rollout.completed", reason, fx);
                return;
            }
            self.rec.step += 1;
            self.rec.step_began = None;
            self.rec.ramp_origin = None;
            self.changed = true;
            let next = self
                .stages
                .iter()
                .filter(|s| s.step == self.rec.step)
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let reason = format!(
                "step {} passed ({summary}); step {} begins: {next}",
                self.rec.step,
                self.rec.step + 1
            );
            self.event(ctx.now, "rollout.step_advanced", reason, fx);
        }
    }

    fn begin_step(&mut self, ctx: &Ctx<'_>, fx: &mut Vec<Effect>) {
        self.rec.step_began = Some(ctx.now);
        self.changed = true;
        self.replan = true;
        for i in 0..self.stages.len() {
            if self.stages[i].step != self.rec.step
                || self.rec.stages[i].status != StageStatus::Pending
            {
                continue;
            }
            if self.stages[i].approval && self.rec.stages[i].approval.is_none() {
                self.rec.stages[i].status = StageStatus::AwaitingApproval;
                let reason = format!(
                    "stage {} ({} devices) waits for approval: swellctl rollout approve {} --stage {}",
                    self.stages[i].name, self.stages[i].devices, self.rec.id, self.stages[i].name
                );
                self.event(ctx.now, "rollout.awaiting_approval", reason, fx);
            } else {
                self.rec.stages[i].status = StageStatus::Running;
            }
        }
    }

    /// Has the current step's pending devices planned again from now at the next tick (an
    /// approval came, or an operator resumed).
    pub fn replan(&mut self) {
        self.replan = true;
    }

    /// Plans the current step's pending devices from now, when a step begins, a stage is
    /// approved, a hold ends, or a pending device's window has passed.
    fn replan_if_needed(&mut self, ctx: &Ctx<'_>, fx: &mut Vec<Effect>) {
        let now = ctx.now;
        let step = self.rec.step;
        let running_stage = |i: usize| {
            self.stages[i].step == step && self.rec.stages[i].status == StageStatus::Running
        };
        let pending: Vec<&DeviceRecord> = self
            .devices
            .values()
            .filter(|d| d.state == DeviceState::Pending && running_stage(d.stage))
            .collect();
        let stale = pending
            .iter()
            .any(|d| d.window_end.is_none_or(|end| end <= now));
        if pending.is_empty() || !(self.replan || stale) {
            return;
        }
        let mut assignment = Assignment {
            stages: vec![Vec::new(); self.stages.len()],
            unassigned: Vec::new(),
            not_in_fleet: Vec::new(),
        };
        let mut fleet = Vec::new();
        let mut gone = Vec::new();
        for d in &pending {
            match ctx.fleet.get(&d.id).and_then(fleet_device) {
                Some(f) => {
                    assignment.stages[d.stage].push(d.id.clone());
                    fleet.push(f);
                }
                None => gone.push(d.id.clone()),
            }
        }
        for id in gone {
            self.fail(&id, now, "the device was revoked before it started".into());
        }
        self.replan = false;
        let snapshot = match FleetSnapshot::new(fleet) {
            Ok(s) => s,
            Err(e) => {
                self.pause(now, format!("cannot plan: duplicate device {}", e.0), fx);
                return;
            }
        };
        match planner::schedule_step(&self.plan, &snapshot, &assignment, step, jiff(now)) {
            Ok(schedule) => {
                let mut origin: Option<Timestamp> = None;
                for stage in &schedule.stages {
                    for zone in &stage.zones {
                        let opens = ours(zone.opens);
                        origin = Some(origin.map_or(opens, |o| o.min(opens)));
                        for w in &zone.windows {
                            let start = ours(w.window.start.timestamp()).max(opens);
                            let end = ours(w.window.end.timestamp());
                            for s in &w.starts {
                                let at = ours(s.at);
                                self.set(&s.device, |d| {
                                    d.planned_at = Some(at);
                                    d.not_before = Some(start);
                                    d.window_end = Some(end);
                                });
                            }
                        }
                    }
                }
                if self.rec.ramp_origin.is_none() {
                    self.rec.ramp_origin = origin;
                    self.changed = true;
                }
            }
            Err(e) => self.pause(now, format!("cannot plan step {}: {e}", step + 1), fx),
        }
    }

    /// Pauses the rollout (no new starts) with `reason`.
    pub fn pause(&mut self, now: Timestamp, reason: String, fx: &mut Vec<Effect>) {
        self.rec.status = Status::Paused;
        self.rec.status_reason = Some(reason.clone());
        self.changed = true;
        self.event(now, "rollout.paused", reason, fx);
    }

    /// Starts the devices whose time has come, within the limits, against real state.
    fn start(&mut self, ctx: &Ctx<'_>, fx: &mut Vec<Effect>) {
        let now = ctx.now;
        let step = self.rec.step;
        let limits = self.plan.limits().clone();
        let mut in_flight = 0u32;
        let mut groups: BTreeMap<(String, String), u32> = BTreeMap::new();
        let minute = Timestamp::from_unix(now.unix().div_euclid(60) * 60);
        let mut this_minute = 0u32;
        for d in self.devices.values() {
            if d.started_at.is_some_and(|s| s >= minute) {
                this_minute += 1;
            }
            if d.state != DeviceState::InFlight {
                continue;
            }
            in_flight += 1;
            if let Some(dev) = ctx.fleet.get(&d.id) {
                for (k, v, _) in
                    limits.budget_groups(&fleet_device(dev).map(|f| f.tags).unwrap_or_default())
                {
                    *groups.entry((k.to_owned(), v.to_owned())).or_default() += 1;
                }
            }
        }
        let origin = self.rec.ramp_origin.unwrap_or(now);
        let cap = limits.starts_allowed(jiff(origin), jiff(now));
        let mut due: Vec<(Timestamp, DeviceId)> = self
            .devices
            .values()
            .filter(|d| {
                d.state == DeviceState::Pending
                    && self.stages[d.stage].step == step
                    && self.rec.stages[d.stage].status == StageStatus::Running
                    && d.not_before.is_some_and(|t| t <= now)
                    && d.window_end.is_some_and(|t| now < t)
            })
            .map(|d| (d.planned_at.unwrap_or(now), d.id.clone()))
            .collect();
        due.sort();
        for (_, id) in due {
            if in_flight >= limits.max_in_flight || this_minute >= cap {
                break;
            }
            let Some(dev) = ctx.fleet.get(&id) else {
                continue;
            };
            if !settled(dev.inventory.state) {
                // Something else is updating it; wait for it to finish.
                continue;
            }
            if running(dev).as_ref() == Some(&self.rec.release)
                && dev.inventory.state == Some(UpdateState::Committed)
            {
                // Updated by other means since the rollout was created: nothing to send, and
                // it still has to stay healthy through the soak.
                self.set(&id, |d| {
                    d.state = DeviceState::Soaking;
                    d.committed_at = Some(now);
                    d.reason = Some("already committed on the release".into());
                });
                continue;
            }
            let tags = fleet_device(dev).map(|f| f.tags).unwrap_or_default();
            let budget = limits.budget_groups(&tags);
            if budget.iter().any(|(k, v, n)| {
                groups
                    .get(&((*k).to_owned(), (*v).to_owned()))
                    .is_some_and(|used| used >= n)
            }) {
                continue;
            }
            for (k, v, _) in &budget {
                *groups
                    .entry(((*k).to_owned(), (*v).to_owned()))
                    .or_default() += 1;
            }
            in_flight += 1;
            this_minute += 1;
            let previous = running(dev);
            self.set(&id, |d| {
                d.state = DeviceState::InFlight;
                d.started_at = Some(now);
                d.previous = previous;
                d.command = None;
            });
            fx.push(Effect::Install(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use swell_proto::messages::{Running, Slot};
    use swell_proto::{HardwareId, PublicKey};

    use super::*;
    use crate::service::fleet::{Inventory, Label, Registration, Zone};
    use crate::service::rollouts::record::StageRecord;

    const PLAN: &str = r#"
name = "test"
[window]
start = "00:00"
end = "23:59"
[limits]
max_in_flight = 2
max_starts_per_minute = 10
disruption_budget = { site = 1 }
[defaults]
device_timeout = "30m"
success = { committed = "100%", soak = "10m" }
failure = { tolerate = 0, action = "abort_and_rollback" }
[[step]]
[[step.stage]]
name = "canary"
share = 1
[[step]]
[[step.stage]]
name = "rest"
approval = true
"#;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn release(v: &str) -> ReleaseRef {
        ReleaseRef {
            name: "os".parse().unwrap(),
            version: v.parse().unwrap(),
        }
    }

    fn device(id: &str, site: &str) -> Device {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let mut tags = BTreeMap::new();
        tags.insert(Label::new("site").unwrap(), Label::new(site).unwrap());
        Device {
            registration: Registration {
                id: DeviceId::new(id).unwrap(),
                public_key: PublicKey::from(key.verifying_key()),
                hardware: HardwareId::new("board").unwrap(),
                zone: Zone::new("UTC").unwrap(),
                cohort: None,
                tags,
                provisioned_at: t("2027-01-01T00:00:00Z"),
                provisioned_by: "test".into(),
                revoked: None,
            },
            inventory: Inventory {
                running: Some(Running {
                    release: Some("os".parse().unwrap()),
                    version: Some("1.0.0".parse().unwrap()),
                    slot: Slot::A,
                    security_version: 0,
                }),
                state: Some(UpdateState::Committed),
                last_seen: Some(t("2027-01-01T00:00:00Z")),
                online: true,
                ..Inventory::default()
            },
        }
    }

    /// A device reporting `state` on `version` about `command` at `at`.
    fn report(
        d: &mut Device,
        state: UpdateState,
        version: &str,
        command: Option<&str>,
        at: Timestamp,
    ) {
        if let Some(r) = d.inventory.running.as_mut() {
            r.version = Some(version.parse().unwrap());
        }
        d.inventory.state = Some(state);
        d.inventory.command = command.map(str::to_owned);
        d.inventory.last_seen = Some(at);
    }

    struct World {
        run: Run,
        fleet: HashMap<DeviceId, Device>,
        holding: Vec<Hold>,
        now: Timestamp,
        commands: u64,
    }

    impl World {
        fn new(devices: &[(&str, &str)]) -> World {
            let plan = Plan::from_toml(PLAN).unwrap();
            let fleet: HashMap<DeviceId, Device> = devices
                .iter()
                .map(|(id, site)| (DeviceId::new(id).unwrap(), device(id, site)))
                .collect();
            let snapshot = FleetSnapshot::new(fleet.values().filter_map(fleet_device)).unwrap();
            let assignment = planner::assign(&plan, &snapshot);
            let mut records = BTreeMap::new();
            for (stage, ids) in assignment.stages.iter().enumerate() {
                for id in ids {
                    records.insert(
                        id.clone(),
                        DeviceRecord::pending(id.clone(), stage, "UTC".into()),
                    );
                }
            }
            let rec = RolloutRecord {
                id: "r-1".into(),
                release: release("1.1.0"),
                plan: PLAN.into(),
                created_at: t("2027-01-01T10:00:00Z"),
                created_by: "alice".into(),
                supersedes: None,
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
                    2
                ],
                held_by: Vec::new(),
                rollback: None,
                events: Vec::new(),
            };
            World {
                run: Run::new(1, rec, records, plan),
                fleet,
                holding: Vec::new(),
                now: t("2027-01-01T10:00:00Z"),
                commands: 0,
            }
        }

        /// A tick; installs and rollbacks are "sent" (numbered) as the driver would.
        fn tick(&mut self) -> Vec<Effect> {
            let fx = self.run.tick(&Ctx {
                now: self.now,
                instant: Instant::now(),
                fleet: &self.fleet,
                holding: &self.holding,
                verdicts: &BTreeMap::new(),
            });
            for e in &fx {
                match e {
                    Effect::Install(id) => {
                        self.commands += 1;
                        let cmd = format!("{id}.{}", self.commands);
                        self.run.set(id, |d| d.command = Some(cmd));
                    }
                    Effect::Rollback(id, kind) => {
                        self.commands += 1;
                        let cmd = format!("{id}.{}", self.commands);
                        let now = self.now;
                        let kind = *kind;
                        self.run.set(id, |d| {
                            d.rollback = Some((kind, cmd, now));
                            if kind != RollbackKind::Cancel {
                                d.state = DeviceState::RollingBack;
                            }
                        });
                    }
                    _ => {}
                }
            }
            fx
        }

        fn advance(&mut self, secs: i64) {
            self.now = self.now.plus_secs(secs);
        }

        fn command(&self, id: &str) -> String {
            self.run.devices[&DeviceId::new(id).unwrap()]
                .command
                .clone()
                .unwrap()
        }

        fn state(&self, id: &str) -> DeviceState {
            self.run.devices[&DeviceId::new(id).unwrap()].state
        }

        fn dev(&mut self, id: &str) -> &mut Device {
            self.fleet.get_mut(&DeviceId::new(id).unwrap()).unwrap()
        }

        fn commit(&mut self, id: &str) {
            let cmd = self.command(id);
            let now = self.now;
            report(
                self.dev(id),
                UpdateState::Committed,
                "1.1.0",
                Some(&cmd),
                now,
            );
        }
    }

    fn installs(fx: &[Effect]) -> Vec<String> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Install(id) => Some(id.to_string()),
                _ => None,
            })
            .collect()
    }

    fn kinds(fx: &[Effect]) -> Vec<&'static str> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Event { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect()
    }

    /// The canary starts alone; success needs the Committed report *and* the soak; the next
    /// step waits for approval, then starts within the in-flight and site budgets.
    #[test]
    fn canary_soak_approval_and_limits() {
        let mut w = World::new(&[("d1", "s1"), ("d2", "s1"), ("d3", "s2"), ("d4", "s3")]);
        let fx = w.tick();
        let canary = installs(&fx);
        assert_eq!(canary.len(), 1, "{fx:?}");
        let c = canary[0].clone();
        // Installing and even "installed" is not success.
        let cmd = w.command(&c);
        let now = w.now;
        report(w.dev(&c), UpdateState::Installed, "1.0.0", Some(&cmd), now);
        w.advance(60);
        assert!(installs(&w.tick()).is_empty());
        assert_eq!(w.state(&c), DeviceState::InFlight);
        w.commit(&c);
        w.tick();
        assert_eq!(w.state(&c), DeviceState::Soaking);
        // The soak ends only with a report after it.
        w.advance(600);
        w.tick();
        assert_eq!(w.state(&c), DeviceState::Soaking);
        let now = w.now;
        w.dev(&c).inventory.last_seen = Some(now);
        let fx = w.tick();
        assert_eq!(w.state(&c), DeviceState::Succeeded);
        assert_eq!(
            kinds(&fx),
            ["rollout.step_advanced", "rollout.awaiting_approval"]
        );
        assert!(installs(&fx).is_empty());
        assert_eq!(super::super::view::status(&w.run), "awaiting_approval");

        w.run.rec.stages[1].status = StageStatus::Running;
        w.run.replan();
        let fx = w.tick();
        let started = installs(&fx);
        // max_in_flight = 2, and d1/d2 share site s1: never both at once.
        assert_eq!(started.len(), 2, "{fx:?}");
        assert!(!(started.contains(&"d1".to_owned()) && started.contains(&"d2".to_owned())));
    }

    /// Zero tolerance: one revert aborts, and every device on the release is reverted; the
    /// rollback ends when they report their previous release.
    #[test]
    fn a_failure_aborts_and_takes_back_what_committed() {
        let mut w = World::new(&[("d1", "s1"), ("d2", "s2"), ("d3", "s3")]);
        w.run.plan = Plan::from_toml(&PLAN.replace("approval = true", "")).unwrap();
        w.run.stages = stage_infos(&w.run.plan, &[1, 2]);
        let c = installs(&w.tick())[0].clone();
        w.commit(&c);
        w.advance(600);
        w.tick();
        let now = w.now;
        w.dev(&c).inventory.last_seen = Some(now);
        let fx = w.tick();
        let wave = installs(&fx);
        assert_eq!(wave.len(), 2);
        // One wave device commits, the other rolls itself back.
        w.commit(&wave[0]);
        let cmd = w.command(&wave[1]);
        let now = w.now;
        report(
            w.dev(&wave[1]),
            UpdateState::RolledBack,
            "1.0.0",
            Some(&cmd),
            now,
        );
        let fx = w.tick();
        assert!(kinds(&fx).contains(&"rollout.aborted"), "{fx:?}");
        let reverts: Vec<String> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Rollback(id, RollbackKind::Revert) => Some(id.to_string()),
                _ => None,
            })
            .collect();
        let mut expected = vec![c.clone(), wave[0].clone()];
        expected.sort();
        assert_eq!(reverts, expected);
        assert_eq!(w.run.rec.status, Status::RollingBack);
        let rb = w.run.rec.rollback.clone().unwrap();
        assert_eq!(rb.tripped_by.unwrap().to_string(), wave[1]);
        // Both report their previous release.
        for id in &expected {
            let cmd = w.run.devices[&DeviceId::new(id).unwrap()]
                .rollback
                .clone()
                .unwrap()
                .1;
            let now = w.now;
            report(w.dev(id), UpdateState::RolledBack, "1.0.0", Some(&cmd), now);
        }
        let fx = w.tick();
        assert_eq!(w.run.rec.status, Status::RolledBack, "{fx:?}");
        assert!(w.run.rec.rollback.as_ref().unwrap().duration_ms.is_some());
        assert_eq!(w.state(&c), DeviceState::RolledBack);
        assert_eq!(w.state(&wave[1]), DeviceState::Failed);
    }

    /// A device that never reports Committed fails at its timeout.
    #[test]
    fn silence_past_the_timeout_fails() {
        let mut w = World::new(&[("d1", "s1"), ("d2", "s2")]);
        let c = installs(&w.tick())[0].clone();
        w.advance(30 * 60 - 1);
        w.tick();
        assert_eq!(w.state(&c), DeviceState::InFlight);
        w.advance(1);
        let fx = w.tick();
        assert_eq!(w.state(&c), DeviceState::Failed);
        assert!(kinds(&fx).contains(&"rollout.aborted"));
    }

    /// A lock stops new starts and is announced once; its release resumes.
    #[test]
    fn a_lock_holds_new_starts() {
        let mut w = World::new(&[("d1", "s1"), ("d2", "s2")]);
        w.holding = vec![Hold {
            id: "lock-1".into(),
            reason: "freeze".into(),
        }];
        let fx = w.tick();
        assert_eq!(kinds(&fx), ["rollout.held"]);
        assert!(installs(&fx).is_empty());
        w.advance(60);
        let fx = w.tick();
        assert!(fx.is_empty(), "{fx:?}");
        assert_eq!(super::super::view::status(&w.run), "held");
        w.holding.clear();
        let fx = w.tick();
        assert!(kinds(&fx).contains(&"rollout.resumed"));
        assert_eq!(installs(&fx).len(), 1);
    }

    /// After a restart: a device marked in flight whose command was never recorded starts
    /// again; one whose command was recorded but not acknowledged is published again, once.
    #[test]
    fn restart_resends_nothing_twice() {
        let mut w = World::new(&[("d1", "s1"), ("d2", "s2")]);
        let c = installs(&w.tick())[0].clone();
        let id = DeviceId::new(&c).unwrap();
        // As if the process died before the command was stored.
        w.run.set(&id, |d| d.command = None);
        let fx = w.tick();
        assert_eq!(installs(&fx), std::slice::from_ref(&c));
        // Recorded but unacknowledged: one republish, then none.
        let cmd = w.command(&c);
        w.run
            .set(&id, |d| d.unacked = Some((cmd.clone(), "{}".into())));
        let fx = w.tick();
        assert_eq!(fx, [Effect::Republish(id.clone())]);
        assert!(w.tick().is_empty());
        // The report acknowledges it.
        let now = w.now;
        report(
            w.dev(&c),
            UpdateState::Downloading,
            "1.0.0",
            Some(&cmd),
            now,
        );
        w.tick();
        assert!(w.run.devices[&id].unacked.is_none());
    }

    /// A command published to a device that then connects anew before acknowledging it (a
    /// broker restarted without persistence lost its session) is published again, once per
    /// new connection; a device that stays connected is not sent it twice.
    #[test]
    fn reconnect_before_acknowledging_resends() {
        let mut w = World::new(&[("d1", "s1")]);
        let c = installs(&w.tick())[0].clone();
        let id = DeviceId::new(&c).unwrap();
        let cmd = w.command(&c);
        w.dev(&c).inventory.online_seq = 7;
        w.run
            .set(&id, |d| d.unacked = Some((cmd.clone(), "{}".into())));
        w.run.published(&cmd, 7);
        assert!(w.tick().is_empty(), "the same connection: not again");
        w.dev(&c).inventory.online_seq = 9;
        assert_eq!(w.tick(), [Effect::Republish(id.clone())]);
        assert!(w.tick().is_empty(), "once per connection");
        w.dev(&c).inventory.online_seq = 12;
        assert_eq!(w.tick(), [Effect::Republish(id.clone())]);
        let now = w.now;
        report(
            w.dev(&c),
            UpdateState::Downloading,
            "1.0.0",
            Some(&cmd),
            now,
        );
        w.tick();
        w.dev(&c).inventory.online_seq = 15;
        assert!(w.tick().is_empty(), "acknowledged: never again");
    }
}
