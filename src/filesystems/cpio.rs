//! newc (`070701`) cpio archives, the format of a Linux initramfs.
//!
//! Entries come in [`Tree::walk`] order, so parents precede their children
//! and the bytes depend only on the tree: inode numbers count up from 1 in
//! that order, device numbers of the archive itself are 0, and owners, modes
//! and mtimes are the tree's. Callers clamp mtimes to SOURCE_DATE_EPOCH with
//! [`Tree::clamp_mtimes`] first (`slate mkfs cpio` does); times outside
//! newc's unsigned 32-bit range are clamped to 0 and 2106-02-07.
//!
//! A hard-linked file appears once per name with the same inode number; its
//! data is stored only with the last name and the others have size 0, which
//! is what the kernel's initramfs unpacker and GNU cpio expect.

use super::contents::{CopyError, copy_contents};
use crate::progress::Progress;
use crate::tree::{NodeKind, Tree};
use std::io::{self, BufWriter, Write};

/// How the archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// A plain cpio archive.
    #[default]
    None,
    /// gzip, level 6, with no name and mtime 0 in its header.
    Gzip,
    /// zstd, level 9, with a content checksum, single-threaded (so the
    /// output is reproducible).
    Zstd,
}

/// What [`write_cpio`] produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CpioSummary {
    /// Records written, not counting the trailer.
    pub entries: u64,
    /// Bytes of file contents and symlink targets stored.
    pub data_bytes: u64,
    /// Size of the archive before compression.
    pub archive_bytes: u64,
}

/// Why an archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// Reading a source file or writing the output failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The tree holds something newc cannot represent.
    #[error("{path}: {reason}")]
    Unsupported {
        /// Path of the node.
        path: String,
        /// What newc cannot store.
        reason: String,
    },
}

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &[u8] = b"TRAILER!!!";
/// The kernel's initramfs unpacker refuses names longer than PATH_MAX.
const PATH_MAX: usize = 4096;
/// Level 19 makes archives ~10% smaller at 7-20x the time (41 s for 30 MiB
/// of libraries here); the kernel unpacks both equally fast.
const ZSTD_LEVEL: i32 = 9;
const GZIP_LEVEL: u32 = 6;

fn write_err(source: io::Error) -> CpioError {
    CpioError::Io {
        context: "writing the cpio archive".into(),
        source,
    }
}

/// Writes `tree` as a newc archive to `out`, compressed as asked.
pub fn write_cpio<W: Write>(
    tree: &Tree,
    compression: Compression,
    out: W,
) -> Result<CpioSummary, CpioError> {
    const BUF: usize = 1 << 20;
    match compression {
        Compression::None => {
            let mut w = BufWriter::with_capacity(BUF, out);
            let s = write_archive(tree, &mut w)?;
            w.flush().map_err(write_err)?;
            Ok(s)
        }
        Compression::Gzip => {
            let enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(out, flate2::Compression::new(GZIP_LEVEL));
            let mut w = BufWriter::with_capacity(BUF, enc);
            let s = write_archive(tree, &mut w)?;
            let enc = w.into_inner().map_err(|e| write_err(e.into_error()))?;
            enc.finish().map_err(write_err)?;
            Ok(s)
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::Encoder::new(out, ZSTD_LEVEL).map_err(write_err)?;
            enc.include_checksum(true).map_err(write_err)?;
            let mut w = BufWriter::with_capacity(BUF, enc);
            let s = write_archive(tree, &mut w)?;
            let enc = w.into_inner().map_err(|e| write_err(e.into_error()))?;
            enc.finish().map_err(write_err)?;
            Ok(s)
        }
    }
}

/// One newc header (the 13 fields after the magic).
#[derive(Debug, Default, Clone, Copy)]
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

impl Header {
    /// Writes the header, `name` with its NUL and the padding to 4 bytes;
    /// returns the bytes written.
    fn write(&self, w: &mut impl Write, name: &[u8]) -> io::Result<u64> {
        let namesize = name.len() as u32 + 1;
        let fields = [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.filesize,
            0, // devmajor: the archive's own device numbers carry nothing
            0, // devminor
            self.rdev_major,
            self.rdev_minor,
            namesize,
            0, // check: only used by the crc format
        ];
        let mut h = Vec::with_capacity(110 + name.len() + 4);
        h.extend_from_slice(MAGIC);
        for f in fields {
            h.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        h.extend_from_slice(name);
        h.push(0);
        h.resize(h.len().next_multiple_of(4), 0);
        w.write_all(&h)?;
        Ok(h.len() as u64)
    }
}

fn pad(w: &mut impl Write, len: u64) -> io::Result<u64> {
    let n = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..n as usize])?;
    Ok(n)
}

fn archive_mtime(secs: i64) -> u32 {
    secs.clamp(0, i64::from(u32::MAX)) as u32
}

