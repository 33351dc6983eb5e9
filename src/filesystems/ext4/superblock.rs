//! The superblock and group descriptors.

use super::checksum;
use super::geometry::{DESC_SIZE, INODE_SIZE, LOG_GROUPS_PER_FLEX};
use super::inode::EXTRA_ISIZE;

/// Byte offset of the primary superblock.
pub(crate) const OFFSET: u64 = 1024;
/// Size of the superblock structure.
pub(crate) const LEN: usize = 1024;

/// Compatible features.
pub(crate) mod compat {
    /// A journal inode exists.
    pub const HAS_JOURNAL: u32 = 0x4;
    /// Extended attributes.
    pub const EXT_ATTR: u32 = 0x8;
    /// Hash-indexed directories.
    pub const DIR_INDEX: u32 = 0x20;
}

/// Incompatible features.
pub(crate) mod incompat {
    /// Directory entries record the file type.
    pub const FILETYPE: u32 = 0x2;
    /// Extent-mapped files.
    pub const EXTENTS: u32 = 0x40;
    /// 64-bit block numbers and 64-byte group descriptors.
    pub const BIT64: u32 = 0x80;
    /// Group metadata may live outside its group.
    pub const FLEX_BG: u32 = 0x200;
    /// Metadata checksums are seeded from `s_checksum_seed`, not the UUID,
    /// so the UUID can change without rewriting every checksum.
    pub const CSUM_SEED: u32 = 0x2000;
}

/// Read-only compatible features.
pub(crate) mod ro_compat {
    /// Superblock copies only in groups 0, 1 and powers of 3, 5, 7.
    pub const SPARSE_SUPER: u32 = 0x1;
    /// Files over 2 GiB.
    pub const LARGE_FILE: u32 = 0x2;
    /// `i_blocks` beyond 32 bits.
    pub const HUGE_FILE: u32 = 0x8;
    /// Directories with more than 65000 subdirectories.
    pub const DIR_NLINK: u32 = 0x20;
    /// Inodes carry the extra fields.
    pub const EXTRA_ISIZE: u32 = 0x40;
    /// CRC32C checksums on all metadata.
    pub const METADATA_CSUM: u32 = 0x400;
}

/// Group descriptor flags.
pub(crate) mod bg_flags {
    /// The inode bitmap and table are not initialized (no inode in use).
    pub const INODE_UNINIT: u16 = 0x1;
    /// The inode table is zeroed.
    pub const ITABLE_ZEROED: u16 = 0x4;
}

/// `s_checksum_seed`: crc32c of the UUID the filesystem was made with.
pub(crate) const CHECKSUM_SEED_OFFSET: usize = 0x270;
/// `s_uuid`.
pub(crate) const UUID_OFFSET: usize = 0x68;

/// Directory hash flag: names hash with sign-extended bytes.
const FLAGS_SIGNED_HASH: u32 = 0x1;
/// Default mount options: user_xattr and acl, as mke2fs sets.
const DEFM_XATTR_USER_ACL: u32 = 0x4 | 0x8;

/// Superblock contents that vary between filesystems.
#[derive(Debug, Clone)]
pub(crate) struct Superblock {
    /// Total inodes.
    pub inodes_count: u32,
    /// Total blocks.
    pub blocks_count: u64,
    /// Blocks reserved for root.
    pub r_blocks_count: u64,
    /// Free blocks.
    pub free_blocks: u64,
    /// Free inodes.
    pub free_inodes: u32,
    /// Blocks per group.
    pub blocks_per_group: u32,
    /// Inodes per group.
    pub inodes_per_group: u32,
    /// Write, creation and last-check time.
    pub time: i64,
    /// Filesystem UUID.
    pub uuid: [u8; 16],
    /// Volume label, NUL padded.
    pub label: [u8; 16],
    /// Directory hash seed.
    pub hash_seed: [u8; 16],
    /// Journal inode's `i_block` and size, when there is a journal.
    pub journal: Option<([u8; 60], u64)>,
}

