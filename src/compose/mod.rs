//! `slate build`: recipe -> packages -> trees -> filesystems -> A/B disk.

pub mod binaries;
pub mod build;
pub mod disk;
pub mod esp;
pub mod initramfs;
pub mod layers;
pub mod outdir;
pub mod overlay;
pub mod preflight;
pub mod rootfs;
pub mod runtime;
pub mod uki;

use crate::recipe::RecipeError;
use std::path::{Path, PathBuf};

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// A recipe value is wrong (message carries file:line and field).
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// Packages could not be provided.
    #[error(transparent)]
    Packages(#[from] crate::packages::PackagesError),
    /// A package could not be unpacked.
    #[error(transparent)]
    Deb(#[from] crate::packages::deb::DebError),
    /// The image tree refused an entry.
    #[error(transparent)]
    Tree(#[from] crate::tree::TreeError),
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The output directory holds something slate did not write.
    #[error("{0}")]
    OutDir(String),
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

impl ComposeError {
    /// An I/O error on a path.
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        ComposeError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}
