//! A/B slots: writing an image into the inactive slot and reading it back.
//!
//! A slot is a path the configuration names, one per slot: a block device on a real board
//! (`/dev/mmcblk0p3`), a plain file on a simulated one. Everything here is blocking I/O; the
//! async driver calls it on a blocking thread.
//!
//! Architecture invariant: the agent never opens the active slot for writing. Every writer is
//! made by [`SlotWriter::open`], which refuses a target that resolves to the same file or
//! device as the active slot.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use swell_proto::Sha256Digest;
use swell_proto::messages::Slot;

/// Size of the buffer slots are read back with. 1 MiB keeps the number of system calls and
/// hasher calls low (SHA-256 runs at over 1 GiB/s with SHA-NI) while staying far below the
/// agent's memory budget.
pub const READ_BUFFER: usize = 1 << 20;

/// A slot and the path that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPath {
    /// Which slot.
    pub slot: Slot,
    /// The file or block device holding it.
    pub path: PathBuf,
}

impl SlotPath {
    /// Slot `slot` at `path`.
    pub fn new(slot: Slot, path: impl Into<PathBuf>) -> Self {
        Self {
            slot,
            path: path.into(),
        }
    }
}

impl fmt::Display for SlotPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.slot {
            Slot::A => "A",
            Slot::B => "B",
        };
        write!(f, "slot {name} {}", self.path.display())
    }
}

/// Why a slot could not be written or verified.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The slot to write is the running system's slot.
    #[error("refusing to write {slot}: it is the active slot ({})", active.display())]
    IsActive {
        /// The slot that was to be written.
        slot: SlotPath,
        /// The active slot's path.
        active: PathBuf,
    },
    /// The medium ran out of space.
    #[error("disk full: {op} {slot} at offset {offset}: {source}")]
    DiskFull {
        /// What was being done.
        op: &'static str,
        /// On which slot.
        slot: SlotPath,
        /// Where in the slot.
        offset: u64,
        /// The OS error (ENOSPC).
        source: io::Error,
    },
    /// A block device slot is smaller than the image.
    #[error("{slot} holds {capacity} bytes, too small for an image of {size} bytes")]
    TooSmall {
        /// The slot.
        slot: SlotPath,
        /// The device's size.
        capacity: u64,
        /// The image's size.
        size: u64,
    },
    /// The slot ended before the image's size while reading it back.
    #[error("{slot} ended after {len} bytes while reading back an image of {size} bytes")]
    ShortRead {
        /// The slot.
        slot: SlotPath,
        /// How much could be read.
        len: u64,
        /// The image's size.
        size: u64,
    },
    /// The slot's content does not have the expected digest.
    #[error("{slot}: the first {size} bytes have SHA-256 {actual}, expected {expected}")]
    DigestMismatch {
        /// The slot.
        slot: SlotPath,
        /// How many bytes were hashed.
        size: u64,
        /// The digest the manifest gives.
        expected: Sha256Digest,
        /// The digest of what the slot holds.
        actual: Sha256Digest,
    },
    /// Any other I/O failure.
    #[error("{op} {slot}{}: {source}", at(*.offset))]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which slot.
        slot: SlotPath,
        /// Where in the slot, for reads and writes.
        offset: Option<u64>,
        /// The OS error.
        source: io::Error,
    },
}

fn at(offset: Option<u64>) -> String {
    offset
        .map(|o| format!(" at offset {o}"))
        .unwrap_or_default()
}

impl SlotError {
    fn io(op: &'static str, slot: &SlotPath, offset: Option<u64>, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::StorageFull {
            SlotError::DiskFull {
                op,
                slot: slot.clone(),
                offset: offset.unwrap_or(0),
                source,
            }
        } else {
            SlotError::Io {
                op,
                slot: slot.clone(),
                offset,
                source,
            }
        }
    }
}

/// Streams an image into a slot at increasing offsets.
///
/// Data goes through the page cache; [`SlotWriter::sync`] makes what was written durable
/// (fdatasync). A block device is never truncated; a regular file is cut or extended to the
/// image's size by [`SlotWriter::finish`], so an older, longer image leaves no tail behind.
#[derive(Debug)]
pub struct SlotWriter {
    file: File,
    slot: SlotPath,
    regular: bool,
    offset: u64,
}

