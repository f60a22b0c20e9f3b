//! When the analysis looks. The window opens `warmup` after the soak starts and closes when
//! the soak ends; looks fall every `look_every` from the opening, the last at the close.
//! Each look sees only data that ends by its instant, so calling the analysis at any `now`
//! evaluates every look up to `now` exactly as if it had been called at each look.

use jiff::{SignedDuration, Timestamp};

use crate::verification::policy::PolicySpec;

/// The looks of one soak, in milliseconds from the window's opening.
#[derive(Debug, Clone)]
pub(crate) struct Looks {
    /// The window's opening: the soak start plus the warm-up.
    pub(crate) open: Timestamp,
    /// The end of each look, in milliseconds after `open`; the last is the soak's end.
    pub(crate) ends: Vec<i64>,
    /// How many looks `now` has reached.
    pub(crate) reached: usize,
}

/// Milliseconds from `from` to `t` (negative before), saturating.
pub(crate) fn ms_between(from: Timestamp, t: Timestamp) -> i64 {
    i64::try_from(t.duration_since(from).as_millis()).unwrap_or(if t < from {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Milliseconds in an hour.
pub(crate) const HOUR_MS: f64 = 3_600_000.0;

impl Looks {
    pub(crate) fn new(spec: &PolicySpec, soak_start: Timestamp, now: Timestamp) -> Looks {
        let open = soak_start
            .checked_add(spec.warmup)
            .unwrap_or(Timestamp::MAX);
        let ms = |d: SignedDuration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let window = ms(spec.soak - spec.warmup);
        let every = ms(spec.look_every).max(1);
        let mut ends: Vec<i64> = (1..)
            .map(|j| j * every)
            .take_while(|&e| e < window)
            .collect();
        ends.push(window);
        let elapsed = ms_between(open, now);
        let reached = ends.iter().filter(|&&e| e <= elapsed).count();
        Looks {
            open,
            ends,
            reached,
        }
    }

    /// The look a point ending `ms` after the opening belongs to: the first look that ends
    /// at or after it. `None` after the soak.
    pub(crate) fn bucket(&self, ms: i64) -> Option<usize> {
        let b = self.ends.partition_point(|&e| e < ms);
        (b < self.ends.len()).then_some(b)
    }

    /// The fraction of the window look `j` has seen, for α spending.
    pub(crate) fn fraction(&self, j: usize) -> f64 {
        let total = self.ends.last().copied().unwrap_or(1).max(1) as f64;
        self.ends[j] as f64 / total
    }

    /// The instant of look `j`.
    pub(crate) fn instant(&self, j: usize) -> Timestamp {
        self.open
            .checked_add(SignedDuration::from_millis(self.ends[j]))
            .unwrap_or(Timestamp::MAX)
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verification::policy::Policy;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// 6 h soak, 30 min warm-up, a look every 30 min: 11 looks from 08:30 to 14:00. A soak
    /// of 6 h 10 min adds a short last look at its end.
    #[test]
    fn look_schedule() {
        let mut spec = Policy::recommended().spec().clone();
        spec.soak = SignedDuration::from_hours(6);
        let start = at("2027-03-01T08:00:00Z");
        let l = Looks::new(&spec, start, at("2027-03-01T09:59:59Z"));
        assert_eq!(l.len(), 11);
        assert_eq!(l.reached, 2);
        assert_eq!(l.instant(0), at("2027-03-01T09:00:00Z"));
        assert_eq!(l.instant(10), at("2027-03-01T14:00:00Z"));
        assert_eq!(
            Looks::new(&spec, start, at("2027-03-02T00:00:00Z")).reached,
            11
        );
        assert_eq!(Looks::new(&spec, start, start).reached, 0);
        // Points belong to the first look ending at or after them.
        assert_eq!(l.bucket(1), Some(0));
        assert_eq!(l.bucket(1_800_000), Some(0));
        assert_eq!(l.bucket(1_800_001), Some(1));
        assert_eq!(l.bucket(-5), Some(0));
        assert_eq!(l.bucket(19_800_001), None);
        assert!((l.fraction(0) - 1.0 / 11.0).abs() < 1e-12);
        spec.soak = SignedDuration::from_mins(370);
        let l = Looks::new(&spec, start, start);
        assert_eq!(l.len(), 12);
        assert_eq!(l.instant(11), at("2027-03-01T14:10:00Z"));
    }
}
