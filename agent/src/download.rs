//! Fetching an image into the inactive slot: streaming, hashing while writing, resumable.
//!
//! [`fetch_into_slot`] performs the state machine's `Action::Download`. It is blocking; the
//! async driver runs it on a blocking thread and retries the errors that
//! [`DownloadError::is_transient`] says are worth retrying.
//!
//! The image never sits in memory: it streams through three [`CHUNK`]-sized buffers into the
//! slot and the hasher. The manifest's size caps what is accepted and its digest decides
//! whether the download succeeded.
//!
//! Three threads share the work so that network, CPU and disk overlap (docs/benchmarks.md):
//!
//! ```text
//! readahead thread          calling thread                       checkpoint thread
//! source ──read──▶ buffer ──▶ pwrite into slot, SHA-256 update ──▶ fdatasync slot,
//!          (≤ 3 buffers)      every checkpoint_every: mark ───────▶ write checkpoint
//! ```
//!
//! `cancel` is checked by the reader between reads and by the calling thread between chunks;
//! on cancellation or a transient failure the calling thread syncs and checkpoints what was
//! written, so a retry continues from there.
//!
//! Resume. Every [`FetchOptions::checkpoint_every`] bytes the slot is synced and then a
//! checkpoint file records how far the durable data goes:
//!
//! | field           | meaning                                                    |
//! |-----------------|------------------------------------------------------------|
//! | `sha256`        | the job's image digest (which image the slot is receiving) |
//! | `size`          | the job's image size                                       |
//! | `offset`        | bytes `0..offset` of the slot are written and synced       |
//! | `prefix_sha256` | SHA-256 of those bytes                                     |
//!
//! A later call for the same image re-reads and re-hashes the slot's first `offset` bytes
//! (restoring the streaming hasher and checking that the slot still holds them) and asks the
//! server for `Range: bytes=offset-`. A server that answers `200` gets the download started
//! over from 0. Architecture invariant: the checkpoint never claims more than the slot holds
//! durably, because the slot is synced before the checkpoint is written.

mod checkpoint;
mod http;
mod readahead;

use std::fs::File;
use std::io::{self, Read, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use swell_proto::Sha256Digest;

use crate::faults;
use crate::journal::JournalError;
use crate::slots::{self, SlotError, SlotPath, SlotWriter};
use crate::update::{Job, Source};
use checkpoint::Checkpoint;
use readahead::{Chunk, ReadAhead};

/// The checkpoint file's name in the data directory.
pub const CHECKPOINT_FILE: &str = "download.checkpoint.json";

/// Size of the one buffer an image streams through. 1 MiB amortises system calls and hasher
/// calls (measured in docs/benchmarks.md) and keeps the agent's peak memory far below its
/// 32 MiB budget.
pub const CHUNK: usize = 1 << 20;

/// Default distance between checkpoints. Each checkpoint costs an fdatasync of the slot and an
/// atomic file replacement; 8 MiB bounds both that cost and what a power cut loses.
pub const CHECKPOINT_EVERY: u64 = 8 << 20;

/// Default time to establish a TCP (and TLS) connection. Cellular links can take seconds.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time without any data before a download is abandoned as stalled. Long enough for
/// a congested link, short enough that a dead connection is retried within minutes.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Tunables of a fetch; [`Default`] gives production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed without receiving any data.
    pub stall_timeout: Duration,
    /// Bytes between checkpoints.
    pub checkpoint_every: u64,
    /// A PEM bundle of CA certificates to trust for HTTPS instead of the built-in Mozilla
    /// roots (a controller with a private CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            connect_timeout: CONNECT_TIMEOUT,
            stall_timeout: STALL_TIMEOUT,
            checkpoint_every: CHECKPOINT_EVERY,
            ca_file: None,
        }
    }
}

/// One image to fetch into one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Where the image comes from.
    pub source: Source,
    /// The manifest's size: exactly this many bytes are accepted.
    pub size: u64,
    /// The manifest's digest.
    pub sha256: Sha256Digest,
    /// The slot to write.
    pub slot: SlotPath,
    /// The running system's slot, never written.
    pub active: PathBuf,
    /// The checkpoint file (normally [`CHECKPOINT_FILE`] in the data directory).
    pub checkpoint: PathBuf,
    /// Timeouts and checkpoint spacing.
    pub options: FetchOptions,
}

