//! Updates the device must refuse or give up, with the real `swell-agent` binary on the
//! simulated board. Whatever goes wrong, the running slot stays byte-for-byte as it was, the
//! device keeps running its old image with no trial armed, and the reason names the problem:
//!
//! - a manifest the device must not accept (bad signature, threshold unmet, other hardware,
//!   anti-rollback, expired) is refused before anything is downloaded: the install command
//!   fails with the reason on stderr, and the journal is as it was;
//! - a download that goes wrong (truncated, wrong digest, too many bytes, stalled, disk full,
//!   unreachable, 404) ends in state `failed`, with the reason in `status` and in the signed
//!   `failed` report in the outbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Device, Options, Release, ReleaseSpec, release, run};
use support::{Behaviour, TestServer};
use swell_agent::journal::Persisted;
use swell_agent::update::State;
use swell_proto::Timestamp;
use swell_proto::messages::{Slot, UpdateState};

/// A device running 1.0.0 (security version 2) from slot B, committed.
struct Running {
    device: Device,
    v1: Release,
    before: Persisted,
}

impl Running {
    fn new(options: Options) -> Self {
        let device = Device::new(options);
        let v1 = release("1.0.0", 2, "healthy", 64 * 1024).build();
        let out = device.install(&v1);
        assert!(out.status.success(), "installing 1.0.0: {}", out.stderr);
        assert_eq!(device.status()["state"], "committed");
        let before = device.journal();
        Self { device, v1, before }
    }

    /// The release the tests try to install: 2.0.0, healthy, 2 MiB.
    fn next() -> ReleaseSpec {
        release("2.0.0", 3, "healthy", 2 << 20)
    }

    /// Installs `manifest` with its image from `image` (a path or URL) on the board.
    fn install(&self, manifest: &[u8], image: &str) -> common::Output {
        let manifest = self.device.write_file("offered.manifest.json", manifest);
        run(
            self.device.board_install(&manifest, image),
            common::RUN_LIMIT,
        )
    }

    /// The device still runs 1.0.0 from slot B, untouched, with no trial armed.
    fn assert_still_running_v1(&self) {
        let env = self.device.env();
        assert_eq!((env.slot, env.upgrade_available), (Slot::B, false));
        assert!(
            self.device.slot_bytes(Slot::B) == self.v1.image,
            "the active slot was modified"
        );
    }

    /// A refusal before download: the command failed with `needles` on stderr, and nothing
    /// changed but the agent's start count.
    fn assert_refused(&self, out: &common::Output, needles: &[&str]) {
        assert!(!out.status.success(), "the install was accepted");
        let line = out
            .stderr
            .lines()
            .find(|l| l.starts_with("error: release refused: "))
            .unwrap_or_else(|| panic!("no refusal on stderr:\n{}", out.stderr));
        for needle in needles {
            assert!(line.contains(needle), "{line:?} does not say {needle:?}");
        }
        let mut now = self.device.journal();
        now.epoch = self.before.epoch;
        assert_eq!(now, self.before, "the journal changed");
        assert!(
            self.device.slot_bytes(Slot::A) == common::factory_image(),
            "the inactive slot was written although the release was refused"
        );
        self.assert_still_running_v1();
    }

    /// A failed download: state `failed` with a reason naming `needles`, in `status` and in
    /// the last report; the device still runs 1.0.0.
    fn assert_failed(&self, out: &common::Output, needles: &[&str]) -> String {
        assert!(out.status.success(), "board: {}", out.stderr);
        let reason = assert_failed_state(&self.device, needles);
        let p = self.device.journal();
        assert_eq!(p.slot(Slot::B), self.before.slot(Slot::B));
        assert_eq!(
            p.slot(Slot::A),
            None,
            "a partly written slot must not keep a record"
        );
        assert_eq!(p.security_version, 2);
        let (_, last) = self.device.outbox_reports().pop().unwrap();
        assert_eq!(
            last.running.version.map(|v| v.to_string()).as_deref(),
            Some("1.0.0")
        );
        assert_eq!(last.running.slot, Slot::B);
        self.assert_still_running_v1();
        reason
    }
}

