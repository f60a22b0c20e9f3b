//! The STATE partition: the update cycle record and its progress markers.
//!
//! STATE is two banks. Each update *cycle* (one image, from the first byte received to its
//! commit, revert or refusal) lives in one bank: starting a cycle erases the other bank and
//! writes the cycle record at its start, with a sequence number one above the current
//! record's. Everything that happens during the cycle is then a *marker*: one write unit
//! programmed to zero, never rewritten, in a fixed position after the record. So:
//!
//! - a bank is written once per erase, and no word is ever programmed twice;
//! - a torn record fails its CRC and the other bank, with the previous cycle, stays current;
//! - a torn erase leaves garbage only in the bank that is not current;
//! - a torn marker reads as not erased, which counts as written. That is safe because a
//!   marker is written only after the work it records is complete, and it is never written
//!   again: the work is done.
//!
//! The record (little-endian, [`RECORD_LEN`] bytes, padded to the write size):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SWST` |
//! | 4 | 2 | format, 1 |
//! | 6 | 2 | zero |
//! | 8 | 4 | sequence number (the higher valid record wins) |
//! | 12 | 4 | ACTIVE pages of the layout that wrote it (N) |
//! | 16 | 4 | pages the swap moves (P ≤ N) |
//! | 20 | 4 | length of the incoming image |
//! | 24 | 8 | committed security counter when the cycle began |
//! | 32 | 8 | security counter of the incoming image |
//! | 40 | 32 | manifest digest of the incoming image |
//! | 72 | 1 | trial boots allowed before a revert |
//! | 73 | 3 | zero |
//! | 76 | 4 | CRC-32 of bytes 0..76 |
//!
//! The markers, one write unit each, from the end of the padded record (A =
//! [`MAX_ATTEMPTS`], N = ACTIVE pages):
//!
//! | index | marker | written by | after |
//! |---|---|---|---|
//! | 0 | REQUESTED | application (`finish`, mark updated) | the image in DFU verified |
//! | 1 | REFUSED | bootloader or `finish` | the image in DFU failed verification |
//! | 2 | CONFIRMED | application (`mark_booted`) | the trial image confirmed itself |
//! | 3 .. 3+A | ATTEMPT i | bootloader | before trial boot i |
//! | 3+A .. 3+A+N | RECEIVED p | application | DFU page p written |
//! | 3+A+N .. 3+A+3N | SWAP s | bootloader | swap step s copied |
//! | 3+A+3N .. 3+A+5N | REVERT s | bootloader | revert step s copied |

use embedded_storage::nor_flash::NorFlash;

use crate::crc::crc32;
use crate::error::Error;
use crate::flash::{self, Region};
use crate::layout::Layout;

/// Most trial boots an update may be given before it is reverted.
pub const MAX_ATTEMPTS: u8 = 8;

/// Bytes of the cycle record before padding.
pub const RECORD_LEN: u32 = 80;

const MAGIC: [u8; 4] = *b"SWST";
const FORMAT: u16 = 1;

pub(crate) const REQUESTED: u32 = 0;
pub(crate) const REFUSED: u32 = 1;
pub(crate) const CONFIRMED: u32 = 2;
const ATTEMPT0: u32 = 3;
const FLAGS: u32 = ATTEMPT0 + MAX_ATTEMPTS as u32;

/// Marker index of "trial boot `i` started".
pub(crate) fn attempt(i: u32) -> u32 {
    ATTEMPT0 + i
}

/// Marker index of "DFU page `p` received".
pub(crate) fn received(p: u32) -> u32 {
    FLAGS + p
}

/// Marker index of swap step `s` for a layout of `n` ACTIVE pages.
pub(crate) fn swap_step(n: u32, s: u32) -> u32 {
    FLAGS + n + s
}

/// Marker index of revert step `s` for a layout of `n` ACTIVE pages.
pub(crate) fn revert_step(n: u32, s: u32) -> u32 {
    FLAGS + 3 * n + s
}

fn record_span(write: u32) -> Option<u32> {
    RECORD_LEN.checked_next_multiple_of(write)
}

