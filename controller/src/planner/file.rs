//! The plan file: the TOML an operator writes ([`PlanFile`], serde types at the edge, unknown
//! fields refused) and its validation into a [`Plan`]. Validation happens once, in
//! [`Plan::from_file`]; every error names the field it is about, steps and stages counted from
//! 1 (`step[2].stage[1].share: ...`).

use std::collections::{BTreeMap, BTreeSet};

use jiff::SignedDuration;
use jiff::civil::{Time, Weekday};
use serde::{Deserialize, Serialize};
use swell_proto::{DeviceId, HardwareId};

use super::fleet::Zone;
use super::plan::{
    Amount, FailureAction, FailureGate, Inconclusive, Limits, Plan, Ramp, Stage, Step, SuccessGate,
    Verification, ZoneOrder,
};
use super::selector::{Selector, VersionReq};
use super::window::{MaintenanceWindow, parse_weekday};

/// Most steps in a pipeline: real pipelines have a handful; hundreds would be a generated plan
/// that nobody reviewed.
pub const MAX_STEPS: usize = 32;

/// Most stages in a whole plan, for the same reason.
pub const MAX_STAGES: usize = 64;

/// Highest `max_starts_per_minute`: 100 update commands a second is well past what a fleet
/// should take at once; a higher number is a typo.
pub const MAX_STARTS_PER_MINUTE: u32 = 6000;

/// Longest device timeout or soak: a week. Longer is a typo for minutes or hours.
pub const MAX_DURATION: SignedDuration = SignedDuration::from_hours(7 * 24);

/// Longest plan name.
pub const MAX_NAME_LEN: usize = 128;

/// Longest label (stage name, cohort, tag key or value), as the registry allows.
pub const MAX_LABEL_LEN: usize = 64;

/// A plan file as written. Serde types at the edge: [`Plan::from_file`] validates one into a
/// [`Plan`]. Flags for simple cases can build one of these too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// A name for people (`gateway-os weekly`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `"east_to_west"` (the default) or a list of IANA zone names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_order: Option<ZoneOrderFile>,
    /// The devices the rollout may touch; all if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<SelectorFile>,
    /// The device-local maintenance window.
    pub window: WindowFile,
    /// Rollout-wide limits.
    pub limits: LimitsFile,
    /// Stage settings that stages do not set themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<StageDefaultsFile>,
    /// Lock deploys when the rollout aborts: a lock the executor creates, held until someone
    /// releases it with a reason. Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lock_on_abort: bool,
    /// The pipeline, in order.
    #[serde(default)]
    pub step: Vec<StepFile>,
}

/// `zone_order`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ZoneOrderFile {
    /// `"east_to_west"`.
    Named(String),
    /// Zone names, first first.
    List(Vec<String>),
}

/// `[selector]` or a stage's `selector = { ... }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorFile {
    /// Tags that must all match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Hardware ids, any of which.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hardware: Vec<String>,
    /// The cohort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
    /// A version requirement on the running version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Device ids, any of which.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

/// `[window]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowFile {
    /// `HH:MM` local.
    pub start: String,
    /// `HH:MM` local; at or before `start` means the next day.
    pub end: String,
    /// `mon` .. `sun`; every day if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<String>>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Most devices updating at once.
    pub max_in_flight: u32,
    /// Most update starts in one minute.
    pub max_starts_per_minute: u32,
    /// An exponential ramp up to `max_starts_per_minute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampFile>,
    /// Tag key → most devices with the same value of that tag updating at once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub disruption_budget: BTreeMap<String, u32>,
}

/// `[limits.ramp]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampFile {
    /// Starts per minute at first.
    pub initial_per_minute: u32,
    /// What the rate is multiplied by each `every`.
    pub factor: u32,
    /// How often the rate grows (`10m`); whole minutes.
    pub every: String,
}

/// `[defaults]`: stage settings shared by stages that do not set them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageDefaultsFile {
    /// See [`StageFile::device_timeout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_timeout: Option<String>,
    /// See [`StageFile::success`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<SuccessFile>,
    /// See [`StageFile::failure`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureFile>,
}