/// Checks that `device` is in state `failed` with a reason containing each of `needles`, in
/// `status`, the journal and the last (verified) report of the outbox; returns the reason.
fn assert_failed_state(device: &Device, needles: &[&str]) -> String {
    let status = device.status();
    assert_eq!(status["state"], "failed", "{status}");
    let reason = status["reason"].as_str().unwrap().to_string();
    for needle in needles {
        assert!(
            reason.contains(needle),
            "{reason:?} does not say {needle:?}"
        );
    }
    let State::Failed(_, journal_reason) = device.journal().state else {
        panic!("journal state is not failed")
    };
    assert_eq!(journal_reason, reason);
    let reports = device.outbox_reports();
    let seqs: Vec<u64> = reports.iter().map(|(s, _)| *s).collect();
    common::assert_increasing(&seqs);
    let (_, last) = reports.last().unwrap();
    assert_eq!(last.state, UpdateState::Failed);
    assert_eq!(last.reason.as_deref(), Some(reason.as_str()));
    println!("failed: {reason}");
    reason
}

/// One of the two release signatures is altered: refused as a bad signature of the release
/// role, before download.
#[test]
fn bad_signature_is_refused() {
    let r = Running::new(Options::default());
    let next = Running::next().build();
    let mut envelope: serde_json::Value = serde_json::from_slice(&next.manifest).unwrap();
    let sig = envelope["signatures"][0]["sig"]
        .as_str()
        .unwrap()
        .to_string();
    // Change the first base64 character: still 64 bytes, no longer the signature.
    let altered = format!(
        "{}{}",
        if sig.starts_with('A') { 'B' } else { 'A' },
        &sig[1..]
    );
    envelope["signatures"][0]["sig"] = altered.into();
    let image = r.device.write_file("2.0.0.img", &next.image);
    let out = r.install(
        &serde_json::to_vec(&envelope).unwrap(),
        &image.display().to_string(),
    );
    r.assert_refused(&out, &["bad signature", "release role"]);
}

/// Signed by one of the two release keys the root requires: refused, threshold unmet.
#[test]
fn threshold_unmet_is_refused() {
    let r = Running::new(Options::default());
    let mut spec = Running::next();
    spec.signers = vec![common::seed::RELEASE_1];
    let next = spec.build();
    let image = r.device.write_file("2.0.0.img", &next.image);
    let out = r.install(&next.manifest, &image.display().to_string());
    r.assert_refused(&out, &["threshold", "release"]);
}

/// Built for other hardware: refused, naming the device's hardware.
#[test]
fn wrong_hardware_is_refused() {
    let r = Running::new(Options::default());
    let mut spec = Running::next();
    spec.hardware = vec!["other-board".into()];
    let next = spec.build();
    let image = r.device.write_file("2.0.0.img", &next.image);
    let out = r.install(&next.manifest, &image.display().to_string());
    r.assert_refused(&out, &["hardware", "other-board", common::HARDWARE]);
}

/// A release whose security version is below the committed one (2): refused (anti-rollback).
#[test]
fn rollback_is_refused() {
    let r = Running::new(Options::default());
    let next = release("0.9.0", 1, "healthy", 64 * 1024).build();
    let image = r.device.write_file("0.9.0.img", &next.image);
    let out = r.install(&next.manifest, &image.display().to_string());
    r.assert_refused(
        &out,
        &["security_version 1", "installed 2", "anti-rollback"],
    );
}

/// A manifest that expired yesterday: refused as expired.
#[test]
fn expired_manifest_is_refused() {
    let r = Running::new(Options::default());
    let mut spec = Running::next();
    spec.expires = Timestamp::from_unix(common::now().unix() - 24 * 3600);
    let next = spec.build();
    let image = r.device.write_file("2.0.0.img", &next.image);
    let out = r.install(&next.manifest, &image.display().to_string());
    r.assert_refused(&out, &["expired"]);
}

