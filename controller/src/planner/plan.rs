//! The validated rollout plan the planner reads. [`Plan`] is built only by
//! [`Plan::from_toml`] or [`Plan::from_file`] (in [`super::file`], with the TOML format), so
//! every invariant documented here holds.
//!
//! docs/rollouts.md describes the format with worked examples.

use std::collections::BTreeMap;
use std::fmt;

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use super::fleet::Zone;
use super::selector::Selector;
use super::window::MaintenanceWindow;

/// A validated plan. Built only by [`Plan::from_toml`] or [`Plan::from_file`], so every
/// invariant below holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub(super) name: Option<String>,
    pub(super) selector: Selector,
    pub(super) window: MaintenanceWindow,
    pub(super) zone_order: ZoneOrder,
    pub(super) limits: Limits,
    pub(super) lock_on_abort: bool,
    pub(super) steps: Vec<Step>,
}

/// A step: stages run in parallel; the next step starts when every one passed. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The stages, in file order (which is also assignment order).
    pub stages: Vec<Stage>,
}

/// One stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Unique in the plan.
    pub name: String,
    /// Narrows the devices not assigned to an earlier stage (empty: all of them).
    pub selector: Selector,
    /// How many of those it takes (`None`: all).
    pub share: Option<Amount>,
    /// Whether an operator must approve before it starts.
    pub approval: bool,
    /// Longest time from a device's start to its Committed report; positive.
    pub device_timeout: SignedDuration,
    /// The success gate.
    pub success: SuccessGate,
    /// The failure gate.
    pub failure: FailureGate,
    /// The comparison with a baseline over the soak, if the stage asks for one.
    pub verification: Option<Verification>,
}

/// What an inconclusive verification verdict does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inconclusive {
    /// The stage passes on its success gate alone.
    Pass,
    /// The rollout pauses for an operator.
    Pause,
}

/// A stage's verification settings (docs/rollouts.md, "Verification").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// Updated devices that must report.
    pub min_updated: usize,
    /// Baseline devices that must report.
    pub min_baseline: usize,
    /// Left out at the soak's start.
    pub warmup: SignedDuration,
    /// Time between looks.
    pub look_every: SignedDuration,
    /// What an inconclusive verdict does.
    pub inconclusive: Inconclusive,
}

impl Verification {
    /// The analysis policy over a soak of `soak`.
    pub fn policy(
        &self,
        soak: SignedDuration,
    ) -> Result<crate::verification::Policy, crate::verification::policy::InvalidPolicy> {
        crate::verification::Policy::for_stage(
            soak,
            self.warmup,
            self.look_every,
            self.min_updated,
            self.min_baseline,
        )
    }
}

/// A percentage (0 to 100) or a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    /// Percent, 0..=100.
    Percent(u8),
    /// A count.
    Count(u32),
}

/// The success gate: the stage passes when at least `committed_percent` of its devices are
/// Committed on the new release and have stayed healthy for `soak`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuccessGate {
    /// 1..=100.
    pub committed_percent: u8,
    /// Not negative.
    pub soak: SignedDuration,
}

/// The failure gate: more than `tolerate` devices Failed, RolledBack or timed out trips it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureGate {
    /// Failures tolerated.
    pub tolerate: Amount,
    /// What tripping does.
    pub action: FailureAction,
}

/// What a tripped failure gate does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureAction {
    /// Stop starting devices and wait for an operator (resume, abort, supersede).
    Pause,
    /// Stop, and command every device that took the release back to its previous one.
    AbortAndRollback,
}

impl FailureAction {
    /// The name used in plans and JSON.
    pub fn name(self) -> &'static str {
        match self {
            FailureAction::Pause => "pause",
            FailureAction::AbortAndRollback => "abort_and_rollback",
        }
    }
}

/// Rollout-wide limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most devices updating at once, at least 1.
    pub max_in_flight: u32,
    /// Most starts in one UTC minute, 1..=[`super::file::MAX_STARTS_PER_MINUTE`].
    pub max_starts_per_minute: u32,
    /// Optional ramp up to `max_starts_per_minute`.
    pub ramp: Option<Ramp>,
    /// Tag key → most devices sharing a value of that tag updating at once (at least 1).
    pub disruption_budget: BTreeMap<String, u32>,
}

