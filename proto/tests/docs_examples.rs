//! `docs/protocol.md` stays true: every ```json block in it parses with the strict parser, and
//! every full envelope in it is one of the golden fixtures and verifies against the fixture
//! keys as the kind of document it is.

// The helpers below are test support: an unwrap that fails is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{device_key, fixture_dir, now, trusted_root};
use swell_proto::json::{self, Value};
use swell_proto::messages::{self, ChildReport, Heartbeat, Presence, Report, Signals};
use swell_proto::{DeviceId, Error, TrustRoot};

/// The ```json blocks of `text`, with the line each starts on.
fn json_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match (&mut current, line.trim_end()) {
            (None, "```json") => current = Some((n + 1, String::new())),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "unterminated ```json block");
    blocks
}

fn string<'a>(v: &'a Value, key: &str) -> &'a str {
    match v.get(key) {
        Some(Value::String(s)) => s,
        other => panic!("{key} is not a string: {other:?}"),
    }
}

fn from_device<T: messages::DeviceMessage>(bytes: &[u8], device: &DeviceId) -> Result<(), Error> {
    messages::open_device_message::<T>(bytes, device, &device_key(device), now()).map(drop)
}

/// Verifies an envelope as what its `_type` says it is.
fn verify(bytes: &[u8], signed: &Value) -> Result<(), Error> {
    let device = || DeviceId::new(string(signed, "device")).unwrap();
    match string(signed, "_type") {
        "root" => TrustRoot::from_trusted(bytes).map(drop),
        "release" => trusted_root().verify_release(bytes, now()).map(drop),
        "command" => trusted_root()
            .verify_command(bytes, &device(), now())
            .map(drop),
        "report" => from_device::<Report>(bytes, &device()),
        "child_report" => from_device::<ChildReport>(bytes, &device()),
        "heartbeat" => from_device::<Heartbeat>(bytes, &device()),
        "presence" => from_device::<Presence>(bytes, &device()),
        "signals" => from_device::<Signals>(bytes, &device()),
        other => panic!("no verifier for _type {other}"),
    }
}

/// Every ```json block parses; every envelope is a fixture and verifies.
#[test]
fn protocol_md_examples_parse_and_verify() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let fixtures: Vec<(String, Value)> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let value = json::parse(&std::fs::read(&p).ok()?).ok()?;
            Some((p.file_name()?.to_str()?.to_string(), value))
        })
        .collect();
    let mut envelopes = 0;
    for (line, block) in json_blocks(&text) {
        let value = json::parse(block.as_bytes())
            .unwrap_or_else(|e| panic!("protocol.md line {line}: {e}"));
        let (Some(signed), Some(_)) = (value.get("signed"), value.get("signatures")) else {
            continue;
        };
        envelopes += 1;
        let Some((name, _)) = fixtures.iter().find(|(_, f)| *f == value) else {
            panic!("protocol.md line {line}: an envelope that is no fixture in tests/data/v1");
        };
        verify(block.as_bytes(), signed)
            .unwrap_or_else(|e| panic!("protocol.md line {line} ({name}): {e}"));
    }
    assert!(
        envelopes >= 7,
        "only {envelopes} envelopes found in protocol.md"
    );
}
