//! Device-local maintenance windows and the daylight saving time policy.
//!
//! A window is written as wall-clock times (`02:00`–`04:00`) and opens once per local date in
//! each device's own zone. Turning a local date's window into two instants needs a rule for
//! the two days a year when the wall clock jumps. The rule, stated once (docs/rollouts.md
//! repeats it with examples):
//!
//! 1. A window belongs to the local date it starts on; `end <= start` means it ends on the
//!    next local date (it crosses midnight).
//! 2. **Gap** (clocks spring forward, the local time does not exist): a start or end in the gap
//!    moves to the first valid instant after it, the transition itself (02:30 on a New York
//!    spring-forward day becomes 03:00 EDT, not 03:30).
//! 3. **Fold** (clocks fall back, the local time happens twice): a start or end in the repeated
//!    hour means its **first** occurrence, the one with the earlier (pre-transition) offset.
//! 4. **Length**: a window lasts its written wall-clock length, but never past its local end:
//!    `end = min(start + written length, resolved local end)`. So a window that spans a spring
//!    forward is shorter by the gap (02:00–04:00 becomes 03:00–04:00 EDT, one real hour), and
//!    one that spans a fall back ends early by the fold (01:00–03:00 EDT runs two real hours,
//!    01:00 EDT to 02:00 EST) instead of gaining an hour. A window never grows, so the
//!    starts that rate limits fit into it never exceed what an ordinary day allows.
//! 5. A window that resolves to no time at all (wholly inside a gap, such as 02:00–02:30 in
//!    New York on the spring-forward day) does not open that day.
//!
//! Only the tz rules of the bundled database are used, so the result does not depend on the
//! host.

use std::fmt;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, Zoned};

/// How many local dates [`MaintenanceWindow::occurrences`] looks at: longer than the
/// planner's horizon (366 days), so the horizon, not this, is what a plan runs into.
pub const LOOKAHEAD_DAYS: usize = 400;

/// A window written in device-local wall-clock time, opening on the listed weekdays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceWindow {
    start: Time,
    end: Time,
    days: [bool; 7],
}

/// Why a window cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidWindow {
    /// `end == start`: neither empty nor a whole day is what anyone means.
    #[error("end equals start; a window must have a length (end before start crosses midnight)")]
    Empty,
    /// No weekday to open on.
    #[error("no weekday listed")]
    NoDays,
}

/// How the DST policy changed a window occurrence from what was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DstNote {
    /// The written start does not exist (clocks sprang forward): the window opens when the
    /// gap ends.
    StartInGap,
    /// The written start happens twice (clocks fell back): the first occurrence is used.
    StartInFold,
    /// The written end does not exist: the window ends when the gap ends.
    EndInGap,
    /// The written end happens twice: the first occurrence is used.
    EndInFold,
    /// The clocks sprang forward inside the window: it is shorter than written.
    Shortened,
    /// The clocks fell back inside the window: it lasts its written length and so ends before
    /// its written local end.
    EndsEarly,
}

impl DstNote {
    /// A short phrase for tables.
    pub fn describe(self) -> &'static str {
        match self {
            DstNote::StartInGap => "start in DST gap, opens when it ends",
            DstNote::StartInFold => "start in repeated hour, first occurrence",
            DstNote::EndInGap => "end in DST gap, ends when it ends",
            DstNote::EndInFold => "end in repeated hour, first occurrence",
            DstNote::Shortened => "clocks spring forward, shorter than written",
            DstNote::EndsEarly => "clocks fall back, ends after its written length",
        }
    }

    /// The snake_case name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            DstNote::StartInGap => "start_in_gap",
            DstNote::StartInFold => "start_in_fold",
            DstNote::EndInGap => "end_in_gap",
            DstNote::EndInFold => "end_in_fold",
            DstNote::Shortened => "shortened",
            DstNote::EndsEarly => "ends_early",
        }
    }
}

/// One opening of a window in one zone: the local date it belongs to and its real start and
/// end (`start < end`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowOccurrence {
    /// The local date the window starts on (rule 1).
    pub local_date: Date,
    /// When it opens, in the zone.
    pub start: Zoned,
    /// When it closes (exclusive), in the zone.
    pub end: Zoned,
    /// How the DST policy changed it from what was written; empty on ordinary days.
    pub notes: Vec<DstNote>,
}

impl WindowOccurrence {
    /// Whether `t` is inside `[start, end)`.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start.timestamp() <= t && t < self.end.timestamp()
    }
}

/// Every weekday, Monday first (the index of `days`).
const WEEKDAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

fn day_index(w: Weekday) -> usize {
    usize::from(w.to_monday_zero_offset().unsigned_abs())
}

/// Where a local date-time lands under the policy.
struct Resolved {
    at: Timestamp,
    gap: bool,
    fold: bool,
}

