//! MQTT messages: commands are signed by the trust root's controller role and name the device
//! they are for; reports, heartbeats and presence are signed by the sending device's enrolled
//! key and name that device; the header `version` is the sequence number.

mod common;

use common::{device_1, device_2, device_key, fixture, key_id, now, seed, trusted_root};
use swell_proto::json::Value;
use swell_proto::messages::{
    self, Action, Command, DeviceMessage, Heartbeat, Presence, Report, Sequenced, Slot, UpdateState,
};
use swell_proto::topics::DeviceTopic;
use swell_proto::{DeviceId, Error, RawEnvelope};

fn command(name: &str, device: &DeviceId) -> Result<Sequenced<Command>, Error> {
    trusted_root().verify_command(&fixture(name), device, now())
}

fn from_device<T: DeviceMessage>(name: &str, device: &DeviceId) -> Result<Sequenced<T>, Error> {
    messages::open_device_message(&fixture(name), device, &device_key(device), now())
}

/// The three command fixtures verify for gw-0001 and carry sequence numbers 1, 2, 3 on its
/// `cmd` topic; the install command's embedded manifest is `release.json` and verifies too.
#[test]
fn commands_verify_with_their_sequence_numbers() {
    let install = command("command-install.json", &device_1()).unwrap();
    assert_eq!(install.seq, 1);
    assert_eq!(install.message.id, "c-0001");
    let Action::Install { manifest, url } = &install.message.action else {
        panic!("expected an install, got {:?}", install.message.action);
    };
    assert_eq!(
        url,
        "https://updates.example.com/gateway-os/1.4.2/rootfs.img"
    );
    let root = trusted_root();
    let embedded = root
        .verify_release(&serde_json::to_vec(manifest).unwrap(), now())
        .unwrap();
    let shipped = root
        .verify_release(&fixture("release.json"), now())
        .unwrap();
    assert_eq!(embedded.manifest_digest(), shipped.manifest_digest());

    let cancel = command("command-cancel.json", &device_1()).unwrap();
    assert_eq!((cancel.seq, &cancel.message.action), (2, &Action::Cancel));
    let revert = command("command-revert.json", &device_1()).unwrap();
    assert_eq!((revert.seq, &revert.message.action), (3, &Action::Revert));
}

/// The device message fixtures verify against gw-0001's enrolled key, each with its own
/// per-topic sequence number.
#[test]
fn device_messages_verify_with_their_sequence_numbers() {
    let downloading: Sequenced<Report> =
        from_device("report-downloading.json", &device_1()).unwrap();
    assert_eq!(downloading.seq, 5);
    assert_eq!(downloading.message.state, UpdateState::Downloading);
    assert_eq!(downloading.message.progress.unwrap().done, 524_288);

    let rolled_back: Sequenced<Report> =
        from_device("report-rolled-back.json", &device_1()).unwrap();
    assert_eq!(rolled_back.seq, 9);
    assert_eq!(rolled_back.message.state, UpdateState::RolledBack);
    assert_eq!(rolled_back.message.running.slot, Slot::A);
    assert_eq!(
        rolled_back.message.running.version.unwrap().to_string(),
        "1.4.1"
    );
    assert!(rolled_back.message.reason.is_some());

    let heartbeat: Sequenced<Heartbeat> = from_device("heartbeat.json", &device_1()).unwrap();
    assert_eq!(heartbeat.seq, 1440);
    assert_eq!(heartbeat.message.metrics["restarts"], 0);

    let presence: Sequenced<Presence> = from_device("presence.json", &device_1()).unwrap();
    assert_eq!(presence.seq, 2);
    assert!(presence.message.online);
}

/// `report-wrong-key.json` names gw-0001 but is signed with gw-0002's key: one device cannot
/// report for another, even when the broker lets it publish there.
#[test]
fn report_signed_by_another_device_key_is_refused() {
    let err = from_device::<Report>("report-wrong-key.json", &device_1()).unwrap_err();
    assert_eq!(
        err,
        Error::UnknownKey {
            keyid: key_id(seed::DEVICE_2),
            role: "device".to_string(),
            valid: 0,
            threshold: 1,
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "signed by key {}, which is not a key of the device role; 0 valid signature(s) \
             from distinct device keys, 1 required",
            key_id(seed::DEVICE_2)
        )
    );
}

