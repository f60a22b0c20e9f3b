//! The golden fixtures in `tests/data/v1/` and the generator that makes them.
//!
//! Every fixture is built here from fixed-seed keys and fixed instants, so the files are
//! reproducible byte for byte. Without `SWELL_BLESS=1` the test regenerates them in memory and
//! fails if a checked-in file differs: a change to the wire format shows up as a fixture diff
//! in review. With `SWELL_BLESS=1` it rewrites the files:
//!
//! ```text
//! SWELL_BLESS=1 cargo test -p swell-proto --test fixtures
//! ```
//!
//! Files are the envelope pretty-printed (two-space indent, members in UTF-8 order) with a final
//! newline: readable in review, and a reminder that signatures cover the canonical form of
//! `signed`, not the bytes on the wire. What each fixture must do is in `compatibility.rs`.

// The generator is test support: an unwrap that fails is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::{device_1, device_2, expired_at, issued, key, key_id, public, seed, valid_until};
use swell_proto::envelope::{self, Document, Header, RoleKeys};
use swell_proto::json::{self, Value};
use swell_proto::messages::{
    self, Action, ChildReport, ChildRunning, Command, Counters, Gauges, Heartbeat, Presence,
    Progress, ReleaseRef, Report, Running, Signals, SignatureCount, Slot, UpdateState,
};
use swell_proto::root::{Roles, RootDocument};
use swell_proto::signals::Signature;
use swell_proto::{
    Artifact, DeviceId, HardwareId, ReleaseDocument, ReleaseName, SemVer, Sha256Digest, TargetName,
    Timestamp,
};

/// The envelope bytes as fixture text: pretty-printed, newline-terminated.
fn pretty(bytes: &[u8]) -> Vec<u8> {
    let value = json::parse(bytes).unwrap();
    let mut text = serde_json::to_vec_pretty(&value).unwrap();
    text.push(b'\n');
    text
}

fn header(version: u64, expires: Timestamp) -> Header {
    Header { version, expires }
}

/// `body` with `header`, signed by the fixture keys `signers`, as fixture text.
fn signed<T: Document>(header: Header, body: &T, signers: &[u8]) -> Vec<u8> {
    pretty(&common::sign(header.version, header.expires, body, signers))
}

/// An unsigned envelope to be altered before signing.
fn raw<T: Document>(header: Header, body: &T) -> envelope::RawEnvelope {
    envelope::envelope(header, body).unwrap()
}

fn sign_raw(mut env: envelope::RawEnvelope, signers: &[u8]) -> Vec<u8> {
    for signer in signers {
        env.add_signature(&key(*signer));
    }
    pretty(&env.to_canonical())
}

fn role(seeds: &[u8], threshold: u32) -> RoleKeys {
    RoleKeys {
        keyids: seeds.iter().map(|s| key_id(*s)).collect(),
        threshold,
    }
}

/// A trust root whose root role is `root_seeds` with `root_threshold`; every version shares
/// the release role (two keys, threshold 2) and the controller role (one key).
fn root_doc(root_seeds: &[u8], root_threshold: u32) -> RootDocument {
    let mut all: Vec<u8> = root_seeds.to_vec();
    all.extend([seed::RELEASE_1, seed::RELEASE_2, seed::CONTROLLER]);
    let keys: Vec<_> = all.iter().map(|s| public(*s)).collect();
    RootDocument::new(
        &keys,
        Roles {
            root: role(root_seeds, root_threshold),
            release: role(&[seed::RELEASE_1, seed::RELEASE_2], 2),
            controller: role(&[seed::CONTROLLER], 1),
        },
    )
}

