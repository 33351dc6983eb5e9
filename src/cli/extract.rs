//! `slate extract`: write one artifact of a verified bundle to a file or a
//! block device, each chunk verified before it is written, then the written
//! bytes read back from storage (not the page cache) and compared with the
//! signed SHA-256 before success is claimed (what the device installer
//! does, usable on a host to flash a slot or inspect an image).

use crate::bundle::delta::fetch::{Remote, fetch_head};
use crate::bundle::delta::{Counts, Seed, SeedIndex};
use crate::bundle::{
    ArtifactHeader, BundleError, BundleReader, ChunkSink, ChunkSource, DeviceSink, Digest,
    FileSink, Manifest, TrustedKeys, VerifiedChunk, open,
};
use crate::io::AtomicFile;
use crate::io::ranges::Counting;
use crate::io::source::{HttpTimeouts, Source};
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
    /// A file that may hold chunks of the artifact (an older image, slot or
    /// kernel); repeatable. With an http(s) URL, only the chunks no seed
    /// holds are downloaded, with range requests; a server without range
    /// support, or any failure, falls back to streaming the bundle once.
    #[arg(long = "seed", value_name = "FILE")]
    pub seeds: Vec<PathBuf>,
    /// Print what was downloaded and reused as JSON (docs/json.md).
    #[arg(long)]
    pub json: bool,
}

/// Where the artifact goes.
enum Output {
    /// A block device, written in place from offset 0.
    Device(File),
    /// A file, visible only once complete and read back.
    File(AtomicFile),
}

impl Output {
    fn open(path: &Path) -> anyhow::Result<Output> {
        let out = path.display();
        if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device()) {
            let dev = File::options()
                .read(true)
                .write(true)
                .open(path)
                .with_context(|| format!("opening {out}"))?;
            Ok(Output::Device(dev))
        } else {
            Ok(Output::File(
                AtomicFile::create(path).with_context(|| format!("creating {out}"))?,
            ))
        }
    }

    /// Refuses a device too small before anything is written to it.
    fn check_room(&mut self, out: &Path, a: &ArtifactHeader, what: &str) -> anyhow::Result<()> {
        if let Output::Device(dev) = self {
            let capacity = dev
                .seek(SeekFrom::End(0))
                .with_context(|| format!("sizing {}", out.display()))?;
            if capacity < a.size {
                bail!(
                    "{} holds {capacity} bytes, artifact {} of {what} is {} bytes",
                    out.display(),
                    a.name,
                    a.size
                );
            }
        }
        Ok(())
    }

    /// Refuses a device too small, then writes the current artifact of `src`.
    fn write_checked(
        &mut self,
        src: &mut dyn ChunkSource,
        a: &ArtifactHeader,
        out: &Path,
        what: &str,
    ) -> anyhow::Result<()> {
        self.check_room(out, a, what)?;
        self.write(src, a)
            .with_context(|| format!("writing {} from {what} to {}", a.name, out.display()))
    }

    /// Writes the current artifact of `src`, every chunk verified first.
    fn write(&mut self, src: &mut dyn ChunkSource, a: &ArtifactHeader) -> anyhow::Result<()> {
        let progress = Progress::bytes(a.size, &a.name);
        let result = match self {
            // A device may hold old data: holes are zeroed (ZERO_RANGE).
            Output::Device(dev) => {
                let mut w = crate::io::blockdev::DeviceWriter::new(dev);
                let r = src.read_into(&mut Counted {
                    inner: DeviceSink { writer: &mut w },
                    progress: &progress,
                });
                r.map_err(anyhow::Error::from)
                    .and_then(|()| w.finish().map(|_| ()).map_err(anyhow::Error::from))
            }
            Output::File(f) => {
                // A retry starts from an empty file.
                f.file().set_len(0)?;
                let file: &File = f.file();
                src.read_into(&mut Counted {
                    inner: FileSink::sparse(file),
                    progress: &progress,
                })
                .map_err(anyhow::Error::from)
            }
        };
        progress.finish();
        result
    }
}

/// A sink that moves the progress bar.
struct Counted<'p, S> {
    inner: S,
    progress: &'p Progress,
}

impl<S: ChunkSink> ChunkSink for Counted<'_, S> {
    fn put(&mut self, chunk: VerifiedChunk<'_>) -> std::io::Result<()> {
        self.progress.inc(chunk.len());
        self.inner.put(chunk)
    }

    fn read_written(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.read_written(offset, buf)
    }
}