impl FetchRequest {
    /// The request for `job`, writing `slot_path` (the path of `job.slot`) while `active`
    /// runs, with its checkpoint in `data_dir` and default options.
    pub fn for_job(job: &Job, slot_path: PathBuf, active: PathBuf, data_dir: &Path) -> Self {
        Self {
            source: job.source.clone(),
            size: job.size,
            sha256: job.sha256,
            slot: SlotPath::new(job.slot, slot_path),
            active,
            checkpoint: data_dir.join(CHECKPOINT_FILE),
            options: FetchOptions::default(),
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Writing or reading the slot failed (including "disk full" and "active slot").
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// The checkpoint could not be written or removed.
    #[error("download checkpoint: {0}")]
    Checkpoint(#[from] JournalError),
    /// A local source file could not be read.
    #[error("{op} {}: {source}", path.display())]
    File {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The URL is not one this agent can fetch.
    #[error("cannot fetch {url}: {detail}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// No connection could be made (refused, unresolvable, connect timeout).
    #[error("cannot reach {url}: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The cause.
        detail: String,
    },
    /// The server answered with an unexpected status.
    #[error("GET {url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code and reason.
        status: String,
        /// The status code.
        code: u16,
    },
    /// No data arrived for the stall timeout.
    #[error("download stalled: no data for {stall:?} from {url}")]
    Stalled {
        /// The URL.
        url: String,
        /// The stall timeout.
        stall: Duration,
    },
    /// The connection broke or the server closed it early.
    #[error(
        "download from {from} ended after {received} of the manifest's {size} bytes{}",
        paren(.detail)
    )]
    Truncated {
        /// The source.
        from: String,
        /// Bytes of the image received in total (including a resumed prefix).
        received: u64,
        /// The manifest's size.
        size: u64,
        /// The transport's explanation, if any.
        detail: Option<String>,
    },
    /// The source has more bytes than the manifest's size.
    #[error("{from} sent more than the manifest's {size} bytes")]
    Oversize {
        /// The source.
        from: String,
        /// The manifest's size.
        size: u64,
    },
    /// The source announces a length other than the manifest's size.
    #[error("{from} has {len} bytes, but the manifest says {size}")]
    WrongLength {
        /// The source.
        from: String,
        /// The length it announces.
        len: u64,
        /// The manifest's size.
        size: u64,
    },
    /// A `206 Partial Content` answer whose `Content-Range` does not match the request.
    #[error("{url} answered Range: bytes={offset}- with Content-Range {content_range:?}")]
    BadContentRange {
        /// The URL.
        url: String,
        /// The offset asked for.
        offset: u64,
        /// What the server sent (empty if nothing).
        content_range: String,
    },
    /// The streamed image does not have the manifest's digest.
    #[error("digest mismatch for {from}: expected SHA-256 {expected}, got {actual}")]
    DigestMismatch {
        /// The source.
        from: String,
        /// The manifest's digest.
        expected: Sha256Digest,
        /// The digest of what was received.
        actual: Sha256Digest,
    },
    /// TLS failed (certificate, handshake) or the CA file is unusable.
    #[error("TLS with {url}: {detail}")]
    Tls {
        /// The URL.
        url: String,
        /// The cause.
        detail: String,
    },
    /// The connection failed during the transfer.
    #[error("network error downloading {url}: {detail}")]
    Network {
        /// The URL.
        url: String,
        /// The cause.
        detail: String,
    },
    /// The server broke the HTTP protocol.
    #[error("HTTP protocol error from {url}: {detail}")]
    Protocol {
        /// The URL.
        url: String,
        /// The cause.
        detail: String,
    },
    /// The cancel flag was raised.
    #[error("download cancelled")]
    Cancelled,
}

fn paren(d: &Option<String>) -> String {
    d.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
}

impl DownloadError {
    /// Whether retrying the same fetch later may succeed: network trouble and server
    /// overload, not wrong content, full disks or refusals.
    pub fn is_transient(&self) -> bool {
        match self {
            DownloadError::Unreachable { .. }
            | DownloadError::Stalled { .. }
            | DownloadError::Truncated { .. }
            | DownloadError::Network { .. } => true,
            DownloadError::Status { code, .. } => *code >= 500 || *code == 408 || *code == 429,
            _ => false,
        }
    }
}

