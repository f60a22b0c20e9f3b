//! Runs scenarios with known truth through [`analyze`] many times and counts what the
//! analysis concluded: detection rate on bad releases, false-alarm rate on good ones, and
//! how many device-hours on the new release it took to reach a verdict.
//!
//! Every trial is seeded from the run's seed, the scenario and the trial's number, so a run
//! is reproducible bit for bit, and trials may run on several threads without changing any
//! result.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::SignedDuration;

use super::rng::splitmix64;
use super::sim::{Catalog, Fault, FleetModel, StageShape, simulate};
use crate::verification::analysis::analyze;
use crate::verification::policy::{Policy, PolicySpec};
use crate::verification::stats::special::ln_choose;
use crate::verification::verdict::{Reason, Verdict};

/// The canary size docs/verification.md recommends for [`Policy::recommended`] (8-hour
/// soak) on the evaluated fleet. At 6 hours it already meets the 95 % target, but with the
/// lower end of the crash scenario's 95 % interval at 95.7 %; 8 hours buys a margin (99 %)
/// at no cost to how fast a bad release is stopped, only to how long a good one soaks.
pub const EVALUATED_CANARY: usize = 150;

/// The baseline size of the evaluation: the not-yet-updated devices of the same models.
pub const EVALUATED_BASELINE: usize = 400;

/// A named release with its fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Short name for tables.
    pub name: &'static str,
    /// What the release does.
    pub fault: Fault,
}

/// The scenarios of issue 8: a good release and four bad ones.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "good release",
            fault: Fault::None,
        },
        Scenario {
            name: "crash rate x2",
            fault: Fault::CrashRate(2.0),
        },
        Scenario {
            name: "memory +30%",
            fault: Fault::MemoryLevel(1.3),
        },
        Scenario {
            name: "new exception on 10%",
            fault: Fault::NewException {
                share: 0.1,
                per_hour: 2.0,
            },
        },
        Scenario {
            name: "slow leak 0.5%/h",
            fault: Fault::Leak(0.005),
        },
    ]
}

/// What one trial concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialOutcome {
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: &'static str,
    /// Device-hours the updated devices spent on the release until the verdict.
    pub device_hours: f64,
    /// Hours from the soak start to the verdict.
    pub hours: f64,
    /// Whether a reason named the injected fault.
    pub named_fault: bool,
    /// The reasons' labels (`crashes rate`, `new signature`, ...).
    pub reasons: Vec<String>,
}

fn label(r: &Reason) -> String {
    match r {
        Reason::Metric(m) => m.check.clone(),
        Reason::NewSignature(_) => "new signature".into(),
        Reason::MoreFrequentSignature(_) => "more frequent signature".into(),
    }
}

/// Runs one trial.
pub fn run_trial(
    model: &FleetModel,
    catalog: &Catalog,
    policy: &Policy,
    shape: StageShape,
    fault: Fault,
    seed: u64,
) -> TrialOutcome {
    let stage = simulate(model, catalog, shape, fault, seed);
    let end = stage
        .soak_start
        .checked_add(policy.spec().soak)
        .unwrap_or(stage.soak_start);
    let report = analyze(policy, &stage.data, stage.soak_start, end);
    let at = match report.verdict {
        Some(Verdict::Fail(_)) => report.at.unwrap_or(end),
        _ => end,
    };
    let device_hours = stage
        .commits
        .iter()
        .map(|c| at.duration_since(*c).as_secs_f64().max(0.0) / 3600.0)
        .sum();
    let reasons: &[Reason] = match &report.verdict {
        Some(Verdict::Fail(r)) => r,
        _ => &[],
    };
    let named_fault = reasons.iter().any(|r| match (fault, r) {
        (Fault::CrashRate(_), Reason::Metric(m)) => m.check == "crashes rate",
        (Fault::MemoryLevel(_), Reason::Metric(m)) => m.check == "memory_kib level",
        (Fault::Leak(_), Reason::Metric(m)) => m.check.starts_with("memory_kib "),
        (
            Fault::NewException { .. },
            Reason::NewSignature(s) | Reason::MoreFrequentSignature(s),
        ) => s.id == stage.new_exception,
        _ => false,
    });
    TrialOutcome {
        verdict: report.verdict.as_ref().map_or("none", Verdict::name),
        device_hours,
        hours: at.duration_since(stage.soak_start).as_secs_f64() / 3600.0,
        named_fault,
        reasons: reasons.iter().map(label).collect(),
    }
}

