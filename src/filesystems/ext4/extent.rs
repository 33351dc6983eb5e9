//! Extents: mapping an inode's logical blocks to physical runs, and the
//! extent tree that holds the mapping (in the inode for up to four extents,
//! in index and leaf blocks below it otherwise).

use super::checksum;
use super::geometry::BLOCK_SIZE;

/// Longest initialized extent.
pub(crate) const MAX_EXTENT_LEN: u64 = 32768;
/// Extent entries that fit in `i_block` after the header.
const ENTRIES_IN_INODE: usize = 4;
/// Extent entries that fit in a tree block after the header, leaving room for the tail.
const ENTRIES_PER_BLOCK: usize = ((BLOCK_SIZE as usize) - 12 - 4) / 12;
/// Offset of the checksum tail in a tree block.
const TAIL_OFFSET: usize = 12 + ENTRIES_PER_BLOCK * 12;
const MAGIC: u16 = 0xF30A;

/// One run of logical blocks mapped to consecutive physical blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    /// First logical block.
    pub logical: u32,
    /// Length in blocks, 1..=32768.
    pub len: u32,
    /// First physical block.
    pub physical: u64,
}

/// Where an inode's blocks are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Placement {
    /// No blocks.
    #[default]
    None,
    /// A single extent (the common case, kept small).
    One(Extent),
    /// Several extents, maybe with tree blocks.
    Many(Box<ExtentMap>),
}

/// Extents and the blocks of the tree indexing them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtentMap {
    /// Extents in logical order.
    pub extents: Vec<Extent>,
    /// Tree blocks: all leaves in order, then each index level bottom-up.
    pub tree: Vec<u64>,
}

impl Placement {
    /// The extents in logical order.
    pub fn extents(&self) -> &[Extent] {
        match self {
            Placement::None => &[],
            Placement::One(e) => std::slice::from_ref(e),
            Placement::Many(m) => &m.extents,
        }
    }

    /// The extent tree's own blocks.
    pub fn tree_blocks(&self) -> &[u64] {
        match self {
            Placement::Many(m) => &m.tree,
            _ => &[],
        }
    }

    /// Data blocks mapped.
    pub fn data_blocks(&self) -> u64 {
        self.extents().iter().map(|e| u64::from(e.len)).sum()
    }

    /// Data plus tree blocks.
    pub fn total_blocks(&self) -> u64 {
        self.data_blocks() + self.tree_blocks().len() as u64
    }

    /// The physical block of logical block `logical`, if mapped.
    pub fn physical(&self, logical: u32) -> Option<u64> {
        let ex = self.extents();
        let i = ex.partition_point(|e| e.logical + e.len <= logical);
        let e = ex.get(i)?;
        (e.logical <= logical).then(|| e.physical + u64::from(logical - e.logical))
    }
}

/// Collects extents from allocated runs, splitting at the maximum length
/// and merging runs that continue each other.
#[derive(Debug, Default)]
pub(crate) struct ExtentBuilder {
    extents: Vec<Extent>,
}

impl ExtentBuilder {
    /// Maps `len` logical blocks from `logical` to physical blocks from `physical`.
    pub fn push(&mut self, mut logical: u32, mut physical: u64, mut len: u64) {
        while len > 0 {
            if let Some(last) = self.extents.last_mut() {
                let contiguous = u64::from(last.logical) + u64::from(last.len)
                    == u64::from(logical)
                    && last.physical + u64::from(last.len) == physical;
                let room = MAX_EXTENT_LEN - u64::from(last.len);
                if contiguous && room > 0 {
                    let n = room.min(len);
                    last.len += n as u32;
                    logical += n as u32;
                    physical += n;
                    len -= n;
                    continue;
                }
            }
            let n = len.min(MAX_EXTENT_LEN);
            self.extents.push(Extent {
                logical,
                len: n as u32,
                physical,
            });
            // The last logical block is at most u32::MAX, so this cannot overflow
            // except past the very end, where len becomes 0.
            logical = logical.wrapping_add(n as u32);
            physical += n;
            len -= n;
        }
    }

    /// How many tree blocks the extents collected so far need.
    pub fn tree_blocks_needed(&self) -> u64 {
        tree_shape(self.extents.len()).iter().sum()
    }

