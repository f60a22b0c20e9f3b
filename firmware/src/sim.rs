//! A simulated NOR flash for tests and host processes, in the spirit of MCUboot's `simflash`
//! and embassy's `MemFlash`, but stricter about what real parts forbid.
//!
//! **Write model: each write unit is programmed at most once per erase.** A write to a unit
//! that was written since its sector's last erase fails with [`SimError::NotErased`], even if
//! it would only clear bits. Classic NOR allows clearing bits again, but the parts most MCUs
//! carry today (STM32 L4/G4/H7/U5 with ECC, nRF52's limited `nWRITE`) do not; code that passes
//! this model passes on both.
//!
//! Alignment is enforced (`WRITE` for writes, `ERASE` for erases, reads are byte-granular),
//! every write call and every sector erase counts as one operation, and
//! [`SimFlash::cut_after`] cuts the power after `n` operations: operation `n + 1` is torn and
//! every later one fails with [`SimError::PowerLost`] until [`SimFlash::power_on`].
//!
//! **Torn operations.** A torn write programs a random prefix of its units; the unit where the
//! power went gets a random subset of the bits it was clearing, at least one when it was
//! clearing any (so it never passes for erased), and counts as written. A torn erase erases a
//! random prefix of the sector and leaves the rest as garbage: the old contents with random
//! bits set, counted as written. Either may also turn out complete, or (one time in four)
//! not started at all.

use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// A small deterministic RNG (xorshift64*), so every torn operation replays from its seed.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator from `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }
}

/// Why a simulated operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimError {
    /// Offset or length not aligned to the operation's granularity.
    NotAligned {
        /// The offset.
        offset: u32,
    },
    /// Past the end of the flash.
    OutOfBounds {
        /// The offset.
        offset: u32,
    },
    /// A write to a unit already written since its last erase.
    NotErased {
        /// The unit's offset.
        offset: u32,
    },
    /// The power is off (cut by [`SimFlash::cut_after`]).
    PowerLost,
}

impl NorFlashError for SimError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            SimError::NotAligned { .. } => NorFlashErrorKind::NotAligned,
            SimError::OutOfBounds { .. } => NorFlashErrorKind::OutOfBounds,
            SimError::NotErased { .. } | SimError::PowerLost => NorFlashErrorKind::Other,
        }
    }
}

/// What the torn operation was, for test diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Torn {
    /// A write at `offset` of which `done` of `units` units completed.
    Write {
        /// Start of the write.
        offset: u32,
        /// Units fully written.
        done: usize,
        /// Units asked for.
        units: usize,
    },
    /// An erase of the sector at `offset` of which `done` units were erased.
    Erase {
        /// Start of the sector.
        offset: u32,
        /// Units erased before the garbage.
        done: usize,
    },
}

/// A simulated NOR flash of `WRITE`-byte write units and `ERASE`-byte sectors, erased to
/// `0xFF`.
#[derive(Debug, Clone)]
pub struct SimFlash<const WRITE: usize, const ERASE: usize> {
    data: Vec<u8>,
    written: Vec<bool>,
    erases: Vec<u32>,
    ops: u64,
    writes: u64,
    cut: Option<(u64, SimRng)>,
    powered: bool,
    torn: Option<Torn>,
}

