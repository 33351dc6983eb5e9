//! Where a bundle is read from: a file, a block device holding one (an
//! update stick), or an http(s) URL streamed with ureq.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

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
                let t = HttpTimeouts::from_env();
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_connect(Some(t.connect))
                    .timeout_recv_response(Some(t.read))
                    .timeout_per_read(Some(t.read))
                    .timeout_global(Some(t.total))
                    .build()
                    .into();
                let resp = agent
                    .get(u)
                    .call()
                    .with_context(|| format!("downloading bundle {u}"))?;
                Ok(Box::new(resp.into_body().into_reader()))
            }
        }
    }
}

/// Bounds on an HTTP download, so a stalled or endless server cannot hold
/// the update lock forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// TCP (and TLS) connection setup.
    pub connect: Duration,
    /// Waiting for the response head, and for each read of the body: a
    /// server that sends nothing for this long is given up.
    pub read: Duration,
    /// The whole download.
    pub total: Duration,
}

impl HttpTimeouts {
    /// Defaults: connect 30 s, 60 s without data, 6 h in all.
    pub const DEFAULT: HttpTimeouts = HttpTimeouts {
        connect: Duration::from_secs(30),
        read: Duration::from_secs(60),
        total: Duration::from_secs(6 * 3600),
    };

    /// The defaults, overridden (in seconds) by `SLATE_HTTP_CONNECT_TIMEOUT`,
    /// `SLATE_HTTP_READ_TIMEOUT` and `SLATE_HTTP_TIMEOUT`.
    pub fn from_env() -> Self {
        let secs = |name: &str, default: Duration| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(default)
        };
        let d = Self::DEFAULT;
        Self {
            connect: secs("SLATE_HTTP_CONNECT_TIMEOUT", d.connect),
            read: secs("SLATE_HTTP_READ_TIMEOUT", d.read),
            total: secs("SLATE_HTTP_TIMEOUT", d.total),
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
