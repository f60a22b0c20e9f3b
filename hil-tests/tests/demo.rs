//! The README's main job (the fleet demo) and the one-device tour run to the end, and every
//! outcome is the one their story says.

use std::process::Command;

/// Scenario: the demo, run as a new user would (in its own work directory), exits 0 and
/// prints its summary with every outcome as expected: a good release committed, a failing
/// health check and a never-booting image rolled back, an under-signed release, a tampered
/// image and a downgrade refused.
#[test]
fn demo_tells_the_whole_story() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_swell-demo"))
        .arg("tour")
        .arg("--dir")
        .arg(&work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Every outcome is the one expected."),
        "{stdout}"
    );
    for step in [
        "install 1.1.0 ",
        "install 1.2.0",
        "install 1.3.0",
        "downgrade",
    ] {
        assert!(
            stdout.lines().any(|l| l.contains(step)),
            "no line for {step}"
        );
    }
    assert!(stdout.contains("security_version 1 is below the installed 2"));
    assert!(stdout.contains("the bootloader fell back"));
    assert!(
        !work.exists(),
        "the work directory is removed without --keep"
    );
}

/// Scenario: the main job as the README runs it, with the fleet trimmed to 16 devices for the
/// test's time: the bad release stops at the canaries and is rolled back, the good one
/// completes, and the summary says so.
#[test]
fn fleet_demo_rolls_back_the_bad_release_and_completes_the_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_swell-demo"))
        .args(["--devices", "16", "--exit", "--dir"])
        .arg(&work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Every outcome is the one expected."),
        "{stdout}"
    );
    assert!(stdout.contains("rollout.rolled_back"), "{stdout}");
    assert!(stdout.contains("rollout.completed"), "{stdout}");
    assert!(stdout.contains("1.1.1 on 16 devices"), "{stdout}");
    // Each canary rebooted once back into its old slot, and the summary says how long.
    let canaries = stdout
        .split(" are in the canary cohort")
        .next()
        .and_then(|before| before.split_whitespace().last())
        .unwrap_or_else(|| panic!("no canary count: {stdout}"));
    assert!(
        stdout.contains(&format!(
            "{canaries} simulated reboots back into the previous slot"
        )),
        "{stdout}"
    );
    assert!(
        !work.exists(),
        "the work directory is removed without --keep"
    );
}
