//! Zone order: windows open east to west by UTC offset at the step's start (or in an explicit
//! order), a zone never before the one ahead of it; zones with no devices take no turn; a
//! window crossing midnight belongs to the local date it starts on.
// Helpers panic on the unexpected, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod planner_common;

use expect_test::expect;
use planner_common::{at, check, fleet, load_plan, plan};
use swell_controller::planner;
use swell_controller::planner::render::{offset, starts_table, table};

const HEAD: &str = "[window]\nstart = \"02:00\"\nend = \"04:00\"\n\
                    [limits]\nmax_in_flight = 100\nmax_starts_per_minute = 1";

const ONE_STAGE: &str = "[[step]]\n[[step.stage]]\nname = \"all\"";

const WORLD: &str = "
    chatham*2    Pacific/Chatham
    lordhowe*2   Australia/Lord_Howe
    kathmandu*2  Asia/Kathmandu
    london*2     Europe/London
    newyork*2    America/New_York
    la*2         America/Los_Angeles
";

/// Follow the sun from 2027-06-01T00:00Z: Chatham (+12:45) opens first, then Lord Howe
/// (+10:30), Kathmandu (+05:45), London (+01:00), New York (-04:00), Los Angeles (-07:00),
/// each in its own 02:00-04:00.
#[test]
fn follow_the_sun_east_to_west() {
    let p = plan(HEAD, ONE_STAGE);
    let f = fleet(WORLD);
    let s = planner::plan(&p, &f, at("2027-06-01T00:00:00Z")).unwrap();
    check(&p, &f, &s);
    expect![[r#"
        planned at 2027-06-01T00:00:00Z
        devices    12 in 1 steps
        window     02:00-04:00 device-local
        zones      east to west
        limits     100 in flight, 1 starts/min

        STEP  STAGE  DEVICES  APPROVAL  SUCCESS                  FAILURE            TIMEOUT  NOT BEFORE            ESTIMATED END
        1     all    12       -         12 committed + 10m soak  > 0 failed: pause  30m      2027-06-01T00:00:00Z  2027-06-02T09:41:00Z

        STEP  STAGE  ZONE                 DEVICES  LOCAL START              LOCAL END                UTC START          UTC END            FIRST START  LAST START  DST
        1     all    Pacific/Chatham      2        2027-06-02 02:00 +12:45  2027-06-02 04:00 +12:45  2027-06-01 13:15Z  2027-06-01 15:15Z  13:15:00Z    13:16:00Z   -
        1     all    Australia/Lord_Howe  2        2027-06-02 02:00 +10:30  2027-06-02 04:00 +10:30  2027-06-01 15:30Z  2027-06-01 17:30Z  15:30:00Z    15:31:00Z   -
        1     all    Asia/Kathmandu       2        2027-06-02 02:00 +05:45  2027-06-02 04:00 +05:45  2027-06-01 20:15Z  2027-06-01 22:15Z  20:15:00Z    20:16:00Z   -
        1     all    Europe/London        2        2027-06-02 02:00 +01:00  2027-06-02 04:00 +01:00  2027-06-02 01:00Z  2027-06-02 03:00Z  01:00:00Z    01:01:00Z   -
        1     all    America/New_York     2        2027-06-02 02:00 -04:00  2027-06-02 04:00 -04:00  2027-06-02 06:00Z  2027-06-02 08:00Z  06:00:00Z    06:01:00Z   -
        1     all    America/Los_Angeles  2        2027-06-02 02:00 -07:00  2027-06-02 04:00 -07:00  2027-06-02 09:00Z  2027-06-02 11:00Z  09:00:00Z    09:01:00Z   -
    "#]].assert_eq(&table(&p, &s));
}

/// At 2027-06-01T05:30Z New York's window is 30 minutes away, but east to west means the
/// wave starts in Chatham; New York waits for its turn after London, the next night.
#[test]
fn a_western_zone_waits_for_its_turn() {
    let p = plan(HEAD, ONE_STAGE);
    let f = fleet(WORLD);
    let s = planner::plan(&p, &f, at("2027-06-01T05:30:00Z")).unwrap();
    check(&p, &f, &s);
    let order: Vec<String> = s.steps[0].stages[0]
        .zones
        .iter()
        .map(|z| format!("{} {} {}", z.zone, offset(z.utc_offset), z.opens))
        .collect();
    expect![[r#"
        [
            "Pacific/Chatham +12:45 2027-06-01T13:15:00Z",
            "Australia/Lord_Howe +10:30 2027-06-01T15:30:00Z",
            "Asia/Kathmandu +05:45 2027-06-01T20:15:00Z",
            "Europe/London +01:00 2027-06-02T01:00:00Z",
            "America/New_York -04:00 2027-06-02T06:00:00Z",
            "America/Los_Angeles -07:00 2027-06-02T09:00:00Z",
        ]
    "#]]
    .assert_debug_eq(&order);
}

/// An explicit order: New York, Tokyo (no devices: it takes no turn and is not shown),
/// London; Kathmandu is not listed and follows. A second step whose selector matches nobody
/// shows as "(no devices)" and passes at once (its estimated end is its start).
#[test]
fn explicit_order_and_zones_without_devices() {
    let head =
        format!("zone_order = [\"America/New_York\", \"Asia/Tokyo\", \"Europe/London\"]\n{HEAD}");
    let p = plan(
        &head,
        "[[step]]\n[[step.stage]]\nname = \"all\"\n\
         [[step]]\n[[step.stage]]\nname = \"nobody\"\nselector = { tags = { ring = \"none\" } }",
    );
    let f = fleet(
        "kathmandu*2  Asia/Kathmandu
         london*2     Europe/London
         newyork*2    America/New_York",
    );
    let s = planner::plan(&p, &f, at("2027-06-01T05:30:00Z")).unwrap();
    check(&p, &f, &s);
    assert_eq!(s.steps[1].not_before, s.steps[1].estimated_end);
    expect![[r#"
        planned at 2027-06-01T05:30:00Z
        devices    6 in 2 steps
        window     02:00-04:00 device-local
        zones      America/New_York, Asia/Tokyo, Europe/London, then the rest east to west
        limits     100 in flight, 1 starts/min

        STEP  STAGE   DEVICES  APPROVAL  SUCCESS                 FAILURE            TIMEOUT  NOT BEFORE            ESTIMATED END
        1     all     6        -         6 committed + 10m soak  > 0 failed: pause  30m      2027-06-01T05:30:00Z  2027-06-02T20:56:00Z
        2     nobody  0        -         0 committed + 10m soak  > 0 failed: pause  30m      2027-06-02T20:56:00Z  2027-06-02T20:56:00Z

        STEP  STAGE   ZONE              DEVICES  LOCAL START              LOCAL END                UTC START          UTC END            FIRST START  LAST START  DST
        1     all     America/New_York  2        2027-06-01 02:00 -04:00  2027-06-01 04:00 -04:00  2027-06-01 06:00Z  2027-06-01 08:00Z  06:00:00Z    06:01:00Z   -
        1     all     Europe/London     2        2027-06-02 02:00 +01:00  2027-06-02 04:00 +01:00  2027-06-02 01:00Z  2027-06-02 03:00Z  01:00:00Z    01:01:00Z   -
        1     all     Asia/Kathmandu    2        2027-06-03 02:00 +05:45  2027-06-03 04:00 +05:45  2027-06-02 20:15Z  2027-06-02 22:15Z  20:15:00Z    20:16:00Z   -
        2     nobody  (no devices)
    "#]].assert_eq(&table(&p, &s));
}

/// A window open at `now` is used from `now` on: the first start is the first rate slot
/// at or after it.
#[test]
fn window_already_open_at_now() {
    let p = plan(HEAD, ONE_STAGE);
    let f = fleet("london*3 Europe/London");
    let s = planner::plan(&p, &f, at("2027-06-01T02:10:20Z")).unwrap();
    check(&p, &f, &s);
    expect![[r#"
        START (UTC)           LOCAL                       STEP  STAGE  ZONE           DEVICE
        2027-06-01T02:11:00Z  2027-06-01 03:11:00 +01:00  1     all    Europe/London  london-01
        2027-06-01T02:12:00Z  2027-06-01 03:12:00 +01:00  1     all    Europe/London  london-02
        2027-06-01T02:13:00Z  2027-06-01 03:13:00 +01:00  1     all    Europe/London  london-03
    "#]]
    .assert_eq(&starts_table(&s));
}

/// A 23:00-01:30 window crossing midnight: 70 London devices at one start a minute run from
/// 23:00 to 00:09 the next day, all in the window of the date it started on (2027-01-10).
#[test]
fn window_crossing_midnight_belongs_to_its_start_date() {
    let p = plan(
        "[window]\nstart = \"23:00\"\nend = \"01:30\"\n\
         [limits]\nmax_in_flight = 100\nmax_starts_per_minute = 1",
        ONE_STAGE,
    );
    let f = fleet("london*70 Europe/London");
    let s = planner::plan(&p, &f, at("2027-01-10T12:00:00Z")).unwrap();
    check(&p, &f, &s);
    let windows = &s.steps[0].stages[0].zones[0].windows;
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].window.local_date.to_string(), "2027-01-10");
    expect![[r#"
        planned at 2027-01-10T12:00:00Z
        devices    70 in 1 steps
        window     23:00-01:30 device-local
        zones      east to west
        limits     100 in flight, 1 starts/min

        STEP  STAGE  DEVICES  APPROVAL  SUCCESS                  FAILURE            TIMEOUT  NOT BEFORE            ESTIMATED END
        1     all    70       -         70 committed + 10m soak  > 0 failed: pause  30m      2027-01-10T12:00:00Z  2027-01-11T00:49:00Z

        STEP  STAGE  ZONE           DEVICES  LOCAL START              LOCAL END                UTC START          UTC END            FIRST START  LAST START            DST
        1     all    Europe/London  70       2027-01-10 23:00 +00:00  2027-01-11 01:30 +00:00  2027-01-10 23:00Z  2027-01-11 01:30Z  23:00:00Z    2027-01-11 00:09:00Z  -
    "#]].assert_eq(&table(&p, &s));
}

/// The night-shift example plan (tests/data/plans/night-shift.toml): explicit order
/// Kathmandu, London, New York, then Tokyo (not listed, so after them); a 23:00-01:30
/// window; one start a minute; five in flight for 20 minutes each.
#[test]
fn night_shift_example() {
    let p = load_plan("night-shift.toml");
    let f = fleet(
        "tokyo*2      Asia/Tokyo
         kathmandu*3  Asia/Kathmandu
         london*3     Europe/London
         newyork*3    America/New_York",
    );
    let s = planner::plan(&p, &f, at("2027-01-10T00:00:00Z")).unwrap();
    check(&p, &f, &s);
    expect![[r#"
        START (UTC)           LOCAL                       STEP  STAGE     ZONE              DEVICE
        2027-01-10T17:15:00Z  2027-01-10 23:00:00 +05:45  1     everyone  Asia/Kathmandu    kathmandu-01
        2027-01-10T17:16:00Z  2027-01-10 23:01:00 +05:45  1     everyone  Asia/Kathmandu    kathmandu-02
        2027-01-10T17:17:00Z  2027-01-10 23:02:00 +05:45  1     everyone  Asia/Kathmandu    kathmandu-03
        2027-01-10T23:00:00Z  2027-01-10 23:00:00 +00:00  1     everyone  Europe/London     london-01
        2027-01-10T23:01:00Z  2027-01-10 23:01:00 +00:00  1     everyone  Europe/London     london-02
        2027-01-10T23:02:00Z  2027-01-10 23:02:00 +00:00  1     everyone  Europe/London     london-03
        2027-01-11T04:00:00Z  2027-01-10 23:00:00 -05:00  1     everyone  America/New_York  newyork-01
        2027-01-11T04:01:00Z  2027-01-10 23:01:00 -05:00  1     everyone  America/New_York  newyork-02
        2027-01-11T04:02:00Z  2027-01-10 23:02:00 -05:00  1     everyone  America/New_York  newyork-03
        2027-01-11T14:00:00Z  2027-01-11 23:00:00 +09:00  1     everyone  Asia/Tokyo        tokyo-01
        2027-01-11T14:01:00Z  2027-01-11 23:01:00 +09:00  1     everyone  Asia/Tokyo        tokyo-02
    "#]].assert_eq(&starts_table(&s));
}
