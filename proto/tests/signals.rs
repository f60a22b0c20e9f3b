//! Health-signal batches: what `sign_device_message` and `open_device_message` refuse, and
//! that the ids in a batch are the templating's ids, so the controller can recompute them.

mod common;

use common::{body, device_1, issued, key, seed};
use swell_proto::Error;
use swell_proto::messages::{self, Signals, SignatureCount};
use swell_proto::signals::{MAX_EXAMPLE_BYTES, Signature, SignatureId, template};

fn batch() -> Signals {
    body::<Signals>("signals.json")
}

fn refused(batch: &Signals) -> String {
    match messages::sign_device_message(batch, 1, issued(), &key(seed::DEVICE_1)) {
        Err(Error::Invalid {
            what: "signals",
            detail,
        }) => detail,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Each bound is enforced, with the offending part named.
#[test]
fn bounds_are_enforced_when_signing() {
    let mut b = batch();
    b.boot = String::new();
    assert!(refused(&b).contains("boot id"));
    b.boot = "boot 1".to_string();
    assert!(refused(&b).contains("boot id"));

    let mut b = batch();
    b.start = b.end.plus_secs(1);
    assert!(refused(&b).contains("not in order"));
    let mut b = batch();
    b.end = b.issued.plus_secs(1);
    assert!(refused(&b).contains("not in order"));

    let mut b = batch();
    b.gauges.cpu_permille = Some(1001);
    assert!(refused(&b).contains("cpu_permille"));

    let mut b = batch();
    b.metrics.insert("Queue Depth".to_string(), 1);
    assert!(refused(&b).contains("Queue Depth"));
    let mut b = batch();
    b.metrics = (0..65).map(|n| (format!("m{n}"), n)).collect();
    assert!(refused(&b).contains("65 metrics"));

    let mut b = batch();
    b.signatures.push(b.signatures[0].clone());
    assert!(refused(&b).contains("listed twice"));
    let mut b = batch();
    b.signatures[0].count = 0;
    assert!(refused(&b).contains("count of 0"));
    let mut b = batch();
    b.signatures[0].example = "x".repeat(MAX_EXAMPLE_BYTES + 1);
    assert!(refused(&b).contains("example"));
    let mut b = batch();
    b.signatures = (0..65u8)
        .map(|n| SignatureCount {
            id: SignatureId::from_bytes([n; 8]),
            count: 1,
            example: String::new(),
        })
        .collect();
    assert!(refused(&b).contains("65 signatures"));
}

/// A batch at its bounds signs and opens.
#[test]
fn a_batch_at_its_bounds_round_trips() {
    let mut b = batch();
    b.metrics = (0..64).map(|n| (format!("m{n}"), -n)).collect();
    b.signatures = (0..64u8)
        .map(|n| SignatureCount {
            id: SignatureId::from_bytes([n; 8]),
            count: u64::from(n) + 1,
            example: "é".repeat(MAX_EXAMPLE_BYTES / 2),
        })
        .collect();
    b.gauges.cpu_permille = Some(1000);
    b.dropped = 7;
    let bytes = messages::sign_device_message(&b, 9, issued(), &key(seed::DEVICE_1)).unwrap();
    let public = common::public(seed::DEVICE_1);
    let opened =
        messages::open_device_message::<Signals>(&bytes, &device_1(), &public, common::now())
            .unwrap();
    assert_eq!((opened.seq, opened.message), (9, b));
}

/// The ids in `signals.json` are the templating's ids of their example lines: an agent and a
/// controller built from this crate agree on every signature.
#[test]
fn ids_are_the_templates_ids() {
    for sig in batch().signatures {
        assert_eq!(Signature::of_line(&sig.example).id, sig.id);
        assert_eq!(SignatureId::of_template(&template(&sig.example)), sig.id);
    }
}
