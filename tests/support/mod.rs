//! Helpers shared by several test binaries.

pub mod broker;
