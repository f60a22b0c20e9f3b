//! docs/operator-guide.md stays true: its `sh` blocks run, in order, against the real swellctl.

use std::path::Path;
use std::process::Command;

/// The `sh` code blocks of a Markdown text, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Scenario: a new operator types every command of the guide in a fresh directory; every
/// block succeeds (a refusal the guide shows is checked inside its block with `if`).
#[test]
fn operator_guide_commands_work_as_written() {
    let guide_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operator-guide.md");
    let guide = std::fs::read_to_string(&guide_path).unwrap();
    let blocks = sh_blocks(&guide);
    assert!(blocks.len() >= 6, "the guide lost its command blocks");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_swellctl")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dir = tempfile::tempdir().unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let output = Command::new("bash")
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(dir.path())
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "block {} of the guide failed:\n{block}\nstdout:\n{}\nstderr:\n{}",
            i + 1,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
