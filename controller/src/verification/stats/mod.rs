//! The statistics of continuous verification, as pure functions of numbers: no devices, no
//! time stamps, no policy. Each is tested against values from textbooks, from R's
//! documentation or from an independent exact computation.
//!
//! | Module | What it holds |
//! |---|---|
//! | [`fisher`](mod@fisher) | Fisher's exact test for 2×2 tables of devices |
//! | [`mann_whitney`](mod@mann_whitney) | the Mann–Whitney U test, exact for small samples, else normal with tie correction |
//! | [`msprt`] | the mixture SPRT for a rate ratio, and the overdispersion estimate that tempers it |
//! | [`effect`] | effect sizes: Hodges–Lehmann shift, Mantel–Haenszel rate ratio (Cliff's delta is on [`MannWhitney`]) |
//! | [`multiple`] | α spending across looks, weighted Holm across checks, Tarone across signatures |
//! | [`special`] | `ln n!`, the normal tail, medians |

pub mod effect;
pub mod fisher;
pub mod mann_whitney;
pub mod msprt;
pub mod multiple;
pub mod special;

pub use effect::{hodges_lehmann, rate_ratio};
pub use fisher::{Fisher, Table2x2, fisher_exact};
pub use mann_whitney::{Alternative, MannWhitney, mann_whitney};
pub use msprt::{DeviceCount, MixtureSprt, RateCell, dispersion, log_likelihood_ratio};
pub use multiple::{Hypothesis, holm, spend_between, spent, tarone};

/// Which way a change is harmful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// More is worse (crashes, memory, boot time).
    Increase,
    /// Less is worse (requests served, free disk).
    Decrease,
}

impl Direction {
    /// `+1` for [`Direction::Increase`], `-1` for [`Direction::Decrease`]: multiply a
    /// difference by it to get the harm.
    pub fn sign(self) -> f64 {
        match self {
            Direction::Increase => 1.0,
            Direction::Decrease => -1.0,
        }
    }
}