fn release_doc() -> ReleaseDocument {
    let rootfs = common::rootfs_image();
    ReleaseDocument {
        name: ReleaseName::new("gateway-os").unwrap(),
        release_version: SemVer::new("1.4.2").unwrap(),
        security_version: 3,
        hardware: vec![
            HardwareId::new("rpi4-gateway").unwrap(),
            HardwareId::new("x86-gateway").unwrap(),
        ],
        artifacts: vec![Artifact {
            target: TargetName::new("rootfs").unwrap(),
            size: u64::try_from(rootfs.len()).unwrap(),
            sha256: Sha256Digest::of(&rootfs),
        }],
    }
}

fn release_ref() -> ReleaseRef {
    ReleaseRef {
        name: ReleaseName::new("gateway-os").unwrap(),
        version: SemVer::new("1.4.2").unwrap(),
    }
}

fn running_previous() -> Running {
    Running {
        release: Some(ReleaseName::new("gateway-os").unwrap()),
        version: Some(SemVer::new("1.4.1").unwrap()),
        slot: Slot::A,
        security_version: 3,
    }
}

fn command(seq: u64, device: DeviceId, id: &str, action: Action, signers: &[u8]) -> Vec<u8> {
    let body = Command {
        device,
        id: id.to_string(),
        action,
    };
    signed(header(seq, valid_until()), &body, signers)
}

fn install() -> Action {
    let manifest = envelope::sign_document(
        header(1, valid_until()),
        &release_doc(),
        &[&key(seed::RELEASE_1), &key(seed::RELEASE_2)],
    )
    .unwrap();
    Action::Install {
        manifest: serde_json::from_slice(&manifest).unwrap(),
        url: "https://updates.example.com/gateway-os/1.4.2/rootfs.img".to_string(),
    }
}

fn report_downloading(device: DeviceId) -> Report {
    Report {
        device,
        issued: issued(),
        state: UpdateState::Downloading,
        command: Some("c-0001".to_string()),
        target: Some(release_ref()),
        running: running_previous(),
        progress: Some(Progress {
            done: 524_288,
            total: 1_048_576,
        }),
        reason: None,
    }
}

/// gw-0001's health signals for the minute before `issued()`: one restart, memory and CPU,
/// an app metric, and two error signatures (three lines of one, one of the other).
fn signals_batch() -> Signals {
    let refused = Signature::of_line("ERROR db: connection 10.0.0.7 refused after 3 retries");
    let timeout = Signature::of_line("WARN mqtt: publish timed out after 5000ms (pkid 42)");
    Signals {
        device: device_1(),
        issued: issued(),
        boot: "6f1c1a62-3c4e-4f7e-9a55-2d1e0b8c7a90".to_string(),
        running: running_previous(),
        start: issued().plus_secs(-60),
        end: issued(),
        counters: Counters {
            crashes: 0,
            restarts: 1,
            reboots: 0,
            health_check_failures: 0,
        },
        gauges: Gauges {
            memory_kib: Some(183_424),
            cpu_permille: Some(127),
            boot_time_s: Some(21),
        },
        metrics: [("queue_depth".to_string(), 17)].into_iter().collect(),
        signatures: vec![
            SignatureCount {
                id: refused.id,
                count: 3,
                example: refused.example,
            },
            SignatureCount {
                id: timeout.id,
                count: 1,
                example: timeout.example,
            },
        ],
        dropped: 0,
    }
}

/// A device message envelope that breaks the limits `sign_device_message` enforces, signed
/// by `signer` all the same (what a buggy or hostile device could send).
fn unchecked_device_message<T: messages::DeviceMessage>(
    message: &T,
    seq: u64,
    signer: u8,
) -> Vec<u8> {
    let env = raw(
        header(
            seq,
            issued().plus_secs(messages::DEVICE_MESSAGE_VALIDITY_SECS),
        ),
        message,
    );
    sign_raw(env, &[signer])
}

fn device_message<T: messages::DeviceMessage>(message: &T, seq: u64, signer: u8) -> Vec<u8> {
    pretty(&messages::sign_device_message(message, seq, issued(), &key(signer)).unwrap())
}

