//! Planning: every inode number, directory layout and block decided by pure
//! functions before a byte is written.
//!
//! [`Demand`] is what the tree needs independent of the image size (inode
//! numbers, link counts, directory sizes, shared attribute blocks, the
//! directory hash seed). [`allocate`] places that demand in a filesystem of
//! a given size; [`required_blocks`] searches for the smallest size that
//! works.

use super::alloc::Allocator;
use super::dir::{DirEntry, DirLayout, file_type};
use super::extent::{ExtentBuilder, Placement};
use super::geometry::{BLOCK_SIZE, Geometry, GeometryError, MIN_BLOCKS};
use super::inode::TIME_RANGE;
use super::{Ext4Error, Ext4Layout, Ext4Options, LayoutInode, dirhash, xattr};
use crate::reproducible::derived_uuid;
use crate::tree::{FileData, MAX_NAME_LEN, Node, NodeId, NodeKind, Tree};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The root directory's inode.
pub(crate) const ROOT_INO: u32 = 2;
/// The journal's inode.
pub(crate) const JOURNAL_INO: u32 = 8;
/// lost+found, the first non-reserved inode (as mke2fs makes it).
pub(crate) const LOST_FOUND_INO: u32 = 11;
/// Blocks of a lost+found that slate creates (16 KiB, like mke2fs).
pub(crate) const LOST_FOUND_BLOCKS: u64 = 4;
/// Most hard links an ext4 inode may have.
const LINK_MAX: u32 = 65_000;
/// Longest symlink target stored inside the inode (`i_block` minus a NUL).
pub(crate) const FAST_SYMLINK_MAX: usize = 59;
/// Longest file: logical block numbers are 32 bits.
const MAX_FILE_BLOCKS: u64 = u32::MAX as u64;

/// What an inode number holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InodeSource {
    /// A reserved inode slate leaves empty.
    Reserved,
    /// The journal (inode 8).
    Journal,
    /// A lost+found directory slate adds because the tree has none.
    LostFound,
    /// A node of the tree.
    Node(NodeId),
    /// A free inode below the highest one in use (only with a previous layout).
    Free,
}

/// A shared external attribute block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct XattrBlock {
    /// The lowest inode using it: it is allocated and written with that inode.
    pub owner: u32,
    /// How many inodes use it.
    pub refcount: u32,
    /// SHA-256 of its contents (recorded in the layout file).
    pub key: [u8; 32],
}

/// What the tree needs, independent of where it goes.
#[derive(Debug)]
pub(crate) struct Demand<'t> {
    /// The tree being written.
    pub tree: &'t Tree,
    /// What each inode is, indexed by inode number - 1.
    pub inodes: Vec<InodeSource>,
    /// Inode number of each tree node (0 for unreachable nodes).
    pub ino_of: Vec<u32>,
    /// Parent directory of each directory inode (0 for other inodes).
    pub parent: Vec<u32>,
    /// Link count of each inode.
    pub links: Vec<u16>,
    /// Blocks of each directory inode (0 for other inodes).
    pub dir_blocks: Vec<u32>,
    /// External attribute block of each inode: 0 for none, else index + 1
    /// into [`Self::xattr_blocks`].
    pub xattr_ref: Vec<u32>,
    /// Distinct external attribute blocks.
    pub xattr_blocks: Vec<XattrBlock>,
    /// Directory hash seed (`s_hash_seed`).
    pub hash_seed: [u8; 16],
    /// Digest of names, structure and metadata (not file contents).
    pub metadata_digest: [u8; 32],
    /// Data, directory, symlink and attribute blocks, without the journal
    /// and extent tree blocks.
    pub data_blocks: u64,
}

/// Byte ranges of a file's data, rounded out to whole blocks and merged:
/// `(first logical block, block count)`.
pub(crate) fn file_runs(f: &FileData) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for r in f.data.iter().filter(|r| r.start < r.end) {
        let b0 = r.start / BLOCK_SIZE;
        let b1 = r.end.div_ceil(BLOCK_SIZE);
        match runs.last_mut() {
            Some((s, n)) if *s + *n >= b0 => *n = (*n).max(b1 - *s),
            _ => runs.push((b0, b1 - b0)),
        }
    }
    runs
}

fn file_type_of(kind: &NodeKind) -> u8 {
    match kind {
        NodeKind::Directory(_) => file_type::DIR,
        NodeKind::File(_) => file_type::REG,
        NodeKind::Symlink(_) => file_type::SYMLINK,
        NodeKind::CharDevice(_) => file_type::CHR,
        NodeKind::BlockDevice(_) => file_type::BLK,
        NodeKind::Fifo => file_type::FIFO,
        NodeKind::Socket => file_type::SOCK,
    }
}

fn unsupported(path: &[&[u8]], reason: impl Into<String>) -> Ext4Error {
    let mut p = String::new();
    for c in path {
        p.push('/');
        p.push_str(&String::from_utf8_lossy(c));
    }
    if p.is_empty() {
        p.push('/');
    }
    Ext4Error::Unsupported {
        path: p,
        reason: reason.into(),
    }
}

