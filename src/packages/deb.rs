//! Unpacking Debian packages in Rust: the `ar` container, then `data.tar`
//! compressed with xz, zstd or gzip. File contents are staged once per
//! package (keyed by the .deb's sha256); ownership, modes, device nodes and
//! links live in an index, so unprivileged builds lose nothing.

use crate::tree::{DeviceNumber, FileData, Metadata, Node, NodeKind, Timestamp, Tree, TreeError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Version of the extraction index format; bump to invalidate caches.
const INDEX_VERSION: u32 = 1;

/// Why a package could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// Reading the package or writing the staging area failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The package is not a valid .deb.
    #[error("{path}: not a valid Debian package: {reason}")]
    Corrupt {
        /// The .deb.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The package uses something slate does not handle.
    #[error("{path}: unsupported: {reason}")]
    Unsupported {
        /// The .deb.
        path: PathBuf,
        /// What is not supported.
        reason: String,
    },
    /// Adding an entry to the tree failed.
    #[error("{package}: {source}")]
    Tree {
        /// The package.
        package: String,
        /// Tree error.
        source: TreeError,
    },
}

/// What one tar member is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryKind {
    /// Directory.
    Dir,
    /// Regular file staged at `staged` (relative to the extraction dir).
    File {
        /// Staged content file.
        staged: String,
        /// Size in bytes.
        size: u64,
    },
    /// Symbolic link.
    Symlink {
        /// Link target.
        target: String,
    },
    /// Hard link to an earlier member.
    HardLink {
        /// Absolute path of the member linked to.
        target: String,
    },
    /// Character device.
    CharDevice {
        /// Major.
        major: u32,
        /// Minor.
        minor: u32,
    },
    /// Block device.
    BlockDevice {
        /// Major.
        major: u32,
        /// Minor.
        minor: u32,
    },
    /// Named pipe.
    Fifo,
}

/// One member of a package's data archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebEntry {
    /// Absolute path in the image.
    pub path: String,
    /// Type and type-specific data.
    #[serde(flatten)]
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds).
    pub mtime: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Index {
    version: u32,
    entries: Vec<DebEntry>,
}

/// A package unpacked into the staging cache.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// Package name (for messages).
    pub name: String,
    /// The extraction directory.
    pub dir: PathBuf,
    /// Members in archive order.
    pub entries: Vec<DebEntry>,
}

/// Unpacks `deb` (whose sha256 is `sha256`) under `cache/extract/`, reusing a
/// previous extraction of the same file.
pub fn unpack(deb: &Path, sha256: &str, name: &str, cache: &Path) -> Result<Unpacked, DebError> {
    unpack_with(deb, sha256, name, cache, &extract_to)
}

/// Unpacks a tar archive (plain, gzip, xz or zstd, told apart by their
/// magic bytes) whose sha256 is `sha256`, like [`unpack`] does a .deb: a
/// container layer or a base tarball.
pub fn unpack_tar(
    tar: &Path,
    sha256: &str,
    name: &str,
    cache: &Path,
) -> Result<Unpacked, DebError> {
    // Keyed apart from .debs: the same bytes unpack differently as a tar.
    let key = format!("tar-{sha256}");
    unpack_with(tar, &key, name, cache, &|path, dir| {
        let mut head = [0u8; 6];
        let n = File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(io("reading", path))?;
        let ext = match &head[..n] {
            [0x1f, 0x8b, ..] => ".gz",
            [0xfd, b'7', b'z', b'X', b'Z', 0] => ".xz",
            [0x28, 0xb5, 0x2f, 0xfd, ..] => ".zst",
            _ => "",
        };
        let f = File::open(path).map_err(io("opening", path))?;
        extract_tar(path, decompressor(path, ext, BufReader::new(f))?, dir)
    })
}

type Extractor = dyn Fn(&Path, &Path) -> Result<Vec<DebEntry>, DebError>;

