//! `GET /v1/artifacts/{sha256}`: artifact downloads with `Range` (one range; the agent's
//! downloader resumes with `bytes=N-`), `ETag` (the digest), `Content-Length` and
//! `Accept-Ranges: bytes`. No token: devices fetch these, and the signed manifest, not the
//! transport, vouches for the bytes.

use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use swell_proto::Sha256Digest;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio_util::io::ReaderStream;

use super::{ApiError, AppState};

/// Read size while streaming a file out.
const CHUNK: usize = 256 * 1024;

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RangeRequest {
    /// The whole thing (no header, or one this server ignores, as RFC 9110 allows).
    Full,
    /// Bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// Nothing satisfiable: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header value for a representation of `len` bytes. One range is
/// served; a header with several ranges, or one that does not parse, is ignored (the whole
/// representation is sent), which RFC 9110 §14.2 permits.
pub(super) fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let parse = |s: &str| {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse::<u64>().ok()
        }
    };
    match (first.trim().is_empty(), parse(first), parse(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial {
                    start: len.saturating_sub(n),
                    end: len - 1,
                }
            }
        }
        // bytes=A- and bytes=A-B.
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if let Some(end) = end
                && end < start
            {
                return RangeRequest::Full;
            }
            if start >= len {
                return RangeRequest::Unsatisfiable;
            }
            RangeRequest::Partial {
                start,
                end: end.map_or(len - 1, |e| e.min(len - 1)),
            }
        }
        _ => RangeRequest::Full,
    }
}

/// `GET|HEAD /v1/artifacts/{sha256}`
pub(super) async fn get(
    State(state): State<AppState>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let digest =
        Sha256Digest::from_hex(&digest).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !state.releases.is_released(&digest) {
        return Err(ApiError::not_found(format!("no artifact {digest}")));
    }
    let path = state.releases.artifact_path(&digest);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::not_found(format!("no artifact {digest}")))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(&e))?
        .len();
    state.metrics.artifact_request();
    let etag = format!("\"{digest}\"");
    // If-Range: the range applies only to the representation the client already has part of.
    let range_applies = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == etag));
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) if range_applies => parse_range(value, len),
        _ => RangeRequest::Full,
    };
    let mut response_headers = HeaderMap::new();
    let put = |h: &mut HeaderMap, name, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put(&mut response_headers, header::ETAG, etag);
    put(&mut response_headers, header::ACCEPT_RANGES, "bytes".into());
    put(
        &mut response_headers,
        header::CONTENT_TYPE,
        "application/octet-stream".into(),
    );
    let (status, start, count) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, len),
        RangeRequest::Partial { start, end } => {
            put(
                &mut response_headers,
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{len}"),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            put(
                &mut response_headers,
                header::CONTENT_RANGE,
                format!("bytes */{len}"),
            );
            let body = serde_json::json!({
                "error": format!("range not satisfiable: the artifact is {len} bytes")
            });
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                response_headers,
                axum::Json(body),
            )
                .into_response());
        }
    };
    put(
        &mut response_headers,
        header::CONTENT_LENGTH,
        count.to_string(),
    );
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let body = Body::from_stream(ReaderStream::with_capacity(file.take(count), CHUNK));
    Ok((status, response_headers, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let cases = [
            ("bytes=0-99", 1000, Partial { start: 0, end: 99 }),
            (
                "bytes=500-",
                1000,
                Partial {
                    start: 500,
                    end: 999,
                },
            ),
            (
                "bytes=-100",
                1000,
                Partial {
                    start: 900,
                    end: 999,
                },
            ),
            ("bytes=-5000", 1000, Partial { start: 0, end: 999 }),
            (
                "bytes=900-5000",
                1000,
                Partial {
                    start: 900,
                    end: 999,
                },
            ),
            (
                "bytes=999-999",
                1000,
                Partial {
                    start: 999,
                    end: 999,
                },
            ),
            ("bytes=1000-", 1000, Unsatisfiable),
            ("bytes=2000-3000", 1000, Unsatisfiable),
            ("bytes=-0", 1000, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=5-1", 1000, Full),
            ("bytes=0-1,5-6", 1000, Full),
            ("items=0-1", 1000, Full),
            ("bytes=a-b", 1000, Full),
            ("bytes=", 1000, Full),
            ("bytes=+1-2", 1000, Full),
        ];
        for (value, len, expected) in cases {
            assert_eq!(parse_range(value, len), expected, "{value} of {len}");
        }
    }
}
