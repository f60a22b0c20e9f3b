//! Expiry: a document is refused at and after its `expires` instant, and an expired trust root
//! verifies nothing until it is rotated (TUF's freeze attack defence).

mod common;

use common::{device_1, device_key, expired_at, fixture, now, trusted_root, valid_until};
use swell_proto::messages::{self, Report};
use swell_proto::{Error, Timestamp, TrustRoot};

/// `expired-release.json` is correctly signed by both release keys but expired on
/// 2020-01-01: a mirror replaying an old manifest cannot make a device install it.
#[test]
fn expired_release_is_refused() {
    let err = trusted_root()
        .verify_release(&fixture("expired-release.json"), now())
        .unwrap_err();
    assert_eq!(
        err,
        Error::Expired {
            what: "release",
            expires: expired_at(),
            now: now(),
        }
    );
    assert_eq!(
        err.to_string(),
        "release expired at 2020-01-01T00:00:00Z (now 2026-06-01T00:00:00Z)"
    );
}

/// A device provisioned with `expired-root.json` (the v1 keys, expired on 2020-01-01) refuses
/// the otherwise valid `release.json` and every command: the root is checked first.
#[test]
fn expired_root_verifies_nothing() {
    let root = TrustRoot::from_trusted(&fixture("expired-root.json")).unwrap();
    let expired = Error::Expired {
        what: "trust root",
        expires: expired_at(),
        now: now(),
    };
    let err = root
        .verify_release(&fixture("release.json"), now())
        .unwrap_err();
    assert_eq!(err, expired);
    assert_eq!(
        err.to_string(),
        "trust root expired at 2020-01-01T00:00:00Z (now 2026-06-01T00:00:00Z)"
    );
    let err = root
        .verify_command(&fixture("command-install.json"), &device_1(), now())
        .unwrap_err();
    assert_eq!(err, expired);
}

/// An expired root can still be rotated (the new root is signed by the old root role), and the
/// rotated root then verifies releases: expiry forces a rotation, it does not brick a device.
#[test]
fn expired_root_can_still_be_rotated() {
    let root = TrustRoot::from_trusted(&fixture("expired-root.json")).unwrap();
    let rotated = root.rotate(&fixture("root-v2.json")).unwrap();
    assert_eq!(rotated.header().version, 2);
    rotated
        .verify_release(&fixture("release.json"), now())
        .unwrap();
}

/// `expires` is exclusive: a release that expires at 2026-06-01T00:00:00Z verifies one second
/// before that instant and is refused at it. The same holds for the root.
#[test]
fn expiry_instant_is_already_expired() {
    let root = trusted_root();
    let body: swell_proto::ReleaseDocument = common::body("release.json");
    let release = common::sign(
        1,
        now(),
        &body,
        &[common::seed::RELEASE_1, common::seed::RELEASE_2],
    );
    root.verify_release(&release, now().plus_secs(-1)).unwrap();
    let err = root.verify_release(&release, now()).unwrap_err();
    assert_eq!(
        err,
        Error::Expired {
            what: "release",
            expires: now(),
            now: now(),
        }
    );
    assert!(root.check_fresh(valid_until().plus_secs(-1)).is_ok());
    assert_eq!(
        root.check_fresh(valid_until()),
        Err(Error::Expired {
            what: "trust root",
            expires: valid_until(),
            now: valid_until(),
        })
    );
}

/// A device message is acceptable for `DEVICE_MESSAGE_VALIDITY_SECS` after it was issued (a
/// device offline for up to 30 days still delivers its queue), and not after.
#[test]
fn device_messages_expire_thirty_days_after_issue() {
    let bytes = fixture("report-downloading.json");
    let key = device_key(&device_1());
    let expires = common::issued().plus_secs(messages::DEVICE_MESSAGE_VALIDITY_SECS);
    assert_eq!(expires, Timestamp::parse("2026-06-30T12:00:00Z").unwrap());
    messages::open_device_message::<Report>(&bytes, &device_1(), &key, expires.plus_secs(-1))
        .unwrap();
    let err =
        messages::open_device_message::<Report>(&bytes, &device_1(), &key, expires).unwrap_err();
    assert_eq!(
        err,
        Error::Expired {
            what: "report",
            expires,
            now: expires,
        }
    );
}

/// A command is refused once its own `expires` has passed, even under a fresh root: a command
/// held back by a broker or an attacker cannot be delivered later than the controller allowed.
#[test]
fn expired_command_is_refused() {
    let command: messages::Command = common::body("command-cancel.json");
    let bytes = common::sign(7, expired_at(), &command, &[common::seed::CONTROLLER]);
    let err = trusted_root()
        .verify_command(&bytes, &device_1(), now())
        .unwrap_err();
    assert_eq!(
        err,
        Error::Expired {
            what: "command",
            expires: expired_at(),
            now: now(),
        }
    );
}
