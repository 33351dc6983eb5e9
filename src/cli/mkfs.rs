//! `slate mkfs`: filesystem images from a directory, without root.

use crate::filesystems::ext4::{Ext4Options, Ext4Plan};
use crate::io::AtomicFile;
use crate::progress::Progress;
use crate::reproducible::{parse_uuid, source_date_epoch};
use crate::tree::{ScanOptions, scan_host_dir};
use crate::units::Bytes;
use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// Filesystem types `slate mkfs` writes.
#[derive(Debug, Subcommand)]
pub enum Mkfs {
    /// Make an ext4 image of a directory, without root
    ///
    /// Owners, modes, times and extended attributes come from the source, as
    /// with `mke2fs -d` (owners become 0:0 with --all-root).
    /// SOURCE_DATE_EPOCH, when set, clamps every timestamp and sets the
    /// superblock's times; the output is reproducible.
    Ext4(Ext4Args),
    /// Build a FAT image (FAT32 from 33 MiB, as an EFI system partition).
    Fat(super::mkfs_fat::FatArgs),
    /// Build a newc cpio archive (an initramfs), optionally compressed.
    Cpio(super::mkfs_cpio::CpioArgs),
}

/// Arguments of `slate mkfs ext4`.
#[derive(Debug, Args)]
pub struct Ext4Args {
    /// Directory whose contents become the filesystem's root
    pub src_dir: PathBuf,
    /// Image file to create (replaced only when complete)
    pub out: PathBuf,
    /// Image size: 64M, 1G, 4096K or bytes [default: contents plus 10%]
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Volume label (at most 16 bytes)
    #[arg(long, value_name = "LABEL", default_value = "")]
    pub label: String,
    /// Filesystem UUID [default: derived from the label and the contents]
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// Add an empty journal (for filesystems mounted read-write)
    #[arg(long)]
    pub journal: bool,
    /// Make every file owned by uid 0, gid 0
    #[arg(long)]
    pub all_root: bool,
}

/// Runs `slate mkfs`.
pub fn run(cmd: Mkfs) -> anyhow::Result<()> {
    match cmd {
        Mkfs::Ext4(args) => ext4(args),
        Mkfs::Fat(args) => super::mkfs_fat::run(args),
        Mkfs::Cpio(args) => super::mkfs_cpio::run(args),
    }
}

fn ext4(a: Ext4Args) -> anyhow::Result<()> {
    let size = a
        .size
        .as_deref()
        .map(|s| s.parse::<Bytes>().context("--size"))
        .transpose()?;
    let uuid = a
        .uuid
        .as_deref()
        .map(|s| {
            parse_uuid(s).ok_or_else(|| {
                anyhow!(
                    "--uuid {s:?} is not a UUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
                )
            })
        })
        .transpose()?;
    let epoch = source_date_epoch()?;
    let mut tree = scan_host_dir(&a.src_dir, &ScanOptions::default())
        .with_context(|| format!("scanning {}", a.src_dir.display()))?;
    if a.all_root {
        tree.make_all_root();
    }
    if let Some(e) = epoch {
        tree.clamp_mtimes(e);
    }
    let opts = Ext4Options {
        size,
        label: a.label,
        uuid,
        journal: a.journal,
        timestamp: epoch,
        ..Ext4Options::default()
    };
    let plan = Ext4Plan::new(&tree, &opts)?;
    let mut out =
        AtomicFile::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    // The temp file is private (0600); the image gets the usual 0666 & !umask.
    let mask = rustix::process::umask(rustix::fs::Mode::empty());
    rustix::process::umask(mask);
    let mode = 0o666 & !mask.bits();
    out.file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| out.file().set_len(plan.size().get()))
        .with_context(|| format!("sizing {}", a.out.display()))?;
    let progress = Progress::bytes(plan.data_bytes(), "ext4");
    let written = plan.write(out.file(), &progress);
    progress.finish();
    written.with_context(|| format!("writing {}", a.out.display()))?;
    out.commit()
        .with_context(|| format!("saving {}", a.out.display()))?;
    Ok(())
}
