#![doc = include_str!("../README.md")]

pub mod bootenv;
pub mod update;
