//! Rate limits in the schedule: starts spread evenly within each UTC minute, an exponential
//! ramp, `max_in_flight` and per-site disruption budgets as static bounds (a device counts as
//! in flight for its whole timeout), shared by the parallel stages of a step; and a plan whose
//! limits leave no room is refused with the stage, zone and device named.
// Helpers panic on the unexpected, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod planner_common;

use std::collections::BTreeMap;

use expect_test::expect;
use planner_common::{at, check, fleet, plan};
use swell_controller::planner;
use swell_controller::planner::render::starts_table;

fn head(limits: &str) -> String {
    format!("[window]\nstart = \"02:00\"\nend = \"04:00\"\n[limits]\n{limits}")
}

const ONE_STAGE: &str = "[[step]]\n[[step.stage]]\nname = \"all\"";

/// Four starts a minute: one every 15 seconds, on the minute's slots, into the next minute.
#[test]
fn starts_spread_evenly_within_a_minute() {
    let p = plan(
        &head("max_in_flight = 100\nmax_starts_per_minute = 4"),
        ONE_STAGE,
    );
    let f = fleet("utc*6 UTC");
    let s = planner::plan(&p, &f, at("2027-05-01T12:00:00Z")).unwrap();
    check(&p, &f, &s);
    expect![[r#"
        START (UTC)           LOCAL                       STEP  STAGE  ZONE  DEVICE
        2027-05-02T02:00:00Z  2027-05-02 02:00:00 +00:00  1     all    UTC   utc-01
        2027-05-02T02:00:15Z  2027-05-02 02:00:15 +00:00  1     all    UTC   utc-02
        2027-05-02T02:00:30Z  2027-05-02 02:00:30 +00:00  1     all    UTC   utc-03
        2027-05-02T02:00:45Z  2027-05-02 02:00:45 +00:00  1     all    UTC   utc-04
        2027-05-02T02:01:00Z  2027-05-02 02:01:00 +00:00  1     all    UTC   utc-05
        2027-05-02T02:01:15Z  2027-05-02 02:01:15 +00:00  1     all    UTC   utc-06
    "#]]
    .assert_eq(&starts_table(&s));
}

/// A ramp from 1 start a minute, doubling every 2 minutes up to 8, counted from the step's
/// first window opening (02:00Z): starts per minute 1 1 2 2 4 4 8 8 ...
#[test]
fn ramp_doubles_every_interval() {
    let p = plan(
        &head(
            "max_in_flight = 1000\nmax_starts_per_minute = 8\n\
             ramp = { initial_per_minute = 1, factor = 2, every = \"2m\" }",
        ),
        ONE_STAGE,
    );
    let f = fleet("utc*40 UTC");
    let s = planner::plan(&p, &f, at("2027-05-01T12:00:00Z")).unwrap();
    check(&p, &f, &s);
    let mut per_minute: BTreeMap<String, usize> = BTreeMap::new();
    for st in s.starts() {
        *per_minute
            .entry(st.start.at.strftime("%H:%M").to_string())
            .or_default() += 1;
    }
    expect![[r#"
        {
            "02:00": 1,
            "02:01": 1,
            "02:02": 2,
            "02:03": 2,
            "02:04": 4,
            "02:05": 4,
            "02:06": 8,
            "02:07": 8,
            "02:08": 8,
            "02:09": 2,
        }
    "#]]
    .assert_debug_eq(&per_minute);
}

/// `max_in_flight = 2` with a 30-minute timeout: two devices start, the next two once the
/// first two's timeouts have run out, and so on, even at 60 starts a minute.
#[test]
fn max_in_flight_counts_each_device_for_its_timeout() {
    let p = plan(
        &head("max_in_flight = 2\nmax_starts_per_minute = 60"),
        ONE_STAGE,
    );
    let f = fleet("utc*5 UTC");
    let s = planner::plan(&p, &f, at("2027-05-01T12:00:00Z")).unwrap();
    check(&p, &f, &s);
    expect![[r#"
        START (UTC)           LOCAL                       STEP  STAGE  ZONE  DEVICE
        2027-05-02T02:00:00Z  2027-05-02 02:00:00 +00:00  1     all    UTC   utc-01
        2027-05-02T02:00:01Z  2027-05-02 02:00:01 +00:00  1     all    UTC   utc-02
        2027-05-02T02:30:00Z  2027-05-02 02:30:00 +00:00  1     all    UTC   utc-03
        2027-05-02T02:30:01Z  2027-05-02 02:30:01 +00:00  1     all    UTC   utc-04
        2027-05-02T03:00:00Z  2027-05-02 03:00:00 +00:00  1     all    UTC   utc-05
    "#]]
    .assert_eq(&starts_table(&s));
}

/// `disruption_budget = { site = 1 }`: at most one device per site in flight. Sites a and b
/// (London) and c (New York) each update one device at a time, 30 minutes apart; devices
/// without a site tag are not held back by the budget. The dev and test stages run in
/// parallel and share the budget: dev's a-1 and test's a-2 are in the same site.
#[test]
fn disruption_budget_per_site_across_parallel_stages() {
    let p = plan(
        &head("max_in_flight = 10\nmax_starts_per_minute = 60\ndisruption_budget = { site = 1 }"),
        "[[step]]\n\
         [[step.stage]]\nname = \"dev\"\nselector = { tags = { ring = \"dev\" } }\n\
         [[step.stage]]\nname = \"test\"\nselector = { tags = { ring = \"test\" } }",
    );
    let f = fleet(
        "a-1  Europe/London     site=a ring=dev
         a-2  Europe/London     site=a ring=test
         a-3  Europe/London     site=a ring=dev
         b-1  Europe/London     site=b ring=test
         b-2  Europe/London     site=b ring=test
         c-1  America/New_York  site=c ring=dev
         c-2  America/New_York  site=c ring=test
         c-3  America/New_York  site=c ring=dev
         free-1  Europe/London  ring=dev
         free-2  Europe/London  ring=test",
    );
    let s = planner::plan(&p, &f, at("2027-05-01T12:00:00Z")).unwrap();
    check(&p, &f, &s);
    expect![[r#"
        START (UTC)           LOCAL                       STEP  STAGE  ZONE              DEVICE
        2027-05-02T01:00:00Z  2027-05-02 02:00:00 +01:00  1     dev    Europe/London     a-1
        2027-05-02T01:00:01Z  2027-05-02 02:00:01 +01:00  1     test   Europe/London     b-1
        2027-05-02T01:00:02Z  2027-05-02 02:00:02 +01:00  1     dev    Europe/London     free-1
        2027-05-02T01:00:03Z  2027-05-02 02:00:03 +01:00  1     test   Europe/London     free-2
        2027-05-02T01:30:00Z  2027-05-02 02:30:00 +01:00  1     test   Europe/London     a-2
        2027-05-02T01:30:01Z  2027-05-02 02:30:01 +01:00  1     test   Europe/London     b-2
        2027-05-02T02:00:00Z  2027-05-02 03:00:00 +01:00  1     dev    Europe/London     a-3
        2027-05-02T06:00:00Z  2027-05-02 02:00:00 -04:00  1     dev    America/New_York  c-1
        2027-05-02T06:30:00Z  2027-05-02 02:30:00 -04:00  1     test   America/New_York  c-2
        2027-05-02T07:00:00Z  2027-05-02 03:00:00 -04:00  1     dev    America/New_York  c-3
    "#]]
    .assert_eq(&starts_table(&s));
}

/// Limits that cannot be met within a year are refused, naming the stage, zone and the
/// first device without room: one device in flight at a time for a week each cannot fit
/// 60 devices into 366 days.
#[test]
fn limits_that_leave_no_room_are_refused() {
    let p = plan(
        &head("max_in_flight = 1\nmax_starts_per_minute = 1"),
        "[[step]]\n[[step.stage]]\nname = \"slow\"\ndevice_timeout = \"7d\"",
    );
    let f = fleet("utc*60 UTC");
    let err = planner::plan(&p, &f, at("2027-05-01T12:00:00Z")).unwrap_err();
    expect![[r#"stage "slow": no start for device utc-54 in UTC within 366 days of 2027-05-01T12:00:00Z; the window, rate limits and budgets leave too little room"#]].assert_eq(&err.to_string());
}
