//! A good image, from a local file or over HTTP, ends up in the inactive slot intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::AtomicBool;

use support::{Behaviour, Slots, TestServer, fetch, image, read, request};
use swell_agent::download::fetch_into_slot;
use swell_agent::slots::verify_slot;
use swell_agent::update::Source;

/// An offline install from a local file: the slot receives the exact image, re-reading it
/// gives the manifest's digest, no checkpoint is left behind, and the active slot is untouched.
#[test]
fn installs_from_a_local_file() {
    let slots = Slots::new();
    let file = image(3 * 1024 * 1024 + 123, 1);
    let source = slots.dir.path().join("image.bin");
    std::fs::write(&source, &file).unwrap();
    let req = request(&slots, Source::File(source), &file);
    fetch(&req).unwrap();
    assert_eq!(read(&slots.target), file);
    verify_slot(&req.slot, req.size, &req.sha256).unwrap();
    assert!(!slots.checkpoint().exists());
    slots.assert_active_unchanged();
}

/// A download over HTTP: one plain GET without Range, the image in the slot, progress that
/// rises to the total, and a slot file that previously held a longer image cut to size.
#[test]
fn installs_over_http() {
    let slots = Slots::new();
    std::fs::write(&slots.target, image(5 * 1024 * 1024, 9)).unwrap();
    let file = image(2 * 1024 * 1024 + 7, 2);
    let server = TestServer::start(file.clone(), Behaviour::Normal);
    let req = request(&slots, Source::Url(server.url()), &file);
    let mut seen = Vec::new();
    fetch_into_slot(&req, &AtomicBool::new(false), &mut |done, total| {
        seen.push((done, total))
    })
    .unwrap();
    assert_eq!(read(&slots.target), file);
    verify_slot(&req.slot, req.size, &req.sha256).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        (requests[0].status, requests[0].range.as_deref()),
        (200, None)
    );
    assert_eq!(seen.first(), Some(&(0, req.size)));
    assert_eq!(seen.last(), Some(&(req.size, req.size)));
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    assert!(!slots.checkpoint().exists());
    slots.assert_active_unchanged();
}

/// An empty image is a valid (if odd) artifact: nothing to write, digest of no bytes.
#[test]
fn installs_an_empty_image() {
    let slots = Slots::new();
    let server = TestServer::start(Vec::new(), Behaviour::Normal);
    let req = request(&slots, Source::Url(server.url()), &[]);
    fetch(&req).unwrap();
    assert_eq!(read(&slots.target), b"");
    slots.assert_active_unchanged();
}
