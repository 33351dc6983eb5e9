//! slate composes minimal, immutable A/B OS images and updates them safely.
//!
//! The library holds all logic; `src/main.rs` only parses arguments and calls
//! [`cli::run`]. Architecture, one concept per module:
//!
//! - [`units`]: byte sizes and their parser.
//! - [`tree`]: the in-memory filesystem tree that every image writer consumes.
//! - [`io`]: atomic outputs and region writers.
//! - [`progress`]: progress bars on a terminal, quiet otherwise.
//! - [`qemu`]: boot a disk in QEMU and follow the guest's events.
//! - [`cli`]: the command-line interface.

pub mod build_manifest;
pub mod cli;
pub mod io;
pub mod progress;
pub mod qemu;
pub mod reproducible;
pub mod tree;
pub mod units;
