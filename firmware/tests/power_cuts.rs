//! Power cuts at every flash operation of an update and of a revert (MCUboot's simulator
//! method): for each `n`, cut the power after operation `n` (operation `n + 1` is torn as a
//! seed decides), reset, and let the device carry on; it must boot exactly one valid,
//! verified image at every boot and end in the scenario's state. Then the same with a second
//! random cut during the recovery, for a few hundred seeds.

mod common;

use std::time::Instant;

use common::world::{End, Script, World};
use swell_firmware::sim::SimRng;

/// Operations of an uninterrupted run of `script`.
fn operations(script: Script) -> u64 {
    let mut w = World::new(script);
    assert_eq!(w.run(), End::Done);
    let ops = w.flash.ops();
    w.check_final();
    ops
}

fn every_cut(script: Script) {
    let start = Instant::now();
    let n_ops = operations(script);
    for n in 0..n_ops {
        let mut w = World::new(script);
        w.flash.cut_after(n, n);
        assert_eq!(w.run(), End::Cut, "no cut at {n}");
        let torn = w.flash.torn();
        w.flash.power_on();
        let end = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_eq!(w.run(), End::Done);
            w.check_final();
        }));
        if end.is_err() {
            panic!("{script:?}: cut after operation {n} (torn {torn:?}) failed");
        }
    }
    println!(
        "{script:?}: {n_ops} cut points, each recovered, in {:.2?}",
        start.elapsed()
    );
}

fn double_cuts(script: Script, seeds: u64) {
    let start = Instant::now();
    let n_ops = operations(script);
    let mut second_hits = 0;
    for seed in 0..seeds {
        let mut rng = SimRng::new(seed ^ 0xC0FFEE);
        let first = rng.below(n_ops);
        let mut w = World::new(script);
        w.flash.cut_after(first, rng.next_u64());
        assert_eq!(w.run(), End::Cut);
        w.flash.power_on();
        // Somewhere in the recovery (which is at most the rest of the run, plus a few
        // operations of re-sent data and repeated copies).
        let second = rng.below(n_ops - first + 40);
        w.flash.cut_after(second, rng.next_u64());
        let end = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if w.run() == End::Cut {
                w.flash.power_on();
                assert_eq!(w.run(), End::Done);
                return true;
            }
            false
        }));
        match end {
            Ok(hit) => second_hits += u32::from(hit),
            Err(_) => panic!("{script:?}: seed {seed}: cuts after {first} then {second} failed"),
        }
        w.flash.disarm();
        w.check_final();
    }
    println!(
        "{script:?}: {seeds} seeds of two cuts ({second_hits} second cuts landed), in {:.2?}",
        start.elapsed()
    );
}

/// Every cut point of a full update: transfer, mark updated, swap, trial boot, confirm.
#[test]
fn update_survives_a_cut_at_every_operation() {
    every_cut(Script::Update);
}

/// Every cut point of an update whose image never confirms: transfer, swap, trial boots,
/// revert.
#[test]
fn revert_survives_a_cut_at_every_operation() {
    every_cut(Script::Revert);
}

/// A second random cut while recovering from the first, during an update.
#[test]
fn update_survives_a_second_cut_during_recovery() {
    double_cuts(Script::Update, 300);
}

/// A second random cut while recovering from the first, during a revert.
#[test]
fn revert_survives_a_second_cut_during_recovery() {
    double_cuts(Script::Revert, 300);
}
