//! The README's main job runs to the end and every install ends as its story says.

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
