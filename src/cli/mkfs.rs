//! `slate mkfs`: build one filesystem image from a directory, rootless.

use clap::Subcommand;

use super::{mkfs_cpio, mkfs_fat};

/// The filesystem to build.
#[derive(Debug, Subcommand)]
pub enum Mkfs {
    /// Build a FAT image (FAT32 from 33 MiB, as an EFI system partition).
    Fat(mkfs_fat::FatArgs),
    /// Build a newc cpio archive (an initramfs), optionally compressed.
    Cpio(mkfs_cpio::CpioArgs),
}

/// Runs `slate mkfs ...`.
pub fn run(cmd: Mkfs) -> anyhow::Result<()> {
    match cmd {
        Mkfs::Fat(args) => mkfs_fat::run(args),
        Mkfs::Cpio(args) => mkfs_cpio::run(args),
    }
}