/// Rules 2 and 3: a local date-time in `tz` as one instant.
fn resolve(tz: &TimeZone, dt: DateTime) -> Resolved {
    let ambiguous = tz.to_ambiguous_timestamp(dt);
    // `to_timestamp` below fails only for date-times at the very ends of jiff's range (year
    // -9999 or 9999), which window dates never reach; clamping keeps the function total.
    let at_offset = |offset: jiff::tz::Offset| {
        offset.to_timestamp(dt).unwrap_or(if offset.seconds() < 0 {
            Timestamp::MAX
        } else {
            Timestamp::MIN
        })
    };
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { offset } => Resolved {
            at: at_offset(offset),
            gap: false,
            fold: false,
        },
        AmbiguousOffset::Gap { before, after } => {
            // `dt` read with the later offset is before the transition and read with the
            // earlier offset is after it, so the first transition after the former is the
            // instant the gap ends.
            let early = at_offset(after).min(at_offset(before));
            let at = tz.following(early).next().map_or_else(
                || at_offset(before).max(at_offset(after)),
                |t| t.timestamp(),
            );
            Resolved {
                at,
                gap: true,
                fold: false,
            }
        }
        AmbiguousOffset::Fold { before, after } => Resolved {
            at: at_offset(before).min(at_offset(after)),
            gap: false,
            fold: true,
        },
    }
}

impl MaintenanceWindow {
    /// A window from `start` to `end` local time on the given weekdays (every day if `days`
    /// is empty is *not* assumed: pass all seven).
    pub fn new(start: Time, end: Time, days: &[Weekday]) -> Result<Self, InvalidWindow> {
        if start == end {
            return Err(InvalidWindow::Empty);
        }
        if days.is_empty() {
            return Err(InvalidWindow::NoDays);
        }
        let mut set = [false; 7];
        for d in days {
            set[day_index(*d)] = true;
        }
        Ok(MaintenanceWindow {
            start,
            end,
            days: set,
        })
    }

    /// The written start.
    pub fn start(&self) -> Time {
        self.start
    }

    /// The written end.
    pub fn end(&self) -> Time {
        self.end
    }

    /// Whether it ends on the next local date.
    pub fn crosses_midnight(&self) -> bool {
        self.end < self.start
    }

    /// The weekdays it opens on, Monday first.
    pub fn days(&self) -> impl Iterator<Item = Weekday> + '_ {
        WEEKDAYS.into_iter().filter(|d| self.days[day_index(*d)])
    }

    /// Whether it opens on every weekday.
    pub fn every_day(&self) -> bool {
        self.days.iter().all(|d| *d)
    }

    /// The written wall-clock length.
    pub fn written_length(&self) -> SignedDuration {
        let len = self.end.duration_since(self.start);
        if len.is_negative() {
            len + SignedDuration::from_hours(24)
        } else {
            len
        }
    }

    /// The window of local date `date` in `tz`, under the DST policy; `None` if it does not
    /// open that day (a weekday not listed, or rule 5).
    pub fn on(&self, tz: &TimeZone, date: Date) -> Option<WindowOccurrence> {
        if !self.days[day_index(date.weekday())] {
            return None;
        }
        let start_dt = date.to_datetime(self.start);
        let end_date = if self.crosses_midnight() {
            date.tomorrow().ok()?
        } else {
            date
        };
        let end_dt = end_date.to_datetime(self.end);
        let start = resolve(tz, start_dt);
        let end = resolve(tz, end_dt);
        let by_length = start.at.checked_add(self.written_length()).ok()?;
        let end_at = by_length.min(end.at);
        if end_at <= start.at {
            return None;
        }
        let mut notes = Vec::new();
        if start.gap {
            notes.push(DstNote::StartInGap);
        }
        if start.fold {
            notes.push(DstNote::StartInFold);
        }
        if end.gap {
            notes.push(DstNote::EndInGap);
        }
        if end.fold {
            notes.push(DstNote::EndInFold);
        }
        let real = end_at.duration_since(start.at);
        if real < self.written_length() {
            notes.push(DstNote::Shortened);
        } else if by_length < end.at {
            notes.push(DstNote::EndsEarly);
        }
        Some(WindowOccurrence {
            local_date: date,
            start: start.at.to_zoned(tz.clone()),
            end: end_at.to_zoned(tz.clone()),
            notes,
        })
    }

    /// The windows in `tz` that have not closed at `from`, in order: the first may already be
    /// open. Local dates up to [`LOOKAHEAD_DAYS`] after `from`'s are looked at, so the
    /// iterator ends even for a window that never opens.
    pub fn occurrences<'a>(
        &'a self,
        tz: &'a TimeZone,
        from: Timestamp,
    ) -> impl Iterator<Item = WindowOccurrence> + 'a {
        // A window that crosses midnight and started yesterday may still be open.
        let first = tz.to_datetime(from).date();
        let first = first.yesterday().unwrap_or(first);
        let dates = std::iter::successors(Some(first), |d| d.tomorrow().ok()).take(LOOKAHEAD_DAYS);
        dates
            .filter_map(move |d| self.on(tz, d))
            .filter(move |w| w.end.timestamp() > from)
    }
}