/// Every fixture, by file name.
fn generate() -> Vec<(&'static str, Vec<u8>)> {
    use seed::*;
    let valid = valid_until();
    let release = signed(header(1, valid), &release_doc(), &[RELEASE_1, RELEASE_2]);
    let release_text = String::from_utf8(release.clone()).unwrap();
    let mut out = vec![
        // Trust roots: v1 as shipped, then a rotation chain.
        (
            "root.json",
            signed(header(1, valid), &root_doc(&[ROOT_1], 1), &[ROOT_1]),
        ),
        // v2 adds ROOT_2 and raises the root threshold to 2: signed by v1's root role (ROOT_1)
        // and by its own (ROOT_1 + ROOT_2).
        (
            "root-v2.json",
            signed(
                header(2, valid),
                &root_doc(&[ROOT_1, ROOT_2], 2),
                &[ROOT_1, ROOT_2],
            ),
        ),
        // v3 replaces ROOT_1 by ROOT_3: v2's role needs ROOT_1 + ROOT_2, its own ROOT_2 + ROOT_3.
        (
            "root-v3.json",
            signed(
                header(3, valid),
                &root_doc(&[ROOT_2, ROOT_3], 2),
                &[ROOT_1, ROOT_2, ROOT_3],
            ),
        ),
        ("release.json", release.clone()),
        (
            "expired-release.json",
            signed(
                header(1, expired_at()),
                &release_doc(),
                &[RELEASE_1, RELEASE_2],
            ),
        ),
        (
            "expired-root.json",
            signed(header(1, expired_at()), &root_doc(&[ROOT_1], 1), &[ROOT_1]),
        ),
        (
            "threshold-unmet.json",
            signed(header(1, valid), &release_doc(), &[RELEASE_1]),
        ),
        ("same-key-twice.json", {
            let mut env = raw(header(1, valid), &release_doc());
            env.add_signature(&key(RELEASE_1));
            let again = env.signatures[0].clone();
            env.signatures.push(again);
            pretty(&env.to_canonical())
        }),
        // The release keys signed release_doc(); the rootfs digest was then swapped for one of
        // another image, and the signatures kept.
        ("bad-signature.json", {
            let mut evil = release_doc();
            evil.artifacts[0].sha256 = Sha256Digest::of(b"an image the release keys never saw");
            let mut env = raw(header(1, valid), &evil);
            env.signatures = json_envelope_signatures(&release);
            pretty(&env.to_canonical())
        }),
        (
            "unknown-key.json",
            signed(header(1, valid), &release_doc(), &[RELEASE_1, OUTSIDER]),
        ),
        // A root document signed by both release keys, handed over where a release is expected.
        (
            "wrong-type.json",
            signed(
                header(1, valid),
                &root_doc(&[ROOT_1], 1),
                &[RELEASE_1, RELEASE_2],
            ),
        ),
        // Version 3 offered to a device that trusts version 1, validly signed by ROOT_1.
        (
            "root-version-skip.json",
            signed(header(3, valid), &root_doc(&[ROOT_1], 1), &[ROOT_1]),
        ),
        // v2 that hands the root role to ROOT_2, signed only by ROOT_2: v1's role never agreed.
        (
            "rotation-missing-old-signatures.json",
            signed(header(2, valid), &root_doc(&[ROOT_2], 1), &[ROOT_2]),
        ),
        // v2 that hands the root role to ROOT_2, signed only by ROOT_1: the new role never agreed.
        (
            "rotation-missing-new-signatures.json",
            signed(header(2, valid), &root_doc(&[ROOT_2], 1), &[ROOT_1]),
        ),
        // A second `security_version` member placed first: a parser that keeps the first of
        // duplicate keys would read 0 where the signers wrote 3.
        (
            "duplicate-key.json",
            release_text
                .replacen(
                    "\"signed\": {\n",
                    "\"signed\": {\n    \"security_version\": 0,\n",
                    1,
                )
                .into_bytes(),
        ),
        (
            "non-integer.json",
            release_text
                .replacen("\"security_version\": 3,", "\"security_version\": 3.0,", 1)
                .into_bytes(),
        ),
        ("malformed.json", release[..release.len() / 2].to_vec()),
        ("unknown-field.json", {
            let mut env = raw(header(1, valid), &release_doc());
            if let Value::Object(fields) = &mut env.signed {
                fields.insert("channel".to_string(), Value::String("beta".to_string()));
            }
            sign_raw(env, &[RELEASE_1, RELEASE_2])
        }),
        // RELEASE_2's key listed under OUTSIDER's key id.
        ("bad-keyid.json", {
            let mut doc = root_doc(&[ROOT_1], 1);
            let entry = doc.keys.remove(&key_id(RELEASE_2)).unwrap();
            doc.keys.insert(key_id(OUTSIDER), entry);
            doc.roles.release.keyids = vec![key_id(RELEASE_1), key_id(OUTSIDER)];
            signed(header(1, valid), &doc, &[ROOT_1])
        }),
        ("unsatisfiable-threshold.json", {
            let mut doc = root_doc(&[ROOT_1], 1);
            doc.roles.release.threshold = 3;
            signed(header(1, valid), &doc, &[ROOT_1])
        }),
        // MQTT messages. Commands: sequence numbers 1, 2, 3 on gw-0001's `cmd` topic.
        (
            "command-install.json",
            command(1, device_1(), "c-0001", install(), &[CONTROLLER]),
        ),
        (
            "command-cancel.json",
            command(2, device_1(), "c-0002", Action::Cancel, &[CONTROLLER]),
        ),
        (
            "command-revert.json",
            command(3, device_1(), "c-0003", Action::Revert, &[CONTROLLER]),
        ),
        (
            "report-downloading.json",
            device_message(&report_downloading(device_1()), 5, DEVICE_1),
        ),
        ("report-rolled-back.json", {
            let report = Report {
                state: UpdateState::RolledBack,
                progress: None,
                reason: Some(
                    "trial boot of slot b failed its health checks: gatewayd.service was not \
                     active 300 s after boot"
                        .to_string(),
                ),
                ..report_downloading(device_1())
            };
            device_message(&report, 9, DEVICE_1)
        }),
        // gw-0001 reports that the microcontroller behind it, mcu-0001, went back to its
        // previous firmware: its bootloader reverted an image that never confirmed itself.
        ("child-report-rolled-back.json", {
            let report = ChildReport {
                device: device_1(),
                child: DeviceId::new("mcu-0001").unwrap(),
                issued: issued(),
                state: UpdateState::RolledBack,
                command: Some("c-0005".to_string()),
                target: Some(ReleaseRef {
                    name: ReleaseName::new("sensor-fw").unwrap(),
                    version: SemVer::new("1.1.0").unwrap(),
                }),
                running: ChildRunning {
                    release: Some(ReleaseName::new("sensor-fw").unwrap()),
                    version: Some(SemVer::new("1.0.0").unwrap()),
                    security_version: 1,
                },
                reason: Some(
                    "the MCU's bootloader reverted to sensor-fw 1.0.0 after 3 trial boot(s): the \
                     new image never confirmed itself"
                        .to_string(),
                ),
            };
            device_message(&report, 12, DEVICE_1)
        }),
        ("heartbeat.json", {
            let heartbeat = Heartbeat {
                device: device_1(),
                issued: issued(),
                uptime_s: 86_400,
                state: UpdateState::Idle,
                running: running_previous(),
                metrics: [
                    ("mem_available_kib".to_string(), 51_200),
                    ("restarts".to_string(), 0),
                ]
                .into_iter()
                .collect(),
            };
            device_message(&heartbeat, 1440, DEVICE_1)
        }),
        ("presence.json", {
            let presence = Presence {
                device: device_1(),
                issued: issued(),
                online: true,
                agent_version: "0.1.0".to_string(),
            };
            device_message(&presence, 2, DEVICE_1)
        }),
        (
            "signals.json",
            device_message(&signals_batch(), 1441, DEVICE_1),
        ),
        // 65 signatures, one over the limit of a batch.
        ("signals-too-many-signatures.json", {
            let mut batch = signals_batch();
            batch.signatures = (0..65u32)
                .map(|n| {
                    let s = Signature::of_line(&format!("ERROR job-{n} failed: code E{n}x"));
                    SignatureCount {
                        id: swell_proto::signals::SignatureId::of_template(&format!("t{n}")),
                        count: 1,
                        example: s.example,
                    }
                })
                .collect();
            unchecked_device_message(&batch, 1442, DEVICE_1)
        }),
        // A signature id in upper case: ids have one spelling, 16 lowercase hex digits.
        ("signals-uppercase-id.json", {
            let batch = signals_batch();
            let id = batch.signatures[0].id.to_string();
            let mut env = raw(
                header(
                    1443,
                    issued().plus_secs(messages::DEVICE_MESSAGE_VALIDITY_SECS),
                ),
                &batch,
            );
            let text = serde_json::to_string(&env.signed)
                .unwrap()
                .replace(&id, &id.to_uppercase());
            env.signed = json::parse(text.as_bytes()).unwrap();
            sign_raw(env, &[DEVICE_1])
        }),
        // A report naming gw-0001, sent on gw-0001's topic, signed with gw-0002's key.
        (
            "report-wrong-key.json",
            device_message(&report_downloading(device_1()), 5, DEVICE_2),
        ),
        // gw-0001 signs, with its own key, a report that names gw-0002.
        (
            "report-wrong-device.json",
            device_message(&report_downloading(device_2()), 5, DEVICE_1),
        ),
        // An install command signed by a release key, which is not in the controller role.
        (
            "command-wrong-key.json",
            command(1, device_1(), "c-0001", install(), &[RELEASE_1]),
        ),
        // A valid controller command for gw-0002, delivered to gw-0001.
        (
            "command-wrong-device.json",
            command(4, device_2(), "c-0004", Action::Cancel, &[CONTROLLER]),
        ),
    ];
    out.sort_by_key(|(name, _)| *name);
    out
}

