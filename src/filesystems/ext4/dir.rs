//! Directory blocks: linear directories of one block, and hash-indexed
//! (htree) directories for anything larger, so the kernel finds a name in
//! a big directory with one index lookup instead of a scan.
//!
//! Layout of an indexed directory: logical block 0 is the dx root, blocks
//! 1..=L the leaves (entries sorted by name hash, packed full), then the
//! index nodes when there are more leaves than the root can point at.

use super::checksum;
use super::dirhash::name_hash;
use super::geometry::BLOCK_SIZE;

const BS: usize = BLOCK_SIZE as usize;
/// The checksum tail at the end of every leaf block.
const TAIL_LEN: usize = 12;
/// Bytes for entries in a leaf block.
const LEAF_SPACE: usize = BS - TAIL_LEN;
/// Bytes the "." and ".." entries take at the start of block 0.
const DOTS_LEN: usize = 24;
/// dx entries in the root block: after "." and "..", the 8-byte root info and
/// before the 8-byte checksum tail.
const ROOT_LIMIT: usize = (BS - 32) / 8 - 1;
/// dx entries in an index node: after its 8-byte fake entry, before the tail.
const NODE_LIMIT: usize = (BS - 8) / 8 - 1;
/// `dx_root_info.hash_version`: half MD4.
const HASH_HALF_MD4: u8 = 1;

/// File type codes stored in directory entries (`filetype` feature).
pub(crate) mod file_type {
    /// Regular file.
    pub const REG: u8 = 1;
    /// Directory.
    pub const DIR: u8 = 2;
    /// Character device.
    pub const CHR: u8 = 3;
    /// Block device.
    pub const BLK: u8 = 4;
    /// Named pipe.
    pub const FIFO: u8 = 5;
    /// Socket.
    pub const SOCK: u8 = 6;
    /// Symbolic link.
    pub const SYMLINK: u8 = 7;
}

/// One name in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirEntry<'a> {
    /// The name (1..=255 bytes).
    pub name: &'a [u8],
    /// Inode number.
    pub ino: u32,
    /// One of [`file_type`].
    pub file_type: u8,
}

/// Space one entry takes: 8-byte header plus the name, 4-byte aligned.
fn rec_len(name_len: usize) -> usize {
    (8 + name_len).next_multiple_of(4)
}

/// How a directory's entries are spread over its blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirLayout {
    /// Entry indices in on-disk order (name order for linear directories,
    /// hash order for indexed ones).
    order: Vec<u32>,
    /// Where each leaf block starts in `order`, plus a final end marker.
    leaf_starts: Vec<u32>,
    /// Indexed directories: each leaf's lowest hash, with the low bit set
    /// when that hash continues from the previous leaf.
    leaf_hashes: Vec<u32>,
    /// Whether the directory is hash-indexed.
    indexed: bool,
}

/// Why a directory cannot be laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirTooLarge;

impl DirLayout {
    /// Lays out `entries` (which must not include "." and "..").
    pub fn new(entries: &[DirEntry<'_>], seed: &[u32; 4]) -> Result<Self, DirTooLarge> {
        let linear = Self::pack(entries, (0..entries.len() as u32).collect(), DOTS_LEN);
        if linear.leaf_starts.len() <= 2 {
            return Ok(linear);
        }
        let mut keyed: Vec<(u32, &[u8], u32)> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (name_hash(e.name, seed).0, e.name, i as u32))
            .collect();
        keyed.sort_unstable();
        let hashes: Vec<u32> = keyed.iter().map(|k| k.0).collect();
        let order = keyed.into_iter().map(|k| k.2).collect();
        drop(linear);
        let mut layout = Self::pack(entries, order, 0);
        layout.indexed = true;
        layout.leaf_hashes = layout.leaf_starts[..layout.leaf_starts.len() - 1]
            .iter()
            .map(|&s| {
                let s = s as usize;
                let h = hashes[s];
                if s > 0 && hashes[s - 1] == h {
                    h | 1
                } else {
                    h
                }
            })
            .collect();
        if layout.index_nodes() > ROOT_LIMIT {
            return Err(DirTooLarge);
        }
        Ok(layout)
    }

