//! Block groups: how many there are, how big, where each group's bitmaps and
//! inode table go, and which blocks that leaves free for data.
//!
//! Layout choice: with `flex_bg` a group's metadata may live anywhere, so all
//! block bitmaps, then all inode bitmaps, then all inode tables are packed
//! right after the primary superblock and descriptor table (skipping the
//! backup superblocks of `sparse_super` groups). Data then fills the rest of
//! the filesystem front to back, which keeps the writer's output in
//! ascending order.

use std::ops::Range;

/// Filesystem block size; the only one slate writes.
pub(crate) const BLOCK_SIZE: u64 = 4096;
/// On-disk inode size.
pub(crate) const INODE_SIZE: u64 = 256;
/// Inodes in one inode-table block.
pub(crate) const INODES_PER_BLOCK: u32 = (BLOCK_SIZE / INODE_SIZE) as u32;
/// Size of one group descriptor (`64bit` feature).
pub(crate) const DESC_SIZE: u64 = 64;
/// Bits in a one-block bitmap: the most blocks or inodes a group can have.
pub(crate) const MAX_PER_GROUP: u32 = (BLOCK_SIZE * 8) as u32;
/// Fewest blocks per group we accept when shrinking groups to fit inodes.
const MIN_BLOCKS_PER_GROUP: u64 = 256;
/// `s_log_groups_per_flex`: groups per flex group as a power of two (16, as mke2fs).
pub(crate) const LOG_GROUPS_PER_FLEX: u8 = 4;
/// Smallest filesystem we make, in blocks.
pub(crate) const MIN_BLOCKS: u64 = 64;
/// A trailing group smaller than its own backup metadata plus this is dropped.
const MIN_LAST_GROUP_SPARE: u64 = 16;

/// Where one group's metadata lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupLayout {
    /// Block bitmap block.
    pub block_bitmap: u64,
    /// Inode bitmap block.
    pub inode_bitmap: u64,
    /// First block of the inode table.
    pub inode_table: u64,
}

/// The shape of a filesystem: group sizes and every block set aside for metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Blocks in the filesystem (may be less than the image holds).
    pub blocks_count: u64,
    /// Blocks per group (32768 unless shrunk so that enough inodes fit).
    pub blocks_per_group: u64,
    /// Inodes per group, a multiple of [`INODES_PER_BLOCK`].
    pub inodes_per_group: u32,
    /// Blocks of group descriptors after each superblock copy.
    pub gdt_blocks: u64,
    /// Per-group metadata locations.
    pub groups: Vec<GroupLayout>,
    /// Sorted, disjoint ranges of metadata blocks (superblock copies,
    /// descriptor tables, bitmaps, inode tables).
    pub reserved: Vec<Range<u64>>,
}

/// Why no geometry exists for the requested size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GeometryError {
    /// The metadata alone does not fit.
    TooSmall,
    /// More inodes than 32-bit inode numbers allow.
    TooManyInodes,
}

/// Whether `group` holds a superblock copy under `sparse_super`: groups 0, 1
/// and powers of 3, 5 and 7.
pub(crate) fn has_super(group: u64) -> bool {
    group <= 1 || is_power_of(group, 3) || is_power_of(group, 5) || is_power_of(group, 7)
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n % base == 0 {
        n /= base;
    }
    n == 1
}

/// Blocks needed for `groups` descriptors.
pub(crate) fn gdt_blocks(groups: u64) -> u64 {
    (groups * DESC_SIZE).div_ceil(BLOCK_SIZE)
}

