//! Child images the gateway must refuse, with the real `swell-agent` on a simulated board and
//! the firmware core as the MCU on a pty. Whatever is wrong, nothing reaches the MCU's flash
//! (its simulated flash counts zero writes and erases), the MCU keeps running its image, and
//! the reason names the problem:
//!
//! - a manifest for other hardware, or short of its signature threshold, is refused when the
//!   install is given: the command fails, the MCU is not even asked what it runs;
//! - a release below the counter the MCU reports is refused after one `HELLO` (`failed`,
//!   reported with the gateway's key), before anything is downloaded;
//! - an image whose header is signed by a key the trust root does not know, or disagrees with
//!   its manifest, is refused after staging and before a single frame of it is sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod gateway_support;

use common::{Device as Gateway, Release, seed};
use gateway_support::{
    CHILD, CHILD_HARDWARE, ImageSpec, Mcu, McuEvent, McuSetup, Req, child_release, child_reports,
    gateway, layout, mcu_info, release_for, running_version,
};
use swell_firmware::Phase;
use swell_proto::messages::UpdateState;

/// An MCU running 1.0.0 with committed counter 2, and its gateway.
struct Setup {
    mcu: Mcu,
    gw: Gateway,
    factory: Vec<u8>,
}

impl Setup {
    fn new() -> Self {
        let factory = ImageSpec::new((1, 0, 0), 2).build();
        let mcu = Mcu::start(McuSetup {
            factory: factory.clone(),
            pause_at: None,
        });
        let gw = gateway(&mcu);
        Self { mcu, gw, factory }
    }

    /// The requests the MCU answered.
    fn requests(&self) -> Vec<Req> {
        self.mcu
            .drain()
            .into_iter()
            .filter_map(|e| match e {
                McuEvent::Answered { request, .. } => Some(request),
                _ => None,
            })
            .collect()
    }

    /// The MCU still runs its factory image, and its flash was neither written nor erased.
    fn assert_untouched(self) {
        let mut flash = self.mcu.stop();
        assert_eq!(flash.ops(), 0, "the MCU's flash was written or erased");
        let info = mcu_info(&mut flash);
        assert_eq!(info.phase, Phase::Idle);
        assert_eq!(running_version(&info), "1.0.0");
        assert_eq!(info.committed_counter, 2);
        let active = layout(&flash).active().offset as usize;
        assert!(flash.bytes()[active..active + self.factory.len()] == self.factory[..]);
    }

    /// The install failed at once with `needle` in its refusal; the journal knows no child.
    fn assert_refused_at_once(&self, release: &Release, needle: &str) {
        let out = self.gw.install(release);
        assert!(!out.status.success(), "the install was accepted");
        let line = out
            .stderr
            .lines()
            .find(|l| l.starts_with("error: release refused: "))
            .unwrap_or_else(|| panic!("no refusal on stderr:\n{}", out.stderr));
        assert!(line.contains(needle), "{line:?} does not say {needle:?}");
        assert!(self.gw.journal().children.is_empty());
        assert_eq!(
            self.requests(),
            [],
            "the MCU was asked about a refused release"
        );
    }

    /// The install ran and the child's update failed with `needle` in its reason, reported
    /// once after the `expected` reports; returns the requests the MCU answered.
    fn assert_failed(&self, release: &Release, expected: &[UpdateState], needle: &str) -> Vec<Req> {
        let out = self.gw.install(release);
        assert!(out.status.success(), "board: {}", out.stderr);
        let status = self.gw.status();
        let child = &status["children"][0];
        assert_eq!(child["state"], "failed", "{status}");
        let reason = child["reason"].as_str().unwrap();
        assert!(
            reason.contains(needle),
            "{reason:?} does not say {needle:?}"
        );
        let reports = child_reports(&self.gw);
        let states: Vec<UpdateState> = reports.iter().map(|(_, r)| r.state).collect();
        assert_eq!(states, expected);
        let (_, last) = reports.last().unwrap();
        assert_eq!(last.reason.as_deref(), Some(reason));
        assert_eq!(
            last.running.version.as_ref().unwrap().to_string(),
            "1.0.0",
            "the failed report must name what the MCU still runs"
        );
        assert!(
            !self.gw.data.join(format!("child-{CHILD}.img")).exists(),
            "the staged image is removed once the update is over"
        );
        self.requests()
    }
}

/// A release for other hardware is refused when the install is given.
#[test]
fn other_hardware_is_refused_before_the_mcu_is_asked() {
    let s = Setup::new();
    let image = ImageSpec::new((1, 1, 0), 3).build();
    let release = child_release(
        "1.1.0",
        3,
        &["sensor-v3"],
        image,
        &[seed::RELEASE_1, seed::RELEASE_2],
    );
    s.assert_refused_at_once(
        &release,
        &format!("child {CHILD}: release is built for hardware [sensor-v3], not {CHILD_HARDWARE}"),
    );
    s.assert_untouched();
}

/// A manifest with one of the two release signatures it needs is refused when the install is
/// given.
#[test]
fn a_manifest_short_of_its_threshold_is_refused_before_the_mcu_is_asked() {
    let s = Setup::new();
    let image = ImageSpec::new((1, 1, 0), 3).build();
    let release = child_release("1.1.0", 3, &[CHILD_HARDWARE], image, &[seed::RELEASE_1]);
    s.assert_refused_at_once(&release, "threshold unmet for the release role");
    s.assert_untouched();
}

/// A release below the counter the MCU reports is refused after the MCU said what it runs,
/// before anything is downloaded.
#[test]
fn a_lower_counter_than_the_mcu_reports_is_refused() {
    let s = Setup::new();
    let release = release_for(&ImageSpec::new((1, 1, 0), 1));
    let requests = s.assert_failed(
        &release,
        &[UpdateState::Failed],
        &format!("security_version 1 is below child {CHILD}'s committed 2 (anti-rollback)"),
    );
    assert_eq!(requests, [Req::Hello]);
    s.assert_untouched();
}

/// An image whose header is signed by a release key and a key the trust root does not know
/// is refused before a frame of it is sent, although its manifest is properly signed.
#[test]
fn an_image_signed_by_an_unknown_key_is_refused_before_sending() {
    let s = Setup::new();
    let spec = ImageSpec {
        signers: vec![seed::RELEASE_1, seed::OUTSIDER],
        ..ImageSpec::new((1, 1, 0), 3)
    };
    let requests = s.assert_failed(
        &release_for(&spec),
        &[UpdateState::Downloading, UpdateState::Failed],
        "signatures do not satisfy the trust root's release role: 1 valid release signature(s) \
         of 2 needed",
    );
    assert_eq!(requests, [Req::Hello]);
    s.assert_untouched();
}

/// An image whose signed header says another version than its manifest is refused before
/// a frame of it is sent.
#[test]
fn an_image_that_disagrees_with_its_manifest_is_refused_before_sending() {
    let s = Setup::new();
    let image = ImageSpec::new((1, 2, 0), 3).build();
    let release = child_release(
        "1.1.0",
        3,
        &[CHILD_HARDWARE],
        image,
        &[seed::RELEASE_1, seed::RELEASE_2],
    );
    let requests = s.assert_failed(
        &release,
        &[UpdateState::Downloading, UpdateState::Failed],
        "does not match the release manifest: version differs",
    );
    assert_eq!(requests, [Req::Hello]);
    s.assert_untouched();
}
