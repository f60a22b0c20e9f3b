//! The rollout planner: a validated plan, a fleet snapshot and `now` in, a schedule out. Pure:
//! no clock, no I/O, no randomness, so the same inputs give the same schedule on any host at
//! any time, and every rule is a unit or data-driven test.
//!
//! | Module | What it holds |
//! |---|---|
//! | [`file`](mod@file) | the TOML plan format ([`PlanFile`]) and its validation |
//! | [`plan`](mod@plan) | the validated [`Plan`] |
//! | [`selector`] | which devices a rollout or stage selects |
//! | [`fleet`] | the [`FleetSnapshot`] the service hands in, zones from the bundled tz database |
//! | [`window`] | device-local maintenance windows and the DST policy |
//! | [`schedule`] | [`assign`] devices to stages, [`schedule_step`], [`plan()`] the whole rollout |
//! | [`render`] | the `--dry-run` table and JSON |
//!
//! Architecture invariant: nothing in `planner` reads the clock, the registry or the tz
//! database of the host; the executor re-plans a step with [`schedule_step`] when it really
//! begins, from the [`Assignment`] it stored when the rollout was created.
//!
//! docs/rollouts.md is the operator's description of the format and the rules.

mod capacity;
pub mod file;
pub mod fleet;
pub mod plan;
pub mod render;
pub mod schedule;
pub mod selector;
pub mod window;

pub use file::{InvalidPlan, PlanFile};
pub use fleet::{FleetDevice, FleetSnapshot, Zone};
pub use plan::Plan;
pub use schedule::{Assignment, PlanError, Schedule, assign, plan, schedule_step};
pub use selector::Selector;
pub use window::{DstNote, MaintenanceWindow, WindowOccurrence};