impl Geometry {
    /// Lays out a filesystem of at most `blocks` blocks holding at least
    /// `inodes` inodes.
    pub fn new(blocks: u64, inodes: u64) -> Result<Self, GeometryError> {
        if inodes > u64::from(u32::MAX) {
            return Err(GeometryError::TooManyInodes);
        }
        if blocks < MIN_BLOCKS {
            return Err(GeometryError::TooSmall);
        }
        let per_group = u64::from(MAX_PER_GROUP);
        let groups_for_inodes = inodes.div_ceil(per_group).max(1);
        let mut bpg = per_group;
        if blocks.div_ceil(bpg) < groups_for_inodes {
            // Like mke2fs: smaller groups, so more of them, so more inodes.
            bpg = (blocks / groups_for_inodes) & !7;
            if bpg < MIN_BLOCKS_PER_GROUP {
                return Err(GeometryError::TooSmall);
            }
        }
        let mut blocks_count = blocks;
        let mut group_count = blocks_count.div_ceil(bpg);
        if group_count > 1 {
            let last = group_count - 1;
            let rem = blocks_count - last * bpg;
            let overhead = if has_super(last) {
                1 + gdt_blocks(group_count)
            } else {
                0
            };
            if rem < overhead + MIN_LAST_GROUP_SPARE {
                blocks_count = last * bpg;
                group_count = last;
            }
        }
        if group_count < groups_for_inodes || group_count > u64::from(u32::MAX) {
            return Err(GeometryError::TooSmall);
        }
        let ipg = inodes
            .div_ceil(group_count)
            .next_multiple_of(u64::from(INODES_PER_BLOCK))
            .clamp(u64::from(INODES_PER_BLOCK), per_group);
        if ipg * group_count > u64::from(u32::MAX) {
            return Err(GeometryError::TooManyInodes);
        }
        let gdt = gdt_blocks(group_count);

        let mut backups = Vec::new();
        for g in 0..group_count {
            if has_super(g) {
                let start = g * bpg;
                let end = start + 1 + gdt;
                if end > blocks_count {
                    return Err(GeometryError::TooSmall);
                }
                backups.push(start..end);
            }
        }

        let itable_blocks = ipg / u64::from(INODES_PER_BLOCK);
        let mut placer = Placer {
            avoid: &backups,
            idx: 0,
            cursor: 1 + gdt,
            end: blocks_count,
            placed: Vec::new(),
        };
        let mut groups = Vec::with_capacity(group_count as usize);
        for _ in 0..group_count {
            let block_bitmap = placer.place(1)?;
            groups.push(GroupLayout {
                block_bitmap,
                inode_bitmap: 0,
                inode_table: 0,
            });
        }
        for g in &mut groups {
            g.inode_bitmap = placer.place(1)?;
        }
        for g in &mut groups {
            g.inode_table = placer.place(itable_blocks)?;
        }
        let placed = placer.placed;
        let reserved = merge_ranges(backups.into_iter().chain(placed));
        Ok(Self {
            blocks_count,
            blocks_per_group: bpg,
            inodes_per_group: ipg as u32,
            gdt_blocks: gdt,
            groups,
            reserved,
        })
    }

    /// Number of block groups.
    pub fn group_count(&self) -> u32 {
        self.groups.len() as u32
    }

    /// The blocks of group `g` (the last group may be short).
    pub fn group_range(&self, g: u32) -> Range<u64> {
        let start = u64::from(g) * self.blocks_per_group;
        start..(start + self.blocks_per_group).min(self.blocks_count)
    }

    /// Total inodes.
    pub fn inodes_count(&self) -> u64 {
        u64::from(self.inodes_per_group) * u64::from(self.group_count())
    }

    /// Blocks in one group's inode table.
    #[cfg(test)]
    pub fn inode_table_blocks(&self) -> u64 {
        u64::from(self.inodes_per_group / INODES_PER_BLOCK)
    }

    /// Blocks taken by metadata.
    #[cfg(test)]
    pub fn reserved_count(&self) -> u64 {
        self.reserved.iter().map(|r| r.end - r.start).sum()
    }

    /// Blocks left for data, directories and the journal.
    #[cfg(test)]
    pub fn data_capacity(&self) -> u64 {
        self.blocks_count - self.reserved_count()
    }
}

/// Places metadata runs front to back, stepping over superblock copies.
struct Placer<'a> {
    avoid: &'a [Range<u64>],
    idx: usize,
    cursor: u64,
    end: u64,
    placed: Vec<Range<u64>>,
}