/// Checks what ext4 cannot store about one node.
fn validate(node: &Node, path: &[&[u8]]) -> Result<(), Ext4Error> {
    let t = node.meta.mtime;
    if !TIME_RANGE.contains(&t.secs) || t.nanos >= 1_000_000_000 {
        return Err(unsupported(
            path,
            format!(
                "modification time {}.{:09} is outside what ext4 stores (years 1901 to 2446)",
                t.secs, t.nanos
            ),
        ));
    }
    match &node.kind {
        NodeKind::File(f) => {
            let mut end = 0;
            for r in &f.data {
                if r.start < end || r.end < r.start || r.end > f.size {
                    return Err(unsupported(
                        path,
                        format!(
                            "data ranges {:?} are not sorted inside its size {}",
                            f.data, f.size
                        ),
                    ));
                }
                end = r.end;
            }
            if f.size.div_ceil(BLOCK_SIZE) > MAX_FILE_BLOCKS {
                return Err(unsupported(
                    path,
                    format!("{} bytes is larger than ext4's 16 TiB file limit", f.size),
                ));
            }
        }
        NodeKind::Symlink(t) if t.is_empty() || t.len() > 4095 || t.contains(&0) => {
            return Err(unsupported(
                path,
                "symlink target must be 1 to 4095 bytes without NUL",
            ));
        }
        NodeKind::CharDevice(d) | NodeKind::BlockDevice(d)
            if d.major >= 1 << 12 || d.minor >= 1 << 20 =>
        {
            return Err(unsupported(
                path,
                format!(
                    "device number {}:{} does not fit in 12:20 bits",
                    d.major, d.minor
                ),
            ));
        }
        _ => {}
    }
    Ok(())
}

fn digest_node(h: &mut Sha256, node: &Node) {
    let m = &node.meta;
    h.update(node.st_mode().to_le_bytes());
    h.update(m.uid.to_le_bytes());
    h.update(m.gid.to_le_bytes());
    h.update(m.mtime.secs.to_le_bytes());
    h.update(m.mtime.nanos.to_le_bytes());
    h.update((m.xattrs.len() as u64).to_le_bytes());
    for (k, v) in &m.xattrs {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k);
        h.update((v.len() as u64).to_le_bytes());
        h.update(v);
    }
    match &node.kind {
        NodeKind::File(f) => {
            h.update(f.size.to_le_bytes());
            for r in &f.data {
                h.update(r.start.to_le_bytes());
                h.update(r.end.to_le_bytes());
            }
        }
        NodeKind::Symlink(t) => {
            h.update((t.len() as u64).to_le_bytes());
            h.update(t);
        }
        NodeKind::CharDevice(d) | NodeKind::BlockDevice(d) => {
            h.update(d.major.to_le_bytes());
            h.update(d.minor.to_le_bytes());
        }
        _ => {}
    }
}

impl<'t> Demand<'t> {
    /// Numbers every reachable inode (root 2, lost+found 11, the rest from
    /// 12 in walk order), validates the tree and sizes its directories.
    pub fn new(tree: &'t Tree, opts: &Ext4Options) -> Result<Self, Ext4Error> {
        let walk = tree.walk();
        let first = LOST_FOUND_INO as usize;
        let mut d = Demand {
            tree,
            inodes: vec![InodeSource::Reserved; first],
            ino_of: vec![0; tree.len()],
            parent: vec![0; first],
            links: Vec::new(),
            dir_blocks: vec![0; first],
            xattr_ref: vec![0; first],
            xattr_blocks: Vec::new(),
            hash_seed: [0; 16],
            metadata_digest: [0; 32],
            data_blocks: 0,
        };
        let mut links: Vec<u32> = vec![0; first];
        d.inodes[ROOT_INO as usize - 1] = InodeSource::Node(NodeId::ROOT);
        d.inodes[LOST_FOUND_INO as usize - 1] = InodeSource::LostFound;
        if opts.journal {
            d.inodes[JOURNAL_INO as usize - 1] = InodeSource::Journal;
        }
        d.ino_of[NodeId::ROOT.index()] = ROOT_INO;
        d.parent[ROOT_INO as usize - 1] = ROOT_INO;
        links[ROOT_INO as usize - 1] = 2;

        let mut xattr_index: HashMap<[u8; 32], u32> = HashMap::new();
        let mut digest = Sha256::new();
        let mut path: Vec<&[u8]> = Vec::new();
        let root = tree.node(NodeId::ROOT);
        validate(root, &path)?;
        digest_node(&mut digest, root);
        d.add_xattrs(ROOT_INO, root, &path, &mut xattr_index)?;

        for e in &walk[1..] {
            path.truncate(e.depth - 1);
            path.push(e.name);
            if e.name.is_empty() || e.name.len() > MAX_NAME_LEN {
                return Err(unsupported(&path, "file names must be 1 to 255 bytes"));
            }
            let node = tree.node(e.id);
            let is_dir = matches!(node.kind, NodeKind::Directory(_));
            let parent_ino = d.ino_of[e.parent.index()];
            digest.update((e.depth as u64).to_le_bytes());
            digest.update((e.name.len() as u64).to_le_bytes());
            digest.update(e.name);
            if is_dir {
                links[parent_ino as usize - 1] += 1;
            }
            let existing = d.ino_of[e.id.index()];
            if existing != 0 {
                if is_dir {
                    return Err(unsupported(
                        &path,
                        "a directory is reachable under two names",
                    ));
                }
                digest.update(existing.to_le_bytes());
                links[existing as usize - 1] += 1;
                continue;
            }
            let ino = if e.depth == 1 && e.name == b"lost+found" {
                if !is_dir {
                    return Err(unsupported(
                        &path,
                        "lost+found must be a directory in an ext4 image",
                    ));
                }
                LOST_FOUND_INO
            } else {
                let next = d.inodes.len() + 1;
                let ino = u32::try_from(next)
                    .map_err(|_| unsupported(&path, "more than 4 billion inodes"))?;
                d.inodes.push(InodeSource::Reserved);
                d.parent.push(0);
                d.dir_blocks.push(0);
                d.xattr_ref.push(0);
                links.push(0);
                ino
            };
            let i = ino as usize - 1;
            d.inodes[i] = InodeSource::Node(e.id);
            d.ino_of[e.id.index()] = ino;
            links[i] = if is_dir { 2 } else { 1 };
            if is_dir {
                d.parent[i] = parent_ino;
            }
            digest.update(ino.to_le_bytes());
            validate(node, &path)?;
            digest_node(&mut digest, node);
            d.add_xattrs(ino, node, &path, &mut xattr_index)?;
            match &node.kind {
                NodeKind::File(f) => {
                    d.data_blocks += file_runs(f).iter().map(|r| r.1).sum::<u64>();
                }
                NodeKind::Symlink(t) if t.len() > FAST_SYMLINK_MAX => d.data_blocks += 1,
                _ => {}
            }
        }
        let lf = LOST_FOUND_INO as usize - 1;
        if d.inodes[lf] == InodeSource::LostFound {
            links[ROOT_INO as usize - 1] += 1;
            links[lf] = 2;
            d.parent[lf] = ROOT_INO;
            d.dir_blocks[lf] = LOST_FOUND_BLOCKS as u32;
            d.data_blocks += LOST_FOUND_BLOCKS;
        }

        d.links = Vec::with_capacity(links.len());
        for (i, &n) in links.iter().enumerate() {
            let is_dir = d.parent[i] != 0;
            let n = if is_dir && n > LINK_MAX {
                // dir_nlink: a count of 1 means "too many to count".
                1
            } else if n > LINK_MAX {
                let id = match d.inodes[i] {
                    InodeSource::Node(id) => id,
                    _ => NodeId::ROOT,
                };
                return Err(Ext4Error::Unsupported {
                    path: tree.display_path(id),
                    reason: format!("{n} hard links; ext4 allows at most {LINK_MAX}"),
                });
            } else {
                n
            };
            d.links.push(n as u16);
        }

        d.metadata_digest = digest.finalize().into();
        d.hash_seed = match (opts.hash_seed, opts.uuid) {
            (Some(seed), _) => seed,
            (None, Some(uuid)) => derived_uuid(&[b"slate ext4 hash seed", &uuid]),
            (None, None) => derived_uuid(&[
                b"slate ext4 hash seed",
                opts.label.as_bytes(),
                &d.metadata_digest,
            ]),
        };

        let seed = dirhash::seed_words(&d.hash_seed);
        for ino in 1..=d.max_ino() {
            if let InodeSource::Node(id) = d.source(ino) {
                if matches!(tree.node(id).kind, NodeKind::Directory(_)) {
                    let entries = d.dir_entries(ino);
                    let layout =
                        DirLayout::new(&entries, &seed).map_err(|_| Ext4Error::Unsupported {
                            path: tree.display_path(id),
                            reason: format!(
                                "{} entries are more than an ext4 directory index holds",
                                entries.len()
                            ),
                        })?;
                    d.dir_blocks[ino as usize - 1] = layout.blocks() as u32;
                    d.data_blocks += layout.blocks();
                }
            }
        }
        d.data_blocks += d.xattr_blocks.len() as u64;
        Ok(d)
    }

