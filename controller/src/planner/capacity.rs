//! The static bookkeeping behind the rate limits: start slots per UTC minute, and intervals of
//! devices in flight (for `max_in_flight` and each disruption-budget group). All times are
//! milliseconds since the Unix epoch.
//!
//! Devices are not placed in time order (a zone that opens later may be placed before an
//! earlier zone's overflow into the next day), so both structures answer "is there room
//! here?" for any instant, not just after the last one placed.

use std::collections::{BTreeMap, BTreeSet};

/// Milliseconds in a minute.
pub(crate) const MINUTE_MS: i64 = 60_000;

/// `⌈x / 60000⌉` for `x ≥ 0`.
fn ceil_minutes(x: i64) -> i64 {
    (x + MINUTE_MS - 1) / MINUTE_MS
}

/// Start slots: minute `m` with cap `c` has slots at `m·60 s + ⌊i·60 s / c⌋` for `i` in
/// `0..c`, each holding at most one start. So no UTC minute has more than `c` starts, and
/// with a constant cap no 60-second interval anywhere does either (slot `i + c` is exactly
/// one minute after slot `i`).
#[derive(Debug, Default)]
pub(crate) struct RateSlots {
    used: BTreeMap<i64, BTreeSet<u32>>,
}

impl RateSlots {
    /// The earliest free slot at or after `t`, with `cap(minute)` slots in each minute (at
    /// least 1).
    pub(crate) fn next_free(&self, t: i64, cap: impl Fn(i64) -> u32) -> i64 {
        let mut t = t;
        loop {
            let minute = t.div_euclid(MINUTE_MS);
            let cap = cap(minute).max(1);
            let base = minute * MINUTE_MS;
            let used = self.used.get(&minute);
            if used.is_none_or(|u| u.len() < cap as usize) {
                // The first slot at or after t: ⌊i·60000/c⌋ ≥ r ⇔ i ≥ r·c/60000.
                let r = t - base;
                let first = u32::try_from(ceil_minutes(r * i64::from(cap))).unwrap_or(cap);
                if let Some(i) = (first..cap).find(|i| used.is_none_or(|u| !u.contains(i))) {
                    return base + i64::from(i) * MINUTE_MS / i64::from(cap);
                }
            }
            t = base + MINUTE_MS;
        }
    }

    /// Marks the slot at `t` used; `t` must be a slot `next_free` returned with the same cap.
    pub(crate) fn take(&mut self, t: i64, cap: u32) {
        let minute = t.div_euclid(MINUTE_MS);
        let r = t - minute * MINUTE_MS;
        let i = u32::try_from(ceil_minutes(r * i64::from(cap.max(1)))).unwrap_or(0);
        self.used.entry(minute).or_default().insert(i);
    }
}

/// Half-open intervals `[start, end)` of devices in flight.
#[derive(Debug, Default)]
pub(crate) struct Intervals {
    by_start: BTreeMap<(i64, u64), i64>,
    longest: i64,
    next: u64,
}

impl Intervals {
    /// `None` if adding `[start, end)` keeps at most `limit` intervals over every instant;
    /// otherwise an instant before which no start at or after `start` can fit: the earliest
    /// end among the intervals covering the first saturated instant (every start between
    /// `start` and there would cover that instant too, or be covered as much).
    pub(crate) fn blocked(&self, start: i64, end: i64, limit: u32) -> Option<i64> {
        let from = start.saturating_sub(self.longest);
        let overlapping: Vec<(i64, i64)> = self
            .by_start
            .range((from, 0)..(end, 0))
            .map(|(&(s, _), &e)| (s.max(start), e))
            .filter(|&(s, e)| e > start && s < end)
            .collect();
        if overlapping.len() < limit as usize {
            return None;
        }
        // Sweep: at equal times an interval ending leaves before one starting enters.
        let mut events: Vec<(i64, i32)> = overlapping
            .iter()
            .flat_map(|&(s, e)| [(s, 1), (e, -1)])
            .collect();
        events.sort_unstable();
        let mut count: i64 = 0;
        let mut k = 0;
        while k < events.len() {
            let x = events[k].0;
            if x >= end {
                break;
            }
            while k < events.len() && events[k].0 == x {
                count += i64::from(events[k].1);
                k += 1;
            }
            if count >= i64::from(limit) {
                return overlapping
                    .iter()
                    .filter(|&&(s, e)| s <= x && x < e)
                    .map(|&(_, e)| e)
                    .min();
            }
        }
        None
    }

    /// Records `[start, end)`.
    pub(crate) fn insert(&mut self, start: i64, end: i64) {
        self.by_start.insert((start, self.next), end);
        self.next += 1;
        self.longest = self.longest.max(end - start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_spread_evenly_and_skip_full_minutes() {
        let mut r = RateSlots::default();
        let cap = |_| 4;
        let mut got = Vec::new();
        for _ in 0..6 {
            let t = r.next_free(5_000, cap);
            r.take(t, 4);
            got.push(t);
        }
        // Slot 0 (0 s) is before 5 s; then 15 s, 30 s, 45 s, and the next minute.
        assert_eq!(got, [15_000, 30_000, 45_000, 60_000, 75_000, 90_000]);
        // A slot before the ones taken is still free.
        assert_eq!(r.next_free(0, cap), 0);
    }

    #[test]
    fn odd_caps_floor_to_milliseconds() {
        let r = RateSlots::default();
        assert_eq!(r.next_free(1, |_| 7), 8_571);
        assert_eq!(r.next_free(8_572, |_| 7), 17_142);
    }

    #[test]
    fn intervals_jump_to_the_first_end_at_the_saturated_instant() {
        let mut iv = Intervals::default();
        iv.insert(0, 100);
        iv.insert(50, 200);
        assert_eq!(iv.blocked(10, 20, 2), None);
        assert_eq!(iv.blocked(60, 70, 2), Some(100));
        // Saturated only later in the new interval: at 50 both cover; first to end is 100.
        assert_eq!(iv.blocked(20, 60, 2), Some(100));
        assert_eq!(iv.blocked(100, 300, 2), None);
        assert_eq!(iv.blocked(200, 300, 1), None);
        assert_eq!(iv.blocked(150, 300, 1), Some(200));
    }
}
