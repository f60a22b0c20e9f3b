//! Verdicts on hand-built stages: what passes, what fails and why, what is inconclusive,
//! and that the sequential looks behave the same however often the analysis is called.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod verification_common;

use expect_test::expect;
use swell_controller::verification::{
    Arm, CheckState, Policy, Reason, Shortfall, SignatureId, StageReport, Verdict, analyze,
};
use verification_common::{SOAK, at, device, log, soak_start, stage};

fn analyze_at(data: &swell_controller::verification::StageData, minutes: i64) -> StageReport {
    analyze(&Policy::recommended(), data, soak_start(), at(minutes))
}

fn reasons(report: &StageReport) -> &[Reason] {
    match &report.verdict {
        Some(Verdict::Fail(r)) => r,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// 20 updated and 80 baseline devices that behave alike: no verdict during the soak
/// (looks every 30 minutes after the 30-minute warm-up: 15 looks), a pass at its end.
#[test]
fn alike_devices_pass_after_the_soak() {
    let data = stage(20, 80, 1.0);
    let before = analyze_at(&data, 0);
    assert_eq!((before.verdict.clone(), before.look), (None, 0));
    let during = analyze_at(&data, 200);
    assert_eq!(
        (during.verdict.clone(), during.look, during.looks),
        (None, 5, 15)
    );
    let after = analyze_at(&data, SOAK);
    assert_eq!(after.verdict, Some(Verdict::Pass));
    assert_eq!((after.look, after.at), (15, Some(at(SOAK))));
    assert_eq!((after.matched, after.reporting), ((20, 80), (20, 80)));
    for (check, state) in &after.checks {
        assert!(
            matches!(
                state,
                CheckState::Evaluated {
                    significant: false,
                    ..
                }
            ),
            "{check}: {state:?}"
        );
    }
}

/// Updated devices use 30 % more memory: the level check fails the stage at the first
/// look, and the reason says which metric, how much, and how sure.
#[test]
fn more_memory_fails_with_the_effect_and_p_value() {
    let data = stage(20, 80, 1.3);
    let report = analyze_at(&data, SOAK);
    assert_eq!(report.look, 1);
    assert_eq!(report.at, Some(at(60)));
    let text = reasons(&report)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>();
    expect![[r#"
        [
            "memory_kib level: shift +29.7% (median 142350 vs 109776, Cliff's delta 1.00); p = 2.8e-12 (Mann-Whitney against the floor, level 2.1e-7); 20 updated vs 80 baseline devices",
        ]
    "#]]
    .assert_debug_eq(&text);
}

/// A never-seen error on three updated devices fails the stage once two of them have
/// logged it, and the reason carries the template and an example line; the same error on
/// one device only is a note, not a failure.
#[test]
fn new_signature_fails_once_two_devices_log_it() {
    let line = "panic: index out of range [7] with length 7 in uplink::drain";
    let mut data = stage(20, 80, 1.0);
    log(&mut data, 0, line, 70, SOAK); // in look 2 (60–90 min)
    log(&mut data, 1, line, 130, SOAK); // in look 4 (120–150 min)
    log(&mut data, 2, line, 200, SOAK);
    let report = analyze_at(&data, SOAK);
    assert_eq!(report.look, 4);
    let text = reasons(&report)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>();
    expect![[r#"
        [
            "new error signature 1861c3be53abe43a on 2 of 20 updated devices (12 lines) and 0 of 80 baseline devices: \"panic: index out of range [<NUM>] with length <NUM> in uplink::drain\"; example: \"panic: index out of range [7] with length 7 in uplink::drain\"",
        ]
    "#]]
    .assert_debug_eq(&text);
    // At look 3 only one device had logged it: a note.
    let early = analyze_at(&data, 120);
    assert_eq!(early.verdict, None);
    assert_eq!(early.single_device_signatures.len(), 1);
    assert_eq!(early.single_device_signatures[0].updated, (1, 6));
}

/// A signature is not new if the old release logged it: listed as known from history,
/// logged by a baseline device (even before the soak), or by an updated device before
/// its commit.
#[test]
fn signatures_the_old_release_logged_are_not_new() {
    let line = "modbus: read of register 40001 timed out";
    let id = swell_controller::verification::Signature::of_line(line).id;
    let on_three = |data: &mut swell_controller::verification::StageData| {
        for i in 0..3 {
            log(data, i, line, 70, SOAK);
        }
    };
    let mut known = stage(20, 80, 1.0);
    on_three(&mut known);
    known.known_signatures.insert(id);
    let mut baseline = stage(20, 80, 1.0);
    on_three(&mut baseline);
    log(&mut baseline, 50, line, -30, -30);
    let mut before_commit = stage(20, 80, 1.0);
    on_three(&mut before_commit);
    log(&mut before_commit, 5, line, -20, -20);
    for data in [known, baseline, before_commit] {
        assert_eq!(analyze_at(&data, SOAK).verdict, Some(Verdict::Pass));
    }
}

/// A signature the baseline logs on one device in 80 but the updated devices on 12 of 20
/// is more frequent: Fisher's test fails the stage, naming both counts.
#[test]
fn more_frequent_signature_fails_by_fisher() {
    let line = "uplink: reconnecting after 3 missed keepalives";
    let mut data = stage(20, 80, 1.0);
    for i in 0..12 {
        log(&mut data, i, line, 40, SOAK);
    }
    log(&mut data, 20, line, 40, SOAK);
    let report = analyze_at(&data, SOAK);
    let Reason::MoreFrequentSignature(s) = &reasons(&report)[0] else {
        panic!("{report:?}")
    };
    assert_eq!(
        (s.updated.0, s.baseline_devices, s.reporting),
        (12, 1, (20, 80))
    );
    let (p, level) = s.fisher.unwrap();
    assert!(p <= level, "{p} > {level}");
}

/// Crashes: 20 updated devices with 2 crashes an hour each against 80 with none fail the
/// rate check; with 1 an hour on both sides nothing fails.
#[test]
fn crash_rate_fails_the_stage() {
    let with_crashes = |updated_per_batch: u64, baseline_per_batch: u64| {
        let mut data = stage(20, 80, 1.0);
        for d in &mut data.devices {
            let per = match d.meta.arm {
                Arm::Updated { .. } => updated_per_batch,
                Arm::Baseline => baseline_per_batch,
            };
            for (k, p) in d
                .counters
                .get_mut("crashes")
                .unwrap()
                .iter_mut()
                .enumerate()
            {
                // One crash every `6/per` batches, so `per` crashes an hour.
                p.count = u64::from(per > 0 && (k as u64).is_multiple_of(6 / per.max(1)));
            }
        }
        data
    };
    let bad = analyze_at(&with_crashes(2, 0), SOAK);
    assert!(
        reasons(&bad)
            .iter()
            .any(|r| matches!(r, Reason::Metric(m) if m.check == "crashes rate")),
        "{bad:?}"
    );
    assert_eq!(
        analyze_at(&with_crashes(1, 1), SOAK).verdict,
        Some(Verdict::Pass)
    );
}

/// Updated devices of a hardware model with fewer than 10 not-yet-updated devices to
/// compare with cannot be judged: inconclusive, naming the model. Other hardware never
/// stands in for it.
#[test]
fn no_comparable_baseline_is_inconclusive() {
    let mut data = stage(20, 0, 1.0);
    for i in 0..80 {
        data.devices.push(device(
            &format!("other-{i:03}"),
            "gw-b",
            "Europe/Berlin",
            Arm::Baseline,
            400_000.0,
        ));
    }
    let report = analyze_at(&data, SOAK);
    let Some(Verdict::Inconclusive(short)) = &report.verdict else {
        panic!("{report:?}")
    };
    assert_eq!(
        short[0],
        Shortfall::NoBaseline {
            hardware: "gw-a".into(),
            updated: 20,
            baseline: 0
        }
    );
    assert_eq!(report.matched, (0, 0));
}

/// When most updated devices are silent the stage is inconclusive, not a pass.
#[test]
fn silent_updated_devices_are_inconclusive() {
    let mut data = stage(20, 80, 1.0);
    for d in data.devices.iter_mut().take(17) {
        d.counters.clear();
        d.gauges.clear();
    }
    let report = analyze_at(&data, SOAK);
    let Some(Verdict::Inconclusive(short)) = &report.verdict else {
        panic!("{report:?}")
    };
    assert!(
        short.contains(&Shortfall::TooFewUpdated { have: 3, need: 5 }),
        "{short:?}"
    );
    let text = Verdict::Inconclusive(short.clone()).to_string();
    assert!(
        text.starts_with("inconclusive\n  3 updated devices reported; 5 needed"),
        "{text}"
    );
}

/// Matching: with enough baseline devices in each zone, devices are compared within their
/// zone; with too few, within their hardware model only.
#[test]
fn strata_use_the_zone_where_the_baseline_allows() {
    let mut data = stage(10, 40, 1.0);
    for i in 0..10 {
        data.devices.push(device(
            &format!("tokyo-new-{i}"),
            "gw-a",
            "Asia/Tokyo",
            verification_common::updated(),
            100_000.0,
        ));
    }
    for i in 0..12 {
        data.devices.push(device(
            &format!("tokyo-old-{i}"),
            "gw-a",
            "Asia/Tokyo",
            Arm::Baseline,
            100_000.0,
        ));
    }
    let keys = |data: &swell_controller::verification::StageData| {
        analyze_at(data, SOAK)
            .strata
            .iter()
            .map(|s| format!("{} {}+{}", s.key, s.updated, s.baseline))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&data),
        [
            "gw-a Europe/Berlin cohort=none 10+40",
            "gw-a Asia/Tokyo cohort=none 10+12"
        ]
    );
    data.devices.truncate(data.devices.len() - 5);
    assert_eq!(keys(&data), ["gw-a 20+47"]);
}

/// The analysis at any `now` evaluates every look up to `now` on the data that ends by it:
/// calling it at each look, or once at the end, fails at the same look with the same
/// reasons; and data from after `now` changes nothing.
#[test]
fn looks_are_the_same_however_often_it_is_called() {
    let line = "watchdog: service gatewayd restarted 4 times";
    let mut data = stage(20, 80, 1.0);
    for (i, first) in [190, 200, 210, 220].into_iter().enumerate() {
        log(&mut data, i, line, first, SOAK);
    }
    let once = analyze_at(&data, SOAK);
    assert_eq!(once.look, 6);
    let mut first_fail = None;
    for minutes in (30..=SOAK).step_by(30) {
        let r = analyze_at(&data, minutes);
        if r.verdict.is_some() {
            first_fail = Some(r);
            break;
        }
    }
    assert_eq!(first_fail.unwrap(), once);
    // Before the failing look the future is invisible.
    assert_eq!(analyze_at(&data, 179).verdict, None);
    let _: SignatureId = swell_controller::verification::Signature::of_line(line).id;
}