/// Runs `slate extract`.
pub fn run(args: ExtractArgs) -> anyhow::Result<()> {
    let keys = TrustedKeys::from_pem_files(&args.pubkeys, args.threshold)?;
    let source = Source::parse(&args.bundle);
    let what = format!("bundle {source}");
    if !args.seeds.is_empty() && !matches!(source, Source::Url(_)) {
        bail!("--seed needs an http(s) URL; {source} is read whole anyway");
    }
    for s in &args.seeds {
        File::open(s).with_context(|| format!("opening seed {}", s.display()))?;
    }
    let mut output = Output::open(&args.output)?;
    let mut report = None;
    let a = match &source {
        Source::Url(url) if !args.seeds.is_empty() => {
            match extract_delta(url, &keys, &args, &mut output, &what) {
                Ok((a, counts, fallback)) => {
                    report = Some((counts, fallback));
                    a
                }
                Err(e) if is_sink_error(&e) => return Err(e),
                Err(e) => {
                    eprintln!("slate: delta download failed ({e:#}); streaming the whole bundle");
                    let (a, n) = extract_stream(&source, &keys, &args, &mut output, &what)?;
                    report = Some((
                        Counts {
                            downloaded: n,
                            requests: 1,
                            full: n,
                            ..Counts::default()
                        },
                        true,
                    ));
                    a
                }
            }
        }
        _ => extract_stream(&source, &keys, &args, &mut output, &what)?.0,
    };
    let out = args.output.display();
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
    if args.json {
        let mut v = serde_json::to_value(Counts::default())?;
        if let Some((counts, fallback)) = &report {
            v = serde_json::to_value(counts)?;
            v["fallback"] = (*fallback).into();
        }
        v["schema"] = 1.into();
        v["artifact"] = a.name.clone().into();
        v["size"] = a.size.into();
        v["sha256"] = a.sha256.to_string().into();
        println!("{v}");
    }
    if crate::progress::quiet() {
        return Ok(());
    }
    if let Some((c, false)) = &report {
        eprintln!(
            "downloaded {} bytes in {} requests of a {}-byte bundle; reused {} bytes, {} bytes of holes",
            c.downloaded, c.requests, c.full, c.reused, c.holes
        );
    }
    eprintln!(
        "wrote {} ({} bytes) to {out}; read back from {written}: sha256 {} as signed",
        a.name, a.size, a.sha256,
    );
    Ok(())
}

fn is_sink_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<BundleError>(),
            Some(BundleError::Sink { .. })
        )
    })
}

/// Streams the bundle, verifying every artifact; returns the written
/// artifact and the bytes read.
fn extract_stream(
    source: &Source,
    keys: &TrustedKeys,
    args: &ExtractArgs,
    output: &mut Output,
    what: &str,
) -> anyhow::Result<(ArtifactHeader, u64)> {
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let src = Counting {
        inner: source.open()?,
        received: counter.clone(),
    };
    let reader = open(src, keys).with_context(|| format!("verifying {what}"))?;
    let a = extract_from(reader, args, output, what)?;
    Ok((a, counter.load(std::sync::atomic::Ordering::Relaxed)))
}

/// Writes the artifact from a verified stream and verifies the rest.
fn extract_from<R: std::io::Read>(
    mut reader: BundleReader<R>,
    args: &ExtractArgs,
    output: &mut Output,
    what: &str,
) -> anyhow::Result<ArtifactHeader> {
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
        // What is written is read back from storage and compared with the
        // signed whole-artifact digest (run): the in-stream one is redundant.
        reader.set_check_whole_digest(false);
        output.write_checked(&mut reader, &a, &args.output, what)?;
        reader.set_check_whole_digest(true);
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
    Ok(a)
}

/// Fetches the head, plans against the seeds and fetches only the chunks
/// of the artifact no seed holds.
fn extract_delta(
    url: &str,
    keys: &TrustedKeys,
    args: &ExtractArgs,
    output: &mut Output,
    what: &str,
) -> anyhow::Result<(ArtifactHeader, Counts, bool)> {
    let remote = fetch_head(url, keys, HttpTimeouts::from_env())
        .with_context(|| format!("fetching the head of {what}"))?;
    let head = match remote {
        Remote::Ranges(h) => h,
        Remote::Whole(reader) => {
            // No range support: the reply to the probe is the whole bundle.
            eprintln!("slate: {url} ignores Range requests; streaming the whole bundle");
            let received = reader.head().header.bundle_len();
            let a = extract_from(reader, args, output, what)?;
            let counts = Counts {
                downloaded: received,
                requests: 1,
                full: received,
                ..Counts::default()
            };
            return Ok((a, counts, true));
        }
    };
    let manifest = head.head().manifest.clone();
    let Some(entry) = manifest.artifacts.iter().find(|a| a.name == args.artifact) else {
        bail!("{what} has no artifact named {:?}", args.artifact);
    };
    let seeds = seed_index(&args.seeds, &manifest)?;
    let want = entry.name.clone();
    let plan = head.plan(&seeds, &|n| n == want);
    let mut reader = head.into_reader(seeds, plan);
    while let Some(a) = reader.next_artifact()? {
        if a.name != args.artifact {
            continue;
        }
        output.write_checked(&mut reader, &a, &args.output, what)?;
        let counts = reader.counts();
        return Ok((a, counts, false));
    }
    unreachable!("the artifact is in the manifest")
}

/// Indexes each seed file at the manifest's chunk sizes, labelled by its
/// file name.
pub fn seed_index(files: &[PathBuf], manifest: &Manifest) -> anyhow::Result<SeedIndex> {
    let mut ix = SeedIndex::new();
    for f in files {
        let label = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| f.display().to_string());
        let s = ix.add_seed(Seed {
            label,
            path: f.clone(),
            ahead_only: false,
        });
        ix.index_file(s, manifest)
            .with_context(|| format!("reading seed {}", f.display()))?;
    }
    Ok(ix)
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
