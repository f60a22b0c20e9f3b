//! The application side of an update: receive an image into DFU, request the swap
//! (*mark updated*), and confirm a trial boot (*mark booted*).
//!
//! The vocabulary is the Linux agent's: an update is received and verified, installed on
//! *trial*, and either *committed* by the image itself or *reverted* by the bootloader.
//!
//! Nothing is written before the header block has been verified against the trust anchor and
//! the device's policy (hardware id, committed security counter, size). DFU pages are erased
//! as the data reaches them, and each completed page is confirmed by a RECEIVED marker, so
//! after a reset the transfer resumes at the last confirmed page.

use embedded_storage::nor_flash::NorFlash;

use crate::PAGE_BUF;
use crate::anchor::TrustAnchor;
use crate::error::Error;
use crate::flash;
use crate::image::{self, ImageError, ImageHeader, Name, Policy};
use crate::layout::Layout;
use crate::state::{self, NewCycle, Phase, Status};

/// The device's update settings.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    /// The release role's keys and threshold.
    pub anchor: &'a TrustAnchor,
    /// This device's hardware id.
    pub hardware: Name,
    /// Trial boots an update gets before it is reverted (1 to [`state::MAX_ATTEMPTS`]).
    pub max_attempts: u8,
}

/// An image being received, as far as this boot knows.
#[derive(Debug, Clone, Copy)]
struct Receive {
    total: u32,
    next: u32,
}

/// The update core as the running application uses it.
#[derive(Debug)]
pub struct Updater<'a, F> {
    flash: F,
    layout: Layout,
    config: Config<'a>,
    rx: Option<Receive>,
}

impl<'a, F: NorFlash> Updater<'a, F> {
    /// The updater over `flash`.
    pub fn new(flash: F, layout: Layout, config: Config<'a>) -> Self {
        Self {
            flash,
            layout,
            config,
            rx: None,
        }
    }

