//! The messages of the transfer protocol and their binary bodies (little-endian).

use crate::error::Error;
use crate::image::{ImageError, NAME_LEN, Name, Version};
use crate::state::Phase;

use super::frame::{Frame, FrameError, MAX_WIRE};

/// `HELLO`: what are you and where does your update stand? Answered by `INFO`.
pub const HELLO: u8 = 0x01;
/// `BEGIN`: the header block of the image to send. Answered by `READY` or `REFUSED`.
pub const BEGIN: u8 = 0x02;
/// `DATA`: offset (4) and a chunk of the image. Answered by `ACK` or `REFUSED`.
pub const DATA: u8 = 0x03;
/// `FINISH`: all sent; verify and request the swap. Answered by `DONE` or `REFUSED`.
pub const FINISH: u8 = 0x04;
/// `INFO`: see [`Info`].
pub const INFO: u8 = 0x81;
/// `READY`: resume offset (4), image length (4), chunk size (2).
pub const READY: u8 = 0x82;
/// `ACK`: the next offset expected (4).
pub const ACK: u8 = 0x83;
/// `DONE`: the image verified and the swap is requested; the device resets.
pub const DONE: u8 = 0x84;
/// `NAK`: a frame arrived damaged; send it again.
pub const NAK: u8 = 0xF0;
/// `REFUSED`: code (1) and argument (4); see [`Refusal`].
pub const REFUSED: u8 = 0xF1;

/// A request from the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// `HELLO`.
    Hello,
    /// `BEGIN` with the header block.
    Begin(&'a [u8]),
    /// `DATA` at an offset.
    Data {
        /// Offset of the chunk in the image.
        offset: u32,
        /// The chunk.
        data: &'a [u8],
    },
    /// `FINISH`.
    Finish,
}

/// Why a request was refused: a code and a 32-bit argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// The request is malformed or of an unknown kind.
    BadRequest = 1,
    /// The header is malformed or of an unknown format.
    BadHeader = 2,
    /// A release key's signature does not verify (argument: key index in the anchor).
    BadSignature = 3,
    /// Too few valid release signatures (argument: valid count).
    ThresholdUnmet = 4,
    /// Built for other hardware.
    WrongHardware = 5,
    /// Security counter below the committed one (argument: committed counter, saturated).
    Rollback = 6,
    /// Does not fit ACTIVE (argument: ACTIVE's size).
    TooLarge = 7,
    /// The payload digest does not match: the data was corrupted (the update is refused;
    /// `BEGIN` again to start over).
    DigestMismatch = 8,
    /// The phase does not allow it (argument: phase code), e.g. a trial not yet confirmed.
    Busy = 9,
    /// Data at the wrong offset (argument: the offset expected).
    OutOfOrder = 10,
    /// A chunk of the wrong length (argument: the chunk size).
    BadChunk = 11,
    /// Flash failed.
    Flash = 12,
}

impl Refusal {
    /// The refusal for `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        use Refusal as R;
        [
            R::BadRequest,
            R::BadHeader,
            R::BadSignature,
            R::ThresholdUnmet,
            R::WrongHardware,
            R::Rollback,
            R::TooLarge,
            R::DigestMismatch,
            R::Busy,
            R::OutOfOrder,
            R::BadChunk,
            R::Flash,
        ]
        .into_iter()
        .find(|r| *r as u8 == code)
    }

    /// The refusal and argument for an error of the core.
    pub fn of(e: &Error) -> (Self, u32) {
        let sat = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        match e {
            Error::Image(i) => match i {
                ImageError::BadMagic | ImageError::Malformed(_) => (Refusal::BadHeader, 0),
                ImageError::BadSignature { key } => (
                    Refusal::BadSignature,
                    u32::try_from(*key).unwrap_or(u32::MAX),
                ),
                ImageError::UnknownKey { valid, .. } | ImageError::ThresholdUnmet { valid, .. } => {
                    (
                        Refusal::ThresholdUnmet,
                        u32::try_from(*valid).unwrap_or(u32::MAX),
                    )
                }
                ImageError::WrongHardware => (Refusal::WrongHardware, 0),
                ImageError::Rollback { committed, .. } => (Refusal::Rollback, sat(*committed)),
                ImageError::TooLarge { capacity, .. } => (Refusal::TooLarge, *capacity),
                ImageError::DigestMismatch | ImageError::NotAnnounced => {
                    (Refusal::DigestMismatch, 0)
                }
            },
            Error::NotAllowed { phase, .. } => (Refusal::Busy, u32::from(phase.code())),
            Error::OutOfOrder { expected, .. } => (Refusal::OutOfOrder, *expected),
            Error::BadChunk { chunk, .. } => {
                (Refusal::BadChunk, u32::try_from(*chunk).unwrap_or(u32::MAX))
            }
            Error::Flash { .. }
            | Error::OutOfBounds { .. }
            | Error::Layout(_)
            | Error::StateLayout { .. } => (Refusal::Flash, 0),
        }
    }
}