/// Writes every entry and the trailer.
fn write_archive(tree: &Tree, w: &mut impl Write) -> Result<CpioSummary, CpioError> {
    let walk = tree.walk();
    // How many names each inode has in the archive; data goes with the last.
    let mut names_left = vec![0u32; tree.len()];
    for e in &walk {
        names_left[e.id.index()] += 1;
    }
    let link_count: Vec<u32> = names_left.clone();
    let mut inos = vec![0u32; tree.len()];
    let mut next_ino = 1u32;
    let progress = Progress::bytes(tree.total_data_bytes(), "cpio");
    let mut buf = vec![0u8; 256 * 1024];
    let mut summary = CpioSummary {
        entries: 0,
        data_bytes: 0,
        archive_bytes: 0,
    };
    let mut path: Vec<u8> = Vec::new();
    // Length of `path` at each depth, to cut it back when the walk goes up.
    let mut path_len_at: Vec<usize> = Vec::new();

    for e in &walk {
        if e.depth == 0 {
            path.clear();
            path.push(b'.');
        } else {
            let base = if e.depth == 1 {
                0
            } else {
                path_len_at[e.depth - 1]
            };
            path.truncate(base);
            if e.depth > 1 {
                path.push(b'/');
            }
            path.extend_from_slice(e.name);
        }
        path_len_at.truncate(e.depth);
        path_len_at.push(path.len());
        let shown = || {
            if e.depth == 0 {
                "/".to_string()
            } else {
                format!("/{}", String::from_utf8_lossy(&path))
            }
        };
        if path.len() >= PATH_MAX {
            return Err(CpioError::Unsupported {
                path: shown(),
                reason: format!(
                    "path is {} bytes; the kernel accepts at most {}",
                    path.len(),
                    PATH_MAX - 1
                ),
            });
        }

        let node = tree.node(e.id);
        let i = e.id.index();
        if inos[i] == 0 {
            inos[i] = next_ino;
            next_ino = next_ino
                .checked_add(1)
                .ok_or_else(|| CpioError::Unsupported {
                    path: shown(),
                    reason: "more than 4 billion inodes".into(),
                })?;
        }
        names_left[i] -= 1;
        let mut h = Header {
            ino: inos[i],
            mode: node.st_mode(),
            uid: node.meta.uid,
            gid: node.meta.gid,
            nlink: match node.kind {
                NodeKind::Directory(_) => tree.nlink(e.id),
                _ => link_count[i],
            },
            mtime: archive_mtime(node.meta.mtime.secs),
            ..Header::default()
        };
        let too_big = |size: u64| CpioError::Unsupported {
            path: shown(),
            reason: format!("file is {size} bytes; newc stores at most {}", u32::MAX),
        };
        match &node.kind {
            NodeKind::File(data) => {
                let with_data = names_left[i] == 0;
                if with_data {
                    h.filesize = u32::try_from(data.size).map_err(|_| too_big(data.size))?;
                }
                summary.archive_bytes += h.write(w, &path).map_err(write_err)?;
                if with_data {
                    let mut sink = Counting {
                        inner: &mut *w,
                        progress: &progress,
                    };
                    copy_contents(data, &mut sink, &mut buf).map_err(|e| match e {
                        CopyError::Read(src, source) => CpioError::Io {
                            context: format!("reading {src}"),
                            source,
                        },
                        CopyError::Write(source) => write_err(source),
                    })?;
                    summary.data_bytes += data.size;
                    summary.archive_bytes += data.size + pad(w, data.size).map_err(write_err)?;
                }
            }
            NodeKind::Symlink(target) => {
                h.filesize = target.len() as u32;
                summary.archive_bytes += h.write(w, &path).map_err(write_err)?;
                w.write_all(target).map_err(write_err)?;
                let len = target.len() as u64;
                summary.data_bytes += len;
                summary.archive_bytes += len + pad(w, len).map_err(write_err)?;
            }
            NodeKind::CharDevice(d) | NodeKind::BlockDevice(d) => {
                h.rdev_major = d.major;
                h.rdev_minor = d.minor;
                summary.archive_bytes += h.write(w, &path).map_err(write_err)?;
            }
            NodeKind::Directory(_) | NodeKind::Fifo | NodeKind::Socket => {
                summary.archive_bytes += h.write(w, &path).map_err(write_err)?;
            }
        }
        summary.entries += 1;
    }
    let trailer = Header {
        nlink: 1,
        ..Header::default()
    };
    summary.archive_bytes += trailer.write(w, TRAILER).map_err(write_err)?;
    progress.finish();
    Ok(summary)
}

