//! Frames on the byte stream: `kind, seq, payload, CRC-32`, COBS-encoded and ended by a zero
//! byte.
//!
//! COBS (consistent overhead byte stuffing) removes every zero from the frame, so a zero
//! always ends a frame: after line noise, a dropped byte or a reset mid-frame, the receiver
//! resynchronizes at the next zero without any timeout. The CRC catches the rest.

use crate::crc::crc32;

/// Most payload bytes in a frame: a full header block.
pub const MAX_PAYLOAD: usize = crate::image::MAX_BLOCK_LEN;
/// Most bytes of a decoded frame: kind (1), seq (2), payload, CRC (4).
pub const MAX_FRAME: usize = 3 + MAX_PAYLOAD + 4;
/// Most bytes of an encoded frame on the wire, delimiter included.
pub const MAX_WIRE: usize = MAX_FRAME + MAX_FRAME / 254 + 2;

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Longer than [`MAX_FRAME`].
    #[error("frame too long")]
    TooLong,
    /// Not valid COBS, or shorter than a header and CRC.
    #[error("malformed frame")]
    Malformed,
    /// The CRC does not match.
    #[error("frame CRC mismatch")]
    Crc,
}

/// A frame's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The message kind.
    pub kind: u8,
    /// The sequence number (a response echoes its request's).
    pub seq: u16,
    /// The message body.
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Checks the CRC of a decoded frame and splits it.
    pub fn parse(raw: &'a [u8]) -> Result<Self, FrameError> {
        if raw.len() < 7 {
            return Err(FrameError::Malformed);
        }
        let (body, crc) = raw.split_at(raw.len() - 4);
        if crc32(body).to_le_bytes() != crc {
            return Err(FrameError::Crc);
        }
        Ok(Self {
            kind: body[0],
            seq: u16::from_le_bytes([body[1], body[2]]),
            payload: &body[3..],
        })
    }

    /// Encodes the frame for the wire (COBS, then the zero delimiter) into `out`; returns the
    /// length. `out` must hold [`MAX_WIRE`] bytes.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, FrameError> {
        if self.payload.len() > MAX_PAYLOAD {
            return Err(FrameError::TooLong);
        }
        let mut raw = [0u8; MAX_FRAME];
        let n = 3 + self.payload.len();
        raw[0] = self.kind;
        raw[1..3].copy_from_slice(&self.seq.to_le_bytes());
        raw[3..n].copy_from_slice(self.payload);
        let crc = crc32(&raw[..n]);
        raw[n..n + 4].copy_from_slice(&crc.to_le_bytes());
        cobs_encode(&raw[..n + 4], out)
    }
}

/// COBS-encodes `src` into `dst` and appends the zero delimiter; returns the length.
pub fn cobs_encode(src: &[u8], dst: &mut [u8]) -> Result<usize, FrameError> {
    let mut code_at = 0;
    let mut out = 1;
    let mut code: u8 = 1;
    let put = |dst: &mut [u8], at: usize, b: u8| -> Result<(), FrameError> {
        *dst.get_mut(at).ok_or(FrameError::TooLong)? = b;
        Ok(())
    };
    for &b in src {
        if b == 0 {
            put(dst, code_at, code)?;
            code_at = out;
            out += 1;
            code = 1;
        } else {
            put(dst, out, b)?;
            out += 1;
            code += 1;
            if code == 0xFF {
                put(dst, code_at, code)?;
                code_at = out;
                out += 1;
                code = 1;
            }
        }
    }
    put(dst, code_at, code)?;
    put(dst, out, 0)?;
    Ok(out + 1)
}