/// What `INFO` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// Where the update stands.
    pub phase: Phase,
    /// Trial boots used in this cycle.
    pub attempts: u8,
    /// Trial boots allowed in this cycle.
    pub max_attempts: u8,
    /// Chunk size for `DATA`.
    pub chunk: u16,
    /// The committed security counter.
    pub committed_counter: u64,
    /// Bytes of the incoming image confirmed in DFU.
    pub received: u32,
    /// Manifest digest of the incoming image (zeros when none).
    pub pending: [u8; 32],
    /// The device's hardware id.
    pub hardware: Name,
    /// The image in ACTIVE, if it has a readable header.
    pub running: Option<Running>,
}

/// The image a device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    /// Its version.
    pub version: Version,
    /// Its security counter.
    pub security_counter: u64,
    /// Its release.
    pub release: Name,
}

/// Bytes of an `INFO` body.
pub const INFO_LEN: usize = 56 + 12 + 8 + 2 * NAME_LEN;

impl Info {
    /// The `INFO` body.
    pub fn encode(&self) -> [u8; INFO_LEN] {
        let mut b = [0u8; INFO_LEN];
        b[0] = 1;
        b[1] = self.phase.code();
        b[2] = self.attempts;
        b[3] = self.max_attempts;
        b[4..6].copy_from_slice(&self.chunk.to_le_bytes());
        b[8..16].copy_from_slice(&self.committed_counter.to_le_bytes());
        b[16..20].copy_from_slice(&self.received.to_le_bytes());
        b[20..52].copy_from_slice(&self.pending);
        if let Some(r) = &self.running {
            b[52] = 1;
            b[56..60].copy_from_slice(&r.version.major.to_le_bytes());
            b[60..64].copy_from_slice(&r.version.minor.to_le_bytes());
            b[64..68].copy_from_slice(&r.version.patch.to_le_bytes());
            b[68..76].copy_from_slice(&r.security_counter.to_le_bytes());
            b[76 + NAME_LEN..].copy_from_slice(r.release.field());
        }
        b[76..76 + NAME_LEN].copy_from_slice(self.hardware.field());
        b
    }

    /// Reads an `INFO` body.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != INFO_LEN || b[0] != 1 {
            return None;
        }
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | u64::from(u32_at(at + 4)) << 32;
        let mut pending = [0; 32];
        pending.copy_from_slice(&b[20..52]);
        let running = if b[52] == 1 {
            Some(Running {
                version: Version {
                    major: u32_at(56),
                    minor: u32_at(60),
                    patch: u32_at(64),
                },
                security_counter: u64_at(68),
                release: Name::from_field(&b[76 + NAME_LEN..])?,
            })
        } else {
            None
        };
        Some(Self {
            phase: Phase::from_code(b[1])?,
            attempts: b[2],
            max_attempts: b[3],
            chunk: u16::from_le_bytes([b[4], b[5]]),
            committed_counter: u64_at(8),
            received: u32_at(16),
            pending,
            hardware: Name::from_field(&b[76..76 + NAME_LEN])?,
            running,
        })
    }
}

