//! Partition-relative flash access with checked offset arithmetic.
//!
//! Every address the crate computes goes through [`Region`], which refuses an access that
//! leaves the partition, so a corrupt length can never make the core touch another partition.

use embedded_storage::nor_flash::{NorFlash, NorFlashError, ReadNorFlash};

use crate::error::{Error, FlashOp};

/// A partition: a range of the flash, given by its start and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Absolute start address.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

impl Region {
    /// The region `[offset, offset + len)`.
    pub const fn new(offset: u32, len: u32) -> Self {
        Self { offset, len }
    }

    /// The absolute end address (exclusive), if it does not overflow.
    pub fn end(&self) -> Option<u32> {
        self.offset.checked_add(self.len)
    }

    /// The sub-region `[rel, rel + len)` of this one.
    pub fn sub(&self, rel: u32, len: u32) -> Result<Region, Error> {
        let oob = Error::OutOfBounds {
            what: "sub-region",
            offset: rel,
            len: usize::try_from(len).unwrap_or(usize::MAX),
        };
        let end = rel.checked_add(len).ok_or(oob)?;
        if end > self.len {
            return Err(oob);
        }
        Ok(Region::new(self.offset + rel, len))
    }

    /// The absolute address of `[rel, rel + len)`, checked against the region's bounds.
    pub fn addr(&self, what: &'static str, rel: u32, len: usize) -> Result<u32, Error> {
        let oob = Error::OutOfBounds {
            what,
            offset: rel,
            len,
        };
        let len32 = u32::try_from(len).map_err(|_| oob)?;
        let end = rel.checked_add(len32).ok_or(oob)?;
        if end > self.len {
            return Err(oob);
        }
        // Cannot overflow: `rel + len <= self.len` and `offset + len` was checked by the layout.
        Ok(self.offset + rel)
    }
}

fn fault<E: NorFlashError>(op: FlashOp, addr: u32, e: &E) -> Error {
    Error::Flash {
        op,
        addr,
        kind: e.kind(),
    }
}

/// Reads `buf.len()` bytes at `rel` in `region`.
pub(crate) fn read<F: ReadNorFlash>(
    flash: &mut F,
    region: Region,
    rel: u32,
    buf: &mut [u8],
) -> Result<(), Error> {
    let addr = region.addr("read", rel, buf.len())?;
    flash
        .read(addr, buf)
        .map_err(|e| fault(FlashOp::Read, addr, &e))
}

/// Programs `data` at `rel` in `region` (which the caller knows to be erased).
pub(crate) fn write<F: NorFlash>(
    flash: &mut F,
    region: Region,
    rel: u32,
    data: &[u8],
) -> Result<(), Error> {
    let addr = region.addr("write", rel, data.len())?;
    flash
        .write(addr, data)
        .map_err(|e| fault(FlashOp::Write, addr, &e))
}

/// Erases `[rel, rel + len)` in `region`; both ends are erase-aligned by construction.
pub(crate) fn erase<F: NorFlash>(
    flash: &mut F,
    region: Region,
    rel: u32,
    len: u32,
) -> Result<(), Error> {
    let from = region.addr("erase", rel, usize::try_from(len).unwrap_or(usize::MAX))?;
    flash
        .erase(from, from + len)
        .map_err(|e| fault(FlashOp::Erase, from, &e))
}

/// `n` as a `u32`, or an out-of-bounds error naming `what`.
pub(crate) fn to_u32(what: &'static str, n: usize) -> Result<u32, Error> {
    u32::try_from(n).map_err(|_| Error::OutOfBounds {
        what,
        offset: 0,
        len: n,
    })
}

/// `n` as a `usize` (lossless on every target with 32-bit or wider pointers, which is every
/// target with `embedded-storage`'s `u32` addresses worth supporting).
pub(crate) fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
