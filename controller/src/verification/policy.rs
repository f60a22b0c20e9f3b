//! The verification policy of a stage: how long to soak, how often to look, the family-wise
//! false-alarm rate, and the checks. [`PolicySpec`] is plain data (what a plan file or an API
//! request would fill in); [`Policy`] is a spec that passed [`Policy::new`], so the analysis
//! never meets an α of 3 or a negative soak.
//!
//! [`Policy::recommended`] is the policy docs/verification.md evaluates: the canary size and
//! soak it states are for these checks and this α.

use jiff::SignedDuration;

use super::stats::Direction;

/// At most this many looks per soak: a look every minute for a day. More looks cost α only
/// for the tests that spend it per look, but each look re-reads the stage's data.
pub const MAX_LOOKS: i64 = 1440;

/// How a gauge is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// As a ratio (`ln` of the value; shifts reported in percent). For values that are
    /// positive and whose spread grows with their size: memory, CPU, boot time.
    Relative,
    /// As a difference, in the metric's unit. For values that may be zero or negative.
    Absolute,
}

/// What one check compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CheckKind {
    /// A counter as a rate per device-hour (mixture SPRT on the rate ratio). Fails when the
    /// ratio in the harmful direction is at least `min_ratio` (for `Decrease`, when the
    /// baseline's rate is at least `min_ratio` times the updated one).
    Rate {
        /// Which way is harmful.
        worse: Direction,
        /// The effect-size floor, a ratio ≥ 1.
        min_ratio: f64,
    },
    /// A gauge's level: each device's mean over the window, Mann–Whitney between the sides.
    /// Fails when the Hodges–Lehmann shift is at least `min_shift` in the harmful direction
    /// (a fraction for [`Scale::Relative`]: 0.05 is 5 %).
    Level {
        /// Which way is harmful.
        worse: Direction,
        /// Ratio or difference.
        scale: Scale,
        /// The effect-size floor.
        min_shift: f64,
    },
    /// A gauge's trend: each device's least-squares slope over the window (per hour, and
    /// for [`Scale::Relative`] as a fraction of its own mean), Mann–Whitney between the
    /// sides. Catches leaks that a level check sees only after days.
    Trend {
        /// Which way is harmful.
        worse: Direction,
        /// Fraction of the device's level per hour, or units per hour.
        scale: Scale,
        /// The effect-size floor, per hour.
        min_shift_per_hour: f64,
    },
}

impl CheckKind {
    /// `rate`, `level` or `trend`.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Rate { .. } => "rate",
            CheckKind::Level { .. } => "level",
            CheckKind::Trend { .. } => "trend",
        }
    }

    /// Which way is harmful.
    pub fn worse(&self) -> Direction {
        match *self {
            CheckKind::Rate { worse, .. }
            | CheckKind::Level { worse, .. }
            | CheckKind::Trend { worse, .. } => worse,
        }
    }
}

/// One check of one metric: one member of the family of tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The metric's name in the devices' series.
    pub metric: String,
    /// What is compared.
    pub kind: CheckKind,
    /// Its share of α relative to the other checks (1 for an equal share).
    pub weight: f64,
}

impl Check {
    /// `metric kind`, such as `crashes rate`: how reports name the check.
    pub fn label(&self) -> String {
        format!("{} {}", self.metric, self.kind.name())
    }
}

/// Error signatures: new ones by rule, more frequent ones by test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignatureRule {
    /// A signature neither known nor on the baseline fails the stage once this many
    /// updated devices logged it.
    pub min_devices_new: usize,
    /// A signature the baseline logs too fails the stage when Fisher's test says the
    /// updated devices log it more often *and* their share of devices logging it is at
    /// least this many times the baseline's.
    pub min_incidence_ratio: f64,
    /// The share of α for the Fisher tests of all signatures together, relative to a check.
    pub weight: f64,
}

/// The policy as plain data; see [`Policy::new`] for the rules it must follow.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    /// From the stage's soak start (its devices committed) to its verdict.
    pub soak: SignedDuration,
    /// Left out at the start of the soak, and after each late device's commit: caches
    /// filling and services starting are not the release's steady state.
    pub warmup: SignedDuration,
    /// Time between looks. The last look is at the end of the soak.
    pub look_every: SignedDuration,
    /// The family-wise false-alarm rate: the most often a good release may fail a stage,
    /// over all checks, signatures and looks together.
    pub alpha: f64,
    /// The checks.
    pub checks: Vec<Check>,
    /// The signature rules.
    pub signatures: SignatureRule,
    /// Baseline devices a stratum (hardware, then zone, then cohort) needs before the
    /// analysis matches on it; with fewer it matches more coarsely.
    pub min_baseline_per_stratum: usize,
    /// Updated devices that must report for a check, or the stage, to be judged.
    pub min_updated_devices: usize,
    /// Baseline devices that must report for a check, or the stage, to be judged.
    pub min_baseline_devices: usize,
}