/// `report-wrong-device.json` is signed by gw-0001 with its own key, arrives on gw-0001's
/// topic, and names gw-0002: refused, so a report always describes its sender.
#[test]
fn report_naming_another_device_is_refused() {
    let err = from_device::<Report>("report-wrong-device.json", &device_1()).unwrap_err();
    assert_eq!(
        err,
        Error::Invalid {
            what: "message",
            detail: "it names device gw-0002 but came for device gw-0001".to_string(),
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid message: it names device gw-0002 but came for device gw-0001"
    );
}

/// `command-wrong-key.json` is an install command signed by a release key. Release keys sign
/// manifests, not commands: the controller role alone may command devices.
#[test]
fn command_signed_by_a_non_controller_key_is_refused() {
    assert_eq!(
        command("command-wrong-key.json", &device_1()).unwrap_err(),
        Error::UnknownKey {
            keyid: key_id(seed::RELEASE_1),
            role: "controller".to_string(),
            valid: 0,
            threshold: 1,
        }
    );
}

/// `command-wrong-device.json` is a valid controller command for gw-0002 delivered to gw-0001
/// (a misrouted or replayed message): refused; gw-0002 itself accepts it.
#[test]
fn command_for_another_device_is_refused() {
    assert_eq!(
        command("command-wrong-device.json", &device_1()).unwrap_err(),
        Error::Invalid {
            what: "message",
            detail: "it names device gw-0002 but came for device gw-0001".to_string(),
        }
    );
    assert_eq!(
        command("command-wrong-device.json", &device_2())
            .unwrap()
            .seq,
        4
    );
}

/// A message of one kind is never accepted as another: a heartbeat is not a report, and a
/// command is not a device message.
#[test]
fn message_types_do_not_mix() {
    assert_eq!(
        from_device::<Report>("heartbeat.json", &device_1()).unwrap_err(),
        Error::WrongType {
            expected: "report",
            found: "heartbeat".to_string(),
        }
    );
    assert_eq!(
        from_device::<Presence>("command-cancel.json", &device_1()).unwrap_err(),
        Error::WrongType {
            expected: "presence",
            found: "command".to_string(),
        }
    );
    assert_eq!(
        trusted_root()
            .verify_command(&fixture("report-downloading.json"), &device_1(), now())
            .unwrap_err(),
        Error::WrongType {
            expected: "command",
            found: "report".to_string(),
        }
    );
}

/// The sequence number is inside the signed bytes: replaying `command-revert.json` with its
/// `version` raised past the receiver's last accepted number breaks the controller signature.
#[test]
fn sequence_number_is_signed() {
    let mut env: RawEnvelope = common::raw("command-revert.json");
    let Value::Object(fields) = &mut env.signed else {
        unreachable!("a fixture's signed value is an object")
    };
    fields.insert("version".to_string(), Value::Int(1000));
    assert_eq!(
        trusted_root()
            .verify_command(&env.to_canonical(), &device_1(), now())
            .unwrap_err(),
        Error::BadSignature {
            keyid: key_id(seed::CONTROLLER),
            role: "controller".to_string(),
        }
    );
}

/// A report's `reason` is capped at `MAX_REASON_LEN` bytes, so reports stay small on metered
/// links: the receiver refuses a longer one, and the sender will not sign it.
#[test]
fn report_reason_is_bounded() {
    let mut report: Report = common::body("report-rolled-back.json");
    let device = device_1();
    let key = common::key(seed::DEVICE_1);
    let too_long = Error::Invalid {
        what: "report",
        detail: "reason is 1025 bytes, over 1024".to_string(),
    };
    report.reason = Some("x".repeat(swell_proto::limits::MAX_REASON_LEN));
    let at_limit = messages::sign_device_message(&report, 10, common::issued(), &key).unwrap();
    messages::open_device_message::<Report>(&at_limit, &device, &device_key(&device), now())
        .unwrap();
    report.reason = Some("x".repeat(swell_proto::limits::MAX_REASON_LEN + 1));
    assert_eq!(
        messages::sign_device_message(&report, 11, common::issued(), &key).unwrap_err(),
        too_long
    );
    let over = common::sign(11, common::valid_until(), &report, &[seed::DEVICE_1]);
    assert_eq!(
        messages::open_device_message::<Report>(&over, &device, &device_key(&device), now())
            .unwrap_err(),
        too_long
    );
}

/// Revert and cancel carry no fields, and an unknown field next to their `kind` is refused like
/// anywhere else (serde would otherwise ignore it on a unit variant).
#[test]
fn unit_actions_refuse_unknown_fields() {
    let mut env: RawEnvelope = common::raw("command-revert.json");
    let Value::Object(fields) = &mut env.signed else {
        unreachable!("a fixture's signed value is an object")
    };
    let Some(Value::Object(action)) = fields.get_mut("action") else {
        panic!("a command has an action object");
    };
    action.insert("slot".to_string(), Value::String("b".to_string()));
    env.signatures.clear();
    env.add_signature(&common::key(seed::CONTROLLER));
    assert_eq!(
        trusted_root()
            .verify_command(&env.to_canonical(), &device_1(), now())
            .unwrap_err(),
        Error::Malformed {
            what: "command",
            detail: "unknown field `slot`, there are no fields".to_string(),
        }
    );
}

/// Signing refuses a message no receiver could read: a device whose clock says 9999-12-31
/// would otherwise send reports expiring in year 10000, which no timestamp parser accepts.
#[test]
fn unreadable_messages_are_not_signed() {
    let report: Report = common::body("report-downloading.json");
    let late = swell_proto::Timestamp::parse("9999-12-31T00:00:00Z").unwrap();
    let key = common::key(seed::DEVICE_1);
    assert!(matches!(
        messages::sign_device_message(&report, 1, late, &key),
        Err(Error::InvalidId(_))
    ));
    // Sequence numbers stop at 2^53 - 1, the largest integer JSON carries exactly.
    let max = (1u64 << 53) - 1;
    let bytes = messages::sign_device_message(&report, max, common::issued(), &key).unwrap();
    let device = device_1();
    let opened =
        messages::open_device_message::<Report>(&bytes, &device, &device_key(&device), now())
            .unwrap();
    assert_eq!(opened.seq, max);
    assert!(matches!(
        messages::sign_device_message(&report, max + 1, common::issued(), &key),
        Err(Error::Malformed { .. })
    ));
}

/// Every device message lives under `swell/v1/devices/{device_id}/`, one ACL pattern per device.
#[test]
fn device_topics_are_confined_to_the_device_subtree() {
    let device = device_1();
    let topics: Vec<String> = DeviceTopic::ALL
        .iter()
        .map(|t| t.for_device(&device))
        .collect();
    assert_eq!(
        topics,
        [
            "swell/v1/devices/gw-0001/cmd",
            "swell/v1/devices/gw-0001/report",
            "swell/v1/devices/gw-0001/health",
            "swell/v1/devices/gw-0001/presence",
            "swell/v1/devices/gw-0001/signals",
        ]
    );
    assert_eq!(swell_proto::topics::ALL_DEVICES, "swell/v1/devices/+/+");
}
