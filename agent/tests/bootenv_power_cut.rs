//! Power cuts during boot-environment writes: whatever byte the power fails at, the next boot
//! finds the complete old or the complete new environment, never a mix, and (with redundant
//! U-Boot copies or GRUB's rename) never nothing.
//!
//! The U-Boot store runs unchanged over `MemStorage`, a simulated device that stores the prefix
//! of the write the power fails in and nothing after it (MCUboot's simulator does the same for
//! flash). Each scenario is cut at every byte of the write sequence in turn: before any byte,
//! inside the CRC, at the flag byte, inside the data and fill, and before the obsolete marker.

// Test helpers outside #[test] functions panic on failure too; that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use swell_agent::bootenv::storage::MemStorage;
use swell_agent::bootenv::uboot::{FlagScheme, LoadedEnv, Region, UbootEnvStore};
use swell_agent::bootenv::{BootEnvStore, Env, Error, GrubEnvFile};

/// Small regions keep the exhaustive loops fast; the layout logic does not depend on size.
const SIZE: usize = 256;

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::try_from(pairs).unwrap()
}

/// Sorted by name, as a U-Boot load returns them, so `==` compares the variable sets.
fn old_env() -> Env {
    env(&[
        ("bootcmd", "run swell_boot"),
        ("bootcount", "0"),
        ("bootlimit", "3"),
        ("swell_slot", "a"),
        ("upgrade_available", "0"),
    ])
}

fn new_env() -> Env {
    env(&[
        ("bootcmd", "run swell_boot"),
        ("bootcount", "0"),
        ("bootlimit", "3"),
        ("swell_slot", "b"),
        ("upgrade_available", "1"),
    ])
}

fn redundant(dev: &MemStorage, scheme: FlagScheme) -> UbootEnvStore<MemStorage> {
    let region = |offset| Region {
        storage: dev.clone(),
        offset,
    };
    UbootEnvStore::redundant([region(0), region(SIZE as u64)], SIZE, scheme).unwrap()
}

fn single(dev: &MemStorage) -> UbootEnvStore<MemStorage> {
    UbootEnvStore::single(
        Region {
            storage: dev.clone(),
            offset: 0,
        },
        SIZE,
    )
    .unwrap()
}

/// A device where `old_env` is current, written after `writes_before` other writes so that
/// the current copy and its flag vary between scenarios.
fn prepared_device(scheme: FlagScheme, writes_before: usize) -> (Vec<u8>, LoadedEnv) {
    let dev = MemStorage::new("/dev/sim", vec![0; 2 * SIZE]);
    let mut store = redundant(&dev, scheme);
    for i in 0..writes_before {
        store
            .store(&env(&[
                ("filler", &"x".repeat(i % 50)),
                ("n", &i.to_string()),
            ]))
            .unwrap();
    }
    store.store(&old_env()).unwrap();
    let loaded = store.load_detailed().unwrap();
    (dev.snapshot(), loaded)
}

/// What a boot finds after the power failed once `cut` bytes of the write had reached the
/// device.
fn boot_after_cut(
    image: &[u8],
    cut: usize,
    open: impl Fn(&MemStorage) -> UbootEnvStore<MemStorage>,
) -> Result<Env, Error> {
    let dev = MemStorage::new("/dev/sim", image.to_vec());
    dev.cut_power_after(cut);
    let write = open(&dev).store(&new_env());
    let rebooted = MemStorage::new("/dev/sim", dev.snapshot());
    let found = open(&rebooted).load();
    if write.is_ok() {
        assert_eq!(
            found.as_ref().ok(),
            Some(&new_env()),
            "a completed write must be visible"
        );
    }
    found
}

/// How many bytes an uninterrupted write puts on the device.
fn write_len(image: &[u8], open: impl Fn(&MemStorage) -> UbootEnvStore<MemStorage>) -> usize {
    let dev = MemStorage::new("/dev/sim", image.to_vec());
    open(&dev).store(&new_env()).unwrap();
    dev.bytes_written()
}

/// Cuts the write at every byte and checks every boot finds old or new, and that once the new
/// environment is found, every later cut finds it too.
fn assert_every_cut_is_old_or_new(scheme: FlagScheme, writes_before: usize) -> Vec<bool> {
    let (image, loaded) = prepared_device(scheme, writes_before);
    let open = |dev: &MemStorage| redundant(dev, scheme);
    let total = write_len(&image, open);
    let expected_total = SIZE + usize::from(scheme == FlagScheme::Boolean);
    assert_eq!(
        total, expected_total,
        "the write sequence is one copy (+ obsolete marker)"
    );
    let mut new_seen = Vec::with_capacity(total + 1);
    for cut in 0..=total {
        let found = boot_after_cut(&image, cut, open).unwrap_or_else(|err| {
            panic!(
                "{scheme:?}, current copy {}, cut at byte {cut}: {err}",
                loaded.copy + 1
            )
        });
        let is_new = if found == new_env() {
            true
        } else if found == old_env() {
            false
        } else {
            panic!("{scheme:?}, cut at byte {cut}: a mix: {found:?}");
        };
        if let Some(&true) = new_seen.last() {
            assert!(is_new, "{scheme:?}, cut at byte {cut}: went back to old");
        }
        new_seen.push(is_new);
    }
    assert!(!new_seen[0], "nothing written: old");
    assert!(new_seen[total], "everything written: new");
    new_seen
}