    fn add_xattrs(
        &mut self,
        ino: u32,
        node: &Node,
        path: &[&[u8]],
        index: &mut HashMap<[u8; 32], u32>,
    ) -> Result<(), Ext4Error> {
        let layout =
            xattr::layout(&node.meta.xattrs).map_err(|e| unsupported(path, e.to_string()))?;
        if let Some(block) = layout.block {
            let key: [u8; 32] = Sha256::digest(&block).into();
            let next = self.xattr_blocks.len() as u32 + 1;
            let r = *index.entry(key).or_insert(next);
            if r == next {
                self.xattr_blocks.push(XattrBlock {
                    owner: ino,
                    refcount: 0,
                    key,
                });
            }
            let b = &mut self.xattr_blocks[r as usize - 1];
            b.refcount += 1;
            b.owner = b.owner.min(ino);
            self.xattr_ref[ino as usize - 1] = r;
        }
        Ok(())
    }

    /// The highest inode number in use.
    pub fn max_ino(&self) -> u32 {
        self.inodes.len() as u32
    }

    /// What inode `ino` holds.
    pub fn source(&self, ino: u32) -> InodeSource {
        self.inodes[ino as usize - 1]
    }

    /// The entries of directory inode `ino` (without "." and ".."), by name.
    pub fn dir_entries(&self, ino: u32) -> Vec<DirEntry<'t>> {
        let tree = self.tree;
        let InodeSource::Node(id) = self.source(ino) else {
            return Vec::new();
        };
        let mut out: Vec<DirEntry<'t>> = tree
            .children(id)
            .map(|(name, child)| DirEntry {
                name,
                ino: self.ino_of[child.index()],
                file_type: file_type_of(&tree.node(child).kind),
            })
            .collect();
        if ino == ROOT_INO && self.source(LOST_FOUND_INO) == InodeSource::LostFound {
            let lf = DirEntry {
                name: b"lost+found",
                ino: LOST_FOUND_INO,
                file_type: file_type::DIR,
            };
            let at = out.partition_point(|e| e.name < lf.name);
            out.insert(at, lf);
        }
        out
    }

    /// The order blocks are allocated in for inodes other than regular files
    /// and the journal: root, lost+found, then the rest.
    fn metadata_order(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(ROOT_INO).chain(LOST_FOUND_INO..=self.max_ino())
    }

    /// Regular files, in inode order.
    pub fn files(&self) -> impl Iterator<Item = (u32, &'t FileData)> + '_ {
        let tree = self.tree;
        (LOST_FOUND_INO..=self.max_ino()).filter_map(move |ino| match self.source(ino) {
            InodeSource::Node(id) => match &tree.node(id).kind {
                NodeKind::File(f) => Some((ino, f)),
                _ => None,
            },
            _ => None,
        })
    }
}

/// Why a demand does not fit a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AllocError {
    /// No geometry for this size.
    Geometry(GeometryError),
    /// This many blocks short.
    Short(u64),
}