impl SlotWriter {
    /// Opens `slot` for writing an image of `size` bytes, refusing if it is the same file or
    /// device as `active`. A missing slot file is created (a simulated board's first image),
    /// except under `/dev`: a missing device node is a configuration error, and creating a
    /// file there would fill a RAM-backed filesystem. Writing starts at offset 0.
    pub fn open(slot: &SlotPath, active: &Path, size: u64) -> Result<Self, SlotError> {
        refuse_active(slot, active)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(!slot.path.starts_with("/dev"))
            .truncate(false)
            .open(&slot.path)
            .map_err(|e| SlotError::io("opening for writing", slot, None, e))?;
        let meta = file
            .metadata()
            .map_err(|e| SlotError::io("inspecting", slot, None, e))?;
        let mut writer = Self {
            file,
            slot: slot.clone(),
            regular: meta.is_file(),
            offset: 0,
        };
        if meta.file_type().is_block_device() {
            let capacity = writer
                .file
                .seek(SeekFrom::End(0))
                .map_err(|e| SlotError::io("measuring", slot, None, e))?;
            if capacity < size {
                return Err(SlotError::TooSmall {
                    slot: slot.clone(),
                    capacity,
                    size,
                });
            }
        }
        Ok(writer)
    }

    /// Moves the write position to `offset` (used when resuming).
    pub fn set_offset(&mut self, offset: u64) {
        self.offset = offset;
    }

    /// The next write's offset: the number of bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The slot being written.
    pub fn slot(&self) -> &SlotPath {
        &self.slot
    }

    /// Writes `data` at the current offset and advances it.
    pub fn write(&mut self, data: &[u8]) -> Result<(), SlotError> {
        self.file
            .write_all_at(data, self.offset)
            .map_err(|e| SlotError::io("writing", &self.slot, Some(self.offset), e))?;
        self.offset += data.len() as u64;
        Ok(())
    }

    /// Makes everything written so far durable (fdatasync).
    pub fn sync(&mut self) -> Result<(), SlotError> {
        self.file
            .sync_data()
            .map_err(|e| SlotError::io("syncing", &self.slot, Some(self.offset), e))
    }

    /// A handle that syncs this slot from another thread while writing goes on.
    pub fn sync_handle(&self) -> Result<SlotSync, SlotError> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| SlotError::io("duplicating the handle of", &self.slot, None, e))?;
        Ok(SlotSync {
            file,
            slot: self.slot.clone(),
        })
    }

    /// Ends the write of an image of `size` bytes: a regular file gets exactly that length,
    /// then the data is synced.
    pub fn finish(mut self, size: u64) -> Result<(), SlotError> {
        if self.regular {
            self.file
                .set_len(size)
                .map_err(|e| SlotError::io("setting the length of", &self.slot, Some(size), e))?;
        }
        self.sync()
    }
}

/// Syncs a slot being written by a [`SlotWriter`], from another thread.
#[derive(Debug)]
pub struct SlotSync {
    file: File,
    slot: SlotPath,
}

impl SlotSync {
    /// Makes everything written to the slot so far durable (fdatasync); `offset` is for the
    /// error message: the position written up to when the sync began.
    pub fn sync(&self, offset: u64) -> Result<(), SlotError> {
        self.file
            .sync_data()
            .map_err(|e| SlotError::io("syncing", &self.slot, Some(offset), e))
    }
}

/// Refuses when `slot` and `active` are the same file or device: same canonical path, same
/// inode, or two device nodes for the same block device.
fn refuse_active(slot: &SlotPath, active: &Path) -> Result<(), SlotError> {
    let refuse = || {
        Err(SlotError::IsActive {
            slot: slot.clone(),
            active: active.to_path_buf(),
        })
    };
    if canonical(&slot.path) == canonical(active) {
        return refuse();
    }
    // The target may not exist yet (a simulated board's first image): then it cannot be the
    // active slot, which does exist.
    if let (Ok(t), Ok(a)) = (fs::metadata(&slot.path), fs::metadata(active)) {
        let same_inode = t.dev() == a.dev() && t.ino() == a.ino();
        let same_device = t.file_type().is_block_device()
            && a.file_type().is_block_device()
            && t.rdev() == a.rdev();
        if same_inode || same_device {
            return refuse();
        }
    }
    Ok(())
}

/// `path` with symlinks and `..` resolved; for a file that does not exist yet, its canonical
/// directory joined with its name.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            fs::canonicalize(dir)
                .map(|d| d.join(name))
                .unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

/// Feeds the first `len` bytes of `slot` into `hasher`.
pub fn hash_prefix(slot: &SlotPath, len: u64, hasher: &mut Sha256) -> Result<(), SlotError> {
    let mut file =
        File::open(&slot.path).map_err(|e| SlotError::io("opening for reading", slot, None, e))?;
    let mut buf = vec![0u8; READ_BUFFER];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done).map_or(READ_BUFFER, |r| r.min(READ_BUFFER));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(SlotError::ShortRead {
                    slot: slot.clone(),
                    len: done,
                    size: len,
                });
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SlotError::io("reading", slot, Some(done), e)),
        };
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(())
}

