//! Reading and writing U-Boot environment copies on a device.
//!
//! Write sequence for redundant copies (what makes a power cut safe):
//!
//! 1. Read both copies and choose the current one as libubootenv does.
//! 2. Write the whole new copy, with the next flag, over the *other* copy; fsync.
//! 3. Boolean scheme only: write `0x00` (obsolete) into the old copy's flag byte; fsync.
//!
//! Until step 2 has completed, the new copy's CRC does not match and readers keep choosing the
//! old copy; once it has, its flag makes it the newer one. A cut before step 3 leaves two active
//! copies, and readers then choose copy 1, which is one of the two complete environments.
//! A single copy is rewritten in place and is *not* safe against power cuts: a cut mid-write
//! leaves no valid environment (U-Boot then boots with its built-in default). Use two copies.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::config::{FwEnvConfig, RegionConfig};
use super::{
    BOOLEAN_OBSOLETE, CRC_LEN, CopyCheck, FlagScheme, MAX_ENV_SIZE, MIN_ENV_SIZE, check,
    decode_data, encode, header_len, select,
};
use crate::bootenv::storage::{EnvStorage, FileStorage};
use crate::bootenv::{BootEnvStore, Env, Error};

/// The lock file libubootenv's tools take (`flock`, exclusive) around every read and write.
/// Swell takes the same lock, so `fw_setenv` run by hand never interleaves with the agent.
pub const DEFAULT_LOCK_PATH: &str = "/var/lock/fw_printenv.lock";

/// Where one copy lives.
#[derive(Debug, Clone)]
pub struct Region<S> {
    /// The device.
    pub storage: S,
    /// Byte offset of the copy on it.
    pub offset: u64,
}

/// What a load found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedEnv {
    /// The variables of the current copy.
    pub env: Env,
    /// Which copy is current: 0 for copy 1, 1 for copy 2.
    pub copy: usize,
    /// The current copy's flag byte (redundant layouts only).
    pub flag: Option<u8>,
}

/// A U-Boot environment on one or two regions of files or devices.
#[derive(Debug)]
pub struct UbootEnvStore<S> {
    size: usize,
    copies: Vec<Region<S>>,
    scheme: FlagScheme,
    lock_path: Option<PathBuf>,
}

impl<S: EnvStorage> UbootEnvStore<S> {
    /// A single copy of `size` bytes.
    pub fn single(region: Region<S>, size: usize) -> Result<Self, Error> {
        Self::build(vec![region], size, FlagScheme::Incremental)
    }

    /// Two copies of `size` bytes each, told apart by `scheme`.
    pub fn redundant(
        copies: [Region<S>; 2],
        size: usize,
        scheme: FlagScheme,
    ) -> Result<Self, Error> {
        Self::build(Vec::from(copies), size, scheme)
    }

    fn build(copies: Vec<Region<S>>, size: usize, scheme: FlagScheme) -> Result<Self, Error> {
        let error = |detail: String| Error::Config {
            path: "<code>".into(),
            line: None,
            detail,
        };
        if !(MIN_ENV_SIZE..=MAX_ENV_SIZE).contains(&size) {
            return Err(error(format!(
                "size {size:#x} is outside {MIN_ENV_SIZE:#x}..={MAX_ENV_SIZE:#x}"
            )));
        }
        if let [a, b] = &copies[..]
            && a.storage.path() == b.storage.path()
            && a.offset.abs_diff(b.offset) < size as u64
        {
            return Err(error(format!(
                "copies at {:#x} and {:#x} of {} overlap (size {size:#x})",
                a.offset,
                b.offset,
                a.storage.path().display()
            )));
        }
        Ok(Self {
            size,
            copies,
            scheme,
            lock_path: None,
        })
    }

