//! Tar archives and container images as the base of the root filesystem or
//! as layers over it: an OCI image layout (`oci:DIR`), a `docker save`
//! tarball (`docker-archive:FILE`) or a plain tar. Every blob is checked
//! against its digest before it is used; whiteouts are honoured.

use super::ComposeError;
use super::rootfs::resolve;
use crate::packages::deb::{self, Unpacked};
use crate::recipe::{Layer, LayerKind, Recipe};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One tar stream of a layer input, ready to unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// The tar file on the host (or in the cache).
    pub path: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// Where it came from, for messages and the SBOM
    /// (`oci:app/ layer 2`).
    pub label: String,
}

/// A layer input, resolved to its tar streams (bottom first) and unpacked.
#[derive(Debug, Clone)]
pub struct UnpackedLayer {
    /// The recipe entry.
    pub layer: Layer,
    /// Its tar streams, bottom first.
    pub blobs: Vec<LayerBlob>,
    /// The unpacked streams, in the same order.
    pub unpacked: Vec<Unpacked>,
}

/// Resolves and unpacks one `base`/`layers` entry.
pub fn unpack_layer(
    recipe: &Recipe,
    layer: &Layer,
    cache: &Path,
    architecture: &str,
) -> Result<UnpackedLayer, ComposeError> {
    let bad = |m: String| ComposeError::Recipe(recipe.error(&dotted(&layer.field), m));
    let host = resolve(recipe, &layer.path);
    let blobs = match layer.kind {
        LayerKind::Tar => vec![LayerBlob {
            sha256: sha256(&host)?,
            path: host.clone(),
            label: layer.path.display().to_string(),
        }],
        LayerKind::Oci => {
            oci_blobs(&host, &layer.path.display().to_string(), architecture).map_err(bad)?
        }
        LayerKind::DockerArchive => {
            docker_archive_blobs(&host, &layer.path.display().to_string(), cache).map_err(bad)?
        }
    };
    let mut unpacked = Vec::new();
    for b in &blobs {
        let u = deb::unpack_tar(&b.path, &b.sha256, &b.label, cache).map_err(|e| {
            ComposeError::Recipe(recipe.error(&dotted(&layer.field), format!("{}: {e}", b.label)))
        })?;
        unpacked.push(u);
    }
    Ok(UnpackedLayer {
        layer: layer.clone(),
        blobs,
        unpacked,
    })
}

/// `rootfs.layers[2]` -> `rootfs.layers.2` (the key recipe lines use).
fn dotted(field: &str) -> String {
    field.replace('[', ".").replace(']', "")
}

fn sha256(path: &Path) -> Result<String, ComposeError> {
    crate::io::hash::sha256_file(path).map_err(|e| ComposeError::io("reading", path, e))
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The OCI platform name of a Debian architecture.
fn oci_architecture(debian: &str) -> &str {
    match debian {
        "armhf" | "armel" => "arm",
        "i386" => "386",
        "ppc64el" => "ppc64le",
        other => other,
    }
}

/// A blob of an OCI layout by digest, verified.
fn oci_blob(dir: &Path, digest: &str) -> Result<(PathBuf, String), String> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("unsupported digest {digest:?} (sha256 only)"))?;
    let path = dir.join("blobs").join("sha256").join(hex);
    let found = crate::io::hash::sha256_file(&path)
        .map_err(|e| format!("blob {digest}: cannot read {}: {e}", path.display()))?;
    if found != hex {
        return Err(format!(
            "blob {} has sha256 {found}, not the {digest} it is named by",
            path.display()
        ));
    }
    Ok((path, found))
}

/// The layers of the single image (for `architecture`) in an OCI layout;
/// `name` is the layout as the recipe writes it (for labels).
pub fn oci_blobs(dir: &Path, name: &str, architecture: &str) -> Result<Vec<LayerBlob>, String> {
    if !dir.join("oci-layout").is_file() {
        return Err(format!(
            "{} is not an OCI image layout (no oci-layout file)",
            dir.display()
        ));
    }
    let index = read_json(&dir.join("index.json"))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let [entry] = manifests.as_slice() else {
        return Err(format!(
            "{}/index.json lists {} images; slate takes a layout with exactly one",
            dir.display(),
            manifests.len()
        ));
    };
    let manifest = image_manifest(dir, entry, oci_architecture(architecture))?;
    let layers = manifest["layers"]
        .as_array()
        .ok_or_else(|| "the image manifest has no layers".to_string())?;
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let digest = l["digest"].as_str().unwrap_or_default();
            let (path, sha256) = oci_blob(dir, digest)?;
            Ok(LayerBlob {
                path,
                sha256,
                label: format!("oci:{name} layer {i} ({digest})"),
            })
        })
        .collect()
}

/// Follows an index entry to the image manifest: directly, or through an
/// image index to the entry for `linux/<arch>`.
fn image_manifest(dir: &Path, entry: &Value, arch: &str) -> Result<Value, String> {
    let mut entry = entry.clone();
    for _ in 0..4 {
        let digest = entry["digest"].as_str().unwrap_or_default().to_string();
        let (path, _) = oci_blob(dir, &digest)?;
        let doc = read_json(&path)?;
        let media = doc["mediaType"]
            .as_str()
            .or(entry["mediaType"].as_str())
            .unwrap_or_default();
        if !media.contains("index") && !media.contains("manifest.list") {
            return Ok(doc);
        }
        let list = doc["manifests"].as_array().cloned().unwrap_or_default();
        entry = list
            .into_iter()
            .find(|m| {
                m["platform"]["architecture"].as_str() == Some(arch)
                    && m["platform"]["os"].as_str().unwrap_or("linux") == "linux"
            })
            .ok_or_else(|| format!("the image index {digest} has no linux/{arch} image"))?;
    }
    Err("image indexes nested too deeply".into())
}

