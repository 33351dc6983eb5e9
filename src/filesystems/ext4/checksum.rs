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

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn le16(b: &[u8], at: usize) -> u32 {
        u32::from(u16::from_le_bytes([b[at], b[at + 1]]))
    }

    /// Recomputes the checksums mke2fs stored in a fresh image: superblock,
    /// group descriptor, block bitmap, root inode and root directory block.
    #[test]
    fn matches_checksums_written_by_mke2fs() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("ref.img");
        let made = std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256"])
            .args(["-O", "metadata_csum,64bit,^resize_inode"])
            .arg(&img)
            .arg("8M")
            .env("E2FSPROGS_FAKE_TIME", "1")
            .status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("SKIP checksums against mke2fs: mke2fs not available");
            return;
        }
        let b = std::fs::read(&img).unwrap();
        let sb = &b[1024..2048];
        assert_eq!(superblock(sb), le32(sb, SUPERBLOCK_CSUM_OFFSET));
        let seed = fs_seed(sb[0x68..0x78].try_into().unwrap());

        let gd = &b[4096..4096 + 64];
        assert_eq!(
            u32::from(group_desc(seed, 0, gd)),
            le16(gd, GROUP_DESC_CSUM_OFFSET)
        );
        let bb = le32(gd, 0) as usize * 4096;
        let bb_csum = le16(gd, 0x18) | le16(gd, 0x38) << 16;
        assert_eq!(bitmap(seed, &b[bb..bb + 32768 / 8]), bb_csum);

        let table = le32(gd, 8) as usize * 4096;
        let mut root = b[table + 256..table + 512].to_vec();
        let stored = le16(&root, 0x7C) | le16(&root, 0x82) << 16;
        let generation = le32(&root, 0x64);
        root[0x7C..0x7E].fill(0);
        root[0x82..0x84].fill(0);
        assert_eq!(inode(seed, 2, generation, &root), stored);

        // The root directory's first block, from its single extent.
        let start = le32(&root, 0x28 + 12 + 8) as usize * 4096;
        let block = &b[start..start + 4096];
        assert_eq!(block[4096 - 12 + 7], 0xDE);
        let iseed = inode_seed(seed, 2, generation);
        assert_eq!(dir_block(iseed, &block[..4096 - 12]), le32(block, 4096 - 4));
    }
}
