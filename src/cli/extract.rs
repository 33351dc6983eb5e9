//! `slate extract`: write one artifact of a verified bundle to a file or a
//! block device, each chunk verified before it is written (what the device
//! installer does, usable on a host to flash a slot or inspect an image).

use crate::bundle::{ChunkData, Holes, TrustedKeys, open};
use crate::io::AtomicFile;
use crate::progress::Progress;
use anyhow::{Context, bail};
use clap::Args;
use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

/// Arguments of `slate extract`.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The bundle: a file, a block device holding one, or an http(s) URL.
    pub bundle: String,
    /// Trusted public key, SPKI PEM; repeat to trust several.
    #[arg(long = "pubkey", value_name = "PUB", required = true)]
    pub pubkeys: Vec<PathBuf>,
    /// How many distinct trusted keys must have signed.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threshold: usize,
    /// The artifact to write: rootfs, kernel, initrd, boot.
    #[arg(long, value_name = "NAME", default_value = "rootfs")]
    pub artifact: String,
    /// Output file (replaced only when complete) or block device.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
}

/// Runs `slate extract`.
pub fn run(args: ExtractArgs) -> anyhow::Result<()> {
    let keys = TrustedKeys::from_pem_files(&args.pubkeys, args.threshold)?;
    let source = crate::io::source::Source::parse(&args.bundle);
    let src = source.open()?;
    let what = format!("bundle {source}");
    let mut reader = open(src, &keys).with_context(|| format!("verifying {what}"))?;
    let to_device = std::fs::metadata(&args.output).is_ok_and(|m| m.file_type().is_block_device());
    let mut atomic = None;
    let mut device = None;
    if to_device {
        device = Some(
            File::options()
                .write(true)
                .open(&args.output)
                .with_context(|| format!("opening {}", args.output.display()))?,
        );
    } else {
        atomic = Some(
            AtomicFile::create(&args.output)
                .with_context(|| format!("creating {}", args.output.display()))?,
        );
    }
    let mut found = None;
    while let Some(a) = reader
        .next_artifact()
        .with_context(|| format!("reading {what}"))?
    {
        if a.name != args.artifact {
            continue;
        }
        let progress = Progress::bytes(a.size, &a.name);
        let result = match (&mut device, &mut atomic) {
            // A device may hold old data: holes are zeroed (ZERO_RANGE).
            (Some(dev), _) => {
                let mut w = crate::io::blockdev::DeviceWriter::new(dev);
                reader
                    .read_chunks(|c| {
                        progress.inc(c.len());
                        match c.data {
                            ChunkData::Bytes(b) => w.write(b),
                            ChunkData::Zeros(n) => w.write_zeros(n),
                        }
                    })
                    .map_err(anyhow::Error::from)
                    .and_then(|()| w.finish().map(|_| ()).map_err(anyhow::Error::from))
            }
            // A new file reads as zeros: holes stay holes.
            (None, Some(f)) => reader
                .copy_artifact(f.file(), Holes::Seek, |n| progress.inc(n))
                .map_err(anyhow::Error::from),
            (None, None) => unreachable!("one output is always open"),
        };
        progress.finish();
        result.with_context(|| format!("writing {} from {what}", a.name))?;
        found = Some(a);
        break;
    }
    let Some(a) = found else {
        bail!("{what} has no artifact named {:?}", args.artifact);
    };
    // The rest of the bundle must verify too: a valid prefix is not a valid bundle.
    reader
        .finish()
        .with_context(|| format!("verifying {what}"))?;
    match (device, atomic) {
        (Some(dev), _) => dev
            .sync_all()
            .with_context(|| format!("syncing {}", args.output.display()))?,
        (None, Some(f)) => f
            .commit()
            .with_context(|| format!("saving {}", args.output.display()))?,
        (None, None) => {}
    }
    if crate::progress::quiet() {
        return Ok(());
    }
    eprintln!(
        "wrote {} ({} bytes, sha256 {}) to {}",
        a.name,
        a.size,
        a.sha256,
        args.output.display()
    );
    Ok(())
}
