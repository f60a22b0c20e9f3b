//! The evaluation harness: simulated fleets with known truth run through the analysis many
//! times. `cargo run --release -p swell-controller --example verification_eval` runs the
//! full evaluation recorded in docs/verification.md; `controller/tests/verification_eval.rs`
//! runs a smaller one with fixed seeds and asserts the targets.
//!
//! It lives in the library, not in a test helper, because the fleet simulation is useful
//! beyond this evaluation (the end-to-end test and the demo need realistic health series
//! too), and because its numbers are the module's specification.

pub mod ablation;
pub mod harness;
pub mod rng;
pub mod sim;

pub use harness::{
    EVALUATED_BASELINE, EVALUATED_CANARY, GridRow, Scenario, Setup, Summary, TrialOutcome, run,
    run_trial, scenarios,
};
pub use rng::Rng;
pub use sim::{Catalog, Fault, FleetModel, SimulatedStage, StageShape, simulate};