    /// Fills leaf blocks in `order`; the first leaf starts `first_used` bytes in.
    fn pack(entries: &[DirEntry<'_>], order: Vec<u32>, first_used: usize) -> Self {
        let mut leaf_starts = vec![0u32];
        let mut used = first_used;
        for (pos, &i) in order.iter().enumerate() {
            let r = rec_len(entries[i as usize].name.len());
            if used + r > LEAF_SPACE {
                leaf_starts.push(pos as u32);
                used = 0;
            }
            used += r;
        }
        leaf_starts.push(order.len() as u32);
        Self {
            order,
            leaf_starts,
            leaf_hashes: Vec::new(),
            indexed: false,
        }
    }

    /// Whether the directory gets an htree index.
    #[cfg(test)]
    pub fn indexed(&self) -> bool {
        self.indexed
    }

    fn leaves(&self) -> usize {
        self.leaf_starts.len() - 1
    }

    /// Index nodes below the root (0 when the root points at every leaf).
    fn index_nodes(&self) -> usize {
        if !self.indexed || self.leaves() <= ROOT_LIMIT {
            0
        } else {
            self.leaves().div_ceil(NODE_LIMIT)
        }
    }

    /// Blocks the directory occupies.
    pub fn blocks(&self) -> u64 {
        if self.indexed {
            (1 + self.leaves() + self.index_nodes()) as u64
        } else {
            self.leaves() as u64
        }
    }

    /// Produces every block in logical order, calling `emit(block)`.
    pub fn write<E>(
        &self,
        entries: &[DirEntry<'_>],
        self_ino: u32,
        parent_ino: u32,
        inode_seed: u32,
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut buf = vec![0u8; BS];
        if self.indexed {
            self.write_root(&mut buf, self_ino, parent_ino, inode_seed);
            emit(&buf)?;
        }
        for leaf in 0..self.leaves() {
            buf.fill(0);
            let mut at = 0;
            if !self.indexed && leaf == 0 {
                put_entry(&mut buf, 0, self_ino, b".", file_type::DIR, 12);
                put_entry(&mut buf, 12, parent_ino, b"..", file_type::DIR, 12);
                at = DOTS_LEN;
            }
            let range = self.leaf_starts[leaf] as usize..self.leaf_starts[leaf + 1] as usize;
            let mut last = if at > 0 { Some(12) } else { None };
            for &i in &self.order[range] {
                let e = &entries[i as usize];
                let r = rec_len(e.name.len());
                put_entry(&mut buf, at, e.ino, e.name, e.file_type, r);
                last = Some(at);
                at += r;
            }
            match last {
                // The last entry's record runs up to the tail.
                Some(l) => set_rec_len(&mut buf, l, LEAF_SPACE - l),
                // An empty leaf: one unused entry spanning it.
                None => put_entry(&mut buf, 0, 0, b"", 0, LEAF_SPACE),
            }
            finish_leaf(&mut buf, inode_seed);
            emit(&buf)?;
        }
        for node in 0..self.index_nodes() {
            buf.fill(0);
            // A fake empty entry spanning the block hides the index from old readers.
            set_rec_len(&mut buf, 0, BS);
            let first = node * NODE_LIMIT;
            let n = NODE_LIMIT.min(self.leaves() - first);
            let children: Vec<(u32, u32)> = (first..first + n)
                .map(|leaf| (self.leaf_hashes[leaf], 1 + leaf as u32))
                .collect();
            put_dx_entries(&mut buf, 8, NODE_LIMIT, &children, inode_seed);
            emit(&buf)?;
        }
        Ok(())
    }

    fn write_root(&self, buf: &mut [u8], self_ino: u32, parent_ino: u32, inode_seed: u32) {
        buf.fill(0);
        put_entry(buf, 0, self_ino, b".", file_type::DIR, 12);
        put_entry(buf, 12, parent_ino, b"..", file_type::DIR, BS - 12);
        // dx_root_info: reserved, hash version, info length, levels, flags.
        buf[28] = HASH_HALF_MD4;
        buf[29] = 8;
        let nodes = self.index_nodes();
        buf[30] = u8::from(nodes > 0);
        let children: Vec<(u32, u32)> = if nodes == 0 {
            (0..self.leaves())
                .map(|leaf| (self.leaf_hashes[leaf], 1 + leaf as u32))
                .collect()
        } else {
            let base = 1 + self.leaves() as u32;
            (0..nodes)
                .map(|n| (self.leaf_hashes[n * NODE_LIMIT], base + n as u32))
                .collect()
        };
        put_dx_entries(buf, 32, ROOT_LIMIT, &children, inode_seed);
    }
}

/// Blocks of an empty directory padded to `blocks` (lost+found).
pub(crate) fn write_empty<E>(
    blocks: u64,
    self_ino: u32,
    parent_ino: u32,
    inode_seed: u32,
    mut emit: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut buf = vec![0u8; BS];
    for b in 0..blocks {
        buf.fill(0);
        if b == 0 {
            put_entry(&mut buf, 0, self_ino, b".", file_type::DIR, 12);
            put_entry(
                &mut buf,
                12,
                parent_ino,
                b"..",
                file_type::DIR,
                LEAF_SPACE - 12,
            );
        } else {
            put_entry(&mut buf, 0, 0, b"", 0, LEAF_SPACE);
        }
        finish_leaf(&mut buf, inode_seed);
        emit(&buf)?;
    }
    Ok(())
}

fn put_entry(buf: &mut [u8], at: usize, ino: u32, name: &[u8], ft: u8, rec: usize) {
    buf[at..at + 4].copy_from_slice(&ino.to_le_bytes());
    set_rec_len(buf, at, rec);
    buf[at + 6] = name.len() as u8;
    buf[at + 7] = ft;
    buf[at + 8..at + 8 + name.len()].copy_from_slice(name);
}

fn set_rec_len(buf: &mut [u8], at: usize, rec: usize) {
    // A record of a whole 64 KiB block would not fit in 16 bits; 4 KiB does.
    buf[at + 4..at + 6].copy_from_slice(&(rec as u16).to_le_bytes());
}

/// Writes the checksum tail: a fake entry with inode 0, record length 12,
/// file type 0xDE and the checksum of everything before it.
fn finish_leaf(buf: &mut [u8], inode_seed: u32) {
    let t = LEAF_SPACE;
    buf[t..t + 4].fill(0);
    buf[t + 4..t + 6].copy_from_slice(&12u16.to_le_bytes());
    buf[t + 6] = 0;
    buf[t + 7] = 0xDE;
    let csum = checksum::dir_block(inode_seed, &buf[..t]);
    buf[t + 8..t + 12].copy_from_slice(&csum.to_le_bytes());
}

/// Writes a count/limit header at `at` followed by `children` as
/// (hash, logical block) pairs (the first child's hash is implied), and the
/// dx checksum tail after `limit` entries.
fn put_dx_entries(buf: &mut [u8], at: usize, limit: usize, children: &[(u32, u32)], seed: u32) {
    buf[at..at + 2].copy_from_slice(&(limit as u16).to_le_bytes());
    buf[at + 2..at + 4].copy_from_slice(&(children.len() as u16).to_le_bytes());
    for (i, &(hash, block)) in children.iter().enumerate() {
        let e = at + 8 * i;
        if i > 0 {
            buf[e..e + 4].copy_from_slice(&hash.to_le_bytes());
        }
        buf[e + 4..e + 8].copy_from_slice(&block.to_le_bytes());
    }
    let tail = at + 8 * limit;
    buf[tail..tail + 4].fill(0);
    let csum = checksum::dx_block(seed, &buf[..at + 8 * children.len()], 0);
    buf[tail + 4..tail + 8].copy_from_slice(&csum.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize, len: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut s = format!("{i:0width$}", width = len).into_bytes();
                s.truncate(len.max(1));
                s
            })
            .collect()
    }