/// The outcomes of one scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The scenario.
    pub scenario: Scenario,
    /// Trials run.
    pub trials: usize,
    /// Verdicts.
    pub fail: usize,
    /// Verdicts.
    pub pass: usize,
    /// Verdicts.
    pub inconclusive: usize,
    /// Fails whose reasons named the injected fault.
    pub named: usize,
    /// Median device-hours to the verdict, over all trials.
    pub median_device_hours: f64,
    /// Median hours from soak start to the verdict.
    pub median_hours: f64,
    /// How often each reason was given.
    pub reasons: BTreeMap<String, usize>,
}

impl Summary {
    /// Fails as a fraction of trials: the detection rate of a bad release, the false-alarm
    /// rate of a good one.
    pub fn fail_rate(&self) -> f64 {
        self.fail as f64 / self.trials.max(1) as f64
    }

    /// The exact (Clopper–Pearson) 95 % interval of the fail rate.
    pub fn fail_interval(&self) -> (f64, f64) {
        clopper_pearson(self.fail, self.trials)
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    crate::verification::stats::special::median_in_place(&mut xs).unwrap_or(f64::NAN)
}

/// `P(X ≤ x)` for `X ~ Binomial(n, p)`.
fn binomial_cdf(x: usize, n: usize, p: f64) -> f64 {
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return if x >= n { 1.0 } else { 0.0 };
    }
    (0..=x.min(n))
        .map(|k| {
            (ln_choose(n as u64, k as u64) + k as f64 * p.ln() + (n - k) as f64 * (1.0 - p).ln())
                .exp()
        })
        .sum::<f64>()
        .min(1.0)
}

/// The exact two-sided 95 % interval for `x` successes in `n` trials, by bisection on the
/// binomial distribution.
pub fn clopper_pearson(x: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let solve = |f: &dyn Fn(f64) -> bool| {
        // f is true below the root and false above.
        let (mut lo, mut hi) = (0.0, 1.0);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if f(mid) { lo = mid } else { hi = mid }
        }
        0.5 * (lo + hi)
    };
    let lower = if x == 0 {
        0.0
    } else {
        solve(&|p| 1.0 - binomial_cdf(x - 1, n, p) < 0.025)
    };
    let upper = if x == n {
        1.0
    } else {
        solve(&|p| binomial_cdf(x, n, p) > 0.025)
    };
    (lower, upper)
}

/// One evaluation: a fleet, a policy and a stage shape.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The simulated fleet.
    pub model: FleetModel,
    /// The policy under test.
    pub policy: Policy,
    /// Updated devices.
    pub canary: usize,
    /// Baseline devices.
    pub baseline: usize,
}

impl Setup {
    /// The same setup with another canary size and soak (the policy's warm-up and looks
    /// stay).
    pub fn with(&self, canary: usize, soak: SignedDuration) -> Result<Setup, String> {
        let spec = PolicySpec {
            soak,
            ..self.policy.spec().clone()
        };
        Ok(Setup {
            model: self.model.clone(),
            policy: Policy::new(spec).map_err(|e| e.to_string())?,
            canary,
            baseline: self.baseline,
        })
    }
}

