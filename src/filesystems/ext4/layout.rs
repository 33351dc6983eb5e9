//! The layout file: where a written image put everything, so that the next
//! build can keep unchanged files at the same blocks (`slate build
//! --previous`). See `docs/ext4-writer.md` ("Layout file").

use super::extent::{ExtentBuilder, Placement};
use super::geometry::{BLOCK_SIZE, Geometry};
use super::plan::{InodeSource, JOURNAL_INO, ROOT_INO};
use super::write::Source;
use super::{Ext4Error, Ext4Plan, Ext4Summary, checksum};
use crate::io::hash::hex;
use crate::tree::NodeKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `format` value of a layout file.
pub const LAYOUT_FORMAT: &str = "slate-ext4-layout";
/// The layout file version this slate reads and writes.
pub const LAYOUT_VERSION: u32 = 1;

/// Why a layout file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Not valid layout JSON, or inconsistent values.
    #[error("corrupt layout: {0}")]
    Corrupt(String),
    /// Another format or version.
    #[error("incompatible layout: {0}")]
    Incompatible(String),
}

/// Where one group's metadata lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutGroup {
    /// Block bitmap block.
    pub block_bitmap: u64,
    /// Inode bitmap block.
    pub inode_bitmap: u64,
    /// First inode table block.
    pub inode_table: u64,
}

/// One inode of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutInode {
    /// Inode number.
    pub ino: u32,
    /// First path of the inode in walk order ("/" for the root, "" for the journal).
    pub path: String,
    /// `file`, `dir`, `symlink`, `char`, `block`, `fifo`, `socket` or `journal`.
    pub kind: String,
    /// Size in bytes (files and symlinks; 0 otherwise).
    pub size: u64,
    /// SHA-256 of the bytes in the file's data ranges (regular files only;
    /// for a file without holes, the SHA-256 of its contents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Data extents as `[logical block, physical block, length]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extents: Vec<[u64; 3]>,
    /// Extent tree blocks (leaves first, then index levels).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tree: Vec<u64>,
}

/// A shared extended attribute block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutXattr {
    /// SHA-256 of the block's attribute contents.
    pub sha256: String,
    /// Its block number.
    pub block: u64,
}

/// Everything a later build needs to lay out an image like this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ext4Layout {
    /// Always [`LAYOUT_FORMAT`].
    pub format: String,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// Bytes of the image (may exceed `blocks_count` blocks).
    pub image_size: u64,
    /// Filesystem block size.
    pub block_size: u64,
    /// Blocks in the filesystem.
    pub blocks_count: u64,
    /// Blocks per group.
    pub blocks_per_group: u64,
    /// Inodes in the filesystem.
    pub inodes_count: u64,
    /// Inodes per group.
    pub inodes_per_group: u32,
    /// Per-group metadata locations.
    pub groups: Vec<LayoutGroup>,
    /// Filesystem UUID (32 hex digits).
    pub uuid: String,
    /// Directory hash seed (32 hex digits).
    pub hash_seed: String,
    /// Metadata checksum seed (crc32c of the UUID).
    pub csum_seed: u32,
    /// Journal blocks (0 without a journal).
    pub journal_blocks: u64,
    /// One past the highest data block in use.
    pub alloc_end: u64,
    /// Shared attribute blocks.
    pub xattr_blocks: Vec<LayoutXattr>,
    /// Every inode in use except the reserved ones, by inode number.
    pub inodes: Vec<LayoutInode>,
}

