//! Reading the size of an existing ext4 filesystem from its superblock (for
//! the agent, which grows /data online and must know where it stands).

use super::superblock::{LEN, OFFSET, incompat};
use std::io::{self, Read, Seek, SeekFrom};

/// `s_magic`.
const MAGIC: u16 = 0xEF53;

/// How big a filesystem is, as its primary superblock says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Size {
    /// Block size in bytes.
    pub block_size: u64,
    /// Blocks in the filesystem.
    pub blocks: u64,
}

impl Ext4Size {
    /// The filesystem's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks * self.block_size
    }
}

/// Why no size could be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Reading the superblock failed.
    #[error("reading the ext4 superblock: {0}")]
    Io(#[from] io::Error),
    /// No ext4 magic where the superblock belongs.
    #[error("no ext4 superblock (magic {0:#06x})")]
    NotExt4(u16),
    /// A block size outside 1 KiB..64 KiB.
    #[error("implausible ext4 block size 2^(10+{0})")]
    BadBlockSize(u32),
}

/// Reads block size and block count from the primary superblock of `dev`
/// (a partition, an image, or a mounted filesystem's block device).
pub fn read_size(dev: &mut (impl Read + Seek)) -> Result<Ext4Size, ProbeError> {
    let mut sb = [0u8; LEN];
    dev.seek(SeekFrom::Start(OFFSET))?;
    dev.read_exact(&mut sb)?;
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    let magic = u16::from_le_bytes([sb[0x38], sb[0x39]]);
    if magic != MAGIC {
        return Err(ProbeError::NotExt4(magic));
    }
    let log = u32_at(0x18);
    if log > 6 {
        return Err(ProbeError::BadBlockSize(log));
    }
    let hi = if u32_at(0x60) & incompat::BIT64 != 0 {
        u64::from(u32_at(0x150))
    } else {
        0
    };
    Ok(Ext4Size {
        block_size: 1024 << log,
        blocks: hi << 32 | u64::from(u32_at(0x04)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filesystems::ext4::{Ext4Options, write_ext4};
    use crate::progress::Progress;
    use crate::tree::{Metadata, Tree};
    use crate::units::{Bytes, MIB};

    #[test]
    fn reads_what_the_writer_wrote() {
        let mut img = io::Cursor::new(vec![0u8; 24 * MIB as usize]);
        let opts = Ext4Options {
            size: Some(Bytes(24 * MIB)),
            journal: true,
            ..Default::default()
        };
        let tree = Tree::new(Metadata::root(0o755));
        let summary = write_ext4(&tree, &opts, &mut img, &Progress::hidden()).unwrap();
        let size = read_size(&mut img).unwrap();
        assert_eq!(size.block_size, 4096);
        assert_eq!(size.blocks, summary.blocks);
        assert_eq!(size.bytes(), 24 * MIB);
        // The high half of the count is used with 64bit: 2^32 + 5 blocks.
        let sb = img.get_mut();
        sb[1024 + 0x150..1024 + 0x154].copy_from_slice(&1u32.to_le_bytes());
        sb[1024 + 4..1024 + 8].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(read_size(&mut img).unwrap().blocks, (1 << 32) + 5);
        // Not ext4.
        let e = read_size(&mut io::Cursor::new(vec![0u8; 4096])).unwrap_err();
        assert!(matches!(e, ProbeError::NotExt4(0)), "{e}");
        let e = read_size(&mut io::Cursor::new(vec![0u8; 100])).unwrap_err();
        assert!(matches!(e, ProbeError::Io(_)), "{e}");
    }
}
