//! The evaluation of continuous verification recorded in docs/verification.md: simulated
//! fleets with known truth (a good release and four bad ones) run through the analysis,
//! first at the recommended canary size and soak, then the good release at loose α to check
//! that the false-alarm rate stays below α (the calibration), then over a grid of canary
//! sizes and soaks. Prints Markdown.
//!
//! ```sh
//! cargo run --release -p swell-controller --example verification_eval
//! cargo run --release -p swell-controller --example verification_eval -- --trials 200 --grid-trials 0
//! ```

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use jiff::SignedDuration;
use swell_controller::verification::eval::ablation::rate_ablation;
use swell_controller::verification::eval::harness::{
    GridRow, grid_table, reasons_table, run, scenarios, table,
};
use swell_controller::verification::eval::{
    EVALUATED_BASELINE, EVALUATED_CANARY, FleetModel, Setup,
};
use swell_controller::verification::{Policy, PolicySpec};

/// Evaluates the verification analysis on simulated fleets.
#[derive(Debug, Parser)]
struct Args {
    /// Trials per scenario at the recommended setup.
    #[arg(long, default_value_t = 1000)]
    trials: usize,
    /// Trials per scenario in each cell of the trade-off grid (0 skips the grid).
    #[arg(long, default_value_t = 200)]
    grid_trials: usize,
    /// Trials of each release in the rate-test ablation (0 skips it).
    #[arg(long, default_value_t = 1000)]
    ablation_trials: usize,
    /// Trials of the good release in each calibration run (0 skips the calibration).
    #[arg(long, default_value_t = 1000)]
    calibration_trials: usize,
    /// Updated devices (the canary) at the recommended setup.
    #[arg(long, default_value_t = EVALUATED_CANARY)]
    canary: usize,
    /// Baseline devices.
    #[arg(long, default_value_t = EVALUATED_BASELINE)]
    baseline: usize,
    /// Soak at the recommended setup, hours.
    #[arg(long, default_value_t = 8)]
    soak_hours: i64,
    /// Seed of the whole run.
    #[arg(long, default_value_t = 8)]
    seed: u64,
    /// Threads to run trials on (results do not depend on it).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let base = Setup {
        model: FleetModel::default(),
        policy: Policy::recommended(),
        canary: args.canary,
        baseline: args.baseline,
    };
    let setup = match base.with(args.canary, SignedDuration::from_hours(args.soak_hours)) {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("verification_eval: {e}");
            return ExitCode::FAILURE;
        }
    };
    let spec = setup.policy.spec();
    let started = Instant::now();
    if args.trials > 0 {
        println!(
            "## Recommended setup: {} updated vs {} baseline devices, soak {:#} (warm-up {:#}, a look every {:#}), alpha {}\n",
            setup.canary, setup.baseline, spec.soak, spec.warmup, spec.look_every, spec.alpha
        );
        let summaries = run(&setup, &scenarios(), args.trials, args.seed, args.threads);
        println!("{}", table(&summaries));
        println!("{}", reasons_table(&summaries));
    }
    eprintln!(
        "recommended setup: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    if args.calibration_trials > 0 {
        println!(
            "## Calibration: the good release at loose alpha ({} trials each)\n",
            args.calibration_trials
        );
        println!(
            "| alpha | false alarms | 95% interval | reasons given (trials) |\n|---|---|---|---|"
        );
        for alpha in [0.05, 0.2] {
            let spec = PolicySpec {
                alpha,
                ..setup.policy.spec().clone()
            };
            let policy = match Policy::new(spec) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("verification_eval: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let loose = Setup {
                policy,
                ..setup.clone()
            };
            let good = &scenarios()[..1];
            let s = &run(
                &loose,
                good,
                args.calibration_trials,
                args.seed.wrapping_add(2),
                args.threads,
            )[0];
            let (lo, hi) = s.fail_interval();
            let reasons: Vec<String> = s
                .reasons
                .iter()
                .map(|(r, n)| format!("{r} ({n})"))
                .collect();
            println!(
                "| {alpha} | {} of {} ({:.1}%) | {:.1}%–{:.1}% | {} |",
                s.fail,
                s.trials,
                100.0 * s.fail_rate(),
                100.0 * lo,
                100.0 * hi,
                reasons.join(", ")
            );
        }
        println!();
        eprintln!("with calibration: {:.1} s", started.elapsed().as_secs_f64());
    }

    if args.ablation_trials > 0 {
        println!(
            "## Ablation: the crash-rate test ({} trials of each release)\n",
            args.ablation_trials
        );
        println!(
            "{}",
            rate_ablation(&setup, args.ablation_trials, args.seed.wrapping_add(3))
        );
        eprintln!("with ablation: {:.1} s", started.elapsed().as_secs_f64());
    }

    if args.grid_trials > 0 {
        let mut rows = Vec::new();
        for canary in [25, 50, 100, 150, 200] {
            for hours in [3, 6, 8, 12] {
                let cell = match setup.with(canary, SignedDuration::from_hours(hours)) {
                    Ok(cell) => cell,
                    Err(e) => {
                        eprintln!("verification_eval: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let summaries = run(
                    &cell,
                    &scenarios(),
                    args.grid_trials,
                    args.seed.wrapping_add(1),
                    args.threads,
                );
                rows.push(GridRow {
                    canary,
                    soak: cell.policy.spec().soak,
                    summaries,
                });
            }
        }
        println!(
            "## Trade-off: canary size x soak ({} trials per cell, baseline {})\n",
            args.grid_trials, setup.baseline
        );
        println!("{}", grid_table(&rows));
        eprintln!("with grid: {:.1} s", started.elapsed().as_secs_f64());
    }
    ExitCode::SUCCESS
}
