//! What the analysis concludes, with the evidence: the rollout gate acts on the [`Verdict`];
//! the audit log and `swellctl rollout show` print the reasons, which name the metric, the
//! effect size, the p-value or likelihood ratio and the threshold it crossed, or the new
//! signature with an example line.
//!
//! Internal types (no serde): the executor converts them at its edge. `Display` gives the
//! one-line forms for people.

use std::fmt;

use jiff::Timestamp;

use super::policy::Scale;
use super::signatures::SignatureId;

/// The verdict of a stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The soak ended with enough data and nothing failed.
    Pass,
    /// Something failed; the reasons say what. May come at any look.
    Fail(Vec<Reason>),
    /// The soak ended without enough data to judge; the shortfalls say what was missing.
    Inconclusive(Vec<Shortfall>),
}

impl Verdict {
    /// `pass`, `fail` or `inconclusive`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail(_) => "fail",
            Verdict::Inconclusive(_) => "inconclusive",
        }
    }
}

/// Why a stage failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// A metric check was significant and its effect cleared the floor.
    Metric(MetricFinding),
    /// A signature the old release never logged, on several updated devices.
    NewSignature(SignatureFinding),
    /// A signature the baseline logs too, on far more of the updated devices.
    MoreFrequentSignature(SignatureFinding),
}

/// How big a metric's difference is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// Rates per device-hour and their Mantel–Haenszel ratio (updated / baseline).
    RateRatio {
        /// The ratio.
        ratio: f64,
        /// Updated events per device-hour.
        updated_rate: f64,
        /// Baseline events per device-hour.
        baseline_rate: f64,
    },
    /// A level's Hodges–Lehmann shift (a fraction for [`Scale::Relative`], else units).
    Shift {
        /// The shift, updated minus baseline.
        shift: f64,
        /// How `shift` is expressed.
        scale: Scale,
        /// Cliff's delta, −1 to 1.
        cliffs_delta: f64,
        /// Median of the updated devices' means.
        updated_median: f64,
        /// Median of the baseline devices' means.
        baseline_median: f64,
    },
    /// A trend's Hodges–Lehmann shift per hour (fraction of level, or units).
    TrendShift {
        /// The shift per hour, updated minus baseline.
        per_hour: f64,
        /// How `per_hour` is expressed.
        scale: Scale,
        /// Cliff's delta, −1 to 1.
        cliffs_delta: f64,
    },
}

/// How sure the analysis is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Evidence {
    /// The mixture SPRT's likelihood ratio, against the threshold `1/level`.
    LikelihoodRatio {
        /// `Λ`.
        ratio: f64,
        /// The threshold it must reach.
        threshold: f64,
        /// The dispersion `φ` it was tempered by.
        dispersion: f64,
    },
    /// A one-sided p-value against its level at this look.
    PValue {
        /// The p-value.
        p: f64,
        /// The level (after α spending and Holm).
        level: f64,
        /// The test that gave it.
        test: &'static str,
    },
}

impl Evidence {
    /// The p-value (`1/Λ` for the SPRT, capped at 1).
    pub fn p_value(&self) -> f64 {
        match *self {
            Evidence::LikelihoodRatio { ratio, .. } => (1.0 / ratio).min(1.0),
            Evidence::PValue { p, .. } => p,
        }
    }
}

/// One metric check's numbers at one look.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFinding {
    /// The check's label, `metric kind`.
    pub check: String,
    /// The effect size.
    pub effect: Effect,
    /// The evidence.
    pub evidence: Evidence,
    /// Updated and baseline devices that contributed.
    pub devices: (usize, usize),
}

/// A signature's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct SignatureFinding {
    /// Its id.
    pub id: SignatureId,
    /// Its template (empty if the catalog lacks it).
    pub template: String,
    /// One line that produced it (empty if the catalog lacks it).
    pub example: String,
    /// Updated devices that logged it, and lines they logged.
    pub updated: (usize, u64),
    /// Baseline devices that logged it during the soak.
    pub baseline_devices: usize,
    /// Devices reporting on each side (the denominators).
    pub reporting: (usize, usize),
    /// Fisher's one-sided p-value and its level, for a more frequent signature.
    pub fisher: Option<(f64, f64)>,
}

/// What was missing for a Pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Shortfall {
    /// Updated devices of this hardware have too few not-yet-updated devices to compare
    /// with.
    NoBaseline {
        /// The hardware.
        hardware: String,
        /// Its updated devices.
        updated: usize,
        /// Its baseline candidates.
        baseline: usize,
    },
    /// Too few updated devices reported.
    TooFewUpdated {
        /// Reporting.
        have: usize,
        /// Needed.
        need: usize,
    },
    /// Too few baseline devices reported.
    TooFewBaseline {
        /// Reporting.
        have: usize,
        /// Needed.
        need: usize,
    },
    /// A check could not be computed.
    CheckNotEvaluated {
        /// The check's label.
        check: String,
        /// Why.
        why: String,
    },
}

/// A check's state at one look.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckState {
    /// Not enough devices reported the metric.
    NotEvaluated(String),
    /// Computed.
    Evaluated {
        /// The numbers.
        finding: MetricFinding,
        /// Rejected at its level (after Holm).
        significant: bool,
        /// The effect cleared the floor in the harmful direction.
        above_floor: bool,
    },
}