    /// Takes an exclusive `flock` on `path` around every operation, as libubootenv does.
    #[must_use]
    pub fn with_lock_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.lock_path = Some(path.into());
        self
    }

    /// Whether there are two copies.
    pub fn is_redundant(&self) -> bool {
        self.copies.len() == 2
    }

    /// The size of each copy.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The flag scheme (meaningful for redundant copies only).
    pub fn scheme(&self) -> FlagScheme {
        self.scheme
    }

    /// Loads the current copy, saying which it was.
    pub fn load_detailed(&mut self) -> Result<LoadedEnv, Error> {
        let _lock = self.lock()?;
        self.load_unlocked()
    }

    fn load_unlocked(&mut self) -> Result<LoadedEnv, Error> {
        let regions = self.read_copies()?;
        let checks: Vec<CopyCheck> = regions.iter().map(|(_, check)| *check).collect();
        let current = match checks[..] {
            [single] => single.crc_ok.then_some(0),
            [c0, c1] => select([c0, c1], self.scheme),
            _ => None,
        };
        let Some(copy) = current else {
            let detail = (0..checks.len())
                .map(|i| format!("copy {} ({}): bad CRC", i + 1, self.describe(i)))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::NoValidEnv { detail });
        };
        let header = header_len(self.is_redundant());
        let env = decode_data(&regions[copy].0[header..], self.copies[copy].storage.path())?;
        Ok(LoadedEnv {
            env,
            copy,
            flag: checks[copy].flag,
        })
    }

    fn store_unlocked(&mut self, env: &Env) -> Result<(), Error> {
        if !self.is_redundant() {
            let region = encode(env, self.size, None)?;
            return self.write_copy(0, 0, &region);
        }
        let checks: Vec<CopyCheck> = self.read_copies()?.into_iter().map(|(_, c)| c).collect();
        // With no valid copy libubootenv also treats copy 1 as current and writes copy 2.
        let current = select([checks[0], checks[1]], self.scheme).unwrap_or(0);
        let target = 1 - current;
        let flag = self.scheme.next(checks[current].flag.unwrap_or(0));
        let region = encode(env, self.size, Some(flag))?;
        self.write_copy(target, 0, &region)?;
        if self.scheme == FlagScheme::Boolean {
            self.write_copy(current, CRC_LEN as u64, &[BOOLEAN_OBSOLETE])?;
        }
        Ok(())
    }

    fn read_copies(&mut self) -> Result<Vec<(Vec<u8>, CopyCheck)>, Error> {
        let redundant = self.is_redundant();
        let mut out = Vec::with_capacity(self.copies.len());
        for (i, region) in self.copies.iter_mut().enumerate() {
            let mut bytes = vec![0; self.size];
            region
                .storage
                .read_at(region.offset, &mut bytes)
                .map_err(|err| {
                    let op = format!("reading U-Boot env copy {}", i + 1);
                    Error::io(op, region.storage.path(), Some(region.offset), err)
                })?;
            let check = check(&bytes, redundant);
            out.push((bytes, check));
        }
        Ok(out)
    }

    /// Writes `bytes` at `within` bytes into copy `index`, then fsyncs.
    fn write_copy(&mut self, index: usize, within: u64, bytes: &[u8]) -> Result<(), Error> {
        let region = &mut self.copies[index];
        let offset = region.offset + within;
        let what = if within == 0 {
            "writing"
        } else {
            "marking obsolete"
        };
        region.storage.write_at(offset, bytes).map_err(|err| {
            let op = format!("{what} U-Boot env copy {}", index + 1);
            Error::io(op, region.storage.path(), Some(offset), err)
        })?;
        region.storage.sync().map_err(|err| {
            let op = format!("syncing U-Boot env copy {}", index + 1);
            Error::io(op, region.storage.path(), Some(region.offset), err)
        })
    }

    fn describe(&self, index: usize) -> String {
        let region = &self.copies[index];
        format!(
            "{} offset {:#x}",
            region.storage.path().display(),
            region.offset
        )
    }

    fn lock(&self) -> Result<Option<File>, Error> {
        let Some(path) = &self.lock_path else {
            return Ok(None);
        };
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|err| Error::io("opening U-Boot env lock file", path, None, err))?;
        file.lock()
            .map_err(|err| Error::io("locking U-Boot env lock file", path, None, err))?;
        // Closing the file when the returned handle drops releases the lock.
        Ok(Some(file))
    }
}

