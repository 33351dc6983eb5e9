//! `slate vendor`: every locked .deb copied into a directory, with an index,
//! so builds can run from it with no network (like `cargo vendor`).

use super::lock::LockedPackage;
use super::{FetchedPackage, PackagesError};
use serde::Serialize;
use std::path::Path;

/// File name of the index in a vendor directory.
pub const INDEX: &str = "index.toml";

#[derive(Serialize)]
struct Index<'a> {
    /// Always 1.
    format: u32,
    #[serde(rename = "package")]
    packages: Vec<&'a LockedPackage>,
}

/// Copies the packages into `dir` (each file replaced atomically, verified
/// by the cache already) and writes `index.toml`; returns the bytes copied.
pub fn write_vendor_dir(dir: &Path, packages: &[FetchedPackage]) -> Result<u64, PackagesError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| {
            PackagesError::Apt(super::apt::AptError::Io {
                what,
                path: path.clone(),
                source,
            })
        }
    };
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let mut total = 0;
    for p in packages {
        let dest = dir.join(&p.locked.file);
        let mut out = crate::io::AtomicFile::create(&dest).map_err(io("creating", &dest))?;
        let mut src = std::fs::File::open(&p.path).map_err(io("reading", &p.path))?;
        total += std::io::copy(&mut src, out.file()).map_err(io("writing", &dest))?;
        out.commit().map_err(io("writing", &dest))?;
    }
    let mut sorted: Vec<&LockedPackage> = packages.iter().map(|p| &p.locked).collect();
    sorted.sort();
    let text = toml::to_string(&Index {
        format: 1,
        packages: sorted,
    })
    .unwrap_or_default();
    let index = dir.join(INDEX);
    crate::io::write_atomic(
        &index,
        format!("# slate vendor directory: the .deb files of a lock, verified by sha256.\n{text}")
            .as_bytes(),
    )
    .map_err(io("writing", &index))?;
    crate::io::sync_dir(dir).map_err(io("syncing", dir))?;
    Ok(total)
}
