//! The durable queue of signed batches: `signals/` in the data directory, one file per batch,
//! named by a number that rises with every batch (`00000000000000000042.json`).
//!
//! A batch is written with the journal's atomic write (temp file, fsync, rename, fsync of the
//! directory) right after it is signed, so a power cut loses at most the batch being written;
//! it is deleted when the broker acknowledges it. A restart finds the queue as it was and
//! sends it oldest first. Beyond `max` files the oldest are dropped (the next batch says how
//! many); a file that cannot be read is dropped the same way.
//!
//! Deleting needs no directory fsync: a deletion lost to a power cut resends a batch the
//! controller already has, which it drops as a replay by its sequence number.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::journal::{JournalError, write_atomic};

/// Batches kept while the broker is unreachable: a day at the default interval of a minute.
pub const DEFAULT_MAX_QUEUED: usize = 1440;

/// The queue directory's name in the data directory.
pub const DIR_NAME: &str = "signals";

/// The queue on disk and the ids in it.
#[derive(Debug)]
pub struct SignalQueue {
    dir: PathBuf,
    ids: BTreeSet<u64>,
    max: usize,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_path_buf();
    move |source| JournalError::Io { op, path, source }
}

impl SignalQueue {
    /// Opens (creating) the queue in `dir`, keeping at most `max` batches. Leftover temp
    /// files of a cut write are removed.
    pub fn open(dir: &Path, max: usize) -> Result<SignalQueue, JournalError> {
        fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let mut ids = BTreeSet::new();
        for entry in fs::read_dir(dir).map_err(io("listing", dir))? {
            let entry = entry.map_err(io("listing", dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".json").and_then(|n| n.parse().ok()) {
                ids.insert(id);
            } else if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(SignalQueue {
            dir: dir.to_path_buf(),
            ids,
            max: max.max(1),
        })
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.json"))
    }

    /// The queued ids, oldest first.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.ids.iter().copied()
    }

    /// How many batches are queued.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Drops the oldest batches, except those in `keep` (handed to the session already), until
    /// one more fits. Returns how many were dropped.
    pub fn make_room(&mut self, keep: &BTreeSet<u64>) -> u64 {
        let mut dropped = 0;
        while self.ids.len() >= self.max {
            let Some(oldest) = self.ids.iter().copied().find(|id| !keep.contains(id)) else {
                break;
            };
            let _ = fs::remove_file(self.path(oldest));
            self.ids.remove(&oldest);
            dropped += 1;
        }
        dropped
    }

    /// Writes a signed batch durably; returns its id.
    pub fn push(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        let id = self.ids.last().map_or(1, |last| last + 1);
        write_atomic(&self.dir, &self.path(id), payload)?;
        self.ids.insert(id);
        Ok(id)
    }

    /// The signed batch `id`; `None` (and the file dropped) if it cannot be read.
    pub fn read(&mut self, id: u64) -> Option<Vec<u8>> {
        match fs::read(self.path(id)) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                eprintln!("swell-agent: dropping unreadable signals batch {id}: {e}");
                self.remove(id);
                None
            }
        }
    }

    /// Deletes batch `id` (delivered). Unknown ids are ignored.
    pub fn remove(&mut self, id: u64) {
        if self.ids.remove(&id) {
            let _ = fs::remove_file(self.path(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids rise across reopening; the oldest are dropped beyond `max`, except kept ones.
    #[test]
    fn queue_survives_reopen_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = SignalQueue::open(dir.path(), 3).unwrap();
        for n in 0..3u8 {
            q.push(&[n]).unwrap();
        }
        fs::write(dir.path().join("00000000000000000009.tmp"), b"torn").unwrap();
        let mut q = SignalQueue::open(dir.path(), 3).unwrap();
        assert_eq!(q.ids().collect::<Vec<_>>(), [1, 2, 3]);
        assert!(!dir.path().join("00000000000000000009.tmp").exists());
        assert_eq!(q.make_room(&BTreeSet::from([1])), 1);
        assert_eq!(q.push(b"x").unwrap(), 4);
        assert_eq!(q.ids().collect::<Vec<_>>(), [1, 3, 4]);
        assert_eq!(q.read(4).unwrap(), b"x");
        q.remove(1);
        assert_eq!(SignalQueue::open(dir.path(), 3).unwrap().len(), 2);
    }
}