fn unhex16(s: &str, what: &str) -> Result<[u8; 16], LayoutError> {
    let b = s.as_bytes();
    let bad = || LayoutError::Corrupt(format!("{what} {s:?} is not 32 hex digits"));
    if b.len() != 32 {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let pair = std::str::from_utf8(&b[2 * i..2 * i + 2]).map_err(|_| bad())?;
        *o = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

impl Ext4Layout {
    /// Parses a layout file and checks its format, version and geometry.
    pub fn from_json(bytes: &[u8]) -> Result<Self, LayoutError> {
        #[derive(Deserialize)]
        struct Head {
            format: Option<String>,
            version: Option<u32>,
        }
        let head: Head = serde_json::from_slice(bytes)
            .map_err(|e| LayoutError::Corrupt(format!("not layout JSON: {e}")))?;
        if head.format.as_deref() != Some(LAYOUT_FORMAT) {
            return Err(LayoutError::Incompatible(format!(
                "format is {:?}, expected {LAYOUT_FORMAT:?}",
                head.format.unwrap_or_default()
            )));
        }
        if head.version != Some(LAYOUT_VERSION) {
            return Err(LayoutError::Incompatible(format!(
                "version {:?}, this slate reads version {LAYOUT_VERSION}",
                head.version
            )));
        }
        let l: Ext4Layout =
            serde_json::from_slice(bytes).map_err(|e| LayoutError::Corrupt(e.to_string()))?;
        if l.block_size != BLOCK_SIZE {
            return Err(LayoutError::Incompatible(format!(
                "block size {} (slate writes {BLOCK_SIZE})",
                l.block_size
            )));
        }
        l.uuid()?;
        l.hash_seed()?;
        let geo = Geometry::new(l.blocks_count, l.inodes_count)
            .map_err(|e| LayoutError::Corrupt(format!("no geometry for its size: {e:?}")))?;
        if !l.matches(&geo) {
            return Err(LayoutError::Incompatible(
                "its geometry is not the one this slate makes for that size".into(),
            ));
        }
        if l.image_size < l.blocks_count * BLOCK_SIZE {
            return Err(LayoutError::Corrupt(
                "image size is below the filesystem size".into(),
            ));
        }
        let mut last = 0;
        for i in &l.inodes {
            if i.ino <= last || u64::from(i.ino) > l.inodes_count {
                return Err(LayoutError::Corrupt(format!(
                    "inode {} is out of order or range",
                    i.ino
                )));
            }
            last = i.ino;
            for e in &i.extents {
                let end = e[1].checked_add(e[2]);
                if e[2] == 0
                    || end.is_none_or(|end| end > l.blocks_count)
                    || e[0] > u64::from(u32::MAX)
                {
                    return Err(LayoutError::Corrupt(format!(
                        "inode {} has an extent outside the filesystem",
                        i.ino
                    )));
                }
            }
            if i.tree.iter().any(|&b| b >= l.blocks_count) {
                return Err(LayoutError::Corrupt(format!(
                    "inode {} has a tree block outside the filesystem",
                    i.ino
                )));
            }
        }
        Ok(l)
    }

    /// The canonical JSON text (one line, fields in a fixed order, newline-terminated).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("plain data"));
        v.push(b'\n');
        v
    }

    /// The filesystem UUID.
    pub fn uuid(&self) -> Result<[u8; 16], LayoutError> {
        unhex16(&self.uuid, "uuid")
    }

    /// The directory hash seed.
    pub fn hash_seed(&self) -> Result<[u8; 16], LayoutError> {
        unhex16(&self.hash_seed, "hash_seed")
    }

    pub(crate) fn matches(&self, geo: &Geometry) -> bool {
        geo.blocks_count == self.blocks_count
            && geo.blocks_per_group == self.blocks_per_group
            && geo.inodes_per_group == self.inodes_per_group
            && geo.inodes_count() == self.inodes_count
            && geo.groups.len() == self.groups.len()
            && geo.groups.iter().zip(&self.groups).all(|(a, b)| {
                a.block_bitmap == b.block_bitmap
                    && a.inode_bitmap == b.inode_bitmap
                    && a.inode_table == b.inode_table
            })
    }
}

/// A previous inode's data blocks in logical order, and its tree blocks.
pub(crate) fn old_blocks(i: &LayoutInode) -> (Vec<u64>, &[u64]) {
    let mut v = Vec::new();
    for e in &i.extents {
        v.extend(e[1]..e[1] + e[2]);
    }
    (v, &i.tree)
}

/// Builds a placement that maps `runs` onto `physical`, in order.
pub(crate) fn builder_for(runs: &[(u64, u64)], physical: &[u64]) -> ExtentBuilder {
    let mut b = ExtentBuilder::default();
    let mut k = 0;
    for &(logical, len) in runs {
        for j in 0..len {
            b.push((logical + j) as u32, physical[k], 1);
            k += 1;
        }
    }
    b
}

fn kind_name(kind: &NodeKind) -> &'static str {
    match kind {
        NodeKind::Directory(_) => "dir",
        NodeKind::File(_) => "file",
        NodeKind::Symlink(_) => "symlink",
        NodeKind::CharDevice(_) => "char",
        NodeKind::BlockDevice(_) => "block",
        NodeKind::Fifo => "fifo",
        NodeKind::Socket => "socket",
    }
}