impl fmt::Display for MaintenanceWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.strftime("%H:%M"),
            self.end.strftime("%H:%M")
        )?;
        if !self.every_day() {
            let names: Vec<&str> = self.days().map(weekday_name).collect();
            write!(f, " {}", names.join(","))?;
        }
        Ok(())
    }
}

/// The three-letter lowercase name a plan uses for a weekday.
pub fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

/// The weekday with this plan name.
pub fn parse_weekday(s: &str) -> Option<Weekday> {
    WEEKDAYS.into_iter().find(|d| weekday_name(*d) == s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::fleet::Zone;
    use jiff::civil::{date, time};

    fn window(start: Time, end: Time) -> MaintenanceWindow {
        MaintenanceWindow::new(start, end, &WEEKDAYS).unwrap()
    }

    /// Renders the occurrence as `local start -> local end | utc start -> utc end | notes`.
    fn show(zone: &str, w: &MaintenanceWindow, d: Date) -> String {
        let tz = Zone::new(zone).unwrap();
        match w.on(tz.tz(), d) {
            None => "closed".into(),
            Some(o) => format!(
                "{} -> {} | {} -> {} | {:?}",
                o.start.strftime("%F %H:%M %:z"),
                o.end.strftime("%F %H:%M %:z"),
                o.start.timestamp(),
                o.end.timestamp(),
                o.notes
            ),
        }
    }

    #[test]
    fn ordinary_day_and_midnight_crossing() {
        let w = window(time(2, 0, 0, 0), time(4, 0, 0, 0));
        assert_eq!(
            show("Asia/Kathmandu", &w, date(2027, 3, 10)),
            "2027-03-10 02:00 +05:45 -> 2027-03-10 04:00 +05:45 | \
             2027-03-09T20:15:00Z -> 2027-03-09T22:15:00Z | []"
        );
        let night = window(time(22, 0, 0, 0), time(1, 30, 0, 0));
        assert!(night.crosses_midnight());
        assert_eq!(night.written_length(), SignedDuration::from_mins(210));
        assert_eq!(
            show("Europe/Berlin", &night, date(2027, 1, 31)),
            "2027-01-31 22:00 +01:00 -> 2027-02-01 01:30 +01:00 | \
             2027-01-31T21:00:00Z -> 2027-02-01T00:30:00Z | []"
        );
    }

    #[test]
    fn gap_start_moves_to_gap_end_not_by_the_gap_length() {
        let w = window(time(2, 30, 0, 0), time(4, 0, 0, 0));
        assert_eq!(
            show("America/New_York", &w, date(2027, 3, 14)),
            "2027-03-14 03:00 -04:00 -> 2027-03-14 04:00 -04:00 | \
             2027-03-14T07:00:00Z -> 2027-03-14T08:00:00Z | [StartInGap, Shortened]"
        );
    }

    #[test]
    fn window_wholly_in_gap_does_not_open() {
        let w = window(time(2, 0, 0, 0), time(2, 30, 0, 0));
        assert_eq!(show("America/New_York", &w, date(2027, 3, 14)), "closed");
        assert_ne!(show("America/New_York", &w, date(2027, 3, 15)), "closed");
    }

    #[test]
    fn weekdays_filter_by_start_date() {
        let w = MaintenanceWindow::new(time(23, 0, 0, 0), time(1, 0, 0, 0), &[Weekday::Sunday])
            .unwrap();
        let tz = Zone::new("UTC").unwrap();
        // 2027-03-14 is a Sunday; its window runs into Monday.
        assert!(w.on(tz.tz(), date(2027, 3, 14)).is_some());
        assert!(w.on(tz.tz(), date(2027, 3, 15)).is_none());
        assert_eq!(w.to_string(), "23:00-01:00 sun");
        let open: Vec<_> = w
            .occurrences(tz.tz(), "2027-03-15T00:30:00Z".parse().unwrap())
            .take(2)
            .map(|o| o.local_date.to_string())
            .collect();
        assert_eq!(open, ["2027-03-14", "2027-03-21"]);
    }

    #[test]
    fn invalid_windows() {
        let t = time(2, 0, 0, 0);
        assert_eq!(
            MaintenanceWindow::new(t, t, &WEEKDAYS),
            Err(InvalidWindow::Empty)
        );
        assert_eq!(
            MaintenanceWindow::new(t, time(3, 0, 0, 0), &[]),
            Err(InvalidWindow::NoDays)
        );
        assert_eq!(parse_weekday("wed"), Some(Weekday::Wednesday));
        assert_eq!(parse_weekday("Wed"), None);
    }
}
