//! `slate extract`: write one artifact of a verified bundle to a file or a
//! block device, each chunk verified before it is written, then the written
//! bytes read back from storage (not the page cache) and compared with the
//! signed SHA-256 before success is claimed (what the device installer
//! does, usable on a host to flash a slot or inspect an image).

use crate::bundle::{ChunkData, Digest, Holes, TrustedKeys, open};
use crate::io::AtomicFile;
use crate::progress::Progress;
use anyhow::{Context, bail};
use clap::Args;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

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

/// Where the artifact goes.
enum Output {
    /// A block device, written in place from offset 0.
    Device(File),
    /// A file, visible only once complete and read back.
    File(AtomicFile),
}

/// Runs `slate extract`.
pub fn run(args: ExtractArgs) -> anyhow::Result<()> {
    let keys = TrustedKeys::from_pem_files(&args.pubkeys, args.threshold)?;
    let source = crate::io::source::Source::parse(&args.bundle);
    let src = source.open()?;
    let what = format!("bundle {source}");
    let mut reader = open(src, &keys).with_context(|| format!("verifying {what}"))?;
    let out = args.output.display();
    let to_device = std::fs::metadata(&args.output).is_ok_and(|m| m.file_type().is_block_device());
    let mut output = if to_device {
        let dev = File::options()
            .read(true)
            .write(true)
            .open(&args.output)
            .with_context(|| format!("opening {out}"))?;
        Output::Device(dev)
    } else {
        Output::File(AtomicFile::create(&args.output).with_context(|| format!("creating {out}"))?)
    };
    let mut found = None;
    while let Some(a) = reader
        .next_artifact()
        .with_context(|| format!("reading {what}"))?
    {
        if a.name != args.artifact {
            // Verified, not skipped: extract vouches for the whole bundle.
            reader
                .verify_artifact(|_| {})
                .with_context(|| format!("verifying {what}"))?;
            continue;
        }
        let progress = Progress::bytes(a.size, &a.name);
        let result = match &mut output {
            // A device may hold old data: holes are zeroed (ZERO_RANGE).
            Output::Device(dev) => {
                // Refuse a device too small before writing anything to it.
                let capacity = dev
                    .seek(SeekFrom::End(0))
                    .with_context(|| format!("sizing {out}"))?;
                if capacity < a.size {
                    bail!(
                        "{out} holds {capacity} bytes, artifact {} of {what} is {} bytes",
                        a.name,
                        a.size
                    );
                }
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
            Output::File(f) => reader
                .copy_artifact(f.file(), Holes::Seek, |n| progress.inc(n))
                .map_err(anyhow::Error::from),
        };
        progress.finish();
        result.with_context(|| format!("writing {} from {what} to {out}", a.name))?;
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
    // What is claimed is what storage returns, not what was handed to it.
    let (read_from, written) = match &mut output {
        Output::Device(dev) => {
            dev.sync_all().with_context(|| format!("syncing {out}"))?;
            (args.output.as_path(), "the device")
        }
        Output::File(f) => {
            f.file()
                .sync_all()
                .with_context(|| format!("syncing {}", f.path().display()))?;
            (f.path(), "the file")
        }
    };
    read_back(read_from, a.size, a.sha256).with_context(|| {
        format!(
            "checking {out}: {} as written to {written} does not match {what}",
            a.name
        )
    })?;
    if let Output::File(f) = output {
        f.commit().with_context(|| format!("saving {out}"))?;
    }
    if crate::progress::quiet() {
        return Ok(());
    }
    eprintln!(
        "wrote {} ({} bytes) to {out}; read back from {written}: sha256 {} as signed",
        a.name, a.size, a.sha256,
    );
    Ok(())
}

/// Reads the first `len` bytes of `path` from storage (O_DIRECT, or after
/// dropping cached pages) and compares their SHA-256 with `want`.
fn read_back(path: &Path, len: u64, want: Digest) -> anyhow::Result<()> {
    let (digest, n) = crate::io::blockdev::sha256_uncached(path, len)
        .with_context(|| format!("reading back {}", path.display()))?;
    if n != len {
        bail!("only {n} of {len} bytes could be read back");
    }
    let got = Digest(digest);
    if got != want {
        bail!("read back sha256 {got}, signed {want}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_back_compares_what_storage_returns() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"written").unwrap();
        read_back(&p, 7, Digest::of(b"written")).unwrap();
        let e = read_back(&p, 7, Digest::of(b"expects")).unwrap_err();
        assert!(format!("{e:#}").contains("read back sha256"), "{e:#}");
        let e = read_back(&p, 8, Digest::of(b"written")).unwrap_err();
        assert!(format!("{e:#}").contains("only 7 of 8 bytes"), "{e:#}");
    }
}
