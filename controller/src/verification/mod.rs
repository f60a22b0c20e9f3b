//! Continuous verification: during a stage's soak, compare the devices that took the
//! release with devices of the same kind that have not yet, and stop a bad release on
//! evidence rather than on someone's impression of a dashboard.
//!
//! | Module | What it holds |
//! |---|---|
//! | [`model`] | the input: per-device series of counters, gauges and error signatures, with hardware, zone, cohort and arm |
//! | [`policy`] | soak, looks, α, the checks and their effect floors; [`Policy::recommended`] |
//! | [`analysis`] | [`analyze`]: one stage, look by look, to a [`Verdict`] |
//! | [`verdict`] | the verdict, its reasons and shortfalls, and the [`StageReport`] |
//! | [`signatures`] | templating log lines into signatures, and the new-signature rule |
//! | [`stats`] | Fisher, Mann–Whitney, the mixture SPRT, effect sizes, Holm, Tarone, α spending |
//! | [`eval`] | the evaluation harness: simulated fleets with known truth |
//!
//! Architecture invariant: everything here is pure. No clock (`now` is an argument), no I/O,
//! no randomness outside [`eval`], whose generator is seeded by its caller. The executor
//! feeds [`analyze`] and acts on the verdict; nothing here knows about rollouts, MQTT or
//! the store.
//!
//! docs/verification.md explains the method to operators and records the evaluation.

pub mod analysis;
pub mod eval;
pub mod model;
pub mod policy;
pub mod signatures;
pub mod stats;
pub mod verdict;

pub use analysis::analyze;
pub use model::{Arm, CounterPoint, DeviceMeta, DeviceSeries, GaugePoint, StageData};
pub use policy::{Check, CheckKind, InvalidPolicy, Policy, PolicySpec, Scale, SignatureRule};
pub use signatures::{Signature, SignatureId};
pub use stats::Direction;
pub use verdict::{
    CheckState, Effect, Evidence, MetricFinding, Reason, Shortfall, SignatureFinding, StageReport,
    StratumSummary, Verdict,
};
