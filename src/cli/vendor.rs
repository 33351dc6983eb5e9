//! `slate vendor <RECIPE> [DIR]`: copy every locked package into a directory.

use crate::packages::{self, ProvideOptions};
use crate::recipe::Recipe;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `slate vendor`.
#[derive(Debug, Args)]
pub struct VendorArgs {
    /// The recipe (its lock is resolved first when missing or stale).
    pub recipe: PathBuf,
    /// Target directory [default: vendor/<image name>].
    pub dir: Option<PathBuf>,
    /// Fail if the lock file is missing or would change.
    #[arg(long)]
    pub locked: bool,
}

/// Runs `slate vendor`.
pub fn run(args: VendorArgs) -> Result<()> {
    let recipe = Recipe::load(&args.recipe)?;
    let dir = args
        .dir
        .unwrap_or_else(|| PathBuf::from("vendor").join(&recipe.name));
    let status = |msg: &str| eprintln!("slate: {msg}");
    let provided = packages::provide(
        &recipe,
        &packages::cache_dir(),
        &ProvideOptions {
            locked: args.locked,
            ..Default::default()
        },
        &status,
    )?;
    let bytes = packages::vendor::write_vendor_dir(&dir, &provided.packages)?;
    provided
        .lock
        .store(&packages::lock::lock_path(&recipe.path))?;
    eprintln!(
        "slate: vendored {} packages ({:.1} MiB) into {}; build with --vendor {} or [apt] vendor",
        provided.packages.len(),
        bytes as f64 / (1 << 20) as f64,
        dir.display(),
        dir.display()
    );
    Ok(())
}
