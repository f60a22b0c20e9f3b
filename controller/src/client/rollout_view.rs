//! How swellctl shows rollouts: the `rollout list` and `rollout show` tables and the
//! `rollout watch` screen and log lines. Every function here is pure: the controller's JSON
//! (and, for watch, the instant to stamp) in, lines out, so each form is tested over sample
//! JSON without a controller.
//!
//! The JSON is the API's (`SUMMARY`, `ROLLOUT`, `COUNTS` in the rollouts spec). A field that is
//! missing or of another type shows as `-` or 0 rather than failing: a newer controller may add
//! or move fields, and the watch screen must keep drawing.

use serde_json::Value;
use swell_proto::Timestamp;

use super::view::{cell, columns};

/// Width of a progress bar, between its brackets.
pub const BAR_WIDTH: u64 = 10;

/// Events `rollout show` prints (the newest).
pub const SHOW_EVENTS: usize = 20;

/// Events the watch screen prints (the newest).
pub const SCREEN_EVENTS: usize = 5;

/// Statuses in which a rollout waits for something outside it: an operator, a lock.
pub const WAITING: [&str; 3] = ["paused", "held", "awaiting_approval"];

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).map_or_else(|| "-".to_owned(), cell)
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn present(v: &Value, key: &str) -> Option<String> {
    match v.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(x) => Some(cell(x)),
    }
}

/// `name version` of a `{"name", "version"}` object.
fn release(v: &Value) -> String {
    match v {
        Value::Object(_) => format!("{} {}", text(v, "name"), text(v, "version")),
        other => cell(other),
    }
}

