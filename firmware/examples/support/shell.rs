//! What both size examples share: a RAM-backed NOR flash (no simulation features, so it
//! adds little code) and stdin/stdout as the byte stream.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each example uses part of the shell"
)]

use embedded_io::{ErrorKind, ErrorType};
use embedded_storage::nor_flash::{
    ErrorType as FlashErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash,
};

/// 131 pages of 4 KiB: ACTIVE 64, DFU 65, STATE 2.
pub const CAPACITY: usize = 131 * 4096;

/// Called after each page copied; a real board toggles its status LED here.
pub fn blink() {}

/// A flash in RAM with the usual checks and nothing more.
pub struct RamFlash(Vec<u8>);

impl RamFlash {
    pub fn new(capacity: usize) -> Self {
        Self(vec![0xFF; capacity])
    }

    fn range(&self, offset: u32, len: usize) -> Result<core::ops::Range<usize>, NorFlashErrorKind> {
        let start = usize::try_from(offset).map_err(|_| NorFlashErrorKind::OutOfBounds)?;
        let end = start
            .checked_add(len)
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        if end > self.0.len() {
            return Err(NorFlashErrorKind::OutOfBounds);
        }
        Ok(start..end)
    }
}

impl FlashErrorType for RamFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let r = self.range(offset, bytes.len())?;
        bytes.copy_from_slice(&self.0[r]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.0.len()
    }
}

impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let len =
            usize::try_from(to.saturating_sub(from)).map_err(|_| NorFlashErrorKind::OutOfBounds)?;
        let r = self.range(from, len)?;
        self.0[r].fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let r = self.range(offset, bytes.len())?;
        for (cell, b) in self.0[r].iter_mut().zip(bytes) {
            *cell &= b;
        }
        Ok(())
    }
}

/// Standard input and output as one byte stream.
pub struct Stdio;

#[derive(Debug)]
pub struct IoError;

impl core::fmt::Display for IoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("stdio failed")
    }
}

impl core::error::Error for IoError {}

impl embedded_io::Error for IoError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

impl ErrorType for Stdio {
    type Error = IoError;
}

impl embedded_io::Read for Stdio {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        std::io::Read::read(&mut std::io::stdin(), buf).map_err(|_| IoError)
    }
}

impl embedded_io::Write for Stdio {
    fn write(&mut self, buf: &[u8]) -> Result<usize, IoError> {
        std::io::Write::write(&mut std::io::stdout(), buf).map_err(|_| IoError)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        std::io::Write::flush(&mut std::io::stdout()).map_err(|_| IoError)
    }
}