/// A demand placed in a filesystem of a given size.
#[derive(Debug)]
pub(crate) struct Layout {
    /// Block groups and metadata locations.
    pub geo: Geometry,
    /// Where each inode's blocks are, indexed by inode number - 1.
    pub placements: Vec<Placement>,
    /// Block number of each shared attribute block.
    pub xattr_block_nr: Vec<u64>,
    /// Journal length in blocks (0 without a journal).
    pub journal_blocks: u64,
    /// First block never allocated: every free block below it is in use
    /// unless [`Self::used`] says otherwise.
    pub alloc_end: u64,
    /// With a previous layout: a bitmap of every block in use (metadata
    /// included), since freed blocks leave holes below [`Self::alloc_end`].
    pub used: Option<Vec<u64>>,
}

fn place(a: &mut Allocator<'_>, runs: &[(u64, u64)]) -> Placement {
    let mut b = ExtentBuilder::default();
    for &(logical, len) in runs {
        let mut l = logical;
        a.alloc(len, |start, n| {
            b.push(l as u32, start, n);
            l += n;
        });
    }
    let need = b.tree_blocks_needed();
    let mut tree = Vec::with_capacity(need as usize);
    a.alloc(need, |start, n| tree.extend(start..start + n));
    b.finish(tree)
}

/// Places `d` in a filesystem of `blocks` blocks with at least `inodes`
/// inodes and a journal of `journal_blocks`. Allocation order: attribute
/// blocks, directories and long symlinks by inode, then file data by inode
/// (each file's extent tree blocks right after its data), then the journal.
pub(crate) fn allocate(
    d: &Demand<'_>,
    blocks: u64,
    inodes: u64,
    journal_blocks: u64,
) -> Result<Layout, AllocError> {
    let geo =
        Geometry::new(blocks, inodes.max(u64::from(d.max_ino()))).map_err(AllocError::Geometry)?;
    let mut a = Allocator::new(&geo);
    let mut placements = vec![Placement::None; d.max_ino() as usize];
    let mut xattr_block_nr = vec![0u64; d.xattr_blocks.len()];
    for ino in d.metadata_order() {
        let i = ino as usize - 1;
        let xref = d.xattr_ref[i];
        if xref != 0 && d.xattr_blocks[xref as usize - 1].owner == ino {
            a.alloc(1, |start, _| xattr_block_nr[xref as usize - 1] = start);
        }
        let blocks = match d.source(ino) {
            InodeSource::LostFound => LOST_FOUND_BLOCKS,
            InodeSource::Node(id) => match &d.tree.node(id).kind {
                NodeKind::Directory(_) => u64::from(d.dir_blocks[i]),
                NodeKind::Symlink(t) if t.len() > FAST_SYMLINK_MAX => 1,
                _ => 0,
            },
            _ => 0,
        };
        if blocks > 0 {
            placements[i] = place(&mut a, &[(0, blocks)]);
        }
    }
    for (ino, f) in d.files() {
        placements[ino as usize - 1] = place(&mut a, &file_runs(f));
    }
    // Last, so that small gaps between metadata are filled by directories
    // and files and the journal gets long contiguous runs.
    if journal_blocks > 0 {
        placements[JOURNAL_INO as usize - 1] = place(&mut a, &[(0, journal_blocks)]);
    }
    match a.overflow() {
        0 => Ok(Layout {
            alloc_end: a.cursor(),
            geo,
            placements,
            xattr_block_nr,
            journal_blocks,
            used: None,
        }),
        short => Err(AllocError::Short(short)),
    }
}

/// The journal length for a filesystem of `blocks` blocks.
pub(crate) fn journal_blocks(opts: &Ext4Options, blocks: u64) -> u64 {
    if !opts.journal {
        return 0;
    }
    match opts.journal_size {
        Some(s) => (s.get() / BLOCK_SIZE).max(super::journal::MIN_BLOCKS),
        None => super::journal::default_blocks(blocks),
    }
}

