//! The device side of the transfer: answer each request frame using the [`Updater`].

use embedded_io::{Read, Write};
use embedded_storage::nor_flash::NorFlash;

use crate::PAGE_BUF;
use crate::error::Error;
use crate::update::Updater;

use super::frame::{Decoder, Frame, FrameError, MAX_WIRE};
use super::message::{Info, Refusal, Request, Response, Running};

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// `DONE` was sent: the image is verified and the swap requested. Reset now.
    UpdateReady,
    /// The stream ended (a read returned 0 bytes).
    Closed,
}

/// The device end of the link: a frame decoder in front of an [`Updater`].
#[derive(Debug)]
pub struct Device<'a, F> {
    updater: Updater<'a, F>,
    decoder: Decoder,
}

/// The chunk size announced in `READY` and `INFO`.
const CHUNK: u16 = 256;
const _: () = assert!(CHUNK as usize == PAGE_BUF);

impl<'a, F: NorFlash> Device<'a, F> {
    /// A device answering with `updater`.
    pub fn new(updater: Updater<'a, F>) -> Self {
        Self {
            updater,
            decoder: Decoder::new(),
        }
    }

    /// The updater.
    pub fn updater(&mut self) -> &mut Updater<'a, F> {
        &mut self.updater
    }

    /// The updater, back.
    pub fn into_updater(self) -> Updater<'a, F> {
        self.updater
    }

    /// Answers requests from `io` until an update is ready (the caller then resets) or the
    /// stream ends. I/O errors end the session; protocol errors are answered and forgotten.
    pub fn serve<T: Read + Write>(&mut self, io: &mut T) -> Result<Served, T::Error> {
        let mut buf = [0u8; 64];
        loop {
            let n = io.read(&mut buf)?;
            if n == 0 {
                return Ok(Served::Closed);
            }
            for &b in &buf[..n] {
                let Some(frame) = self.decoder.push(b) else {
                    continue;
                };
                let mut out = [0u8; MAX_WIRE];
                let raw = frame.map(|len| self.decoder.frame(len));
                let (len, ready) = respond(&mut self.updater, raw, &mut out);
                io.write_all(&out[..len])?;
                io.flush()?;
                if ready {
                    return Ok(Served::UpdateReady);
                }
            }
        }
    }

    /// Answers one decoded frame (or a decoding error) without any I/O: writes the encoded
    /// response into `out` and returns its length and whether the update is now ready.
    pub fn handle(
        &mut self,
        raw: Result<&[u8], FrameError>,
        out: &mut [u8; MAX_WIRE],
    ) -> (usize, bool) {
        respond(&mut self.updater, raw, out)
    }
}

/// The `INFO` of `updater`'s device.
pub fn info<F: NorFlash>(updater: &mut Updater<'_, F>) -> Result<Info, Error> {
    let status = updater.status()?;
    let committed_counter = updater.committed_counter()?;
    let running = updater.running().ok().map(|h| Running {
        version: h.version,
        security_counter: h.security_counter,
        release: h.release,
    });
    let layout = *updater.layout();
    Ok(Info {
        phase: status.phase,
        attempts: u8::try_from(status.attempts).unwrap_or(u8::MAX),
        max_attempts: status.max_attempts(),
        chunk: CHUNK,
        committed_counter,
        received: status.received_bytes(&layout),
        pending: status.record.map_or([0; 32], |(_, r)| r.digest),
        hardware: updater.config().hardware,
        running,
    })
}

fn respond<F: NorFlash>(
    updater: &mut Updater<'_, F>,
    raw: Result<&[u8], FrameError>,
    out: &mut [u8; MAX_WIRE],
) -> (usize, bool) {
    let refused = |e: &Error| {
        let (refusal, arg) = Refusal::of(e);
        Response::Refused { refusal, arg }
    };
    let (seq, response) = match raw.and_then(Frame::parse) {
        // A damaged frame has no trustworthy sequence number: NAK answers with 0, and the
        // gateway resends whatever it has outstanding.
        Err(_) => (0, Response::Nak),
        Ok(frame) => {
            let response = match Request::decode(&frame) {
                None => Response::Refused {
                    refusal: Refusal::BadRequest,
                    arg: u32::from(frame.kind),
                },
                Some(Request::Hello) => match info(updater) {
                    Ok(info) => Response::Info(info),
                    Err(e) => refused(&e),
                },
                Some(Request::Begin(block)) => match updater.begin(block) {
                    Ok(resume) => Response::Ready {
                        resume,
                        total: updater.receiving_len().unwrap_or(0),
                        chunk: CHUNK,
                    },
                    Err(e) => refused(&e),
                },
                Some(Request::Data { offset, data }) => match updater.write(offset, data) {
                    Ok(next) => Response::Ack { next },
                    Err(e) => refused(&e),
                },
                Some(Request::Finish) => match updater.finish() {
                    Ok(()) => Response::Done,
                    Err(e) => refused(&e),
                },
            };
            (frame.seq, response)
        }
    };
    // Every response fits MAX_WIRE by construction; an encoding failure sends nothing.
    let len = response.encode(seq, out).unwrap_or(0);
    (len, response == Response::Done)
}
