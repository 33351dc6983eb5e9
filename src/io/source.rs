//! Where a bundle is read from: a file, a block device holding one (an
//! update stick), or an http(s) URL streamed with ureq.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

/// Where a bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A bundle file or a block device whose content is a bundle.
    Path(PathBuf),
    /// An http(s) URL, streamed.
    Url(String),
}

impl Source {
    /// Parses a command-line source.
    pub fn parse(s: &str) -> Source {
        if s.starts_with("http://") || s.starts_with("https://") {
            Source::Url(s.to_string())
        } else {
            Source::Path(PathBuf::from(s))
        }
    }

    /// Whether it can be read twice (verify first, then install).
    pub fn rereadable(&self) -> bool {
        matches!(self, Source::Path(_))
    }

    /// Whether it is a block device (whose size is rounded up to whole
    /// sectors, so bytes after the bundle are not an error).
    pub fn is_block_device(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        match self {
            Source::Path(p) => std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device()),
            Source::Url(_) => false,
        }
    }

    /// Opens it for reading from the start.
    pub fn open(&self) -> Result<Box<dyn Read>> {
        match self {
            Source::Path(p) => {
                let md = std::fs::metadata(p)
                    .with_context(|| format!("opening bundle {}", p.display()))?;
                if md.is_dir() {
                    bail!("bundle {} is a directory", p.display());
                }
                let f = File::open(p).with_context(|| format!("opening bundle {}", p.display()))?;
                Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
            }
            Source::Url(u) => {
                let resp = ureq::get(u)
                    .call()
                    .with_context(|| format!("downloading bundle {u}"))?;
                Ok(Box::new(resp.into_body().into_reader()))
            }
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Path(p) => write!(f, "{}", p.display()),
            Source::Url(u) => f.write_str(u),
        }
    }
}
