//! `slate inspect`: show what a bundle holds, without trusted keys.

use super::verify::open_bundle_file;
use crate::bundle::read_head_unverified;
use anyhow::Context;
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Show a bundle's manifest and signatures. Each signature is checked only
/// against the public key stored beside it (integrity, not trust: use
/// `slate verify` for that); the payload is not read.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundle file.
    pub bundle: PathBuf,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct SignatureJson {
    key_id: String,
    valid: bool,
}

#[derive(Serialize)]
struct ArtifactJson<'a> {
    name: &'a str,
    size: u64,
    sha256: String,
    chunk_size: u64,
    chunks: u64,
    holes: u64,
    compressed_size: u64,
}

#[derive(Serialize)]
struct InspectJson<'a> {
    schema: u32,
    bundle: &'a Path,
    format: u32,
    name: &'a str,
    version: &'a str,
    compatible: &'a str,
    security_version: u64,
    created: u64,
    manifest_sha256: String,
    manifest_len: u32,
    bundle_len: u64,
    signatures: Vec<SignatureJson>,
    artifacts: Vec<ArtifactJson<'a>>,
}

/// Runs `slate inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let src = open_bundle_file(&args.bundle)?;
    let head = read_head_unverified(src)
        .with_context(|| format!("inspecting bundle {}", args.bundle.display()))?;
    let m = &head.manifest;
    let j = InspectJson {
        schema: super::exit::JSON_SCHEMA,
        bundle: &args.bundle,
        format: m.format,
        name: &m.name,
        version: &m.version,
        compatible: &m.compatible,
        security_version: m.security_version,
        created: m.created,
        manifest_sha256: head.manifest_digest.to_string(),
        manifest_len: head.header.manifest_len,
        bundle_len: head.header.bundle_len(),
        signatures: head
            .signatures
            .iter()
            .map(|s| SignatureJson {
                key_id: s.key_id.to_string(),
                valid: s.valid,
            })
            .collect(),
        artifacts: m
            .artifacts
            .iter()
            .map(|a| ArtifactJson {
                name: &a.name,
                size: a.size,
                sha256: a.sha256.to_string(),
                chunk_size: a.chunk_size,
                chunks: a.chunks.len() as u64,
                holes: a.holes(),
                compressed_size: a.compressed_size(),
            })
            .collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&j)?);
        return Ok(());
    }
    println!(
        "bundle            {} ({} bytes)",
        args.bundle.display(),
        j.bundle_len
    );
    println!("format            {}", j.format);
    println!("name              {}", j.name);
    println!("version           {}", j.version);
    println!("compatible        {}", j.compatible);
    println!("security_version  {}", j.security_version);
    println!("created           {}", j.created);
    println!("manifest sha256   {}", j.manifest_sha256);
    for s in &j.signatures {
        let state = if s.valid { "valid" } else { "INVALID" };
        println!(
            "signature         key {} ({state}; trust not checked)",
            s.key_id
        );
    }
    for a in &j.artifacts {
        println!(
            "artifact          {}: {} bytes, sha256 {}, {} chunks of {} bytes ({} holes), {} bytes compressed",
            a.name, a.size, a.sha256, a.chunks, a.chunk_size, a.holes, a.compressed_size
        );
    }
    Ok(())
}