/// Advances the progress bar by what passes through.
struct Counting<'a, W> {
    inner: W,
    progress: &'a Progress,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{DeviceNumber, FileData, Metadata, Node, NodeId, Timestamp};

    fn meta(mode: u16, mtime: i64) -> Metadata {
        Metadata {
            mtime: Timestamp::from_secs(mtime),
            ..Metadata::root(mode)
        }
    }

    fn sample() -> Tree {
        let mut t = Tree::new(meta(0o755, 100));
        let dir = meta(0o755, 200);
        let f = t
            .put(
                b"/a/f",
                Node {
                    kind: NodeKind::File(FileData::from_bytes(&b"hello"[..])),
                    meta: meta(0o644, 300),
                },
                &dir,
            )
            .unwrap();
        let b = t.mkdir_p(b"/b", &dir).unwrap();
        t.link(b, b"g", f).unwrap();
        t.put(
            b"/dev/null",
            Node {
                kind: NodeKind::CharDevice(DeviceNumber { major: 1, minor: 3 }),
                meta: meta(0o666, -5),
            },
            &dir,
        )
        .unwrap();
        t.put(
            b"/l",
            Node {
                kind: NodeKind::Symlink(b"a/f".to_vec()),
                meta: meta(0o777, 400),
            },
            &dir,
        )
        .unwrap();
        t
    }

    /// Parses a plain archive into (name, header fields, data).
    fn parse(mut a: &[u8]) -> Vec<(String, Vec<u32>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = 0usize;
        loop {
            assert_eq!(&a[..6], MAGIC, "at {off}");
            let f: Vec<u32> = (0..13)
                .map(|i| {
                    u32::from_str_radix(std::str::from_utf8(&a[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                        .unwrap()
                })
                .collect();
            let namesize = f[11] as usize;
            let name = String::from_utf8(a[110..110 + namesize - 1].to_vec()).unwrap();
            assert_eq!(a[110 + namesize - 1], 0);
            let data_at = (110 + namesize).next_multiple_of(4);
            let size = f[6] as usize;
            let data = a[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            off += next;
            a = &a[next..];
            let done = name == "TRAILER!!!";
            out.push((name, f, data));
            if done {
                assert!(a.is_empty());
                return out;
            }
        }
    }

    #[test]
    fn layout_order_links_and_padding() {
        let mut out = Vec::new();
        let s = write_cpio(&sample(), Compression::None, &mut out).unwrap();
        assert_eq!(out.len() % 4, 0);
        assert_eq!(s.archive_bytes, out.len() as u64);
        let recs = parse(&out);
        let names: Vec<&str> = recs.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            names,
            [
                ".",
                "a",
                "a/f",
                "b",
                "b/g",
                "dev",
                "dev/null",
                "l",
                "TRAILER!!!"
            ]
        );
        let by = |n: &str| recs.iter().find(|r| r.0 == n).unwrap();
        // Hard link: same inode, data only on the last name.
        assert_eq!(by("a/f").1[0], by("b/g").1[0]);
        assert_eq!(by("a/f").1[4], 2);
        assert_eq!(by("a/f").2, b"");
        assert_eq!(by("b/g").2, b"hello");
        assert_eq!(by("b/g").1[1], 0o100644);
        // Inodes count up in walk order.
        let inos: Vec<u32> = [".", "a", "a/f", "b", "dev", "dev/null", "l"]
            .iter()
            .map(|n| by(n).1[0])
            .collect();
        assert_eq!(inos, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(by(".").1[4], 5, "root nlink = 2 + 3 subdirectories");
        assert_eq!(by("dev/null").1[1], 0o020666);
        assert_eq!((by("dev/null").1[9], by("dev/null").1[10]), (1, 3));
        assert_eq!(by("dev/null").1[5], 0, "negative mtime clamps to 0");
        assert_eq!(by("l").2, b"a/f");
        assert_eq!(by("l").1[1], 0o120777);
        assert_eq!(by("a").1[5], 200);
        let t = by("TRAILER!!!");
        assert_eq!(t.1[4], 1);
        assert_eq!(t.1[11], 11);
    }

    #[test]
    fn compressed_outputs_decompress_to_the_plain_archive() {
        let tree = sample();
        let mut plain = Vec::new();
        write_cpio(&tree, Compression::None, &mut plain).unwrap();
        let mut gz = Vec::new();
        write_cpio(&tree, Compression::Gzip, &mut gz).unwrap();
        let mut dec = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut dec).unwrap();
        assert_eq!(dec, plain);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip header mtime is 0");
        let mut zs = Vec::new();
        write_cpio(&tree, Compression::Zstd, &mut zs).unwrap();
        assert_eq!(zstd::decode_all(&zs[..]).unwrap(), plain);
    }

    #[test]
    fn too_long_path_names_the_path() {
        let mut t = Tree::new(meta(0o755, 0));
        let mut cur = NodeId::ROOT;
        let name = vec![b'd'; 250];
        for _ in 0..17 {
            cur = t
                .add(
                    cur,
                    &name,
                    Node {
                        kind: NodeKind::empty_dir(),
                        meta: meta(0o755, 0),
                    },
                )
                .unwrap();
        }
        let e = write_cpio(&t, Compression::None, std::io::sink()).unwrap_err();
        assert!(
            e.to_string().contains("the kernel accepts at most 4095"),
            "{e}"
        );
    }
}