fn unpack_with(
    deb: &Path,
    sha256: &str,
    name: &str,
    cache: &Path,
    extract: &Extractor,
) -> Result<Unpacked, DebError> {
    let dir = cache.join("extract").join(sha256);
    let index_path = dir.join("index.json");
    if let Ok(bytes) = std::fs::read(&index_path) {
        if let Ok(index) = serde_json::from_slice::<Index>(&bytes) {
            if index.version == INDEX_VERSION {
                return Ok(Unpacked {
                    name: name.to_string(),
                    dir,
                    entries: index.entries,
                });
            }
        }
    }
    let parent = cache.join("extract");
    std::fs::create_dir_all(&parent).map_err(io("creating", &parent))?;
    // Extract into a temp dir and rename, so a crash never leaves a
    // half-extracted package that looks complete.
    let tmp = tempfile::Builder::new()
        .prefix(".extract.")
        .tempdir_in(&parent)
        .map_err(io("creating a temp dir in", &parent))?;
    let entries = extract(deb, tmp.path())?;
    let index = Index {
        version: INDEX_VERSION,
        entries,
    };
    let json = serde_json::to_vec(&index).map_err(|e| DebError::Corrupt {
        path: deb.to_path_buf(),
        reason: e.to_string(),
    })?;
    let tmp_index = tmp.path().join("index.json");
    std::fs::write(&tmp_index, json).map_err(io("writing", &tmp_index))?;
    let tmp_path = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp_path, &dir) {
        // Another build extracted the same package concurrently: use theirs.
        let _ = std::fs::remove_dir_all(&tmp_path);
        if !index_path.exists() {
            return Err(io("storing", &dir)(e));
        }
    }
    unpack_with(deb, sha256, name, cache, extract)
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DebError {
    let path = path.to_path_buf();
    move |source| DebError::Io { what, path, source }
}

fn extract_to(deb: &Path, dir: &Path) -> Result<Vec<DebEntry>, DebError> {
    with_member(deb, "data.tar", |reader| extract_tar(deb, reader, dir))
}

/// Runs `f` on the first ar member named `<prefix><compression>`, through
/// its decompressor.
fn with_member<T>(
    deb: &Path,
    prefix: &str,
    f: impl FnOnce(Box<dyn Read + '_>) -> Result<T, DebError>,
) -> Result<T, DebError> {
    let corrupt = |reason: String| DebError::Corrupt {
        path: deb.to_path_buf(),
        reason,
    };
    let file = File::open(deb).map_err(io("opening", deb))?;
    let mut ar = ar::Archive::new(BufReader::new(file));
    while let Some(member) = ar.next_entry() {
        let member = member.map_err(|e| corrupt(e.to_string()))?;
        let id = String::from_utf8_lossy(member.header().identifier()).into_owned();
        let Some(ext) = id.strip_prefix(prefix) else {
            continue;
        };
        return f(decompressor(deb, ext, member)?);
    }
    Err(corrupt(format!("no {prefix} member")))
}

/// The identity a .deb declares in its control file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// `Package`.
    pub package: String,
    /// `Version`.
    pub version: String,
    /// `Architecture`.
    pub architecture: String,
}

/// Reads `Package`, `Version` and `Architecture` from a .deb's control
/// member (local .debs need not follow the `name_version_arch.deb` naming).
pub fn control(deb: &Path) -> Result<Control, DebError> {
    let corrupt = |reason: String| DebError::Corrupt {
        path: deb.to_path_buf(),
        reason,
    };
    with_member(deb, "control.tar", |reader| {
        let mut tar = tar::Archive::new(reader);
        for entry in tar.entries().map_err(|e| corrupt(e.to_string()))? {
            let mut entry = entry.map_err(|e| corrupt(e.to_string()))?;
            if normalize(&entry.path_bytes()).as_deref() != Some("/control") {
                continue;
            }
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| corrupt(format!("control: {e}")))?;
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| corrupt(format!("control has no {name} field")))
            };
            return Ok(Control {
                package: field("Package")?,
                version: field("Version")?,
                architecture: field("Architecture")?,
            });
        }
        Err(corrupt("control.tar has no control file".into()))
    })
}

