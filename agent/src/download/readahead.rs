//! Reading the source on its own thread, so that receiving the next chunk overlaps hashing and
//! writing the current one (on a 2-core device that is the difference between the two costs
//! adding up and overlapping).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::Scope;

use super::CHUNK;

/// Buffers in circulation: one being filled, one being written, one queued. Bounds memory to
/// `BUFFERS * CHUNK`.
const BUFFERS: usize = 3;

/// A filled buffer: `len` valid bytes, then the read failure that ended filling, if any. A
/// chunk shorter than [`CHUNK`] without a failure means the source ended.
pub(super) struct Chunk {
    pub(super) buf: Vec<u8>,
    pub(super) len: usize,
    pub(super) failure: Option<io::Error>,
}

/// The consuming end: filled chunks in order; give buffers back with [`ReadAhead::recycle`].
pub(super) struct ReadAhead {
    full: Receiver<Chunk>,
    empty: Sender<Vec<u8>>,
}

impl ReadAhead {
    /// Starts reading `source` on a thread of `scope`. The thread stops after the source ends
    /// or fails, when `cancel` is raised, or when this `ReadAhead` is dropped.
    pub(super) fn spawn<'scope, R: Read + Send + 'scope>(
        scope: &'scope Scope<'scope, '_>,
        mut source: R,
        cancel: &'scope AtomicBool,
    ) -> Self {
        let (full_tx, full) = sync_channel::<Chunk>(1);
        let (empty, empty_rx) = channel::<Vec<u8>>();
        for _ in 0..BUFFERS {
            // Cannot fail: the receiver is alive in this scope.
            let _ = empty.send(vec![0u8; CHUNK]);
        }
        scope.spawn(move || reader(&mut source, &full_tx, &empty_rx, cancel));
        Self { full, empty }
    }

    /// The next chunk; `None` once the reader has stopped (cancelled).
    pub(super) fn next(&self) -> Option<Chunk> {
        self.full.recv().ok()
    }

    /// Returns a buffer for reuse.
    pub(super) fn recycle(&self, buf: Vec<u8>) {
        // The reader may have stopped already; then the buffer is simply freed.
        let _ = self.empty.send(buf);
    }
}

fn reader(
    source: &mut dyn Read,
    full: &SyncSender<Chunk>,
    empty: &Receiver<Vec<u8>>,
    cancel: &AtomicBool,
) {
    while let Ok(mut buf) = empty.recv() {
        let (len, failure) = fill(source, &mut buf, cancel);
        let last = len < buf.len() || failure.is_some();
        if full.send(Chunk { buf, len, failure }).is_err() || last {
            return;
        }
    }
}

/// Reads until `buf` is full, the source ends, a read fails or `cancel` is raised; returns
/// how many bytes were read and the failure, so that bytes read before it are not lost.
pub(super) fn fill(
    source: &mut dyn Read,
    buf: &mut [u8],
    cancel: &AtomicBool,
) -> (usize, Option<io::Error>) {
    let mut n = 0;
    while n < buf.len() && !cancel.load(Ordering::Relaxed) {
        match source.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}
