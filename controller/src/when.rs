//! Expiry arguments: an RFC 3339 UTC instant (`2027-01-01T00:00:00Z`) or a span from now
//! (`90d`, `12h`). The span is resolved against the `now` the command is given, never a clock
//! read here.

use std::fmt;
use std::str::FromStr;

use swell_proto::Timestamp;

use crate::error::Error;

/// Longest relative span accepted, in days: about 100 years. A bigger number is a typo.
const MAX_DAYS: i64 = 36_600;

/// An instant as written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// An absolute instant.
    At(Timestamp),
    /// So many seconds after now.
    In(i64),
}

/// Why a `When` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither RFC 3339 UTC (2027-01-01T00:00:00Z) nor a span such as 90d or 12h")]
pub struct InvalidWhen(String);

impl FromStr for When {
    type Err = InvalidWhen;

    fn from_str(s: &str) -> Result<Self, InvalidWhen> {
        if let Ok(t) = Timestamp::parse(s) {
            return Ok(When::At(t));
        }
        let bad = || InvalidWhen(s.to_owned());
        let (digits, unit_secs, max) = if let Some(d) = s.strip_suffix('d') {
            (d, 86_400, MAX_DAYS)
        } else if let Some(h) = s.strip_suffix('h') {
            (h, 3_600, MAX_DAYS * 24)
        } else {
            return Err(bad());
        };
        if digits.is_empty() || digits.len() > 7 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        if n > max {
            return Err(bad());
        }
        let secs = n * unit_secs;
        if secs == 0 {
            return Err(bad());
        }
        Ok(When::In(secs))
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::At(t) => write!(f, "{t}"),
            When::In(secs) if secs % 86_400 == 0 => write!(f, "{}d", secs / 86_400),
            When::In(secs) => write!(f, "{}h", secs / 3_600),
        }
    }
}

impl When {
    /// The instant this names, given `now`.
    pub fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            When::At(t) => t,
            When::In(secs) => now.plus_secs(secs),
        }
    }
}

/// Resolves an `--expires` value and refuses one that is not after `now`: a document that is
/// already expired when written can verify nothing.
pub fn future_expiry(when: When, now: Timestamp) -> Result<Timestamp, Error> {
    let t = when.resolve(now);
    if t <= now {
        return Err(Error::Argument {
            arg: "--expires",
            reason: format!("{t} is not in the future (now {now})"),
        });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_instants_and_spans() {
        let now = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let r = |s: &str| s.parse::<When>().unwrap().resolve(now).to_string();
        assert_eq!(r("2027-01-01T00:00:00Z"), "2027-01-01T00:00:00Z");
        assert_eq!(r("1d"), "2026-01-02T00:00:00Z");
        assert_eq!(r("36h"), "2026-01-02T12:00:00Z");
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "1w",
            "1.5d",
            "2027-01-01",
            "99999999d",
            "1 d",
            "1\u{e9}",
            "36601d",
        ] {
            assert!(bad.parse::<When>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn refuses_past_expiry() {
        let now = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let err = future_expiry(When::At(now), now).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--expires: 2026-01-01T00:00:00Z is not in the future (now 2026-01-01T00:00:00Z)"
        );
        assert!(future_expiry(When::In(3600), now).is_ok());
    }
}
