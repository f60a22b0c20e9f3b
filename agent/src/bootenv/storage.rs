//! Positioned reads and writes under the U-Boot environment store.
//!
//! The store sees a device only through [`EnvStorage`], so the same code runs against a file or
//! block device ([`FileStorage`]) and against [`MemStorage`], a simulated device that loses
//! power after a chosen number of written bytes. The power-cut tests drive the real store
//! through it, as MCUboot's simulator drives the real bootloader through a simulated flash.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A device the U-Boot environment lives on.
pub trait EnvStorage {
    /// The path shown in error messages.
    fn path(&self) -> &Path;

    /// Fills `buf` from `offset`; a short device is an error.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Writes all of `data` at `offset`. After an error any prefix of `data` may have reached
    /// the device.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Returns once everything written so far is on stable storage.
    fn sync(&mut self) -> io::Result<()>;
}

/// A regular file or a block device (eMMC boot partition, raw SD card area, disk image).
///
/// Reads open the device read-only each time, so loading needs no write permission; the first
/// write opens it read-write and keeps that handle for [`EnvStorage::sync`]. The device must
/// already exist, as libubootenv requires.
#[derive(Debug)]
pub struct FileStorage {
    path: PathBuf,
    writer: Option<File>,
}

impl FileStorage {
    /// Storage on the file or device at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            writer: None,
        }
    }
}

impl Clone for FileStorage {
    /// A clone opens its own handles.
    fn clone(&self) -> Self {
        Self::new(self.path.clone())
    }
}

impl EnvStorage for FileStorage {
    fn path(&self) -> &Path {
        &self.path
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        File::open(&self.path)?.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let file = match &mut self.writer {
            Some(file) => file,
            writer => writer.insert(OpenOptions::new().read(true).write(true).open(&self.path)?),
        };
        file.write_all_at(data, offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        match self.writer.take() {
            // fsync on a block device flushes the device's cache as well as the page cache.
            Some(file) => file.sync_all(),
            None => Ok(()),
        }
    }
}

/// A simulated device in memory that can lose power.
///
/// Clones share the bytes and the power supply, so two regions on one simulated device see
/// one power cut. [`MemStorage::cut_power_after`] sets how many more bytes reach the device:
/// the write that crosses the limit stores its prefix and fails, and every later write or sync
/// fails without storing anything, as on a board whose power is gone.
#[derive(Debug, Clone)]
pub struct MemStorage {
    path: PathBuf,
    inner: Arc<Mutex<MemInner>>,
}

#[derive(Debug)]
struct MemInner {
    bytes: Vec<u8>,
    /// Bytes that may still be written; `None` means the power never fails.
    budget: Option<usize>,
    bytes_written: usize,
}

impl MemStorage {
    /// A device holding `bytes`, named `name` in error messages.
    pub fn new(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Self {
        Self {
            path: name.into(),
            inner: Arc::new(Mutex::new(MemInner {
                bytes,
                budget: None,
                bytes_written: 0,
            })),
        }
    }

    /// Lets `bytes` more bytes reach the device, then cuts the power.
    pub fn cut_power_after(&self, bytes: usize) {
        self.lock().budget = Some(bytes);
    }

    /// The device's current contents: what a reboot would find.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().bytes.clone()
    }

    /// Bytes that reached the device so far (for choosing cut points in tests).
    pub fn bytes_written(&self) -> usize {
        self.lock().bytes_written
    }

    fn lock(&self) -> MutexGuard<'_, MemInner> {
        // A panic while holding the lock cannot leave the byte vector half-updated in a way
        // that matters to a simulation, so a poisoned lock is used as it is.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn power_cut() -> io::Error {
    io::Error::other("simulated power cut")
}

impl EnvStorage for MemStorage {
    fn path(&self) -> &Path {
        &self.path
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let inner = self.lock();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| inner.bytes.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut inner = self.lock();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let allowed = inner
            .budget
            .map_or(data.len(), |budget| budget.min(data.len()));
        let end = start
            .checked_add(data.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        if inner.bytes.len() < end {
            inner.bytes.resize(end, 0);
        }
        inner.bytes[start..start + allowed].copy_from_slice(&data[..allowed]);
        inner.bytes_written += allowed;
        if let Some(budget) = &mut inner.budget {
            *budget -= allowed;
            if allowed < data.len() {
                return Err(power_cut());
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.lock().budget == Some(0) {
            Err(power_cut())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_storage_stores_prefix_then_fails() {
        let mut dev = MemStorage::new("<sim>", vec![0; 8]);
        let mut other = dev.clone();
        dev.cut_power_after(3);
        dev.write_at(1, b"ab").unwrap();
        assert!(other.write_at(4, b"cdef").is_err());
        assert!(dev.write_at(0, b"z").is_err());
        assert!(dev.sync().is_err());
        assert_eq!(dev.snapshot(), b"\0ab\0c\0\0\0");
        assert_eq!(dev.bytes_written(), 3);
        let mut buf = [0; 2];
        other.read_at(1, &mut buf).unwrap();
        assert_eq!(&buf, b"ab");
        assert!(other.read_at(7, &mut buf).is_err());
    }

    #[test]
    fn file_storage_round_trip_and_missing_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env.img");
        std::fs::write(&path, [0u8; 16]).unwrap();
        let mut dev = FileStorage::new(&path);
        dev.write_at(4, b"data").unwrap();
        dev.sync().unwrap();
        let mut buf = [0; 4];
        dev.read_at(4, &mut buf).unwrap();
        assert_eq!(&buf, b"data");
        assert_eq!(
            dev.read_at(14, &mut buf).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut missing = FileStorage::new(dir.path().join("nope"));
        assert_eq!(
            missing.write_at(0, b"x").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