/// Why a [`PolicySpec`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid verification policy: {0}")]
pub struct InvalidPolicy(pub String);

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    spec: PolicySpec,
}

impl Policy {
    /// Validates `spec`: a positive soak longer than the warm-up, positive look interval
    /// with at most [`MAX_LOOKS`] looks, `0 < α ≤ 0.5`, positive finite weights, rate floors
    /// of at least 1, non-negative shift floors, each (metric, kind) once, and minimum
    /// device counts of at least 1.
    pub fn new(spec: PolicySpec) -> Result<Policy, InvalidPolicy> {
        let bad = |why: String| Err(InvalidPolicy(why));
        if spec.soak <= SignedDuration::ZERO {
            return bad(format!("soak must be positive, not {:#}", spec.soak));
        }
        if spec.warmup < SignedDuration::ZERO || spec.warmup >= spec.soak {
            return bad(format!(
                "warm-up must be at least 0 and shorter than the soak ({:#}), not {:#}",
                spec.soak, spec.warmup
            ));
        }
        if spec.look_every <= SignedDuration::ZERO {
            return bad(format!(
                "look_every must be positive, not {:#}",
                spec.look_every
            ));
        }
        let window = spec.soak - spec.warmup;
        let every = spec.look_every.as_secs().max(1);
        let looks = (window.as_secs() + every - 1) / every;
        if looks > MAX_LOOKS {
            return bad(format!(
                "{looks} looks in the soak; at most {MAX_LOOKS} (look less often)"
            ));
        }
        if !(spec.alpha > 0.0 && spec.alpha <= 0.5) {
            return bad(format!("alpha must be in (0, 0.5], not {}", spec.alpha));
        }
        let weight_ok = |w: f64| w.is_finite() && w > 0.0;
        if !weight_ok(spec.signatures.weight) {
            return bad("the signature weight must be positive".into());
        }
        if spec.signatures.min_devices_new == 0 {
            return bad("signatures.min_devices_new must be at least 1".into());
        }
        if !(spec.signatures.min_incidence_ratio >= 1.0
            && spec.signatures.min_incidence_ratio.is_finite())
        {
            return bad("signatures.min_incidence_ratio must be at least 1".into());
        }
        for (i, check) in spec.checks.iter().enumerate() {
            let label = check.label();
            if check.metric.is_empty() {
                return bad("a check has an empty metric name".into());
            }
            if !weight_ok(check.weight) {
                return bad(format!("{label}: weight must be positive"));
            }
            let floor_ok = match check.kind {
                CheckKind::Rate { min_ratio, .. } => min_ratio.is_finite() && min_ratio >= 1.0,
                // A fall of 100 % or more is no floor at all.
                CheckKind::Level {
                    worse: Direction::Decrease,
                    scale: Scale::Relative,
                    min_shift,
                } => (0.0..1.0).contains(&min_shift),
                CheckKind::Level { min_shift, .. } => min_shift.is_finite() && min_shift >= 0.0,
                CheckKind::Trend {
                    min_shift_per_hour, ..
                } => min_shift_per_hour.is_finite() && min_shift_per_hour >= 0.0,
            };
            if !floor_ok {
                return bad(format!(
                    "{label}: the effect floor must be finite, at least 1 for a rate, at least 0 for a shift and below 1 for a relative fall"
                ));
            }
            if spec.checks[..i].iter().any(|c| c.label() == label) {
                return bad(format!("{label} appears twice"));
            }
        }
        if spec.min_baseline_per_stratum == 0
            || spec.min_updated_devices == 0
            || spec.min_baseline_devices == 0
        {
            return bad("minimum device counts must be at least 1".into());
        }
        Ok(Policy { spec })
    }

