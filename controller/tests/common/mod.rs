//! Helpers shared by the swellctl integration tests: run the real binary in a temporary
//! directory and check the one-line error contract.

// Each test file uses a different subset, and `pub` here only means "visible to the tests".
#![allow(dead_code, unreachable_pub)]
// Test helpers panic on the unexpected, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// A scratch directory in which swellctl runs.
#[derive(Debug)]
pub struct Scratch {
    pub dir: TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `swellctl args...` with this directory as the working directory.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_swellctl"))
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Runs swellctl with `line` split at white space (no argument here has a space), asserts
    /// success and an empty standard error, and returns standard output.
    pub fn ok(&self, line: &str) -> String {
        self.ok_args(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// [`Scratch::ok`] with the arguments given one by one.
    pub fn ok_args(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "swellctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "stderr on success: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs swellctl with `line` split at white space, asserts exit status 1, empty standard
    /// output and exactly one line `error: ...` on standard error, and returns that line
    /// without its newline.
    pub fn fails(&self, line: &str) -> String {
        let args: Vec<&str> = line.split_whitespace().collect();
        let out = self.run(&args);
        assert_eq!(out.status.code(), Some(1), "swellctl {args:?}: {out:?}");
        assert!(
            out.stdout.is_empty(),
            "stdout on failure: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        one_error_line(&out.stderr)
    }

    /// Generates a key pair `NAME.pem` / `NAME.pub.pem` and returns its key id.
    pub fn key(&self, name: &str) -> String {
        self.ok(&format!("key generate --out {name}"))
            .trim()
            .to_owned()
    }

    pub fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).unwrap();
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    pub fn read_json(&self, name: &str) -> serde_json::Value {
        serde_json::from_slice(&self.read(name)).unwrap()
    }

    pub fn write_json(&self, name: &str, value: &serde_json::Value) {
        self.write(name, &serde_json::to_vec_pretty(value).unwrap());
    }

    /// Signs `payload` with the private key file `key`, as an external tool would.
    pub fn sign_raw(&self, key: &str, payload: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        let pem = String::from_utf8(self.read(key)).unwrap();
        let key = swell_proto::keys::pem::private_key_from_pem(&pem).unwrap();
        key.sign(payload).to_bytes()
    }

    /// A trust root `root.json`, signed, whose root and controller roles are the one key `r1`
    /// and whose release role is `release_keys` with `release_threshold`.
    pub fn root_with_release_keys(&self, release_keys: &[&str], release_threshold: u32) {
        self.key("r1");
        let release: Vec<String> = release_keys
            .iter()
            .map(|k| format!("--release-key {k}.pub.pem"))
            .collect();
        self.ok(&format!(
            "root init --out root.json --expires 365d --root-key r1.pub.pem --root-threshold 1 \
             {} --release-threshold {release_threshold} \
             --controller-key r1.pub.pem --controller-threshold 1",
            release.join(" ")
        ));
        self.ok("root sign root.json --key r1.pem");
    }
}

/// Checks that `stderr` is exactly one line starting `error: ` and returns it.
pub fn one_error_line(stderr: &[u8]) -> String {
    let text = String::from_utf8(stderr.to_vec()).unwrap();
    assert!(
        text.ends_with('\n'),
        "stderr does not end in a newline: {text:?}"
    );
    let line = text.trim_end_matches('\n');
    assert!(
        !line.contains('\n'),
        "stderr is more than one line: {text:?}"
    );
    assert!(
        line.starts_with("error: "),
        "stderr does not start with 'error: ': {text:?}"
    );
    line.to_owned()
}

/// Deterministic pseudo-random bytes (SplitMix64), so image tests do not depend on a seed file.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The file's permission bits.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The instant `days` days from now, as `--at` takes it.
pub fn in_days(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let now = i64::try_from(now.as_secs()).unwrap();
    swell_proto::Timestamp::from_unix(now + days * 86_400).to_string()
}
