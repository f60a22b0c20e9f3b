//! Health-signal batches at the controller's door: the bus verifies a `signals` message like
//! any device message, keeps the device's recent batches in the registry
//! (`Registry::signals`, `Registry::latest_signals`), and drops a forged batch, a replayed one
//! and one that breaks the protocol's bounds, each counted by reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use rumqttc::{Publish, QoS};
use swell_controller::service::audit::AuditLog;
use swell_controller::service::bus::{Outcome, ingest};
use swell_controller::service::db::Db;
use swell_controller::service::fleet::Zone;
use swell_controller::service::metrics::{DropReason, Metrics};
use swell_controller::service::registry::{MAX_SIGNAL_HISTORY, Provision, Registry};
use swell_controller::service::{Clock, SystemClock};
use swell_controller::store::redb::RedbStore;
use swell_controller::verification::SignatureId;
use swell_proto::messages::{
    Counters, Gauges, Running, Signals, SignatureCount, Slot, sign_device_message,
};
use swell_proto::signals::Signature;
use swell_proto::topics::DeviceTopic;
use swell_proto::{DeviceId, HardwareId, PublicKey};

fn device() -> DeviceId {
    DeviceId::new("gw-1").unwrap()
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[41; 32])
}

async fn registry(dir: &std::path::Path) -> Registry {
    let store = RedbStore::open(&dir.join("store.redb")).unwrap();
    let db = Db::new(Arc::new(store));
    let audit = AuditLog::open(db.clone()).await.unwrap();
    let registry = Registry::open(db, audit).await.unwrap();
    registry
        .provision(
            Provision {
                id: device(),
                public_key: PublicKey::from(key().verifying_key()),
                hardware: HardwareId::new("gw-x86").unwrap(),
                zone: Zone::new("Europe/Berlin").unwrap(),
                cohort: None,
                tags: Default::default(),
                extra: Default::default(),
            },
            "test",
            SystemClock.now(),
        )
        .await
        .unwrap();
    registry
}

fn batch(minute: i64, line: &str) -> Signals {
    let end = SystemClock.now().plus_secs(-3600 + 60 * minute);
    let sig = Signature::of_line(line);
    Signals {
        device: device(),
        issued: end,
        boot: "boot-1".into(),
        running: Running {
            release: None,
            version: None,
            slot: Slot::A,
            security_version: 0,
        },
        start: end.plus_secs(-60),
        end,
        counters: Counters {
            health_check_failures: 1,
            ..Counters::default()
        },
        gauges: Gauges {
            memory_kib: Some(1024),
            ..Gauges::default()
        },
        metrics: Default::default(),
        signatures: vec![SignatureCount {
            id: sig.id,
            count: 2,
            example: sig.example,
        }],
        dropped: 0,
    }
}

fn publish(payload: Vec<u8>) -> Publish {
    Publish::new(
        DeviceTopic::Signals.for_device(&device()),
        QoS::AtLeastOnce,
        payload,
    )
}

/// A signed batch is accepted and kept; a forged one (another key), a replay and one over the
/// bounds are dropped and counted; the history keeps the newest `MAX_SIGNAL_HISTORY`.
#[tokio::test]
async fn signed_batches_are_kept_and_forged_ones_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path()).await;
    let metrics = Metrics::default();
    let clock = SystemClock;
    let line = "ERROR db: connection 10.0.0.7 refused after 3 retries";

    let first = batch(1, line);
    let signed = sign_device_message(&first, 10, first.issued, &key()).unwrap();
    let outcome = ingest(&registry, &metrics, &clock, &publish(signed.clone())).await;
    assert_eq!(outcome, Outcome::Accepted);
    assert_eq!(registry.signals(&device()), vec![first.clone()]);
    assert_eq!(registry.latest_signals(&device()), Some(first.clone()));
    let id = registry.signals(&device())[0].signatures[0].id;
    assert_eq!(
        id,
        SignatureId::of_template(&swell_proto::signals::template(line))
    );
    assert!(
        registry
            .get(&device())
            .unwrap()
            .inventory
            .last_seen
            .is_some()
    );

    // Forged: right device, right topic, another key.
    let forged = sign_device_message(
        &batch(2, line),
        11,
        first.issued,
        &SigningKey::from_bytes(&[42; 32]),
    )
    .unwrap();
    let outcome = ingest(&registry, &metrics, &clock, &publish(forged)).await;
    assert_eq!(outcome, Outcome::Dropped(DropReason::Signature));

    // The same batch again: a replay.
    let outcome = ingest(&registry, &metrics, &clock, &publish(signed)).await;
    assert_eq!(outcome, Outcome::Dropped(DropReason::Replay));

    // Over the bounds: the proto refuses it on parse, so it never reaches the registry. The
    // device's own signer would refuse to sign it; build the envelope by hand.
    let mut big = batch(3, line);
    big.signatures[0].count = 0;
    let env = swell_proto::envelope::envelope(
        swell_proto::envelope::Header {
            version: 12,
            expires: big.issued.plus_secs(3600),
        },
        &big,
    )
    .unwrap();
    let mut env = env;
    env.add_signature(&key());
    let outcome = ingest(&registry, &metrics, &clock, &publish(env.to_canonical())).await;
    assert_eq!(outcome, Outcome::Dropped(DropReason::Malformed));
    assert_eq!(registry.signals(&device()).len(), 1);

    // The history is bounded, oldest dropped first.
    for n in 0..MAX_SIGNAL_HISTORY as u64 + 5 {
        let b = batch(4, &format!("{line} {n}"));
        let signed = sign_device_message(&b, 100 + n, b.issued, &key()).unwrap();
        assert_eq!(
            ingest(&registry, &metrics, &clock, &publish(signed)).await,
            Outcome::Accepted
        );
    }
    let history = registry.signals(&device());
    assert_eq!(history.len(), MAX_SIGNAL_HISTORY);
    assert!(history[0].signatures[0].example.ends_with(" 5"));
}
