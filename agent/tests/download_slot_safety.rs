//! Slot writes fail safely: a full disk is reported as such, and the active slot can never
//! be the target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{Behaviour, Slots, TestServer, fetch, image, request};
use swell_agent::download::DownloadError;
use swell_agent::slots::{SlotError, SlotPath};
use swell_agent::update::Source;
use swell_proto::messages::Slot;

/// The target slot is `/dev/full`, where every write fails with ENOSPC: the download fails
/// with a "disk full" error naming the slot and the offset.
#[test]
fn dev_full_is_disk_full() {
    let slots = Slots::new();
    let file = image(200_000, 31);
    let server = TestServer::start(file.clone(), Behaviour::Normal);
    let mut req = request(&slots, Source::Url(server.url()), &file);
    req.slot = SlotPath::new(Slot::B, "/dev/full");
    let e = fetch(&req).unwrap_err();
    assert!(
        matches!(e, DownloadError::Slot(SlotError::DiskFull { .. })),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with("disk full: writing slot B /dev/full at offset 0: "),
        "{msg}"
    );
    assert!(!e.is_transient());
    slots.assert_active_unchanged();
}

/// A 1 MiB tmpfs that cannot hold a 3 MiB image, as a file slot on a small filesystem would:
/// "disk full". Skipped (with a message) where mounting is not permitted.
#[test]
fn small_filesystem_is_disk_full() {
    let slots = Slots::new();
    let Some(mount) = Tmpfs::mount(slots.dir.path().join("small")) else {
        return;
    };
    let file = image(3 * 1024 * 1024, 32);
    let server = TestServer::start(file.clone(), Behaviour::Normal);
    let mut req = request(&slots, Source::Url(server.url()), &file);
    req.slot = SlotPath::new(Slot::B, mount.0.join("b.img"));
    let e = fetch(&req).unwrap_err();
    assert!(
        matches!(e, DownloadError::Slot(SlotError::DiskFull { .. })),
        "{e}"
    );
    assert!(e.to_string().starts_with("disk full: "), "{e}");
    slots.assert_active_unchanged();
}

/// The request names the active slot as the target, directly or through a symlink: refused
/// before anything is fetched or written.
#[test]
fn writing_the_active_slot_is_refused() {
    let slots = Slots::new();
    let file = image(1000, 33);
    let server = TestServer::start(file.clone(), Behaviour::Normal);
    let link = slots.dir.path().join("current");
    std::os::unix::fs::symlink(&slots.active, &link).unwrap();
    for target in [slots.active.clone(), link] {
        let mut req = request(&slots, Source::Url(server.url()), &file);
        req.slot = SlotPath::new(Slot::A, target);
        let e = fetch(&req).unwrap_err();
        assert!(
            matches!(e, DownloadError::Slot(SlotError::IsActive { .. })),
            "{e}"
        );
        assert!(
            e.to_string().starts_with("refusing to write slot A "),
            "{e}"
        );
    }
    assert!(server.requests().is_empty());
    slots.assert_active_unchanged();
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf) -> Option<Self> {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&dir)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipping: cannot mount a tmpfs here (needs root); /dev/full covers ENOSPC");
            return None;
        }
        Some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