/// The server closes the connection half way: the update fails, saying how much of the
/// image arrived.
#[test]
fn truncated_download_fails() {
    let r = Running::new(Options::default());
    let next = Running::next().build();
    let half = next.image.len() as u64 / 2;
    let server = TestServer::start(next.image.clone(), Behaviour::TruncateAfter(half));
    let out = r.install(&next.manifest, &server.url());
    let size = next.image.len();
    r.assert_failed(
        &out,
        &[
            "download",
            &server.url(),
            &format!("ended after {half} of the manifest's {size} bytes"),
        ],
    );
}

/// One byte of the image is flipped on the wire: the streamed digest does not match.
#[test]
fn digest_mismatch_fails() {
    let r = Running::new(Options::default());
    let next = Running::next().build();
    let server = TestServer::start(next.image.clone(), Behaviour::CorruptByte(100_000));
    let out = r.install(&next.manifest, &server.url());
    r.assert_failed(
        &out,
        &["digest mismatch", &next.sha256.to_hex(), &server.url()],
    );
}

/// The server announces and sends 4 KiB more than the manifest's size: refused, naming the
/// server and the manifest's size.
#[test]
fn server_sending_too_much_fails() {
    let r = Running::new(Options::default());
    let next = Running::next().build();
    let size = next.image.len();
    let server = TestServer::start(next.image.clone(), Behaviour::ExtraBytes(4096));
    let out = r.install(&next.manifest, &server.url());
    r.assert_failed(
        &out,
        &[
            &server.url(),
            &format!("sent more than the manifest's {size} bytes"),
        ],
    );
}

/// The server stops sending after 1 MiB and holds the connection: with a 1 s stall timeout
/// the update fails as stalled.
#[test]
fn stalled_download_fails() {
    let r = Running::new(Options {
        stall_timeout_secs: 1,
        ..Options::default()
    });
    let next = Running::next().build();
    let server = TestServer::start(next.image.clone(), Behaviour::StallAfter(1 << 20));
    let out = r.install(&next.manifest, &server.url());
    r.assert_failed(&out, &["stalled", "no data for 1s", &server.url()]);
}

/// Nothing listens at the URL: the update fails as unreachable.
#[test]
fn unreachable_url_fails() {
    let r = Running::new(Options::default());
    let next = Running::next().build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/image.bin", listener.local_addr().unwrap());
    drop(listener);
    let out = r.install(&next.manifest, &url);
    r.assert_failed(&out, &["cannot reach", &url]);
}

/// The server answers 404: the update fails with the status.
#[test]
fn missing_image_fails() {
    let r = Running::new(Options::default());
    let next = Running::next().build();
    let server = TestServer::start(next.image.clone(), Behaviour::Normal);
    let out = r.install(&next.manifest, &server.missing_url());
    r.assert_failed(&out, &["404", &server.missing_url()]);
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount(8) syntax) on a new temporary directory; `None` where
    /// mounting is not permitted.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap().keep();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The inactive slot is a file on a 512 KiB file system and the image is 2 MiB: the write
/// fails with "disk full", naming the slot. (A new device: the factory image runs from slot A
/// and the update goes to slot B.)
#[test]
fn disk_full_fails() {
    let Some(fs) = Tmpfs::mount("512k") else {
        println!("skipped: mounting a tmpfs is not permitted here (needs root)");
        return;
    };
    let slot_b = fs.path().join("b.img");
    let device = Device::new(Options {
        slot_b: Some(slot_b.clone()),
        ..Options::default()
    });
    let next = Running::next().build();
    let server = TestServer::start(next.image.clone(), Behaviour::Normal);
    let manifest = device.write_file("2.0.0.manifest.json", &next.manifest);
    let out = run(
        device.board_install(&manifest, &server.url()),
        common::RUN_LIMIT,
    );
    assert!(out.status.success(), "board: {}", out.stderr);
    assert_failed_state(&device, &["disk full", &slot_b.display().to_string()]);
    let env = device.env();
    assert_eq!((env.slot, env.upgrade_available), (Slot::A, false));
    assert!(device.slot_bytes(Slot::A) == common::factory_image());
    assert_eq!(device.journal().slot(Slot::B), None);
}