    /// The finished placement, given the tree blocks (as many as
    /// [`Self::tree_blocks_needed`] says).
    pub fn finish(self, tree: Vec<u64>) -> Placement {
        debug_assert_eq!(tree.len() as u64, self.tree_blocks_needed());
        match self.extents.as_slice() {
            [] => Placement::None,
            [one] => Placement::One(*one),
            _ => Placement::Many(Box::new(ExtentMap {
                extents: self.extents,
                tree,
            })),
        }
    }
}

/// Nodes per tree level below the inode, leaves first; empty when the
/// extents fit in the inode.
pub(crate) fn tree_shape(extents: usize) -> Vec<u64> {
    let mut levels = Vec::new();
    let mut n = extents;
    while n > ENTRIES_IN_INODE {
        n = n.div_ceil(ENTRIES_PER_BLOCK);
        levels.push(n as u64);
    }
    levels
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: usize) {
    buf[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    buf[2..4].copy_from_slice(&(entries as u16).to_le_bytes());
    buf[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    buf[6..8].copy_from_slice(&(depth as u16).to_le_bytes());
    buf[8..12].fill(0);
}

fn leaf_entry(buf: &mut [u8], e: &Extent) {
    buf[0..4].copy_from_slice(&e.logical.to_le_bytes());
    buf[4..6].copy_from_slice(&(e.len as u16).to_le_bytes());
    buf[6..8].copy_from_slice(&((e.physical >> 32) as u16).to_le_bytes());
    buf[8..12].copy_from_slice(&(e.physical as u32).to_le_bytes());
}

fn index_entry(buf: &mut [u8], logical: u32, child: u64) {
    buf[0..4].copy_from_slice(&logical.to_le_bytes());
    buf[4..8].copy_from_slice(&(child as u32).to_le_bytes());
    buf[8..10].copy_from_slice(&((child >> 32) as u16).to_le_bytes());
    buf[10..12].fill(0);
}

/// The first logical block of node `j` on tree level `level` (0 = leaves).
fn node_first_logical(extents: &[Extent], level: usize, j: usize) -> u32 {
    let per = ENTRIES_PER_BLOCK.pow(level as u32 + 1);
    extents[j * per].logical
}

/// The 60-byte `i_block` of an extent-mapped inode.
pub(crate) fn inode_root(p: &Placement) -> [u8; 60] {
    let mut buf = [0u8; 60];
    let extents = p.extents();
    let shape = tree_shape(extents.len());
    match shape.len() {
        0 => {
            header(&mut buf, extents.len(), ENTRIES_IN_INODE, 0);
            for (i, e) in extents.iter().enumerate() {
                leaf_entry(&mut buf[12 + 12 * i..], e);
            }
        }
        depth => {
            let top = depth - 1;
            let top_count = shape[top] as usize;
            let top_base: u64 = shape[..top].iter().sum();
            header(&mut buf, top_count, ENTRIES_IN_INODE, depth);
            let tree = p.tree_blocks();
            for j in 0..top_count {
                let child = tree[(top_base as usize) + j];
                index_entry(
                    &mut buf[12 + 12 * j..],
                    node_first_logical(extents, top, j),
                    child,
                );
            }
        }
    }
    buf
}

/// Calls `emit(block_number, contents)` for every tree block, in the order
/// they were allocated (leaves, then each index level).
pub(crate) fn tree_blocks<E>(
    p: &Placement,
    inode_seed: u32,
    mut emit: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let extents = p.extents();
    let tree = p.tree_blocks();
    let shape = tree_shape(extents.len());
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    let mut base = 0usize;
    for (level, &count) in shape.iter().enumerate() {
        for j in 0..count as usize {
            buf.fill(0);
            if level == 0 {
                let chunk = &extents[j * ENTRIES_PER_BLOCK..]
                    [..ENTRIES_PER_BLOCK.min(extents.len() - j * ENTRIES_PER_BLOCK)];
                header(&mut buf, chunk.len(), ENTRIES_PER_BLOCK, 0);
                for (i, e) in chunk.iter().enumerate() {
                    leaf_entry(&mut buf[12 + 12 * i..], e);
                }
            } else {
                let below = shape[level - 1] as usize;
                let below_base = base - below;
                let first = j * ENTRIES_PER_BLOCK;
                let n = ENTRIES_PER_BLOCK.min(below - first);
                header(&mut buf, n, ENTRIES_PER_BLOCK, level);
                for i in 0..n {
                    let child = tree[below_base + first + i];
                    index_entry(
                        &mut buf[12 + 12 * i..],
                        node_first_logical(extents, level - 1, first + i),
                        child,
                    );
                }
            }
            let csum = checksum::extent_block(inode_seed, &buf[..TAIL_OFFSET]);
            buf[TAIL_OFFSET..TAIL_OFFSET + 4].copy_from_slice(&csum.to_le_bytes());
            emit(tree[base + j], &buf)?;
        }
        base += count as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes([b[o], b[o + 1]])
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    #[test]
    fn builder_splits_and_merges() {
        let mut b = ExtentBuilder::default();
        b.push(0, 100, 10);
        b.push(10, 110, 5); // continues the first
        b.push(20, 200, 70000); // split at 32768
        let p = b.finish(vec![]);
        let e = p.extents();
        assert_eq!(
            e[0],
            Extent {
                logical: 0,
                len: 15,
                physical: 100
            }
        );
        assert_eq!(e[1].len, 32768);
        assert_eq!(e[2].len, 32768);
        assert_eq!(
            e[3],
            Extent {
                logical: 20 + 65536,
                len: 70000 - 65536,
                physical: 200 + 65536
            }
        );
        assert_eq!(p.data_blocks(), 70015);
        assert_eq!(p.physical(12), Some(112));
        assert_eq!(p.physical(16), None);
        assert_eq!(p.physical(20 + 32768), Some(200 + 32768));
    }

    #[test]
    fn tree_shapes() {
        assert!(tree_shape(4).is_empty());
        assert_eq!(tree_shape(5), [1]);
        assert_eq!(ENTRIES_PER_BLOCK, 340);
        assert_eq!(tree_shape(340 * 4), [4]);
        assert_eq!(tree_shape(340 * 4 + 1), [5, 1]);
        assert_eq!(tree_shape(340 * 340 * 4 + 1), [1361, 5, 1]);
    }

    #[test]
    fn depth_one_tree_serializes() {
        let mut b = ExtentBuilder::default();
        // 700 one-block extents with gaps: 3 leaves.
        for i in 0..700u32 {
            b.push(i * 2, 1000 + u64::from(i) * 2, 1);
        }
        assert_eq!(b.tree_blocks_needed(), 3);
        let p = b.finish(vec![50, 51, 52]);
        let root = inode_root(&p);
        assert_eq!(u16_at(&root, 0), MAGIC);
        assert_eq!(u16_at(&root, 2), 3); // entries
        assert_eq!(u16_at(&root, 4), 4); // max
        assert_eq!(u16_at(&root, 6), 1); // depth
        assert_eq!(u32_at(&root, 12 + 12), 680); // second leaf starts at extent 340
        assert_eq!(u32_at(&root, 12 + 12 + 4), 51);
        let mut blocks = Vec::new();
        tree_blocks(&p, 0x1234, |n, b| {
            blocks.push((n, b.to_vec()));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(blocks.len(), 3);
        let (n, last) = &blocks[2];
        assert_eq!(*n, 52);
        assert_eq!(u16_at(last, 2), 20);
        assert_eq!(u16_at(last, 4), 340);
        assert_eq!(u32_at(last, 12), 1360);
        let csum = checksum::extent_block(0x1234, &last[..TAIL_OFFSET]);
        assert_eq!(u32_at(last, TAIL_OFFSET), csum);
    }

    #[test]
    fn depth_two_tree_indexes_point_at_leaves() {
        let mut b = ExtentBuilder::default();
        let n = 340 * 4 + 1;
        for i in 0..n as u32 {
            b.push(i * 2, u64::from(i) * 2, 1);
        }
        let need = b.tree_blocks_needed();
        assert_eq!(need, 6);
        let tree: Vec<u64> = (9000..9000 + need).collect();
        let p = b.finish(tree);
        let root = inode_root(&p);
        assert_eq!(u16_at(&root, 2), 1);
        assert_eq!(u16_at(&root, 6), 2);
        assert_eq!(u32_at(&root, 16), 9005);
        let mut blocks = Vec::new();
        tree_blocks(&p, 0, |n, b| {
            blocks.push((n, b.to_vec()));
            Ok::<(), ()>(())
        })
        .unwrap();
        let (n, idx) = &blocks[5];
        assert_eq!(*n, 9005);
        assert_eq!(u16_at(idx, 2), 5);
        assert_eq!(u16_at(idx, 6), 1);
        // Fifth leaf starts at extent 1360, logical 2720, block 9004.
        assert_eq!(u32_at(idx, 12 + 4 * 12), 2720);
        assert_eq!(u32_at(idx, 12 + 4 * 12 + 4), 9004);
    }
}