/// The signatures of a fixture envelope.
fn json_envelope_signatures(bytes: &[u8]) -> Vec<envelope::SignatureEntry> {
    envelope::RawEnvelope::parse(bytes, usize::MAX)
        .unwrap()
        .signatures
}

/// The checked-in fixtures are exactly what the generator makes, and nothing else is in the
/// directory. Run with `SWELL_BLESS=1` to rewrite them after an intended change.
#[test]
fn fixtures_match_the_generator() {
    let generated = generate();
    assert_eq!(generated, generate(), "the generator is not deterministic");
    let dir = common::fixture_dir();
    if std::env::var_os("SWELL_BLESS").is_some_and(|v| v == "1") {
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &generated {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let differ: Vec<&str> = generated
        .iter()
        .filter(|(name, bytes)| fs::read(dir.join(name)).ok().as_ref() != Some(bytes))
        .map(|(name, _)| *name)
        .collect();
    assert!(
        differ.is_empty(),
        "fixtures missing or different from the generator: {differ:?}. If the wire format \
         changed on purpose, run `SWELL_BLESS=1 cargo test -p swell-proto --test fixtures` and \
         review the diff; old fixtures must keep their meaning."
    );
    let names: BTreeSet<&str> = generated.iter().map(|(name, _)| *name).collect();
    let on_disk: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !names.contains(name.as_str()))
        .collect();
    assert!(
        on_disk.is_empty(),
        "files in {} that no generator writes: {on_disk:?}",
        dir.display()
    );
}
