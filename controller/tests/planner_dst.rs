//! The DST policy (docs/rollouts.md, "Daylight saving time"), as tables of window
//! occurrences and as schedules: a start in a gap moves to the gap's end; a time in a repeated
//! hour is its first occurrence; a window lasts its written length but never past its local
//! end; a window wholly in a gap does not open; a window crossing midnight belongs to the date
//! it starts on.
// Helpers panic on the unexpected, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod planner_common;

use std::fmt::Write as _;

use expect_test::{Expect, expect};
use jiff::civil::{Date, Time, Weekday};
use planner_common::{at, check, fleet, plan};
use swell_controller::planner::render::table;
use swell_controller::planner::{MaintenanceWindow, Zone};

const EVERY_DAY: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

/// Renders one occurrence per case: `zone window date: local start -> local end | UTC start
/// -> UTC end | real length | notes`.
fn occurrences(cases: &[(&str, &str, &str, &str)], expected: Expect) {
    let mut out = String::new();
    for (zone, start, end, date) in cases {
        let z = Zone::new(zone).unwrap();
        let t = |s: &str| s.parse::<Time>().unwrap();
        let w = MaintenanceWindow::new(t(start), t(end), &EVERY_DAY).unwrap();
        let d: Date = date.parse().unwrap();
        let line = match w.on(z.tz(), d) {
            None => "does not open".to_owned(),
            Some(o) => {
                let notes: Vec<&str> = o.notes.iter().map(|n| n.name()).collect();
                format!(
                    "{} -> {} | {} -> {} | {} | {}",
                    o.start.strftime("%F %H:%M %:z"),
                    o.end.strftime("%F %H:%M %:z"),
                    o.start.timestamp().strftime("%H:%MZ"),
                    o.end.timestamp().strftime("%H:%MZ"),
                    o.end.timestamp().duration_since(o.start.timestamp()),
                    if notes.is_empty() {
                        "-".into()
                    } else {
                        notes.join(",")
                    }
                )
            }
        };
        writeln!(out, "{zone} {start}-{end} {date}: {line}").unwrap();
    }
    expected.assert_eq(&out);
}

