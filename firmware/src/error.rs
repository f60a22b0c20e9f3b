//! The crate's error type. Every variant is `Copy` and carries no heap data, so errors can be
//! returned from the boot path and encoded into a transfer response.

use embedded_storage::nor_flash::NorFlashErrorKind;

use crate::image::ImageError;
use crate::layout::LayoutError;
use crate::state::Phase;

/// A flash operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashOp {
    /// A read.
    Read,
    /// A program (write).
    Write,
    /// A sector erase.
    Erase,
}

/// Why an update or boot step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The flash driver failed (on the simulator: also a power cut).
    #[error("flash {op:?} at {addr:#x} failed: {kind}")]
    Flash {
        /// The operation.
        op: FlashOp,
        /// The absolute flash address.
        addr: u32,
        /// What the driver reported.
        kind: NorFlashErrorKind,
    },
    /// An access fell outside its partition: a bug, or a header whose sizes lie.
    #[error("{what} at {offset:#x}+{len} is outside its partition")]
    OutOfBounds {
        /// Which access.
        what: &'static str,
        /// Offset within the partition.
        offset: u32,
        /// Length of the access.
        len: usize,
    },
    /// The layout does not fit the flash.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// An image or header was refused.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The STATE partition holds a record written for another layout.
    #[error("the STATE record was written for {found} ACTIVE pages, this layout has {expected}")]
    StateLayout {
        /// Pages in this layout.
        expected: u32,
        /// Pages in the record.
        found: u32,
    },
    /// The request does not fit the update's phase.
    #[error("{action} is not allowed while the update is {phase}")]
    NotAllowed {
        /// The phase.
        phase: Phase,
        /// What was asked.
        action: &'static str,
    },
    /// Image data arrived at an offset other than the next one expected.
    #[error("image data at offset {offset}, expected {expected}")]
    OutOfOrder {
        /// The offset received.
        offset: u32,
        /// The offset expected.
        expected: u32,
    },
    /// A chunk has the wrong length (only the last chunk may be short).
    #[error("a chunk of {len} bytes at offset {offset}; chunks are {chunk} bytes")]
    BadChunk {
        /// The chunk's offset.
        offset: u32,
        /// Its length.
        len: usize,
        /// The chunk size.
        chunk: usize,
    },
}
