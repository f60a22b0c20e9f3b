//! A loopback link: the gateway's `Sender` writes frames, the real `Device` session answers
//! them synchronously, with optional damage on the way in either direction.

use std::collections::VecDeque;

use embedded_io::{ErrorKind, ErrorType, Read, Write};
use swell_firmware::transfer::{Decoder, Device, MAX_WIRE};

use super::Flash;

/// A link error: the device lost power (the session is dead until the test resets it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkError(pub ErrorKind);

impl core::fmt::Display for LinkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "link: {:?}", self.0)
    }
}

impl core::error::Error for LinkError {}

impl embedded_io::Error for LinkError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

/// Damage to apply to frames, counted from the first frame sent over the link.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Requests (by index) to lose before the device sees them.
    pub drop_requests: Vec<usize>,
    /// Requests (by index) to corrupt: one byte flipped in the middle.
    pub corrupt_requests: Vec<usize>,
    /// Responses (by index) to lose.
    pub drop_responses: Vec<usize>,
    /// Responses (by index) to corrupt.
    pub corrupt_responses: Vec<usize>,
}

pub struct Loopback<'d, 'f> {
    pub device: &'d mut Device<'static, &'f mut Flash>,
    decoder: Decoder,
    frame: Vec<u8>,
    out: VecDeque<u8>,
    pub faults: Faults,
    pub requests: usize,
    pub responses: usize,
}

impl<'d, 'f> Loopback<'d, 'f> {
    pub fn new(device: &'d mut Device<'static, &'f mut Flash>, faults: Faults) -> Self {
        Self {
            device,
            decoder: Decoder::new(),
            frame: Vec::new(),
            out: VecDeque::new(),
            faults,
            requests: 0,
            responses: 0,
        }
    }

    fn powered(&mut self) -> bool {
        self.device.updater().flash_mut().is_powered()
    }

    fn deliver(&mut self, wire: &[u8]) -> Result<(), LinkError> {
        let index = self.requests;
        self.requests += 1;
        if self.faults.drop_requests.contains(&index) {
            return Ok(());
        }
        let mut wire = wire.to_vec();
        if self.faults.corrupt_requests.contains(&index) {
            let mid = wire.len() / 2;
            wire[mid] ^= 0x21;
            if wire[mid] == 0 {
                wire[mid] = 0x55;
            }
        }
        for b in wire {
            let Some(frame) = self.decoder.push(b) else {
                continue;
            };
            let mut out = [0u8; MAX_WIRE];
            let raw = frame.map(|len| self.decoder.frame(len));
            let (len, _) = self.device.handle(raw, &mut out);
            if !self.powered() {
                return Err(LinkError(ErrorKind::Other));
            }
            let index = self.responses;
            self.responses += 1;
            if self.faults.drop_responses.contains(&index) {
                continue;
            }
            let mut resp = out[..len].to_vec();
            if self.faults.corrupt_responses.contains(&index) {
                let mid = resp.len() / 2;
                resp[mid] ^= 0x12;
                if resp[mid] == 0 {
                    resp[mid] = 0x55;
                }
            }
            self.out.extend(resp);
        }
        Ok(())
    }
}

impl ErrorType for Loopback<'_, '_> {
    type Error = LinkError;
}

impl Write for Loopback<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        if !self.powered() {
            return Err(LinkError(ErrorKind::Other));
        }
        for &b in buf {
            self.frame.push(b);
            if b == 0 {
                let frame = std::mem::take(&mut self.frame);
                self.deliver(&frame)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        Ok(())
    }
}

impl Read for Loopback<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        if self.out.is_empty() {
            return Err(LinkError(ErrorKind::TimedOut));
        }
        let n = buf.len().min(self.out.len());
        for (dst, src) in buf.iter_mut().zip(self.out.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}
