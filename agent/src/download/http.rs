//! The HTTP(S) side of a download: one GET, possibly with `Range`, over ureq with rustls, and
//! the mapping of its failures to [`DownloadError`]s that say whether a retry may help.

use std::fs;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::{DownloadError, FetchOptions};

/// A response whose body is the image from some offset on.
pub(super) struct Opened {
    /// The body.
    pub(super) body: ureq::BodyReader<'static>,
    /// Whether the body starts at 0 although a later offset was asked for (the server ignored
    /// `Range`).
    pub(super) from_start: bool,
}

/// Sends `GET url` for an image of `size` bytes, asking for the bytes from `offset` on when it
/// is not 0, and checks the status and length headers.
pub(super) fn open(
    url: &str,
    offset: u64,
    size: u64,
    options: &FetchOptions,
) -> Result<Opened, DownloadError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        let detail = String::from("only http:// and https:// URLs are supported");
        return Err(DownloadError::BadUrl {
            url: url.to_string(),
            detail,
        });
    }
    let mut request = agent(url, options)?.get(url);
    if offset > 0 {
        request = request.header("Range", format!("bytes={offset}-"));
    }
    let stall = options.stall_timeout;
    let response = request
        .call()
        .map_err(|e| match classify(url, stall, size, e) {
            // No response at all (DNS, connect, handshake or send failed): the server was not
            // reached.
            DownloadError::Network { url, detail } => DownloadError::Unreachable { url, detail },
            other => other.with_received(offset),
        })?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let from = || format!("server {url}");
    let from_start = match response.status().as_u16() {
        206 if offset > 0 => {
            let content_range = header("content-range").unwrap_or_default();
            match check_content_range(&content_range, offset, size) {
                Ok(()) => {}
                Err(RangeProblem::Total(len)) => {
                    return Err(DownloadError::WrongLength {
                        from: from(),
                        len,
                        size,
                    });
                }
                Err(RangeProblem::Malformed) => {
                    let url = url.to_string();
                    return Err(DownloadError::BadContentRange {
                        url,
                        offset,
                        content_range,
                    });
                }
            }
            if content_length.is_some_and(|l| l > size - offset) {
                return Err(DownloadError::Oversize { from: from(), size });
            }
            false
        }
        200 => {
            match content_length {
                Some(len) if len > size => {
                    return Err(DownloadError::Oversize { from: from(), size });
                }
                Some(len) if len < size => {
                    return Err(DownloadError::WrongLength {
                        from: from(),
                        len,
                        size,
                    });
                }
                _ => {}
            }
            true
        }
        _ => {
            let code = response.status();
            let status = match code.canonical_reason() {
                Some(reason) => format!("{} {reason}", code.as_u16()),
                None => code.as_u16().to_string(),
            };
            let url = url.to_string();
            return Err(DownloadError::Status {
                url,
                status,
                code: code.as_u16(),
            });
        }
    };
    Ok(Opened {
        body: response.into_body().into_reader(),
        from_start,
    })
}

/// What is wrong with a `Content-Range`.
#[derive(Debug, PartialEq, Eq)]
enum RangeProblem {
    /// The range is fine but the complete length differs from the manifest's size.
    Total(u64),
    /// Missing, unparsable, or not the range asked for.
    Malformed,
}

/// Checks `Content-Range: bytes offset-(size-1)/size` (the total may be `*`).
fn check_content_range(value: &str, offset: u64, size: u64) -> Result<(), RangeProblem> {
    let parse = || -> Option<(u64, u64, Option<u64>)> {
        let rest = value.trim().strip_prefix("bytes ")?;
        let (range, total) = rest.split_once('/')?;
        let (first, last) = range.split_once('-')?;
        let total = match total.trim() {
            "*" => None,
            t => Some(t.parse().ok()?),
        };
        Some((first.trim().parse().ok()?, last.trim().parse().ok()?, total))
    };
    let (first, last, total) = parse().ok_or(RangeProblem::Malformed)?;
    if let Some(total) = total.filter(|t| *t != size) {
        return Err(RangeProblem::Total(total));
    }
    if first != offset || last.checked_add(1) != Some(size) {
        return Err(RangeProblem::Malformed);
    }
    Ok(())
}