/// `[[step]]`: stages that run in parallel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepFile {
    /// The step's stages.
    #[serde(default)]
    pub stage: Vec<StageFile>,
}

/// `[[step.stage]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageFile {
    /// Unique in the plan.
    pub name: String,
    /// Narrows the devices not yet assigned to an earlier stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<SelectorFile>,
    /// `"20%"` or a count of the selected devices; all of them if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<AmountFile>,
    /// Whether an operator must approve before the stage starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
    /// How long a device may take from its start to Committed (`45m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_timeout: Option<String>,
    /// The success gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<SuccessFile>,
    /// The failure gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureFile>,
    /// Compare the stage's updated devices with a baseline over its soak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationFile>,
}

/// `verification = { min_updated = 5, min_baseline = 10, warmup = "30m", look_every = "30m",
/// inconclusive = "pause" }`; every key optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationFile {
    /// Updated devices that must report (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_updated: Option<u32>,
    /// Baseline devices that must report (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_baseline: Option<u32>,
    /// Left out at the soak's start (default a tenth of the soak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<String>,
    /// Time between looks (default a quarter of the soak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub look_every: Option<String>,
    /// What an inconclusive verdict does (default `pause`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<Inconclusive>,
}

/// `success = { committed = "95%", soak = "30m" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessFile {
    /// Share of the stage's devices that must be Committed on the new release.
    pub committed: AmountFile,
    /// How long a committed device must stay healthy before it counts.
    pub soak: String,
}

/// `failure = { tolerate = "10%", action = "abort_and_rollback" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureFile {
    /// Failures tolerated (share or count); one more trips the gate.
    pub tolerate: AmountFile,
    /// What tripping does.
    pub action: FailureAction,
}

/// A share (`"20%"`) or a count (`5`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AmountFile {
    /// A count.
    Count(i64),
    /// `"N%"`.
    Text(String),
}
/// A plan field is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPlan {
    /// Not TOML, or not the plan's shape (an unknown field, a wrong type); the TOML parser's
    /// message names the key and the line.
    #[error("{0}")]
    Toml(String),
    /// A field's value is wrong.
    #[error("{field}: {reason}")]
    Field {
        /// The field, such as `step[2].stage[1].share`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> InvalidPlan {
    InvalidPlan::Field {
        field: field.into(),
        reason: reason.into(),
    }
}
impl Plan {
    /// Parses and validates a plan file.
    pub fn from_toml(text: &str) -> Result<Plan, InvalidPlan> {
        let file: PlanFile = toml::from_str(text).map_err(|e| {
            // The parser's message spans several lines (a source excerpt); one line for the
            // operator, with the line number it gives.
            InvalidPlan::Toml(one_line(&e, text))
        })?;
        Plan::from_file(&file)
    }