/// Bytes one bank needs for a layout of `pages` ACTIVE pages and `write`-byte units.
pub(crate) fn bank_bytes_needed(pages: u32, write: u32) -> Option<u32> {
    let markers = pages.checked_mul(5)?.checked_add(FLAGS)?;
    record_span(write)?.checked_add(markers.checked_mul(write)?)
}

/// The cycle record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Sequence number.
    pub seq: u32,
    /// ACTIVE pages of the layout that wrote it.
    pub active_pages: u32,
    /// Pages the swap moves.
    pub swap_pages: u32,
    /// Length of the incoming image.
    pub image_len: u32,
    /// Committed security counter when the cycle began.
    pub base_counter: u64,
    /// The incoming image's security counter.
    pub counter: u64,
    /// The incoming image's manifest digest.
    pub digest: [u8; 32],
    /// Trial boots allowed.
    pub max_attempts: u8,
}

impl Record {
    fn encode(&self) -> [u8; RECORD_LEN as usize] {
        let mut b = [0u8; RECORD_LEN as usize];
        b[..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&FORMAT.to_le_bytes());
        b[8..12].copy_from_slice(&self.seq.to_le_bytes());
        b[12..16].copy_from_slice(&self.active_pages.to_le_bytes());
        b[16..20].copy_from_slice(&self.swap_pages.to_le_bytes());
        b[20..24].copy_from_slice(&self.image_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.base_counter.to_le_bytes());
        b[32..40].copy_from_slice(&self.counter.to_le_bytes());
        b[40..72].copy_from_slice(&self.digest);
        b[72] = self.max_attempts;
        let crc = crc32(&b[..76]);
        b[76..80].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8; RECORD_LEN as usize]) -> Option<Self> {
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | u64::from(u32_at(at + 4)) << 32;
        if b[..4] != MAGIC || b[4..6] != FORMAT.to_le_bytes() || u32_at(76) != crc32(&b[..76]) {
            return None;
        }
        let mut digest = [0; 32];
        digest.copy_from_slice(&b[40..72]);
        Some(Self {
            seq: u32_at(8),
            active_pages: u32_at(12),
            swap_pages: u32_at(16),
            image_len: u32_at(20),
            base_counter: u64_at(24),
            counter: u64_at(32),
            digest,
            max_attempts: b[72],
        })
    }
}

/// Where an update stands, derived from the current record and its markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No update has ever started (STATE holds no record).
    Idle,
    /// An image is being received into DFU.
    Receiving,
    /// The image in DFU is verified and the swap is requested for the next boot.
    Requested,
    /// The bootloader is swapping (a reset interrupted it; it resumes).
    Swapping,
    /// The new image runs on trial; it must confirm itself or it is reverted.
    Trial,
    /// The new image confirmed itself; its security counter is committed.
    Committed,
    /// The bootloader is putting the previous image back.
    Reverting,
    /// The previous image is back; the update is over.
    Reverted,
    /// The bootloader's own verification refused the image in DFU; nothing was swapped.
    Refused,
}

impl Phase {
    /// A stable code for the wire.
    pub fn code(self) -> u8 {
        match self {
            Phase::Idle => 0,
            Phase::Receiving => 1,
            Phase::Requested => 2,
            Phase::Swapping => 3,
            Phase::Trial => 4,
            Phase::Committed => 5,
            Phase::Reverting => 6,
            Phase::Reverted => 7,
            Phase::Refused => 8,
        }
    }

    /// The phase with wire code `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Phase::Idle,
            1 => Phase::Receiving,
            2 => Phase::Requested,
            3 => Phase::Swapping,
            4 => Phase::Trial,
            5 => Phase::Committed,
            6 => Phase::Reverting,
            7 => Phase::Reverted,
            8 => Phase::Refused,
            _ => return None,
        })
    }

    /// Whether a new update may start: nothing between the swap and its outcome is pending.
    pub fn is_settled(self) -> bool {
        !matches!(self, Phase::Swapping | Phase::Trial | Phase::Reverting)
    }
}

