//! The dry run: a schedule as tables for people and as JSON for scripts. The JSON structs are
//! serde types at the edge; the planner's own types do not derive serde.
//!
//! `swellctl rollout create --dry-run` prints [`table`] (and [`starts_table`] with a flag for
//! one line per device), or `serde_json` of [`report`] with `--output json`.

use std::fmt::Write as _;

use jiff::tz::Offset;
use jiff::{SignedDuration, Timestamp, Zoned};
use serde::Serialize;

use super::plan::{Plan, ZoneOrder};
use super::schedule::{Schedule, StageSchedule, StepSchedule, WindowSchedule, ZoneSchedule};
use super::window::{WindowOccurrence, weekday_name};

/// Columns padded to the widest cell, two spaces apart, trailing spaces trimmed.
fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `45m`, `1h30m`, `0s`.
pub fn span(d: SignedDuration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n != 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    out
}

/// A UTC offset as `+05:45`, `+01:00`, `-04:00` (always with minutes, unlike jiff's own
/// `+01`).
pub fn offset(o: Offset) -> String {
    let secs = o.seconds();
    let sign = if secs < 0 { '-' } else { '+' };
    let secs = secs.unsigned_abs();
    format!("{sign}{:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

fn utc(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.fZ").to_string()
}

fn local(z: &Zoned) -> String {
    z.strftime("%F %H:%M %:z").to_string()
}

fn utc_minute(t: Timestamp) -> String {
    t.strftime("%F %H:%MZ").to_string()
}

/// A start relative to the UTC date its window opened on: the time alone on that date, the
/// full date otherwise.
fn start_in(t: Timestamp, window: &WindowOccurrence) -> String {
    let day = |t: Timestamp| t.strftime("%F").to_string();
    if day(t) == day(window.start.timestamp()) {
        t.strftime("%H:%M:%S%.fZ").to_string()
    } else {
        t.strftime("%F %H:%M:%S%.fZ").to_string()
    }
}

fn dst(w: &WindowOccurrence) -> String {
    if w.notes.is_empty() {
        "-".into()
    } else {
        w.notes
            .iter()
            .map(|n| n.describe())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn failure(stage: &StageSchedule) -> String {
    format!(
        "> {} failed: {}",
        stage.failures_tolerated,
        stage.failure_action.name()
    )
}

fn zone_order(plan: &Plan) -> String {
    match plan.zone_order() {
        ZoneOrder::EastToWest => "east to west".into(),
        ZoneOrder::Explicit(zones) => {
            let names: Vec<&str> = zones.iter().map(|z| z.name()).collect();
            format!("{}, then the rest east to west", names.join(", "))
        }
    }
}

fn limits(plan: &Plan) -> String {
    let l = plan.limits();
    let mut s = format!(
        "{} in flight, {} starts/min",
        l.max_in_flight, l.max_starts_per_minute
    );
    if let Some(r) = l.ramp {
        let _ = write!(
            s,
            " (ramp from {}/min, x{} every {})",
            r.initial_per_minute,
            r.factor,
            span(r.every)
        );
    }
    for (k, n) in &l.disruption_budget {
        let _ = write!(s, ", at most {n} per {k}");
    }
    s
}

/// The dry-run table: a summary, one row per stage with its gates, then one row per step ×
/// stage × zone × window with the devices, the window in local time and UTC, and the first
/// and last start.
pub fn table(plan: &Plan, schedule: &Schedule) -> String {
    let mut out = String::new();
    if let Some(name) = plan.name() {
        let _ = writeln!(out, "plan       {name}");
    }
    let _ = writeln!(out, "planned at {}", utc(schedule.now));
    let _ = writeln!(
        out,
        "devices    {} in {} steps",
        schedule.device_count(),
        schedule.steps.len()
    );
    let _ = writeln!(out, "window     {} device-local", plan.window());
    let _ = writeln!(out, "zones      {}", zone_order(plan));
    let _ = writeln!(out, "limits     {}", limits(plan));
    if !schedule.assignment.unassigned.is_empty() {
        let ids: Vec<&str> = schedule
            .assignment
            .unassigned
            .iter()
            .map(|d| d.as_str())
            .collect();
        let _ = writeln!(
            out,
            "unassigned {} selected devices no stage takes: {}",
            ids.len(),
            ids.join(", ")
        );
    }

    if !schedule.assignment.not_in_fleet.is_empty() {
        let ids: Vec<&str> = schedule
            .assignment
            .not_in_fleet
            .iter()
            .map(|d| d.as_str())
            .collect();
        let _ = writeln!(
            out,
            "not found  listed devices not in the fleet: {}",
            ids.join(", ")
        );
    }

    out.push('\n');
    let mut stages = vec![
        [
            "STEP",
            "STAGE",
            "DEVICES",
            "APPROVAL",
            "SUCCESS",
            "FAILURE",
            "TIMEOUT",
            "NOT BEFORE",
            "ESTIMATED END",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for step in &schedule.steps {
        for stage in &step.stages {
            stages.push(vec![
                (step.index + 1).to_string(),
                stage.name.clone(),
                stage.devices.to_string(),
                if stage.approval { "required" } else { "-" }.into(),
                format!(
                    "{} committed + {} soak",
                    stage.success_required,
                    span(stage.soak)
                ),
                failure(stage),
                span(stage.device_timeout),
                utc(step.not_before),
                utc(stage.estimated_end),
            ]);
        }
    }
    out.push_str(&columns(&stages));

    out.push('\n');
    let mut rows = vec![
        [
            "STEP",
            "STAGE",
            "ZONE",
            "DEVICES",
            "LOCAL START",
            "LOCAL END",
            "UTC START",
            "UTC END",
            "FIRST START",
            "LAST START",
            "DST",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for step in &schedule.steps {
        for stage in &step.stages {
            if stage.zones.is_empty() {
                rows.push(vec![
                    (step.index + 1).to_string(),
                    stage.name.clone(),
                    "(no devices)".into(),
                ]);
            }
            for zone in &stage.zones {
                for w in &zone.windows {
                    let (first, last) = match (w.starts.first(), w.starts.last()) {
                        (Some(f), Some(l)) => {
                            (start_in(f.at, &w.window), start_in(l.at, &w.window))
                        }
                        _ => ("-".into(), "-".into()),
                    };
                    rows.push(vec![
                        (step.index + 1).to_string(),
                        stage.name.clone(),
                        zone.zone.name().to_owned(),
                        w.starts.len().to_string(),
                        local(&w.window.start),
                        local(&w.window.end),
                        utc_minute(w.window.start.timestamp()),
                        utc_minute(w.window.end.timestamp()),
                        first,
                        last,
                        dst(&w.window),
                    ]);
                }
            }
        }
    }
    out.push_str(&columns(&rows));
    out
}

/// One line per device, in start order: when (UTC and local), step, stage, zone, device.
pub fn starts_table(schedule: &Schedule) -> String {
    let mut rows = vec![
        ["START (UTC)", "LOCAL", "STEP", "STAGE", "ZONE", "DEVICE"]
            .map(String::from)
            .to_vec(),
    ];
    for s in schedule.starts() {
        let here = s.start.at.to_zoned(s.zone.zone.tz().clone());
        rows.push(vec![
            utc(s.start.at),
            here.strftime("%F %H:%M:%S%.f %:z").to_string(),
            (s.step + 1).to_string(),
            s.stage.name.clone(),
            s.zone.zone.name().to_owned(),
            s.start.device.to_string(),
        ]);
    }
    columns(&rows)
}

/// `--output json` of a dry run.
#[derive(Debug, Serialize)]
pub struct ScheduleReport {
    /// The plan's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When it was planned (RFC 3339 UTC).
    pub planned_at: String,
    /// Devices the stages take.
    pub devices: usize,
    /// Devices selected that no stage takes.
    pub unassigned: Vec<String>,
    /// Devices a selector lists that the fleet does not have.
    pub not_in_fleet: Vec<String>,
    /// The window as written.
    pub window: WindowReport,
    /// `east_to_west` or the zone names.
    pub zone_order: serde_json::Value,
    /// The rollout-wide limits.
    pub limits: LimitsReport,
    /// The steps.
    pub steps: Vec<StepReport>,
}

/// The window as written.
#[derive(Debug, Serialize)]
pub struct WindowReport {
    /// `HH:MM`.
    pub start: String,
    /// `HH:MM`.
    pub end: String,
    /// `mon` .. `sun`.
    pub days: Vec<&'static str>,
}

/// The rollout-wide limits, for the executor and for scripts.
#[derive(Debug, Serialize)]
pub struct LimitsReport {
    /// Most devices in flight.
    pub max_in_flight: u32,
    /// Most starts per UTC minute.
    pub max_starts_per_minute: u32,
    /// The ramp, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampReport>,
    /// Tag key → most devices per value in flight.
    pub disruption_budget: std::collections::BTreeMap<String, u32>,
}

/// The ramp.
#[derive(Debug, Serialize)]
pub struct RampReport {
    /// Starts per minute at first.
    pub initial_per_minute: u32,
    /// Growth factor.
    pub factor: u32,
    /// Seconds between growths.
    pub every_s: i64,
}

/// One step.
#[derive(Debug, Serialize)]
pub struct StepReport {
    /// From 1.
    pub step: usize,
    /// RFC 3339 UTC.
    pub not_before: String,
    /// RFC 3339 UTC.
    pub estimated_end: String,
    /// Its stages.
    pub stages: Vec<StageReport>,
}

/// One stage.
#[derive(Debug, Serialize)]
pub struct StageReport {
    /// The name.
    pub name: String,
    /// Whether it waits for approval.
    pub approval: bool,
    /// How many devices.
    pub devices: usize,
    /// Devices that must commit and soak.
    pub success_required: usize,
    /// Soak, seconds.
    pub soak_s: i64,
    /// Failures tolerated.
    pub failures_tolerated: usize,
    /// `pause` or `abort_and_rollback`.
    pub failure_action: &'static str,
    /// Device timeout, seconds.
    pub device_timeout_s: i64,
    /// RFC 3339 UTC.
    pub estimated_end: String,
    /// Its zones.
    pub zones: Vec<ZoneReport>,
}

/// One zone of a stage.
#[derive(Debug, Serialize)]
pub struct ZoneReport {
    /// IANA name.
    pub zone: String,
    /// `+05:45` at the step's start.
    pub utc_offset: String,
    /// No start before this (RFC 3339 UTC).
    pub opens: String,
    /// The windows used.
    pub windows: Vec<WindowOccurrenceReport>,
}

/// One window occurrence and its starts.
#[derive(Debug, Serialize)]
pub struct WindowOccurrenceReport {
    /// The local date it belongs to.
    pub local_date: String,
    /// RFC 3339 with the local offset.
    pub start_local: String,
    /// RFC 3339 with the local offset.
    pub end_local: String,
    /// RFC 3339 UTC.
    pub start_utc: String,
    /// RFC 3339 UTC.
    pub end_utc: String,
    /// DST notes (`start_in_gap`, ...).
    pub dst: Vec<&'static str>,
    /// The starts.
    pub starts: Vec<StartReport>,
}

/// One device start.
#[derive(Debug, Serialize)]
pub struct StartReport {
    /// The device id.
    pub device: String,
    /// RFC 3339 UTC.
    pub at: String,
    /// RFC 3339 UTC.
    pub in_flight_until: String,
}

fn rfc3339_local(z: &Zoned) -> String {
    z.strftime("%Y-%m-%dT%H:%M:%S%.f%:z").to_string()
}

fn window_report(w: &WindowSchedule) -> WindowOccurrenceReport {
    WindowOccurrenceReport {
        local_date: w.window.local_date.to_string(),
        start_local: rfc3339_local(&w.window.start),
        end_local: rfc3339_local(&w.window.end),
        start_utc: utc(w.window.start.timestamp()),
        end_utc: utc(w.window.end.timestamp()),
        dst: w.window.notes.iter().map(|n| n.name()).collect(),
        starts: w
            .starts
            .iter()
            .map(|s| StartReport {
                device: s.device.to_string(),
                at: utc(s.at),
                in_flight_until: utc(s.in_flight_until),
            })
            .collect(),
    }
}

fn zone_report(z: &ZoneSchedule) -> ZoneReport {
    ZoneReport {
        zone: z.zone.name().to_owned(),
        utc_offset: offset(z.utc_offset),
        opens: utc(z.opens),
        windows: z.windows.iter().map(window_report).collect(),
    }
}

fn step_report(step: &StepSchedule) -> StepReport {
    StepReport {
        step: step.index + 1,
        not_before: utc(step.not_before),
        estimated_end: utc(step.estimated_end),
        stages: step
            .stages
            .iter()
            .map(|s| StageReport {
                name: s.name.clone(),
                approval: s.approval,
                devices: s.devices,
                success_required: s.success_required,
                soak_s: s.soak.as_secs(),
                failures_tolerated: s.failures_tolerated,
                failure_action: s.failure_action.name(),
                device_timeout_s: s.device_timeout.as_secs(),
                estimated_end: utc(s.estimated_end),
                zones: s.zones.iter().map(zone_report).collect(),
            })
            .collect(),
    }
}

/// The JSON form of a dry run.
pub fn report(plan: &Plan, schedule: &Schedule) -> ScheduleReport {
    let l = plan.limits();
    ScheduleReport {
        name: plan.name().map(str::to_owned),
        planned_at: utc(schedule.now),
        devices: schedule.device_count(),
        unassigned: schedule
            .assignment
            .unassigned
            .iter()
            .map(ToString::to_string)
            .collect(),
        not_in_fleet: schedule
            .assignment
            .not_in_fleet
            .iter()
            .map(ToString::to_string)
            .collect(),
        window: WindowReport {
            start: plan.window().start().strftime("%H:%M").to_string(),
            end: plan.window().end().strftime("%H:%M").to_string(),
            days: plan.window().days().map(weekday_name).collect(),
        },
        zone_order: match plan.zone_order() {
            ZoneOrder::EastToWest => serde_json::Value::from("east_to_west"),
            ZoneOrder::Explicit(zones) => zones.iter().map(|z| z.name()).collect(),
        },
        limits: LimitsReport {
            max_in_flight: l.max_in_flight,
            max_starts_per_minute: l.max_starts_per_minute,
            ramp: l.ramp.map(|r| RampReport {
                initial_per_minute: r.initial_per_minute,
                factor: r.factor,
                every_s: r.every.as_secs(),
            }),
            disruption_budget: l.disruption_budget.clone(),
        },
        steps: schedule.steps.iter().map(step_report).collect(),
    }
}

/// [`report`] as pretty-printed JSON with a final newline.
pub fn json(plan: &Plan, schedule: &Schedule) -> String {
    // Serializing plain strings and numbers cannot fail; an empty object would hide it if it
    // ever did, so say so instead.
    let mut s = serde_json::to_string_pretty(&report(plan, schedule))
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot encode the schedule: {e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_plans() {
        assert_eq!(span(SignedDuration::from_mins(90)), "1h30m");
        assert_eq!(span(SignedDuration::from_secs(45)), "45s");
        assert_eq!(span(SignedDuration::ZERO), "0s");
    }
}