impl<const WRITE: usize, const ERASE: usize> SimFlash<WRITE, ERASE> {
    /// An erased flash of `capacity` bytes (a whole number of sectors).
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity.is_multiple_of(ERASE) && ERASE.is_multiple_of(WRITE),
            "capacity must be whole sectors"
        );
        Self {
            data: vec![0xFF; capacity],
            written: vec![false; capacity / WRITE],
            erases: vec![0; capacity / ERASE],
            ops: 0,
            writes: 0,
            cut: None,
            powered: true,
            torn: None,
        }
    }

    /// Programs `bytes` at `offset` as a factory programmer would: not counted, not cut.
    pub fn program(&mut self, offset: usize, bytes: &[u8]) {
        self.data[offset..offset + bytes.len()].copy_from_slice(bytes);
        for unit in offset / WRITE..(offset + bytes.len()).div_ceil(WRITE) {
            self.written[unit] = true;
        }
    }

    /// XORs `mask` into the byte at `offset` without counting an operation: flash decay, or
    /// someone writing where they should not.
    pub fn flip(&mut self, offset: usize, mask: u8) {
        self.data[offset] ^= mask;
    }

    /// The raw contents.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Operations (write calls and sector erases) so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Erases per sector so far.
    pub fn erase_counts(&self) -> &[u32] {
        &self.erases
    }

    /// Clears the operation and erase counters.
    pub fn reset_counters(&mut self) {
        self.ops = 0;
        self.writes = 0;
        self.erases.iter_mut().for_each(|e| *e = 0);
    }

    /// Cuts the power after `n` more operations: operation `n + 1` from now is torn (as `seed`
    /// decides) and everything after it fails.
    pub fn cut_after(&mut self, n: u64, seed: u64) {
        self.cut = Some((self.ops + n, SimRng::new(seed)));
    }

    /// Disarms a pending cut.
    pub fn disarm(&mut self) {
        self.cut = None;
    }

    /// Restores power (a reset); a pending cut stays disarmed.
    pub fn power_on(&mut self) {
        self.powered = true;
        self.cut = None;
        self.torn = None;
    }

    /// Whether the power is on.
    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// The operation the last cut tore.
    pub fn torn(&self) -> Option<Torn> {
        self.torn
    }

    /// Counts an operation; returns the RNG if this is the one to tear.
    fn begin_op(&mut self) -> Result<Option<SimRng>, SimError> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        self.ops += 1;
        match &self.cut {
            Some((at, rng)) if self.ops > *at => {
                let rng = rng.clone();
                self.cut = None;
                self.powered = false;
                Ok(Some(rng))
            }
            _ => Ok(None),
        }
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<usize, SimError> {
        let start = usize::try_from(offset).map_err(|_| SimError::OutOfBounds { offset })?;
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(SimError::NotAligned { offset });
        }
        match start.checked_add(len) {
            Some(end) if end <= self.data.len() => Ok(start),
            _ => Err(SimError::OutOfBounds { offset }),
        }
    }

    fn erase_sector(&mut self, start: usize, torn: Option<&mut SimRng>) {
        let sector = start / ERASE;
        self.erases[sector] += 1;
        let units = ERASE / WRITE;
        let done = match torn {
            None => units,
            Some(rng) => {
                if rng.below(4) == 0 {
                    // The power went just before the erase began.
                    self.torn = Some(Torn::Erase {
                        offset: u32::try_from(start).unwrap_or(u32::MAX),
                        done: 0,
                    });
                    return;
                }
                let done = usize::try_from(rng.below(units as u64 + 1)).unwrap_or(units);
                for unit in done..units {
                    let at = start + unit * WRITE;
                    for b in &mut self.data[at..at + WRITE] {
                        *b |= rng.byte();
                    }
                    self.written[at / WRITE] = true;
                }
                self.torn = Some(Torn::Erase {
                    offset: u32::try_from(start).unwrap_or(u32::MAX),
                    done,
                });
                done
            }
        };
        for unit in 0..done {
            let at = start + unit * WRITE;
            self.data[at..at + WRITE].fill(0xFF);
            self.written[at / WRITE] = false;
        }
    }
}

impl<const WRITE: usize, const ERASE: usize> ErrorType for SimFlash<WRITE, ERASE> {
    type Error = SimError;
}

