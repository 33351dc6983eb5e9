//! The software bill of materials of an image: SPDX 2.3, JSON
//! (`sbom.spdx.json` in every build, carried in its bundles).
//!
//! It lists the image as the described package, every locked Debian package
//! (version, SHA-256, download location, purl) and every file copied into the
//! image from the build host (the agent, `binaries` and their shared
//! libraries, `[[rootfs.files]]` sources), each with its SHA-256. Output is
//! deterministic: no wall-clock time (the creation time is the build's
//! SOURCE_DATE_EPOCH), no random ids.

use crate::packages::lock::{Archive, LockedPackage};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of the SBOM in a build directory; also its bundle artifact name
/// is `sbom`.
pub const FILE_NAME: &str = "sbom.spdx.json";

/// A file copied from the build host into the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostFile {
    /// Path in the image.
    pub image_path: String,
    /// Path on the build host.
    pub host_path: PathBuf,
    /// SHA-256 of the content.
    pub sha256: String,
}

/// What the SBOM describes.
#[derive(Debug, Clone)]
pub struct SbomInputs<'a> {
    /// Image name.
    pub name: &'a str,
    /// Image version.
    pub version: &'a str,
    /// Build timestamp (seconds since the epoch).
    pub epoch: i64,
    /// Debian architecture.
    pub architecture: &'a str,
    /// Locked packages, with the archive root URL each came from.
    pub packages: Vec<(&'a LockedPackage, String)>,
    /// Host files, one entry per image path.
    pub host_files: &'a [HostFile],
    /// Tar streams of the base and layer inputs, bottom first.
    pub layers: Vec<&'a crate::compose::layers::LayerBlob>,
}

/// SPDX ids allow letters, digits, `.` and `-`.
fn spdx_id(prefix: &str, parts: &[&str]) -> String {
    let mut s = format!("SPDXRef-{prefix}");
    for p in parts {
        s.push('-');
        s.extend(p.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        }));
    }
    s
}

/// `1700000000` -> `2023-11-14T22:13:20Z`.
pub fn iso8601(epoch: i64) -> String {
    crate::utc::format(epoch)
}