/// A progress bar: `[####......]`, `#` for the share of `done` in `total` (rounded down, so
/// a full bar means all done). An empty population shows an empty bar.
pub fn bar(done: u64, total: u64) -> String {
    // An empty population shows an empty bar.
    let filled = (done.min(total) * BAR_WIDTH)
        .checked_div(total)
        .unwrap_or(0);
    let filled = usize::try_from(filled).unwrap_or(0);
    let width = usize::try_from(BAR_WIDTH).unwrap_or(10);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// A duration for people: `850ms`, `1.8s`, `2m05s`, `1h02m`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{}s", ms / 1_000, ms % 1_000 / 100),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1_000),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A duration given in seconds, as plans write them: `45m`, `2h`, `1h30m`, `90s`.
pub fn duration_s(s: u64) -> String {
    let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

/// `HH:MM:SSZ` of an RFC 3339 UTC time (the whole text if it is not one).
fn clock(at: &str) -> String {
    match at.get(11..) {
        Some(t) if at.len() == 20 && at.ends_with('Z') => t.to_owned(),
        _ => at.to_owned(),
    }
}

/// COUNTS as one phrase: `20 devices: 4 succeeded, 1 failed, 3 in flight, ...` (buckets at
/// zero left out).
pub fn counts_phrase(c: &Value) -> String {
    let buckets = [
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("in_flight", "in flight"),
        ("soaking", "soaking"),
        ("pending", "pending"),
        ("rolling_back", "rolling back"),
        ("rolled_back", "rolled back"),
    ];
    let parts: Vec<String> = buckets
        .iter()
        .filter(|(k, _)| num(c, k) > 0)
        .map(|(k, label)| format!("{} {label}", num(c, k)))
        .collect();
    let devices = num(c, "devices");
    let noun = if devices == 1 { "device" } else { "devices" };
    if parts.is_empty() {
        format!("{devices} {noun}")
    } else {
        format!("{devices} {noun}: {}", parts.join(", "))
    }
}

/// The newest `n` events, oldest first (sorted by time, stably, whatever order they came in).
fn last_events(rollout: &Value, n: usize) -> Vec<&Value> {
    let mut events: Vec<&Value> = list(rollout, "events").iter().collect();
    events.sort_by_key(|e| text(e, "at"));
    let skip = events.len().saturating_sub(n);
    events.split_off(skip)
}

/// `rollout list`: one row per SUMMARY.
pub fn list_lines(json: &Value) -> Vec<String> {
    let rows: Vec<Vec<String>> = list(json, "rollouts")
        .iter()
        .map(|r| {
            let c = r.get("counts").unwrap_or(&Value::Null);
            vec![
                text(r, "id"),
                text(r, "name"),
                release(r.get("release").unwrap_or(&Value::Null)),
                text(r, "status"),
                format!("{}/{}", num(r, "step"), num(r, "steps")),
                num(c, "devices").to_string(),
                num(c, "succeeded").to_string(),
                num(c, "failed").to_string(),
                num(c, "in_flight").to_string(),
                text(r, "created_at"),
                text(r, "created_by"),
            ]
        })
        .collect();
    columns(
        &[
            "ID",
            "NAME",
            "RELEASE",
            "STATUS",
            "STEP",
            "DEVICES",
            "SUCCEEDED",
            "FAILED",
            "IN-FLIGHT",
            "CREATED",
            "BY",
        ],
        &rows,
        "no rollouts",
    )
}

/// The rollout's header: id and name, release, status and reason, step, held-by locks,
/// supersession, counts.
fn header(r: &Value) -> Vec<(String, String)> {
    let mut rows = vec![
        ("rollout".to_owned(), {
            let mut s = text(r, "id");
            if let Some(name) = present(r, "name") {
                s.push_str(&format!("  {name}"));
            }
            s
        }),
        (
            "release".to_owned(),
            release(r.get("release").unwrap_or(&Value::Null)),
        ),
        ("status".to_owned(), text(r, "status")),
    ];
    if let Some(reason) = present(r, "status_reason") {
        rows.push(("reason".to_owned(), reason));
    }
    rows.push((
        "step".to_owned(),
        format!("{} of {}", num(r, "step"), num(r, "steps")),
    ));
    for (i, lock) in list(r, "held_by").iter().enumerate() {
        let label = if i == 0 { "held by" } else { "" };
        rows.push((
            label.to_owned(),
            format!("{}: {}", text(lock, "id"), text(lock, "reason")),
        ));
    }
    if let Some(s) = present(r, "supersedes") {
        rows.push(("supersedes".to_owned(), s));
    }
    if let Some(s) = present(r, "superseded_by") {
        rows.push(("superseded by".to_owned(), s));
    }
    rows.push((
        "created".to_owned(),
        format!("{} by {}", text(r, "created_at"), text(r, "created_by")),
    ));
    rows.push((
        "devices".to_owned(),
        counts_phrase(r.get("counts").unwrap_or(&Value::Null)),
    ));
    rows
}

fn labelled(rows: Vec<(String, String)>) -> Vec<String> {
    let width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    rows.into_iter()
        .map(|(l, v)| format!("{l:<width$}  {v}").trim_end().to_owned())
        .collect()
}

/// The rollback block: what tripped it, progress, duration, devices that failed to go back.
fn rollback(r: &Value) -> Option<Vec<(String, String)>> {
    let rb = r.get("rollback").filter(|v| v.is_object())?;
    let (done, devices) = (num(rb, "done"), num(rb, "devices"));
    let mut rows = vec![(
        "rollback".to_owned(),
        format!(
            "tripped {} by {}: {}",
            text(rb, "tripped_at"),
            text(rb, "tripped_by"),
            text(rb, "reason")
        ),
    )];
    let progress = match (
        present(rb, "finished_at"),
        rb.get("duration_ms").and_then(Value::as_u64),
    ) {
        (Some(at), Some(ms)) => format!(
            "{} {done}/{devices} devices back, finished {at} after {}",
            bar(done, devices),
            duration_ms(ms)
        ),
        (Some(at), None) => format!(
            "{} {done}/{devices} devices back, finished {at}",
            bar(done, devices)
        ),
        (None, _) => format!(
            "{} {done}/{devices} devices back, in progress",
            bar(done, devices)
        ),
    };
    rows.push((String::new(), progress));
    for f in list(rb, "failed") {
        rows.push((
            String::new(),
            format!(
                "failed to roll back {}: {}",
                text(f, "device"),
                text(f, "reason")
            ),
        ));
    }
    Some(rows)
}

/// `rollout show` (and the answer of create, pause, resume, abort, approve): the header, the
/// rollback if any, the stage table, a zone table per stage, the last events and, with
/// `devices`, every device.
pub fn show_lines(r: &Value, devices: bool) -> Vec<String> {
    let mut head = header(r);
    if let Some(rb) = rollback(r) {
        head.extend(rb);
    }
    let mut out = labelled(head);

    let stages = list(r, "stages");
    let rows: Vec<Vec<String>> = stages
        .iter()
        .map(|s| {
            let c = s.get("counts").unwrap_or(&Value::Null);
            vec![
                text(s, "step"),
                text(s, "name"),
                stage_status(s),
                num(s, "devices").to_string(),
                num(c, "succeeded").to_string(),
                num(c, "failed").to_string(),
                num(c, "in_flight").to_string(),
                num(c, "soaking").to_string(),
                num(c, "pending").to_string(),
                num(s, "success_required").to_string(),
            ]
        })
        .collect();
    out.push(String::new());
    out.extend(columns(
        &[
            "STEP",
            "STAGE",
            "STATUS",
            "DEVICES",
            "SUCCEEDED",
            "FAILED",
            "IN-FLIGHT",
            "SOAKING",
            "PENDING",
            "REQUIRED",
        ],
        &rows,
        "no stages",
    ));

    for s in stages {
        let zones = list(s, "zones");
        if zones.is_empty() {
            continue;
        }
        let rows: Vec<Vec<String>> = zones
            .iter()
            .map(|z| {
                let c = z.get("counts").unwrap_or(&Value::Null);
                vec![
                    text(z, "zone"),
                    num(c, "devices").to_string(),
                    num(c, "succeeded").to_string(),
                    num(c, "failed").to_string(),
                    num(c, "in_flight").to_string(),
                    num(c, "soaking").to_string(),
                    num(c, "pending").to_string(),
                    (num(c, "rolling_back") + num(c, "rolled_back")).to_string(),
                ]
            })
            .collect();
        out.push(String::new());
        out.push(format!(
            "step {} stage {}: {} committed + {} soak; > {} failed: {}; device timeout {}",
            text(s, "step"),
            text(s, "name"),
            num(s, "success_required"),
            duration_s(num(s, "soak_s")),
            num(s, "failures_tolerated"),
            text(s, "failure_action"),
            duration_s(num(s, "device_timeout_s"))
        ));
        out.extend(columns(
            &[
                "ZONE",
                "DEVICES",
                "SUCCEEDED",
                "FAILED",
                "IN-FLIGHT",
                "SOAKING",
                "PENDING",
                "ROLLBACK",
            ],
            &rows,
            "no zones",
        ));
    }

    let events = last_events(r, SHOW_EVENTS);
    out.push(String::new());
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| vec![text(e, "at"), text(e, "kind"), text(e, "reason")])
        .collect();
    out.extend(columns(&["TIME", "EVENT", "REASON"], &rows, "no events"));

    if devices {
        let rows: Vec<Vec<String>> = list(r, "devices")
            .iter()
            .map(|d| {
                vec![
                    text(d, "id"),
                    text(d, "step"),
                    text(d, "stage"),
                    text(d, "zone"),
                    text(d, "state"),
                    text(d, "planned_at"),
                    text(d, "started_at"),
                    text(d, "command"),
                    d.get("previous")
                        .filter(|p| p.is_object())
                        .map_or_else(|| "-".to_owned(), release),
                    text(d, "reason"),
                ]
            })
            .collect();
        out.push(String::new());
        out.extend(columns(
            &[
                "DEVICE", "STEP", "STAGE", "ZONE", "STATE", "PLANNED", "STARTED", "COMMAND",
                "PREVIOUS", "REASON",
            ],
            &rows,
            "no devices",
        ));
    }
    out
}

/// A stage's status, with its approval when one is required.
fn stage_status(s: &Value) -> String {
    let status = text(s, "status");
    let required = s.get("approval_required").and_then(Value::as_bool) == Some(true);
    match s.get("approval").filter(|a| a.is_object()) {
        Some(a) => format!("{status} (approved by {})", text(a, "by")),
        None if required && status == "pending" => format!("{status} (approval required)"),
        None => status,
    }
}

/// What a waiting rollout waits for, or `None` when it is not waiting.
pub fn waiting(r: &Value) -> Option<String> {
    let status = r.get("status").and_then(Value::as_str)?;
    if !WAITING.contains(&status) {
        return None;
    }
    let why = match status {
        "held" => {
            let locks: Vec<String> = list(r, "held_by")
                .iter()
                .map(|l| format!("{} ({})", text(l, "id"), text(l, "reason")))
                .collect();
            if locks.is_empty() {
                present(r, "status_reason").unwrap_or_else(|| "a lock".to_owned())
            } else {
                format!("held by {}", locks.join(", "))
            }
        }
        "awaiting_approval" => {
            let stages: Vec<String> = list(r, "stages")
                .iter()
                .filter(|s| s.get("status").and_then(Value::as_str) == Some("awaiting_approval"))
                .map(|s| text(s, "name"))
                .collect();
            let what = if stages.is_empty() {
                "an approval".to_owned()
            } else {
                format!("approval of {}", stages.join(", "))
            };
            format!("{what} (swellctl rollout approve {})", text(r, "id"))
        }
        _ => present(r, "status_reason").unwrap_or_else(|| "paused".to_owned()),
    };
    Some(format!("waiting: {why}"))
}

/// The stages the status line shows: those of the current step, else all.
fn current_stages(r: &Value) -> Vec<&Value> {
    let step = r.get("step").and_then(Value::as_u64);
    let stages = list(r, "stages");
    let current: Vec<&Value> = stages
        .iter()
        .filter(|s| s.get("step").and_then(Value::as_u64) == step)
        .collect();
    if current.is_empty() {
        stages.iter().collect()
    } else {
        current
    }
}

/// One stage or zone's progress: `[######....] 6/10 ok 0 failed 2 in flight`.
fn progress(c: &Value) -> String {
    let (ok, devices) = (num(c, "succeeded"), num(c, "devices"));
    let mut s = format!(
        "{} {ok}/{devices} ok {} failed {} in flight",
        bar(ok, devices),
        num(c, "failed"),
        num(c, "in_flight")
    );
    if num(c, "soaking") > 0 {
        s.push_str(&format!(" {} soaking", num(c, "soaking")));
    }
    s
}

/// The compact status of a rollout, without a time: what `watch` prints a line for whenever
/// it changes when standard output is not a terminal.
pub fn status_line(r: &Value) -> String {
    let mut parts = vec![format!(
        "{} {} step {}/{}",
        text(r, "id"),
        text(r, "status"),
        num(r, "step"),
        num(r, "steps")
    )];
    for s in current_stages(r) {
        let c = s.get("counts").unwrap_or(&Value::Null);
        parts.push(format!("{} {}", text(s, "name"), progress(c)));
    }
    if let Some(rb) = r.get("rollback").filter(|v| v.is_object()) {
        let (done, devices) = (num(rb, "done"), num(rb, "devices"));
        let mut s = format!("rollback {} {done}/{devices} back", bar(done, devices));
        if let Some(ms) = rb.get("duration_ms").and_then(Value::as_u64) {
            s.push_str(&format!(" in {}", duration_ms(ms)));
        }
        let failed = list(rb, "failed").len();
        if failed > 0 {
            s.push_str(&format!(" {failed} failed"));
        }
        parts.push(s);
    }
    if let Some(w) = waiting(r) {
        parts.push(w);
    } else if let Some(reason) = present(r, "status_reason") {
        parts.push(reason);
    }
    parts.join(" | ")
}

/// An event as a line. Its time is shortened to `HH:MM:SSZ` when it falls on the date of
/// `today` (the poll's), so a log of lines reads like the status lines around it; an older
/// event keeps its date.
fn event_line(id: &str, e: &Value, today: Option<Timestamp>) -> String {
    let at = text(e, "at");
    let same_day = today.is_some_and(|t| t.to_string().get(..10) == at.get(..10));
    let at = if same_day { clock(&at) } else { at };
    format!("{at} {id} {}: {}", text(e, "kind"), text(e, "reason"))
}

/// The events of `cur` that `prev` had not shown: those after `prev`'s newest event.
fn new_events<'a>(prev: Option<&Value>, cur: &'a Value) -> Vec<&'a Value> {
    let all = last_events(cur, usize::MAX);
    let Some(prev) = prev else {
        let skip = all.len().saturating_sub(SCREEN_EVENTS);
        return all[skip..].to_vec();
    };
    match last_events(prev, 1).first() {
        None => all,
        Some(last) => match all.iter().rposition(|e| e == last) {
            Some(i) => all[i + 1..].to_vec(),
            // The newest event seen is no longer in the list (the server keeps the last few):
            // everything strictly newer than it.
            None => {
                let at = text(last, "at");
                all.into_iter().filter(|e| text(e, "at") > at).collect()
            }
        },
    }
}

