//! Interoperability with the real tools: libubootenv's `fw_printenv`/`fw_setenv` and GRUB's
//! `grub-editenv`. Each side writes, the other reads, and the whole variable sets are compared.
//!
//! Runs only with `SWELL_INTEROP=1` (CI installs `libubootenv-tool` and `grub-common`);
//! otherwise each test prints why it skipped. When enabled, a missing tool fails the test.

// Test helpers outside #[test] functions panic on failure too; that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use swell_agent::bootenv::grub::{self, GrubEnvFile};
use swell_agent::bootenv::uboot::{self, FwEnvConfig, UbootEnvStore};
use swell_agent::bootenv::{BootEnvStore, Env};

/// Size of each U-Boot copy in these tests (a common real size).
const SIZE: usize = 0x2000;

fn enabled() -> bool {
    if std::env::var_os("SWELL_INTEROP").is_some_and(|v| v == "1") {
        true
    } else {
        println!("skipped: set SWELL_INTEROP=1");
        false
    }
}

/// Runs a tool, failing the test if it is missing or exits non-zero; returns stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run {program} ({err}); install libubootenv-tool and grub-common")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `name=value` lines as both tools print them, sorted for comparison.
fn parse_listing(text: &str) -> Vec<(String, String)> {
    let mut vars: Vec<_> = text
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("line {line:?}"));
            (name.to_owned(), value.to_owned())
        })
        .collect();
    vars.sort();
    vars
}

fn owned(env: &Env) -> Vec<(String, String)> {
    env.sorted()
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::try_from(pairs).unwrap()
}

/// A realistic environment with characters shells and parsers trip on.
fn sample_env() -> Env {
    env(&[
        ("bootcmd", "run swell_boot"),
        (
            "swell_boot",
            "if test \"${swell_slot}\" = b; then setenv p 3; else setenv p 2; fi; boot",
        ),
        (
            "altbootcmd",
            "setenv upgrade_available 0; saveenv; run swell_boot",
        ),
        ("bootlimit", "3"),
        ("bootcount", "0"),
        ("upgrade_available", "0"),
        ("swell_slot", "a"),
        (
            "bootargs",
            "console=ttyS0,115200 root=/dev/mmcblk0p2 quiet a=b",
        ),
        ("empty", ""),
        ("quotes", "it's \"quoted\" $x \\ `tick`"),
        ("utf8", "grüße"),
    ])
}

/// A zero-filled image and an `fw_env.config` describing one or two copies in it.
struct UbootFixture {
    _dir: tempfile::TempDir,
    image: PathBuf,
    config: PathBuf,
}

impl UbootFixture {
    fn new(redundant: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("uboot-env.img");
        // Leave room before, between and after the copies, so offsets are really used.
        std::fs::write(&image, vec![0u8; 0x1000 + 3 * SIZE]).unwrap();
        let mut text = format!(
            "# device offset size\n{} 0x1000 {SIZE:#x}\n",
            image.display()
        );
        if redundant {
            text.push_str(&format!(
                "{} {} {SIZE:x}\n",
                image.display(),
                0x1000 + SIZE + 0x800
            ));
        }
        let config = dir.path().join("fw_env.config");
        std::fs::write(&config, text).unwrap();
        Self {
            _dir: dir,
            image,
            config,
        }
    }

    fn store(&self) -> UbootEnvStore<swell_agent::bootenv::storage::FileStorage> {
        UbootEnvStore::open(&self.config).unwrap()
    }

    fn config(&self) -> &str {
        self.config.to_str().unwrap()
    }

    fn printenv(&self) -> Vec<(String, String)> {
        parse_listing(&run("fw_printenv", &["-c", self.config()]))
    }

    fn setenv(&self, name: &str, value: Option<&str>) {
        let mut args = vec!["-c", self.config(), name];
        args.extend(value);
        run("fw_setenv", &args);
    }

    /// Offsets of the copies as the config says.
    fn offsets(&self) -> Vec<usize> {
        let config = FwEnvConfig::read(&self.config).unwrap();
        config
            .regions
            .iter()
            .map(|r| usize::try_from(r.offset).unwrap())
            .collect()
    }

    fn copy_bytes(&self, index: usize) -> Vec<u8> {
        let offset = self.offsets()[index];
        std::fs::read(&self.image).unwrap()[offset..offset + SIZE].to_vec()
    }
}

/// Swell writes a single-copy environment; fw_printenv reads the same variables.
#[test]
fn uboot_single_copy_written_by_swell_read_by_fw_printenv() {
    if !enabled() {
        return;
    }
    let fixture = UbootFixture::new(false);
    let mut store = fixture.store();
    assert!(!store.is_redundant());
    store.store(&sample_env()).unwrap();
    assert_eq!(fixture.printenv(), owned(&sample_env()));
    assert_eq!(
        run("fw_printenv", &["-c", fixture.config(), "-n", "utf8"]),
        "grüße\n"
    );
}

