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
        for d in ["lists/partial", "cache/archives/partial", "empty", "debs"] {
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

    /// Directory where downloaded .deb files are kept.
    pub fn debs_dir(&self) -> PathBuf {
        self.root.join("debs")
    }

    /// Whether package lists have been downloaded at least once.
    pub fn has_lists(&self) -> bool {
        std::fs::read_dir(self.root.join("lists"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
            })
            .unwrap_or(false)
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
            "quiet=1".to_string(),
        ];
        for o in opts {
            c.arg("-o").arg(o);
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

    /// The full dependency closure of `packages` on an empty system, sorted by name.
    pub fn resolve(&self, packages: &[String]) -> Result<Vec<PackageVersion>, AptError> {
        if packages.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec!["install", "--simulate", "--no-install-recommends"];
        args.extend(packages.iter().map(String::as_str));
        let out = self.run("resolving packages", &args)?;
        let mut found = parse_simulation(&out);
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// Where apt would download `pkg` from.
    pub fn uri(&self, pkg: &PackageVersion) -> Result<PackageUri, AptError> {
        let spec = format!("{}={}", pkg.name, pkg.version);
        let out = self.run(
            &format!("locating {spec}"),
            &["download", "--print-uris", &spec],
        )?;
        out.lines()
            .find_map(parse_print_uri)
            .ok_or_else(|| AptError::Failed {
                action: format!("locating {spec}"),
                message: "apt printed no download address".into(),
            })
    }

    /// Downloads `pkg` into the cache (unless a verified copy is there) and
    /// returns its path and sha256.
    pub fn fetch(&self, pkg: &PackageVersion) -> Result<(PathBuf, String), AptError> {
        let uri = self.uri(pkg)?;
        let dest = self.debs_dir().join(&uri.file_name);
        if dest.exists() {
            let found = sha256_file(&dest)?;
            if found == uri.sha256 {
                return Ok((dest, found));
            }
            std::fs::remove_file(&dest).map_err(io("removing", &dest))?;
        }
        // apt-get download writes into its working directory; use a private
        // one so a half-downloaded file never appears under the final name.
        let tmp = tempfile::Builder::new()
            .prefix(".download.")
            .tempdir_in(self.debs_dir())
            .map_err(io("creating a temp dir in", &self.debs_dir()))?;
        let spec = format!("{}={}", pkg.name, pkg.version);
        let out = self
            .command()
            .current_dir(tmp.path())
            .args(["download", &spec])
            .output()
            .map_err(AptError::Spawn)?;
        let got = tmp.path().join(&uri.file_name);
        if !out.status.success() || !got.exists() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(AptError::Failed {
                action: format!("downloading {spec}"),
                message: stderr
                    .lines()
                    .filter(|l| l.starts_with("E:"))
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        let found = sha256_file(&got)?;
        if found != uri.sha256 {
            return Err(AptError::Checksum {
                path: got,
                expected: uri.sha256,
                found,
            });
        }
        std::fs::rename(&got, &dest).map_err(io("storing", &dest))?;
        Ok((dest, found))
    }
}

/// Parses `Inst name (version suite [arch])` lines of `apt-get -s install`.
pub fn parse_simulation(out: &str) -> Vec<PackageVersion> {
    out.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            // "Inst pkg [oldver] (newver ...)" appears for upgrades; skip to '('.
            let rest = &rest[rest.find('(')? + 1..];
            let version = rest.split([' ', ')']).next()?;
            Some(PackageVersion {
                name: name.to_string(),
                version: version.to_string(),
            })
        })
        .collect()
}

/// Parses `'URI' file size SHA256:hex` from `apt-get download --print-uris`.
pub fn parse_print_uri(line: &str) -> Option<PackageUri> {
    let line = line.trim();
    let rest = line.strip_prefix('\'')?;
    let (uri, rest) = rest.split_once('\'')?;
    let mut parts = rest.split_whitespace();
    let file_name = parts.next()?.to_string();
    let size = parts.next()?.parse().ok()?;
    let sha256 = parts.next()?.strip_prefix("SHA256:")?.to_ascii_lowercase();
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
    fn parses_simulation_output() {
        let out = "Reading package lists...\n\
            Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []\n\
            Inst jq (1.6-2.1+deb12u3 Debian-Security:12/oldstable-security [amd64])\n\
            Conf jq (1.6-2.1+deb12u3 Debian-Security:12/oldstable-security [amd64])\n";
        assert_eq!(
            parse_simulation(out),
            vec![
                PackageVersion {
                    name: "libc6".into(),
                    version: "2.36-9+deb12u14".into()
                },
                PackageVersion {
                    name: "jq".into(),
                    version: "1.6-2.1+deb12u3".into()
                },
            ]
        );
    }

    #[test]
    fn parses_print_uris() {
        let l = "'http://deb.debian.org/debian/pool/main/j/jq/jq_1.6_amd64.deb' jq_1.6_amd64.deb 64432 SHA256:C25F";
        let u = parse_print_uri(l).unwrap();
        assert_eq!(u.file_name, "jq_1.6_amd64.deb");
        assert_eq!(u.size, 64432);
        assert_eq!(u.sha256, "c25f");
        assert!(parse_print_uri("Reading package lists...").is_none());
    }
}