/// What `watch` prints when standard output is not a terminal, for a poll that found `cur`
/// after one that found `prev` (`None` for the first): one line per new event (stamped with
/// the event's time), then the status line stamped with `now` if it changed.
pub fn watch_lines(prev: Option<&Value>, cur: &Value, now: Timestamp) -> Vec<String> {
    let id = text(cur, "id");
    let mut out: Vec<String> = new_events(prev, cur)
        .into_iter()
        .map(|e| event_line(&id, e, Some(now)))
        .collect();
    let line = status_line(cur);
    if prev.map(status_line).as_deref() != Some(line.as_str()) {
        out.push(format!("{} {line}", clock(&now.to_string())));
    }
    out
}

/// The watch screen on a terminal: the header, a progress bar per step, stage and zone, the
/// rollback, and the last events. `now` is when it was fetched; `every` the poll interval as
/// shown.
pub fn watch_screen(r: &Value, now: Timestamp, every: &str) -> Vec<String> {
    let mut out = vec![format!(
        "{}  {}  {}    {} (every {every})",
        text(r, "id"),
        text(r, "name"),
        release(r.get("release").unwrap_or(&Value::Null)),
        now,
    )];
    out.push(format!(
        "{}, step {} of {}",
        text(r, "status"),
        num(r, "step"),
        num(r, "steps")
    ));
    if let Some(w) = waiting(r) {
        out.push(w);
    } else if let Some(reason) = present(r, "status_reason") {
        out.push(reason);
    }
    out.push(String::new());

    let stages = list(r, "stages");
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut steps: Vec<u64> = stages.iter().map(|s| num(s, "step")).collect();
    steps.dedup();
    for step in steps {
        let of_step: Vec<&Value> = stages.iter().filter(|s| num(s, "step") == step).collect();
        let sum = |key: &str| {
            of_step
                .iter()
                .map(|s| num(s.get("counts").unwrap_or(&Value::Null), key))
                .sum::<u64>()
        };
        rows.push(progress_row(
            &format!("step {step}"),
            "",
            sum("succeeded"),
            sum("devices"),
            [
                sum("failed"),
                sum("in_flight"),
                sum("soaking"),
                sum("pending"),
            ],
        ));
        for s in of_step {
            let c = s.get("counts").unwrap_or(&Value::Null);
            rows.push(counts_row(
                &format!("  {}", text(s, "name")),
                &stage_status(s),
                c,
            ));
            for z in list(s, "zones") {
                let c = z.get("counts").unwrap_or(&Value::Null);
                rows.push(counts_row(&format!("    {}", text(z, "zone")), "", c));
            }
        }
    }
    out.extend(columns(
        &[
            "",
            "PROGRESS",
            "OK",
            "FAILED",
            "IN-FLIGHT",
            "SOAKING",
            "PENDING",
            "STATUS",
        ],
        &rows,
        "no stages",
    ));

    if let Some(rb) = rollback(r) {
        out.push(String::new());
        out.extend(labelled(rb));
    }

    let events = last_events(r, SCREEN_EVENTS);
    if !events.is_empty() {
        out.push(String::new());
        let id = text(r, "id");
        out.extend(events.iter().map(|e| event_line(&id, e, None)));
    }
    out
}