/// A client with the fetch's timeouts, HTTP statuses returned rather than raised, no content
/// encoding (the image's bytes are what is hashed), and the configured CA roots.
fn agent(url: &str, options: &FetchOptions) -> Result<ureq::Agent, DownloadError> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(concat!("swell-agent/", env!("CARGO_PKG_VERSION")))
        .timeout_resolve(Some(options.connect_timeout))
        .timeout_connect(Some(options.connect_timeout))
        .timeout_per_read(Some(options.stall_timeout))
        .timeout_per_write(Some(options.stall_timeout));
    if let Some(ca) = &options.ca_file {
        let tls = |detail: String| DownloadError::Tls {
            url: url.to_string(),
            detail,
        };
        let pem =
            fs::read(ca).map_err(|e| tls(format!("reading CA file {}: {e}", ca.display())))?;
        let mut roots = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => roots.push(c),
                Ok(_) => {}
                Err(e) => return Err(tls(format!("CA file {}: {e}", ca.display()))),
            }
        }
        if roots.is_empty() {
            return Err(tls(format!(
                "CA file {} holds no certificate",
                ca.display()
            )));
        }
        let tls_config = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
            .build();
        config = config.tls_config(tls_config);
    }
    Ok(config.build().into())
}

/// Classifies a failure of the request or of reading the body. A truncation's `received` is
/// filled in by the caller ([`DownloadError::with_received`]).
pub(super) fn classify(url: &str, stall: Duration, size: u64, e: ureq::Error) -> DownloadError {
    use ureq::Timeout as T;
    let url_s = url.to_string();
    let unreachable = |detail: String| DownloadError::Unreachable {
        url: url.to_string(),
        detail,
    };
    match e {
        ureq::Error::Timeout(T::Resolve | T::Connect) => {
            unreachable(String::from("connection timed out"))
        }
        ureq::Error::HostNotFound => unreachable(String::from("host not found")),
        ureq::Error::ConnectionFailed => unreachable(String::from("connection failed")),
        ureq::Error::Timeout(T::PerRead | T::RecvResponse | T::RecvBody) => {
            DownloadError::Stalled { url: url_s, stall }
        }
        ureq::Error::Timeout(t) => DownloadError::Network {
            url: url_s,
            detail: format!("timeout: {t}"),
        },
        // rustls reports certificate and handshake failures as I/O errors wrapping its own.
        ureq::Error::Io(io) if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
            DownloadError::Tls {
                url: url_s,
                detail: io.to_string(),
            }
        }
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::NetworkDown => unreachable(io.to_string()),
            io::ErrorKind::UnexpectedEof => DownloadError::Truncated {
                from: format!("server {url}"),
                received: 0,
                size,
                detail: Some(io.to_string()),
            },
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                DownloadError::Stalled { url: url_s, stall }
            }
            _ => DownloadError::Network {
                url: url_s,
                detail: io.to_string(),
            },
        },
        e @ (ureq::Error::Tls(_) | ureq::Error::Pem(_) | ureq::Error::Rustls(_)) => {
            DownloadError::Tls {
                url: url_s,
                detail: e.to_string(),
            }
        }
        e @ (ureq::Error::BadUri(_) | ureq::Error::RequireHttpsOnly(_)) => DownloadError::BadUrl {
            url: url_s,
            detail: e.to_string(),
        },
        e => DownloadError::Protocol {
            url: url_s,
            detail: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Content-Range must name exactly the range asked for; the total may be `*`, and a
    /// different total is reported as a length mismatch.
    #[test]
    fn content_range_is_validated() {
        assert_eq!(check_content_range("bytes 100-999/1000", 100, 1000), Ok(()));
        assert_eq!(check_content_range("bytes 100-999/*", 100, 1000), Ok(()));
        assert_eq!(
            check_content_range("bytes 100-999/2000", 100, 1000),
            Err(RangeProblem::Total(2000))
        );
        for bad in [
            "",
            "bytes 0-999/1000",
            "bytes 100-998/1000",
            "items 100-999/1000",
            "bytes x",
        ] {
            assert_eq!(
                check_content_range(bad, 100, 1000),
                Err(RangeProblem::Malformed),
                "{bad}"
            );
        }
    }
}
