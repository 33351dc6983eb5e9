//! Building a [`Tree`] from a directory on the build host.

use super::{
    DataSource, DeviceNumber, FileData, Metadata, Node, NodeId, NodeKind, Timestamp, Tree,
    TreeError,
};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How to read a host directory.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Copy extended attributes (user.*, security.*, trusted.* when readable).
    pub xattrs: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self { xattrs: true }
    }
}

/// Why a host directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A system call on a path failed.
    // The OS error is the source, shown by `{:#}`; repeating it here would
    // print it twice.
    #[error("{what} {path}")]
    Io {
        /// What was being done ("reading", "listing", ...).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The tree cannot represent what was found.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The source is not a directory.
    #[error("source {0} is not a directory")]
    NotADirectory(PathBuf),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ScanError + 'a {
    move |source| ScanError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `root` recursively into a [`Tree`], like `mke2fs -d` does: owners,
/// modes, nanosecond mtimes, device numbers, xattrs, hard links (by device and
/// inode) and holes of sparse files. Every regular file is opened once here so
/// an unreadable file is reported before any output is written.
pub fn scan_host_dir(root: &Path, opts: &ScanOptions) -> Result<Tree, ScanError> {
    let md = fs::symlink_metadata(root).map_err(io_err("reading", root))?;
    if !md.is_dir() {
        return Err(ScanError::NotADirectory(root.to_path_buf()));
    }
    let mut tree = Tree::new(metadata_of(root, &md, opts)?);
    let mut hardlinks: HashMap<(u64, u64), NodeId> = HashMap::new();
    // Explicit work list instead of recursion: deep trees must not overflow the stack.
    let mut pending: Vec<(PathBuf, NodeId)> = vec![(root.to_path_buf(), NodeId::ROOT)];
    while let Some((dir_path, dir_id)) = pending.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir_path)
            .map_err(io_err("listing", &dir_path))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err("listing", &dir_path))?;
        // Sorted so hard-link "first seen" choices and errors are deterministic.
        names.sort();
        for name in names {
            let path = dir_path.join(&name);
            let md = fs::symlink_metadata(&path).map_err(io_err("reading", &path))?;
            let ft = md.file_type();
            if !ft.is_dir() && md.nlink() > 1 {
                if let Some(&target) = hardlinks.get(&(md.dev(), md.ino())) {
                    tree.link(dir_id, name.as_bytes(), target)?;
                    continue;
                }
            }
            let meta = metadata_of(&path, &md, opts)?;
            let kind = if ft.is_dir() {
                NodeKind::empty_dir()
            } else if ft.is_file() {
                NodeKind::File(file_data(&path, &md)?)
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(io_err("reading symlink", &path))?;
                NodeKind::Symlink(target.as_os_str().as_bytes().to_vec())
            } else if ft.is_char_device() {
                NodeKind::CharDevice(split_dev(md.rdev()))
            } else if ft.is_block_device() {
                NodeKind::BlockDevice(split_dev(md.rdev()))
            } else if ft.is_fifo() {
                NodeKind::Fifo
            } else {
                NodeKind::Socket
            };
            let is_dir = matches!(kind, NodeKind::Directory(_));
            let id = tree.add(dir_id, name.as_bytes(), Node { kind, meta })?;
            if is_dir {
                pending.push((path, id));
            } else if md.nlink() > 1 {
                hardlinks.insert((md.dev(), md.ino()), id);
            }
        }
    }
    Ok(tree)
}

fn metadata_of(path: &Path, md: &fs::Metadata, opts: &ScanOptions) -> Result<Metadata, ScanError> {
    let xattrs = if opts.xattrs {
        read_xattrs(path)?
    } else {
        BTreeMap::new()
    };
    Ok(Metadata {
        mode: (md.mode() & 0o7777) as u16,
        uid: md.uid(),
        gid: md.gid(),
        mtime: Timestamp {
            secs: md.mtime(),
            nanos: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        },
        xattrs,
    })
}

/// Linux's encoding of dev_t (glibc `gnu_dev_major`/`gnu_dev_minor`).
fn split_dev(rdev: u64) -> DeviceNumber {
    DeviceNumber {
        major: (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff)) as u32,
        minor: (((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff)) as u32,
    }
}

fn file_data(path: &Path, md: &fs::Metadata) -> Result<FileData, ScanError> {
    let file = fs::File::open(path).map_err(io_err("opening", path))?;
    let size = md.len();
    // Only ask for holes when the file occupies less than its size on disk.
    let data = if size > 0 && md.blocks().saturating_mul(512) < size {
        crate::io::sparse::data_ranges(&file, size).map_err(io_err("finding holes in", path))?
    } else if size == 0 {
        Vec::new()
    } else {
        vec![0..size]
    };
    Ok(FileData {
        size,
        source: DataSource::Host(path.to_path_buf()),
        data,
    })
}

fn read_xattrs(path: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, ScanError> {
    let mut out = BTreeMap::new();
    let mut list = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut list[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => list.resize(list.len() * 4, 0),
            // Filesystems without xattr support simply have none.
            Err(rustix::io::Errno::NOTSUP) => return Ok(out),
            Err(e) => return Err(io_err("listing xattrs of", path)(e.into())),
        }
    };
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut val = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, name, &mut val[..]) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => val.resize(val.len() * 4, 0),
                Err(e) => return Err(io_err("reading xattrs of", path)(e.into())),
            }
        };
        val.truncate(len);
        out.insert(name.to_vec(), val);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn scans_types_links_and_holes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/f"), b"hello").unwrap();
        fs::hard_link(root.join("a/f"), root.join("a/b/g")).unwrap();
        std::os::unix::fs::symlink("f", root.join("a/l")).unwrap();
        let mut sparse = fs::File::create(root.join("sparse")).unwrap();
        sparse.seek(SeekFrom::Start(64 << 20)).unwrap();
        sparse.write_all(b"end").unwrap();
        drop(sparse);

        let t = scan_host_dir(root, &ScanOptions::default()).unwrap();
        let f = t.lookup(b"a/f").unwrap();
        assert_eq!(t.lookup(b"a/b/g"), Some(f));
        assert_eq!(t.nlink(f), 2);
        assert!(
            matches!(&t.node(t.lookup(b"a/l").unwrap()).kind, NodeKind::Symlink(s) if s == b"f")
        );
        match &t.node(t.lookup(b"sparse").unwrap()).kind {
            NodeKind::File(fd) => {
                assert_eq!(fd.size, (64 << 20) + 3);
                assert!(fd.data_len() < 1 << 20, "{:?}", fd.data);
                assert_eq!(fd.data.last().unwrap().end, fd.size);
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn missing_source_names_path() {
        let e = scan_host_dir(Path::new("/nonexistent/slate"), &ScanOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/slate"), "{e}");
    }

    #[test]
    fn dev_split_matches_glibc() {
        // makedev(8, 1) and makedev(4660, 70000), as glibc encodes them.
        let makedev = |ma: u64, mi: u64| {
            ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12)
        };
        assert_eq!(
            split_dev(makedev(8, 1)),
            DeviceNumber { major: 8, minor: 1 }
        );
        let big = DeviceNumber {
            major: 4660,
            minor: 70000,
        };
        assert_eq!(split_dev(makedev(4660, 70000)), big);
    }
}
