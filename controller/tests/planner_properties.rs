//! Properties of the planner over generated plans and fleets: the same plan, fleet and `now`
//! give the same schedule on every run and whatever order the snapshot's devices came in;
//! every start lies inside its device's local window (one the plan's window really produces
//! for that zone and date), and no rate, in-flight or budget limit is exceeded.
// Helpers panic on the unexpected, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod planner_common;

use planner_common::{check, device};
use proptest::prelude::*;
use swell_controller::planner::render::json;
use swell_controller::planner::{self, FleetDevice, FleetSnapshot, Plan};

/// Zones with DST gaps and folds of an hour or half an hour, odd offsets, both hemispheres.
const ZONES: [&str; 10] = [
    "America/New_York",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Asia/Tokyo",
    "America/Sao_Paulo",
    "UTC",
];

/// 2027-01-01T00:00:00Z.
const YEAR_START: i64 = 1_798_761_600;

fn devices() -> impl Strategy<Value = Vec<FleetDevice>> {
    prop::collection::vec((0..ZONES.len(), 0..4u8, any::<bool>(), 0..8u8), 0..30).prop_map(
        |specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (zone, site, prod, canary))| {
                    let ring = if prod { "ring=prod" } else { "ring=dev" };
                    let site = format!("site=s{site}");
                    let mut labels = vec![ring, site.as_str()];
                    if canary == 0 {
                        labels.push("cohort=canary");
                    }
                    device(&format!("d{i:03}"), ZONES[zone], &labels)
                })
                .collect()
        },
    )
}

/// A plan with a random window (quarter hours; may cross midnight), limits, budget and zone
/// order, and a pipeline: dev ‖ canary share, then production waves.
fn plans() -> impl Strategy<Value = Plan> {
    (
        (0..96u32, 1..40u32),
        (1..12u32, 1..8u32, any::<bool>(), any::<bool>()),
        (10..90u32, 0..4usize),
    )
        .prop_map(
            |((start_q, len_q), (in_flight, rate, ramp, budget), (timeout, order))| {
                let q = |n: u32| format!("{:02}:{:02}", (n / 4) % 24, (n % 4) * 15);
                let zone_order = match order {
                    0 => "\"east_to_west\"".to_owned(),
                    n => format!("[{}]", ZONES[..n].iter().rev().map(|z| format!("{z:?}")).collect::<Vec<_>>().join(", ")),
                };
                let ramp = if ramp {
                    "ramp = { initial_per_minute = 1, factor = 2, every = \"1m\" }\n".to_owned()
                } else {
                    String::new()
                };
                let budget = if budget { "disruption_budget = { site = 1 }\n" } else { "" };
                let text = format!(
                    "zone_order = {zone_order}\n\
                     [window]\nstart = \"{}\"\nend = \"{}\"\n\
                     [limits]\nmax_in_flight = {in_flight}\nmax_starts_per_minute = {rate}\n{ramp}{budget}\
                     [defaults]\ndevice_timeout = \"{timeout}m\"\n\
                     success = {{ committed = \"90%\", soak = \"20m\" }}\n\
                     failure = {{ tolerate = \"10%\", action = \"pause\" }}\n\
                     [[step]]\n\
                     [[step.stage]]\nname = \"dev\"\nselector = {{ tags = {{ ring = \"dev\" }} }}\n\
                     [[step.stage]]\nname = \"canary\"\nselector = {{ tags = {{ ring = \"prod\" }} }}\nshare = \"20%\"\n\
                     [[step]]\n[[step.stage]]\nname = \"wave\"\nshare = \"50%\"\n\
                     [[step]]\n[[step.stage]]\nname = \"rest\"\n",
                    q(start_q),
                    q(start_q + len_q),
                );
                Plan::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Same inputs, same schedule, whatever the snapshot's input order; every start in its
    /// window and within every limit.
    #[test]
    fn deterministic_and_inside_windows(
        plan in plans(),
        (devices, shuffled) in devices().prop_flat_map(|d| (Just(d.clone()), Just(d).prop_shuffle())),
        now_s in 0..(365 * 86_400i64),
        now_ms in 0..1000i64,
    ) {
        let now = jiff::Timestamp::new(YEAR_START + now_s, i32::try_from(now_ms * 1_000_000).unwrap()).unwrap();
        let fleet = FleetSnapshot::new(devices.clone()).unwrap();
        let mut reversed = devices.clone();
        reversed.reverse();
        let a = planner::plan(&plan, &fleet, now).unwrap();
        let b = planner::plan(&plan, &fleet, now).unwrap();
        let c = planner::plan(&plan, &FleetSnapshot::new(reversed).unwrap(), now).unwrap();
        let d = planner::plan(&plan, &FleetSnapshot::new(shuffled).unwrap(), now).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(&a, &c);
        prop_assert_eq!(&a, &d);
        prop_assert_eq!(json(&plan, &a), json(&plan, &d));
        check(&plan, &fleet, &a);
        for s in a.starts() {
            prop_assert!(s.start.at >= now);
        }
    }
}