/// The layers of a `docker save` tarball, copied out of it into the cache
/// (once per archive) so they can be unpacked like any tar.
pub fn docker_archive_blobs(
    archive: &Path,
    label: &str,
    cache: &Path,
) -> Result<Vec<LayerBlob>, String> {
    let archive_sha = crate::io::hash::sha256_file(archive)
        .map_err(|e| format!("cannot read {}: {e}", archive.display()))?;
    let manifest: Value = serde_json::from_slice(&member(archive, "manifest.json")?)
        .map_err(|e| format!("{}: manifest.json: {e}", archive.display()))?;
    let images = manifest.as_array().cloned().unwrap_or_default();
    let [image] = images.as_slice() else {
        return Err(format!(
            "{} holds {} images; slate takes an archive with exactly one",
            archive.display(),
            images.len()
        ));
    };
    let names: Vec<String> = image["Layers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Err(format!("{}: the image lists no layers", archive.display()));
    }
    let dir = cache.join("docker-archive").join(&archive_sha);
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let path = dir.join(format!("{i}.tar"));
            let sha256 = match crate::io::hash::sha256_file(&path) {
                Ok(s) => s,
                Err(_) => copy_member(archive, name, &path)?,
            };
            Ok(LayerBlob {
                path,
                sha256,
                label: format!("docker-archive:{label} layer {i} ({name})"),
            })
        })
        .collect()
}

/// Normalised member path (`./a/b` -> `a/b`).
fn member_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .trim_start_matches("./")
        .to_string()
}

/// Opens a tar archive for one pass over its members.
fn open_tar(archive: &Path) -> Result<tar::Archive<std::fs::File>, String> {
    std::fs::File::open(archive)
        .map(tar::Archive::new)
        .map_err(|e| format!("cannot read {}: {e}", archive.display()))
}

/// The bytes of a small member of a tar archive.
fn member(archive: &Path, name: &str) -> Result<Vec<u8>, String> {
    let mut tar = open_tar(archive)?;
    let entries = tar
        .entries()
        .map_err(|e| format!("{}: {e}", archive.display()))?;
    for e in entries {
        let mut e = e.map_err(|e| format!("{}: {e}", archive.display()))?;
        if member_name(&e.path_bytes()) == name {
            let mut buf = Vec::new();
            e.by_ref()
                .take(16 << 20)
                .read_to_end(&mut buf)
                .map_err(|e| format!("{}: {name}: {e}", archive.display()))?;
            return Ok(buf);
        }
    }
    Err(format!("{} has no {name}", archive.display()))
}

/// Copies member `name` of `archive` to `dest` (atomically), returning its
/// SHA-256. A member that is a symlink to another (as `docker save` writes
/// for shared layers) is followed.
fn copy_member(archive: &Path, name: &str, dest: &Path) -> Result<String, String> {
    let mut want = name.to_string();
    for _ in 0..8 {
        let mut tar = open_tar(archive)?;
        let entries = tar
            .entries()
            .map_err(|e| format!("{}: {e}", archive.display()))?;
        let mut link = None;
        for e in entries {
            let mut e = e.map_err(|e| format!("{}: {e}", archive.display()))?;
            if member_name(&e.path_bytes()) != want {
                continue;
            }
            if e.header().entry_type().is_symlink() {
                let target = e.link_name_bytes().map(|l| member_name(&l));
                let base = Path::new(&want).parent().unwrap_or(Path::new(""));
                link = target.map(|t| normalize_join(base, &t));
                break;
            }
            let parent = dest.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            let mut out = crate::io::AtomicFile::create(dest)
                .map_err(|e| format!("creating {}: {e}", dest.display()))?;
            let mut w = crate::io::hash::HashingWriter::new(out.file());
            std::io::copy(&mut e, &mut w)
                .map_err(|e| format!("{}: {want}: {e}", archive.display()))?;
            let digest = crate::io::hash::hex(&w.finish().0);
            out.commit()
                .map_err(|e| format!("writing {}: {e}", dest.display()))?;
            return Ok(digest);
        }
        want = link.ok_or_else(|| format!("{} has no {want}", archive.display()))?;
    }
    Err(format!("{}: {name}: too many symlinks", archive.display()))
}

/// `a/b` + `../c/d` -> `a/c/d`.
fn normalize_join(base: &Path, rel: &str) -> String {
    let mut parts: Vec<String> = base
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c.to_string()),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinked_members_resolve_relative_to_their_directory() {
        assert_eq!(
            normalize_join(Path::new("abc"), "../def/layer.tar"),
            "def/layer.tar"
        );
        assert_eq!(
            normalize_join(Path::new(""), "blobs/sha256/x"),
            "blobs/sha256/x"
        );
    }

    #[test]
    fn oci_blobs_are_checked_against_their_digest() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("blobs/sha256")).unwrap();
        let hex = "0".repeat(64);
        std::fs::write(d.path().join("blobs/sha256").join(&hex), b"not empty").unwrap();
        let e = oci_blob(d.path(), &format!("sha256:{hex}")).unwrap_err();
        assert!(e.contains("not the sha256:"), "{e}");
        assert!(
            oci_blob(d.path(), "md5:abc")
                .unwrap_err()
                .contains("sha256 only")
        );
    }
}