/// fw_setenv edits a single copy Swell wrote; Swell reads every change, deletions included.
#[test]
fn uboot_single_copy_written_by_fw_setenv_read_by_swell() {
    if !enabled() {
        return;
    }
    let fixture = UbootFixture::new(false);
    let mut store = fixture.store();
    store.store(&sample_env()).unwrap();
    fixture.setenv("swell_slot", Some("b"));
    fixture.setenv("new_var", Some("x y z"));
    fixture.setenv("empty", None);
    let mut want = sample_env();
    want.set("swell_slot", "b").unwrap();
    want.set("new_var", "x y z").unwrap();
    want.remove("empty");
    assert_eq!(owned(&store.load().unwrap()), owned(&want));
    assert_eq!(fixture.printenv(), owned(&want));
}

/// Redundant copies, alternating writers across the flag wrap from 0xff to 0x00: after every
/// write by either side, both read the same variables, the flag has advanced by one, and the
/// write went to the other copy.
#[test]
fn uboot_redundant_alternating_writers_across_flag_wrap() {
    if !enabled() {
        return;
    }
    let fixture = UbootFixture::new(true);
    let mut store = fixture.store();
    assert!(store.is_redundant());
    store.store(&sample_env()).unwrap();
    // Advance the flag near the wrap with Swell writes (fast), then alternate tools.
    while store.load_detailed().unwrap().flag != Some(0xfb) {
        store
            .update(&mut |e| {
                let n: u32 = e.get("bootcount").unwrap_or("0").parse().unwrap();
                e.set("bootcount", &((n + 1) % 7).to_string())
            })
            .unwrap();
    }
    let mut want = store.load().unwrap();
    let mut last = store.load_detailed().unwrap();
    for round in 0..8u32 {
        let value = format!("round {round}");
        if round % 2 == 0 {
            fixture.setenv("interop", Some(&value));
        } else {
            store.update(&mut |e| e.set("interop", &value)).unwrap();
        }
        want.set("interop", &value).unwrap();
        let now = store.load_detailed().unwrap();
        assert_eq!(
            now.flag,
            Some(last.flag.unwrap().wrapping_add(1)),
            "round {round}"
        );
        assert_ne!(now.copy, last.copy, "round {round}");
        assert_eq!(owned(&now.env), owned(&want), "Swell's view, round {round}");
        assert_eq!(
            fixture.printenv(),
            owned(&want),
            "fw_printenv's view, round {round}"
        );
        last = now;
    }
    assert!(last.flag.unwrap() < 0xfb, "the flag wrapped");
}

/// With the same variables and flag, Swell's copy and fw_setenv's copy have the same header
/// and data bytes (libubootenv's fill after the data is uninitialized memory, so the CRC is
/// compared through the tools instead).
#[test]
fn uboot_data_bytes_match_fw_setenv() {
    if !enabled() {
        return;
    }
    let fixture = UbootFixture::new(true);
    let mut store = fixture.store();
    store.store(&env(&[("b", "2"), ("a", "1")])).unwrap(); // flag 1 in copy 2
    fixture.setenv("c", Some("3")); // flag 2 in copy 1
    let theirs = fixture.copy_bytes(0);
    let ours = uboot::encode(&env(&[("a", "1"), ("b", "2"), ("c", "3")]), SIZE, Some(2)).unwrap();
    let data_end = 5 + b"a=1\0b=2\0c=3\0\0".len();
    assert_eq!(theirs[4..data_end], ours[4..data_end]);
}

/// Both copies valid, flags set by hand: Swell picks the same copy as fw_printenv in every
/// case of the selection rule, wrap-around included.
#[test]
fn uboot_copy_choice_agrees_with_fw_printenv() {
    if !enabled() {
        return;
    }
    for (f1, f2) in [
        (1, 2),
        (2, 1),
        (5, 5),
        (0xff, 0x00),
        (0x00, 0xff),
        (0xfe, 0xff),
        (0x80, 0x7f),
    ] {
        let fixture = UbootFixture::new(true);
        let offsets = fixture.offsets();
        let mut image = std::fs::read(&fixture.image).unwrap();
        for (index, flag) in [(0, f1), (1, f2)] {
            let copy_env = env(&[("copy", &(index + 1).to_string())]);
            let region = uboot::encode(&copy_env, SIZE, Some(flag)).unwrap();
            image[offsets[index]..offsets[index] + SIZE].copy_from_slice(&region);
        }
        std::fs::write(&fixture.image, image).unwrap();
        let theirs = fixture.printenv();
        let ours = owned(&fixture.store().load().unwrap());
        assert_eq!(ours, theirs, "flags {f1:#x} {f2:#x}");
    }
}

