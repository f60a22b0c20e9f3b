#![doc = include_str!("../README.md")]

pub mod cli;
pub mod client;
pub mod document;
pub mod error;
pub mod fsutil;
pub mod hashing;
pub mod keys;
pub mod output;
pub mod planner;
pub mod release;
pub mod rootcmd;
pub mod service;
pub mod service_cli;
pub mod store;
pub mod verification;
pub mod when;

pub use error::Error;