/// A response from the device.
#[allow(
    clippy::large_enum_variant,
    reason = "built and encoded on the stack; there is no heap to box `Info` on"
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// `INFO`.
    Info(Info),
    /// `READY`.
    Ready {
        /// Offset to send from.
        resume: u32,
        /// The image length.
        total: u32,
        /// Chunk size.
        chunk: u16,
    },
    /// `ACK`.
    Ack {
        /// The next offset expected.
        next: u32,
    },
    /// `DONE`.
    Done,
    /// `NAK`.
    Nak,
    /// `REFUSED`.
    Refused {
        /// Why.
        refusal: Refusal,
        /// The refusal's argument.
        arg: u32,
    },
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

impl<'a> Request<'a> {
    /// Reads a request frame.
    pub fn decode(f: &Frame<'a>) -> Option<Self> {
        Some(match (f.kind, f.payload.len()) {
            (HELLO, 0) => Request::Hello,
            (BEGIN, _) => Request::Begin(f.payload),
            (DATA, 5..) => Request::Data {
                offset: u32_of(f.payload)?,
                data: &f.payload[4..],
            },
            (FINISH, 0) => Request::Finish,
            _ => return None,
        })
    }

    /// Encodes the request with `seq` for the wire into `out`; returns the length.
    pub fn encode(&self, seq: u16, out: &mut [u8; MAX_WIRE]) -> Result<usize, FrameError> {
        let mut body = [0u8; super::frame::MAX_PAYLOAD];
        let (kind, len) = match self {
            Request::Hello => (HELLO, 0),
            Request::Begin(block) => {
                let dst = body.get_mut(..block.len()).ok_or(FrameError::TooLong)?;
                dst.copy_from_slice(block);
                (BEGIN, block.len())
            }
            Request::Data { offset, data } => {
                let dst = body.get_mut(4..4 + data.len()).ok_or(FrameError::TooLong)?;
                dst.copy_from_slice(data);
                body[..4].copy_from_slice(&offset.to_le_bytes());
                (DATA, 4 + data.len())
            }
            Request::Finish => (FINISH, 0),
        };
        Frame {
            kind,
            seq,
            payload: &body[..len],
        }
        .encode(out)
    }
}

impl Response {
    /// Reads a response frame.
    pub fn decode(f: &Frame<'_>) -> Option<Self> {
        let p = f.payload;
        Some(match (f.kind, p.len()) {
            (INFO, _) => Response::Info(Info::decode(p)?),
            (READY, 10) => Response::Ready {
                resume: u32_of(p)?,
                total: u32_of(&p[4..])?,
                chunk: u16::from_le_bytes([p[8], p[9]]),
            },
            (ACK, 4) => Response::Ack { next: u32_of(p)? },
            (DONE, 0) => Response::Done,
            (NAK, 0) => Response::Nak,
            (REFUSED, 5) => Response::Refused {
                refusal: Refusal::from_code(p[0])?,
                arg: u32_of(&p[1..])?,
            },
            _ => return None,
        })
    }

    /// Encodes the response with `seq` for the wire into `out`; returns the length.
    pub fn encode(&self, seq: u16, out: &mut [u8; MAX_WIRE]) -> Result<usize, FrameError> {
        let mut body = [0u8; INFO_LEN];
        let (kind, len) = match self {
            Response::Info(info) => {
                body = info.encode();
                (INFO, INFO_LEN)
            }
            Response::Ready {
                resume,
                total,
                chunk,
            } => {
                body[..4].copy_from_slice(&resume.to_le_bytes());
                body[4..8].copy_from_slice(&total.to_le_bytes());
                body[8..10].copy_from_slice(&chunk.to_le_bytes());
                (READY, 10)
            }
            Response::Ack { next } => {
                body[..4].copy_from_slice(&next.to_le_bytes());
                (ACK, 4)
            }
            Response::Done => (DONE, 0),
            Response::Nak => (NAK, 0),
            Response::Refused { refusal, arg } => {
                body[0] = *refusal as u8;
                body[1..5].copy_from_slice(&arg.to_le_bytes());
                (REFUSED, 5)
            }
        };
        Frame {
            kind,
            seq,
            payload: &body[..len],
        }
        .encode(out)
    }
}
