//! A child MCU updated through the gateway, end to end: the real `swell-agent` on a simulated
//! board installs a child release (`swell-agent install` of a manifest whose artifact targets
//! the child) over a pty to the real firmware core running as the MCU. Whatever the new image
//! does, the MCU's own flash has the last word: the reports the gateway signed must say what
//! the MCU's `INFO` says.
//!
//! - a healthy image ends committed on the MCU; the gateway reports `downloading`,
//!   `installed`, `trial` and `committed`, each verified with the gateway's key, each naming
//!   what the MCU ran at that moment; afterwards a release below the child's committed counter
//!   is refused before the MCU is even asked;
//! - an image that crashes on every trial boot is reverted by the MCU's bootloader and
//!   reported `rolled_back` (with no `trial`: the gateway never saw it run);
//! - an image that runs but never confirms itself is reported `trial`, then `rolled_back`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod gateway_support;

use gateway_support::{
    CHILD, CHILD_RELEASE, ImageSpec, MAX_ATTEMPTS, Mcu, McuEvent, McuSetup, child_reports, gateway,
    layout, mcu_info, release_for, running_version,
};
use swell_firmware::Phase;
use swell_proto::messages::{ChildReport, UpdateState};

/// The version a report says the child runs.
fn version(r: &ChildReport) -> String {
    r.running.version.as_ref().unwrap().to_string()
}

fn states(reports: &[(u64, ChildReport)]) -> Vec<UpdateState> {
    reports.iter().map(|(_, r)| r.state).collect()
}

/// Every report is about the child, from this gateway, for the release installed, in
/// strictly rising sequence.
fn check_envelope(reports: &[(u64, ChildReport)], release_version: &str) {
    let seqs: Vec<u64> = reports.iter().map(|(s, _)| *s).collect();
    common::assert_increasing(&seqs);
    for (_, r) in reports {
        assert_eq!(r.device.as_str(), common::DEVICE);
        assert_eq!(r.child.as_str(), CHILD);
        let target = r.target.as_ref().unwrap();
        assert_eq!(target.name.as_str(), CHILD_RELEASE);
        assert_eq!(target.version.to_string(), release_version);
    }
}

/// A healthy image is committed on the MCU, and every report tells the truth about it.
#[test]
fn a_healthy_image_is_committed_and_reported_truthfully() {
    let factory = ImageSpec::new((1, 0, 0), 1).build();
    let mcu = Mcu::start(McuSetup {
        factory,
        pause_at: None,
    });
    let gw = gateway(&mcu);
    let new = ImageSpec::new((1, 1, 0), 2);
    let out = gw.install(&release_for(&new));
    assert!(out.status.success(), "install: {}", out.stderr);

    let reports = child_reports(&gw);
    assert_eq!(
        states(&reports),
        [
            UpdateState::Downloading,
            UpdateState::Installed,
            UpdateState::Trial,
            UpdateState::Committed
        ]
    );
    check_envelope(&reports, "1.1.0");
    let running: Vec<(String, u64)> = reports
        .iter()
        .map(|(_, r)| (version(r), r.running.security_version))
        .collect();
    assert_eq!(
        running,
        [
            ("1.0.0".into(), 1),
            ("1.0.0".into(), 1),
            // On trial the new image runs, with the old counter still committed.
            ("1.1.0".into(), 1),
            ("1.1.0".into(), 2),
        ]
    );
    assert!(reports.iter().all(|(_, r)| r.reason.is_none()));

    let status = gw.status();
    assert_eq!(status["children"][0]["id"], CHILD, "{status}");
    assert_eq!(status["children"][0]["state"], "committed", "{status}");
    assert!(
        !gw.data.join(format!("child-{CHILD}.img")).exists(),
        "the staged image is removed once the update is over"
    );

    // What the gateway knows now refuses a rollback before the MCU is asked anything.
    let events_before = mcu.drain().len();
    assert!(events_before > 0);
    let old = ImageSpec::new((1, 0, 1), 1);
    let out = gw.install(&release_for(&old));
    assert!(!out.status.success(), "a rollback was accepted");
    assert!(
        out.stderr
            .contains("release refused: child mcu-0001: security_version 1 is below"),
        "{}",
        out.stderr
    );
    assert!(
        mcu.drain().is_empty(),
        "the MCU was asked about a refused release"
    );

    // The MCU's own word.
    let image = new.build();
    let mut flash = mcu.stop();
    let info = mcu_info(&mut flash);
    assert_eq!(info.phase, Phase::Committed);
    assert_eq!(running_version(&info), "1.1.0");
    assert_eq!(info.committed_counter, 2);
    let active = layout(&flash).active().offset as usize;
    assert!(flash.bytes()[active..active + image.len()] == image[..]);
    let (_, last) = reports.last().unwrap();
    assert_eq!(
        (version(last), last.running.security_version),
        (running_version(&info), info.committed_counter)
    );
}

