//! The gateway side of the transfer, as a reference and for tests: stop-and-wait, every
//! request idempotent, resent on `NAK`, on a damaged or missing answer, up to a limit.

use embedded_io::{Error as _, ErrorKind, Read, Write};

use crate::image::ImageHeader;

use super::frame::{Decoder, Frame, MAX_WIRE};
use super::message::{Info, Refusal, Request, Response};

/// Sends of one request before giving up. A damaged frame costs one resend; eight in a row
/// means the link is down, not noisy.
pub const MAX_TRIES: u32 = 8;

/// Why a transfer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError<E> {
    /// The link failed.
    Io(E),
    /// The device refused a request.
    Refused {
        /// Why.
        refusal: Refusal,
        /// The refusal's argument.
        arg: u32,
    },
    /// No valid answer after [`MAX_TRIES`] sends.
    NoAnswer,
    /// The image is malformed, or the device answered out of protocol.
    Protocol(&'static str),
}

/// The gateway end of a link.
#[derive(Debug)]
pub struct Sender<T> {
    io: T,
    seq: u16,
    decoder: Decoder,
    pending: [u8; 64],
    pending_at: usize,
    pending_len: usize,
}

impl<T: Read + Write> Sender<T> {
    /// A sender over `io`. A read that fails with [`ErrorKind::TimedOut`] (or returns 0
    /// bytes) counts as a lost answer and the request is resent.
    pub fn new(io: T) -> Self {
        Self {
            io,
            seq: 0,
            decoder: Decoder::new(),
            pending: [0; 64],
            pending_at: 0,
            pending_len: 0,
        }
    }

    /// The link, back.
    pub fn into_inner(self) -> T {
        self.io
    }

    /// The link.
    pub fn io_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Asks the device what it runs and where its update stands.
    pub fn hello(&mut self) -> Result<Info, SendError<T::Error>> {
        match self.request(&Request::Hello)? {
            Response::Info(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `image` (a whole image file): `BEGIN` with its header block, `DATA` from the
    /// offset the device resumes at, then `FINISH`. On `Ok` the device has verified the image,
    /// requested the swap and is resetting. After any error, calling this again resumes.
    pub fn send_image(&mut self, image: &[u8]) -> Result<(), SendError<T::Error>> {
        let header = ImageHeader::parse(image).map_err(|_| SendError::Protocol("not an image"))?;
        let block = image
            .get(..header.block_len())
            .ok_or(SendError::Protocol("image shorter than its header"))?;
        let (mut at, total, chunk) = match self.request(&Request::Begin(block))? {
            Response::Ready {
                resume,
                total,
                chunk,
            } => (resume, total, chunk),
            other => return Err(unexpected(other)),
        };
        if usize::try_from(total).ok() != Some(image.len()) || chunk == 0 {
            return Err(SendError::Protocol("READY disagrees with the image"));
        }
        while at < total {
            let end = total.min(at.saturating_add(u32::from(chunk)));
            let data = image
                .get(usize::try_from(at).unwrap_or(usize::MAX)..)
                .and_then(|rest| rest.get(..usize::try_from(end - at).unwrap_or(usize::MAX)))
                .ok_or(SendError::Protocol("offset outside the image"))?;
            match self.request(&Request::Data { offset: at, data })? {
                Response::Ack { next } if next > at => at = next,
                Response::Refused {
                    refusal: Refusal::OutOfOrder,
                    arg,
                } if arg < total => at = arg,
                other => return Err(unexpected(other)),
            }
        }
        match self.request(&Request::Finish)? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `req` and waits for its answer, resending on `NAK`, a damaged frame, a stale
    /// answer or a timeout.
    pub fn request(&mut self, req: &Request<'_>) -> Result<Response, SendError<T::Error>> {
        self.seq = self.seq.wrapping_add(1);
        let mut wire = [0u8; MAX_WIRE];
        let len = req
            .encode(self.seq, &mut wire)
            .map_err(|_| SendError::Protocol("request too large"))?;
        for _ in 0..MAX_TRIES {
            self.io.write_all(&wire[..len]).map_err(SendError::Io)?;
            self.io.flush().map_err(SendError::Io)?;
            if let Some(response) = self.answer()? {
                return Ok(response);
            }
        }
        Err(SendError::NoAnswer)
    }

    /// Reads until the answer to the current request, `None` when it must be resent.
    fn answer(&mut self) -> Result<Option<Response>, SendError<T::Error>> {
        loop {
            if self.pending_at == self.pending_len {
                match self.io.read(&mut self.pending) {
                    Ok(0) => return Ok(None),
                    Ok(n) => (self.pending_at, self.pending_len) = (0, n),
                    Err(e) if e.kind() == ErrorKind::TimedOut => return Ok(None),
                    Err(e) => return Err(SendError::Io(e)),
                }
            }
            let b = self.pending[self.pending_at];
            self.pending_at += 1;
            let Some(Ok(len)) = self.decoder.push(b) else {
                continue;
            };
            let Ok(frame) = Frame::parse(self.decoder.frame(len)) else {
                // A damaged answer: resend the request (every request is idempotent).
                return Ok(None);
            };
            match Response::decode(&frame) {
                Some(Response::Nak) => return Ok(None),
                Some(r) if frame.seq == self.seq => return Ok(Some(r)),
                // An answer to an earlier send of an earlier request: skip it.
                _ => {}
            }
        }
    }
}

fn unexpected<E>(r: Response) -> SendError<E> {
    match r {
        Response::Refused { refusal, arg } => SendError::Refused { refusal, arg },
        _ => SendError::Protocol("unexpected answer"),
    }
}