impl<S: EnvStorage> BootEnvStore for UbootEnvStore<S> {
    fn load(&mut self) -> Result<Env, Error> {
        Ok(self.load_detailed()?.env)
    }

    /// Writes `env` as the new current copy. On a device with no valid copy this initializes
    /// it, as `fw_setenv` does with a default environment.
    fn store(&mut self, env: &Env) -> Result<(), Error> {
        let _lock = self.lock()?;
        self.store_unlocked(env)
    }

    /// Loads, changes and stores under one lock. Needs a valid environment to start from; does
    /// not write at all when `change` leaves the variables as they were, which spares flash
    /// wear and keeps the flag from advancing for nothing.
    fn update(
        &mut self,
        change: &mut dyn FnMut(&mut Env) -> Result<(), Error>,
    ) -> Result<Env, Error> {
        let _lock = self.lock()?;
        let before = self.load_unlocked()?.env;
        let mut env = before.clone();
        change(&mut env)?;
        if env.sorted() != before.sorted() {
            self.store_unlocked(&env)?;
        }
        Ok(env)
    }
}

impl UbootEnvStore<FileStorage> {
    /// Opens the environment described by the `fw_env.config` at `path`, taking the same lock
    /// file as libubootenv ([`DEFAULT_LOCK_PATH`]).
    pub fn open(config_path: &Path) -> Result<Self, Error> {
        Self::from_config(&FwEnvConfig::read(config_path)?)
    }

    /// Opens the environment a parsed config describes. The flag scheme is the one libubootenv
    /// uses for files and block devices ([`FlagScheme::Incremental`]); MTD and UBI devices are
    /// refused.
    pub fn from_config(config: &FwEnvConfig) -> Result<Self, Error> {
        let mut regions = Vec::with_capacity(config.regions.len());
        for region in &config.regions {
            regions.push(Region {
                storage: FileStorage::new(&region.device),
                offset: resolve_offset(config, region)?,
            });
        }
        let size = config.regions[0].size;
        let store = match <[_; 2]>::try_from(regions) {
            Ok(pair) => Self::redundant(pair, size, FlagScheme::Incremental),
            Err(mut one) => match one.pop() {
                Some(region) => Self::single(region, size),
                None => Err(Error::Config {
                    path: config.path.clone(),
                    line: None,
                    detail: "no device line".into(),
                }),
            },
        };
        Ok(store?.with_lock_file(DEFAULT_LOCK_PATH))
    }
}

/// Checks the device kind as libubootenv classifies it and turns a negative offset into one
/// from the start of the block device.
fn resolve_offset(config: &FwEnvConfig, region: &RegionConfig) -> Result<u64, Error> {
    let device = &region.device;
    let real = std::fs::canonicalize(device)
        .map_err(|err| Error::io("resolving U-Boot env device", device, None, err))?;
    check_device_kind(&real)?;
    if let Ok(offset) = u64::try_from(region.offset) {
        return Ok(offset);
    }
    let metadata = std::fs::metadata(&real)
        .map_err(|err| Error::io("inspecting U-Boot env device", device, None, err))?;
    if !metadata.file_type().is_block_device() {
        return Err(Error::Config {
            path: config.path.clone(),
            line: Some(region.line),
            detail: format!(
                "negative offset {} counts back from the end of a block device, and {} is not \
                 one (libubootenv refuses this too)",
                region.offset,
                device.display()
            ),
        });
    }
    let len = device_len(&real)?;
    len.checked_sub(region.offset.unsigned_abs())
        .ok_or_else(|| Error::Config {
            path: config.path.clone(),
            line: Some(region.line),
            detail: format!(
                "offset {} is before the start of {} ({len} bytes)",
                region.offset,
                device.display()
            ),
        })
}

/// Refuses the device kinds libubootenv drives through ioctls (it classifies by the
/// `/dev/mtd` and `/dev/ubi` prefixes of the resolved path, and so does this).
fn check_device_kind(real: &Path) -> Result<(), Error> {
    let name = real.to_string_lossy();
    if name.starts_with("/dev/mtd") || name.starts_with("/dev/ubi") {
        return Err(Error::Unsupported {
            path: real.to_owned(),
            detail: "raw MTD and UBI devices need erase and volume-update ioctls, which Swell \
                     does not issue yet; use a file or block device, or fw_setenv",
        });
    }
    Ok(())
}

