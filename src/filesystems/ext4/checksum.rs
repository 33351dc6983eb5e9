//! CRC32C the way ext4 and jbd2 chain it: a raw CRC without the final
//! inversion, seeded from the filesystem UUID (or `!0`), so each structure's
//! checksum continues from a per-filesystem or per-inode seed.

/// Continues a raw CRC32C (no pre- or post-inversion) from `crc` over `data`.
pub(crate) fn crc32c_raw(crc: u32, data: &[u8]) -> u32 {
    // The crate's append form inverts on entry and exit; undo both.
    !crc32c::crc32c_append(!crc, data)
}

/// The per-filesystem seed: `crc32c(~0, uuid)`.
pub(crate) fn fs_seed(uuid: &[u8; 16]) -> u32 {
    crc32c_raw(!0, uuid)
}

/// The per-inode seed that inode, extent, directory and dx checksums start from.
pub(crate) fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    let crc = crc32c_raw(fs_seed, &ino.to_le_bytes());
    crc32c_raw(crc, &generation.to_le_bytes())
}

/// Offset of `s_checksum` in the superblock.
pub(crate) const SUPERBLOCK_CSUM_OFFSET: usize = 0x3FC;

/// Checksum of a 1024-byte superblock (everything before `s_checksum`).
pub(crate) fn superblock(sb: &[u8]) -> u32 {
    crc32c_raw(!0, &sb[..SUPERBLOCK_CSUM_OFFSET])
}

/// Offset of `bg_checksum` in a group descriptor.
pub(crate) const GROUP_DESC_CSUM_OFFSET: usize = 0x1E;

/// The 16-bit checksum of group descriptor `group` (its checksum field is skipped).
pub(crate) fn group_desc(fs_seed: u32, group: u32, desc: &[u8]) -> u16 {
    let mut crc = crc32c_raw(fs_seed, &group.to_le_bytes());
    crc = crc32c_raw(crc, &desc[..GROUP_DESC_CSUM_OFFSET]);
    crc = crc32c_raw(crc, &[0, 0]);
    crc = crc32c_raw(crc, &desc[GROUP_DESC_CSUM_OFFSET + 2..]);
    (crc & 0xFFFF) as u16
}

/// Checksum of a block or inode bitmap (only the bytes covering the group).
pub(crate) fn bitmap(fs_seed: u32, bits: &[u8]) -> u32 {
    crc32c_raw(fs_seed, bits)
}

/// Checksum of an inode whose checksum fields are already zero.
pub(crate) fn inode(fs_seed: u32, ino: u32, generation: u32, raw: &[u8]) -> u32 {
    crc32c_raw(inode_seed(fs_seed, ino, generation), raw)
}

/// Checksum of an extent tree block, covering everything before its tail.
pub(crate) fn extent_block(inode_seed: u32, block_before_tail: &[u8]) -> u32 {
    crc32c_raw(inode_seed, block_before_tail)
}

/// Checksum of a directory leaf block, covering everything before its 12-byte tail.
pub(crate) fn dir_block(inode_seed: u32, block_before_tail: &[u8]) -> u32 {
    crc32c_raw(inode_seed, block_before_tail)
}

/// Checksum of an htree index block: the entries in use (`used` bytes from
/// the start of the block) followed by the tail's reserved word and a zero
/// checksum.
pub(crate) fn dx_block(inode_seed: u32, used: &[u8], tail_reserved: u32) -> u32 {
    let crc = crc32c_raw(inode_seed, used);
    let crc = crc32c_raw(crc, &tail_reserved.to_le_bytes());
    crc32c_raw(crc, &[0; 4])
}

/// Checksum of an extended attribute block at `block_nr` whose checksum field is zero.
pub(crate) fn xattr_block(fs_seed: u32, block_nr: u64, block: &[u8]) -> u32 {
    let crc = crc32c_raw(fs_seed, &block_nr.to_le_bytes());
    crc32c_raw(crc, block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_crc_matches_the_standard_check_value() {
        // CRC-32C("123456789") = 0xE3069283 with the usual inversions.
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
        // Chaining equals one pass.
        let whole = crc32c_raw(7, b"hello world");
        assert_eq!(crc32c_raw(crc32c_raw(7, b"hello "), b"world"), whole);
    }

    #[test]
    fn group_desc_checksum_skips_its_own_field() {
        let mut d = [0x5Au8; 64];
        let a = group_desc(1, 3, &d);
        d[GROUP_DESC_CSUM_OFFSET] = 0;
        d[GROUP_DESC_CSUM_OFFSET + 1] = 0;
        assert_eq!(group_desc(1, 3, &d), a);
        assert_ne!(group_desc(1, 4, &d), a);
    }
}
