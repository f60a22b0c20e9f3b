//! The boot logic: decide what to start, finishing any swap or revert a reset interrupted,
//! and start nothing that does not verify.
//!
//! | phase read from STATE | what `boot` does |
//! |---|---|
//! | idle, receiving, refused, committed, reverted | verify ACTIVE and boot it |
//! | requested | verify DFU (signatures, hardware, counter, digest, and that it is the image the cycle announced); if good, swap; if not, mark REFUSED and boot ACTIVE |
//! | swapping | finish the swap |
//! | trial, attempts left | mark the next ATTEMPT, verify ACTIVE, boot it on trial (a failed verification reverts) |
//! | trial, no attempts left | revert (the image never confirmed itself) |
//! | reverting | finish the revert |
//!
//! Every path ends in "verify ACTIVE, then boot it": the bootloader starts only an image
//! whose signatures, hardware id, security counter and payload digest check out *now*, not
//! an image that checked out when it was received.

use embedded_storage::nor_flash::NorFlash;

use crate::anchor::TrustAnchor;
use crate::error::Error;
use crate::image::{self, ImageError, ImageHeader, Name, Policy};
use crate::layout::Layout;
use crate::state::{self, Phase, Status};
use crate::swap;

/// What the bootloader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Booted {
    /// The verified header of the image in ACTIVE; its code starts at `header_len`.
    pub header: ImageHeader,
    /// Whether this is a trial boot that the image must confirm (`mark_booted`).
    pub trial: bool,
    /// The update phase after this decision.
    pub phase: Phase,
    /// The committed security counter.
    pub committed_counter: u64,
}

/// Why nothing can be booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    /// Flash failed (on hardware: retry after a reset; the swap resumes where it stopped).
    #[error(transparent)]
    Flash(Error),
    /// ACTIVE holds no image that verifies, and no update can replace it.
    #[error("no valid image to boot: {0}")]
    NoValidImage(ImageError),
}

impl From<Error> for BootError {
    fn from(e: Error) -> Self {
        match e {
            Error::Image(e) => BootError::NoValidImage(e),
            e => BootError::Flash(e),
        }
    }
}

/// The bootloader: flash, layout, the trust anchor and the device's hardware id.
#[derive(Debug)]
pub struct Bootloader<'a, F> {
    flash: F,
    layout: Layout,
    anchor: &'a TrustAnchor,
    hardware: Name,
}

#[allow(
    clippy::large_enum_variant,
    reason = "lives on the stack for one call; there is no heap to box it on"
)]
/// How a boot step went: decided, or STATE changed and must be read again.
enum Step {
    Boot(Booted),
    Again,
}

impl<'a, F: NorFlash> Bootloader<'a, F> {
    /// A bootloader over `flash`.
    pub fn new(flash: F, layout: Layout, anchor: &'a TrustAnchor, hardware: Name) -> Self {
        Self {
            flash,
            layout,
            anchor,
            hardware,
        }
    }

    /// The flash, back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    /// Decides what to boot, finishing any interrupted swap or revert on the way. `step` is
    /// called after every page copied (blink a status LED there).
    pub fn boot(&mut self, mut step: impl FnMut()) -> Result<Booted, BootError> {
        // Each pass either boots or moves STATE strictly forward (requested → swapping →
        // trial → reverting → reverted, or requested → refused), so four passes suffice.
        for _ in 0..6 {
            let status = state::read(&mut self.flash, &self.layout)?;
            if let Step::Boot(b) = self.pass(&status, &mut step)? {
                return Ok(b);
            }
        }
        Err(BootError::Flash(Error::NotAllowed {
            phase: Phase::Swapping,
            action: "booting (STATE does not settle)",
        }))
    }

    fn pass(&mut self, status: &Status, step: &mut impl FnMut()) -> Result<Step, BootError> {
        let l = self.layout;
        match status.phase {
            Phase::Requested => {
                match self.verify_dfu(status) {
                    Ok(()) => swap::swap(&mut self.flash, &l, status, step)?,
                    Err(Error::Image(_)) => {
                        state::set(&mut self.flash, &l, status, state::REFUSED)?;
                    }
                    Err(e) => return Err(BootError::Flash(e)),
                }
                Ok(Step::Again)
            }
            Phase::Swapping => {
                swap::swap(&mut self.flash, &l, status, step)?;
                Ok(Step::Again)
            }
            Phase::Trial if status.attempts < u32::from(status.max_attempts()) => {
                state::set(&mut self.flash, &l, status, state::attempt(status.attempts))?;
                match self.verify_active(status.committed_counter) {
                    Ok(header) => Ok(Step::Boot(Booted {
                        header,
                        trial: true,
                        phase: Phase::Trial,
                        committed_counter: status.committed_counter,
                    })),
                    // The image that passed two verifications no longer does (flash decay):
                    // give up on it now rather than after its attempts.
                    Err(Error::Image(_)) => {
                        swap::revert(&mut self.flash, &l, status, step)?;
                        Ok(Step::Again)
                    }
                    Err(e) => Err(BootError::Flash(e)),
                }
            }
            Phase::Trial | Phase::Reverting => {
                swap::revert(&mut self.flash, &l, status, step)?;
                Ok(Step::Again)
            }
            Phase::Idle
            | Phase::Receiving
            | Phase::Refused
            | Phase::Committed
            | Phase::Reverted => {
                let header = self.verify_active(status.committed_counter)?;
                Ok(Step::Boot(Booted {
                    header,
                    trial: false,
                    phase: status.phase,
                    committed_counter: status.committed_counter,
                }))
            }
        }
    }

    fn verify_active(&mut self, committed_counter: u64) -> Result<ImageHeader, Error> {
        let policy = Policy {
            hardware: &self.hardware,
            committed_counter,
            capacity: self.layout.active().len,
        };
        image::verify_in_flash(&mut self.flash, self.layout.active(), self.anchor, &policy)
    }

    /// Verifies DFU before the swap: the full check, plus "this is the image the cycle was
    /// started for" (a DFU rewritten after `finish` is refused).
    fn verify_dfu(&mut self, status: &Status) -> Result<(), Error> {
        let Some((_, rec)) = status.record else {
            return Err(ImageError::NotAnnounced.into());
        };
        let policy = Policy {
            hardware: &self.hardware,
            committed_counter: status.committed_counter,
            capacity: self.layout.active().len,
        };
        let header =
            image::verify_in_flash(&mut self.flash, self.layout.dfu(), self.anchor, &policy)?;
        if header.manifest_digest != rec.digest || header.total_len() != Some(rec.image_len) {
            return Err(ImageError::NotAnnounced.into());
        }
        Ok(())
    }
}
