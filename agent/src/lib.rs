#![doc = include_str!("../README.md")]

pub mod board;
pub mod bootctl;
pub mod bootenv;
pub mod cli;
pub mod config;
pub mod download;
pub mod driver;
pub mod faults;
pub mod gateway;
pub mod health;
pub mod journal;
pub mod keys;
pub mod mqtt;
pub mod signer;
pub mod slots;
pub mod update;
