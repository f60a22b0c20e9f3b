//! A serial line to a child MCU, as the `embedded_io` byte stream the firmware's transfer
//! `Sender` speaks over.
//!
//! The line is opened as a file (`O_NOCTTY`, so it never becomes the agent's controlling
//! terminal; `O_NONBLOCK`, so opening a UART does not wait for a modem carrier) and put in raw
//! mode: no echo, no line editing, no translation of CR or NL, 8 data bits, receiver on, modem
//! lines ignored (`CLOCAL`). The speed is set only when the configuration names one. Input
//! left over from before (answers to a killed agent's requests) is discarded.
//!
//! A read waits at most the answer timeout and then fails with `ErrorKind::TimedOut`, which
//! the `Sender` takes as a lost answer and resends. Every wait is cut into slices of at most
//! [`CANCEL_SLICE`], so a shutdown is seen promptly.

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use embedded_io::ErrorKind;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{Mode, OFlags};
use rustix::termios::{self, ControlModes, OptionalActions, QueueSelector};

/// Longest single wait on the line: how long a shutdown may go unnoticed.
pub const CANCEL_SLICE: Duration = Duration::from_millis(100);

/// Why the line failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A system call on the line failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The line.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Nothing arrived within the answer timeout.
    #[error("no answer on {} within {timeout:?}", path.display())]
    TimedOut {
        /// The line.
        path: PathBuf,
        /// The answer timeout.
        timeout: Duration,
    },
    /// The agent is shutting down.
    #[error("cancelled")]
    Cancelled,
}

impl embedded_io::Error for LinkError {
    fn kind(&self) -> ErrorKind {
        match self {
            LinkError::Io { .. } => ErrorKind::Other,
            LinkError::TimedOut { .. } => ErrorKind::TimedOut,
            LinkError::Cancelled => ErrorKind::Interrupted,
        }
    }
}

/// An open serial line.
#[derive(Debug)]
pub struct SerialPort {
    file: File,
    path: PathBuf,
    timeout: Duration,
    cancel: Arc<AtomicBool>,
}

impl SerialPort {
    /// Opens `path` in raw mode at `baud` (or the line's current speed), with `timeout` for
    /// each read, giving up when `cancel` is raised.
    pub fn open(
        path: &Path,
        baud: Option<u32>,
        timeout: Duration,
        cancel: Arc<AtomicBool>,
    ) -> Result<Self, LinkError> {
        let io = |op: &'static str| {
            let path = path.to_path_buf();
            move |e: rustix::io::Errno| LinkError::Io {
                op,
                path,
                source: e.into(),
            }
        };
        let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(io("opening"))?;
        let mut t = termios::tcgetattr(&fd).map_err(io("reading the line settings of"))?;
        t.make_raw();
        t.control_modes |= ControlModes::CLOCAL | ControlModes::CREAD;
        if let Some(baud) = baud {
            t.set_speed(baud).map_err(io("setting the speed of"))?;
        }
        termios::tcsetattr(&fd, OptionalActions::Now, &t).map_err(io("configuring"))?;
        termios::tcflush(&fd, QueueSelector::IFlush).map_err(io("flushing the input of"))?;
        Ok(Self {
            file: File::from(fd),
            path: path.to_path_buf(),
            timeout,
            cancel,
        })
    }

    fn err(&self, op: &'static str, source: io::Error) -> LinkError {
        LinkError::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }

    /// Waits until the line is ready for `flags` or `until` passes; `Ok(false)` on timeout.
    fn wait(&self, flags: PollFlags, until: Instant) -> Result<bool, LinkError> {
        loop {
            if self.cancel.load(Ordering::SeqCst) {
                return Err(LinkError::Cancelled);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let slice = Timespec::try_from(left.min(CANCEL_SLICE)).unwrap_or(Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            });
            let mut fds = [PollFd::new(&self.file, flags)];
            match poll(&mut fds, Some(&slice)) {
                Ok(0) => {}
                // Readable, writable, or an error or hang-up the next call will report.
                Ok(_) => return Ok(true),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(self.err("waiting on", e.into())),
            }
        }
    }
}

impl embedded_io::ErrorType for SerialPort {
    type Error = LinkError;
}

impl embedded_io::Read for SerialPort {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let until = Instant::now() + self.timeout;
        loop {
            match self.file.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.err("reading", e)),
            }
            if !self.wait(PollFlags::IN, until)? {
                return Err(LinkError::TimedOut {
                    path: self.path.clone(),
                    timeout: self.timeout,
                });
            }
        }
    }
}

impl embedded_io::Write for SerialPort {
    fn write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let until = Instant::now() + self.timeout;
        loop {
            match self.file.write(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.err("writing", e)),
            }
            if !self.wait(PollFlags::OUT, until)? {
                return Err(LinkError::TimedOut {
                    path: self.path.clone(),
                    timeout: self.timeout,
                });
            }
        }
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        Ok(())
    }
}
