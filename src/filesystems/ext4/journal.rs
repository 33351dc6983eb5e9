//! The internal jbd2 journal: its default size and an empty, clean
//! journal superblock (the kernel enables checksummed journaling itself on
//! the first read-write mount of a `metadata_csum` filesystem).

use super::geometry::BLOCK_SIZE;

/// Smallest journal jbd2 accepts, in blocks.
pub(crate) const MIN_BLOCKS: u64 = 1024;

/// The journal size mke2fs picks for a filesystem of `fs_blocks` 4 KiB blocks.
pub(crate) fn default_blocks(fs_blocks: u64) -> u64 {
    match fs_blocks {
        0..32_768 => 1024,
        32_768..262_144 => 4096,
        262_144..524_288 => 8192,
        524_288..4_194_304 => 16_384,
        4_194_304..8_388_608 => 32_768,
        8_388_608..16_777_216 => 65_536,
        16_777_216..33_554_432 => 131_072,
        _ => 262_144,
    }
}

/// The first journal block: a version 2 superblock describing an empty log
/// (`s_start` = 0) of `blocks` blocks. jbd2 fields are big-endian.
pub(crate) fn superblock(blocks: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    let p32 = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    p32(&mut b, 0x00, 0xC03B_3998); // magic
    p32(&mut b, 0x04, 4); // block type: superblock v2
    p32(&mut b, 0x0C, BLOCK_SIZE as u32);
    p32(&mut b, 0x10, blocks); // s_maxlen
    p32(&mut b, 0x14, 1); // s_first: log starts after this block
    p32(&mut b, 0x18, 1); // s_sequence
    b[0x30..0x40].copy_from_slice(uuid);
    p32(&mut b, 0x40, 1); // s_nr_users: this filesystem
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_mke2fs() {
        assert_eq!(default_blocks(16_384), 1024);
        assert_eq!(default_blocks(262_144), 8192);
        assert_eq!(default_blocks(1 << 30), 262_144);
    }

    #[test]
    fn superblock_fields() {
        let b = superblock(4096, &[9; 16]);
        assert_eq!(&b[..4], &[0xC0, 0x3B, 0x39, 0x98]);
        assert_eq!(&b[0x10..0x14], &4096u32.to_be_bytes());
        assert_eq!(&b[0x1C..0x20], &[0; 4]); // s_start: clean
        assert_eq!(&b[0x30..0x40], &[9; 16]);
    }
}
