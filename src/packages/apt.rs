//! Driving `apt-get` with slate's own state and cache directories, so package
//! resolution needs neither root nor the host's package database, and the
//! result depends only on the recipe's `[apt]` settings and the archive.

use crate::recipe::AptSpec;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A package pinned to an exact version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackageVersion {
    /// Package name.
    pub name: String,
    /// Exact Debian version.
    pub version: String,
}

/// Where a package can be downloaded from, per apt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageUri {
    /// Download URL.
    pub uri: String,
    /// File name apt would use.
    pub file_name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 from the signed archive index.
    pub sha256: String,
}

/// Why apt could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum AptError {
    /// apt-get is not installed or failed to start.
    #[error("running apt-get: {0} (slate needs Debian's apt to fetch packages)")]
    Spawn(std::io::Error),
    /// apt-get reported an error.
    #[error("apt-get {action}: {message}")]
    Failed {
        /// What was being done.
        action: String,
        /// apt's error lines.
        message: String,
    },
    /// A package name apt does not know.
    #[error("unknown package {0:?} (not in the configured archive)")]
    UnknownPackage(String),
    /// A file operation on the cache.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A downloaded file does not match the archive's checksum.
    #[error("{path}: sha256 {found} does not match the expected {expected}")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        found: String,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AptError {
    let path = path.to_path_buf();
    move |source| AptError::Io { what, path, source }
}

/// An apt configuration rooted in a private directory.
#[derive(Debug, Clone)]
pub struct Apt {
    root: PathBuf,
    spec: AptSpec,
}

