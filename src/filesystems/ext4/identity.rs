//! Giving a finished ext4 image another filesystem UUID without touching
//! anything but its superblocks, so the two root slots of a device can hold
//! the same image and still be told apart (`/dev/disk/by-uuid`, `blkid`).
//!
//! This works only when no other metadata depends on the UUID: with
//! `metadata_csum`, the checksums must be seeded from `s_checksum_seed`
//! (`metadata_csum_seed`, which slate's writer always sets); the older
//! `uninit_bg` group checksums hash the UUID itself and are refused.

use super::checksum;
use super::superblock::{LEN, OFFSET, UUID_OFFSET, incompat, ro_compat};
use std::io::{self, Read, Seek, SeekFrom};

/// `s_magic`.
const MAGIC: u16 = 0xEF53;
/// `RO_COMPAT_GDT_CSUM`: group descriptor checksums over the UUID.
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
/// `COMPAT_SPARSE_SUPER2`: backups only in the two groups the superblock names.
const COMPAT_SPARSE_SUPER2: u32 = 0x200;

/// Why the UUID cannot be changed in place.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading a superblock failed.
    #[error("reading the ext4 superblocks: {0}")]
    Io(#[from] io::Error),
    /// A superblock copy is missing or damaged.
    #[error("{0}")]
    Corrupt(String),
    /// The filesystem's metadata depends on its UUID.
    #[error("{0}")]
    Unsupported(String),
}

/// One rewritten superblock copy: `bytes` go at `offset` of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperblockPatch {
    /// Byte offset in the image.
    pub offset: u64,
    /// The 1024-byte superblock with the new UUID and checksum.
    pub bytes: Vec<u8>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads the primary superblock's UUID.
pub fn read_uuid(dev: &mut (impl Read + Seek)) -> Result<[u8; 16], IdentityError> {
    let sb = read_superblock(dev, OFFSET)?;
    Ok(sb[UUID_OFFSET..UUID_OFFSET + 16]
        .try_into()
        .unwrap_or([0; 16]))
}

fn read_superblock(dev: &mut (impl Read + Seek), at: u64) -> Result<Vec<u8>, IdentityError> {
    let mut sb = vec![0u8; LEN];
    dev.seek(SeekFrom::Start(at))?;
    dev.read_exact(&mut sb)?;
    let magic = u16::from_le_bytes([sb[0x38], sb[0x39]]);
    if magic != MAGIC {
        return Err(IdentityError::Corrupt(format!(
            "no ext4 superblock at byte {at} (magic {magic:#06x})"
        )));
    }
    Ok(sb)
}

/// Whether group `g` holds a superblock copy under `sparse_super`.
fn sparse_has_copy(g: u64) -> bool {
    if g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&base| {
        let mut p = base;
        while p < g {
            p = p.saturating_mul(base);
        }
        p == g
    })
}

/// Byte offsets of every superblock copy, primary first, as the primary
/// superblock describes them.
fn copy_offsets(sb: &[u8]) -> Result<Vec<u64>, IdentityError> {
    let log = le32(sb, 0x18);
    if log > 6 {
        return Err(IdentityError::Corrupt(format!(
            "implausible ext4 block size 2^(10+{log})"
        )));
    }
    let bs = 1024u64 << log;
    let first = u64::from(le32(sb, 0x14));
    let bpg = u64::from(le32(sb, 0x20));
    let hi = if le32(sb, 0x60) & incompat::BIT64 != 0 {
        u64::from(le32(sb, 0x150))
    } else {
        0
    };
    let blocks = u64::from(le32(sb, 0x04)) | hi << 32;
    if bpg == 0 || blocks <= first {
        return Err(IdentityError::Corrupt(format!(
            "implausible ext4 geometry ({blocks} blocks, {bpg} per group)"
        )));
    }
    let groups = (blocks - first).div_ceil(bpg);
    let compat = le32(sb, 0x5C);
    let sparse = le32(sb, 0x64) & ro_compat::SPARSE_SUPER != 0;
    let with_copy: Vec<u64> = if compat & COMPAT_SPARSE_SUPER2 != 0 {
        let mut v = vec![0];
        for at in [0x24C, 0x250] {
            let g = u64::from(le32(sb, at));
            if g != 0 && g < groups && !v.contains(&g) {
                v.push(g);
            }
        }
        v
    } else {
        (0..groups)
            .filter(|&g| !sparse || sparse_has_copy(g))
            .collect()
    };
    Ok(with_copy
        .into_iter()
        .map(|g| {
            if g == 0 {
                OFFSET
            } else {
                (first + g * bpg) * bs
            }
        })
        .collect())
}

/// The superblock copies of the ext4 image in `dev` rewritten with `uuid`:
/// the only bytes that differ between the image and the same image under
/// that UUID. Nothing is written; apply the patches, or read through them.
pub fn uuid_patches(
    dev: &mut (impl Read + Seek),
    uuid: &[u8; 16],
) -> Result<Vec<SuperblockPatch>, IdentityError> {
    let primary = read_superblock(dev, OFFSET)?;
    let ro = le32(&primary, 0x64);
    if ro & RO_COMPAT_GDT_CSUM != 0 {
        return Err(IdentityError::Unsupported(
            "its group descriptor checksums (uninit_bg) are computed over the UUID".into(),
        ));
    }
    let metadata_csum = ro & ro_compat::METADATA_CSUM != 0;
    if metadata_csum && le32(&primary, 0x60) & incompat::CSUM_SEED == 0 {
        return Err(IdentityError::Unsupported(
            "its metadata checksums are seeded from the UUID (no metadata_csum_seed)".into(),
        ));
    }
    let mut patches = Vec::new();
    for at in copy_offsets(&primary)? {
        let mut sb = read_superblock(dev, at)?;
        sb[UUID_OFFSET..UUID_OFFSET + 16].copy_from_slice(uuid);
        if metadata_csum {
            let csum = checksum::superblock(&sb);
            sb[checksum::SUPERBLOCK_CSUM_OFFSET..checksum::SUPERBLOCK_CSUM_OFFSET + 4]
                .copy_from_slice(&csum.to_le_bytes());
        }
        patches.push(SuperblockPatch {
            offset: at,
            bytes: sb,
        });
    }
    Ok(patches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let with: Vec<u64> = (0..60).filter(|&g| sparse_has_copy(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }
}