impl core::fmt::Display for Phase {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Phase::Idle => "idle",
            Phase::Receiving => "receiving",
            Phase::Requested => "requested",
            Phase::Swapping => "swapping",
            Phase::Trial => "on trial",
            Phase::Committed => "committed",
            Phase::Reverting => "reverting",
            Phase::Reverted => "reverted",
            Phase::Refused => "refused",
        })
    }
}

/// The decoded STATE: the current record (if any), which bank holds it, and its markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Where the update stands.
    pub phase: Phase,
    /// The committed security counter (anti-rollback floor), including this cycle's commit.
    pub committed_counter: u64,
    /// The current record and its bank.
    pub record: Option<(usize, Record)>,
    /// Trial boots started.
    pub attempts: u32,
    /// DFU pages received.
    pub received_pages: u32,
    /// Swap steps done (of `2 × swap_pages`).
    pub swap_done: u32,
    /// Revert steps done (of `2 × swap_pages`).
    pub revert_done: u32,
}

impl Status {
    /// Bytes of the incoming image confirmed in DFU (a resume starts here).
    pub fn received_bytes(&self, layout: &Layout) -> u32 {
        match self.record {
            Some((_, r)) => self
                .received_pages
                .saturating_mul(layout.page())
                .min(r.image_len),
            None => 0,
        }
    }

    /// Trial boots allowed in this cycle.
    pub fn max_attempts(&self) -> u8 {
        self.record.map_or(1, |(_, r)| r.max_attempts)
    }
}

fn marker_at(layout: &Layout, index: u32) -> Result<u32, Error> {
    let write = layout.write_size();
    let span = record_span(write).ok_or(Error::OutOfBounds {
        what: "marker",
        offset: index,
        len: 0,
    })?;
    index
        .checked_mul(write)
        .and_then(|m| m.checked_add(span))
        .ok_or(Error::OutOfBounds {
            what: "marker",
            offset: index,
            len: 0,
        })
}

/// Whether marker `index` of `bank` reads as written (any bit programmed).
fn is_set<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    bank: Region,
    index: u32,
) -> Result<bool, Error> {
    let mut word = [0xFFu8; crate::PAGE_BUF];
    let word = &mut word[..flash::to_usize(layout.write_size())];
    flash::read(flash, bank, marker_at(layout, index)?, word)?;
    Ok(word.iter().any(|&b| b != 0xFF))
}

/// Counts the markers set from `first`, stopping at the first unset one or after `max`.
fn prefix<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    bank: Region,
    first: u32,
    max: u32,
) -> Result<u32, Error> {
    for i in 0..max {
        if !is_set(flash, layout, bank, first + i)? {
            return Ok(i);
        }
    }
    Ok(max)
}

/// Reads the STATE partition.
pub fn read<F: NorFlash>(flash: &mut F, layout: &Layout) -> Result<Status, Error> {
    let mut best: Option<(usize, Record)> = None;
    for (i, bank) in layout.banks().into_iter().enumerate() {
        let mut raw = [0u8; RECORD_LEN as usize];
        flash::read(flash, bank, 0, &mut raw)?;
        if let Some(r) = Record::decode(&raw)
            && best.is_none_or(|(_, b)| r.seq > b.seq)
        {
            best = Some((i, r));
        }
    }
    let Some((bank_index, rec)) = best else {
        return Ok(Status {
            phase: Phase::Idle,
            committed_counter: 0,
            record: None,
            attempts: 0,
            received_pages: 0,
            swap_done: 0,
            revert_done: 0,
        });
    };
    let n = layout.active_pages();
    if rec.active_pages != n || rec.swap_pages == 0 || rec.swap_pages > n {
        return Err(Error::StateLayout {
            expected: n,
            found: rec.active_pages,
        });
    }
    let bank = layout.banks()[bank_index];
    let p = rec.swap_pages;
    let attempts = prefix(flash, layout, bank, attempt(0), u32::from(MAX_ATTEMPTS))?;
    let received_pages = prefix(flash, layout, bank, received(0), n)?;
    let swap_done = prefix(flash, layout, bank, swap_step(n, 0), 2 * p)?;
    let revert_done = prefix(flash, layout, bank, revert_step(n, 0), 2 * p)?;
    let confirmed = is_set(flash, layout, bank, CONFIRMED)?;
    let phase = if revert_done == 2 * p {
        Phase::Reverted
    } else if revert_done > 0 {
        Phase::Reverting
    } else if swap_done == 2 * p {
        if confirmed {
            Phase::Committed
        } else {
            Phase::Trial
        }
    } else if swap_done > 0 {
        Phase::Swapping
    } else if is_set(flash, layout, bank, REFUSED)? {
        Phase::Refused
    } else if is_set(flash, layout, bank, REQUESTED)? {
        Phase::Requested
    } else {
        Phase::Receiving
    };
    let committed_counter = if phase == Phase::Committed {
        rec.base_counter.max(rec.counter)
    } else {
        rec.base_counter
    };
    Ok(Status {
        phase,
        committed_counter,
        record: Some((bank_index, rec)),
        attempts,
        received_pages,
        swap_done,
        revert_done,
    })
}