    /// Validates a plan file.
    pub fn from_file(file: &PlanFile) -> Result<Plan, InvalidPlan> {
        let name = match &file.name {
            None => None,
            Some(n) if n.trim().is_empty() || n.chars().count() > MAX_NAME_LEN => {
                return Err(invalid("name", format!("1 to {MAX_NAME_LEN} characters")));
            }
            Some(n) if n.chars().any(char::is_control) => {
                return Err(invalid("name", "control characters are not allowed"));
            }
            Some(n) => Some(n.clone()),
        };
        let selector = match &file.selector {
            None => Selector::default(),
            Some(s) => selector(s, "selector")?,
        };
        let window = window(&file.window)?;
        let zone_order = zone_order(file.zone_order.as_ref())?;
        let limits = limits(&file.limits)?;
        let defaults = file.defaults.clone().unwrap_or_default();
        if file.step.is_empty() {
            return Err(invalid("step", "the pipeline needs at least one [[step]]"));
        }
        if file.step.len() > MAX_STEPS {
            return Err(invalid("step", format!("at most {MAX_STEPS} steps")));
        }
        let total: usize = file.step.iter().map(|s| s.stage.len()).sum();
        if total > MAX_STAGES {
            return Err(invalid(
                "step",
                format!("at most {MAX_STAGES} stages in all"),
            ));
        }
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut steps = Vec::with_capacity(file.step.len());
        for (i, step) in file.step.iter().enumerate() {
            let step_field = format!("step[{}]", i + 1);
            if step.stage.is_empty() {
                return Err(invalid(
                    format!("{step_field}.stage"),
                    "a step needs at least one [[step.stage]]",
                ));
            }
            let mut stages = Vec::with_capacity(step.stage.len());
            for (j, s) in step.stage.iter().enumerate() {
                let field = format!("{step_field}.stage[{}]", j + 1);
                let stage = stage(s, &defaults, &field)?;
                if let Some(first) = names.insert(stage.name.clone(), field.clone()) {
                    return Err(invalid(
                        format!("{field}.name"),
                        format!("{:?} is already the name of {first}", stage.name),
                    ));
                }
                stages.push(stage);
            }
            steps.push(Step { stages });
        }
        Ok(Plan {
            name,
            selector,
            window,
            zone_order,
            limits,
            lock_on_abort: file.lock_on_abort,
            steps,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Field validation.

fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or("");
            let line = before.matches('\n').count() + 1;
            // The message does not always name the key (`unknown variant ...`); the line does.
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            let source: String = source.chars().take(80).collect();
            format!("line {line}: {msg} (in `{source}`)")
        }
        None => msg,
    }
}

fn label(s: &str, field: &str) -> Result<String, InvalidPlan> {
    let ok = !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(invalid(
            field,
            format!(
                "{s:?} is not a label: 1 to {MAX_LABEL_LEN} of letters, digits, '.', '_', '-', \
                 starting with a letter or digit"
            ),
        ))
    }
}

fn selector(s: &SelectorFile, field: &str) -> Result<Selector, InvalidPlan> {
    let mut out = Selector::default();
    for (k, v) in &s.tags {
        let key = label(k, &format!("{field}.tags"))?;
        let value = label(v, &format!("{field}.tags.{k}"))?;
        out.tags.insert(key, value);
    }
    for h in &s.hardware {
        let id =
            HardwareId::new(h).map_err(|e| invalid(format!("{field}.hardware"), e.to_string()))?;
        out.hardware.insert(id);
    }
    if let Some(c) = &s.cohort {
        out.cohort = Some(label(c, &format!("{field}.cohort"))?);
    }
    if let Some(v) = &s.version {
        out.version = Some(VersionReq::new(v).map_err(|e| invalid(format!("{field}.version"), e))?);
    }
    for d in &s.devices {
        let id =
            DeviceId::new(d).map_err(|e| invalid(format!("{field}.devices"), e.to_string()))?;
        out.devices.insert(id);
    }
    Ok(out)
}