/// A copy with a bad CRC is ignored by both.
#[test]
fn uboot_corrupt_copy_ignored_by_both() {
    if !enabled() {
        return;
    }
    let fixture = UbootFixture::new(true);
    let mut store = fixture.store();
    store.store(&env(&[("v", "old")])).unwrap();
    store.store(&env(&[("v", "new")])).unwrap();
    let current = store.load_detailed().unwrap().copy;
    let mut image = std::fs::read(&fixture.image).unwrap();
    image[fixture.offsets()[current] + 8] ^= 0x01;
    std::fs::write(&fixture.image, image).unwrap();
    assert_eq!(fixture.printenv(), [("v".to_owned(), "old".to_owned())]);
    assert_eq!(store.load().unwrap().get("v"), Some("old"));
}

fn editenv(file: &Path, args: &[&str]) -> String {
    let mut all = vec![file.to_str().unwrap()];
    all.extend(args);
    run("grub-editenv", &all)
}

/// Swell writes a GRUB block; grub-editenv lists the same variables.
#[test]
fn grub_written_by_swell_read_by_grub_editenv() {
    if !enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    let mut file = GrubEnvFile::new(&path);
    let mut want = sample_env();
    want.remove("swell_boot"); // keep within 1024 bytes with the rest
    want.set("next_entry", "Swell slot B>Recovery").unwrap();
    file.store(&want).unwrap();
    assert_eq!(parse_listing(&editenv(&path, &["list"])), owned(&want));
}

/// grub-editenv creates and edits a block; Swell reads every state, and applying the same
/// edits to an `Env` gives a byte-identical block.
#[test]
fn grub_written_by_grub_editenv_read_by_swell_byte_identical() {
    if !enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    let mut file = GrubEnvFile::new(&path);
    editenv(&path, &["create"]);
    let mut mirror = Env::new();
    assert_eq!(file.load().unwrap(), mirror);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        grub::encode(&mirror).unwrap()
    );

    let steps: &[(&str, &str)] = &[
        ("swell_slot", "a"),
        ("bootcount", "0"),
        ("upgrade_available", "1"),
        ("path", "C:\\dir\\file"),
        ("multi", "line1\nline2\\\n"),
        ("bootcount", "1"),
        ("swell_slot", "b"),
        ("-", "unset bootcount"),
        ("bootcount", "2"),
        ("-", "unset path"),
    ];
    for (name, value) in steps {
        if *name == "-" {
            let var = value.strip_prefix("unset ").unwrap();
            editenv(&path, &["unset", var]);
            mirror.remove(var);
        } else {
            editenv(&path, &["set", &format!("{name}={value}")]);
            mirror.set(name, value).unwrap();
        }
        assert_eq!(file.load().unwrap(), mirror, "after {name} {value:?}");
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            bytes,
            grub::encode(&mirror).unwrap(),
            "after {name} {value:?}"
        );
    }
    // grub-editenv prints values unescaped, newlines and all.
    let listing = editenv(&path, &["list"]);
    assert!(listing.contains("multi=line1\nline2\\\n\n"), "{listing:?}");
}

/// Swell edits a block in between grub-editenv edits; the tool keeps reading it.
#[test]
fn grub_alternating_writers() {
    if !enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grubenv");
    let mut file = GrubEnvFile::new(&path);
    editenv(&path, &["create"]);
    let mut want = Env::new();
    for round in 0..6 {
        let value = format!("r{round}");
        if round % 2 == 0 {
            editenv(&path, &["set", &format!("k{round}={value}"), "shared=tool"]);
            want.set(&format!("k{round}"), &value).unwrap();
            want.set("shared", "tool").unwrap();
        } else {
            file.update(&mut |e| {
                e.set(&format!("k{round}"), &value)?;
                e.set("shared", "swell")
            })
            .unwrap();
            want.set(&format!("k{round}"), &value).unwrap();
            want.set("shared", "swell").unwrap();
        }
        assert_eq!(
            parse_listing(&editenv(&path, &["list"])),
            owned(&want),
            "round {round}"
        );
        assert_eq!(file.load().unwrap(), want, "round {round}");
    }
}

/// The GRUB script in `docs/agent.md` is valid GRUB syntax.
#[test]
fn grub_sample_script_in_docs_passes_grub_script_check() {
    if !enabled() {
        return;
    }
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/agent.md");
    let text = std::fs::read_to_string(&docs).unwrap();
    let section = &text[text.find("### GRUB script").expect("GRUB script section")..];
    let start = section.find("```text\n").expect("code block") + "```text\n".len();
    let script = &section[start..];
    let script = &script[..script.find("```").expect("end of code block")];
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("grub.cfg");
    std::fs::write(&cfg, script).unwrap();
    run("grub-script-check", &[cfg.to_str().unwrap()]);
}
