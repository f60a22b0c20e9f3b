//! `swellctl root init`, `sign`, `verify` and `show`: a root verifies only once a threshold of
//! distinct keys of its root role has signed it, and expiry is enforced.

mod common;

use common::Scratch;

/// Makes keys r1..r3, rel and c, and an unsigned root.json with root role 2 of r1..r3.
fn two_of_three(s: &Scratch) -> Vec<String> {
    let ids: Vec<String> = ["r1", "r2", "r3"].iter().map(|k| s.key(k)).collect();
    s.key("rel");
    s.key("c");
    s.ok("root init --out root.json --expires 2099-01-01T00:00:00Z \
          --root-key r1.pub.pem r2.pub.pem --root-key r3.pub.pem --root-threshold 2 \
          --release-key rel.pub.pem --release-threshold 1 \
          --controller-key c.pub.pem --controller-threshold 1");
    ids
}

/// Root role 2 of 3: unsigned and singly signed roots are refused with the count; two distinct
/// signatures verify; re-signing with the same key replaces its signature, never adds one.
#[test]
fn root_verifies_once_threshold_is_met() {
    let s = Scratch::new();
    let ids = two_of_three(&s);

    let err = s.fails("root verify root.json");
    assert_eq!(
        err,
        "error: root verify: root.json: threshold unmet for the root role: \
         0 valid signature(s) from distinct keys, 2 required"
    );
    s.ok("root sign root.json --key r1.pem");
    s.ok("root sign root.json --key r1.pem");
    let err = s.fails("root verify root.json");
    assert!(
        err.ends_with("1 valid signature(s) from distinct keys, 2 required"),
        "{err}"
    );
    assert_eq!(
        s.read_json("root.json")["signatures"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    s.ok("root sign root.json --key r3.pem");
    let out = s.ok("root verify root.json");
    assert!(
        out.contains("yes (signed by a threshold of its own root role)"),
        "{out}"
    );
    assert!(out.contains(&ids[0]) && out.contains(&ids[2]), "{out}");
}

/// A signature by a key outside the root role does not count, and is named when the threshold
/// is then unmet.
#[test]
fn outside_keys_do_not_count() {
    let s = Scratch::new();
    two_of_three(&s);
    let outsider = s.key("outsider");
    s.ok("root sign root.json --key r1.pem");
    s.ok("root sign root.json --key outsider.pem");
    let err = s.fails("root verify root.json");
    assert_eq!(
        err,
        format!(
            "error: root verify: root.json: signed by key {outsider}, which is not a key of the \
             root role; 1 valid signature(s) from distinct root keys, 2 required"
        )
    );
}

/// `root init` refuses a threshold above the role's key count, an expiry in the past and a
/// role without keys, writes nothing then, and never overwrites an existing root.
#[test]
fn init_refuses_unsatisfiable_roots() {
    let s = Scratch::new();
    s.key("a");
    let init = |threshold: &str, expires: &str| {
        format!(
            "root init --out root.json --expires {expires} \
             --root-key a.pub.pem --root-threshold {threshold} \
             --release-key a.pub.pem --release-threshold 1 \
             --controller-key a.pub.pem --controller-threshold 1"
        )
    };
    let err = s.fails(&init("2", "30d"));
    assert_eq!(
        err,
        "error: root init: root.json: invalid trust root: role root has threshold 2 with \
         1 key(s): it must be 1 to 1"
    );
    let err = s.fails(&init("1", "2020-01-01T00:00:00Z"));
    assert!(
        err.starts_with("error: root init: --expires: 2020-01-01T00:00:00Z is not in the future"),
        "{err}"
    );
    let err = s.fails("root init --out root.json --expires 30d");
    assert_eq!(
        err,
        "error: root init: --root-key: the root role needs at least one key"
    );
    assert!(!s.path("root.json").exists());

    s.ok(&init("1", "30d"));
    let err = s.fails(&init("1", "30d"));
    assert_eq!(
        err,
        "error: root init: root.json already exists; refusing to overwrite it"
    );
}

/// An expired root fails verification naming its expiry, unless `--allow-expired`, which
/// reports it as expired.
#[test]
fn expired_root_is_refused_unless_allowed() {
    let s = Scratch::new();
    two_of_three(&s);
    s.ok("root sign root.json --key r1.pem");
    s.ok("root sign root.json --key r2.pem");
    let err = s.fails("root verify root.json --at 2100-01-01T00:00:00Z");
    assert_eq!(
        err,
        "error: root verify: root.json: trust root expired at 2099-01-01T00:00:00Z \
         (now 2100-01-01T00:00:00Z)"
    );
    let out = s.ok("root verify root.json --allow-expired --at 2100-01-01T00:00:00Z");
    assert!(
        out.contains("2099-01-01T00:00:00Z (EXPIRED at 2100-01-01T00:00:00Z)"),
        "{out}"
    );
}

/// `root show` prints roles and thresholds of an unsigned root without verifying it.
#[test]
fn show_does_not_verify() {
    let s = Scratch::new();
    let ids = two_of_three(&s);
    let out = s.ok("root show root.json");
    assert!(out.contains("no (signatures not checked)"), "{out}");
    assert!(out.contains("threshold 2 of 3 key(s)"), "{out}");
    for id in &ids {
        assert!(out.contains(id.as_str()), "{out}");
    }
}