/// Streams `req.source` into `req.slot`, hashing while writing, resuming from a checkpoint
/// left by an earlier call for the same image. Returns once the slot holds the image, synced,
/// and its streamed digest matched. `progress(done, total)` is called after every chunk;
/// `cancel` is checked between chunks and between reads.
pub fn fetch_into_slot(
    req: &FetchRequest,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), DownloadError> {
    let writer = SlotWriter::open(&req.slot, &req.active, req.size)?;
    let mut t = Transfer {
        req,
        writer,
        hasher: Sha256::new(),
        checkpointed: 0,
    };
    t.resume()?;
    let result = match &req.source {
        Source::File(path) => t.fetch_file(path, cancel, progress),
        Source::Url(url) => t.fetch_url(url, cancel, progress),
    };
    match result {
        Ok(()) => t.finish(),
        Err(Failure::AfterSync(e)) => {
            if e.is_transient() || matches!(e, DownloadError::Cancelled) {
                // Keep what arrived: a retry continues from here. Failing to record it only
                // costs a re-download, so the original error is the one to report.
                let _ = t.checkpoint();
            }
            Err(e)
        }
        Err(Failure::Unsynced(e)) => Err(e),
    }
}

/// A failed transfer, and whether the slot's state is known well enough to checkpoint.
enum Failure {
    /// Every background sync succeeded: what was written may be synced and checkpointed.
    AfterSync(DownloadError),
    /// A sync failed or the transfer did not start; nothing more is to be recorded.
    Unsynced(DownloadError),
}

impl From<DownloadError> for Failure {
    fn from(e: DownloadError) -> Self {
        Failure::Unsynced(e)
    }
}

/// One fetch in progress: the slot writer, the streaming hash and the checkpoint position.
struct Transfer<'a> {
    req: &'a FetchRequest,
    writer: SlotWriter,
    hasher: Sha256,
    /// The offset of the last checkpoint asked for or loaded.
    checkpointed: u64,
}

