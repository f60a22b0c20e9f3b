//! The download checkpoint file, and the thread that syncs the slot and writes checkpoints
//! while the download goes on.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

use serde::{Deserialize, Serialize};
use swell_proto::Sha256Digest;

use super::DownloadError;
use crate::faults;
use crate::journal::{self, JournalError};
use crate::slots::SlotSync;

/// The on-disk record; see the parent module's documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Checkpoint {
    pub(super) sha256: Sha256Digest,
    pub(super) size: u64,
    pub(super) offset: u64,
    pub(super) prefix_sha256: Sha256Digest,
}

/// Reads the checkpoint at `path`. A missing, unreadable or unparsable file means "start from
/// 0", never an error: the streamed digest protects the result either way.
pub(super) fn read(path: &Path) -> Option<Checkpoint> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Replaces the checkpoint at `path` atomically. The caller has synced the slot up to
/// `cp.offset` first.
pub(super) fn write(path: &Path, cp: &Checkpoint) -> Result<(), JournalError> {
    let bytes = serde_json::to_vec(cp).map_err(|e| JournalError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("cannot encode: {e}"),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    journal::write_atomic(dir, path, &bytes)
}

/// Removes the checkpoint at `path`, if there is one.
pub(super) fn remove(path: &Path) -> Result<(), JournalError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(JournalError::Io {
            op: "removing",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Syncs the slot and writes checkpoints on a thread of its own, so the download does not
/// wait for the disk at each checkpoint. At most one checkpoint is in progress:
/// [`Syncer::mark`] waits for the previous one, which bounds the unsynced data to two
/// checkpoint intervals.
///
/// The thread shares the slot's open file description, so a failed fdatasync is reported to
/// it and not again to the writer: its failure must always be collected with
/// [`Syncer::finish`] before anything else is synced or checkpointed.
pub(super) struct Syncer<'scope> {
    marks: Option<SyncSender<Checkpoint>>,
    thread: Option<ScopedJoinHandle<'scope, Result<(), DownloadError>>>,
}

impl<'scope> Syncer<'scope> {
    /// Starts the thread in `scope`, checkpointing into `path`.
    pub(super) fn spawn(scope: &'scope Scope<'scope, '_>, slot: SlotSync, path: PathBuf) -> Self {
        // A rendezvous channel: `mark` returns once the thread has taken the checkpoint, that
        // is, once the previous one is complete.
        let (marks, rx) = sync_channel::<Checkpoint>(0);
        let thread = scope.spawn(move || {
            for cp in rx {
                slot.sync(cp.offset)?;
                faults::durable_write("slot data");
                write(&path, &cp)?;
            }
            Ok(())
        });
        Self {
            marks: Some(marks),
            thread: Some(thread),
        }
    }

    /// Asks for a checkpoint at `cp.offset`, all of whose bytes have been written.
    pub(super) fn mark(&mut self, cp: Checkpoint) -> Result<(), DownloadError> {
        let sent = self.marks.as_ref().is_some_and(|tx| tx.send(cp).is_ok());
        if sent {
            Ok(())
        } else {
            // The thread stopped, which it does only on a failure: report it.
            self.finish()
        }
    }

    /// Waits for the checkpoint in progress, stops the thread and returns its failure, if
    /// any.
    pub(super) fn finish(&mut self) -> Result<(), DownloadError> {
        self.marks = None;
        match self.thread.take().map(ScopedJoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
        }
    }
}