/// Re-reads exactly `size` bytes of `slot` and checks that their digest is `sha256`.
pub fn verify_slot(slot: &SlotPath, size: u64, sha256: &Sha256Digest) -> Result<(), SlotError> {
    let mut hasher = Sha256::new();
    hash_prefix(slot, size, &mut hasher)?;
    let actual = Sha256Digest::from_bytes(hasher.finalize().into());
    if actual != *sha256 {
        return Err(SlotError::DigestMismatch {
            slot: slot.clone(),
            size,
            expected: *sha256,
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(dir: &Path, name: &str) -> SlotPath {
        SlotPath::new(Slot::B, dir.join(name))
    }

    /// Writing, finishing and verifying a file slot round-trips, and an older, longer image
    /// in the file is cut to the new size.
    #[test]
    fn writes_and_verifies_a_file_slot() {
        let dir = tempfile::tempdir().unwrap();
        let target = slot(dir.path(), "b.img");
        fs::write(&target.path, vec![7u8; 5000]).unwrap();
        fs::write(dir.path().join("a.img"), b"running").unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut w = SlotWriter::open(&target, &dir.path().join("a.img"), 3000).unwrap();
        w.write(&data[..1000]).unwrap();
        w.sync().unwrap();
        w.write(&data[1000..]).unwrap();
        assert_eq!(w.offset(), 3000);
        w.finish(3000).unwrap();
        assert_eq!(fs::read(&target.path).unwrap(), data);
        verify_slot(&target, 3000, &Sha256Digest::of(&data)).unwrap();
    }

    /// A wrong digest is reported with both digests, the slot and the size.
    #[test]
    fn verify_reports_the_actual_digest() {
        let dir = tempfile::tempdir().unwrap();
        let target = slot(dir.path(), "b.img");
        fs::write(&target.path, b"hello world").unwrap();
        let expected = Sha256Digest::of(b"hello");
        let e = verify_slot(&target, 11, &expected).unwrap_err();
        let actual = Sha256Digest::of(b"hello world");
        let msg = e.to_string();
        assert!(
            msg.contains(&expected.to_hex()) && msg.contains(&actual.to_hex()),
            "{msg}"
        );
        assert!(msg.contains("slot B") && msg.contains("b.img"), "{msg}");
        // Only `size` bytes count: the first five bytes do have the expected digest.
        verify_slot(&target, 5, &expected).unwrap();
        let e = verify_slot(&target, 12, &expected).unwrap_err();
        assert!(
            matches!(
                e,
                SlotError::ShortRead {
                    len: 11,
                    size: 12,
                    ..
                }
            ),
            "{e}"
        );
    }

    /// The active slot is refused by path, through a symlink, and through `..`.
    #[test]
    fn refuses_the_active_slot() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("a.img");
        fs::write(&active, b"running").unwrap();
        std::os::unix::fs::symlink(&active, dir.path().join("link")).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        for p in [
            active.clone(),
            dir.path().join("link"),
            dir.path().join("sub/../a.img"),
        ] {
            let e = SlotWriter::open(&SlotPath::new(Slot::A, &p), &active, 7).unwrap_err();
            assert!(matches!(e, SlotError::IsActive { .. }), "{p:?}: {e}");
            assert!(e.to_string().starts_with("refusing to write slot A"), "{e}");
        }
        assert_eq!(fs::read(&active).unwrap(), b"running");
    }

    /// A missing device node is an error, not a file created under /dev.
    #[test]
    fn does_not_create_device_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let missing = SlotPath::new(Slot::B, "/dev/swell-test-no-such-slot");
        let e = SlotWriter::open(&missing, &dir.path().join("a.img"), 10).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("opening for writing slot B /dev/swell-test"),
            "{e}"
        );
        assert!(!missing.path.exists());
    }

    /// ENOSPC is reported as "disk full" with the slot and the offset.
    #[test]
    fn enospc_is_disk_full() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("a.img");
        fs::write(&active, b"running").unwrap();
        let full = SlotPath::new(Slot::B, "/dev/full");
        let mut w = SlotWriter::open(&full, &active, 10).unwrap();
        let e = w.write(&[1u8; 10]).unwrap_err();
        assert!(matches!(e, SlotError::DiskFull { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("disk full: writing slot B /dev/full at offset 0"),
            "{msg}"
        );
    }
}
