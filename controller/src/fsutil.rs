//! File I/O for swellctl: bounded reads of documents and keys, and atomic writes.
//!
//! Every file swellctl writes goes through [`write_atomic`]: the bytes go to a temporary file
//! in the same directory, which is fsynced, moved into place, and then the directory is fsynced
//! so the new name survives a power cut. A reader therefore sees the old file or the new one,
//! never a torn one. New files (keys, roots, manifests) refuse to replace an existing file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use swell_proto::limits::MAX_DOCUMENT_BYTES;

use crate::error::Error;

/// Largest key or signature file read. A PEM Ed25519 key is under 200 bytes; the bound keeps a
/// wrong path (an image, a device) from being read whole.
pub const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// Mode of new documents: readable by all, as a trust root or manifest is meant to be shared.
pub const DOCUMENT_MODE: u32 = 0o644;

/// Mode of new private keys: the owner's only.
pub const PRIVATE_KEY_MODE: u32 = 0o600;

/// What [`write_atomic`] does when the destination already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Fail with [`Error::Exists`] (new keys, roots and manifests).
    Refuse,
    /// Replace it atomically, keeping its permission bits (signing in place).
    Replace,
}

/// Reads at most `limit` bytes of `path`; a longer file is `Err(Some(len))`.
fn read_bounded(path: &Path, limit: u64) -> Result<Result<Vec<u8>, u64>, Error> {
    let file = File::open(path).map_err(Error::io("read", path))?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(Error::io("read", path))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        let len = fs::metadata(path)
            .map(|m| m.len())
            .unwrap_or(limit.saturating_add(1));
        return Ok(Err(len));
    }
    Ok(Ok(bytes))
}

/// Reads a signed document, refusing one over [`MAX_DOCUMENT_BYTES`] without reading it all.
pub fn read_document(path: &Path) -> Result<Vec<u8>, Error> {
    let limit = MAX_DOCUMENT_BYTES as u64;
    read_bounded(path, limit)?.map_err(|len| Error::Document {
        path: path.to_path_buf(),
        source: swell_proto::Error::TooLarge {
            size: usize::try_from(len).unwrap_or(usize::MAX),
            limit: MAX_DOCUMENT_BYTES,
        },
    })
}

/// Reads a small file (a key or a signature) of at most [`MAX_KEY_FILE_BYTES`].
pub fn read_small(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    read_bounded(path, MAX_KEY_FILE_BYTES)?.map_err(|len| Error::Key {
        path: path.to_path_buf(),
        why: format!("{len} bytes is too large for {what}"),
    })
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates a fresh temporary file beside `path` with `mode`.
fn create_temp(path: &Path, mode: u32) -> Result<(PathBuf, File), Error> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pid = std::process::id();
    let mut attempt = 0u32;
    loop {
        let tmp = dir.join(format!(".{name}.{pid}.{attempt}.tmp"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(Error::io("create a temporary file in", dir)(e)),
        }
    }
}

/// Writes `bytes` to `path` atomically (see the module documentation).
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    overwrite: Overwrite,
) -> Result<(), Error> {
    let mode = match (overwrite, fs::metadata(path)) {
        (Overwrite::Refuse, Ok(_)) => {
            return Err(Error::Exists {
                path: path.to_path_buf(),
            });
        }
        (Overwrite::Replace, Ok(meta)) => meta.permissions().mode() & 0o7777,
        _ => mode,
    };
    let (tmp, mut file) = create_temp(path, mode)?;
    let result = write_and_place(path, &tmp, &mut file, bytes, overwrite);
    drop(file);
    // On success the temporary name is already gone (renamed, or unlinked after the link);
    // on failure it must not be left behind. Removing it again is harmless either way.
    let _ = fs::remove_file(&tmp);
    result?;
    let dir = parent_dir(path);
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

fn write_and_place(
    path: &Path,
    tmp: &Path,
    file: &mut File,
    bytes: &[u8],
    overwrite: Overwrite,
) -> Result<(), Error> {
    file.write_all(bytes).map_err(Error::io("write", tmp))?;
    file.sync_all().map_err(Error::io("fsync", tmp))?;
    match overwrite {
        Overwrite::Replace => fs::rename(tmp, path).map_err(Error::io("rename into place", path)),
        // A hard link, unlike a rename, fails if the destination exists: an atomic
        // "create if absent" that never exposes a partly written file.
        Overwrite::Refuse => match fs::hard_link(tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::Exists {
                path: path.to_path_buf(),
            }),
            Err(e) => Err(Error::io("link into place", path)(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_overwrite_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one", DOCUMENT_MODE, Overwrite::Refuse).unwrap();
        let err = write_atomic(&path, b"two", DOCUMENT_MODE, Overwrite::Refuse).unwrap_err();
        assert!(matches!(err, Error::Exists { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_atomic(&path, b"three", DOCUMENT_MODE, Overwrite::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[test]
    fn replace_keeps_permission_bits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_atomic(&path, b"x", PRIVATE_KEY_MODE, Overwrite::Refuse).unwrap();
        write_atomic(&path, b"y", DOCUMENT_MODE, Overwrite::Replace).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn bounded_reads_refuse_large_documents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        fs::write(&path, vec![b' '; MAX_DOCUMENT_BYTES + 10]).unwrap();
        let err = read_document(&path).unwrap_err();
        assert!(err.to_string().ends_with("big.json"), "{err}");
        let Error::Document { source, .. } = err else {
            panic!("wrong error")
        };
        assert_eq!(
            source,
            swell_proto::Error::TooLarge {
                size: MAX_DOCUMENT_BYTES + 10,
                limit: MAX_DOCUMENT_BYTES
            }
        );
    }
}
