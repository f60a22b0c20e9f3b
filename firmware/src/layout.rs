//! The flash layout: ACTIVE, DFU and STATE partitions, validated once at construction.
//!
//! | partition | size | holds |
//! |---|---|---|
//! | ACTIVE | N erase pages | the image the bootloader starts (header, then the application) |
//! | DFU | at least N + 1 pages | the incoming image; during a swap the extra page is the scratch page, afterwards pages 1..=N hold the previous image |
//! | STATE | 2 banks of whole pages | the update cycle record and its progress markers (see [`crate::state`]) |

use embedded_storage::nor_flash::NorFlash;

use crate::PAGE_BUF;
pub use crate::flash::Region;

/// Why a layout does not fit a flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The flash's geometry is not one the core supports.
    #[error(
        "unsupported flash geometry: read {read}, write {write}, erase {erase} bytes (need \
         read dividing 4 and write, write dividing 256, erase a multiple of 256)"
    )]
    Geometry {
        /// `READ_SIZE`.
        read: usize,
        /// `WRITE_SIZE`.
        write: usize,
        /// `ERASE_SIZE`.
        erase: usize,
    },
    /// A partition is empty, unaligned, or past the end of the flash.
    #[error(
        "partition {name} ({offset:#x}+{len:#x}) is empty, not erase-aligned, or past the end of the flash"
    )]
    Partition {
        /// Which partition.
        name: &'static str,
        /// Its start.
        offset: u32,
        /// Its length.
        len: u32,
    },
    /// Two partitions overlap.
    #[error("partitions {a} and {b} overlap")]
    Overlap {
        /// One partition.
        a: &'static str,
        /// The other.
        b: &'static str,
    },
    /// DFU is smaller than ACTIVE plus the scratch page.
    #[error("DFU has {dfu} bytes; it needs ACTIVE ({active}) plus one erase page")]
    DfuTooSmall {
        /// DFU's length.
        dfu: u32,
        /// ACTIVE's length.
        active: u32,
    },
    /// STATE cannot hold two banks each with the record and every progress marker.
    #[error("STATE has {state} bytes; it needs two erase-aligned banks of at least {bank} bytes")]
    StateTooSmall {
        /// STATE's length.
        state: u32,
        /// Bytes one bank needs.
        bank: u32,
    },
}

/// A validated layout. The only constructor is [`Layout::new`], so code holding a `Layout` can
/// rely on every invariant listed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    active: Region,
    dfu: Region,
    state: Region,
    write: u32,
    erase: u32,
}

impl Layout {
    /// Checks the partitions against `flash`: each erase-aligned, non-empty and inside the
    /// flash; no overlap; DFU at least ACTIVE plus one page; STATE two banks large enough for
    /// the cycle record and all progress markers of an ACTIVE this size; and a geometry the
    /// core supports (read size dividing 4 and the write size, write size dividing
    /// [`PAGE_BUF`], erase size a multiple of it).
    pub fn new<F: NorFlash>(
        flash: &F,
        active: Region,
        dfu: Region,
        state: Region,
    ) -> Result<Self, LayoutError> {
        let geometry = LayoutError::Geometry {
            read: F::READ_SIZE,
            write: F::WRITE_SIZE,
            erase: F::ERASE_SIZE,
        };
        let ok_geometry = F::READ_SIZE > 0
            && 4 % F::READ_SIZE == 0
            && F::WRITE_SIZE > 0
            && F::WRITE_SIZE % F::READ_SIZE == 0
            && PAGE_BUF.is_multiple_of(F::WRITE_SIZE)
            && F::ERASE_SIZE > 0
            && F::ERASE_SIZE.is_multiple_of(PAGE_BUF);
        if !ok_geometry {
            return Err(geometry);
        }
        let write = u32::try_from(F::WRITE_SIZE).map_err(|_| geometry)?;
        let erase = u32::try_from(F::ERASE_SIZE).map_err(|_| geometry)?;
        let capacity = u32::try_from(flash.capacity()).unwrap_or(u32::MAX);
        let parts = [("ACTIVE", active), ("DFU", dfu), ("STATE", state)];
        for (name, r) in parts {
            let fits = r.end().is_some_and(|end| end <= capacity);
            if r.len == 0
                || !r.offset.is_multiple_of(erase)
                || !r.len.is_multiple_of(erase)
                || !fits
            {
                return Err(LayoutError::Partition {
                    name,
                    offset: r.offset,
                    len: r.len,
                });
            }
        }
        for (i, (a, ra)) in parts.iter().enumerate() {
            for (b, rb) in &parts[i + 1..] {
                // Both ends exist: checked just above.
                let (ea, eb) = (ra.offset + ra.len, rb.offset + rb.len);
                if ra.offset < eb && rb.offset < ea {
                    return Err(LayoutError::Overlap { a, b });
                }
            }
        }
        if active
            .len
            .checked_add(erase)
            .is_none_or(|need| dfu.len < need)
        {
            return Err(LayoutError::DfuTooSmall {
                dfu: dfu.len,
                active: active.len,
            });
        }
        let pages = active.len / erase;
        let bank = crate::state::bank_bytes_needed(pages, write).unwrap_or(u32::MAX);
        let half = state.len / 2;
        if !state.len.is_multiple_of(2 * erase) || half < bank {
            return Err(LayoutError::StateTooSmall {
                state: state.len,
                bank,
            });
        }
        Ok(Self {
            active,
            dfu,
            state,
            write,
            erase,
        })
    }