/// The smallest filesystem, in blocks, that holds `d` with its minimum
/// inode count.
pub(crate) fn required_blocks(d: &Demand<'_>, opts: &Ext4Options) -> Result<u64, Ext4Error> {
    let inodes = u64::from(d.max_ino());
    let fits = |n: u64| allocate(d, n, inodes, journal_blocks(opts, n));
    let guess = d.data_blocks + inodes.div_ceil(16) + 4;
    let mut lo = MIN_BLOCKS - 1; // largest size known not to fit
    let mut hi = (guess + journal_blocks(opts, guess)).max(MIN_BLOCKS);
    loop {
        match fits(hi) {
            Ok(_) => break,
            Err(AllocError::Short(s)) => {
                lo = hi;
                hi += s;
            }
            Err(AllocError::Geometry(GeometryError::TooSmall)) => {
                lo = hi;
                hi += (hi / 32).max(16);
            }
            Err(AllocError::Geometry(GeometryError::TooManyInodes)) => {
                return Err(Ext4Error::Unsupported {
                    path: "/".into(),
                    reason: "the tree has more inodes than ext4 can number".into(),
                });
            }
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid).is_ok() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

impl Demand<'_> {
    /// The first path of every inode in walk order, indexed by inode number
    /// - 1 ("/" for the root, "/lost+found" for slate's own, empty otherwise).
    pub fn primary_paths(&self) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new(); self.inodes.len()];
        out[ROOT_INO as usize - 1] = b"/".to_vec();
        if self.source(LOST_FOUND_INO) == InodeSource::LostFound {
            out[LOST_FOUND_INO as usize - 1] = b"/lost+found".to_vec();
        }
        let mut path: Vec<&[u8]> = Vec::new();
        for e in &self.tree.walk()[1..] {
            path.truncate(e.depth - 1);
            path.push(e.name);
            let ino = self.ino_of[e.id.index()];
            if ino == 0 || !out[ino as usize - 1].is_empty() {
                continue;
            }
            let p = &mut out[ino as usize - 1];
            for c in &path {
                p.push(b'/');
                p.extend_from_slice(c);
            }
        }
        out
    }

    /// Renumbers inodes from 12 up so that every path `prev` has keeps its
    /// inode number; new paths take the lowest free numbers, in walk order.
    /// Numbers freed by removed paths below the highest one in use become
    /// [`InodeSource::Free`].
    pub fn renumber(&mut self, prev: &Ext4Layout) {
        let first = LOST_FOUND_INO as usize; // inodes 1..=11 keep their numbers
        let paths = self.primary_paths();
        let old: HashMap<&[u8], u32> = prev
            .inodes
            .iter()
            .filter(|i| i.ino > LOST_FOUND_INO)
            .map(|i| (i.path.as_bytes(), i.ino))
            .collect();
        let n = self.inodes.len();
        // new_of[old ino - 1] = new ino
        let mut new_of: Vec<u32> = (1..=n as u32).collect();
        let mut taken = std::collections::BTreeSet::new();
        let mut pending = Vec::new();
        for ino in first + 1..=n {
            match old.get(paths[ino - 1].as_slice()) {
                Some(&o) if taken.insert(o) => new_of[ino - 1] = o,
                _ => pending.push(ino),
            }
        }
        let mut next = LOST_FOUND_INO + 1;
        for ino in pending {
            while taken.contains(&next) {
                next += 1;
            }
            taken.insert(next);
            new_of[ino - 1] = next;
        }
        let max = taken
            .last()
            .copied()
            .unwrap_or(LOST_FOUND_INO)
            .max(LOST_FOUND_INO) as usize;
        let map = |ino: u32| {
            if ino == 0 {
                0
            } else {
                new_of[ino as usize - 1]
            }
        };
        let mut inodes = vec![InodeSource::Free; max];
        let mut parent = vec![0; max];
        let mut links = vec![0; max];
        let mut dir_blocks = vec![0; max];
        let mut xattr_ref = vec![0; max];
        for (old_i, &new) in new_of.iter().enumerate() {
            let j = new as usize - 1;
            inodes[j] = self.inodes[old_i];
            parent[j] = map(self.parent[old_i]);
            links[j] = self.links[old_i];
            dir_blocks[j] = self.dir_blocks[old_i];
            xattr_ref[j] = self.xattr_ref[old_i];
        }
        for x in &mut self.xattr_blocks {
            x.owner = u32::MAX;
        }
        for (j, &r) in xattr_ref.iter().enumerate() {
            if r != 0 {
                let x = &mut self.xattr_blocks[r as usize - 1];
                x.owner = x.owner.min(j as u32 + 1);
            }
        }
        for v in &mut self.ino_of {
            *v = map(*v);
        }
        self.inodes = inodes;
        self.parent = parent;
        self.links = links;
        self.dir_blocks = dir_blocks;
        self.xattr_ref = xattr_ref;
    }

    /// Logical block runs of inode `ino` (journal of `journal` blocks).
    fn runs_of(&self, ino: u32, journal: u64) -> Vec<(u64, u64)> {
        let i = ino as usize - 1;
        let n = match self.source(ino) {
            InodeSource::LostFound => LOST_FOUND_BLOCKS,
            InodeSource::Journal => journal,
            InodeSource::Node(id) => match &self.tree.node(id).kind {
                NodeKind::Directory(_) => u64::from(self.dir_blocks[i]),
                NodeKind::Symlink(t) if t.len() > FAST_SYMLINK_MAX => 1,
                NodeKind::File(f) => return file_runs(f),
                _ => 0,
            },
            _ => 0,
        };
        if n == 0 { Vec::new() } else { vec![(0, n)] }
    }

    fn kind_name(&self, ino: u32) -> &'static str {
        match self.source(ino) {
            InodeSource::LostFound => "dir",
            InodeSource::Journal => "journal",
            InodeSource::Node(id) => match &self.tree.node(id).kind {
                NodeKind::Directory(_) => "dir",
                NodeKind::File(_) => "file",
                NodeKind::Symlink(_) => "symlink",
                _ => "other",
            },
            _ => "none",
        }
    }
}

/// A set of blocks in use, over a filesystem of `blocks` blocks.
struct UsedSet {
    bits: Vec<u64>,
    blocks: u64,
}

impl UsedSet {
    /// All `blocks` blocks free.
    fn new(blocks: u64) -> Self {
        Self {
            bits: vec![0; blocks.div_ceil(64) as usize],
            blocks,
        }
    }
    fn get(&self, b: u64) -> bool {
        self.bits[(b / 64) as usize] & (1 << (b % 64)) != 0
    }
    fn set(&mut self, b: u64) {
        self.bits[(b / 64) as usize] |= 1 << (b % 64);
    }
    fn clear(&mut self, b: u64) {
        self.bits[(b / 64) as usize] &= !(1 << (b % 64));
    }
    /// Whether `b` is inside the filesystem and not in use.
    fn is_free(&self, b: u64) -> bool {
        b < self.blocks && !self.get(b)
    }
    /// Marks the longest prefix of `blocks` that is free (and has no
    /// duplicates) as used, and returns it.
    fn claim_free_prefix(&mut self, blocks: &[u64]) -> Vec<u64> {
        let mut out = Vec::new();
        for &b in blocks {
            if !self.is_free(b) {
                break;
            }
            self.set(b);
            out.push(b);
        }
        out
    }
    /// Marks `blocks` free again.
    fn release(&mut self, blocks: &[u64]) {
        for &b in blocks {
            self.clear(b);
        }
    }
}