/// A reader that decompresses a `*.tar<ext>` member.
fn decompressor<'a>(
    deb: &Path,
    ext: &str,
    member: impl Read + 'a,
) -> Result<Box<dyn Read + 'a>, DebError> {
    Ok(match ext {
        ".xz" => Box::new(xz2::read::XzDecoder::new(member)),
        ".zst" => {
            Box::new(
                zstd::stream::read::Decoder::new(member).map_err(|e| DebError::Corrupt {
                    path: deb.to_path_buf(),
                    reason: e.to_string(),
                })?,
            )
        }
        ".gz" => Box::new(flate2::read::GzDecoder::new(member)),
        "" => Box::new(member),
        other => {
            return Err(DebError::Unsupported {
                path: deb.to_path_buf(),
                reason: format!("compression {other}"),
            });
        }
    })
}

fn extract_tar(deb: &Path, reader: impl Read, dir: &Path) -> Result<Vec<DebEntry>, DebError> {
    let corrupt = |reason: String| DebError::Corrupt {
        path: deb.to_path_buf(),
        reason,
    };
    let files = dir.join("files");
    std::fs::create_dir_all(&files).map_err(io("creating", &files))?;
    let mut tar = tar::Archive::new(reader);
    let mut out = Vec::new();
    for (n, entry) in tar
        .entries()
        .map_err(|e| corrupt(e.to_string()))?
        .enumerate()
    {
        let mut entry = entry.map_err(|e| corrupt(e.to_string()))?;
        let raw_path = entry.path_bytes().into_owned();
        let path = normalize(&raw_path).ok_or_else(|| {
            corrupt(format!(
                "bad member path {:?}",
                String::from_utf8_lossy(&raw_path)
            ))
        })?;
        let h = entry.header();
        let mode = (h.mode().map_err(|e| corrupt(e.to_string()))? & 0o7777) as u16;
        let uid = h.uid().map_err(|e| corrupt(e.to_string()))? as u32;
        let gid = h.gid().map_err(|e| corrupt(e.to_string()))? as u32;
        let mtime = h.mtime().map_err(|e| corrupt(e.to_string()))? as i64;
        let link = || -> Result<String, DebError> {
            let l = entry
                .link_name_bytes()
                .ok_or_else(|| corrupt(format!("{path}: link without target")))?;
            String::from_utf8(l.into_owned())
                .map_err(|_| corrupt(format!("{path}: link target is not UTF-8")))
        };
        let et = h.entry_type();
        let dev = || -> Result<(u32, u32), DebError> {
            let major = h.device_major().ok().flatten().unwrap_or(0);
            let minor = h.device_minor().ok().flatten().unwrap_or(0);
            Ok((major, minor))
        };
        let kind = if et.is_dir() {
            EntryKind::Dir
        } else if et.is_symlink() {
            EntryKind::Symlink { target: link()? }
        } else if et.is_hard_link() {
            let t = link()?;
            let target = normalize(t.as_bytes())
                .ok_or_else(|| corrupt(format!("{path}: bad hard link target {t:?}")))?;
            EntryKind::HardLink { target }
        } else if et.is_character_special() {
            let (major, minor) = dev()?;
            EntryKind::CharDevice { major, minor }
        } else if et.is_block_special() {
            let (major, minor) = dev()?;
            EntryKind::BlockDevice { major, minor }
        } else if et.is_fifo() {
            EntryKind::Fifo
        } else if et.is_file() {
            let staged = format!("files/{n}");
            let dest = dir.join(&staged);
            let mut f = File::create(&dest).map_err(io("creating", &dest))?;
            let size = std::io::copy(&mut entry, &mut f).map_err(io("writing", &dest))?;
            EntryKind::File { staged, size }
        } else {
            // pax/GNU extension headers are consumed by the tar crate; anything
            // else is metadata we do not need.
            continue;
        };
        out.push(DebEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime,
        });
    }
    Ok(out)
}

