//! "Every release must still parse every old fixture and reject every malformed one."
//!
//! This walks `tests/data/v1/` and checks each file the way its kind is used, against a table
//! of expected outcomes. A fixture missing from the table fails the test, so nobody adds (or
//! keeps) a fixture whose meaning is not written down. The behaviour tests
//! (`threshold.rs`, `rotated_root.rs`, ...) assert the full errors; this table is the short
//! list a reviewer reads when the wire format changes.

mod common;

use common::{device_1, device_key, fixture, now, trusted_root};
use swell_proto::messages;
use swell_proto::{Error, TrustRoot};

/// How a fixture is checked.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// Loaded as the provisioned root.
    ProvisionedRoot,
    /// Rotated to from `root.json` through the listed roots.
    RotatedTo(&'static [&'static str]),
    /// A release manifest verified against `root.json`.
    Release,
    /// Loaded as the provisioned root, then used to verify `release.json`.
    RootForRelease,
    /// A command delivered to gw-0001.
    Command,
    /// A report from gw-0001 on its `report` topic.
    Report,
    /// A report about a child device, from gw-0001 on its `report` topic.
    ChildReport,
    /// A heartbeat from gw-0001.
    Heartbeat,
    /// A presence message from gw-0001.
    Presence,
    /// A health-signals batch from gw-0001.
    Signals,
}

/// What must come out: success, or the refusal named by its `Error` variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Accepted,
    Refused(&'static str),
}

use Check::*;
use Expect::*;

const TABLE: &[(&str, Check, Expect)] = &[
    ("bad-keyid.json", ProvisionedRoot, Refused("Invalid")),
    ("bad-signature.json", Release, Refused("BadSignature")),
    ("child-report-rolled-back.json", ChildReport, Accepted),
    ("command-cancel.json", Command, Accepted),
    ("command-install.json", Command, Accepted),
    ("command-revert.json", Command, Accepted),
    ("command-wrong-device.json", Command, Refused("Invalid")),
    ("command-wrong-key.json", Command, Refused("UnknownKey")),
    ("duplicate-key.json", Release, Refused("Json")),
    ("expired-release.json", Release, Refused("Expired")),
    ("expired-root.json", RootForRelease, Refused("Expired")),
    ("heartbeat.json", Heartbeat, Accepted),
    ("malformed.json", Release, Refused("Json")),
    ("non-integer.json", Release, Refused("Json")),
    ("presence.json", Presence, Accepted),
    ("release.json", Release, Accepted),
    ("report-downloading.json", Report, Accepted),
    ("report-rolled-back.json", Report, Accepted),
    ("report-wrong-device.json", Report, Refused("Invalid")),
    ("report-wrong-key.json", Report, Refused("UnknownKey")),
    ("root-v2.json", RotatedTo(&[]), Accepted),
    ("root-v3.json", RotatedTo(&["root-v2.json"]), Accepted),
    (
        "root-version-skip.json",
        RotatedTo(&[]),
        Refused("RootVersion"),
    ),
    ("root.json", ProvisionedRoot, Accepted),
    (
        "rotation-missing-new-signatures.json",
        RotatedTo(&[]),
        Refused("UnknownKey"),
    ),
    (
        "rotation-missing-old-signatures.json",
        RotatedTo(&[]),
        Refused("UnknownKey"),
    ),
    ("same-key-twice.json", Release, Refused("ThresholdUnmet")),
    (
        "signals-too-many-signatures.json",
        Signals,
        Refused("Invalid"),
    ),
    ("signals-uppercase-id.json", Signals, Refused("Malformed")),
    ("signals.json", Signals, Accepted),
    ("threshold-unmet.json", Release, Refused("ThresholdUnmet")),
    ("unknown-field.json", Release, Refused("Malformed")),
    ("unknown-key.json", Release, Refused("UnknownKey")),
    (
        "unsatisfiable-threshold.json",
        ProvisionedRoot,
        Refused("Invalid"),
    ),
    ("wrong-type.json", Release, Refused("WrongType")),
];

fn run(name: &str, check: Check) -> Result<(), Error> {
    let bytes = fixture(name);
    let device = device_1();
    let key = device_key(&device);
    match check {
        ProvisionedRoot => TrustRoot::from_trusted(&bytes).map(drop),
        RotatedTo(via) => {
            let chain: Vec<Vec<u8>> = via.iter().map(|n| fixture(n)).chain([bytes]).collect();
            trusted_root()
                .rotate_chain(chain.iter().map(Vec::as_slice))
                .map(drop)
        }
        Release => trusted_root().verify_release(&bytes, now()).map(drop),
        RootForRelease => TrustRoot::from_trusted(&bytes)?
            .verify_release(&fixture("release.json"), now())
            .map(drop),
        Command => trusted_root()
            .verify_command(&bytes, &device, now())
            .map(drop),
        Report => messages::open_device_message::<messages::Report>(&bytes, &device, &key, now())
            .map(drop),
        ChildReport => {
            messages::open_device_message::<messages::ChildReport>(&bytes, &device, &key, now())
                .map(drop)
        }
        Heartbeat => {
            messages::open_device_message::<messages::Heartbeat>(&bytes, &device, &key, now())
                .map(drop)
        }
        Presence => {
            messages::open_device_message::<messages::Presence>(&bytes, &device, &key, now())
                .map(drop)
        }
        Signals => messages::open_device_message::<messages::Signals>(&bytes, &device, &key, now())
            .map(drop),
    }
}

/// The `Error` variant's name, from its `Debug` form.
fn variant(err: &Error) -> String {
    let debug = format!("{err:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Every file in `tests/data/v1/` is in the table and behaves as the table says.
#[test]
fn every_fixture_is_listed_and_behaves_as_listed() {
    let mut unlisted = Vec::new();
    let mut wrong = Vec::new();
    let mut files: Vec<String> = std::fs::read_dir(common::fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    for name in &files {
        let Some((_, check, expect)) = TABLE.iter().find(|(n, ..)| n == name) else {
            unlisted.push(name.clone());
            continue;
        };
        let outcome = run(name, *check);
        let as_expected = match (&outcome, expect) {
            (Ok(()), Accepted) => true,
            (Err(e), Refused(name)) => variant(e) == *name,
            _ => false,
        };
        if !as_expected {
            wrong.push(format!("{name}: expected {expect:?}, got {outcome:?}"));
        }
    }
    assert!(
        unlisted.is_empty(),
        "fixtures with no expectation in compatibility.rs: {unlisted:?}"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let missing: Vec<&str> = TABLE
        .iter()
        .map(|(n, ..)| *n)
        .filter(|n| !files.iter().any(|f| f == n))
        .collect();
    assert!(
        missing.is_empty(),
        "listed but missing fixtures: {missing:?}"
    );
}
