//! A batch holds the right increments and signatures from a log file the test writes,
//! including across a rotation: only lines with a pattern count, lines that differ only in
//! numbers and addresses share a signature, and each batch counts only its own interval.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::Path;

use swell_agent::config::{LogSource, SignalsConfig};
use swell_agent::signals::{Collector, StartFacts};
use swell_proto::messages::{Running, Signals, Slot};
use swell_proto::signals::Signature;
use swell_proto::{DeviceId, Timestamp};

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn running() -> Running {
    Running {
        release: None,
        version: None,
        slot: Slot::A,
        security_version: 0,
    }
}

fn count(batch: &Signals, line: &str) -> u64 {
    let id = Signature::of_line(line).id;
    batch
        .signatures
        .iter()
        .find(|s| s.id == id)
        .map_or(0, |s| s.count)
}

#[test]
fn batches_count_matching_lines_per_interval_across_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "ERROR before the agent started\n");
    let config = SignalsConfig {
        interval_secs: 60,
        max_queued: 10,
        metrics_file: None,
        logs: vec![LogSource {
            path: log.clone(),
            patterns: vec!["ERROR".into(), "panic".into()],
        }],
        services: Vec::new(),
    };
    let device = DeviceId::new("sim-0001").unwrap();
    let t0 = Timestamp::from_unix(1_800_000_000);
    let facts = StartFacts {
        reboot: true,
        restart: false,
    };
    let mut c = Collector::new(&config, "boot-2", facts, Some(12), t0);

    append(
        &log,
        "INFO all good\nERROR db: connection 10.0.0.7 refused after 3 retries\n",
    );
    c.poll_logs();
    append(
        &log,
        "ERROR db: connection 10.0.0.9 refused after 5 retries\nthread 'main' panicked at src/x.rs:3:1\n",
    );
    let first = c.finish(&device, running(), 0, t0.plus_secs(60));
    assert_eq!((first.start, first.end), (t0, t0.plus_secs(60)));
    assert_eq!((first.counters.reboots, first.counters.restarts), (1, 0));
    assert_eq!(first.boot, "boot-2");
    assert_eq!(first.gauges.boot_time_s, Some(12));
    assert_eq!(first.signatures.len(), 2);
    assert_eq!(
        count(
            &first,
            "ERROR db: connection 1.2.3.4 refused after 1 retries"
        ),
        2
    );
    assert_eq!(count(&first, "thread 'main' panicked at src/x.rs:3:1"), 1);
    assert_eq!(count(&first, "ERROR before the agent started"), 0);
    let refused = first.signatures.iter().find(|s| s.count == 2).unwrap();
    assert_eq!(
        refused.example,
        "ERROR db: connection 10.0.0.7 refused after 3 retries"
    );

    // Rotation: the rest of the old file, then the new one. Increments start again.
    append(
        &log,
        "ERROR db: connection 10.0.0.8 refused after 1 retries\n",
    );
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(
        &log,
        "ERROR disk /dev/sda1 full\nERROR disk /dev/sdb2 full\n",
    );
    let second = c.finish(&device, running(), 3, t0.plus_secs(120));
    assert_eq!(
        (second.start, second.end),
        (t0.plus_secs(60), t0.plus_secs(120))
    );
    assert_eq!(second.counters.reboots, 0);
    assert_eq!(second.dropped, 3);
    assert_eq!(
        count(
            &second,
            "ERROR db: connection 10.0.0.7 refused after 3 retries"
        ),
        1
    );
    assert_eq!(count(&second, "ERROR disk /dev/sda1 full"), 2);

    // Signed and opened like any device message: within the protocol's bounds.
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let bytes =
        swell_proto::messages::sign_device_message(&second, 1, second.issued, &key).unwrap();
    let opened = swell_proto::messages::open_device_message::<Signals>(
        &bytes,
        &device,
        &swell_proto::PublicKey::from(key.verifying_key()),
        second.issued,
    )
    .unwrap();
    assert_eq!(opened.message, second);

    let third = c.finish(&device, running(), 0, t0.plus_secs(180));
    assert!(third.signatures.is_empty());
}