/// Incremental flags (files, block devices), new copy written to copy 2 and to copy 1.
#[test]
fn incremental_every_cut_finds_old_or_new() {
    for writes_before in [0, 1, 6, 7] {
        let (_, loaded) = prepared_device(FlagScheme::Incremental, writes_before);
        let seen = assert_every_cut_is_old_or_new(FlagScheme::Incremental, writes_before);
        // Named classes: before any byte, mid-CRC, at the flag, mid-data: all still old.
        for cut in [0, 1, 2, 3, 4, 5, 20] {
            assert!(
                !seen[cut],
                "current copy {}: cut at {cut} must be old",
                loaded.copy + 1
            );
        }
    }
}

/// The incremental flag wraps from 0xff to 0x00; a cut around the wrap still finds old or new.
#[test]
fn incremental_flag_wrap_every_cut_finds_old_or_new() {
    // The first write on a blank device gets flag 1, so 254 writes before plus one for the
    // old environment leave it current with flag 0xff.
    let (_, loaded) = prepared_device(FlagScheme::Incremental, 254);
    assert_eq!(loaded.flag, Some(0xff));
    assert_every_cut_is_old_or_new(FlagScheme::Incremental, 254);
    let (_, loaded) = prepared_device(FlagScheme::Incremental, 255);
    assert_eq!(loaded.flag, Some(0x00));
    assert_every_cut_is_old_or_new(FlagScheme::Incremental, 255);
}

/// Boolean flags (NOR): a cut after the new copy but before the obsolete marker leaves two
/// active copies, and copy 1 wins; that is old or new depending on where the new copy went.
#[test]
fn boolean_every_cut_finds_old_or_new_including_before_obsolete_marker() {
    for writes_before in [0, 1, 2] {
        let (_, loaded) = prepared_device(FlagScheme::Boolean, writes_before);
        let seen = assert_every_cut_is_old_or_new(FlagScheme::Boolean, writes_before);
        let before_marker = seen[SIZE];
        // New in copy 2 (old current in copy 1): both active, copy 1 (old) wins until marked.
        // New in copy 1: copy 1 (new) wins already.
        assert_eq!(
            before_marker,
            loaded.copy == 1,
            "current copy {}",
            loaded.copy + 1
        );
    }
}

/// A single copy is rewritten in place: a cut can leave no valid environment, which U-Boot
/// answers with its built-in default. It never yields a mix: the CRC catches every torn copy.
/// This is why deployments should configure two copies.
#[test]
fn single_copy_cut_is_detected_never_a_mix() {
    let dev = MemStorage::new("/dev/sim", vec![0; SIZE]);
    single(&dev).store(&old_env()).unwrap();
    let image = dev.snapshot();
    let total = write_len(&image, single);
    let mut invalid = 0;
    for cut in 0..=total {
        match boot_after_cut(&image, cut, single) {
            Ok(found) => assert!(
                found == old_env() || found == new_env(),
                "cut {cut}: {found:?}"
            ),
            Err(Error::NoValidEnv { .. }) => invalid += 1,
            Err(other) => panic!("cut {cut}: {other}"),
        }
    }
    assert!(
        invalid > 0,
        "torn single copies exist and are reported as invalid"
    );
}

/// GRUB: a crash after the temp file is written but before the rename leaves the old block,
/// and the next write replaces the leftover temp file.
#[test]
fn grub_crash_before_rename_keeps_old_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = GrubEnvFile::new(dir.path().join("grubenv"));
    file.store(&old_env()).unwrap();
    let old_bytes = std::fs::read(file.path()).unwrap();

    // The process dies between fsync of the temp file and the rename: nothing cleans up.
    std::mem::forget(file.prepare(&new_env()).unwrap());
    assert!(file.temp_path().exists());
    assert_eq!(std::fs::read(file.path()).unwrap(), old_bytes);
    assert_eq!(file.load().unwrap(), old_env());

    file.store(&new_env()).unwrap();
    assert_eq!(file.load().unwrap(), new_env());
    assert!(!file.temp_path().exists());
}

/// GRUB: a crash in the middle of writing the temp file (a torn temp file) is invisible too.
#[test]
fn grub_torn_temp_file_is_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = GrubEnvFile::new(dir.path().join("grubenv"));
    file.store(&old_env()).unwrap();
    let full = swell_agent::bootenv::grub::encode(&new_env()).unwrap();
    for cut in [0, 1, 25, 100, 1023] {
        std::fs::write(file.temp_path(), &full[..cut]).unwrap();
        assert_eq!(file.load().unwrap(), old_env(), "temp cut at {cut}");
    }
    file.store(&new_env()).unwrap();
    assert_eq!(file.load().unwrap(), new_env());
}

/// GRUB: a write that fails before the rename (here the temp file cannot be created) reports
/// where and leaves the old block.
#[test]
fn grub_failed_write_reports_and_keeps_old_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = GrubEnvFile::new(dir.path().join("grubenv"));
    file.store(&old_env()).unwrap();
    std::fs::create_dir(file.temp_path()).unwrap();
    let err = file.store(&new_env()).unwrap_err().to_string();
    assert!(err.starts_with("creating GRUB env temp file at "), "{err}");
    assert!(err.contains("grubenv.swell-tmp"), "{err}");
    assert_eq!(file.load().unwrap(), old_env());
}