    /// The ACTIVE partition.
    pub fn active(&self) -> Region {
        self.active
    }

    /// The DFU partition.
    pub fn dfu(&self) -> Region {
        self.dfu
    }

    /// The STATE partition.
    pub fn state(&self) -> Region {
        self.state
    }

    /// The erase page size in bytes.
    pub fn page(&self) -> u32 {
        self.erase
    }

    /// The write granularity in bytes.
    pub fn write_size(&self) -> u32 {
        self.write
    }

    /// Pages in ACTIVE (N).
    pub fn active_pages(&self) -> u32 {
        self.active.len / self.erase
    }

    /// The two STATE banks.
    pub fn banks(&self) -> [Region; 2] {
        let half = self.state.len / 2;
        [
            Region::new(self.state.offset, half),
            Region::new(self.state.offset + half, half),
        ]
    }

    /// Pages needed to hold `bytes`.
    pub fn pages_for(&self, bytes: u32) -> u32 {
        bytes.div_ceil(self.erase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimFlash;

    const K4: u32 = 4096;

    fn flash() -> SimFlash<4, 4096> {
        SimFlash::new(16 * 4096)
    }

    #[test]
    fn accepts_a_sound_layout() {
        let l = Layout::new(
            &flash(),
            Region::new(0, 6 * K4),
            Region::new(6 * K4, 7 * K4),
            Region::new(13 * K4, 2 * K4),
        )
        .unwrap();
        assert_eq!(l.active_pages(), 6);
        assert_eq!(l.banks()[1], Region::new(14 * K4, K4));
    }

    #[test]
    fn refuses_unsound_layouts() {
        let f = flash();
        let ok_dfu = Region::new(6 * K4, 7 * K4);
        let ok_state = Region::new(13 * K4, 2 * K4);
        let cases = [
            (Region::new(100, 6 * K4), ok_dfu, ok_state),
            (Region::new(0, 6 * K4 + 4), ok_dfu, ok_state),
            (Region::new(0, 0), ok_dfu, ok_state),
            (
                Region::new(0, 6 * K4),
                Region::new(6 * K4, 6 * K4),
                ok_state,
            ),
            (Region::new(0, 7 * K4), ok_dfu, ok_state),
            (Region::new(0, 6 * K4), ok_dfu, Region::new(13 * K4, K4)),
            (Region::new(0, 6 * K4), ok_dfu, Region::new(13 * K4, 4 * K4)),
            (
                Region::new(0, 6 * K4),
                ok_dfu,
                Region::new(u32::MAX - K4 + 1, 2 * K4),
            ),
        ];
        for (a, d, s) in cases {
            assert!(Layout::new(&f, a, d, s).is_err(), "{a:?} {d:?} {s:?}");
        }
    }

    #[test]
    fn refuses_a_state_bank_too_small_for_the_markers() {
        // 1 MiB of ACTIVE in 4 KiB pages needs more progress markers than a 4 KiB bank holds.
        let f: SimFlash<16, 4096> = SimFlash::new(600 * 4096);
        let r = Layout::new(
            &f,
            Region::new(0, 256 * K4),
            Region::new(256 * K4, 257 * K4),
            Region::new(513 * K4, 2 * K4),
        );
        assert!(matches!(r, Err(LayoutError::StateTooSmall { .. })), "{r:?}");
    }
}
