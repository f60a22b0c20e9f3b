//! The `swell-agent` command line as an operator meets it: `status` as a table and as JSON on
//! a new and on an updated device, a configuration with an unknown field refused in one line,
//! and a second agent on the same data directory refused while the first runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{DEVICE, Daemon, Device, Options, RELEASE, release, run, wait_for};
use serde_json::json;

/// `status` of a device that has never updated: idle, no slot known, nothing to send.
#[test]
fn status_of_a_new_device() {
    let device = Device::new(Options::default());
    let out = run(device.agent(&["status"]), common::RUN_LIMIT);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        format!(
            "device            {DEVICE}\n\
             state             idle\n\
             release           -\n\
             security version  0\n\
             slot a            -\n\
             slot b            -\n\
             unsent reports    0\n"
        )
    );
    assert_eq!(
        device.status(),
        json!({
            "device": DEVICE,
            "state": "idle",
            "release": null,
            "reason": null,
            "security_version": 0,
            "slot_a": null,
            "slot_b": null,
            "unsent_reports": 0,
        })
    );
}

/// `status` after installing 1.0.0 (security version 2) into slot B: committed, the slot's
/// release, digest and verification, and the five reports of the update still unsent (the
/// device has no broker).
#[test]
fn status_of_an_updated_device() {
    let device = Device::new(Options::default());
    let v1 = release("1.0.0", 2, "healthy", 64 * 1024).build();
    let out = device.install(&v1);
    assert!(out.status.success(), "{}", out.stderr);
    let sha = v1.sha256.to_hex();
    let out = run(
        device.agent(&["status", "--output", "table"]),
        common::RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        format!(
            "device            {DEVICE}\n\
             state             committed\n\
             release           {RELEASE} 1.0.0\n\
             security version  2\n\
             slot a            -\n\
             slot b            {RELEASE} 1.0.0 (security 2, verified, sha256 {sha})\n\
             unsent reports    5\n"
        )
    );
    assert_eq!(
        device.status(),
        json!({
            "device": DEVICE,
            "state": "committed",
            "release": format!("{RELEASE} 1.0.0"),
            "reason": null,
            "security_version": 2,
            "slot_a": null,
            "slot_b": {
                "release": RELEASE,
                "version": "1.0.0",
                "security_version": 2,
                "sha256": sha,
                "verified": true,
            },
            "unsent_reports": 5,
        })
    );
}

/// A configuration with a field the agent does not know: `install` exits 1 with one line on
/// stderr naming the file and the field, and touches nothing.
#[test]
fn install_refuses_a_config_with_unknown_fields() {
    let device = Device::new(Options::default());
    let text = std::fs::read_to_string(&device.config).unwrap();
    std::fs::write(&device.config, format!("colour = \"blue\"\n{text}")).unwrap();
    let v1 = release("1.0.0", 2, "healthy", 64 * 1024).build();
    let (manifest, image) = device.stage(&v1);
    let mut cmd = device.agent(&["install"]);
    cmd.arg(&manifest).arg(&image);
    let out = run(cmd, common::RUN_LIMIT);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, "");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {:?}", out.stderr);
    let config = device.config.display().to_string();
    assert!(
        lines[0].starts_with(&format!("error: config {config}: line 1, column 1: ")),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("unknown field `colour`"), "{}", lines[0]);
    assert!(!device.data.exists(), "the data directory was created");
}

/// While the board runs the agent daemon, a second agent on the same configuration (as an
/// operator's `swell-agent install` would be) is refused with "another swell-agent is
/// running", exit 1, and the daemon goes on.
#[test]
fn a_second_agent_on_the_same_data_directory_is_refused() {
    let device = Device::new(Options::default());
    let mut board = Daemon::start(device.agent(&["board"]), &device.path().join("board.log"));
    // The daemon holds the lock once it has recorded its start.
    wait_for("the daemon to start", Duration::from_secs(30), || {
        (device.journal_path().exists() && device.journal().epoch == 1).then_some(())
    });
    let v1 = release("1.0.0", 2, "healthy", 64 * 1024).build();
    let (manifest, image) = device.stage(&v1);
    let mut cmd = device.agent(&["install"]);
    cmd.arg(&manifest)
        .arg(&image)
        .env("SWELL_BOARD_BOOT_ID", "boot-x")
        .env("SWELL_BOARD_SLOT", "a");
    let out = run(cmd, common::RUN_LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        format!(
            "error: another swell-agent is running on data directory {}\n",
            device.data.display()
        )
    );
    assert!(board.running(), "the daemon stopped: {}", board.log());
    let journal = device.journal();
    assert_eq!(
        (journal.epoch, journal.state.job()),
        (1, None),
        "the refused agent changed the journal"
    );
    // SIGINT is Ctrl-C: the agent shuts down and the board with it.
    board.kill("INT");
}
