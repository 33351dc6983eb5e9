//! `slate build <RECIPE>`: compose a bootable A/B disk image.

use crate::compose::build::{BuildOptions, build};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `slate build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The recipe (TOML), e.g. recipes/minimal.toml.
    pub recipe: PathBuf,
    /// Output directory [default: out/<image name>].
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Resolve packages again and rewrite the lock file beside the recipe.
    #[arg(long, conflicts_with = "locked")]
    pub update_lock: bool,
    /// Fail if the lock file is missing or would change.
    #[arg(long)]
    pub locked: bool,
    /// Take locked packages from this directory (see slate vendor); with it
    /// a locked build needs no network.
    #[arg(long, value_name = "DIR")]
    pub vendor: Option<PathBuf>,
    /// Lay the root filesystem out like a previous build (its output
    /// directory or its rootfs.layout.json), so that unchanged files keep
    /// their blocks and update bundles stay small.
    #[arg(long, value_name = "PREV")]
    pub previous: Option<PathBuf>,
}

/// Runs `slate build`.
pub fn run(args: BuildArgs) -> Result<()> {
    let agent = std::env::current_exe().context("locating the slate executable to embed")?;
    let opts = BuildOptions {
        recipe: args.recipe.clone(),
        out_dir: args.out_dir,
        update_lock: args.update_lock,
        locked: args.locked,
        vendor: args.vendor,
        cache: crate::packages::cache_dir(),
        agent,
        previous: args.previous,
    };
    let out = build(&opts, &crate::progress::status)?;
    if crate::progress::quiet() {
        return Ok(());
    }
    let m = &out.manifest;
    let mib = |n: u64| n as f64 / (1 << 20) as f64;
    eprintln!(
        "slate: built {} {} in {}",
        m.name,
        m.version,
        out.dir.display()
    );
    if let Some(d) = &m.disk {
        eprintln!(
            "  {:<12} {:>8.1} MiB  sha256 {}",
            d.file,
            mib(d.size),
            d.sha256
        );
    }
    for a in &m.artifacts {
        eprintln!(
            "  {:<12} {:>8.1} MiB  sha256 {}",
            a.file,
            mib(a.size),
            a.sha256
        );
    }
    Ok(())
}