fn counts_row(label: &str, status: &str, c: &Value) -> Vec<String> {
    progress_row(
        label,
        status,
        num(c, "succeeded"),
        num(c, "devices"),
        [
            num(c, "failed"),
            num(c, "in_flight"),
            num(c, "soaking"),
            num(c, "pending"),
        ],
    )
}

fn progress_row(label: &str, status: &str, ok: u64, devices: u64, rest: [u64; 4]) -> Vec<String> {
    let mut row = vec![
        label.to_owned(),
        bar(ok, devices),
        format!("{ok}/{devices}"),
    ];
    row.extend(rest.iter().map(u64::to_string));
    row.push(status.to_owned());
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_round_down_and_fill_when_done() {
        assert_eq!(bar(0, 10), "[..........]");
        assert_eq!(bar(6, 10), "[######....]");
        assert_eq!(bar(9, 10), "[#########.]");
        assert_eq!(bar(10, 10), "[##########]");
        assert_eq!(bar(1, 3), "[###.......]");
        assert_eq!(bar(0, 0), "[..........]");
        assert_eq!(bar(12, 10), "[##########]");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(1_830), "1.8s");
        assert_eq!(duration_ms(125_000), "2m05s");
        assert_eq!(duration_ms(3_720_000), "1h02m");
        assert_eq!(duration_s(2700), "45m");
        assert_eq!(duration_s(5400), "1h30m");
        assert_eq!(duration_s(0), "0s");
        assert_eq!(duration_s(90), "1m30s");
    }
}