impl Placer<'_> {
    fn place(&mut self, n: u64) -> Result<u64, GeometryError> {
        loop {
            while self.idx < self.avoid.len() && self.avoid[self.idx].end <= self.cursor {
                self.idx += 1;
            }
            match self.avoid.get(self.idx) {
                Some(r) if r.start < self.cursor + n => self.cursor = r.end,
                _ => break,
            }
        }
        let start = self.cursor;
        let end = start + n;
        if end > self.end {
            return Err(GeometryError::TooSmall);
        }
        match self.placed.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => self.placed.push(start..end),
        }
        self.cursor = end;
        Ok(start)
    }
}

/// Sorts and coalesces ranges.
fn merge_ranges(ranges: impl IntoIterator<Item = Range<u64>>) -> Vec<Range<u64>> {
    let mut v: Vec<Range<u64>> = ranges.into_iter().filter(|r| r.start < r.end).collect();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let with: Vec<u64> = (0..400).filter(|g| has_super(*g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125, 243, 343]);
    }

    #[test]
    fn single_group_layout_is_packed_after_the_descriptors() {
        let g = Geometry::new(16384, 16384).unwrap();
        assert_eq!(g.group_count(), 1);
        assert_eq!(g.gdt_blocks, 1);
        assert_eq!(g.inodes_per_group, 16384);
        assert_eq!(
            g.groups[0],
            GroupLayout {
                block_bitmap: 2,
                inode_bitmap: 3,
                inode_table: 4
            }
        );
        assert_eq!(g.reserved, vec![0..4 + 1024]);
        assert_eq!(g.data_capacity(), 16384 - 1028);
    }

    #[test]
    fn metadata_steps_over_backup_superblocks() {
        // 10 groups, 8192 inodes each: the inode tables (512 blocks each)
        // run past block 32768, where group 1's backup lives.
        let g = Geometry::new(10 * 32768, 10 * 8192).unwrap();
        assert_eq!(g.group_count(), 10);
        assert_eq!(g.inodes_per_group, 8192);
        for gl in &g.groups {
            let t = gl.inode_table..gl.inode_table + g.inode_table_blocks();
            assert!(
                !(t.start < 32769 && 32768 < t.end),
                "{t:?} overlaps the backup"
            );
        }
        // Everything reserved lies inside the filesystem and is disjoint.
        for w in g.reserved.windows(2) {
            assert!(w[0].end < w[1].start);
        }
        assert!(g.reserved.last().unwrap().end <= g.blocks_count);
        let backups: u64 = [0u64, 1, 3, 5, 7, 9].len() as u64 * (1 + g.gdt_blocks);
        let expected = backups + 10 * 2 + 10 * g.inode_table_blocks();
        assert_eq!(g.reserved_count(), expected);
    }

    #[test]
    fn groups_shrink_when_inodes_need_more_groups() {
        // 1M inodes need at least 31 groups of 32768 inodes.
        let g = Geometry::new(80_000, 1_000_000).unwrap();
        assert!(g.group_count() >= 31);
        assert!(g.blocks_per_group < 32768 && g.blocks_per_group % 8 == 0);
        assert!(g.inodes_count() >= 1_000_000);
        assert!(u64::from(g.inodes_per_group) <= 32768);
        // Not enough blocks for 1M inode tables (256 MiB) at all:
        assert_eq!(
            Geometry::new(20_000, 1_000_000),
            Err(GeometryError::TooSmall)
        );
    }

    #[test]
    fn tiny_trailing_group_is_dropped() {
        let g = Geometry::new(32768 + 5, 64).unwrap();
        assert_eq!(g.group_count(), 1);
        assert_eq!(g.blocks_count, 32768);
        let g = Geometry::new(2 * 32768 + 100, 64).unwrap();
        assert_eq!(g.group_count(), 3);
        assert_eq!(g.group_range(2), 65536..65636);
    }

    #[test]
    fn refuses_absurd_requests() {
        assert_eq!(Geometry::new(10, 16), Err(GeometryError::TooSmall));
        assert_eq!(
            Geometry::new(1 << 40, 1 << 33),
            Err(GeometryError::TooManyInodes)
        );
    }
}
