//! slate composes minimal, immutable A/B OS images and updates them safely.
//!
//! The library holds all logic; `src/main.rs` only parses arguments and calls
//! [`cli::run`]. Architecture, one concept per module:
//!
//! - [`units`]: byte sizes and their parser.
//! - [`tree`]: the in-memory filesystem tree that every image writer consumes.
//! - [`io`]: atomic outputs and region writers.
//! - [`filesystems`]: ext4, FAT, GPT and cpio writers (and a GPT reader).
//! - [`progress`]: progress bars on a terminal, quiet otherwise.
//! - [`bundle`]: signed update bundles: format, keys, writer, streaming reader.
//! - [`qemu`]: boot a disk in QEMU and follow the guest's events.
//! - [`cli`]: the command-line interface.

pub mod agent;
pub mod authenticode;
pub mod boot_env;
pub mod boot_spec;
pub mod build_manifest;
pub mod bundle;
pub mod channel;
pub mod cli;
pub mod compose;
pub mod elf;
pub mod filesystems;
pub mod image_info;
pub mod io;
pub mod kernel;
pub mod packages;
pub mod progress;
pub mod qemu;
pub mod recipe;
pub mod reproducible;
pub mod sbom;
pub mod slot_image;
pub mod tree;
pub mod uki;
pub mod units;
pub mod utc;
pub mod verity;
pub mod version;