/// America/New_York springs forward at 02:00 EST on 2027-03-14 (to 03:00 EDT). A window
/// starting in the gap opens at 03:00 EDT whatever minute it was written for; one spanning the
/// gap is an hour shorter; one wholly in the gap does not open; one ending in the gap ends at
/// 03:00 EDT. The day before and after are ordinary.
#[test]
fn new_york_spring_forward() {
    occurrences(
        &[
            ("America/New_York", "02:00", "04:00", "2027-03-13"),
            ("America/New_York", "02:00", "04:00", "2027-03-14"),
            ("America/New_York", "02:30", "04:00", "2027-03-14"),
            ("America/New_York", "01:00", "04:00", "2027-03-14"),
            ("America/New_York", "00:30", "02:30", "2027-03-14"),
            ("America/New_York", "02:00", "02:30", "2027-03-14"),
            ("America/New_York", "23:00", "03:00", "2027-03-13"),
            ("America/New_York", "02:00", "04:00", "2027-03-15"),
        ],
        expect![[r#"
            America/New_York 02:00-04:00 2027-03-13: 2027-03-13 02:00 -05:00 -> 2027-03-13 04:00 -05:00 | 07:00Z -> 09:00Z | PT2H | -
            America/New_York 02:00-04:00 2027-03-14: 2027-03-14 03:00 -04:00 -> 2027-03-14 04:00 -04:00 | 07:00Z -> 08:00Z | PT1H | start_in_gap,shortened
            America/New_York 02:30-04:00 2027-03-14: 2027-03-14 03:00 -04:00 -> 2027-03-14 04:00 -04:00 | 07:00Z -> 08:00Z | PT1H | start_in_gap,shortened
            America/New_York 01:00-04:00 2027-03-14: 2027-03-14 01:00 -05:00 -> 2027-03-14 04:00 -04:00 | 06:00Z -> 08:00Z | PT2H | shortened
            America/New_York 00:30-02:30 2027-03-14: 2027-03-14 00:30 -05:00 -> 2027-03-14 03:00 -04:00 | 05:30Z -> 07:00Z | PT1H30M | end_in_gap,shortened
            America/New_York 02:00-02:30 2027-03-14: does not open
            America/New_York 23:00-03:00 2027-03-13: 2027-03-13 23:00 -05:00 -> 2027-03-14 03:00 -04:00 | 04:00Z -> 07:00Z | PT3H | shortened
            America/New_York 02:00-04:00 2027-03-15: 2027-03-15 02:00 -04:00 -> 2027-03-15 04:00 -04:00 | 06:00Z -> 08:00Z | PT2H | -
        "#]],
    );
}

/// America/New_York falls back at 02:00 EDT on 2027-11-07 (to 01:00 EST): 01:00-01:59 happens
/// twice. A start in it is the first (EDT) one; a window over it lasts its written length, so
/// 01:00-03:00 runs 05:00Z-07:00Z and closes at 02:00 EST; an end in it is its first
/// occurrence; a window crossing midnight into the fall-back night keeps its four hours.
#[test]
fn new_york_fall_back() {
    occurrences(
        &[
            ("America/New_York", "01:00", "03:00", "2027-11-07"),
            ("America/New_York", "01:30", "02:30", "2027-11-07"),
            ("America/New_York", "00:00", "01:30", "2027-11-07"),
            ("America/New_York", "02:00", "04:00", "2027-11-07"),
            ("America/New_York", "22:00", "02:00", "2027-11-06"),
            ("America/New_York", "01:00", "03:00", "2027-11-08"),
        ],
        expect![[r#"
            America/New_York 01:00-03:00 2027-11-07: 2027-11-07 01:00 -04:00 -> 2027-11-07 02:00 -05:00 | 05:00Z -> 07:00Z | PT2H | start_in_fold,ends_early
            America/New_York 01:30-02:30 2027-11-07: 2027-11-07 01:30 -04:00 -> 2027-11-07 01:30 -05:00 | 05:30Z -> 06:30Z | PT1H | start_in_fold,ends_early
            America/New_York 00:00-01:30 2027-11-07: 2027-11-07 00:00 -04:00 -> 2027-11-07 01:30 -04:00 | 04:00Z -> 05:30Z | PT1H30M | end_in_fold
            America/New_York 02:00-04:00 2027-11-07: 2027-11-07 02:00 -05:00 -> 2027-11-07 04:00 -05:00 | 07:00Z -> 09:00Z | PT2H | -
            America/New_York 22:00-02:00 2027-11-06: 2027-11-06 22:00 -04:00 -> 2027-11-07 01:00 -05:00 | 02:00Z -> 06:00Z | PT4H | ends_early
            America/New_York 01:00-03:00 2027-11-08: 2027-11-08 01:00 -05:00 -> 2027-11-08 03:00 -05:00 | 06:00Z -> 08:00Z | PT2H | -
        "#]],
    );
}

/// Europe/London: clocks go forward at 01:00 GMT on 2027-03-28 and back at 02:00 BST on
/// 2027-10-31.
#[test]
fn london_both_changes() {
    occurrences(
        &[
            ("Europe/London", "01:00", "03:00", "2027-03-28"),
            ("Europe/London", "00:30", "01:30", "2027-03-28"),
            ("Europe/London", "01:00", "03:00", "2027-10-31"),
            ("Europe/London", "01:30", "01:45", "2027-10-31"),
            ("Europe/London", "23:30", "00:30", "2027-10-30"),
        ],
        expect![[r#"
            Europe/London 01:00-03:00 2027-03-28: 2027-03-28 02:00 +01:00 -> 2027-03-28 03:00 +01:00 | 01:00Z -> 02:00Z | PT1H | start_in_gap,shortened
            Europe/London 00:30-01:30 2027-03-28: 2027-03-28 00:30 +00:00 -> 2027-03-28 02:00 +01:00 | 00:30Z -> 01:00Z | PT30M | end_in_gap,shortened
            Europe/London 01:00-03:00 2027-10-31: 2027-10-31 01:00 +01:00 -> 2027-10-31 02:00 +00:00 | 00:00Z -> 02:00Z | PT2H | start_in_fold,ends_early
            Europe/London 01:30-01:45 2027-10-31: 2027-10-31 01:30 +01:00 -> 2027-10-31 01:45 +01:00 | 00:30Z -> 00:45Z | PT15M | start_in_fold,end_in_fold
            Europe/London 23:30-00:30 2027-10-30: 2027-10-30 23:30 +01:00 -> 2027-10-31 00:30 +01:00 | 22:30Z -> 23:30Z | PT1H | -
        "#]],
    );
}

/// Australia/Lord_Howe shifts by 30 minutes: back from +11 to +10:30 at 02:00 on 2027-04-04
/// (01:30-01:59 twice) and forward at 02:00 on 2027-10-03 (02:00-02:29 missing).
#[test]
fn lord_howe_half_hour_shift() {
    occurrences(
        &[
            ("Australia/Lord_Howe", "01:00", "03:00", "2027-04-04"),
            ("Australia/Lord_Howe", "01:45", "02:15", "2027-04-04"),
            ("Australia/Lord_Howe", "02:00", "04:00", "2027-10-03"),
            ("Australia/Lord_Howe", "02:00", "02:20", "2027-10-03"),
            ("Australia/Lord_Howe", "02:00", "04:00", "2027-10-04"),
        ],
        expect![[r#"
            Australia/Lord_Howe 01:00-03:00 2027-04-04: 2027-04-04 01:00 +11:00 -> 2027-04-04 02:30 +10:30 | 14:00Z -> 16:00Z | PT2H | ends_early
            Australia/Lord_Howe 01:45-02:15 2027-04-04: 2027-04-04 01:45 +11:00 -> 2027-04-04 01:45 +10:30 | 14:45Z -> 15:15Z | PT30M | start_in_fold,ends_early
            Australia/Lord_Howe 02:00-04:00 2027-10-03: 2027-10-03 02:30 +11:00 -> 2027-10-03 04:00 +11:00 | 15:30Z -> 17:00Z | PT1H30M | start_in_gap,shortened
            Australia/Lord_Howe 02:00-02:20 2027-10-03: does not open
            Australia/Lord_Howe 02:00-04:00 2027-10-04: 2027-10-04 02:00 +11:00 -> 2027-10-04 04:00 +11:00 | 15:00Z -> 17:00Z | PT2H | -
        "#]],
    );
}

/// Odd offsets: Asia/Kathmandu (+05:45, no DST) and Pacific/Chatham (+12:45 standard, +13:45
/// daylight; forward at 02:45 on 2027-09-26, back at 03:45 on 2027-04-04).
#[test]
fn odd_offsets_kathmandu_and_chatham() {
    occurrences(
        &[
            ("Asia/Kathmandu", "02:00", "04:00", "2027-03-14"),
            ("Asia/Kathmandu", "23:00", "01:00", "2027-12-31"),
            ("Pacific/Chatham", "02:00", "04:00", "2027-01-15"),
            ("Pacific/Chatham", "02:00", "04:00", "2027-04-04"),
            ("Pacific/Chatham", "03:00", "04:00", "2027-04-04"),
            ("Pacific/Chatham", "02:00", "04:00", "2027-09-26"),
            ("Pacific/Chatham", "03:00", "03:30", "2027-09-26"),
        ],
        expect![[r#"
            Asia/Kathmandu 02:00-04:00 2027-03-14: 2027-03-14 02:00 +05:45 -> 2027-03-14 04:00 +05:45 | 20:15Z -> 22:15Z | PT2H | -
            Asia/Kathmandu 23:00-01:00 2027-12-31: 2027-12-31 23:00 +05:45 -> 2028-01-01 01:00 +05:45 | 17:15Z -> 19:15Z | PT2H | -
            Pacific/Chatham 02:00-04:00 2027-01-15: 2027-01-15 02:00 +13:45 -> 2027-01-15 04:00 +13:45 | 12:15Z -> 14:15Z | PT2H | -
            Pacific/Chatham 02:00-04:00 2027-04-04: 2027-04-04 02:00 +13:45 -> 2027-04-04 03:00 +12:45 | 12:15Z -> 14:15Z | PT2H | ends_early
            Pacific/Chatham 03:00-04:00 2027-04-04: 2027-04-04 03:00 +13:45 -> 2027-04-04 03:00 +12:45 | 13:15Z -> 14:15Z | PT1H | start_in_fold,ends_early
            Pacific/Chatham 02:00-04:00 2027-09-26: 2027-09-26 02:00 +12:45 -> 2027-09-26 04:00 +13:45 | 13:15Z -> 14:15Z | PT1H | shortened
            Pacific/Chatham 03:00-03:30 2027-09-26: does not open
        "#]],
    );
}

/// A schedule over the New York spring-forward night: six devices, one start a minute, the
/// window 02:00-04:00 opening at 03:00 EDT (07:00Z) on 2027-03-14 and closing at 04:00 EDT.
#[test]
fn schedule_on_spring_forward_night() {
    let p = plan(
        "[window]\nstart = \"02:00\"\nend = \"04:00\"\n\
         [limits]\nmax_in_flight = 100\nmax_starts_per_minute = 1",
        "[[step]]\n[[step.stage]]\nname = \"all\"",
    );
    let f = fleet("ny*6 America/New_York");
    let s = swell_controller::planner::plan(&p, &f, at("2027-03-13T12:00:00Z")).unwrap();
    check(&p, &f, &s);
    expect![[r#"
        planned at 2027-03-13T12:00:00Z
        devices    6 in 1 steps
        window     02:00-04:00 device-local
        zones      east to west
        limits     100 in flight, 1 starts/min

        STEP  STAGE  DEVICES  APPROVAL  SUCCESS                 FAILURE            TIMEOUT  NOT BEFORE            ESTIMATED END
        1     all    6        -         6 committed + 10m soak  > 0 failed: pause  30m      2027-03-13T12:00:00Z  2027-03-14T07:45:00Z

        STEP  STAGE  ZONE              DEVICES  LOCAL START              LOCAL END                UTC START          UTC END            FIRST START  LAST START  DST
        1     all    America/New_York  6        2027-03-14 03:00 -04:00  2027-03-14 04:00 -04:00  2027-03-14 07:00Z  2027-03-14 08:00Z  07:00:00Z    07:05:00Z   start in DST gap, opens when it ends; clocks spring forward, shorter than written
    "#]].assert_eq(&table(&p, &s));
}

/// A schedule over the New York fall-back night with more devices than fit: the 01:00-03:00
/// window lasts its written two hours (05:00Z-07:00Z), so at one start a minute 120 devices
/// start that night and the other 10 the next night, not 180 in a three-hour window.
#[test]
fn schedule_on_fall_back_night_keeps_written_length() {
    let p = plan(
        "[window]\nstart = \"01:00\"\nend = \"03:00\"\n\
         [limits]\nmax_in_flight = 1000\nmax_starts_per_minute = 1",
        "[[step]]\n[[step.stage]]\nname = \"all\"",
    );
    let f = fleet("ny*130 America/New_York");
    let s = swell_controller::planner::plan(&p, &f, at("2027-11-06T12:00:00Z")).unwrap();
    check(&p, &f, &s);
    expect![[r#"
        planned at 2027-11-06T12:00:00Z
        devices    130 in 1 steps
        window     01:00-03:00 device-local
        zones      east to west
        limits     1000 in flight, 1 starts/min

        STEP  STAGE  DEVICES  APPROVAL  SUCCESS                   FAILURE            TIMEOUT  NOT BEFORE            ESTIMATED END
        1     all    130      -         130 committed + 10m soak  > 0 failed: pause  30m      2027-11-06T12:00:00Z  2027-11-08T06:49:00Z

        STEP  STAGE  ZONE              DEVICES  LOCAL START              LOCAL END                UTC START          UTC END            FIRST START  LAST START  DST
        1     all    America/New_York  120      2027-11-07 01:00 -04:00  2027-11-07 02:00 -05:00  2027-11-07 05:00Z  2027-11-07 07:00Z  05:00:00Z    06:59:00Z   start in repeated hour, first occurrence; clocks fall back, ends after its written length
        1     all    America/New_York  10       2027-11-08 01:00 -05:00  2027-11-08 03:00 -05:00  2027-11-08 06:00Z  2027-11-08 08:00Z  06:00:00Z    06:09:00Z   -
    "#]].assert_eq(&table(&p, &s));
}

/// Europe/London's spring-forward night: a 01:00-03:00 window opens at 02:00 BST (01:00Z)
/// with one real hour, so with one start a minute 60 of 70 devices start that night.
#[test]
fn schedule_on_london_spring_forward_night() {
    let p = plan(
        "[window]\nstart = \"01:00\"\nend = \"03:00\"\n\
         [limits]\nmax_in_flight = 1000\nmax_starts_per_minute = 1",
        "[[step]]\n[[step.stage]]\nname = \"all\"",
    );
    let f = fleet("ldn*70 Europe/London");
    let s = swell_controller::planner::plan(&p, &f, at("2027-03-27T12:00:00Z")).unwrap();
    check(&p, &f, &s);
    expect![[r#"
        planned at 2027-03-27T12:00:00Z
        devices    70 in 1 steps
        window     01:00-03:00 device-local
        zones      east to west
        limits     1000 in flight, 1 starts/min

        STEP  STAGE  DEVICES  APPROVAL  SUCCESS                  FAILURE            TIMEOUT  NOT BEFORE            ESTIMATED END
        1     all    70       -         70 committed + 10m soak  > 0 failed: pause  30m      2027-03-27T12:00:00Z  2027-03-29T00:49:00Z

        STEP  STAGE  ZONE           DEVICES  LOCAL START              LOCAL END                UTC START          UTC END            FIRST START  LAST START  DST
        1     all    Europe/London  60       2027-03-28 02:00 +01:00  2027-03-28 03:00 +01:00  2027-03-28 01:00Z  2027-03-28 02:00Z  01:00:00Z    01:59:00Z   start in DST gap, opens when it ends; clocks spring forward, shorter than written
        1     all    Europe/London  10       2027-03-29 01:00 +01:00  2027-03-29 03:00 +01:00  2027-03-29 00:00Z  2027-03-29 02:00Z  00:00:00Z    00:09:00Z   -
    "#]].assert_eq(&table(&p, &s));
}