/// Hands out free blocks of a [`UsedSet`]: first from `start` to the end,
/// then from the beginning.
struct HoleAllocator {
    start: u64,
    cursor: u64,
    end: u64,
    wrapped: bool,
}

impl HoleAllocator {
    /// An allocator that starts at `start` (clamped to the filesystem).
    fn new(start: u64, blocks: u64) -> Self {
        let start = start.min(blocks);
        Self {
            start,
            cursor: start,
            end: blocks,
            wrapped: false,
        }
    }

    /// Marks the next `n` free blocks used and appends them to `out`.
    fn alloc(&mut self, used: &mut UsedSet, n: u64, out: &mut Vec<u64>) -> Result<(), String> {
        for _ in 0..n {
            loop {
                if self.cursor >= self.end {
                    if self.wrapped {
                        return Err("the new tree does not fit in the previous image's size".into());
                    }
                    self.wrapped = true;
                    self.cursor = 0;
                    self.end = self.start;
                    continue;
                }
                let b = self.cursor;
                self.cursor += 1;
                if !used.get(b) {
                    used.set(b);
                    out.push(b);
                    break;
                }
            }
        }
        Ok(())
    }
}

/// What pass 1 of [`allocate_previous`] kept of an inode's previous blocks.
#[derive(Debug, Default)]
struct Kept {
    /// Old data blocks, in logical order: the first blocks of the new
    /// placement.
    data: Vec<u64>,
    /// Old extent tree blocks, held until pass 2 knows how many the new
    /// extents need.
    tree: Vec<u64>,
}

impl Kept {
    /// Claims, of previous inode `old`, the longest free prefix of its
    /// first `need` data blocks and the longest free prefix of its tree
    /// blocks. `None` (nothing claimed) when not even its first data block
    /// is free or `need` is 0.
    fn claim(used: &mut UsedSet, old: &LayoutInode, need: u64) -> Option<Kept> {
        let (blocks, tree) = super::layout::old_blocks(old);
        let n = need.min(blocks.len() as u64) as usize;
        let data = used.claim_free_prefix(&blocks[..n]);
        if data.is_empty() {
            return None;
        }
        let tree = used.claim_free_prefix(tree);
        Some(Kept { data, tree })
    }

    /// The placement of `runs` (`need` blocks): the kept data blocks first,
    /// then the rest from `a`, in logical order; the kept tree blocks if
    /// there are enough (the surplus is released), else new ones from `a`.
    fn place(
        self,
        a: &mut HoleAllocator,
        used: &mut UsedSet,
        runs: &[(u64, u64)],
        need: u64,
    ) -> Result<Placement, String> {
        let Kept { mut data, mut tree } = self;
        a.alloc(used, need - data.len() as u64, &mut data)?;
        let b = super::layout::builder_for(runs, &data);
        let t = b.tree_blocks_needed() as usize;
        if t <= tree.len() {
            used.release(&tree[t..]);
            tree.truncate(t);
        } else {
            used.release(&tree);
            tree.clear();
            a.alloc(used, t as u64, &mut tree)?;
        }
        Ok(b.finish(tree))
    }
}

/// Whether previous inode `old` is inode `ino` of `d` again: the same kind
/// and first path (any path for the journal).
fn same_inode(d: &Demand<'_>, paths: &[Vec<u8>], ino: u32, old: &LayoutInode) -> bool {
    let same_path = ino == JOURNAL_INO || old.path.as_bytes() == paths[ino as usize - 1];
    same_path && old.kind == d.kind_name(ino)
}

