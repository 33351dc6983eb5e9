//! The lock file beside a recipe (`recipes/minimal.lock`): the exact package
//! versions and digests a build used, so rebuilds fetch identical bytes.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Current lock file format (2 added download paths and the snapshot).
pub const LOCK_VERSION: u32 = 2;

/// Which archive of the `[apt]` configuration a package comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Archive {
    /// The main mirror (`[apt] mirror`), suites `<suite>` and `<suite>-updates`.
    #[default]
    Main,
    /// The security mirror (`[apt] security_mirror`).
    Security,
    /// A local .deb named in the recipe (`[rootfs] debs`); `path` is
    /// relative to the recipe's directory.
    Local,
}

/// What a package is used for in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Installed into the root filesystem.
    Rootfs,
    /// Provides the kernel and its modules.
    Kernel,
    /// Boot chain: boot loader and initramfs tools.
    Boot,
}

/// What the lock was resolved from; a change means it must be resolved again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockInputs {
    /// Archive configuration, one line.
    pub apt: String,
    /// Requested rootfs packages.
    pub rootfs: Vec<String>,
    /// Requested kernel package (empty for a host kernel).
    pub kernel: String,
    /// Requested boot-chain packages.
    pub boot: Vec<String>,
    /// Local .deb files (`path sha256`), so changing one resolves again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local: Vec<String>,
}

/// One pinned package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    /// Its use.
    pub role: Role,
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// File name in the archive.
    pub file: String,
    /// SHA-256 of the .deb.
    pub sha256: String,
    /// Size of the .deb in bytes.
    pub size: u64,
    /// The archive it was found in.
    pub archive: Archive,
    /// Path below the archive root (`pool/main/...`): the same on every
    /// mirror and on the snapshot service.
    pub path: String,
}

/// A whole lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Format version.
    pub version: u32,
    /// What it was resolved from.
    pub inputs: LockInputs,
    /// Snapshot timestamp (`YYYYMMDDTHHMMSSZ`) of the archive state the lock
    /// was resolved against: the recipe's `[apt] snapshot`, else the Date of
    /// the main suite's Release file. Builds fetch packages the archive has
    /// dropped from the snapshot service at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The packages, sorted by role then name.
    #[serde(rename = "package", default)]
    pub packages: Vec<LockedPackage>,
}

/// Why a lock file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Reading or writing failed.
    #[error("{what} lock file {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The lock path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The file is not a valid lock.
    #[error("lock file {path}: {message} (delete it or run with --update-lock)")]
    Invalid {
        /// The lock path.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
}

/// `recipes/x.toml` -> `recipes/x.lock`.
pub fn lock_path(recipe: &Path) -> PathBuf {
    recipe.with_extension("lock")
}

impl LockFile {
    /// Reads a lock file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<LockFile>, LockError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LockError::Io {
                    what: "reading",
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        if let Ok(v) = toml::from_str::<Version>(&text) {
            if v.version == 1 {
                return Err(LockError::Invalid {
                    path: path.to_path_buf(),
                    message: "format 1 records no download paths".into(),
                });
            }
        }
        let lock: LockFile = toml::from_str(&text).map_err(|e| LockError::Invalid {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        if lock.version != LOCK_VERSION {
            return Err(LockError::Invalid {
                path: path.to_path_buf(),
                message: format!("unsupported version {}", lock.version),
            });
        }
        Ok(Some(lock))
    }

    /// The file's text: a comment header, then deterministic TOML.
    pub fn to_text(&self) -> String {
        let mut sorted = self.clone();
        sorted.packages.sort();
        let body = toml::to_string(&sorted).unwrap_or_default();
        format!(
            "# slate lock file: the exact Debian packages this recipe's image is built from.\n\
             # Written by `slate build`; refresh with `slate build --update-lock`.\n{body}"
        )
    }

    /// Writes the lock atomically, only if its content changed.
    pub fn store(&self, path: &Path) -> Result<(), LockError> {
        let text = self.to_text();
        if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        crate::io::write_atomic(path, text.as_bytes()).map_err(|source| LockError::Io {
            what: "writing",
            path: path.to_path_buf(),
            source,
        })
    }

    /// Packages with the given role.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &LockedPackage> {
        self.packages.iter().filter(move |p| p.role == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_stable() {
        let lock = LockFile {
            version: LOCK_VERSION,
            inputs: LockInputs {
                apt: "http://deb.debian.org/debian bookworm main".into(),
                rootfs: vec!["busybox-static".into()],
                kernel: "linux-image-cloud-amd64".into(),
                local: vec!["debs/app.deb 00ff".into()],
                boot: vec!["systemd-boot-efi".into()],
            },
            snapshot: Some("20261125T000000Z".into()),
            packages: vec![
                LockedPackage {
                    role: Role::Rootfs,
                    name: "zz".into(),
                    version: "1".into(),
                    file: "zz_1_amd64.deb".into(),
                    sha256: "ab".into(),
                    size: 10,
                    archive: Archive::Main,
                    path: "pool/main/z/zz/zz_1_amd64.deb".into(),
                },
                LockedPackage {
                    role: Role::Kernel,
                    name: "aa".into(),
                    version: "2".into(),
                    file: "aa_2_amd64.deb".into(),
                    sha256: "cd".into(),
                    size: 20,
                    archive: Archive::Security,
                    path: "pool/updates/main/a/aa/aa_2_amd64.deb".into(),
                },
            ],
        };
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        lock.store(&p).unwrap();
        let back = LockFile::load(&p).unwrap().unwrap();
        assert_eq!(back.to_text(), lock.to_text());
        assert_eq!(back.packages[0].name, "zz", "rootfs sorts before kernel");
        assert!(
            LockFile::load(&d.path().join("none.lock"))
                .unwrap()
                .is_none()
        );
        std::fs::write(&p, "version = 1\n").unwrap();
        let e = LockFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("format 1") && e.contains("--update-lock"), "{e}");
        std::fs::write(&p, "version = 2\n[inputs]\nbogus = 1\n").unwrap();
        let e = LockFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("x.lock"), "{e}");
    }
}
