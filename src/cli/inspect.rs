//! `slate inspect`: show what a bundle, a build directory or a disk image
//! holds, without trusted keys.

use super::verify::open_bundle_file;
use crate::bundle::read_head_unverified;
use anyhow::Context;
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Show what a bundle, build directory or disk image holds. For a bundle:
/// its manifest and signatures, each checked only against the public key
/// stored beside it (integrity, not trust: use `slate verify` for that); the
/// payload is not read. For a build directory or disk.img: the partitions,
/// each slot's version, boot state and file count, and the ESP's files.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A bundle file, a build directory (out/NAME) or a disk image.
    #[arg(value_name = "BUNDLE|BUILD_DIR|DISK")]
    pub bundle: PathBuf,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print the image's SPDX 2.3 SBOM: from a build directory, or from a
    /// bundle's verified payload (needs --pubkey).
    #[arg(long)]
    pub sbom: bool,
    /// With --sbom on a bundle: trusted public key (SPKI PEM); repeatable.
    #[arg(long = "pubkey", value_name = "PUB", requires = "sbom")]
    pub pubkeys: Vec<PathBuf>,
}

/// `inspect --sbom`: the SBOM text of a build directory or a bundle.
fn print_sbom(args: &InspectArgs) -> anyhow::Result<()> {
    use crate::bundle::{Holes, TrustedKeys, open};
    if args.bundle.is_dir() {
        let path = args.bundle.join(crate::sbom::FILE_NAME);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        print!("{text}");
        return Ok(());
    }
    if args.pubkeys.is_empty() {
        anyhow::bail!(
            "inspect --sbom {}: a bundle's SBOM is read from its verified payload; give --pubkey PUB",
            args.bundle.display()
        );
    }
    let keys = TrustedKeys::from_pem_files(&args.pubkeys, 1)?;
    let src = open_bundle_file(&args.bundle)?;
    let what = format!("bundle {}", args.bundle.display());
    let mut reader = open(src, &keys).with_context(|| format!("verifying {what}"))?;
    while let Some(a) = reader
        .next_artifact()
        .with_context(|| format!("reading {what}"))?
    {
        if a.name == "sbom" {
            let mut buf = std::io::Cursor::new(Vec::new());
            reader
                .copy_artifact(&mut buf, Holes::WriteZeros, |_| {})
                .with_context(|| format!("reading the SBOM of {what}"))?;
            let text = String::from_utf8(buf.into_inner())
                .with_context(|| format!("the SBOM of {what} is not UTF-8"))?;
            print!("{text}");
            return Ok(());
        }
        reader.verify_artifact(|_| {})?;
    }
    anyhow::bail!("{what} carries no SBOM (built by a slate without SBOMs)")
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
    /// The slot image's signed dm-verity parameters (the rootfs), or null.
    verity: Option<crate::bundle::manifest::ArtifactVerity>,
}

#[derive(Serialize)]
struct InspectJson<'a> {
    schema: u32,
    kind: &'static str,
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

/// Whether `path` starts like a GPT disk ("EFI PART" in sector 1).
fn is_disk(path: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let mut sig = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|f| f.read_exact_at(&mut sig, 512))
        .is_ok()
        && &sig == b"EFI PART"
}

/// Runs `slate inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    if args.sbom {
        return print_sbom(&args);
    }
    if args.bundle.is_dir() {
        if !args.bundle.join(crate::build_manifest::FILE_NAME).exists() {
            return Err(super::exit::InvalidInput(format!(
                "{} is a directory but not a build directory (no {})",
                args.bundle.display(),
                crate::build_manifest::FILE_NAME
            ))
            .into());
        }
        let info = crate::image_info::inspect_build(&args.bundle)
            .with_context(|| format!("inspecting build {}", args.bundle.display()))?;
        return print_image(&args, "build", Some(&info.manifest), info.disk.as_ref());
    }
    if is_disk(&args.bundle) {
        let disk = crate::image_info::inspect_disk(&args.bundle)
            .with_context(|| format!("inspecting disk image {}", args.bundle.display()))?;
        return print_image(&args, "disk", None, Some(&disk));
    }
    let src = open_bundle_file(&args.bundle)?;
    let head = read_head_unverified(src)
        .with_context(|| format!("inspecting bundle {}", args.bundle.display()))?;
    let m = &head.manifest;
    let j = InspectJson {
        schema: super::exit::JSON_SCHEMA,
        kind: "bundle",
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
                verity: a.verity,
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
        if let Some(v) = &a.verity {
            println!(
                "verity            {}: root hash A {}, B {}, salt {}, {} data blocks, tree at byte {}",
                a.name, v.root_hash_a, v.root_hash_b, v.salt, v.data_blocks, v.hash_offset
            );
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct ImageJson<'a> {
    schema: u32,
    kind: &'static str,
    path: &'a Path,
    build: Option<&'a crate::build_manifest::BuildManifest>,
    disk: Option<&'a crate::image_info::DiskInfo>,
}

fn print_image(
    args: &InspectArgs,
    kind: &'static str,
    build: Option<&crate::build_manifest::BuildManifest>,
    disk: Option<&crate::image_info::DiskInfo>,
) -> anyhow::Result<()> {
    if args.json {
        let j = ImageJson {
            schema: super::exit::JSON_SCHEMA,
            kind,
            path: &args.bundle,
            build,
            disk,
        };
        println!("{}", serde_json::to_string(&j)?);
        return Ok(());
    }
    println!("{kind:<18}{}", args.bundle.display());
    if let Some(m) = build {
        println!(
            "image             {} {} (compatible {}, security_version {})",
            m.name, m.version, m.compatible, m.security_version
        );
        println!("source_date_epoch {}", m.source_date_epoch);
        for a in m.artifacts.iter().chain(m.disk.iter()) {
            println!(
                "file              {}: {} bytes, sha256 {}",
                a.file, a.size, a.sha256
            );
        }
        println!("packages          {}", m.packages.len());
    }
    let Some(d) = disk else {
        return Ok(());
    };
    println!("disk              {} bytes, GUID {}", d.size, d.disk_guid);
    for p in &d.partitions {
        println!(
            "partition {}       {:<7} {:>6} MiB at {:>6} MiB  {:<5} {}",
            p.number,
            p.name,
            p.size >> 20,
            p.offset >> 20,
            p.filesystem.as_deref().unwrap_or("-"),
            p.guid
        );
    }
    for (slot, s) in &d.slots {
        println!(
            "slot {slot}            {} {}, {} files, boot {} ({})",
            s.image.as_deref().unwrap_or("?"),
            s.version.as_deref().unwrap_or("(unreadable)"),
            s.files,
            s.boot_state,
            s.boot_entry.as_deref().unwrap_or("no entry")
        );
    }
    for f in &d.esp_files {
        println!("esp file          {} ({} bytes)", f.path, f.size);
    }
    Ok(())
}