impl<const WRITE: usize, const ERASE: usize> ReadNorFlash for SimFlash<WRITE, ERASE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        let start = self.check(offset, bytes.len(), 1)?;
        bytes.copy_from_slice(&self.data[start..start + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const WRITE: usize, const ERASE: usize> NorFlash for SimFlash<WRITE, ERASE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        let len = to
            .checked_sub(from)
            .ok_or(SimError::OutOfBounds { offset: to })?;
        let start = self.check(from, usize::try_from(len).unwrap_or(usize::MAX), ERASE)?;
        for sector in (start..start + usize::try_from(len).unwrap_or(0)).step_by(ERASE) {
            match self.begin_op()? {
                None => self.erase_sector(sector, None),
                Some(mut rng) => {
                    self.erase_sector(sector, Some(&mut rng));
                    return Err(SimError::PowerLost);
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        let start = self.check(offset, bytes.len(), WRITE)?;
        // Refuse before counting: an overwrite is a bug in the caller, not a power event.
        for unit in start / WRITE..(start + bytes.len()) / WRITE {
            if self.written[unit] {
                return Err(SimError::NotErased {
                    offset: u32::try_from(unit * WRITE).unwrap_or(u32::MAX),
                });
            }
        }
        let torn = self.begin_op()?;
        self.writes += 1;
        let units = bytes.len() / WRITE;
        let (done, mut rng) = match torn {
            None => (units, None),
            Some(mut rng) => {
                if rng.below(4) == 0 {
                    // The power went just before the write began.
                    self.torn = Some(Torn::Write {
                        offset,
                        done: 0,
                        units: bytes.len() / WRITE,
                    });
                    return Err(SimError::PowerLost);
                }
                let done = usize::try_from(rng.below(units as u64 + 1)).unwrap_or(units);
                (done, Some(rng))
            }
        };
        for (i, chunk) in bytes.chunks_exact(WRITE).enumerate().take(done) {
            let at = start + i * WRITE;
            // Programming clears bits only: a 1 in the data leaves the cell as it was.
            for (cell, &b) in self.data[at..at + WRITE].iter_mut().zip(chunk) {
                *cell &= b;
            }
            self.written[at / WRITE] = true;
        }
        let Some(rng) = rng.as_mut() else {
            return Ok(());
        };
        if done < units {
            let at = start + done * WRITE;
            let target = &bytes[done * WRITE..(done + 1) * WRITE];
            let cell = &mut self.data[at..at + WRITE];
            let mut cleared_any = false;
            for (c, &t) in cell.iter_mut().zip(target) {
                let clearing = *c & !t;
                let now = clearing & rng.byte();
                cleared_any |= now != 0;
                *c &= !now;
            }
            if !cleared_any {
                // Clear the lowest of the bits being cleared in the first byte that has one.
                if let Some((c, &t)) = cell.iter_mut().zip(target).find(|(c, t)| **c & !**t != 0) {
                    let clearing = *c & !t;
                    *c &= !(clearing & clearing.wrapping_neg());
                }
            }
            self.written[at / WRITE] = true;
        }
        self.torn = Some(Torn::Write {
            offset,
            done,
            units,
        });
        Err(SimError::PowerLost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Flash = SimFlash<4, 256>;

    #[test]
    fn enforces_erase_before_write_and_alignment() {
        let mut f = Flash::new(1024);
        f.write(0, &[0, 1, 2, 3]).unwrap();
        assert_eq!(
            f.write(0, &[0, 0, 0, 0]),
            Err(SimError::NotErased { offset: 0 })
        );
        assert_eq!(f.write(2, &[0; 4]), Err(SimError::NotAligned { offset: 2 }));
        assert_eq!(f.write(4, &[0; 3]), Err(SimError::NotAligned { offset: 4 }));
        assert_eq!(f.erase(4, 256), Err(SimError::NotAligned { offset: 4 }));
        assert_eq!(f.erase(0, 2048), Err(SimError::OutOfBounds { offset: 0 }));
        f.erase(0, 256).unwrap();
        f.write(0, &[9; 4]).unwrap();
        let mut b = [0; 4];
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [9; 4]);
        assert_eq!(f.ops(), 3);
        assert_eq!(f.erase_counts(), &[1, 0, 0, 0]);
    }

    #[test]
    fn a_cut_tears_one_operation_and_stops_the_rest() {
        for seed in 0..200 {
            let mut f = Flash::new(1024);
            f.cut_after(1, seed);
            f.write(0, &[0; 8]).unwrap();
            assert_eq!(f.write(8, &[0; 64]), Err(SimError::PowerLost));
            assert_eq!(f.write(128, &[0; 4]), Err(SimError::PowerLost));
            let Some(Torn::Write { done, units, .. }) = f.torn() else {
                panic!("nothing torn")
            };
            assert_eq!(units, 16);
            assert!(f.bytes()[8..8 + done * 4].iter().all(|&b| b == 0));
            let started = f.bytes()[8..72].iter().any(|&b| b != 0xFF);
            if done < units && started {
                let unit = &f.bytes()[8 + done * 4..12 + done * 4];
                assert_ne!(unit, &[0xFF; 4], "a torn unit never reads as erased");
                assert!(f.bytes()[12 + done * 4..72].iter().all(|&b| b == 0xFF));
            }
            f.power_on();
            f.write(128, &[0; 4]).unwrap();
        }
    }

    #[test]
    fn a_torn_erase_leaves_garbage_after_an_erased_prefix() {
        let mut saw_garbage = false;
        for seed in 0..50 {
            let mut f = Flash::new(1024);
            f.write(0, &[0; 256]).unwrap();
            f.cut_after(0, seed);
            assert_eq!(f.erase(0, 512), Err(SimError::PowerLost));
            let Some(Torn::Erase { done, .. }) = f.torn() else {
                panic!("nothing torn")
            };
            assert!(f.bytes()[..done * 4].iter().all(|&b| b == 0xFF));
            saw_garbage |= f.bytes()[done * 4..256].iter().any(|&b| b != 0xFF);
            // The garbage counts as written: only an erase makes it writable again.
            if done < 64 {
                assert!(f.write(252, &[0; 4]).is_err());
            }
            f.power_on();
            f.erase(0, 256).unwrap();
            f.write(252, &[0; 4]).unwrap();
        }
        assert!(saw_garbage);
    }
}