/// Programs marker `index` of the current cycle unless it already reads as written.
pub(crate) fn set<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    status: &Status,
    index: u32,
) -> Result<(), Error> {
    let Some((bank_index, _)) = status.record else {
        return Err(Error::NotAllowed {
            phase: status.phase,
            action: "setting a progress marker",
        });
    };
    let bank = layout.banks()[bank_index];
    if is_set(flash, layout, bank, index)? {
        return Ok(());
    }
    let zeros = [0u8; crate::PAGE_BUF];
    flash::write(
        flash,
        bank,
        marker_at(layout, index)?,
        &zeros[..flash::to_usize(layout.write_size())],
    )
}

/// What a new cycle records about its image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewCycle {
    pub(crate) swap_pages: u32,
    pub(crate) image_len: u32,
    pub(crate) base_counter: u64,
    pub(crate) counter: u64,
    pub(crate) digest: [u8; 32],
    pub(crate) max_attempts: u8,
}

/// Starts a cycle: erases the bank that is not current and writes the new record there.
pub(crate) fn start_cycle<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    current: &Status,
    new: &NewCycle,
) -> Result<Status, Error> {
    let (bank_index, seq) = match current.record {
        // A u32 sequence lasts 4 billion updates; a wrap would make the new record lose, so
        // stop there rather than wrap (no device will get that far).
        Some((b, r)) => (
            1 - b,
            r.seq.checked_add(1).ok_or(Error::NotAllowed {
                phase: current.phase,
                action: "starting a cycle after 2^32 cycles",
            })?,
        ),
        None => (0, 1),
    };
    let bank = layout.banks()[bank_index];
    flash::erase(flash, bank, 0, bank.len)?;
    let record = Record {
        seq,
        active_pages: layout.active_pages(),
        swap_pages: new.swap_pages,
        image_len: new.image_len,
        base_counter: new.base_counter,
        counter: new.counter,
        digest: new.digest,
        max_attempts: new.max_attempts.clamp(1, MAX_ATTEMPTS),
    };
    let mut buf = [0xFFu8; crate::PAGE_BUF];
    let span = record_span(layout.write_size()).unwrap_or(RECORD_LEN);
    buf[..RECORD_LEN as usize].copy_from_slice(&record.encode());
    flash::write(flash, bank, 0, &buf[..flash::to_usize(span)])?;
    read(flash, layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_corruption() {
        let r = Record {
            seq: 7,
            active_pages: 6,
            swap_pages: 5,
            image_len: 20_000,
            base_counter: 3,
            counter: 4,
            digest: [9; 32],
            max_attempts: 2,
        };
        let b = r.encode();
        assert_eq!(Record::decode(&b), Some(r));
        for i in 0..RECORD_LEN as usize {
            let mut bad = b;
            bad[i] ^= 0x10;
            assert_eq!(Record::decode(&bad), None, "byte {i}");
        }
    }

    #[test]
    fn marker_map_fits_the_bank_it_asks_for() {
        assert_eq!(bank_bytes_needed(6, 4), Some(80 + (11 + 30) * 4));
        assert_eq!(revert_step(6, 11) + 1, FLAGS + 5 * 6);
        assert!(bank_bytes_needed(u32::MAX, 4).is_none());
    }
}
