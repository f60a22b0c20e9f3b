//! The transfer protocol over a byte stream (a UART, or a pty in tests): the gateway sends an
//! image in acknowledged, CRC-checked, sequence-numbered frames, and the device writes it
//! into DFU and resumes after a reset from the last page it confirmed. The wire format is
//! described in the crate's README; [`frame`] and [`message`] are its only definition.

pub mod device;
pub mod frame;
pub mod message;
pub mod sender;

pub use device::{Device, Served};
pub use frame::{Decoder, Frame, FrameError, MAX_WIRE};
pub use message::{Info, Refusal, Request, Response, Running};
pub use sender::{SendError, Sender};