impl Superblock {
    /// The 1024-byte superblock as stored in group `group` (with its checksum).
    pub fn encode(&self, group: u32) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        let p32 =
            |b: &mut [u8; LEN], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let p16 =
            |b: &mut [u8; LEN], at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let lo = |v: u64| v as u32;
        let hi = |v: u64| (v >> 32) as u32;
        let time_lo = self.time as u32;
        let time_hi = (self.time >> 32) as u8;
        p32(&mut b, 0x00, self.inodes_count);
        p32(&mut b, 0x04, lo(self.blocks_count));
        p32(&mut b, 0x08, lo(self.r_blocks_count));
        p32(&mut b, 0x0C, lo(self.free_blocks));
        p32(&mut b, 0x10, self.free_inodes);
        p32(&mut b, 0x14, 0); // first data block
        p32(&mut b, 0x18, 2); // log2(4096) - 10
        p32(&mut b, 0x1C, 2); // cluster size = block size
        p32(&mut b, 0x20, self.blocks_per_group);
        p32(&mut b, 0x24, self.blocks_per_group);
        p32(&mut b, 0x28, self.inodes_per_group);
        p32(&mut b, 0x30, time_lo); // s_wtime
        p16(&mut b, 0x36, 0xFFFF); // max mount count: never forced
        p16(&mut b, 0x38, 0xEF53);
        p16(&mut b, 0x3A, 1); // clean
        p16(&mut b, 0x3C, 1); // errors: continue
        p32(&mut b, 0x40, time_lo); // s_lastcheck
        p32(&mut b, 0x4C, 1); // dynamic revision
        p32(&mut b, 0x54, 11); // first non-reserved inode
        p16(&mut b, 0x58, INODE_SIZE as u16);
        p16(&mut b, 0x5A, group as u16);
        let mut compat = compat::EXT_ATTR | compat::DIR_INDEX;
        if self.journal.is_some() {
            compat |= compat::HAS_JOURNAL;
        }
        p32(&mut b, 0x5C, compat);
        p32(
            &mut b,
            0x60,
            incompat::FILETYPE
                | incompat::EXTENTS
                | incompat::BIT64
                | incompat::FLEX_BG
                | incompat::CSUM_SEED,
        );
        p32(
            &mut b,
            0x64,
            ro_compat::SPARSE_SUPER
                | ro_compat::LARGE_FILE
                | ro_compat::HUGE_FILE
                | ro_compat::DIR_NLINK
                | ro_compat::EXTRA_ISIZE
                | ro_compat::METADATA_CSUM,
        );
        b[UUID_OFFSET..UUID_OFFSET + 16].copy_from_slice(&self.uuid);
        b[0x78..0x88].copy_from_slice(&self.label);
        b[0xEC..0xFC].copy_from_slice(&self.hash_seed);
        b[0xFC] = 1; // default hash: half MD4
        p16(&mut b, 0xFE, DESC_SIZE as u16);
        p32(&mut b, 0x100, DEFM_XATTR_USER_ACL);
        p32(&mut b, 0x108, time_lo); // s_mkfs_time
        if let Some((i_block, size)) = &self.journal {
            p32(&mut b, 0xE0, 8); // journal inode
            b[0xFD] = 1; // s_jnl_backup_type: copy of the inode's block map
            b[0x10C..0x10C + 60].copy_from_slice(i_block);
            p32(&mut b, 0x10C + 60, hi(*size));
            p32(&mut b, 0x10C + 64, lo(*size));
        }
        p32(&mut b, 0x150, hi(self.blocks_count));
        p32(&mut b, 0x154, hi(self.r_blocks_count));
        p32(&mut b, 0x158, hi(self.free_blocks));
        p16(&mut b, 0x15C, EXTRA_ISIZE);
        p16(&mut b, 0x15E, EXTRA_ISIZE);
        p32(&mut b, 0x160, FLAGS_SIGNED_HASH);
        b[0x174] = LOG_GROUPS_PER_FLEX;
        b[0x175] = 1; // checksum type: crc32c
        p32(&mut b, CHECKSUM_SEED_OFFSET, checksum::fs_seed(&self.uuid));
        b[0x274] = time_hi; // s_wtime_hi
        b[0x276] = time_hi; // s_mkfs_time_hi
        b[0x277] = time_hi; // s_lastcheck_hi
        let csum = checksum::superblock(&b);
        p32(&mut b, checksum::SUPERBLOCK_CSUM_OFFSET, csum);
        b
    }
}

/// One group descriptor.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupDesc {
    /// Block bitmap location.
    pub block_bitmap: u64,
    /// Inode bitmap location.
    pub inode_bitmap: u64,
    /// Inode table location.
    pub inode_table: u64,
    /// Free blocks in the group.
    pub free_blocks: u32,
    /// Free inodes in the group.
    pub free_inodes: u32,
    /// Directories in the group.
    pub used_dirs: u32,
    /// `bg_flags`.
    pub flags: u16,
    /// Inodes at the end of the table never used.
    pub itable_unused: u32,
    /// Checksum of the block bitmap.
    pub block_bitmap_csum: u32,
    /// Checksum of the inode bitmap.
    pub inode_bitmap_csum: u32,
}

impl GroupDesc {
    /// Serializes descriptor `group` into `out` (64 bytes) with its checksum.
    pub fn encode(&self, fs_seed: u32, group: u32, out: &mut [u8]) {
        out.fill(0);
        let p32 = |o: &mut [u8], at: usize, v: u32| o[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let p16 = |o: &mut [u8], at: usize, v: u16| o[at..at + 2].copy_from_slice(&v.to_le_bytes());
        p32(out, 0x00, self.block_bitmap as u32);
        p32(out, 0x04, self.inode_bitmap as u32);
        p32(out, 0x08, self.inode_table as u32);
        p16(out, 0x0C, self.free_blocks as u16);
        p16(out, 0x0E, self.free_inodes as u16);
        p16(out, 0x10, self.used_dirs as u16);
        p16(out, 0x12, self.flags);
        p16(out, 0x18, self.block_bitmap_csum as u16);
        p16(out, 0x1A, self.inode_bitmap_csum as u16);
        p16(out, 0x1C, self.itable_unused as u16);
        p32(out, 0x20, (self.block_bitmap >> 32) as u32);
        p32(out, 0x24, (self.inode_bitmap >> 32) as u32);
        p32(out, 0x28, (self.inode_table >> 32) as u32);
        p16(out, 0x2C, (self.free_blocks >> 16) as u16);
        p16(out, 0x2E, (self.free_inodes >> 16) as u16);
        p16(out, 0x30, (self.used_dirs >> 16) as u16);
        p16(out, 0x32, (self.itable_unused >> 16) as u16);
        p16(out, 0x38, (self.block_bitmap_csum >> 16) as u16);
        p16(out, 0x3A, (self.inode_bitmap_csum >> 16) as u16);
        let csum = checksum::group_desc(fs_seed, group, out);
        p16(out, checksum::GROUP_DESC_CSUM_OFFSET, csum);
    }
}
