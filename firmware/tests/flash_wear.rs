//! Flash wear per update, counted by the simulator, and a power-cut smoke test on a larger
//! flash (256 KiB ACTIVE, a 200 KiB image) than the exhaustive sweep uses.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a failed test"
)]

mod common;

use common::world::{End, Script, World};
use swell_firmware::Layout;
use swell_firmware::sim::SimRng;

/// Erases per sector of each partition: (max, total, sectors).
fn wear(w: &World) -> [(u32, u32, u32); 3] {
    let page = w.layout.page();
    let counts = w.flash.erase_counts();
    let l: Layout = w.layout;
    [l.active(), l.dfu(), l.state()].map(|r| {
        let first = usize::try_from(r.offset / page).unwrap();
        let n = usize::try_from(r.len / page).unwrap();
        let part = &counts[first..first + n];
        (
            part.iter().copied().max().unwrap(),
            part.iter().sum(),
            u32::try_from(n).unwrap(),
        )
    })
}

fn report(what: &str, w: &World) -> [(u32, u32, u32); 3] {
    let wear = wear(w);
    for (name, (max, total, n)) in ["ACTIVE", "DFU", "STATE"].iter().zip(wear) {
        println!("{what}: {name}: at most {max} erase(s) per sector, {total} over {n} sectors");
    }
    println!("{what}: {} flash operations", w.flash.ops());
    wear
}

/// An update that commits erases each ACTIVE sector the images occupy once, each DFU sector
/// at most twice (received, then the old image saved), and one STATE bank once.
#[test]
fn wear_of_an_update_and_of_a_revert() {
    let mut w = World::large(Script::Update);
    assert_eq!(w.run(), End::Done);
    w.check_final();
    let [active, dfu, state] = report("update (256 KiB ACTIVE, 200 KiB image)", &w);
    assert_eq!(active.0, 1);
    assert_eq!(dfu.0, 2);
    assert_eq!((state.0, state.1), (1, 1));

    let mut w = World::large(Script::Revert);
    assert_eq!(w.run(), End::Done);
    w.check_final();
    let [active, dfu, state] = report("update then revert", &w);
    assert_eq!(active.0, 2);
    assert_eq!(dfu.0, 3);
    assert_eq!((state.0, state.1), (1, 1));
}

/// Random single and double power cuts on the larger flash.
#[test]
fn large_flash_power_cut_smoke() {
    for script in [Script::Update, Script::Revert] {
        let mut full = World::large(script);
        assert_eq!(full.run(), End::Done);
        let n_ops = full.flash.ops();
        for seed in 0..12 {
            let mut rng = SimRng::new(seed);
            let mut w = World::large(script);
            w.flash.cut_after(rng.below(n_ops), rng.next_u64());
            assert_eq!(w.run(), End::Cut);
            w.flash.power_on();
            if seed % 2 == 1 {
                w.flash.cut_after(rng.below(n_ops / 2), rng.next_u64());
                if w.run() == End::Cut {
                    w.flash.power_on();
                }
            }
            assert_eq!(w.run(), End::Done, "{script:?} seed {seed}");
            w.check_final();
        }
    }
}
