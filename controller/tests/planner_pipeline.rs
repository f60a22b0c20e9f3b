//! The field pipeline (tests/data/plans/field-pipeline.toml, the worked example of
//! docs/rollouts.md) planned over a fleet in seven zones: dev and test in parallel; edu,
//! sandbox and staging in parallel; an approval; production's 20% canary with the canary
//! cohort first; then three waves, each share taken from the production devices not yet
//! assigned. The rollout selector leaves out the device already on 1.5.0 and the other
//! hardware.
// Helpers panic on the unexpected, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod planner_common;

use expect_test::expect;
use planner_common::{at, check, device, fleet_devices, load_plan};
use swell_controller::planner::render::{json, table};
use swell_controller::planner::{self, FleetSnapshot};
use swell_proto::{HardwareId, SemVer};

/// The fleet: rings dev/test (Berlin), edu/sandbox (London), staging (New York, Tokyo), and
/// 30 production devices over seven zones and twelve sites, three of them canaries.
fn field_fleet() -> FleetSnapshot {
    let mut devices = fleet_devices(
        "
        dev*2        Europe/Berlin        ring=dev site=lab-ber
        test*2       Europe/Berlin        ring=test site=lab-ber2
        edu*2        Europe/London        ring=edu site=edu-ldn
        sandbox*2    Europe/London        ring=sandbox site=sbx-ldn
        staging-ny*2 America/New_York     ring=staging site=stg-nyc
        staging-tk*2 Asia/Tokyo           ring=staging site=stg-tyo
        chatham*2    Pacific/Chatham      ring=production site=cht-1
        lordhowe*2   Australia/Lord_Howe  ring=production site=lhi-1
        tokyo*4      Asia/Tokyo           ring=production site=tyo-1
        tokyo2*2     Asia/Tokyo           ring=production site=tyo-2
        kathmandu*4  Asia/Kathmandu       ring=production site=ktm-1
        london*4     Europe/London        ring=production site=ldn-1
        london2*2    Europe/London        ring=production site=ldn-2
        newyork*4    America/New_York     ring=production site=nyc-1
        la*4         America/Los_Angeles  ring=production site=lax-1
        ny-canary    America/New_York     ring=production site=nyc-2 cohort=canary
        ldn-canary   Europe/London        ring=production site=ldn-3 cohort=canary
        tyo-canary   Asia/Tokyo           ring=production site=tyo-3 cohort=canary
        ",
    );
    let mut done = device("already-new", "Europe/London", &["ring=production"]);
    done.version = Some(SemVer::new("1.5.0").unwrap());
    devices.push(done);
    let mut other = device("other-hw", "Europe/London", &["ring=production"]);
    other.hardware = HardwareId::new("mcu-m4").unwrap();
    devices.push(other);
    FleetSnapshot::new(devices).unwrap()
}