    fn entries(names: &[Vec<u8>]) -> Vec<DirEntry<'_>> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| DirEntry {
                name: n,
                ino: 100 + i as u32,
                file_type: file_type::REG,
            })
            .collect()
    }

    fn u16_at(b: &[u8], o: usize) -> usize {
        u16::from_le_bytes([b[o], b[o + 1]]) as usize
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    /// Walks a leaf's records and returns (inode, name) pairs, checking
    /// that they tile the block exactly.
    fn parse_leaf(b: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < LEAF_SPACE {
            let rec = u16_at(b, at + 4);
            assert!(
                rec >= 8 && at + rec <= LEAF_SPACE,
                "bad rec_len {rec} at {at}"
            );
            let ino = u32_at(b, at);
            if ino != 0 {
                out.push((ino, b[at + 8..at + 8 + b[at + 6] as usize].to_vec()));
            }
            at += rec;
        }
        assert_eq!(at, LEAF_SPACE);
        assert_eq!(b[LEAF_SPACE + 7], 0xDE);
        out
    }

    #[test]
    fn small_directory_is_one_linear_block() {
        let n = names(10, 8);
        let e = entries(&n);
        let l = DirLayout::new(&e, &[1, 2, 3, 4]).unwrap();
        assert!(!l.indexed());
        assert_eq!(l.blocks(), 1);
        let mut blocks = Vec::new();
        l.write(&e, 50, 2, 9, |b| {
            blocks.push(b.to_vec());
            Ok::<(), ()>(())
        })
        .unwrap();
        let got = parse_leaf(&blocks[0]);
        assert_eq!(got[0], (50, b".".to_vec()));
        assert_eq!(got[1], (2, b"..".to_vec()));
        assert_eq!(got.len(), 12);
        assert_eq!(
            u32_at(&blocks[0], LEAF_SPACE + 8),
            checksum::dir_block(9, &blocks[0][..LEAF_SPACE])
        );
    }

    #[test]
    fn exactly_full_block_stays_linear() {
        // 24 bytes of dots + 255 entries of 16 bytes = 4104 > 4084; 253 fit.
        let fit = (LEAF_SPACE - DOTS_LEN) / 16;
        let n = names(fit, 8);
        assert_eq!(DirLayout::new(&entries(&n), &[0; 4]).unwrap().blocks(), 1);
        let n = names(fit + 1, 8);
        let l = DirLayout::new(&entries(&n), &[0; 4]).unwrap();
        assert!(l.indexed());
        // Without the dot entries all names fit one leaf: root plus one leaf.
        assert_eq!(l.blocks(), 2);
    }

    #[test]
    fn indexed_directory_leaves_respect_hash_order() {
        let seed = [7, 8, 9, 10];
        let n = names(5000, 20);
        let e = entries(&n);
        let l = DirLayout::new(&e, &seed).unwrap();
        assert!(l.indexed());
        let mut blocks = Vec::new();
        l.write(&e, 77, 2, 5, |b| {
            blocks.push(b.to_vec());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(blocks.len() as u64, l.blocks());
        let root = &blocks[0];
        assert_eq!(u32_at(root, 0), 77);
        assert_eq!(u16_at(root, 16), BS - 12);
        assert_eq!(root[28], 1);
        assert_eq!(root[29], 8);
        assert_eq!(root[30], 0);
        assert_eq!(u16_at(root, 32), ROOT_LIMIT);
        let count = u16_at(root, 34);
        assert_eq!(count, blocks.len() - 1);
        let mut seen = 0;
        for i in 0..count {
            let lo = if i == 0 {
                0
            } else {
                u32_at(root, 32 + 8 * i) & !1
            };
            let hi = if i + 1 < count {
                u32_at(root, 32 + 8 * (i + 1)) & !1
            } else {
                u32::MAX
            };
            let blk = u32_at(root, 36 + 8 * i) as usize;
            for (_, name) in parse_leaf(&blocks[blk]) {
                let h = name_hash(&name, &seed).0;
                assert!(lo <= h && h <= hi, "hash {h:#x} outside {lo:#x}..={hi:#x}");
                seen += 1;
            }
        }
        assert_eq!(seen, 5000);
        let tail = 32 + 8 * ROOT_LIMIT;
        assert_eq!(
            u32_at(root, tail + 4),
            checksum::dx_block(5, &root[..32 + 8 * count], 0)
        );
    }

    #[test]
    fn two_level_index_for_huge_directories() {
        let n = names(ROOT_LIMIT * 16 * 10, 250);
        let e = entries(&n);
        let l = DirLayout::new(&e, &[0; 4]).unwrap();
        assert!(l.leaves() > ROOT_LIMIT);
        let nodes = l.index_nodes();
        assert_eq!(nodes, l.leaves().div_ceil(NODE_LIMIT));
        let mut blocks = Vec::new();
        l.write(&e, 12, 2, 0, |b| {
            blocks.push(b.to_vec());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(blocks[0][30], 1);
        assert_eq!(u16_at(&blocks[0], 34), nodes);
        let node = &blocks[1 + l.leaves()];
        assert_eq!(u32_at(node, 0), 0);
        assert_eq!(u16_at(node, 4), BS);
        assert_eq!(u16_at(node, 8), NODE_LIMIT);
        assert_eq!(u16_at(node, 10), NODE_LIMIT);
        assert_eq!(u32_at(node, 12), 1);
    }

    #[test]
    fn empty_padded_directory() {
        let mut blocks = Vec::new();
        write_empty(4, 11, 2, 3, |b| {
            blocks.push(b.to_vec());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(blocks.len(), 4);
        assert_eq!(parse_leaf(&blocks[0]).len(), 2);
        assert!(parse_leaf(&blocks[3]).is_empty());
    }
}