fn clock_time(s: &str, field: &str) -> Result<Time, InvalidPlan> {
    let bad = || {
        invalid(
            field,
            format!("{s:?} is not a local time HH:MM (such as \"02:00\")"),
        )
    };
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

fn window(w: &WindowFile) -> Result<MaintenanceWindow, InvalidPlan> {
    let start = clock_time(&w.start, "window.start")?;
    let end = clock_time(&w.end, "window.end")?;
    let days: Vec<Weekday> = match &w.days {
        None => (0..7)
            .map(|i| Weekday::from_monday_zero_offset(i).unwrap_or(Weekday::Monday))
            .collect(),
        Some(names) => {
            let mut seen = BTreeSet::new();
            let mut days = Vec::new();
            for n in names {
                let d = parse_weekday(n).ok_or_else(|| {
                    invalid(
                        "window.days",
                        format!("{n:?} is not one of mon tue wed thu fri sat sun"),
                    )
                })?;
                if !seen.insert(n) {
                    return Err(invalid("window.days", format!("{n:?} is listed twice")));
                }
                days.push(d);
            }
            days
        }
    };
    MaintenanceWindow::new(start, end, &days).map_err(|e| {
        let field = if days.is_empty() {
            "window.days"
        } else {
            "window.end"
        };
        invalid(field, e.to_string())
    })
}

fn zone_order(z: Option<&ZoneOrderFile>) -> Result<ZoneOrder, InvalidPlan> {
    match z {
        None => Ok(ZoneOrder::EastToWest),
        Some(ZoneOrderFile::Named(n)) if n == "east_to_west" => Ok(ZoneOrder::EastToWest),
        Some(ZoneOrderFile::Named(n)) => Err(invalid(
            "zone_order",
            format!("{n:?}: expected \"east_to_west\" or a list of IANA zone names"),
        )),
        Some(ZoneOrderFile::List(names)) => {
            if names.is_empty() {
                return Err(invalid(
                    "zone_order",
                    "an explicit order lists at least one zone",
                ));
            }
            let mut zones: Vec<Zone> = Vec::new();
            for n in names {
                let z = Zone::new(n).map_err(|e| invalid("zone_order", e.to_string()))?;
                if zones.contains(&z) {
                    return Err(invalid(
                        "zone_order",
                        format!("{} is listed twice", z.name()),
                    ));
                }
                zones.push(z);
            }
            Ok(ZoneOrder::Explicit(zones))
        }
    }
}

fn duration(s: &str, field: &str) -> Result<SignedDuration, InvalidPlan> {
    let bad = || {
        invalid(
            field,
            format!("{s:?} is not a duration such as \"45m\", \"2h\", \"1h30m\" or \"7d\""),
        )
    };
    // A span, so that days are allowed; a plan's day is 24 hours (a soak is measured in real
    // time, not in calendar days).
    let span: jiff::Span = s.parse().map_err(|_| bad())?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|_| bad())?;
    if d.is_negative() {
        return Err(invalid(field, format!("{s:?} is negative")));
    }
    if d.subsec_nanos() != 0 {
        return Err(invalid(field, format!("{s:?} is not whole seconds")));
    }
    if d > MAX_DURATION {
        return Err(invalid(field, format!("{s:?} is longer than 7 days")));
    }
    Ok(d)
}

fn positive(n: u32, field: &str) -> Result<u32, InvalidPlan> {
    if n == 0 {
        Err(invalid(field, "must be at least 1"))
    } else {
        Ok(n)
    }
}

fn limits(l: &LimitsFile) -> Result<Limits, InvalidPlan> {
    let max_in_flight = positive(l.max_in_flight, "limits.max_in_flight")?;
    let max_starts_per_minute = positive(l.max_starts_per_minute, "limits.max_starts_per_minute")?;
    if max_starts_per_minute > MAX_STARTS_PER_MINUTE {
        return Err(invalid(
            "limits.max_starts_per_minute",
            format!("at most {MAX_STARTS_PER_MINUTE}"),
        ));
    }
    let ramp = match &l.ramp {
        None => None,
        Some(r) => {
            let initial = positive(r.initial_per_minute, "limits.ramp.initial_per_minute")?;
            if initial > max_starts_per_minute {
                return Err(invalid(
                    "limits.ramp.initial_per_minute",
                    "must not exceed limits.max_starts_per_minute",
                ));
            }
            if !(2..=10).contains(&r.factor) {
                return Err(invalid("limits.ramp.factor", "an integer from 2 to 10"));
            }
            let every = duration(&r.every, "limits.ramp.every")?;
            if every.as_secs() < 60 || every.as_secs() % 60 != 0 {
                return Err(invalid("limits.ramp.every", "whole minutes, at least 1m"));
            }
            Some(Ramp {
                initial_per_minute: initial,
                factor: r.factor,
                every,
            })
        }
    };
    let mut disruption_budget = BTreeMap::new();
    for (k, n) in &l.disruption_budget {
        let key = label(k, "limits.disruption_budget")?;
        let n = positive(*n, &format!("limits.disruption_budget.{k}"))?;
        disruption_budget.insert(key, n);
    }
    Ok(Limits {
        max_in_flight,
        max_starts_per_minute,
        ramp,
        disruption_budget,
    })
}

fn amount(a: &AmountFile, field: &str, zero_ok: bool) -> Result<Amount, InvalidPlan> {
    let min = u32::from(!zero_ok);
    match a {
        AmountFile::Count(n) => match u32::try_from(*n) {
            Ok(n) if n >= min => Ok(Amount::Count(n)),
            _ => Err(invalid(field, format!("a count must be at least {min}"))),
        },
        AmountFile::Text(t) => {
            let bad = || {
                invalid(
                    field,
                    format!("{t:?} is neither a count nor a percentage from {min}% to 100%"),
                )
            };
            let digits = t.strip_suffix('%').ok_or_else(bad)?;
            if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad());
            }
            let p: u8 = digits.parse().map_err(|_| bad())?;
            if p > 100 || u32::from(p) < min {
                return Err(bad());
            }
            Ok(Amount::Percent(p))
        }
    }
}

