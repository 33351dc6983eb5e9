//! `slate bundle`: pack a build directory into a signed update bundle.

use crate::bundle::format::{MAX_CHUNK_SIZE, MAX_CHUNKS, chunk_size_for};
use crate::bundle::{SecretKey, WriteOptions, from_build_dir, write_bundle, writer::DEFAULT_LEVEL};
use crate::io::AtomicFile;
use crate::progress::Progress;
use crate::units::Bytes;
use anyhow::{Context, bail};
use clap::Args;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// Pack a build into an update bundle signed with one or more keys.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// Build output directory (holding manifest.json).
    pub build_dir: PathBuf,
    /// Signing key, PKCS#8 PEM (from slate keygen or openssl genpkey);
    /// repeat to sign with several keys.
    #[arg(long = "key", value_name = "KEY", required = true)]
    pub keys: Vec<PathBuf>,
    /// Where to write the bundle.
    #[arg(short = 'o', long = "output", value_name = "BUNDLE")]
    pub output: PathBuf,
    /// zstd compression level, 1 to 19.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LEVEL)]
    pub level: i32,
    /// Uncompressed chunk size, a power of two from 64K to 16M (default:
    /// 64K, or the smallest size at which the artifacts fit in the bundle's
    /// 131072 chunks).
    #[arg(long, value_name = "SIZE")]
    pub chunk_size: Option<Bytes>,
    /// Compression threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// Runs `slate bundle`.
pub fn run(args: BundleArgs) -> anyhow::Result<()> {
    let keys = args
        .keys
        .iter()
        .map(|p| SecretKey::read_pem_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let (meta, inputs) = from_build_dir(&args.build_dir)?;
    if args.output.is_dir() {
        bail!("output {} is a directory", args.output.display());
    }
    let chunk_size = match args.chunk_size {
        Some(cs) => cs.get(),
        None => chunk_size_for(inputs.iter().map(|a| a.size)).with_context(|| {
            format!(
                "{}: the artifacts are too large for a bundle ({MAX_CHUNKS} chunks of at most {MAX_CHUNK_SIZE} bytes)",
                args.build_dir.display()
            )
        })?,
    };
    let mut opts = WriteOptions {
        chunk_size,
        level: args.level,
        ..WriteOptions::default()
    };
    if let Some(t) = args.threads {
        opts.workers = t.max(1);
    }
    let writing = || format!("writing bundle {}", args.output.display());
    let mut out = AtomicFile::create(&args.output).with_context(writing)?;
    out.file()
        .set_permissions(Permissions::from_mode(0o644))
        .with_context(writing)?;
    let spool_dir = match args.output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut spool = tempfile::tempfile_in(&spool_dir)
        .with_context(|| format!("creating a payload spool in {}", spool_dir.display()))?;
    let total: u64 = inputs.iter().map(|a| a.size).sum();
    let bar = Progress::bytes(total, "bundling");
    let written = {
        let mut file = std::io::BufWriter::with_capacity(1 << 20, out.file());
        let w = write_bundle(&mut file, &mut spool, &meta, &inputs, &keys, &opts, |n| {
            bar.inc(n)
        });
        bar.finish();
        w.with_context(writing)?
    };
    out.commit().with_context(writing)?;
    let ids: Vec<String> = written.key_ids.iter().map(|k| k.to_string()).collect();
    println!(
        "wrote {} ({} bytes, {} {}, manifest sha256 {}, signed by {})",
        args.output.display(),
        written.bundle_len,
        written.manifest.name,
        written.manifest.version,
        written.manifest_digest,
        ids.join(", ")
    );
    Ok(())
}
