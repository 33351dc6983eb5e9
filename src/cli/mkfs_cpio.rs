//! `slate mkfs cpio SRC_DIR OUT`: a newc cpio archive (initramfs) from a directory.

use anyhow::Context;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

use crate::filesystems::cpio::{self, Compression};
use crate::io::AtomicFile;
use crate::reproducible::source_date_epoch;
use crate::tree::{ScanOptions, scan_host_dir};

/// Compression of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressArg {
    /// No compression.
    None,
    /// gzip, level 6.
    Gzip,
    /// zstd, level 9.
    Zstd,
}

/// Arguments of `slate mkfs cpio`.
#[derive(Debug, Args)]
pub struct CpioArgs {
    /// Directory whose contents become the archive.
    pub src_dir: PathBuf,
    /// Archive file to create (replaced atomically).
    pub out: PathBuf,
    /// Compression.
    #[arg(long, value_enum, default_value = "none", value_name = "METHOD")]
    pub compress: CompressArg,
    /// Make every file owned by 0:0 (root) instead of the source's owners.
    #[arg(long)]
    pub all_root: bool,
}

/// Runs `slate mkfs cpio`.
pub fn run(args: CpioArgs) -> anyhow::Result<()> {
    let mut tree = scan_host_dir(&args.src_dir, &ScanOptions { xattrs: false })?;
    if let Some(epoch) = source_date_epoch()? {
        tree.clamp_mtimes(epoch);
    }
    if args.all_root {
        tree.make_all_root();
    }
    let compression = match args.compress {
        CompressArg::None => Compression::None,
        CompressArg::Gzip => Compression::Gzip,
        CompressArg::Zstd => Compression::Zstd,
    };
    let out = args.out.display();
    let mut file = AtomicFile::create(&args.out).with_context(|| format!("creating {out}"))?;
    let summary = cpio::write_cpio(&tree, compression, file.file())
        .with_context(|| format!("building {out}"))?;
    file.commit().with_context(|| format!("writing {out}"))?;
    println!(
        "{out}: {} entries, {} bytes of data, {} bytes uncompressed",
        summary.entries, summary.data_bytes, summary.archive_bytes
    );
    Ok(())
}
