//! `swellctl root rotate` and `root verify --trusted --chain`: TUF-style rotation, where each
//! new root carries the next version and is signed by a threshold of the old root role and of
//! its own, so a device that trusts version 1 can follow the chain one link at a time.

mod common;

use common::Scratch;

/// Keys a, b, c (root keys of v1, v2, v3) and rel, ctl; v1.json signed by a.
fn v1(s: &Scratch) {
    for k in ["a", "b", "c", "rel", "ctl"] {
        s.key(k);
    }
    s.ok(
        "root init --out v1.json --expires 365d --root-key a.pub.pem --root-threshold 1 \
          --release-key rel.pub.pem --release-threshold 1 \
          --controller-key ctl.pub.pem --controller-threshold 1",
    );
    s.ok("root sign v1.json --key a.pem");
}

/// v2 hands the root role from a to b (signed by both); v3 from b to c (signed by both).
fn chain(s: &Scratch) {
    v1(s);
    s.ok("root rotate --from v1.json --out v2.json --root-key b.pub.pem");
    s.ok("root sign v2.json --key a.pem");
    s.ok("root sign v2.json --key b.pem");
    s.ok("root rotate --from v2.json --out v3.json --root-key c.pub.pem --expires 400d");
    s.ok("root sign v3.json --key b.pem");
    s.ok("root sign v3.json --key c.pem");
}

/// v1 → v2 → v3 verifies from v1, link by link; the report names the chain and version 3.
#[test]
fn chain_verifies_from_the_first_root() {
    let s = Scratch::new();
    chain(&s);
    let out = s.ok("root verify v3.json --trusted v1.json --chain v2.json");
    assert!(
        out.contains("yes (rotation chain from v1.json -> v2.json)"),
        "{out}"
    );
    assert!(out.contains("version          3"), "{out}");
    s.ok("root verify v2.json --trusted v1.json");
    // Each root is also self-consistent on its own.
    s.ok("root verify v3.json");
}

/// Rotation bumps the version by one and carries over the roles not given.
#[test]
fn rotate_carries_over_roles() {
    let s = Scratch::new();
    chain(&s);
    let old = s.read_json("v1.json");
    let new = s.read_json("v3.json");
    assert_eq!(new["signed"]["version"], 3);
    assert_eq!(
        new["signed"]["roles"]["release"],
        old["signed"]["roles"]["release"]
    );
    assert_eq!(
        new["signed"]["roles"]["controller"],
        old["signed"]["roles"]["controller"]
    );
    assert_ne!(
        new["signed"]["roles"]["root"],
        old["signed"]["roles"]["root"]
    );
    // Key a is no longer used by any role, so v3 no longer lists it.
    let a = s.ok("key id a.pub.pem");
    assert!(new["signed"]["keys"].get(a.trim()).is_none());
}

/// Skipping a version (v1 straight to v3) is refused, naming both versions.
#[test]
fn skipped_version_is_refused() {
    let s = Scratch::new();
    chain(&s);
    let err = s.fails("root verify v3.json --trusted v1.json");
    assert_eq!(
        err,
        "error: root verify: v3.json: root version 3 cannot follow trusted version 1: \
         each rotation must raise the version by exactly one"
    );
}

/// A rotation signed only by the new root key, without the old root role, is refused: the
/// new key's signature does not count for the trusted version.
#[test]
fn rotation_without_old_root_signatures_is_refused() {
    let s = Scratch::new();
    v1(&s);
    let b = s.ok("key id b.pub.pem");
    s.ok("root rotate --from v1.json --out v2.json --root-key b.pub.pem");
    s.ok("root sign v2.json --key b.pem");
    let err = s.fails("root verify v2.json --trusted v1.json");
    assert_eq!(
        err,
        format!(
            "error: root verify: v2.json: signed by key {}, which is not a key of the root \
             (trusted version 1) role; 0 valid signature(s) from distinct root (trusted version \
             1) keys, 1 required",
            b.trim()
        )
    );
}

/// A rotation signed only by the old root key, without its own new root role, is refused too.
#[test]
fn rotation_without_new_root_signatures_is_refused() {
    let s = Scratch::new();
    v1(&s);
    s.ok("root rotate --from v1.json --out v2.json --root-key b.pub.pem");
    s.ok("root sign v2.json --key a.pem");
    let err = s.fails("root verify v2.json --trusted v1.json");
    assert!(
        err.starts_with("error: root verify: v2.json: signed by key ")
            && err.ends_with(
                "0 valid signature(s) from distinct root (new version 2) keys, 1 required"
            ),
        "{err}"
    );
}

/// A broken link in the middle of a chain is reported against that link's file.
#[test]
fn broken_middle_link_is_named() {
    let s = Scratch::new();
    chain(&s);
    let mut v2 = s.read_json("v2.json");
    v2["signed"]["roles"]["release"]["threshold"] = 1.into();
    v2["signatures"].as_array_mut().unwrap().truncate(1);
    s.write_json("v2.json", &v2);
    let err = s.fails("root verify v3.json --trusted v1.json --chain v2.json");
    assert!(err.starts_with("error: root verify: v2.json: "), "{err}");
}