/// An exponential ramp: `initial_per_minute × factor^k` starts per minute in the k-th
/// `every` since the step's first window opened, capped at `max_starts_per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ramp {
    /// At least 1, at most `max_starts_per_minute`.
    pub initial_per_minute: u32,
    /// At least 2.
    pub factor: u32,
    /// Whole minutes, at least one.
    pub every: SignedDuration,
}

/// The order zones open in within a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneOrder {
    /// By UTC offset at the step's start, highest (east) first; ties by zone name.
    EastToWest,
    /// These zones first, in this order; zones not listed follow, east to west.
    Explicit(Vec<Zone>),
}
impl Plan {
    /// The name for people, if given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The devices the rollout may touch.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// The maintenance window.
    pub fn window(&self) -> &MaintenanceWindow {
        &self.window
    }

    /// The zone order.
    pub fn zone_order(&self) -> &ZoneOrder {
        &self.zone_order
    }

    /// The rollout-wide limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether an abort locks deploys until someone releases the lock.
    pub fn lock_on_abort(&self) -> bool {
        self.lock_on_abort
    }

    /// The pipeline; never empty, and no step is empty.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Every stage with its step index, in pipeline order.
    pub fn stages(&self) -> impl Iterator<Item = (usize, &Stage)> {
        self.steps
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.stages.iter().map(move |st| (i, st)))
    }
}
impl Amount {
    /// How many of `n` devices a share takes: a count, capped at `n`, or a percentage
    /// **rounded up**, so a non-zero share of a non-empty set takes at least one device.
    pub fn take_of(self, n: usize) -> usize {
        match self {
            Amount::Count(c) => usize::try_from(c).unwrap_or(usize::MAX).min(n),
            Amount::Percent(p) => (n * usize::from(p)).div_ceil(100),
        }
    }

    /// How many failures out of `n` devices are tolerated: a count as written, or a
    /// percentage **rounded down** (10% of 25 tolerates 2; the third failure is 12% > 10%).
    pub fn tolerated_of(self, n: usize) -> usize {
        match self {
            Amount::Count(c) => usize::try_from(c).unwrap_or(usize::MAX),
            Amount::Percent(p) => n * usize::from(p) / 100,
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Percent(p) => write!(f, "{p}%"),
            Amount::Count(c) => write!(f, "{c}"),
        }
    }
}

impl SuccessGate {
    /// Devices out of `n` that must be Committed and soaked: the percentage **rounded up**.
    pub fn required_of(&self, n: usize) -> usize {
        (n * usize::from(self.committed_percent)).div_ceil(100)
    }
}

impl Limits {
    /// The disruption-budget groups `device` is in: `(tag key, its value)` for each budgeted
    /// tag the device carries. A device without a budgeted tag is not limited by that budget.
    pub fn budget_groups<'d>(
        &self,
        tags: &'d BTreeMap<String, String>,
    ) -> Vec<(&str, &'d str, u32)> {
        self.disruption_budget
            .iter()
            .filter_map(|(k, n)| tags.get(k).map(|v| (k.as_str(), v.as_str(), *n)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_as_documented() {
        assert_eq!(Amount::Percent(20).take_of(7), 2);
        assert_eq!(Amount::Percent(1).take_of(1), 1);
        assert_eq!(Amount::Percent(100).take_of(0), 0);
        assert_eq!(Amount::Count(5).take_of(3), 3);
        assert_eq!(Amount::Percent(10).tolerated_of(25), 2);
        assert_eq!(Amount::Percent(10).tolerated_of(9), 0);
        assert_eq!(Amount::Count(3).tolerated_of(2), 3);
        let gate = SuccessGate {
            committed_percent: 95,
            soak: SignedDuration::ZERO,
        };
        assert_eq!(gate.required_of(21), 20);
    }
}