    /// The policy docs/verification.md evaluates: an 8-hour soak with a 30-minute warm-up,
    /// a look every 30 minutes, α = 0.005 over the whole family, and checks of the metric
    /// names the agent reports. With 150 canaries it detects each of the evaluated bad
    /// releases at least 99 % of the time (most within 3 hours) and fails no good one.
    pub fn recommended() -> Policy {
        let rate = |metric: &str, min_ratio: f64| Check {
            metric: metric.into(),
            kind: CheckKind::Rate {
                worse: Direction::Increase,
                min_ratio,
            },
            weight: 1.0,
        };
        let spec = PolicySpec {
            soak: SignedDuration::from_hours(8),
            warmup: SignedDuration::from_mins(30),
            look_every: SignedDuration::from_mins(30),
            alpha: 0.005,
            checks: vec![
                rate("crashes", 1.25),
                rate("reboots", 1.5),
                rate("health_check_failures", 1.5),
                Check {
                    metric: "memory_kib".into(),
                    kind: CheckKind::Level {
                        worse: Direction::Increase,
                        scale: Scale::Relative,
                        min_shift: 0.05,
                    },
                    weight: 1.0,
                },
                Check {
                    metric: "memory_kib".into(),
                    kind: CheckKind::Trend {
                        worse: Direction::Increase,
                        scale: Scale::Relative,
                        min_shift_per_hour: 0.003,
                    },
                    weight: 1.0,
                },
                Check {
                    metric: "cpu_percent".into(),
                    kind: CheckKind::Level {
                        worse: Direction::Increase,
                        scale: Scale::Relative,
                        min_shift: 0.10,
                    },
                    weight: 1.0,
                },
            ],
            signatures: SignatureRule {
                min_devices_new: 2,
                min_incidence_ratio: 3.0,
                weight: 1.0,
            },
            min_baseline_per_stratum: 10,
            min_updated_devices: 5,
            min_baseline_devices: 10,
        };
        // The spec above is a constant that satisfies every rule of `new`; the unit test
        // `recommended_is_valid` proves it.
        #[allow(clippy::expect_used)]
        Policy::new(spec).expect("the recommended policy is valid")
    }

    /// The validated spec.
    /// The recommended checks over a rollout stage's soak: `warmup` and `look_every` as
    /// given, and at least `min_updated` updated and `min_baseline` baseline devices reporting
    /// (a new signature fails the stage once it is on 2 updated devices, or on every one when
    /// fewer must report).
    pub fn for_stage(
        soak: SignedDuration,
        warmup: SignedDuration,
        look_every: SignedDuration,
        min_updated: usize,
        min_baseline: usize,
    ) -> Result<Policy, InvalidPolicy> {
        let mut spec = Policy::recommended().spec;
        spec.soak = soak;
        spec.warmup = warmup;
        spec.look_every = look_every;
        spec.min_updated_devices = min_updated;
        spec.min_baseline_devices = min_baseline;
        spec.min_baseline_per_stratum = min_baseline;
        spec.signatures.min_devices_new = min_updated.clamp(1, 2);
        Policy::new(spec)
    }

    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PolicySpec {
        Policy::recommended().spec().clone()
    }

    #[test]
    fn recommended_is_valid() {
        assert!(Policy::new(spec()).is_ok());
    }

    /// One way to break a spec, and what the refusal must say.
    type Case = (Box<dyn Fn(&mut PolicySpec)>, &'static str);

    /// Each rule, broken once, with the message an operator would read.
    #[test]
    fn refusals() {
        let cases: Vec<Case> = vec![
            (
                Box::new(|s| s.soak = SignedDuration::ZERO),
                "soak must be positive",
            ),
            (
                Box::new(|s| s.warmup = SignedDuration::from_hours(9)),
                "warm-up must be at least 0 and shorter than the soak",
            ),
            (
                Box::new(|s| s.look_every = SignedDuration::ZERO),
                "look_every",
            ),
            (
                Box::new(|s| s.look_every = SignedDuration::from_secs(1)),
                "looks in the soak",
            ),
            (Box::new(|s| s.alpha = 0.0), "alpha"),
            (Box::new(|s| s.alpha = f64::NAN), "alpha"),
            (
                Box::new(|s| s.checks[0].weight = -1.0),
                "crashes rate: weight",
            ),
            (
                Box::new(|s| {
                    s.checks[0].kind = CheckKind::Rate {
                        worse: Direction::Increase,
                        min_ratio: 0.5,
                    }
                }),
                "crashes rate: the effect floor",
            ),
            (
                Box::new(|s| {
                    let c = s.checks[3].clone();
                    s.checks.push(c)
                }),
                "memory_kib level appears twice",
            ),
            (
                Box::new(|s| {
                    s.checks[5].kind = CheckKind::Level {
                        worse: Direction::Decrease,
                        scale: Scale::Relative,
                        min_shift: 1.0,
                    }
                }),
                "cpu_percent level: the effect floor",
            ),
            (
                Box::new(|s| s.signatures.min_devices_new = 0),
                "min_devices_new",
            ),
            (
                Box::new(|s| s.min_baseline_devices = 0),
                "minimum device counts",
            ),
        ];
        for (change, why) in cases {
            let mut s = spec();
            change(&mut s);
            let err = Policy::new(s).unwrap_err().to_string();
            assert!(err.contains(why), "{err:?} should say {why:?}");
        }
    }
}