/// Runs an install of an image with `behaviour` that the MCU's bootloader must revert;
/// returns the child reports and the MCU's boots.
fn install_reverted(behaviour: &'static str) -> (Vec<(u64, ChildReport)>, Vec<McuEvent>) {
    let factory_spec = ImageSpec::new((1, 0, 0), 1);
    let factory = factory_spec.build();
    let mcu = Mcu::start(McuSetup {
        factory: factory.clone(),
        pause_at: None,
    });
    let gw = gateway(&mcu);
    let new = ImageSpec {
        behaviour,
        ..ImageSpec::new((1, 1, 0), 2)
    };
    let out = gw.install(&release_for(&new));
    assert!(out.status.success(), "install: {}", out.stderr);
    assert_eq!(gw.status()["children"][0]["state"], "rolled_back");
    let reports = child_reports(&gw);
    check_envelope(&reports, "1.1.0");

    let boots: Vec<McuEvent> = mcu
        .drain()
        .into_iter()
        .filter(|e| matches!(e, McuEvent::Booted { .. }))
        .collect();
    let mut flash = mcu.stop();
    let info = mcu_info(&mut flash);
    assert_eq!(info.phase, Phase::Reverted);
    assert_eq!(running_version(&info), "1.0.0");
    assert_eq!(
        info.committed_counter, 1,
        "a reverted update raised the counter"
    );
    let active = layout(&flash).active().offset as usize;
    assert!(
        flash.bytes()[active..active + factory.len()] == factory[..],
        "ACTIVE does not hold the factory image again"
    );
    let (_, last) = reports.last().unwrap();
    assert_eq!(last.state, UpdateState::RolledBack);
    assert_eq!(
        (version(last), last.running.security_version),
        ("1.0.0".into(), 1)
    );
    let reason = last.reason.as_deref().unwrap();
    assert!(
        reason.contains(&format!(
            "reverted to {CHILD_RELEASE} 1.0.0 after {MAX_ATTEMPTS} trial boot(s)"
        )),
        "{reason}"
    );
    (reports, boots)
}

/// The MCU's trial boots of the new image, then its boot of the old one.
fn trial_boots(boots: &[McuEvent]) -> Vec<(String, bool)> {
    boots
        .iter()
        .skip(1)
        .map(|b| match b {
            McuEvent::Booted { version, trial, .. } => (version.clone(), *trial),
            _ => unreachable!(),
        })
        .collect()
}

/// An image that resets before it serves anything is reverted by the MCU's bootloader after
/// its trial boots, and reported `rolled_back` without a `trial` the gateway never saw.
#[test]
fn an_image_that_crashes_on_trial_is_reverted_and_reported_rolled_back() {
    let (reports, boots) = install_reverted("crash");
    assert_eq!(
        states(&reports),
        [
            UpdateState::Downloading,
            UpdateState::Installed,
            UpdateState::RolledBack
        ]
    );
    let mut expected = vec![("1.1.0".to_string(), true); usize::from(MAX_ATTEMPTS)];
    expected.push(("1.0.0".to_string(), false));
    assert_eq!(trial_boots(&boots), expected);
}

/// An image that runs but never confirms itself is reported on `trial`, then `rolled_back`
/// once the MCU's watchdog resets have used up its trial boots.
#[test]
fn an_image_that_never_confirms_is_reverted_after_its_trial() {
    let (reports, boots) = install_reverted("hang");
    assert_eq!(
        states(&reports),
        [
            UpdateState::Downloading,
            UpdateState::Installed,
            UpdateState::Trial,
            UpdateState::RolledBack
        ]
    );
    let (_, trial) = &reports[2];
    assert_eq!(
        (version(trial), trial.running.security_version),
        ("1.1.0".into(), 1)
    );
    let mut expected = vec![("1.1.0".to_string(), true); usize::from(MAX_ATTEMPTS)];
    expected.push(("1.0.0".to_string(), false));
    assert_eq!(trial_boots(&boots), expected);
}