impl Transfer<'_> {
    /// Continues from a checkpoint for the same image whose prefix the slot still holds;
    /// otherwise starts from 0.
    fn resume(&mut self) -> Result<(), DownloadError> {
        let Some(cp) = checkpoint::read(&self.req.checkpoint) else {
            return Ok(());
        };
        if cp.sha256 != self.req.sha256
            || cp.size != self.req.size
            || cp.offset == 0
            || cp.offset >= self.req.size
        {
            return Ok(());
        }
        let mut hasher = Sha256::new();
        match slots::hash_prefix(&self.req.slot, cp.offset, &mut hasher) {
            Ok(()) => {}
            Err(SlotError::ShortRead { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if digest(hasher.clone()) != cp.prefix_sha256 {
            // The slot was written since: its prefix is not the one checkpointed.
            return Ok(());
        }
        self.hasher = hasher;
        self.writer.set_offset(cp.offset);
        self.checkpointed = cp.offset;
        Ok(())
    }

    fn fetch_file(
        &mut self,
        path: &Path,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), Failure> {
        let from = format!("source file {}", path.display());
        let file_err = |op: &'static str| {
            let path = path.to_path_buf();
            move |source| DownloadError::File { op, path, source }
        };
        let size = self.req.size;
        let mut file = File::open(path).map_err(file_err("opening"))?;
        let len = file.metadata().map_err(file_err("inspecting"))?.len();
        if len > size {
            return Err(DownloadError::Oversize { from, size }.into());
        }
        if len < size {
            return Err(DownloadError::WrongLength { from, len, size }.into());
        }
        file.seek(SeekFrom::Start(self.writer.offset()))
            .map_err(file_err("seeking in"))?;
        self.stream(file, &from, cancel, progress, &|source| {
            DownloadError::File {
                op: "reading",
                path: path.to_path_buf(),
                source,
            }
        })
    }

    fn fetch_url(
        &mut self,
        url: &str,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), Failure> {
        let options = &self.req.options;
        let opened = http::open(url, self.writer.offset(), self.req.size, options)
            .map_err(Failure::AfterSync)?;
        if opened.from_start {
            // The server ignored Range and sends the whole image: start over.
            self.hasher = Sha256::new();
            self.writer.set_offset(0);
            self.checkpointed = 0;
        }
        let (stall, size) = (options.stall_timeout, self.req.size);
        let from = format!("server {url}");
        self.stream(opened.body, &from, cancel, progress, &|e| {
            http::classify(url, stall, size, ureq::Error::from(e))
        })
    }

    /// Copies `source` into the slot and the hasher until it ends, with the reads on one
    /// thread and checkpoints on another (see [`readahead`] and [`checkpoint::Syncer`]).
    fn stream(
        &mut self,
        source: impl Read + Send,
        from: &str,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64, u64),
        read_error: &dyn Fn(io::Error) -> DownloadError,
    ) -> Result<(), Failure> {
        let sync = self.writer.sync_handle().map_err(DownloadError::from)?;
        thread::scope(|scope| {
            let chunks = ReadAhead::spawn(scope, source, cancel);
            let mut syncer = checkpoint::Syncer::spawn(scope, sync, self.req.checkpoint.clone());
            let result = self.pump(&chunks, &mut syncer, from, cancel, progress, read_error);
            drop(chunks);
            match (result, syncer.finish()) {
                (Ok(()), Ok(())) => Ok(()),
                (Err(e), Ok(())) => Err(Failure::AfterSync(e)),
                (_, Err(sync_failure)) => Err(Failure::Unsynced(sync_failure)),
            }
        })
    }

    fn pump(
        &mut self,
        chunks: &ReadAhead,
        syncer: &mut checkpoint::Syncer<'_>,
        from: &str,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64, u64),
        read_error: &dyn Fn(io::Error) -> DownloadError,
    ) -> Result<(), DownloadError> {
        let size = self.req.size;
        progress(self.writer.offset(), size);
        loop {
            let chunk = chunks.next();
            if cancel.load(Ordering::Relaxed) {
                return Err(DownloadError::Cancelled);
            }
            let Some(Chunk { buf, len, failure }) = chunk else {
                return Err(DownloadError::Cancelled);
            };
            if self.writer.offset() + len as u64 > size {
                return Err(DownloadError::Oversize {
                    from: from.to_string(),
                    size,
                });
            }
            let data = &buf[..len];
            self.writer.write(data)?;
            self.hasher.update(data);
            let ended = len < buf.len();
            chunks.recycle(buf);
            let offset = self.writer.offset();
            progress(offset, size);
            if let Some(e) = failure {
                return Err(read_error(e).with_received(offset));
            }
            if ended {
                if offset < size {
                    let from = from.to_string();
                    return Err(DownloadError::Truncated {
                        from,
                        received: offset,
                        size,
                        detail: None,
                    });
                }
                return Ok(());
            }
            if offset - self.checkpointed >= self.req.options.checkpoint_every && offset < size {
                syncer.mark(self.checkpoint_at(offset))?;
                self.checkpointed = offset;
            }
        }
    }

    fn checkpoint_at(&self, offset: u64) -> Checkpoint {
        Checkpoint {
            sha256: self.req.sha256,
            size: self.req.size,
            offset,
            prefix_sha256: digest(self.hasher.clone()),
        }
    }

    /// Syncs the slot, then records what was written, on this thread.
    fn checkpoint(&mut self) -> Result<(), DownloadError> {
        let offset = self.writer.offset();
        if offset == self.checkpointed || offset >= self.req.size {
            return Ok(());
        }
        self.writer.sync()?;
        faults::durable_write("slot data");
        checkpoint::write(&self.req.checkpoint, &self.checkpoint_at(offset))?;
        self.checkpointed = offset;
        Ok(())
    }

    /// Checks the streamed digest, gives a file slot its exact length, syncs, and removes the
    /// checkpoint.
    fn finish(self) -> Result<(), DownloadError> {
        let actual = digest(self.hasher);
        if actual != self.req.sha256 {
            // What the slot holds is wrong somewhere: a retry must not resume from it.
            let _ = checkpoint::remove(&self.req.checkpoint);
            let from = match &self.req.source {
                Source::Url(u) => format!("server {u}"),
                Source::File(p) => format!("source file {}", p.display()),
            };
            return Err(DownloadError::DigestMismatch {
                from,
                expected: self.req.sha256,
                actual,
            });
        }
        self.writer.finish(self.req.size)?;
        faults::durable_write("slot data");
        checkpoint::remove(&self.req.checkpoint)?;
        Ok(())
    }
}

fn digest(hasher: Sha256) -> Sha256Digest {
    Sha256Digest::from_bytes(hasher.finalize().into())
}

impl DownloadError {
    /// Fills in how much of the image had arrived when a transfer was cut short.
    fn with_received(self, received: u64) -> Self {
        match self {
            DownloadError::Truncated {
                from, size, detail, ..
            } => DownloadError::Truncated {
                from,
                received,
                size,
                detail,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only network trouble and overload are worth a retry.
    #[test]
    fn transient_errors() {
        let url = String::from("http://x/");
        let status = |code| DownloadError::Status {
            url: url.clone(),
            status: String::new(),
            code,
        };
        assert!(status(503).is_transient() && status(429).is_transient());
        assert!(!status(404).is_transient());
        let stall = Duration::from_secs(1);
        assert!(
            DownloadError::Stalled {
                url: url.clone(),
                stall
            }
            .is_transient()
        );
        assert!(
            !DownloadError::Oversize {
                from: url.clone(),
                size: 1
            }
            .is_transient()
        );
        assert!(!DownloadError::Cancelled.is_transient());
    }
}
