//! `slate verify`: check a bundle's signatures against trusted keys, then
//! every chunk, size and digest of its payload.

use super::exit::InvalidInput;
use crate::bundle::{BundleError, BundleHead, BundleReader, TrustedKeys, open};
use crate::progress::Progress;
use anyhow::Context;
use clap::Args;
use serde::Serialize;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// Verify a bundle: signatures by trusted keys, then the whole payload.
/// Exits 0 only if all of it is valid.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle file.
    pub bundle: PathBuf,
    /// Trusted public key, SPKI PEM; repeat to trust several.
    #[arg(long = "pubkey", value_name = "PUB", required = true)]
    pub pubkeys: Vec<PathBuf>,
    /// How many distinct trusted keys must have signed.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threshold: usize,
    /// Print the result as JSON on stdout (also on failure).
    #[arg(long)]
    pub json: bool,
}

/// Opens a bundle file, refusing what cannot be one with a clear message.
pub(crate) fn open_bundle_file(path: &Path) -> anyhow::Result<BufReader<File>> {
    let md =
        std::fs::metadata(path).with_context(|| format!("opening bundle {}", path.display()))?;
    if md.is_dir() {
        return Err(InvalidInput(format!("bundle {} is a directory", path.display())).into());
    }
    let f = File::open(path).with_context(|| format!("opening bundle {}", path.display()))?;
    Ok(BufReader::with_capacity(256 * 1024, f))
}

#[derive(Serialize)]
struct SignatureJson {
    key_id: String,
    trusted: bool,
    valid: bool,
}

#[derive(Serialize)]
struct ArtifactJson {
    name: String,
    size: u64,
    sha256: String,
}

#[derive(Serialize)]
struct VerifiedJson<'a> {
    schema: u32,
    bundle: &'a Path,
    valid: bool,
    manifest_sha256: String,
    name: &'a str,
    version: &'a str,
    compatible: &'a str,
    security_version: u64,
    created: u64,
    threshold: usize,
    signatures: Vec<SignatureJson>,
    artifacts: Vec<ArtifactJson>,
}

/// Streams every artifact through the verifier, then checks the end.
fn verify_all(mut reader: BundleReader<BufReader<File>>) -> Result<BundleHead, BundleError> {
    let total = reader.manifest().artifacts.iter().map(|a| a.size).sum();
    let bar = Progress::bytes(total, "verifying");
    let result = (|| -> Result<(), BundleError> {
        while reader.next_artifact()?.is_some() {
            reader.verify_artifact(|n| bar.inc(n))?;
        }
        Ok(())
    })();
    bar.finish();
    result?;
    let head = reader.head().clone();
    reader.finish()?;
    Ok(head)
}

/// Runs `slate verify`.
pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let keys = TrustedKeys::from_pem_files(&args.pubkeys, args.threshold)?;
    let src = open_bundle_file(&args.bundle)?;
    let head = open(src, &keys)
        .and_then(verify_all)
        .with_context(|| format!("verifying bundle {}", args.bundle.display()))?;
    let m = &head.manifest;
    if args.json {
        let j = VerifiedJson {
            schema: super::exit::JSON_SCHEMA,
            bundle: &args.bundle,
            valid: true,
            manifest_sha256: head.manifest_digest.to_string(),
            name: &m.name,
            version: &m.version,
            compatible: &m.compatible,
            security_version: m.security_version,
            created: m.created,
            threshold: keys.threshold(),
            signatures: head
                .signatures
                .iter()
                .map(|s| SignatureJson {
                    key_id: s.key_id.to_string(),
                    trusted: s.trusted,
                    valid: s.valid,
                })
                .collect(),
            artifacts: m
                .artifacts
                .iter()
                .map(|a| ArtifactJson {
                    name: a.name.clone(),
                    size: a.size,
                    sha256: a.sha256.to_string(),
                })
                .collect(),
        };
        println!("{}", serde_json::to_string(&j)?);
    } else {
        let trusted = head.signatures.iter().filter(|s| s.trusted).count();
        println!(
            "{}: valid: {} {} (compatible {}, security_version {}), {} trusted signature(s), threshold {}, manifest sha256 {}",
            args.bundle.display(),
            m.name,
            m.version,
            m.compatible,
            m.security_version,
            trusted,
            keys.threshold(),
            head.manifest_digest
        );
    }
    Ok(())
}
