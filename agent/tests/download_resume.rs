//! An interrupted download continues from its checkpoint instead of starting over, and only
//! when that is safe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicBool;

use support::{Behaviour, Slots, TestServer, fetch, image, read, request};
use swell_agent::download::{DownloadError, fetch_into_slot};
use swell_agent::update::Source;

const MIB: u64 = 1024 * 1024;

/// The server closes the connection after 2.5 MiB of a 5 MiB image. The fetch fails with a
/// transient truncation error and checkpoints what arrived; the next fetch asks for
/// `Range: bytes=<checkpoint>-`, receives only the rest, and the slot holds the image.
#[test]
fn resumes_after_a_dropped_connection() {
    let slots = Slots::new();
    let file = image(5 * 1024 * 1024, 3);
    let cut = 5 * MIB / 2;
    let server = TestServer::start(file.clone(), Behaviour::TruncateAfter(cut));
    let req = request(&slots, Source::Url(server.url()), &file);

    let e = fetch(&req).unwrap_err();
    assert!(
        matches!(e, DownloadError::Truncated { .. }) && e.is_transient(),
        "{e}"
    );
    assert!(slots.checkpoint().exists());

    server.set_behaviour(Behaviour::Normal);
    fetch(&req).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].body_bytes, cut);
    // The bytes before the checkpoint were not downloaded again.
    assert_eq!(
        requests[1].range.as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    assert_eq!(
        (requests[1].status, requests[1].body_bytes),
        (206, file.len() as u64 - cut)
    );
    assert_eq!(read(&slots.target), file);
    assert!(!slots.checkpoint().exists());
    slots.assert_active_unchanged();
}

/// The agent dies mid-download (simulated by a panic in the progress callback, so no error
/// path runs): the next fetch resumes from the last periodic checkpoint, a whole number of
/// checkpoint intervals, never from beyond what was synced.
#[test]
fn resumes_from_the_last_periodic_checkpoint_after_a_crash() {
    let slots = Slots::new();
    let file = image(5 * 1024 * 1024, 4);
    let server = TestServer::start(file.clone(), Behaviour::Normal);
    let req = request(&slots, Source::Url(server.url()), &file);

    let crashed = catch_unwind(AssertUnwindSafe(|| {
        fetch_into_slot(&req, &AtomicBool::new(false), &mut |done, _| {
            assert!(done < 3 * MIB + MIB / 2, "simulated crash");
        })
    }));
    assert!(crashed.is_err());

    fetch(&req).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        requests[1].range.as_deref(),
        Some(format!("bytes={}-", 3 * MIB).as_str())
    );
    assert_eq!(requests[1].body_bytes, file.len() as u64 - 3 * MIB);
    assert_eq!(read(&slots.target), file);
    slots.assert_active_unchanged();
}

/// A server that ignores Range answers 200 with the whole image: the download starts over
/// from offset 0 and still succeeds.
#[test]
fn starts_over_when_the_server_ignores_range() {
    let slots = Slots::new();
    let file = image(3 * 1024 * 1024, 5);
    let server = TestServer::start(file.clone(), Behaviour::TruncateAfter(2 * MIB));
    let req = request(&slots, Source::Url(server.url()), &file);
    fetch(&req).unwrap_err();

    server.set_behaviour(Behaviour::IgnoreRange);
    fetch(&req).unwrap();
    let requests = server.requests();
    assert_eq!(
        requests[1].range.as_deref(),
        Some(format!("bytes={}-", 2 * MIB).as_str())
    );
    assert_eq!(
        (requests[1].status, requests[1].body_bytes),
        (200, file.len() as u64)
    );
    assert_eq!(read(&slots.target), file);
    slots.assert_active_unchanged();
}

/// The slot was overwritten after the checkpoint (its prefix no longer has the recorded
/// digest): the checkpoint is not trusted and the download starts from 0 without Range.
#[test]
fn ignores_a_checkpoint_whose_prefix_changed() {
    let slots = Slots::new();
    let file = image(3 * 1024 * 1024, 6);
    let server = TestServer::start(file.clone(), Behaviour::TruncateAfter(2 * MIB));
    let req = request(&slots, Source::Url(server.url()), &file);
    fetch(&req).unwrap_err();
    assert!(slots.checkpoint().exists());

    let mut slot = read(&slots.target);
    slot[100] ^= 1;
    std::fs::write(&slots.target, slot).unwrap();
    server.set_behaviour(Behaviour::Normal);
    fetch(&req).unwrap();
    let requests = server.requests();
    assert_eq!(
        (requests[1].range.as_deref(), requests[1].status),
        (None, 200)
    );
    assert_eq!(read(&slots.target), file);
}

/// A checkpoint left by a different image is ignored: the new image downloads from 0.
#[test]
fn ignores_another_images_checkpoint() {
    let slots = Slots::new();
    let old = image(3 * 1024 * 1024, 7);
    let server = TestServer::start(old.clone(), Behaviour::TruncateAfter(2 * MIB));
    fetch(&request(&slots, Source::Url(server.url()), &old)).unwrap_err();
    assert!(slots.checkpoint().exists());

    let new = image(3 * 1024 * 1024, 8);
    let server = TestServer::start(new.clone(), Behaviour::Normal);
    fetch(&request(&slots, Source::Url(server.url()), &new)).unwrap();
    assert_eq!(server.requests()[0].range, None);
    assert_eq!(read(&slots.target), new);
}

/// A cancelled download checkpoints what it has, so installing the same image again later
/// continues from there.
#[test]
fn cancel_keeps_progress() {
    let slots = Slots::new();
    let file = image(4 * 1024 * 1024, 10);
    let server = TestServer::start(file.clone(), Behaviour::Normal);
    let req = request(&slots, Source::Url(server.url()), &file);
    let cancel = AtomicBool::new(false);
    let e = fetch_into_slot(&req, &cancel, &mut |done, _| {
        if done >= 2 * MIB {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .unwrap_err();
    assert!(matches!(e, DownloadError::Cancelled), "{e}");
    assert_eq!(e.to_string(), "download cancelled");

    fetch(&req).unwrap();
    assert_eq!(
        server.requests()[1].range.as_deref(),
        Some(format!("bytes={}-", 2 * MIB).as_str())
    );
    assert_eq!(read(&slots.target), file);
    slots.assert_active_unchanged();
}