fn extents_of(p: &Placement) -> Vec<[u64; 3]> {
    p.extents()
        .iter()
        .map(|e| [u64::from(e.logical), e.physical, u64::from(e.len)])
        .collect()
}

impl Ext4Plan<'_> {
    /// The layout of this plan as written (`summary` is what [`Self::write`]
    /// returned). Reads every file once more to record its SHA-256.
    pub fn layout(&self, summary: &Ext4Summary) -> Result<Ext4Layout, Ext4Error> {
        let d = &self.demand;
        let l = &self.layout;
        let geo = &l.geo;
        let paths = d.primary_paths();
        let mut inodes = Vec::new();
        for ino in 1..=d.max_ino() {
            let i = ino as usize - 1;
            let p = &l.placements[i];
            let (path, kind, size, sha256) = match d.source(ino) {
                InodeSource::Reserved | InodeSource::Free => continue,
                InodeSource::Journal => (String::new(), "journal", 0, None),
                InodeSource::LostFound => ("/lost+found".to_string(), "dir", 0, None),
                InodeSource::Node(id) => {
                    let node = d.tree.node(id);
                    let (size, sha) = match &node.kind {
                        NodeKind::File(f) => (f.size, Some(file_digest(f, &paths[i])?)),
                        NodeKind::Symlink(t) => (t.len() as u64, None),
                        _ => (0, None),
                    };
                    (
                        String::from_utf8_lossy(&paths[i]).into_owned(),
                        kind_name(&node.kind),
                        size,
                        sha,
                    )
                }
            };
            debug_assert!(ino >= ROOT_INO || ino == JOURNAL_INO);
            inodes.push(LayoutInode {
                ino,
                path,
                kind: kind.into(),
                size,
                sha256,
                extents: extents_of(p),
                tree: p.tree_blocks().to_vec(),
            });
        }
        let xattr_blocks = d
            .xattr_blocks
            .iter()
            .zip(&l.xattr_block_nr)
            .map(|(x, &block)| LayoutXattr {
                sha256: hex(&x.key),
                block,
            })
            .collect();
        Ok(Ext4Layout {
            format: LAYOUT_FORMAT.into(),
            version: LAYOUT_VERSION,
            image_size: self.size,
            block_size: BLOCK_SIZE,
            blocks_count: geo.blocks_count,
            blocks_per_group: geo.blocks_per_group,
            inodes_count: geo.inodes_count(),
            inodes_per_group: geo.inodes_per_group,
            groups: geo
                .groups
                .iter()
                .map(|g| LayoutGroup {
                    block_bitmap: g.block_bitmap,
                    inode_bitmap: g.inode_bitmap,
                    inode_table: g.inode_table,
                })
                .collect(),
            uuid: hex(&summary.uuid),
            hash_seed: hex(&d.hash_seed),
            csum_seed: checksum::fs_seed(&summary.uuid),
            journal_blocks: l.journal_blocks,
            alloc_end: l.alloc_end,
            xattr_blocks,
            inodes,
        })
    }
}

/// SHA-256 of the bytes in `f`'s data ranges.
fn file_digest(f: &crate::tree::FileData, path: &[u8]) -> Result<String, Ext4Error> {
    let src = Source::open(&f.source)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for r in &f.data {
        let mut at = r.start;
        while at < r.end {
            let n = (r.end - at).min(buf.len() as u64) as usize;
            src.read_at(&mut buf[..n], at)
                .map_err(|_| Ext4Error::SourceChanged {
                    path: String::from_utf8_lossy(path).into_owned().into(),
                })?;
            h.update(&buf[..n]);
            at += n as u64;
        }
    }
    Ok(hex(&h.finalize()))
}