/// `./usr/bin/x` -> `/usr/bin/x`; refuses `..` and non-UTF-8 names.
pub fn normalize(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Adds an unpacked package's members to `tree` (later packages win over
/// earlier ones on conflicting paths, as with dpkg's last-unpacked file).
pub fn add_to_tree(pkg: &Unpacked, tree: &mut Tree) -> Result<(), DebError> {
    add_entries(pkg, pkg.entries.iter(), tree)
}

/// OCI whiteout prefix: `.wh.NAME` removes NAME of the layers below.
const WHITEOUT: &str = ".wh.";
/// OCI opaque whiteout: the directory's entries from the layers below go.
const OPAQUE: &str = ".wh..wh..opq";

/// Adds a container layer (or tarball) to `tree`: its whiteouts first
/// remove what they name from the layers below, then its members are added.
/// Returns the paths the whiteouts removed.
pub fn add_layer_to_tree(layer: &Unpacked, tree: &mut Tree) -> Result<Vec<String>, DebError> {
    let mut removed = Vec::new();
    for e in &layer.entries {
        let (dir, name) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
        let dir = if dir.is_empty() { "/" } else { dir };
        let Some(parent) = tree.lookup(dir.as_bytes()) else {
            continue;
        };
        if name == OPAQUE {
            let names: Vec<Vec<u8>> = tree.children(parent).map(|(n, _)| n.to_vec()).collect();
            for n in names {
                tree.unlink(parent, &n);
            }
            removed.push(format!("{dir}/*"));
        } else if let Some(target) = name.strip_prefix(WHITEOUT) {
            if tree.unlink(parent, target.as_bytes()).is_some() {
                removed.push(format!("{}/{target}", dir.trim_end_matches('/')));
            }
        }
    }
    let is_whiteout = |e: &&DebEntry| {
        e.path
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(WHITEOUT))
    };
    add_entries(
        layer,
        layer.entries.iter().filter(|e| !is_whiteout(e)),
        tree,
    )?;
    Ok(removed)
}

fn add_entries<'a>(
    pkg: &Unpacked,
    entries: impl Iterator<Item = &'a DebEntry>,
    tree: &mut Tree,
) -> Result<(), DebError> {
    let tree_err = |source| DebError::Tree {
        package: pkg.name.clone(),
        source,
    };
    let parent_meta = Metadata::root(0o755);
    for e in entries {
        if e.path == "/" {
            continue;
        }
        let meta = Metadata {
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: Timestamp::from_secs(e.mtime),
            xattrs: BTreeMap::new(),
        };
        let kind = match &e.kind {
            EntryKind::Dir => NodeKind::empty_dir(),
            EntryKind::File { staged, size } => {
                NodeKind::File(FileData::host(pkg.dir.join(staged), *size))
            }
            EntryKind::Symlink { target } => NodeKind::Symlink(target.as_bytes().to_vec()),
            EntryKind::CharDevice { major, minor } => NodeKind::CharDevice(DeviceNumber {
                major: *major,
                minor: *minor,
            }),
            EntryKind::BlockDevice { major, minor } => NodeKind::BlockDevice(DeviceNumber {
                major: *major,
                minor: *minor,
            }),
            EntryKind::Fifo => NodeKind::Fifo,
            EntryKind::HardLink { target } => {
                let Some(t) = tree.lookup(target.as_bytes()) else {
                    return Err(DebError::Corrupt {
                        path: pkg.dir.clone(),
                        reason: format!("{}: hard link to missing {target}", e.path),
                    });
                };
                let (dir, name) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
                let parent = tree
                    .mkdir_p(dir.as_bytes(), &parent_meta)
                    .map_err(tree_err)?;
                if tree.child(parent, name.as_bytes()).is_some() {
                    tree.unlink(parent, name.as_bytes());
                }
                tree.link(parent, name.as_bytes(), t).map_err(tree_err)?;
                continue;
            }
        };
        tree.put(e.path.as_bytes(), Node { kind, meta }, &parent_meta)
            .map_err(tree_err)?;
    }
    Ok(())
}