fn stage(s: &StageFile, defaults: &StageDefaultsFile, field: &str) -> Result<Stage, InvalidPlan> {
    let name = label(&s.name, &format!("{field}.name"))?;
    let selector = match &s.selector {
        None => Selector::default(),
        Some(sel) => selector(sel, &format!("{field}.selector"))?,
    };
    let share = s
        .share
        .as_ref()
        .map(|a| amount(a, &format!("{field}.share"), false))
        .transpose()?;
    let missing = |what: &str| {
        invalid(
            format!("{field}.{what}"),
            "missing: set it in the stage or in [defaults]",
        )
    };
    let (timeout_text, timeout_field) = match (&s.device_timeout, &defaults.device_timeout) {
        (Some(t), _) => (t, format!("{field}.device_timeout")),
        (None, Some(t)) => (t, "defaults.device_timeout".to_owned()),
        (None, None) => return Err(missing("device_timeout")),
    };
    let device_timeout = duration(timeout_text, &timeout_field)?;
    if device_timeout.is_zero() {
        return Err(invalid(timeout_field, "must be longer than zero"));
    }
    let (success, success_field) = match (&s.success, &defaults.success) {
        (Some(g), _) => (g, format!("{field}.success")),
        (None, Some(g)) => (g, "defaults.success".to_owned()),
        (None, None) => return Err(missing("success")),
    };
    let committed_field = format!("{success_field}.committed");
    let committed_percent = match amount(&success.committed, &committed_field, false)? {
        Amount::Percent(p) => p,
        Amount::Count(_) => {
            return Err(invalid(committed_field, "a percentage such as \"95%\""));
        }
    };
    let soak = duration(&success.soak, &format!("{success_field}.soak"))?;
    let (failure, failure_field) = match (&s.failure, &defaults.failure) {
        (Some(g), _) => (g, format!("{field}.failure")),
        (None, Some(g)) => (g, "defaults.failure".to_owned()),
        (None, None) => return Err(missing("failure")),
    };
    let tolerate = amount(
        &failure.tolerate,
        &format!("{failure_field}.tolerate"),
        true,
    )?;
    let verification = s
        .verification
        .as_ref()
        .map(|v| verification(v, soak, &format!("{field}.verification")))
        .transpose()?;
    Ok(Stage {
        name,
        selector,
        share,
        approval: s.approval,
        verification,
        device_timeout,
        success: SuccessGate {
            committed_percent,
            soak,
        },
        failure: FailureGate {
            tolerate,
            action: failure.action,
        },
    })
}
fn verification(
    v: &VerificationFile,
    soak: SignedDuration,
    field: &str,
) -> Result<Verification, InvalidPlan> {
    let or = |d: &Option<String>, what: &str, default: SignedDuration| {
        d.as_ref()
            .map_or(Ok(default), |t| duration(t, &format!("{field}.{what}")))
    };
    let count = |n: Option<u32>, what: &str, default: usize| match n {
        None => Ok(default),
        Some(0) => Err(invalid(format!("{field}.{what}"), "at least 1")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let v = Verification {
        min_updated: count(v.min_updated, "min_updated", 5)?,
        min_baseline: count(v.min_baseline, "min_baseline", 10)?,
        warmup: or(&v.warmup, "warmup", soak / 10)?,
        look_every: or(&v.look_every, "look_every", soak / 4)?,
        inconclusive: v.inconclusive.unwrap_or(Inconclusive::Pause),
    };
    v.policy(soak).map_err(|e| invalid(field, e.0.clone()))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [window]
        start = "02:00"
        end = "04:00"
        [limits]
        max_in_flight = 5
        max_starts_per_minute = 2
        [defaults]
        device_timeout = "45m"
        success = { committed = "100%", soak = "30m" }
        failure = { tolerate = 0, action = "pause" }
        [[step]]
        [[step.stage]]
        name = "all"
    "#;

    fn err(text: &str) -> String {
        Plan::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_plan_and_defaults() {
        let p = Plan::from_toml(MINIMAL).unwrap();
        assert_eq!(p.zone_order(), &ZoneOrder::EastToWest);
        let s = &p.steps()[0].stages[0];
        assert_eq!(s.device_timeout, SignedDuration::from_mins(45));
        assert_eq!(s.success.soak, SignedDuration::from_mins(30));
        assert_eq!(s.failure.action, FailureAction::Pause);
        assert!(p.window().every_day());
    }

    /// Verification defaults come from the soak; a warm-up as long as the soak is refused
    /// with the field named.
    #[test]
    fn verification_settings() {
        let with = |v: &str| {
            MINIMAL.replace(
                "name = \"all\"",
                &format!("name = \"all\"\nverification = {v}"),
            )
        };
        let p = Plan::from_toml(&with("{}")).unwrap();
        let v = p.steps()[0].stages[0].verification.unwrap();
        assert_eq!(v.warmup, SignedDuration::from_mins(3));
        assert_eq!(v.look_every, SignedDuration::from_secs(450));
        assert_eq!((v.min_updated, v.min_baseline), (5, 10));
        assert_eq!(v.inconclusive, Inconclusive::Pause);
        let p = Plan::from_toml(&with("{ min_updated = 2, inconclusive = \"pass\" }")).unwrap();
        let v = p.steps()[0].stages[0].verification.unwrap();
        assert_eq!((v.min_updated, v.inconclusive), (2, Inconclusive::Pass));
        let e = Plan::from_toml(&with("{ warmup = \"30m\" }")).unwrap_err();
        assert!(
            e.to_string().starts_with("step[1].stage[1].verification: "),
            "{e}"
        );
        let e = Plan::from_toml(&with("{ min_baseline = 0 }")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "step[1].stage[1].verification.min_baseline: at least 1"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                MINIMAL.replace("\"02:00\"", "\"2am\""),
                "window.start: \"2am\" is not a local time HH:MM (such as \"02:00\")",
            ),
            (
                MINIMAL.replace("\"04:00\"", "\"02:00\""),
                "window.end: end equals start; a window must have a length (end before start crosses midnight)",
            ),
            (
                MINIMAL.replace("max_in_flight = 5", "max_in_flight = 0"),
                "limits.max_in_flight: must be at least 1",
            ),
            (
                MINIMAL.replace("tolerate = 0", "tolerate = \"150%\""),
                "defaults.failure.tolerate: \"150%\" is neither a count nor a percentage from 0% to 100%",
            ),
            (
                MINIMAL.replace("\"100%\"", "3"),
                "defaults.success.committed: a percentage such as \"95%\"",
            ),
            (
                MINIMAL.replace("device_timeout = \"45m\"", "device_timeout = \"soon\""),
                "defaults.device_timeout: \"soon\" is not a duration such as \"45m\", \"2h\", \"1h30m\" or \"7d\"",
            ),
            (
                MINIMAL.replace("name = \"all\"", "name = \"all\"\nshare = \"0%\""),
                "step[1].stage[1].share: \"0%\" is neither a count nor a percentage from 1% to 100%",
            ),
            (
                format!("{MINIMAL}\n[[step]]\n[[step.stage]]\nname = \"all\""),
                "step[2].stage[1].name: \"all\" is already the name of step[1].stage[1]",
            ),
            (
                format!("zone_order = [\"Europe/Nowhere\"]\n{MINIMAL}"),
                "zone_order: \"Europe/Nowhere\" is not an IANA time zone name (such as Europe/Berlin)",
            ),
            (
                MINIMAL.replace("[defaults]", "[defaults]\nsoak = \"1h\""),
                "line 9: unknown field `soak`, expected one of `device_timeout`, `success`, `failure` (in `soak = \"1h\"`)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(err(&text), want);
        }
        let no_defaults = MINIMAL.replace("device_timeout = \"45m\"\n", "");
        assert_eq!(
            err(&no_defaults),
            "step[1].stage[1].device_timeout: missing: set it in the stage or in [defaults]"
        );
    }
}
