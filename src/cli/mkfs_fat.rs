//! `slate mkfs fat SRC_DIR OUT`: a FAT image (e.g. an ESP) from a directory.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

use crate::filesystems::fat::{self, FatError, FatOptions};
use crate::io::AtomicFile;
use crate::reproducible::source_date_epoch;
use crate::tree::{ScanOptions, scan_host_dir};
use crate::units::{Bytes, MIB};

/// Arguments of `slate mkfs fat`.
#[derive(Debug, Args)]
pub struct FatArgs {
    /// Directory whose contents become the filesystem.
    pub src_dir: PathBuf,
    /// Image file to create (replaced atomically).
    pub out: PathBuf,
    /// Image size, e.g. 64M or 1G [default: content plus headroom].
    #[arg(long, value_name = "SIZE")]
    pub size: Option<Bytes>,
    /// Volume label, up to 11 characters (stored upper-case) [default: NO NAME].
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
}

/// Runs `slate mkfs fat`.
pub fn run(args: FatArgs) -> anyhow::Result<()> {
    let tree = scan_host_dir(&args.src_dir, &ScanOptions { xattrs: false })?;
    let mut opts = FatOptions {
        size: None,
        label: args.label.clone().unwrap_or_default(),
        volume_id: None,
        timestamp: source_date_epoch()?,
    };
    let out = args.out.display();
    let size = match args.size {
        Some(size) => {
            let needed =
                fat::required_size(&tree, &opts).with_context(|| format!("building {out}"))?;
            if needed > size {
                anyhow::bail!(
                    "{out}: tree needs at least {} MiB, --size is {} MiB",
                    needed.mib_ceil(),
                    size.get() / MIB
                );
            }
            size
        }
        None => fat::default_size(&tree, &opts).with_context(|| format!("building {out}"))?,
    };
    opts.size = Some(size);

    let mut file = AtomicFile::create(&args.out).with_context(|| format!("creating {out}"))?;
    file.file()
        .set_len(size.get())
        .with_context(|| format!("sizing {out}"))?;
    let summary = match fat::write_fat(&tree, &opts, file.file()) {
        Ok(s) => s,
        Err(FatError::TooSmall { needed, size }) => anyhow::bail!(
            "{out}: tree needs at least {} MiB, --size is {} MiB",
            needed.mib_ceil(),
            size.get() / MIB
        ),
        Err(e) => return Err(e).with_context(|| format!("building {out}")),
    };
    file.commit().with_context(|| format!("writing {out}"))?;
    println!(
        "{out}: {} {}, {}-byte clusters, label {}, id {:04X}-{:04X}, {} files, {} dirs, {} free",
        summary.kind,
        summary.size,
        summary.cluster_size,
        summary.label,
        summary.volume_id >> 16,
        summary.volume_id & 0xFFFF,
        summary.files,
        summary.directories,
        Bytes(summary.free_bytes),
    );
    Ok(())
}
