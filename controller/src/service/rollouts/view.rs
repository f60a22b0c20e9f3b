//! The API's JSON for a rollout: the summary `rollout list` shows and the whole of
//! `rollout show` (the shapes are in docs/rollouts.md, "Watching a rollout").

use serde_json::{Value, json};
use swell_proto::Timestamp;

use super::engine::{Counts, Run};
use super::record::{DeviceState, StageStatus, Status};

/// The counts as JSON.
pub fn counts(c: Counts) -> Value {
    json!({
        "devices": c.devices,
        "pending": c.pending,
        "in_flight": c.in_flight,
        "soaking": c.soaking,
        "succeeded": c.succeeded,
        "failed": c.failed,
        "rolling_back": c.rolling_back,
        "rolled_back": c.rolled_back,
    })
}

/// The status as shown: `held` and `awaiting_approval` are `running` rollouts that a lock
/// holds or whose current step waits for an approval.
pub fn status(run: &Run) -> &'static str {
    if run.rec.status != Status::Running {
        return run.rec.status.name();
    }
    if !run.rec.held_by.is_empty() {
        return "held";
    }
    let waiting = run.stages.iter().enumerate().any(|(i, s)| {
        s.step == run.rec.step && run.rec.stages[i].status == StageStatus::AwaitingApproval
    });
    if waiting {
        "awaiting_approval"
    } else {
        "running"
    }
}

/// `rollout list`'s entry.
pub fn summary(run: &Run) -> Value {
    json!({
        "id": run.rec.id,
        "name": run.plan.name(),
        "release": run.rec.release,
        "status": status(run),
        "status_reason": run.rec.status_reason,
        "created_at": run.rec.created_at,
        "created_by": run.rec.created_by,
        "step": run.rec.step + 1,
        "steps": run.plan.steps().len(),
        "counts": counts(run.counts(None)),
    })
}

/// `rollout show`, as of the controller's `now` (shown, so that a watcher can place the
/// events on the controller's clock).
pub fn full(run: &Run, now: Timestamp, reasons: &dyn Fn(&str) -> Option<String>) -> Value {
    let mut v = summary(run);
    let stages: Vec<Value> = run
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut zones: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
            for d in run.devices.values().filter(|d| d.stage == i) {
                zones.entry(d.zone.as_str()).or_default().push(d);
            }
            let zones: Vec<Value> = zones
                .into_iter()
                .map(|(z, ds)| json!({"zone": z, "counts": counts(Counts::of(ds.into_iter()))}))
                .collect();
            json!({
                "step": s.step + 1,
                "name": s.name,
                "status": run.rec.stages[i].status.name(),
                "approval_required": s.approval,
                "approval": run.rec.stages[i].approval,
                "devices": s.devices,
                "success_required": s.required,
                "failures_tolerated": s.tolerated,
                "failures_waived": run.rec.stages[i].waived,
                "failure_action": s.action.name(),
                "soak_s": s.soak_s,
                "device_timeout_s": s.timeout_s,
                "counts": counts(run.counts(Some(i))),
                "verification": run.verification.get(&i).cloned().unwrap_or(Value::Null),
                "zones": zones,
            })
        })
        .collect();
    let rollback = run.rec.rollback.as_ref().map(|rb| {
        let failed: Vec<Value> = run
            .devices
            .values()
            .filter(|d| d.state == DeviceState::RollbackFailed)
            .map(|d| json!({"device": d.id, "reason": d.reason}))
            .collect();
        // Every device that started is part of the rollback: those it commanded back and
        // those that had gone back (or never switched) by themselves.
        let started = run.devices.values().filter(|d| d.started_at.is_some());
        let touched = started.clone().count();
        let done = started
            .filter(|d| matches!(d.state, DeviceState::RolledBack | DeviceState::Failed))
            .count();
        json!({
            "reason": rb.reason,
            "tripped_at": rb.tripped_at,
            "tripped_by": rb.tripped_by,
            "devices": touched,
            "done": done,
            "finished_at": rb.finished_at,
            "duration_ms": rb.duration_ms,
            "failed": failed,
        })
    });
    let devices: Vec<Value> = run
        .devices
        .values()
        .map(|d| {
            let stage = &run.stages[d.stage];
            json!({
                "id": d.id,
                "step": stage.step + 1,
                "stage": stage.name,
                "zone": d.zone,
                "state": d.state.name(),
                "planned_at": d.planned_at,
                "started_at": d.started_at,
                "committed_at": d.committed_at,
                "command": d.command,
                "reason": d.reason,
                "previous": d.previous,
            })
        })
        .collect();
    let held_by: Vec<Value> = run
        .rec
        .held_by
        .iter()
        .map(|id| json!({"id": id, "reason": reasons(id)}))
        .collect();
    if let Some(o) = v.as_object_mut() {
        o.insert("now".into(), json!(now));
        o.insert("supersedes".into(), json!(run.rec.supersedes));
        o.insert("superseded_by".into(), json!(run.rec.superseded_by));
        o.insert("plan".into(), json!(run.rec.plan));
        o.insert("held_by".into(), Value::Array(held_by));
        o.insert("stages".into(), Value::Array(stages));
        o.insert("rollback".into(), rollback.unwrap_or(Value::Null));
        o.insert("events".into(), json!(run.rec.events));
        o.insert("devices".into(), Value::Array(devices));
    }
    v
}