/// Runs `trials` trials of each scenario on `threads` threads.
pub fn run(
    setup: &Setup,
    scenarios: &[Scenario],
    trials: usize,
    seed: u64,
    threads: usize,
) -> Vec<Summary> {
    let catalog = Catalog::new(&setup.model);
    let shape = StageShape {
        updated: setup.canary,
        baseline: setup.baseline,
        soak: setup.policy.spec().soak,
    };
    scenarios
        .iter()
        .enumerate()
        .map(|(k, scenario)| {
            let trial_seed = |i: usize| splitmix64(seed ^ splitmix64((k as u64) << 32 | i as u64));
            let one = |i: usize| {
                run_trial(
                    &setup.model,
                    &catalog,
                    &setup.policy,
                    shape,
                    scenario.fault,
                    trial_seed(i),
                )
            };
            let threads = threads.clamp(1, trials.max(1));
            let outcomes: Vec<TrialOutcome> = if threads == 1 {
                (0..trials).map(one).collect()
            } else {
                std::thread::scope(|s| {
                    let handles: Vec<_> = (0..threads)
                        .map(|t| {
                            let one = &one;
                            s.spawn(move || {
                                (t..trials)
                                    .step_by(threads)
                                    .map(|i| (i, one(i)))
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    let mut all: Vec<(usize, TrialOutcome)> = handles
                        .into_iter()
                        // A trial that panics is a bug to see, not a trial to drop
                        // from the counts.
                        .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                        .collect();
                    all.sort_by_key(|(i, _)| *i);
                    all.into_iter().map(|(_, o)| o).collect()
                })
            };
            summarize(*scenario, &outcomes)
        })
        .collect()
}

/// Counts outcomes.
pub fn summarize(scenario: Scenario, outcomes: &[TrialOutcome]) -> Summary {
    let count = |v: &str| outcomes.iter().filter(|o| o.verdict == v).count();
    let mut reasons = BTreeMap::new();
    for o in outcomes {
        for r in &o.reasons {
            *reasons.entry(r.clone()).or_default() += 1;
        }
    }
    Summary {
        scenario,
        trials: outcomes.len(),
        fail: count("fail"),
        pass: count("pass"),
        inconclusive: count("inconclusive"),
        named: outcomes.iter().filter(|o| o.named_fault).count(),
        median_device_hours: median(outcomes.iter().map(|o| o.device_hours).collect()),
        median_hours: median(outcomes.iter().map(|o| o.hours).collect()),
        reasons,
    }
}

fn percent(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// The results of one setup as a Markdown table.
pub fn table(summaries: &[Summary]) -> String {
    let mut out = String::from(
        "| scenario | trials | fail | pass | inconclusive | fail naming the fault | 95% interval of fail rate | median device-hours to verdict | median hours to verdict |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in summaries {
        let (lo, hi) = s.fail_interval();
        let _ = writeln!(
            out,
            "| {} | {} | {} ({}) | {} | {} | {} | {}–{} | {:.0} | {:.1} |",
            s.scenario.name,
            s.trials,
            s.fail,
            percent(s.fail_rate()),
            s.pass,
            s.inconclusive,
            s.named,
            percent(lo),
            percent(hi),
            s.median_device_hours,
            s.median_hours
        );
    }
    out
}

/// Which reasons the fails gave, per scenario.
pub fn reasons_table(summaries: &[Summary]) -> String {
    let mut out = String::from("| scenario | reasons given (trials) |\n|---|---|\n");
    for s in summaries {
        let reasons: Vec<String> = s
            .reasons
            .iter()
            .map(|(r, n)| format!("{r} ({n})"))
            .collect();
        let _ = writeln!(out, "| {} | {} |", s.scenario.name, reasons.join(", "));
    }
    out
}

/// One row of the trade-off table.
#[derive(Debug, Clone)]
pub struct GridRow {
    /// Updated devices.
    pub canary: usize,
    /// The soak.
    pub soak: SignedDuration,
    /// Per scenario, in [`scenarios`] order.
    pub summaries: Vec<Summary>,
}

/// The trade-off table: canary size × soak → false alarms, detection per bad scenario,
/// device-hours.
pub fn grid_table(rows: &[GridRow]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let mut out = String::from("| canary | soak |");
    for s in &first.summaries {
        let what = if s.scenario.fault == Fault::None {
            "false alarms"
        } else {
            "detected"
        };
        let _ = write!(out, " {}: {what} |", s.scenario.name);
    }
    out.push_str(" median device-hours (good / worst bad) |\n|---|---|");
    for _ in &first.summaries {
        out.push_str("---|");
    }
    out.push_str("---|\n");
    for r in rows {
        let _ = write!(out, "| {} | {:#} |", r.canary, r.soak);
        for s in &r.summaries {
            let _ = write!(out, " {} |", percent(s.fail_rate()));
        }
        let good = r
            .summaries
            .iter()
            .find(|s| s.scenario.fault == Fault::None)
            .map_or(f64::NAN, |s| s.median_device_hours);
        let worst = r
            .summaries
            .iter()
            .filter(|s| s.scenario.fault != Fault::None)
            .map(|s| s.median_device_hours)
            .fold(f64::NAN, f64::max);
        let _ = writeln!(out, " {good:.0} / {worst:.0} |");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known Clopper–Pearson intervals: 0 of 200 → [0, 1 − 0.025^(1/200)] = [0, 1.8275 %]
    /// (closed form); 10 of 100 → [4.9005 %, 17.6223 %] as R's `binom.test` prints;
    /// 200 of 200 → [0.025^(1/200), 1].
    #[test]
    fn clopper_pearson_known_values() {
        let (lo, hi) = clopper_pearson(0, 200);
        assert_eq!(lo, 0.0);
        assert!(
            (hi - (1.0 - 0.025_f64.powf(1.0 / 200.0))).abs() < 1e-9,
            "{hi}"
        );
        let (lo, hi) = clopper_pearson(10, 100);
        assert!((lo - 0.049_004_69).abs() < 1e-7, "{lo}");
        assert!((hi - 0.176_222_60).abs() < 1e-7, "{hi}");
        let (lo, hi) = clopper_pearson(200, 200);
        assert!((lo - 0.025_f64.powf(1.0 / 200.0)).abs() < 1e-9);
        assert_eq!(hi, 1.0);
    }
}