/// Decodes COBS frames from a byte stream, one byte at a time, into a fixed buffer.
#[derive(Debug)]
pub struct Decoder {
    buf: [u8; MAX_FRAME],
    len: usize,
    /// Data bytes left in the current COBS block; 0 means the next byte is a code.
    left: u8,
    /// Whether the current block's end stands for a zero (its code was below 0xFF).
    zero: bool,
    bad: Option<FrameError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// An empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_FRAME],
            len: 0,
            left: 0,
            zero: false,
            bad: None,
        }
    }

    /// Feeds one byte. At a delimiter, returns the decoded frame's length (its bytes are
    /// [`Decoder::frame`]) or why it was dropped; an empty frame (two delimiters in a row)
    /// returns nothing.
    pub fn push(&mut self, byte: u8) -> Option<Result<usize, FrameError>> {
        if byte == 0 {
            let result = match self.bad {
                Some(e) => Some(Err(e)),
                None if self.left != 0 => Some(Err(FrameError::Malformed)),
                None if self.len == 0 => None,
                None => Some(Ok(self.len)),
            };
            self.len = 0;
            self.left = 0;
            self.zero = false;
            self.bad = None;
            return result;
        }
        if self.bad.is_some() {
            return None;
        }
        if self.left == 0 {
            // A code byte: the previous block, if it ended in a zero, gets it now.
            if self.zero {
                self.put(0);
            }
            self.left = byte - 1;
            self.zero = byte != 0xFF;
        } else {
            self.put(byte);
            self.left -= 1;
        }
        None
    }

    fn put(&mut self, b: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = b;
                self.len += 1;
            }
            None => self.bad = Some(FrameError::TooLong),
        }
    }

    /// The frame whose length `push` returned.
    pub fn frame(&self, len: usize) -> &[u8] {
        &self.buf[..len.min(MAX_FRAME)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(payload: &[u8]) {
        let mut wire = [0u8; MAX_WIRE];
        let n = Frame {
            kind: 3,
            seq: 0x1234,
            payload,
        }
        .encode(&mut wire)
        .unwrap();
        assert!(wire[..n - 1].iter().all(|&b| b != 0));
        assert_eq!(wire[n - 1], 0);
        let mut d = Decoder::new();
        let mut got = None;
        for &b in &wire[..n] {
            if let Some(r) = d.push(b) {
                got = Some(r.unwrap());
            }
        }
        let len = got.unwrap();
        let f = Frame::parse(d.frame(len)).unwrap();
        assert_eq!((f.kind, f.seq, f.payload), (3, 0x1234, payload));
    }

    #[test]
    fn frames_round_trip_through_cobs() {
        round_trip(&[]);
        round_trip(&[0; 10]);
        round_trip(&[0xFF; 300]);
        let mixed: [u8; MAX_PAYLOAD] = core::array::from_fn(|i| u8::try_from(i % 7).unwrap());
        round_trip(&mixed);
        let long_runs: [u8; 520] = core::array::from_fn(|i| if i % 260 == 0 { 0 } else { 1 });
        round_trip(&long_runs);
    }

    #[test]
    fn damaged_frames_are_dropped_and_the_next_one_is_read() {
        let mut wire = [0u8; MAX_WIRE];
        let n = Frame {
            kind: 1,
            seq: 9,
            payload: b"hello",
        }
        .encode(&mut wire)
        .unwrap();
        let mut d = Decoder::new();
        // A flipped bit fails the CRC (or the COBS structure).
        let mut bad = wire;
        bad[4] ^= 0x40;
        let r = bad[..n].iter().find_map(|&b| d.push(b)).unwrap();
        assert!(r.is_err() || Frame::parse(d.frame(r.unwrap())).is_err());
        // Noise without a delimiter, then a good frame: the noise is dropped with an error.
        for b in [7, 7, 7] {
            assert_eq!(d.push(b), None);
        }
        let r = wire[..n].iter().find_map(|&b| d.push(b)).unwrap();
        assert!(r.is_err() || Frame::parse(d.frame(r.unwrap())).is_err());
        let r = wire[..n].iter().find_map(|&b| d.push(b)).unwrap().unwrap();
        assert_eq!(Frame::parse(d.frame(r)).unwrap().payload, b"hello");
        // Too long.
        for _ in 0..MAX_FRAME + 10 {
            d.push(1);
        }
        assert_eq!(d.push(0), Some(Err(FrameError::TooLong)));
    }
}