/// The dry-run table of the field pipeline from Monday 2027-03-08T09:00Z. Production's
/// waves reach New York on its spring-forward night (2027-03-14), where the 02:00 window
/// opens at 03:00 EDT.
#[test]
fn field_pipeline_dry_run() {
    let p = load_plan("field-pipeline.toml");
    let f = field_fleet();
    let s = planner::plan(&p, &f, at("2027-03-08T09:00:00Z")).unwrap();
    check(&p, &f, &s);
    expect![[r#"
        plan       gateway-os field pipeline
        planned at 2027-03-08T09:00:00Z
        devices    43 in 6 steps
        window     02:00-04:00 device-local
        zones      east to west
        limits     20 in flight, 10 starts/min (ramp from 2/min, x2 every 10m), at most 1 per site

        STEP  STAGE    DEVICES  APPROVAL  SUCCESS                 FAILURE                         TIMEOUT  NOT BEFORE            ESTIMATED END
        1     dev      2        -         2 committed + 30m soak  > 0 failed: pause               45m      2027-03-08T09:00:00Z  2027-03-09T03:00:00Z
        1     test     2        -         2 committed + 30m soak  > 0 failed: pause               45m      2027-03-08T09:00:00Z  2027-03-09T03:00:30Z
        2     edu      2        -         2 committed + 30m soak  > 0 failed: pause               45m      2027-03-09T03:00:30Z  2027-03-10T04:00:00Z
        2     sandbox  2        -         2 committed + 30m soak  > 0 failed: pause               45m      2027-03-09T03:00:30Z  2027-03-10T04:00:06Z
        2     staging  4        -         4 committed + 1h soak   > 0 failed: pause               45m      2027-03-09T03:00:30Z  2027-03-10T09:30:00Z
        3     canary   7        required  7 committed + 2h soak   > 0 failed: abort_and_rollback  45m      2027-03-10T09:30:00Z  2027-03-11T09:45:06Z
        4     wave-1   6        -         6 committed + 1h soak   > 0 failed: abort_and_rollback  45m      2027-03-11T09:45:06Z  2027-03-12T12:30:00Z
        5     wave-2   9        -         9 committed + 1h soak   > 0 failed: abort_and_rollback  45m      2027-03-12T12:30:00Z  2027-03-13T12:30:00Z
        6     wave-3   9        -         9 committed + 1h soak   > 0 failed: abort_and_rollback  45m      2027-03-13T12:30:00Z  2027-03-15T07:45:00Z

        STEP  STAGE    ZONE                 DEVICES  LOCAL START              LOCAL END                UTC START          UTC END            FIRST START  LAST START  DST
        1     dev      Europe/Berlin        2        2027-03-09 02:00 +01:00  2027-03-09 04:00 +01:00  2027-03-09 01:00Z  2027-03-09 03:00Z  01:00:00Z    01:45:00Z   -
        1     test     Europe/Berlin        2        2027-03-09 02:00 +01:00  2027-03-09 04:00 +01:00  2027-03-09 01:00Z  2027-03-09 03:00Z  01:00:30Z    01:45:30Z   -
        2     edu      Europe/London        2        2027-03-10 02:00 +00:00  2027-03-10 04:00 +00:00  2027-03-10 02:00Z  2027-03-10 04:00Z  02:00:00Z    02:45:00Z   -
        2     sandbox  Europe/London        2        2027-03-10 02:00 +00:00  2027-03-10 04:00 +00:00  2027-03-10 02:00Z  2027-03-10 04:00Z  02:00:06Z    02:45:06Z   -
        2     staging  Asia/Tokyo           2        2027-03-10 02:00 +09:00  2027-03-10 04:00 +09:00  2027-03-09 17:00Z  2027-03-09 19:00Z  17:00:00Z    17:45:00Z   -
        2     staging  America/New_York     2        2027-03-10 02:00 -05:00  2027-03-10 04:00 -05:00  2027-03-10 07:00Z  2027-03-10 09:00Z  07:00:00Z    07:45:00Z   -
        3     canary   Asia/Tokyo           2        2027-03-11 02:00 +09:00  2027-03-11 04:00 +09:00  2027-03-10 17:00Z  2027-03-10 19:00Z  17:00:00Z    17:00:30Z   -
        3     canary   Asia/Kathmandu       1        2027-03-11 02:00 +05:45  2027-03-11 04:00 +05:45  2027-03-10 20:15Z  2027-03-10 22:15Z  20:15:00Z    20:15:00Z   -
        3     canary   Europe/London        2        2027-03-11 02:00 +00:00  2027-03-11 04:00 +00:00  2027-03-11 02:00Z  2027-03-11 04:00Z  02:00:00Z    02:00:06Z   -
        3     canary   America/New_York     2        2027-03-11 02:00 -05:00  2027-03-11 04:00 -05:00  2027-03-11 07:00Z  2027-03-11 09:00Z  07:00:00Z    07:00:06Z   -
        4     wave-1   Australia/Lord_Howe  1        2027-03-12 02:00 +11:00  2027-03-12 04:00 +11:00  2027-03-11 15:00Z  2027-03-11 17:00Z  15:00:00Z    15:00:00Z   -
        4     wave-1   Asia/Kathmandu       3        2027-03-12 02:00 +05:45  2027-03-12 04:00 +05:45  2027-03-11 20:15Z  2027-03-11 22:15Z  20:15:00Z    21:45:00Z   -
        4     wave-1   America/Los_Angeles  2        2027-03-12 02:00 -08:00  2027-03-12 04:00 -08:00  2027-03-12 10:00Z  2027-03-12 12:00Z  10:00:00Z    10:45:00Z   -
        5     wave-2   Pacific/Chatham      1        2027-03-13 02:00 +13:45  2027-03-13 04:00 +13:45  2027-03-12 12:15Z  2027-03-12 14:15Z  12:30:00Z    12:30:00Z   -
        5     wave-2   Asia/Tokyo           4        2027-03-13 02:00 +09:00  2027-03-13 04:00 +09:00  2027-03-12 17:00Z  2027-03-12 19:00Z  17:00:00Z    17:45:06Z   -
        5     wave-2   Europe/London        2        2027-03-13 02:00 +00:00  2027-03-13 04:00 +00:00  2027-03-13 02:00Z  2027-03-13 04:00Z  02:00:00Z    02:45:00Z   -
        5     wave-2   America/Los_Angeles  2        2027-03-13 02:00 -08:00  2027-03-13 04:00 -08:00  2027-03-13 10:00Z  2027-03-13 12:00Z  10:00:00Z    10:45:00Z   -
        6     wave-3   Pacific/Chatham      1        2027-03-14 02:00 +13:45  2027-03-14 04:00 +13:45  2027-03-13 12:15Z  2027-03-13 14:15Z  12:30:00Z    12:30:00Z   -
        6     wave-3   Australia/Lord_Howe  1        2027-03-14 02:00 +11:00  2027-03-14 04:00 +11:00  2027-03-13 15:00Z  2027-03-13 17:00Z  15:00:00Z    15:00:00Z   -
        6     wave-3   Asia/Tokyo           1        2027-03-14 02:00 +09:00  2027-03-14 04:00 +09:00  2027-03-13 17:00Z  2027-03-13 19:00Z  17:00:00Z    17:00:00Z   -
        6     wave-3   Europe/London        3        2027-03-14 02:00 +00:00  2027-03-14 04:00 +00:00  2027-03-14 02:00Z  2027-03-14 04:00Z  02:00:00Z    02:45:00Z   -
        6     wave-3   America/New_York     2        2027-03-14 03:00 -04:00  2027-03-14 04:00 -04:00  2027-03-14 07:00Z  2027-03-14 08:00Z  07:00:00Z    07:45:00Z   start in DST gap, opens when it ends; clocks spring forward, shorter than written
        6     wave-3   America/New_York     1        2027-03-15 02:00 -04:00  2027-03-15 04:00 -04:00  2027-03-15 06:00Z  2027-03-15 08:00Z  06:00:00Z    06:00:00Z   -
    "#]].assert_eq(&table(&p, &s));
}

/// Which devices each stage takes: shares round up over the production devices not yet
/// assigned (20% of 31 is 7, 25% of the 24 left is 6, 50% of 18 is 9, the rest 9); the
/// canary stage takes all three canary-cohort devices first.
#[test]
fn field_pipeline_assignment() {
    let p = load_plan("field-pipeline.toml");
    let f = field_fleet();
    let a = planner::assign(&p, &f);
    let mut out = String::new();
    for ((_, stage), ids) in p.stages().zip(&a.stages) {
        let ids: Vec<&str> = ids.iter().map(|d| d.as_str()).collect();
        out.push_str(&format!(
            "{:8} {:2} {}\n",
            stage.name,
            ids.len(),
            ids.join(" ")
        ));
    }
    assert!(
        a.unassigned.is_empty(),
        "every production device is in a wave"
    );
    expect![[r#"
        dev       2 dev-01 dev-02
        test      2 test-01 test-02
        edu       2 edu-01 edu-02
        sandbox   2 sandbox-01 sandbox-02
        staging   4 staging-ny-01 staging-ny-02 staging-tk-01 staging-tk-02
        canary    7 kathmandu-01 ldn-canary london2-02 newyork-02 ny-canary tokyo-04 tyo-canary
        wave-1    6 kathmandu-02 kathmandu-03 kathmandu-04 la-01 la-02 lordhowe-01
        wave-2    9 chatham-01 la-03 la-04 london-01 london-03 tokyo-02 tokyo-03 tokyo2-01 tokyo2-02
        wave-3    9 chatham-02 london-02 london-04 london2-01 lordhowe-02 newyork-01 newyork-03 newyork-04 tokyo-01
    "#]].assert_eq(&out);
}

/// `--output json` of the first two steps of the pipeline, for scripts and for the future
/// `swellctl rollout create --dry-run --output json`.
#[test]
fn field_pipeline_json() {
    let p = load_plan("field-pipeline.toml");
    let f = field_fleet();
    let s = planner::plan(&p, &f, at("2027-03-08T09:00:00Z")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json(&p, &s)).unwrap();
    assert_eq!(v["devices"], 43);
    assert_eq!(v["zone_order"], "east_to_west");
    assert_eq!(v["limits"]["disruption_budget"]["site"], 1);
    assert_eq!(v["steps"].as_array().unwrap().len(), 6);
    assert_eq!(v["steps"][2]["stages"][0]["approval"], true);
    let first_step = serde_json::to_string_pretty(&v["steps"][0]).unwrap();
    expect![[r#"
        {
          "estimated_end": "2027-03-09T03:00:30Z",
          "not_before": "2027-03-08T09:00:00Z",
          "stages": [
            {
              "approval": false,
              "device_timeout_s": 2700,
              "devices": 2,
              "estimated_end": "2027-03-09T03:00:00Z",
              "failure_action": "pause",
              "failures_tolerated": 0,
              "name": "dev",
              "soak_s": 1800,
              "success_required": 2,
              "zones": [
                {
                  "opens": "2027-03-09T01:00:00Z",
                  "utc_offset": "+01:00",
                  "windows": [
                    {
                      "dst": [],
                      "end_local": "2027-03-09T04:00:00+01:00",
                      "end_utc": "2027-03-09T03:00:00Z",
                      "local_date": "2027-03-09",
                      "start_local": "2027-03-09T02:00:00+01:00",
                      "start_utc": "2027-03-09T01:00:00Z",
                      "starts": [
                        {
                          "at": "2027-03-09T01:00:00Z",
                          "device": "dev-01",
                          "in_flight_until": "2027-03-09T01:45:00Z"
                        },
                        {
                          "at": "2027-03-09T01:45:00Z",
                          "device": "dev-02",
                          "in_flight_until": "2027-03-09T02:30:00Z"
                        }
                      ]
                    }
                  ],
                  "zone": "Europe/Berlin"
                }
              ]
            },
            {
              "approval": false,
              "device_timeout_s": 2700,
              "devices": 2,
              "estimated_end": "2027-03-09T03:00:30Z",
              "failure_action": "pause",
              "failures_tolerated": 0,
              "name": "test",
              "soak_s": 1800,
              "success_required": 2,
              "zones": [
                {
                  "opens": "2027-03-09T01:00:00Z",
                  "utc_offset": "+01:00",
                  "windows": [
                    {
                      "dst": [],
                      "end_local": "2027-03-09T04:00:00+01:00",
                      "end_utc": "2027-03-09T03:00:00Z",
                      "local_date": "2027-03-09",
                      "start_local": "2027-03-09T02:00:00+01:00",
                      "start_utc": "2027-03-09T01:00:00Z",
                      "starts": [
                        {
                          "at": "2027-03-09T01:00:30Z",
                          "device": "test-01",
                          "in_flight_until": "2027-03-09T01:45:30Z"
                        },
                        {
                          "at": "2027-03-09T01:45:30Z",
                          "device": "test-02",
                          "in_flight_until": "2027-03-09T02:30:30Z"
                        }
                      ]
                    }
                  ],
                  "zone": "Europe/Berlin"
                }
              ]
            }
          ],
          "step": 1
        }"#]]
    .assert_eq(&first_step);
}
