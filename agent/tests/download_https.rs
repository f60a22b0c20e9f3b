//! Downloads over HTTPS (rustls): a server whose certificate chains to the configured CA is
//! trusted; one that does not is refused with a TLS error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Behaviour, Slots, TestServer, fetch, image, read, request};
use swell_agent::download::DownloadError;
use swell_agent::update::Source;

const MIB: u64 = 1024 * 1024;

/// An HTTPS server with a certificate from the device's configured CA: the image arrives
/// intact.
#[test]
fn installs_over_https_with_the_configured_ca() {
    let slots = Slots::new();
    let file = image(2 * 1024 * 1024 + 5, 41);
    let server = TestServer::start_tls(file.clone(), Behaviour::Normal);
    assert!(server.url().starts_with("https://127.0.0.1:"));
    let mut req = request(&slots, Source::Url(server.url()), &file);
    req.options.ca_file = Some(TestServer::ca_file());
    fetch(&req).unwrap();
    assert_eq!(read(&slots.target), file);
    slots.assert_active_unchanged();
}

/// Resume works over TLS too: a connection cut without close_notify is a truncation, and the
/// next request asks for the rest.
#[test]
fn resumes_over_https() {
    let slots = Slots::new();
    let file = image(3 * 1024 * 1024, 42);
    let server = TestServer::start_tls(file.clone(), Behaviour::TruncateAfter(2 * MIB));
    let mut req = request(&slots, Source::Url(server.url()), &file);
    req.options.ca_file = Some(TestServer::ca_file());
    let e = fetch(&req).unwrap_err();
    assert!(e.is_transient(), "{e}");
    server.set_behaviour(Behaviour::Normal);
    fetch(&req).unwrap();
    let requests = server.requests();
    assert_eq!(
        requests[1].range.as_deref(),
        Some(format!("bytes={}-", 2 * MIB).as_str())
    );
    assert_eq!(read(&slots.target), file);
}

/// Without the test CA (the built-in public roots only) the server's certificate is not
/// trusted: a permanent TLS error naming the URL, and nothing written.
#[test]
fn untrusted_certificate_is_refused() {
    let slots = Slots::new();
    let file = image(1000, 43);
    let server = TestServer::start_tls(file.clone(), Behaviour::Normal);
    let req = request(&slots, Source::Url(server.url()), &file);
    let e = fetch(&req).unwrap_err();
    assert!(matches!(e, DownloadError::Tls { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("TLS with {}: ", server.url())),
        "{e}"
    );
    assert!(!e.is_transient());
    slots.assert_active_unchanged();
}