impl Apt {
    /// Sets up (idempotently) the private apt directories under `cache_dir`,
    /// one per distinct `[apt]` configuration.
    pub fn new(cache_dir: &Path, spec: &AptSpec) -> Result<Self, AptError> {
        let key = {
            let mut h = Sha256::new();
            h.update(format!("{spec:?}"));
            crate::io::hash::hex(&h.finalize()[..8])
        };
        let root = cache_dir.join("apt").join(key);
        for d in ["lists/partial", "cache/archives/partial", "empty"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io("creating", &p))?;
        }
        let status = root.join("status");
        if !status.exists() {
            crate::io::write_atomic(&status, b"").map_err(io("creating", &status))?;
        }
        let sources = root.join("sources.list");
        let mut text = String::new();
        let signed = format!("[signed-by={}]", spec.keyring.display());
        let comps = spec.components.join(" ");
        text.push_str(&format!(
            "deb {signed} {} {} {comps}\n",
            spec.mirror, spec.suite
        ));
        text.push_str(&format!(
            "deb {signed} {} {}-updates {comps}\n",
            spec.mirror, spec.suite
        ));
        if !spec.security_mirror.is_empty() {
            text.push_str(&format!(
                "deb {signed} {} {}-security {comps}\n",
                spec.security_mirror, spec.suite
            ));
        }
        // Concurrent builds share this directory: replace atomically, and
        // only when it changes, so a running apt never sees a partial file.
        if std::fs::read_to_string(&sources).ok().as_deref() != Some(text.as_str()) {
            crate::io::write_atomic(&sources, text.as_bytes()).map_err(io("writing", &sources))?;
        }
        Ok(Self {
            root,
            spec: spec.clone(),
        })
    }

    /// Takes the cache's lock (blocking): concurrent builds share the cache,
    /// and apt's own locking is off because its state is private.
    pub fn lock(&self) -> Result<std::fs::File, AptError> {
        let path = self.root.join("lock");
        let f = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("creating", &path))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io("locking", &path)(e.into()))?;
        Ok(f)
    }

    fn command(&self) -> Command {
        let r = &self.root;
        let mut c = Command::new("apt-get");
        let opts = [
            format!("Dir::State={}", r.display()),
            format!("Dir::State::Lists={}/lists", r.display()),
            format!("Dir::State::status={}/status", r.display()),
            format!("Dir::Cache={}/cache", r.display()),
            format!("Dir::Etc::SourceList={}/sources.list", r.display()),
            format!("Dir::Etc::SourceParts={}/empty", r.display()),
            "Dir::Etc::Preferences=/dev/null".to_string(),
            format!("Dir::Etc::PreferencesParts={}/empty", r.display()),
            "Debug::NoLocking=1".to_string(),
            format!("APT::Architecture={}", self.spec.architecture),
            format!("APT::Architectures={}", self.spec.architecture),
            "APT::Install-Recommends=false".to_string(),
            "APT::Install-Suggests=false".to_string(),
            "Acquire::Languages=none".to_string(),
            // Print SHA-256 (not MD5) with every URI.
            "Acquire::ForceHash=SHA256".to_string(),
            "quiet=1".to_string(),
        ];
        for o in opts {
            c.arg("-o").arg(o);
        }
        // Snapshot Release files are past their Valid-Until by design; their
        // signatures are still checked.
        if self.spec.snapshot.is_some() {
            c.arg("-o").arg("Acquire::Check-Valid-Until=false");
        }
        // apt drops to its _apt user only when run as root, and _apt cannot
        // write our private directories; unprivileged runs need nothing.
        if rustix::process::geteuid().is_root() {
            c.arg("-o").arg("APT::Sandbox::User=root");
        }
        c.env("LC_ALL", "C");
        c
    }

    fn run(&self, action: &str, args: &[&str]) -> Result<String, AptError> {
        let out = self
            .command()
            .args(args)
            .output()
            .map_err(AptError::Spawn)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // `apt-get update` only warns when a source cannot be fetched (and
        // goes on with old lists, or none): that is an error here.
        let errors: Vec<&str> = stderr
            .lines()
            .chain(stdout.lines())
            .filter_map(|l| {
                l.strip_prefix("E:").or_else(|| {
                    l.strip_prefix("W: ")
                        .filter(|w| w.starts_with("Failed to fetch"))
                })
            })
            .map(str::trim)
            .collect();
        if !out.status.success() || !errors.is_empty() {
            if let Some(name) = errors
                .iter()
                .find_map(|e| e.strip_prefix("Unable to locate package "))
            {
                return Err(AptError::UnknownPackage(name.trim().to_string()));
            }
            let message = if errors.is_empty() {
                stderr.lines().last().unwrap_or("failed").to_string()
            } else {
                errors.join("; ")
            };
            return Err(AptError::Failed {
                action: action.to_string(),
                message,
            });
        }
        Ok(stdout)
    }

    /// Downloads fresh package lists.
    pub fn update(&self) -> Result<(), AptError> {
        self.run("update", &["update"]).map(|_| ())
    }

    /// The full dependency closure of `packages` on an empty system with
    /// where each package is downloaded from, in one apt run, sorted by name.
    pub fn resolve_uris(&self, packages: &[String]) -> Result<Vec<ResolvedUri>, AptError> {
        if packages.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["install", "--print-uris", "-y", "--no-install-recommends"];
        args.extend(packages.iter().map(String::as_str));
        let out = self.run("resolving packages", &args)?;
        let mut found = Vec::new();
        for u in out.lines().filter_map(parse_print_uri) {
            if let Some(path) = u.uri.strip_prefix("file:") {
                let c = crate::packages::deb::control(Path::new(path)).map_err(|e| {
                    AptError::Failed {
                        action: "reading a local package".into(),
                        message: e.to_string(),
                    }
                })?;
                found.push(ResolvedUri {
                    package: PackageVersion {
                        name: c.package,
                        version: c.version,
                    },
                    uri: u,
                });
                continue;
            }
            let pv = parse_deb_file_name(&u.file_name).ok_or_else(|| AptError::Failed {
                action: "resolving packages".into(),
                message: format!("unexpected file name {:?}", u.file_name),
            })?;
            found.push(ResolvedUri {
                package: pv,
                uri: u,
            });
        }
        found.sort_by(|a, b| a.package.cmp(&b.package));
        found.dedup_by(|a, b| a.package == b.package);
        Ok(found)
    }

    /// The newest `Date` of the downloaded Release files (every suite,
    /// security included) as a snapshot timestamp (`YYYYMMDDTHHMMSSZ`): the
    /// archive state a resolution saw.
    pub fn release_timestamp(&self) -> Option<String> {
        let dir = std::fs::read_dir(self.root.join("lists")).ok()?;
        dir.filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with("_InRelease"))
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("Date:"))
                    .and_then(|d| rfc2822_to_timestamp(d.trim()))
            })
            .max()
    }
}

