#![doc = include_str!("../README.md")]

pub mod bootenv;
pub mod slots;
pub mod update;
