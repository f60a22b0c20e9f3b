//! Error signatures at one look: new ones by rule, more frequent ones by Fisher's exact test
//! on devices (Tarone-corrected across signatures).
//!
//! - **New**: logged after their commit by at least `min_devices_new` updated devices (any
//!   hardware: novelty needs no matched baseline), and never by the old release: not in the
//!   stage's `known_signatures`, not on any baseline device, not on an updated device before
//!   its commit. New signatures on fewer devices are reported as notes.
//! - **More frequent**: among matched devices reporting in their windows, the share of
//!   updated devices logging the signature against the share of baseline devices, one-sided
//!   Fisher, at the signature family's α for this look, with an incidence-ratio floor.

use std::collections::BTreeMap;

use super::series::Series;
use crate::verification::model::StageData;
use crate::verification::policy::PolicySpec;
use crate::verification::signatures::{Sighting, SignatureId, new_signatures};
use crate::verification::stats::{Table2x2, fisher_exact, tarone};
use crate::verification::verdict::{Reason, SignatureFinding};

/// What the signatures say at one look.
#[derive(Debug, Clone, Default)]
pub(crate) struct SignatureLook {
    pub(crate) reasons: Vec<Reason>,
    pub(crate) single_device: Vec<SignatureFinding>,
}

fn finding(data: &StageData, id: SignatureId) -> SignatureFinding {
    let entry = data.catalog.get(&id);
    SignatureFinding {
        id,
        template: entry.map(|s| s.template.clone()).unwrap_or_default(),
        example: entry.map(|s| s.example.clone()).unwrap_or_default(),
        updated: (0, 0),
        baseline_devices: 0,
        reporting: (0, 0),
        fisher: None,
    }
}

pub(crate) fn evaluate(
    spec: &PolicySpec,
    data: &StageData,
    series: &Series,
    j: usize,
    level: f64,
) -> SignatureLook {
    let reporting = |updated: bool, matched_only: bool| {
        series
            .devices
            .iter()
            .filter(|d| d.updated == updated && d.reporting_from.is_some_and(|f| f <= j))
            .filter(|d| !matched_only || d.stratum.is_some())
            .count()
    };
    let all_reporting = (reporting(true, false), reporting(false, false));

    let mut on_updated: BTreeMap<SignatureId, Sighting> = BTreeMap::new();
    for device in &series.after_commit {
        for (id, per_look) in device {
            let events: u64 = per_look[..=j].iter().sum();
            if events > 0 {
                let s = on_updated.entry(*id).or_default();
                s.devices += 1;
                s.events += events;
            }
        }
    }
    let old = series.old_release_by(j);
    let rule = spec.signatures;
    let new = new_signatures(
        &on_updated,
        &data.known_signatures,
        &old,
        rule.min_devices_new,
    );
    let mut out = SignatureLook::default();
    for (id, s) in new_signatures(&on_updated, &data.known_signatures, &old, 1) {
        let mut f = finding(data, id);
        f.updated = (s.devices, s.events);
        f.reporting = all_reporting;
        if new.iter().any(|(n, _)| *n == id) {
            out.reasons.push(Reason::NewSignature(f));
        } else {
            out.single_device.push(f);
        }
    }

    // Fisher on matched devices reporting by this look.
    let (n_u, n_b) = (reporting(true, true), reporting(false, true));
    if n_u == 0 || n_b == 0 {
        return out;
    }
    let mut incidence: BTreeMap<SignatureId, (u64, u64)> = BTreeMap::new();
    for (d, firsts) in series.devices.iter().zip(&series.in_window_first) {
        if d.reporting_from.is_none_or(|f| f > j) {
            continue;
        }
        for (id, &first) in firsts {
            if first <= j {
                let e = incidence.entry(*id).or_default();
                if d.updated {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
        }
    }
    let (n_u64, n_b64) = (n_u as u64, n_b as u64);
    let tables: Vec<(SignatureId, Table2x2)> = incidence
        .into_iter()
        .map(|(id, (a, c))| {
            let t = Table2x2 {
                a,
                b: n_u64.saturating_sub(a),
                c,
                d: n_b64.saturating_sub(c),
            };
            (id, t)
        })
        .collect();
    let min_p: Vec<f64> = tables.iter().map(|(_, t)| t.min_p_greater()).collect();
    let (tested_level, testable) = tarone(&min_p, level);
    for ((id, t), testable) in tables.iter().zip(testable) {
        if !testable || t.a == 0 || new.iter().any(|(n, _)| n == id) {
            continue;
        }
        let p = fisher_exact(*t).greater;
        let share = |x: u64, n: u64| x as f64 / n as f64;
        let ratio = share(t.a, n_u64) / share(t.c, n_b64);
        if p <= tested_level && ratio >= rule.min_incidence_ratio {
            let mut f = finding(data, *id);
            f.updated = (
                usize::try_from(t.a).unwrap_or(usize::MAX),
                on_updated.get(id).map_or(0, |s| s.events),
            );
            f.baseline_devices = usize::try_from(t.c).unwrap_or(usize::MAX);
            f.reporting = (n_u, n_b);
            f.fisher = Some((p, tested_level));
            out.reasons.push(Reason::MoreFrequentSignature(f));
        }
    }
    out
}