/// A package of a resolved closure and its download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUri {
    /// Name and version.
    pub package: PackageVersion,
    /// Download.
    pub uri: PackageUri,
}

/// `name_1%3a2.0-1_amd64.deb` -> (`name`, `1:2.0-1`).
pub fn parse_deb_file_name(file: &str) -> Option<PackageVersion> {
    let stem = file.strip_suffix(".deb")?;
    let mut parts = stem.split('_');
    let name = parts.next()?;
    let version = parts.next()?;
    parts.next()?;
    if parts.next().is_some() || name.is_empty() || version.is_empty() {
        return None;
    }
    Some(PackageVersion {
        name: percent_decode(name)?,
        version: percent_decode(version)?,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `Sat, 29 Nov 2026 09:12:33 UTC` -> `20261129T091233Z`.
pub fn rfc2822_to_timestamp(date: &str) -> Option<String> {
    let mut f = date.split_whitespace();
    let _weekday = f.next()?;
    let day: u32 = f.next()?.parse().ok()?;
    let month = match f.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u32 = f.next()?.parse().ok()?;
    let hms: Vec<u32> = f
        .next()?
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 || !matches!(f.next(), Some("UTC") | Some("GMT") | Some("+0000")) {
        return None;
    }
    Some(format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        hms[0], hms[1], hms[2]
    ))
}

/// Parses `'URI' file size SHA256:hex` from `apt-get download --print-uris`.
pub fn parse_print_uri(line: &str) -> Option<PackageUri> {
    let line = line.trim();
    let rest = line.strip_prefix('\'')?;
    let (uri, rest) = rest.split_once('\'')?;
    let mut parts = rest.split_whitespace();
    let file_name = parts.next()?.to_string();
    let size = parts.next()?.parse().ok()?;
    // A local .deb (`file:` URI) comes without a digest; the caller hashes it.
    let sha256 = match parts.next() {
        None if uri.starts_with("file:") => String::new(),
        hash => hash?.strip_prefix("SHA256:")?.to_ascii_lowercase(),
    };
    Some(PackageUri {
        uri: uri.to_string(),
        file_name,
        size,
        sha256,
    })
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, AptError> {
    crate::io::hash::sha256_file(path).map_err(io("reading", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_names_and_dates() {
        let pv = parse_deb_file_name("busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb").unwrap();
        assert_eq!(pv.name, "busybox-static");
        assert_eq!(pv.version, "1:1.35.0-4+deb12u1+b1");
        assert!(parse_deb_file_name("a_b.deb").is_none());
        assert!(parse_deb_file_name("a_1_amd64_x.deb").is_none());
        assert_eq!(
            rfc2822_to_timestamp("Sat, 29 Nov 2026 09:12:33 UTC").as_deref(),
            Some("20261129T091233Z")
        );
        assert!(rfc2822_to_timestamp("Sat, 29 Foo 2026 09:12:33 UTC").is_none());
    }

    #[test]
    fn parses_print_uris() {
        let l = "'http://deb.debian.org/debian/pool/main/j/jq/jq_1.6_amd64.deb' jq_1.6_amd64.deb 64432 SHA256:C25F";
        let u = parse_print_uri(l).unwrap();
        assert_eq!(u.file_name, "jq_1.6_amd64.deb");
        assert_eq!(u.size, 64432);
        assert_eq!(u.sha256, "c25f");
        assert!(parse_print_uri("Reading package lists...").is_none());
        let local = parse_print_uri("'file:/r/debs/app.deb' app.deb 720 ").unwrap();
        assert_eq!(
            (local.uri.as_str(), local.sha256.as_str()),
            ("file:/r/debs/app.deb", "")
        );
        assert!(parse_print_uri("'http://x/a.deb' a.deb 720").is_none());
    }
}