/// The size of a block device: seeking to its end reports it.
fn device_len(path: &Path) -> Result<u64, Error> {
    use std::io::{Seek, SeekFrom};
    File::open(path)
        .and_then(|mut file| file.seek(SeekFrom::End(0)))
        .map_err(|err| Error::io("measuring U-Boot env device", path, None, err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootenv::storage::MemStorage;

    const SIZE: usize = 64;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::try_from(pairs).unwrap()
    }

    fn redundant(dev: &MemStorage, scheme: FlagScheme) -> UbootEnvStore<MemStorage> {
        let region = |offset| Region {
            storage: dev.clone(),
            offset,
        };
        UbootEnvStore::redundant([region(0), region(SIZE as u64)], SIZE, scheme).unwrap()
    }

    #[test]
    fn single_copy_round_trip() {
        let dev = MemStorage::new("<sim>", vec![0xff; 256]);
        let mut store = UbootEnvStore::single(
            Region {
                storage: dev.clone(),
                offset: 100,
            },
            SIZE,
        )
        .unwrap();
        assert!(!store.is_redundant());
        let want = env(&[("bootcmd", "run swell_boot"), ("bootlimit", "3")]);
        store.store(&want).unwrap();
        let loaded = store.load_detailed().unwrap();
        assert_eq!(loaded.env.sorted(), want.sorted());
        assert_eq!((loaded.copy, loaded.flag), (0, None));
        // Bytes outside the region are untouched.
        let bytes = dev.snapshot();
        assert!(bytes[..100].iter().chain(&bytes[164..]).all(|&b| b == 0xff));
    }

    #[test]
    fn blank_device_is_a_clear_error_and_store_initializes_it() {
        let dev = MemStorage::new("/dev/sim", vec![0; 2 * SIZE]);
        let mut store = redundant(&dev, FlagScheme::Incremental);
        let err = store.load().unwrap_err();
        assert_eq!(
            err.to_string(),
            "no valid U-Boot environment: copy 1 (/dev/sim offset 0x0): bad CRC; \
             copy 2 (/dev/sim offset 0x40): bad CRC"
        );
        assert!(matches!(
            store.update(&mut |_| Ok(())),
            Err(Error::NoValidEnv { .. })
        ));
        store.store(&env(&[("a", "1")])).unwrap();
        let loaded = store.load_detailed().unwrap();
        // As fw_setenv: copy 1 counts as current, so the first write lands in copy 2.
        assert_eq!((loaded.copy, loaded.flag), (1, Some(1)));
    }

    #[test]
    fn incremental_writes_alternate_and_flag_wraps() {
        let dev = MemStorage::new("<sim>", vec![0; 2 * SIZE]);
        let mut store = redundant(&dev, FlagScheme::Incremental);
        store.store(&env(&[("n", "0")])).unwrap();
        let mut seen = Vec::new();
        for i in 1..=300u32 {
            let value = i.to_string();
            store.update(&mut |e| e.set("n", &value)).unwrap();
            let loaded = store.load_detailed().unwrap();
            assert_eq!(loaded.env.get("n"), Some(value.as_str()));
            seen.push((loaded.copy, loaded.flag.unwrap()));
        }
        // Copies alternate, flags count up through the wrap from 0xff to 0x00.
        assert!(
            seen.windows(2)
                .all(|w| w[0].0 != w[1].0 && w[1].1 == w[0].1.wrapping_add(1))
        );
        assert!(seen.iter().any(|&(_, flag)| flag == 0xff));
    }

    #[test]
    fn update_without_change_writes_nothing() {
        let dev = MemStorage::new("<sim>", vec![0; 2 * SIZE]);
        let mut store = redundant(&dev, FlagScheme::Incremental);
        store.store(&env(&[("a", "1")])).unwrap();
        let written = dev.bytes_written();
        store.update(&mut |e| e.set("a", "1")).unwrap();
        assert_eq!(dev.bytes_written(), written);
    }

    #[test]
    fn boolean_scheme_marks_old_copy_obsolete() {
        let dev = MemStorage::new("<sim>", vec![0; 2 * SIZE]);
        let mut store = redundant(&dev, FlagScheme::Boolean);
        store.store(&env(&[("a", "1")])).unwrap();
        store.store(&env(&[("a", "2")])).unwrap();
        let bytes = dev.snapshot();
        assert_eq!((bytes[4], bytes[SIZE + 4]), (0x01, 0x00));
        let loaded = store.load_detailed().unwrap();
        assert_eq!((loaded.copy, loaded.env.get("a")), (0, Some("2")));
    }

    #[test]
    fn too_large_env_is_refused_and_nothing_written() {
        let dev = MemStorage::new("<sim>", vec![0; 2 * SIZE]);
        let mut store = redundant(&dev, FlagScheme::Incremental);
        let big = "x".repeat(SIZE);
        let err = store.store(&env(&[("big", &big)])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "U-Boot env region needs 75 bytes but only 64 are available"
        );
        assert_eq!(dev.bytes_written(), 0);
    }

    #[test]
    fn overlapping_or_odd_sized_layouts_are_refused() {
        let dev = MemStorage::new("/dev/sim", vec![0; 256]);
        let region = |offset| Region {
            storage: dev.clone(),
            offset,
        };
        let err = UbootEnvStore::redundant([region(0), region(32)], SIZE, FlagScheme::Incremental)
            .unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
        assert!(UbootEnvStore::single(region(0), 4).is_err());
        assert!(UbootEnvStore::single(region(0), MAX_ENV_SIZE + 1).is_err());
    }

    #[test]
    fn io_errors_name_the_copy_device_and_offset() {
        let dev = MemStorage::new("/dev/sim", vec![0; SIZE + 10]);
        let mut store = redundant(&dev, FlagScheme::Incremental);
        let err = store.load().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("reading U-Boot env copy 2 at /dev/sim offset 0x40: "),
            "{err}"
        );
        let dev = MemStorage::new("/dev/sim", vec![0; 2 * SIZE]);
        let mut store = redundant(&dev, FlagScheme::Incremental);
        dev.cut_power_after(0);
        let err = store.store(&Env::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "writing U-Boot env copy 2 at /dev/sim offset 0x40: simulated power cut"
        );
    }

    #[test]
    fn mtd_and_ubi_devices_are_refused() {
        for path in ["/dev/mtd3", "/dev/mtdblock2", "/dev/ubi0_1"] {
            assert!(matches!(
                check_device_kind(Path::new(path)),
                Err(Error::Unsupported { .. })
            ));
        }
        check_device_kind(Path::new("/dev/mmcblk0boot1")).unwrap();
    }

    #[test]
    fn from_config_with_files_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("env.img");
        std::fs::write(&image, vec![0u8; 0x4000]).unwrap();
        let text = format!("{0} 0x0 0x2000\n{0} 0x2000 0x2000\n", image.display());
        let config = FwEnvConfig::parse(&text, Path::new("fw_env.config")).unwrap();
        let mut store = UbootEnvStore::from_config(&config)
            .unwrap()
            .with_lock_file(dir.path().join("lock"));
        assert!(store.is_redundant());
        assert_eq!(store.size(), 0x2000);
        store.store(&env(&[("swell_slot", "a")])).unwrap();
        assert_eq!(store.load().unwrap().get("swell_slot"), Some("a"));

        let text = format!("{} -0x2000 0x2000\n", image.display());
        let config = FwEnvConfig::parse(&text, Path::new("fw_env.config")).unwrap();
        let err = UbootEnvStore::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("line 1: negative offset -8192"), "{err}");

        let missing = FwEnvConfig::parse("/nonexistent/env 0 0x2000\n", Path::new("c")).unwrap();
        let err = UbootEnvStore::from_config(&missing)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("resolving U-Boot env device at /nonexistent/env: "),
            "{err}"
        );
    }
}