/// Places `d` (already [`Demand::renumber`]ed) in the geometry of `prev`.
///
/// Pass 1, in allocation order: every inode of the same path and kind as
/// in `prev` keeps the longest free prefix of its old data blocks, up to
/// its new block count (all of them when it did not shrink, so an
/// unchanged file stays exactly where it was), and holds its old extent
/// tree blocks. Pass 2, in the same order: each inode gets the blocks it
/// still lacks (all of them for a new path; the tail of a grown one, mapped
/// after the kept blocks) from free space, first after `prev`'s highest used
/// block, then in holes from the front; its tree keeps the old blocks if
/// there are enough, else it is allocated there too.
pub(crate) fn allocate_previous(
    d: &Demand<'_>,
    prev: &Ext4Layout,
    journal_blocks: u64,
) -> Result<Layout, String> {
    let geo = Geometry::new(prev.blocks_count, prev.inodes_count)
        .map_err(|e| format!("no geometry for {} blocks: {e:?}", prev.blocks_count))?;
    if !prev.matches(&geo) {
        return Err("its geometry is not the one this slate makes for that size".into());
    }
    if u64::from(d.max_ino()) > geo.inodes_count() {
        return Err(format!(
            "the tree needs inode numbers up to {} but the previous image has {} inodes",
            d.max_ino(),
            geo.inodes_count()
        ));
    }
    let mut used = UsedSet::new(geo.blocks_count);
    for r in &geo.reserved {
        for b in r.clone() {
            used.set(b);
        }
    }
    let old: HashMap<u32, &LayoutInode> = prev.inodes.iter().map(|i| (i.ino, i)).collect();
    let order: Vec<u32> = d
        .metadata_order()
        .filter(|&ino| !matches!(d.kind_name(ino), "file"))
        .chain(d.files().map(|(ino, _)| ino))
        .chain((journal_blocks > 0).then_some(JOURNAL_INO))
        .collect();
    let paths = d.primary_paths();
    let need_of = |ino: u32| {
        let runs = d.runs_of(ino, journal_blocks);
        let need: u64 = runs.iter().map(|r| r.1).sum();
        (runs, need)
    };

    // Pass 1: attribute blocks with the same contents, then every inode's
    // old blocks that are still free.
    let mut xattr_block_nr = vec![u64::MAX; d.xattr_blocks.len()];
    let old_xattr: HashMap<&str, u64> = prev
        .xattr_blocks
        .iter()
        .map(|x| (x.sha256.as_str(), x.block))
        .collect();
    for (k, x) in d.xattr_blocks.iter().enumerate() {
        if let Some(&b) = old_xattr.get(crate::io::hash::hex(&x.key).as_str()) {
            if used.is_free(b) {
                used.set(b);
                xattr_block_nr[k] = b;
            }
        }
    }
    let mut kept: HashMap<u32, Kept> = HashMap::new();
    for &ino in &order {
        let Some(o) = old.get(&ino).filter(|o| same_inode(d, &paths, ino, o)) else {
            continue;
        };
        if let Some(k) = Kept::claim(&mut used, o, need_of(ino).1) {
            kept.insert(ino, k);
        }
    }

    // Pass 2: what pass 1 did not cover, in the usual allocation order.
    let mut a = HoleAllocator::new(prev.alloc_end, geo.blocks_count);
    let mut placements = vec![Placement::None; d.max_ino() as usize];
    for &ino in &order {
        let i = ino as usize - 1;
        let xref = d.xattr_ref[i];
        if xref != 0 && d.xattr_blocks[xref as usize - 1].owner == ino {
            let k = xref as usize - 1;
            if xattr_block_nr[k] == u64::MAX {
                let mut v = Vec::new();
                a.alloc(&mut used, 1, &mut v)?;
                xattr_block_nr[k] = v[0];
            }
        }
        let (runs, need) = need_of(ino);
        if need > 0 {
            let k = kept.remove(&ino).unwrap_or_default();
            placements[i] = k.place(&mut a, &mut used, &runs, need)?;
        }
    }
    let alloc_end = (0..geo.blocks_count)
        .rev()
        .find(|&b| used.get(b))
        .map_or(0, |b| b + 1);
    Ok(Layout {
        geo,
        placements,
        xattr_block_nr,
        journal_blocks,
        alloc_end,
        used: Some(used.bits),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{DataSource, Metadata};
    use std::sync::Arc;

    fn file(data: Vec<std::ops::Range<u64>>, size: u64) -> Node {
        Node {
            kind: NodeKind::File(FileData {
                size,
                source: DataSource::Bytes(Arc::from(vec![1u8; 1])),
                data,
            }),
            meta: Metadata::root(0o644),
        }
    }

    /// A tree of regular files with `blocks` full blocks of `fill` each.
    fn files_tree(files: &[(&str, u64, u8)]) -> Tree {
        let mut t = Tree::new(Metadata::root(0o755));
        for &(path, blocks, fill) in files {
            let n = Node {
                kind: NodeKind::File(FileData::from_bytes(vec![
                    fill;
                    (blocks * BLOCK_SIZE) as usize
                ])),
                meta: Metadata::root(0o644),
            };
            t.put(path.as_bytes(), n, &Metadata::root(0o755)).unwrap();
        }
        t
    }

    /// The layout a build of `t` from scratch records.
    fn layout_of(t: &Tree) -> Ext4Layout {
        let plan = super::super::Ext4Plan::new(t, &Ext4Options::default()).unwrap();
        let summary = super::super::Ext4Summary {
            size: plan.size(),
            uuid: [7; 16],
            blocks: 0,
            free_blocks: 0,
            inodes: 0,
            free_inodes: 0,
            journal_blocks: 0,
            bytes_written: 0,
        };
        plan.layout(&summary).unwrap()
    }

    /// Physical blocks of `p` in logical order.
    fn physical_blocks(p: &Placement) -> Vec<u64> {
        p.extents()
            .iter()
            .flat_map(|e| e.physical..e.physical + u64::from(e.len))
            .collect()
    }

    #[test]
    fn grown_file_keeps_its_old_blocks_first() {
        let prev = layout_of(&files_tree(&[("/a", 10, 1), ("/b", 5, 2)]));
        let t = files_tree(&[("/a", 13, 1), ("/b", 5, 2)]);
        let plan =
            super::super::Ext4Plan::with_previous(&t, &Ext4Options::default(), &prev).unwrap();
        let old = |path: &str| prev.inodes.iter().find(|i| i.path == path).unwrap();
        let new = |path: &str| &plan.layout.placements[old(path).ino as usize - 1];
        let old_a = super::super::layout::old_blocks(old("/a")).0;
        let a = physical_blocks(new("/a"));
        assert_eq!(a.len(), 13);
        assert_eq!(a[..10], old_a[..], "{a:?}");
        // The three new blocks come from free space after the old image's end,
        // mapped after the old ones: one more extent.
        assert!(a[10..].iter().all(|&b| b >= prev.alloc_end), "{a:?}");
        assert_eq!(new("/a").extents().len(), 2);
        assert_eq!(new("/a").extents()[1].logical, 10);
        // The unchanged file keeps its blocks.
        assert_eq!(
            physical_blocks(new("/b")),
            super::super::layout::old_blocks(old("/b")).0
        );
    }

    /// A tree with one sparse file `/s` whose data is block 2k for each k in
    /// `0..runs`: one extent per run.
    fn sparse_tree(runs: u64) -> Tree {
        let size = (2 * runs - 1) * BLOCK_SIZE;
        let n = Node {
            kind: NodeKind::File(FileData {
                size,
                source: DataSource::Bytes(Arc::from(vec![3u8; size as usize])),
                data: (0..runs)
                    .map(|k| 2 * k * BLOCK_SIZE..(2 * k + 1) * BLOCK_SIZE)
                    .collect(),
            }),
            meta: Metadata::root(0o644),
        };
        let mut t = Tree::new(Metadata::root(0o755));
        t.put(b"/s", n, &Metadata::root(0o755)).unwrap();
        t
    }

    #[test]
    fn grown_file_keeps_its_old_tree_blocks_when_enough() {
        // Six extents need a leaf block; seven still fit in it.
        let prev = layout_of(&sparse_tree(6));
        let t = sparse_tree(7);
        let plan =
            super::super::Ext4Plan::with_previous(&t, &Ext4Options::default(), &prev).unwrap();
        let old = prev.inodes.iter().find(|i| i.path == "/s").unwrap();
        let new = &plan.layout.placements[old.ino as usize - 1];
        assert_eq!(old.tree.len(), 1);
        assert_eq!(new.tree_blocks(), old.tree);
        let blocks = physical_blocks(new);
        assert_eq!(blocks[..6], super::super::layout::old_blocks(old).0[..]);
        assert!(blocks[6] >= prev.alloc_end, "{blocks:?}");
    }

    #[test]
    fn runs_round_out_and_merge() {
        let f = |data: Vec<std::ops::Range<u64>>| FileData {
            size: 1 << 40,
            source: DataSource::Bytes(Arc::from(vec![])),
            data,
        };
        assert_eq!(file_runs(&f(vec![0..1])), [(0, 1)]);
        assert_eq!(file_runs(&f(vec![0..4096, 4096..4097])), [(0, 2)]);
        assert_eq!(file_runs(&f(vec![100..200, 300..400])), [(0, 1)]);
        assert_eq!(
            file_runs(&f(vec![0..10, 8192..8193, 1 << 32..(1 << 32) + 1])),
            [(0, 1), (2, 1), (1 << 20, 1)]
        );
    }

    #[test]
    fn numbering_links_and_lost_found() {
        let mut t = Tree::new(Metadata::root(0o755));
        let dir = Metadata::root(0o755);
        let f = t.put(b"/b/f", file(vec![0..1], 1), &dir).unwrap();
        t.mkdir_p(b"/a/x", &dir).unwrap();
        let a = t.lookup(b"/a").unwrap();
        t.link(a, b"hard", f).unwrap();
        let d = Demand::new(&t, &Ext4Options::default()).unwrap();
        // Walk order: a, hard, x, b, f.
        assert_eq!(d.ino_of[a.index()], 12);
        assert_eq!(d.ino_of[f.index()], 13);
        assert_eq!(d.max_ino(), 15);
        assert_eq!(d.links[ROOT_INO as usize - 1], 5); // ., .., a, b, lost+found
        assert_eq!(d.links[12], 2);
        assert_eq!(d.links[11], 3);
        assert_eq!(d.source(LOST_FOUND_INO), InodeSource::LostFound);
        let names: Vec<&[u8]> = d.dir_entries(ROOT_INO).iter().map(|e| e.name).collect();
        assert_eq!(names, [&b"a"[..], b"b", b"lost+found"]);
        assert_eq!(d.data_blocks, 1 + 4 + 4); // file, lost+found, four one-block dirs
    }

    #[test]
    fn unsupported_things_name_their_path() {
        let mut t = Tree::new(Metadata::root(0o755));
        let dir = Metadata::root(0o755);
        let mut n = file(vec![], 0);
        n.meta.mtime.secs = 1 << 40;
        t.put(b"/d/late", n, &dir).unwrap();
        let e = Demand::new(&t, &Ext4Options::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/d/late: modification time"), "{e}");

        let mut t = Tree::new(Metadata::root(0o755));
        t.put(b"/lost+found", file(vec![], 0), &dir).unwrap();
        let e = Demand::new(&t, &Ext4Options::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("lost+found must be a directory"), "{e}");
    }

    #[test]
    fn identical_attribute_blocks_are_shared() {
        let mut t = Tree::new(Metadata::root(0o755));
        let dir = Metadata::root(0o755);
        for name in ["/a", "/b", "/c"] {
            let mut n = file(vec![], 0);
            n.meta
                .xattrs
                .insert(b"user.big".to_vec(), vec![name.as_bytes()[1] / 8; 500]);
            t.put(name.as_bytes(), n, &dir).unwrap();
        }
        let d = Demand::new(&t, &Ext4Options::default()).unwrap();
        // 'a'/8 == 'b'/8 == 12, 'c'/8 == 12 as well: one block for all three.
        assert_eq!(
            d.xattr_blocks,
            [XattrBlock {
                owner: 12,
                refcount: 3,
                key: d.xattr_blocks[0].key,
            }]
        );
        assert_eq!(d.xattr_ref[11..14], [1, 1, 1]);
    }

    #[test]
    fn allocation_is_front_to_back_and_sizes_search_the_minimum() {
        let mut t = Tree::new(Metadata::root(0o755));
        let dir = Metadata::root(0o755);
        t.put(b"/big", file(vec![0..(40 << 20)], 40 << 20), &dir)
            .unwrap();
        t.put(
            b"/sparse",
            file(vec![0..1, (3 << 30)..(3 << 30) + 1], (3 << 30) + 1),
            &dir,
        )
        .unwrap();
        let opts = Ext4Options::default();
        let d = Demand::new(&t, &opts).unwrap();
        let n = required_blocks(&d, &opts).unwrap();
        let l = allocate(&d, n, u64::from(d.max_ino()), 0).unwrap();
        assert!(allocate(&d, n - 1, u64::from(d.max_ino()), 0).is_err());
        // Data is everything not reserved below the allocation end.
        let reserved_below: u64 = l
            .geo
            .reserved
            .iter()
            .map(|r| r.end.min(l.alloc_end) - r.start.min(l.alloc_end))
            .sum();
        let used: u64 = l.placements.iter().map(|p| p.total_blocks()).sum();
        assert_eq!(l.alloc_end - reserved_below, used);
        let sparse = &l.placements[12];
        assert_eq!(sparse.extents().len(), 2);
        assert_eq!(sparse.extents()[1].logical, (3 << 30) / 4096);
    }
}