/// An in-memory file node (helper for generated content).
pub fn text_file(content: &str, mode: u16) -> Node {
    Node {
        kind: NodeKind::File(FileData::from_bytes(Arc::<[u8]>::from(content.as_bytes()))),
        meta: Metadata::root(mode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny .deb with the system's `ar` semantics using our own
    /// writers (tar + gzip via the crates), then checks extraction.
    fn make_deb(dir: &Path) -> PathBuf {
        let mut tar_bytes = Vec::new();
        {
            let hdr = || {
                let mut h = tar::Header::new_gnu();
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(1000);
                h
            };
            let mut b = tar::Builder::new(&mut tar_bytes);
            let mut h = hdr();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(1000);
            b.append_data(&mut h, "./usr/bin/", &[][..]).unwrap();
            let mut h = hdr();
            h.set_mode(0o4755);
            h.set_size(5);
            h.set_uid(0);
            h.set_mtime(1000);
            b.append_data(&mut h, "./usr/bin/tool", &b"hello"[..])
                .unwrap();
            let mut h = hdr();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            b.append_link(&mut h, "./usr/bin/alias", "tool").unwrap();
            let mut h = hdr();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            h.set_mode(0o4755);
            b.append_link(&mut h, "./usr/bin/hard", "./usr/bin/tool")
                .unwrap();
            let mut h = hdr();
            h.set_entry_type(tar::EntryType::Char);
            h.set_mode(0o600);
            h.set_size(0);
            h.set_device_major(5).unwrap();
            h.set_device_minor(1).unwrap();
            b.append_data(&mut h, "./dev/console", &[][..]).unwrap();
            b.finish().unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar_bytes).unwrap();
        let data = gz.finish().unwrap();
        let path = dir.join("t.deb");
        let mut a = ar::Builder::new(File::create(&path).unwrap());
        for (name, bytes) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", Vec::new()),
            ("data.tar.gz", data),
        ] {
            let h = ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64);
            a.append(&h, &bytes[..]).unwrap();
        }
        path
    }

    #[test]
    fn unpacks_into_tree_with_metadata() {
        let d = tempfile::tempdir().unwrap();
        let deb = make_deb(d.path());
        let cache = d.path().join("cache");
        let u = unpack(&deb, "abc", "t", &cache).unwrap();
        assert_eq!(u.entries.len(), 5);
        // Second call reads the index instead of extracting.
        let again = unpack(&deb, "abc", "t", &cache).unwrap();
        assert_eq!(again.entries, u.entries);

        let mut tree = Tree::new(Metadata::root(0o755));
        add_to_tree(&u, &mut tree).unwrap();
        let tool = tree.lookup(b"/usr/bin/tool").unwrap();
        assert_eq!(tree.node(tool).meta.mode, 0o4755);
        assert_eq!(tree.lookup(b"/usr/bin/hard"), Some(tool));
        assert_eq!(tree.nlink(tool), 2);
        match &tree.node(tree.lookup(b"/dev/console").unwrap()).kind {
            NodeKind::CharDevice(d) => assert_eq!((d.major, d.minor), (5, 1)),
            k => panic!("{k:?}"),
        }
        match &tree.node(tool).kind {
            NodeKind::File(f) => assert_eq!(f.size, 5),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize(b"./usr/bin/x").as_deref(), Some("/usr/bin/x"));
        assert_eq!(normalize(b"./").as_deref(), Some("/"));
        assert_eq!(normalize(b"./a/../../etc"), None);
    }

    #[test]
    fn garbage_is_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bad.deb");
        std::fs::write(&p, b"not an ar archive").unwrap();
        let e = unpack(&p, "x", "bad", d.path()).unwrap_err().to_string();
        assert!(e.contains("not a valid Debian package"), "{e}");
    }
}
