#![doc = include_str!("../README.md")]
#![no_std]

#[cfg(test)]
extern crate std;

#[cfg(any(feature = "sim", feature = "proto"))]
extern crate alloc;

pub mod anchor;
pub mod boot;
pub mod crc;
pub mod error;
pub mod flash;
pub mod image;
pub mod layout;
#[cfg(feature = "sim")]
pub mod sim;
pub mod state;
mod swap;
pub mod transfer;
pub mod update;

pub use anchor::TrustAnchor;
pub use boot::{BootError, Booted, Bootloader};
pub use error::Error;
pub use image::{ImageHeader, Version};
pub use layout::{Layout, Region};
pub use state::{Phase, Status};
pub use update::{Config, Updater};

/// Size of the RAM buffer used to copy flash pages and of a transfer chunk, in bytes. Every
/// flash the layout accepts has an erase size that is a multiple of it and a write size that
/// divides it, so a page copy is a whole number of aligned writes.
pub const PAGE_BUF: usize = 256;
