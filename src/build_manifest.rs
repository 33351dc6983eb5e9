//! `manifest.json` in a build output directory: the contract between
//! `slate build` (which writes it) and `slate bundle` (which reads it).

use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name of the manifest inside a build directory.
pub const FILE_NAME: &str = "manifest.json";

/// Current version of this manifest's schema.
pub const FORMAT: u32 = 1;

/// What a build produced: identity of the image and every artifact's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildManifest {
    /// Schema version, [`FORMAT`].
    pub format: u32,
    /// Image name from the recipe, e.g. `minimal`.
    pub name: String,
    /// Image version, e.g. `1.0.0`.
    pub version: String,
    /// Devices accept only bundles whose `compatible` equals their own.
    pub compatible: String,
    /// Anti-rollback level: devices refuse bundles below their floor.
    pub security_version: u64,
    /// SOURCE_DATE_EPOCH the build used (seconds).
    pub source_date_epoch: i64,
    /// The slot payloads, in install order: `rootfs`, `kernel`, `initrd`.
    pub artifacts: Vec<Artifact>,
    /// The full disk image (not part of update bundles).
    pub disk: Option<Artifact>,
    /// The root filesystem's layout file, for `slate build --previous`
    /// (not part of update bundles; absent in older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Artifact>,
    /// Debian packages that went into the image.
    pub packages: Vec<PackageRecord>,
}

/// One file of the build output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Role: `rootfs`, `kernel`, `initrd` or `disk`.
    pub name: String,
    /// File name inside the build directory.
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// The slot image's dm-verity parameters (the `rootfs` only; absent in
    /// older manifests): `slate bundle` recomputes and signs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verity: Option<crate::bundle::manifest::ArtifactVerity>,
}

/// A Debian package in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRecord {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// SHA-256 of the .deb.
    pub sha256: String,
}

/// Why a build manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The manifest path.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The file is not a valid manifest.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The manifest path.
        path: String,
        /// JSON error with line and column.
        source: serde_json::Error,
    },
    /// A newer or unknown schema.
    #[error("{path}: unsupported manifest format {found} (this slate reads {FORMAT})")]
    Format {
        /// The manifest path.
        path: String,
        /// The version found.
        found: u32,
    },
}

impl BuildManifest {
    /// Reads `<dir>/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(FILE_NAME);
        let shown = path.display().to_string();
        let text = std::fs::read(&path).map_err(|source| ManifestError::Io {
            path: shown.clone(),
            source,
        })?;
        let m: Self = serde_json::from_slice(&text).map_err(|source| ManifestError::Parse {
            path: shown.clone(),
            source,
        })?;
        if m.format != FORMAT {
            return Err(ManifestError::Format {
                path: shown,
                found: m.format,
            });
        }
        Ok(m)
    }

    /// Pretty JSON with a trailing newline; field order is fixed, so the
    /// bytes are reproducible.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// The artifact with this role.
    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_fields() {
        let m = BuildManifest {
            format: FORMAT,
            name: "minimal".into(),
            version: "1.0.0".into(),
            compatible: "slate-qemu-x86_64".into(),
            security_version: 1,
            source_date_epoch: 0,
            artifacts: vec![Artifact {
                name: "rootfs".into(),
                file: "rootfs.ext4".into(),
                size: 4096,
                sha256: "00".repeat(32),
                verity: None,
            }],
            disk: None,
            layout: None,
            packages: vec![],
        };
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE_NAME), m.to_json()).unwrap();
        assert_eq!(BuildManifest::load(d.path()).unwrap(), m);
        let bad = m
            .to_json()
            .replacen("\"format\"", "\"extra\": 1, \"format\"", 1);
        std::fs::write(d.path().join(FILE_NAME), bad).unwrap();
        let e = BuildManifest::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
