//! Network faults end a download with a clear error that says whether a retry may help.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::time::Duration;

use support::{Behaviour, Slots, TestServer, fetch, image, request};
use swell_agent::download::DownloadError;
use swell_agent::update::Source;

/// The server sends 100 KiB and then holds the connection open without sending: after the
/// (300 ms) stall timeout the download fails as stalled, a transient error, and what arrived
/// is checkpointed.
#[test]
fn stalled_server_times_out() {
    let slots = Slots::new();
    let file = image(2 * 1024 * 1024, 21);
    let server = TestServer::start(file.clone(), Behaviour::StallAfter(100 * 1024));
    let req = request(&slots, Source::Url(server.url()), &file);
    let e = fetch(&req).unwrap_err();
    assert!(matches!(e, DownloadError::Stalled { .. }), "{e}");
    assert!(e.is_transient());
    assert!(
        e.to_string()
            .starts_with("download stalled: no data for 300ms"),
        "{e}"
    );
    assert!(slots.checkpoint().exists());
    slots.assert_active_unchanged();
}

/// A server that accepts the connection and never answers stalls the same way.
#[test]
fn silent_server_times_out() {
    let slots = Slots::new();
    let file = image(1000, 22);
    let server = TestServer::start(file.clone(), Behaviour::StallAfter(0));
    // StallAfter(0) still sends the response head; a listener that never accepts sends
    // nothing at all.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/image.bin", silent.local_addr().unwrap());
    for url in [server.url(), url] {
        let e = fetch(&request(&slots, Source::Url(url), &file)).unwrap_err();
        assert!(matches!(e, DownloadError::Stalled { .. }), "{e}");
    }
    slots.assert_active_unchanged();
}

/// 404: a permanent error naming the URL and the status.
#[test]
fn not_found_is_a_clear_error() {
    let slots = Slots::new();
    let file = image(1000, 23);
    let server = TestServer::start(file.clone(), Behaviour::NotFound);
    let url = server.url();
    let e = fetch(&request(&slots, Source::Url(url.clone()), &file)).unwrap_err();
    assert_eq!(e.to_string(), format!("GET {url}: HTTP 404 Not Found"));
    assert!(!e.is_transient());
    slots.assert_active_unchanged();
}

/// Nothing listens on the port: a transient "cannot reach" error naming the URL.
#[test]
fn unreachable_url_is_a_clear_error() {
    let slots = Slots::new();
    let file = image(1000, 24);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/image.bin");
    let mut req = request(&slots, Source::Url(url.clone()), &file);
    req.options.connect_timeout = Duration::from_secs(2);
    let e = fetch(&req).unwrap_err();
    assert!(matches!(e, DownloadError::Unreachable { .. }), "{e}");
    assert!(
        e.to_string().starts_with(&format!("cannot reach {url}: ")),
        "{e}"
    );
    assert!(e.is_transient());
    slots.assert_active_unchanged();
}

/// A URL with a scheme other than http(s) is refused, naming it.
#[test]
fn unsupported_scheme_is_refused() {
    let slots = Slots::new();
    let file = image(1000, 25);
    let e = fetch(&request(
        &slots,
        Source::Url("ftp://example.invalid/x".into()),
        &file,
    ))
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot fetch ftp://example.invalid/x"),
        "{e}"
    );
    assert!(!e.is_transient());
}