    /// The flash, back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    /// The flash.
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The settings.
    pub fn config(&self) -> &Config<'a> {
        &self.config
    }

    /// Where the update stands.
    pub fn status(&mut self) -> Result<Status, Error> {
        state::read(&mut self.flash, &self.layout)
    }

    /// The header of the image in ACTIVE (the one running; the bootloader verified it).
    pub fn running(&mut self) -> Result<ImageHeader, Error> {
        image::read_header(&mut self.flash, self.layout.active())
    }

    /// The anti-rollback floor: the committed security counter, or the running image's if
    /// that is higher and the image is not on trial (a device fresh from the factory has no
    /// STATE yet, only its image).
    pub fn committed_counter(&mut self) -> Result<u64, Error> {
        let status = self.status()?;
        if !status.phase.is_settled() {
            return Ok(status.committed_counter);
        }
        let running = self.running().map_or(0, |h| h.security_counter);
        Ok(status.committed_counter.max(running))
    }

    /// The length of the image being received since the last `begin`, if any.
    pub fn receiving_len(&self) -> Option<u32> {
        self.rx.map(|rx| rx.total)
    }

    /// Starts (or resumes) receiving the image whose header block is `block`: verifies the
    /// signatures, then the hardware id, security counter and size, and only then touches
    /// flash. Returns the offset to send from: 0 for a new image, the last confirmed page
    /// boundary when the same image was already partly received.
    pub fn begin(&mut self, block: &[u8]) -> Result<u32, Error> {
        self.rx = None;
        let status = self.status()?;
        if !status.phase.is_settled() {
            return Err(Error::NotAllowed {
                phase: status.phase,
                action: "starting an update",
            });
        }
        let header = ImageHeader::verify_block(block, self.config.anchor)?;
        let running = self.running().ok();
        let floor = self.committed_counter()?;
        header.admit(&Policy {
            hardware: &self.config.hardware,
            committed_counter: floor,
            capacity: self.layout.active().len,
        })?;
        let total = header
            .total_len()
            .ok_or(ImageError::Malformed("image length"))?;
        if let Some((_, rec)) = status.record {
            let same = rec.digest == header.manifest_digest && rec.image_len == total;
            let resumable = matches!(status.phase, Phase::Receiving | Phase::Requested);
            if same && resumable {
                let next = if status.phase == Phase::Requested {
                    total
                } else {
                    status.received_bytes(&self.layout)
                };
                self.rx = Some(Receive { total, next });
                return Ok(next);
            }
        }
        // Move only the pages either image occupies (a blank or unreadable ACTIVE: all).
        let old_pages = running
            .and_then(|h| h.total_len())
            .map_or(self.layout.active_pages(), |len| self.layout.pages_for(len));
        let swap_pages = self
            .layout
            .pages_for(total)
            .max(old_pages)
            .min(self.layout.active_pages());
        let new = NewCycle {
            swap_pages,
            image_len: total,
            base_counter: floor,
            counter: header.security_counter,
            digest: header.manifest_digest,
            max_attempts: self.config.max_attempts,
        };
        state::start_cycle(&mut self.flash, &self.layout, &status, &new)?;
        self.rx = Some(Receive { total, next: 0 });
        Ok(0)
    }

    /// Writes the chunk `data` at `offset` of the image. Chunks arrive in order and are
    /// [`PAGE_BUF`] bytes, except the last. A chunk already received (a retransmission whose
    /// acknowledgement was lost) is acknowledged again without writing. Returns the next
    /// offset expected.
    pub fn write(&mut self, offset: u32, data: &[u8]) -> Result<u32, Error> {
        let Some(rx) = self.rx else {
            let phase = self.status()?.phase;
            return Err(Error::NotAllowed {
                phase,
                action: "image data before BEGIN",
            });
        };
        let len = flash::to_u32("chunk", data.len())?;
        let end = offset.checked_add(len).filter(|end| *end <= rx.total);
        let full = data.len() == PAGE_BUF || end == Some(rx.total);
        let Some(end) = end.filter(|_| full && !data.is_empty()) else {
            return Err(Error::BadChunk {
                offset,
                len: data.len(),
                chunk: PAGE_BUF,
            });
        };
        if end <= rx.next {
            return Ok(rx.next);
        }
        if offset != rx.next {
            return Err(Error::OutOfOrder {
                offset,
                expected: rx.next,
            });
        }
        let page = self.layout.page();
        let dfu = self.layout.dfu();
        if offset.is_multiple_of(page) {
            flash::erase(&mut self.flash, dfu, offset, page)?;
        }
        let mut buf = [0xFFu8; PAGE_BUF];
        buf[..data.len()].copy_from_slice(data);
        let padded = data
            .len()
            .next_multiple_of(flash::to_usize(self.layout.write_size()));
        flash::write(&mut self.flash, dfu, offset, &buf[..padded])?;
        if end.is_multiple_of(page) || end == rx.total {
            let status = self.status()?;
            state::set(
                &mut self.flash,
                &self.layout,
                &status,
                state::received((end - 1) / page),
            )?;
        }
        self.rx = Some(Receive { next: end, ..rx });
        Ok(end)
    }

    /// Verifies the received image in DFU and requests the swap (*mark updated*). On success
    /// the application should reset: the bootloader verifies the image again, swaps it in and
    /// boots it on trial. If the image does not verify the update is marked refused and a new
    /// `begin` starts it over.
    pub fn finish(&mut self) -> Result<(), Error> {
        let status = self.status()?;
        let Some((_, rec)) = status.record else {
            return Err(Error::NotAllowed {
                phase: status.phase,
                action: "finishing an update",
            });
        };
        match status.phase {
            Phase::Requested => return Ok(()),
            Phase::Receiving if status.received_bytes(&self.layout) == rec.image_len => {}
            phase => {
                return Err(Error::NotAllowed {
                    phase,
                    action: "finishing an incomplete update",
                });
            }
        }
        let policy = Policy {
            hardware: &self.config.hardware,
            committed_counter: rec.base_counter,
            capacity: self.layout.active().len,
        };
        let verified = image::verify_in_flash(
            &mut self.flash,
            self.layout.dfu(),
            self.config.anchor,
            &policy,
        )
        .and_then(|h| {
            if h.manifest_digest == rec.digest && h.total_len() == Some(rec.image_len) {
                Ok(())
            } else {
                Err(ImageError::NotAnnounced.into())
            }
        });
        self.rx = None;
        match verified {
            Ok(()) => state::set(&mut self.flash, &self.layout, &status, state::REQUESTED),
            Err(e @ Error::Image(_)) => {
                state::set(&mut self.flash, &self.layout, &status, state::REFUSED)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Confirms the running trial image (*mark booted*): commits it and its security counter.
    /// Without this, the next reset reverts it once its trial boots are used up. Outside a
    /// trial there is nothing to confirm and this does nothing.
    pub fn mark_booted(&mut self) -> Result<(), Error> {
        let status = self.status()?;
        if status.phase == Phase::Trial {
            state::set(&mut self.flash, &self.layout, &status, state::CONFIRMED)?;
        }
        Ok(())
    }
}
