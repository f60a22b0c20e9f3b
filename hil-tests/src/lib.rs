#![doc = include_str!("../README.md")]

pub mod demo;
pub mod faults;
pub mod fleet;
pub mod fleet_demo;