/// The SPDX 2.3 JSON document, pretty-printed, newline-terminated.
pub fn spdx_json(i: &SbomInputs<'_>) -> String {
    let image_id = spdx_id("Image", &[i.name]);
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": i.name,
        "versionInfo": i.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "supplier": "NOASSERTION",
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    // One SPDX package per Debian package (a package used by both the root
    // filesystem and the boot chain appears once, with both roles).
    type Key<'k> = (&'k str, &'k str, &'k str);
    let mut debs: BTreeMap<Key<'_>, (Vec<String>, &LockedPackage, &str)> = BTreeMap::new();
    for (p, base) in &i.packages {
        let e = debs
            .entry((p.name.as_str(), p.version.as_str(), p.sha256.as_str()))
            .or_insert_with(|| (Vec::new(), *p, base.as_str()));
        e.0.push(format!("{:?}", p.role).to_lowercase());
    }
    for ((name, version, sha256), (roles, p, base)) in &debs {
        let id = spdx_id("Package-deb", &[name, &sha256[..16.min(sha256.len())]]);
        // A local .deb is the recipe author's: no download location, no
        // known supplier (and no host path, which would differ per machine).
        let (download, supplier, source) = match p.archive {
            Archive::Main | Archive::Security => (
                format!("{}/{}", base.trim_end_matches('/'), p.path),
                "Organization: Debian",
                format!(
                    "Debian package from the {} archive",
                    if p.archive == Archive::Main {
                        "main"
                    } else {
                        "security"
                    }
                ),
            ),
            Archive::Local => (
                "NOASSERTION".to_string(),
                "NOASSERTION",
                format!("local .deb {} named by the recipe", p.path),
            ),
        };
        packages.push(json!({
            "SPDXID": id,
            "name": name,
            "versionInfo": version,
            "packageFileName": p.file,
            "downloadLocation": download,
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": sha256}],
            "supplier": supplier,
            "sourceInfo": format!("{source}, used for: {}", roles.join(", ")),
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!(
                    "pkg:deb/debian/{name}@{}?arch={}",
                    version.replace(':', "%3A"),
                    i.architecture
                ),
            }],
        }));
        relationships.push(contains(&image_id, &id));
    }
    for f in i.host_files {
        let id = spdx_id("HostFile", &[&f.image_path]);
        // Only the file name: where the build ran must not change the SBOM.
        let host_name = f
            .host_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut p = opaque_package(
            &id,
            &f.image_path,
            &f.sha256,
            format!("copied from the build host ({host_name})"),
            "FILE",
        );
        p["packageFileName"] = json!(host_name);
        packages.push(p);
        relationships.push(contains(&image_id, &id));
    }
    for (n, l) in i.layers.iter().enumerate() {
        let id = spdx_id(
            "Layer",
            &[&n.to_string(), &l.sha256[..16.min(l.sha256.len())]],
        );
        packages.push(opaque_package(
            &id,
            &l.label,
            &l.sha256,
            format!("tar layer unpacked into the root filesystem ({})", l.label),
            "ARCHIVE",
        ));
        relationships.push(contains(&image_id, &id));
    }
    // The namespace is derived from the content, so it is unique per image
    // and stable across rebuilds.
    let body = serde_json::to_string(&(&packages, &relationships)).unwrap_or_default();
    let ns = crate::io::hash::hex(
        &crate::io::hash::sha256_reader(body.as_bytes()).map_or([0u8; 32], |(d, _)| d),
    );
    let doc: Value = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", i.name, i.version),
        "documentNamespace": format!("https://slate.invalid/spdx/{}/{}/{ns}", i.name, i.version),
        "creationInfo": {
            "created": iso8601(i.epoch),
            "creators": [format!("Tool: slate-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// `image CONTAINS id`.
fn contains(image_id: &str, id: &str) -> Value {
    json!({
        "spdxElementId": image_id,
        "relationshipType": "CONTAINS",
        "relatedSpdxElement": id,
    })
}

/// An SPDX package slate knows only by content: no download location,
/// supplier or license.
fn opaque_package(id: &str, name: &str, sha256: &str, source: String, purpose: &str) -> Value {
    json!({
        "SPDXID": id,
        "name": name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "checksums": [{"algorithm": "SHA256", "checksumValue": sha256}],
        "sourceInfo": source,
        "primaryPackagePurpose": purpose,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "supplier": "NOASSERTION",
    })
}

/// Every regular file in `tree` whose data is read from the build host
/// outside `staging` (where packages are unpacked), with its SHA-256.
pub fn host_files(tree: &crate::tree::Tree, staging: &Path) -> std::io::Result<Vec<HostFile>> {
    use crate::tree::{DataSource, NodeKind};
    let mut paths: Vec<String> = vec![String::new(); tree.len()];
    let mut out = Vec::new();
    let mut digests: BTreeMap<PathBuf, String> = BTreeMap::new();
    for e in tree.walk() {
        let path = if e.depth == 0 {
            String::new()
        } else {
            format!(
                "{}/{}",
                paths
                    .get(e.parent.index())
                    .map(String::as_str)
                    .unwrap_or(""),
                String::from_utf8_lossy(e.name)
            )
        };
        if let NodeKind::File(f) = &tree.node(e.id).kind {
            if let DataSource::Host(host) = &f.source {
                if !host.starts_with(staging) {
                    let sha256 = match digests.get(host) {
                        Some(d) => d.clone(),
                        None => {
                            let d = crate::io::hash::sha256_file(host)?;
                            digests.insert(host.clone(), d.clone());
                            d
                        }
                    };
                    out.push(HostFile {
                        image_path: path.clone(),
                        host_path: host.clone(),
                        sha256,
                    });
                }
            }
        }
        if let Some(slot) = paths.get_mut(e.id.index()) {
            *slot = path;
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_iso8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn ids_are_valid_spdx_ids() {
        assert_eq!(
            spdx_id("HostFile", &["/usr/lib/x86_64-linux-gnu/libc.so.6"]),
            "SPDXRef-HostFile--usr-lib-x86-64-linux-gnu-libc.so.6"
        );
    }
}
