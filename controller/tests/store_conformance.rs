//! The store contract (`swell_controller::store::conformance`), run against each engine: every
//! check gets a fresh store in a temporary directory, opened through `Engine::open`, the way
//! the controller opens it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use swell_controller::store::{Engine, Error, Store, conformance};

fn run(engine: Engine, check: conformance::Check) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("store.{}", engine.name()));
    let open = || -> Result<Box<dyn Store>, Error> { engine.open(Path::new(&path)) };
    if let Err(f) = check(&open) {
        panic!("{engine}: {f}");
    }
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(
                /// The check of the same name in `store::conformance`, on redb.
                #[test]
                fn $name() {
                    super::run(super::Engine::Redb, super::conformance::$name);
                }
            )*
        }
        mod sled {
            $(
                /// The check of the same name in `store::conformance`, on sled.
                #[test]
                fn $name() {
                    super::run(super::Engine::Sled, super::conformance::$name);
                }
            )*
        }
    };
}

conformance_tests!(
    new_store_is_empty,
    put_get_delete,
    batch_applies_in_order,
    batch_is_all_or_nothing,
    scan_is_ordered_and_prefixed,
    preconditions,
    token_is_single_use,
    reopen_keeps_everything,
);

/// Every check in `conformance::CHECKS` has a test above (a new check cannot be forgotten).
#[test]
fn every_check_is_run() {
    let listed = [
        "new_store_is_empty",
        "put_get_delete",
        "batch_applies_in_order",
        "batch_is_all_or_nothing",
        "scan_is_ordered_and_prefixed",
        "preconditions",
        "token_is_single_use",
        "reopen_keeps_everything",
    ];
    let checks: Vec<&str> = conformance::CHECKS.iter().map(|(n, _)| *n).collect();
    assert_eq!(checks, listed);
}
