//! Exactly the manifest's bytes are accepted: short, long or corrupted images fail with an
//! error that says so, and the active slot is never touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Behaviour, Slots, TestServer, fetch, image, request};
use swell_agent::download::DownloadError;
use swell_agent::slots::verify_slot;
use swell_agent::update::Source;
use swell_proto::Sha256Digest;

/// The server closes the connection after 1000 bytes of a 300000-byte image: a transient
/// truncation error that gives both counts.
#[test]
fn truncated_download_fails() {
    let slots = Slots::new();
    let file = image(300_000, 11);
    let server = TestServer::start(file.clone(), Behaviour::TruncateAfter(1000));
    let req = request(&slots, Source::Url(server.url()), &file);
    let e = fetch(&req).unwrap_err();
    assert!(
        matches!(e, DownloadError::Truncated { received: 1000, .. }),
        "{e}"
    );
    assert!(e.is_transient());
    let msg = e.to_string();
    assert!(
        msg.contains("ended after 1000 of the manifest's 300000 bytes"),
        "{msg}"
    );
    slots.assert_active_unchanged();
}

/// One flipped byte in transit: the streamed digest does not match, the error names both
/// digests, the checkpoint is dropped (a retry starts over), and re-reading the slot fails
/// verification too.
#[test]
fn corrupted_download_is_a_digest_mismatch() {
    let slots = Slots::new();
    let file = image(3 * 1024 * 1024, 12);
    let server = TestServer::start(file.clone(), Behaviour::CorruptByte(2_000_000));
    let req = request(&slots, Source::Url(server.url()), &file);
    let e = fetch(&req).unwrap_err();
    let DownloadError::DigestMismatch {
        expected, actual, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(*expected, req.sha256);
    let mut corrupted = file.clone();
    corrupted[2_000_000] ^= 0xff;
    assert_eq!(*actual, Sha256Digest::of(&corrupted));
    let msg = e.to_string();
    assert!(
        msg.contains(&expected.to_hex()) && msg.contains(&actual.to_hex()),
        "{msg}"
    );
    assert!(!e.is_transient());
    assert!(!slots.checkpoint().exists());
    assert!(verify_slot(&req.slot, req.size, &req.sha256).is_err());
    slots.assert_active_unchanged();
}

/// The server announces and sends more bytes than the manifest's size: rejected before
/// anything is written.
#[test]
fn oversized_download_is_rejected() {
    let slots = Slots::new();
    let file = image(100_000, 13);
    let server = TestServer::start(file.clone(), Behaviour::ExtraBytes(10));
    let req = request(&slots, Source::Url(server.url()), &file);
    let e = fetch(&req).unwrap_err();
    assert!(
        matches!(e, DownloadError::Oversize { size: 100_000, .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("sent more than the manifest's 100000 bytes"),
        "{e}"
    );
    assert!(!e.is_transient());
    slots.assert_active_unchanged();
}

/// A manifest that understates the size of what the server holds: the server's answer is
/// longer than the manifest allows.
#[test]
fn server_file_longer_than_the_manifest_is_rejected() {
    let slots = Slots::new();
    let file = image(100_000, 14);
    let server = TestServer::start(file.clone(), Behaviour::Normal);
    let req = request(&slots, Source::Url(server.url()), &file[..99_000]);
    let e = fetch(&req).unwrap_err();
    assert!(
        matches!(e, DownloadError::Oversize { size: 99_000, .. }),
        "{e}"
    );
    slots.assert_active_unchanged();
}

/// A local source file of the wrong length, longer or shorter, is rejected up front.
#[test]
fn local_file_of_the_wrong_length_is_rejected() {
    let slots = Slots::new();
    let file = image(10_000, 15);
    let source = slots.dir.path().join("image.bin");
    std::fs::write(&source, &file).unwrap();
    let e = fetch(&request(
        &slots,
        Source::File(source.clone()),
        &file[..9_999],
    ))
    .unwrap_err();
    assert!(matches!(e, DownloadError::Oversize { .. }), "{e}");
    let mut longer = file.clone();
    longer.push(0);
    let e = fetch(&request(&slots, Source::File(source.clone()), &longer)).unwrap_err();
    assert!(
        matches!(
            e,
            DownloadError::WrongLength {
                len: 10_000,
                size: 10_001,
                ..
            }
        ),
        "{e}"
    );
    let e = fetch(&request(
        &slots,
        Source::File(slots.dir.path().join("nope")),
        &file,
    ))
    .unwrap_err();
    assert!(
        e.to_string().starts_with("opening ") && e.to_string().contains("nope"),
        "{e}"
    );
    slots.assert_active_unchanged();
}