/// The report of one call of the analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct StageReport {
    /// `None` while the soak goes on and nothing has failed.
    pub verdict: Option<Verdict>,
    /// The look the report describes: the failing one, else the latest (1-based; 0 before
    /// the first look).
    pub look: usize,
    /// Looks in the whole soak.
    pub looks: usize,
    /// When that look was (its data ends there).
    pub at: Option<Timestamp>,
    /// Each check's state at that look, in policy order.
    pub checks: Vec<(String, CheckState)>,
    /// Signatures new to this release but on fewer updated devices than the rule needs:
    /// worth a look, not a failure.
    pub single_device_signatures: Vec<SignatureFinding>,
    /// How devices were matched.
    pub strata: Vec<StratumSummary>,
    /// Updated and baseline devices that reported at that look (of the matched ones).
    pub reporting: (usize, usize),
    /// Updated and baseline devices matched into strata.
    pub matched: (usize, usize),
}

/// One stratum of the comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StratumSummary {
    /// `hardware`, `hardware zone` or `hardware zone cohort=name`.
    pub key: String,
    /// Updated devices in it.
    pub updated: usize,
    /// Baseline devices in it.
    pub baseline: usize,
}

/// A p-value or ratio in a short, readable form: `0.031`, `2.06`, `2970`, `4.2e-7`, `1.5e4`.
fn num(x: f64) -> String {
    let a = x.abs();
    if x == 0.0 || (1e-3..100.0).contains(&a) {
        format!("{}", (x * 1000.0).round() / 1000.0)
    } else if (100.0..1e4).contains(&a) {
        format!("{x:.0}")
    } else {
        format!("{x:.1e}")
    }
}

/// A measured value (a median, a rate): whole numbers from 1000 up, else three
/// significant digits.
fn value(x: f64) -> String {
    if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x == 0.0 || x.abs() >= 0.01 {
        format!("{}", (x * 1000.0).round() / 1000.0)
    } else {
        format!("{x:.2e}")
    }
}

fn signed_percent(x: f64) -> String {
    format!("{:+.1}%", 100.0 * x)
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Effect::RateRatio {
                ratio,
                updated_rate,
                baseline_rate,
            } => write!(
                f,
                "rate ratio {} ({} vs {} per device-hour)",
                num(ratio),
                value(updated_rate),
                value(baseline_rate)
            ),
            Effect::Shift {
                shift,
                scale,
                cliffs_delta,
                updated_median,
                baseline_median,
            } => {
                let shift = match scale {
                    Scale::Relative => signed_percent(shift),
                    Scale::Absolute => format!("{shift:+}"),
                };
                write!(
                    f,
                    "shift {shift} (median {} vs {}, Cliff's delta {:.2})",
                    value(updated_median),
                    value(baseline_median),
                    cliffs_delta
                )
            }
            Effect::TrendShift {
                per_hour,
                scale,
                cliffs_delta,
            } => {
                let shift = match scale {
                    Scale::Relative => format!("{:+.2}%", 100.0 * per_hour),
                    Scale::Absolute => format!("{per_hour:+}"),
                };
                write!(
                    f,
                    "slope {shift} per hour (Cliff's delta {cliffs_delta:.2})"
                )
            }
        }
    }
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Evidence::LikelihoodRatio {
                ratio,
                threshold,
                dispersion,
            } => write!(
                f,
                "likelihood ratio {} (threshold {}, dispersion {:.2})",
                num(ratio),
                num(threshold),
                dispersion
            ),
            Evidence::PValue { p, level, test } => {
                write!(f, "p = {} ({test}, level {})", num(p), num(level))
            }
        }
    }
}

impl fmt::Display for MetricFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}; {}; {} updated vs {} baseline devices",
            self.check, self.effect, self.evidence, self.devices.0, self.devices.1
        )
    }
}

impl fmt::Display for SignatureFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "signature {} on {} of {} updated devices ({} lines) and {} of {} baseline devices",
            self.id,
            self.updated.0,
            self.reporting.0,
            self.updated.1,
            self.baseline_devices,
            self.reporting.1
        )?;
        if let Some((p, level)) = self.fisher {
            write!(f, "; p = {} (Fisher, level {})", num(p), num(level))?;
        }
        write!(f, ": {:?}; example: {:?}", self.template, self.example)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Metric(m) => m.fmt(f),
            Reason::NewSignature(s) => write!(f, "new error {s}"),
            Reason::MoreFrequentSignature(s) => write!(f, "more frequent error {s}"),
        }
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shortfall::NoBaseline {
                hardware,
                updated,
                baseline,
            } => write!(
                f,
                "{updated} updated {hardware} devices have only {baseline} not-yet-updated devices to compare with"
            ),
            Shortfall::TooFewUpdated { have, need } => {
                write!(f, "{have} updated devices reported; {need} needed")
            }
            Shortfall::TooFewBaseline { have, need } => {
                write!(f, "{have} baseline devices reported; {need} needed")
            }
            Shortfall::CheckNotEvaluated { check, why } => write!(f, "{check}: {why}"),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        match self {
            Verdict::Pass => Ok(()),
            Verdict::Fail(reasons) => reasons.iter().try_for_each(|r| write!(f, "\n  {r}")),
            Verdict::Inconclusive(s) => s.iter().try_for_each(|r| write!(f, "\n  {r}")),
        }
    }
}
