//! What a root slot partition holds, a contract shared by the composer (the
//! factory disk), the bundler (the signed root hashes) and the agent
//! (installs): the slot image, an ext4 filesystem, then right after it
//! (from byte `data_blocks * 4096` of the partition) its dm-verity hash tree.
//!
//! Both slots hold the same image but for one thing: slot B's filesystem
//! has a UUID of its own (derived from the image's), so `blkid` and
//! `/dev/disk/by-uuid` never see two filesystems with one UUID. Only the
//! superblock copies differ ([`ext4::uuid_patches`]), so a slot's bytes,
//! and its root hash, follow from the image and the slot alone: the bundle
//! signs the root hash of each slot, and the installer writes the image,
//! applies the slot's patches, computes the tree and checks the root hash
//! before the slot may boot.

use crate::boot_env::SlotId;
use crate::filesystems::ext4;
use crate::io::OffsetWriter;
use crate::io::overlay::Overlay;
use crate::verity::{self, BLOCK_SIZE, SlotVerity, VerityError, VerityParams};
use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Why a slot could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SlotImageError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The image is not what a slot can hold.
    #[error("{0}")]
    Unsupported(String),
    /// The image's filesystem cannot be given a slot identity.
    #[error("{0}")]
    Identity(#[from] ext4::IdentityError),
    /// Hashing failed.
    #[error("{0}")]
    Verity(#[from] VerityError),
}

/// The filesystem UUID of `slot` for an image whose own UUID is `image`:
/// slot A keeps it, slot B gets one derived from it.
pub fn slot_uuid(image: &[u8; 16], slot: SlotId) -> [u8; 16] {
    match slot {
        SlotId::A => *image,
        SlotId::B => crate::reproducible::derived_uuid(&[b"slate-slot-b", image]),
    }
}

/// The bytes of `image` (an ext4 image, read from its start) that differ
/// in `slot`: `(offset, bytes)` pairs, none for slot A.
pub fn identity_patches(
    image: &mut (impl io::Read + Seek),
    slot: SlotId,
) -> Result<Vec<(u64, Vec<u8>)>, SlotImageError> {
    if slot == SlotId::A {
        return Ok(Vec::new());
    }
    let uuid = slot_uuid(&ext4::read_uuid(image)?, slot);
    Ok(ext4::uuid_patches(image, &uuid)?
        .into_iter()
        .map(|p| (p.offset, p.bytes))
        .collect())
}

/// Data blocks of an image of `len` bytes (which must be whole blocks).
pub fn data_blocks(len: u64) -> Result<u64, SlotImageError> {
    if len == 0 || len % BLOCK_SIZE != 0 {
        return Err(SlotImageError::Unsupported(format!(
            "a slot image of {len} bytes is not a whole number of {BLOCK_SIZE}-byte blocks"
        )));
    }
    Ok(len / BLOCK_SIZE)
}

/// Bytes a slot partition needs for an image of `len` bytes and its tree.
pub fn slot_len(len: u64) -> Result<u64, SlotImageError> {
    Ok(len + verity::tree_len(data_blocks(len)?))
}

/// The verity parameters of an image for both slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageVerity {
    /// Data blocks.
    pub data_blocks: u64,
    /// Where each slot's tree starts in its partition, bytes.
    pub hash_offset: u64,
    /// The salt (the SHA-256 of the image).
    pub salt: [u8; 32],
    /// Root hash in slot A.
    pub root_a: [u8; 32],
    /// Root hash in slot B.
    pub root_b: [u8; 32],
}

impl ImageVerity {
    /// The parameters for `slot`.
    pub fn slot(&self, slot: SlotId) -> SlotVerity {
        SlotVerity {
            data_blocks: self.data_blocks,
            hash_offset: self.hash_offset,
            salt: self.salt,
            root_hash: match slot {
                SlotId::A => self.root_a,
                SlotId::B => self.root_b,
            },
        }
    }
}

/// Computes the root hash of the image at `path` in each slot, with `salt`
/// (callers pass the image's SHA-256); the trees go to a temporary file.
pub fn image_verity(path: &Path, salt: [u8; 32]) -> Result<ImageVerity, SlotImageError> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let blocks = data_blocks(len)?;
    let mut root = |slot| -> Result<[u8; 32], SlotImageError> {
        let patches = identity_patches(&mut f, slot)?;
        f.seek(SeekFrom::Start(0))?;
        let data = Overlay::new(BufReader::with_capacity(1 << 20, &f), &patches);
        let tree = verity::format(
            data,
            &VerityParams {
                data_blocks: blocks,
                salt: salt.to_vec(),
                superblock: None,
            },
            tempfile::tempfile()?,
        )?;
        Ok(tree.root_hash)
    };
    let (root_a, root_b) = (root(SlotId::A)?, root(SlotId::B)?);
    Ok(ImageVerity {
        data_blocks: blocks,
        hash_offset: len,
        salt,
        root_a,
        root_b,
    })
}

/// Makes the slot partition at `[start, start + part_len)` of `dev` (a
/// block device or a disk image), whose first `image_len` bytes already
/// hold the image, into `slot`'s: applies its identity patches, writes its
/// hash tree after the image, syncs, and returns the parameters with the
/// root hash it computed (for the caller to check against the signed one).
pub fn seal(
    dev: &Path,
    start: u64,
    part_len: u64,
    image_len: u64,
    slot: SlotId,
    salt: [u8; 32],
) -> Result<SlotVerity, SlotImageError> {
    let blocks = data_blocks(image_len)?;
    let need = slot_len(image_len)?;
    if need > part_len {
        return Err(SlotImageError::Unsupported(format!(
            "the slot partition ({} MiB) cannot hold the image and its hash tree ({} MiB)",
            part_len >> 20,
            need.div_ceil(1 << 20)
        )));
    }
    let out = File::options().read(true).write(true).open(dev)?;
    let patches = identity_patches(&mut OffsetWriter::new(&out, start, image_len)?, slot)?;
    for (at, bytes) in &patches {
        out.write_all_at(bytes, start + at)?;
    }
    let data = File::open(dev)?;
    let tree = verity::format(
        BufReader::with_capacity(1 << 20, OffsetWriter::new(&data, start, image_len)?),
        &VerityParams {
            data_blocks: blocks,
            salt: salt.to_vec(),
            superblock: None,
        },
        OffsetWriter::new(&out, start + image_len, part_len - image_len)?,
    )?;
    out.sync_all()?;
    Ok(SlotVerity {
        data_blocks: blocks,
        hash_offset: image_len,
        salt,
        root_hash: tree.root_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Progress;
    use crate::tree::{FileData, Metadata, Node, NodeKind, Tree};

    /// A small ext4 image (two groups, so a backup superblock) in a file.
    fn image(dir: &Path) -> std::path::PathBuf {
        let mut t = Tree::new(Metadata::root(0o755));
        t.put(
            b"/etc/motd",
            Node {
                kind: NodeKind::File(FileData::from_bytes(b"hello\n".to_vec())),
                meta: Metadata::root(0o644),
            },
            &Metadata::root(0o755),
        )
        .unwrap();
        let path = dir.join("rootfs.ext4");
        let f = File::create(&path).unwrap();
        f.set_len(200 << 20).unwrap();
        ext4::write_ext4(
            &t,
            &ext4::Ext4Options {
                size: Some(crate::units::Bytes(200 << 20)),
                uuid: Some([7; 16]),
                timestamp: Some(1),
                ..Default::default()
            },
            &f,
            &Progress::hidden(),
        )
        .unwrap();
        path
    }

    #[test]
    fn sealing_a_slot_gives_the_root_hash_computed_for_it() {
        let d = tempfile::tempdir().unwrap();
        let img = image(d.path());
        let len = std::fs::metadata(&img).unwrap().len();
        let v = image_verity(&img, [9; 32]).unwrap();
        assert_ne!(v.root_a, v.root_b);
        for slot in SlotId::ALL {
            let part = d.path().join(format!("part-{slot}"));
            let start = 4096;
            let part_len = slot_len(len).unwrap();
            let mut bytes = vec![0u8; start as usize];
            bytes.extend(std::fs::read(&img).unwrap());
            bytes.resize((start + part_len + 4096) as usize, 0xEE);
            std::fs::write(&part, &bytes).unwrap();
            let sealed = seal(&part, start, part_len, len, slot, [9; 32]).unwrap();
            assert_eq!(sealed, v.slot(slot), "slot {slot}");
            let after = std::fs::read(&part).unwrap();
            // Nothing outside the slot partition changed.
            assert!(after[..start as usize].iter().all(|&b| b == 0));
            assert!(
                after[(start + part_len) as usize..]
                    .iter()
                    .all(|&b| b == 0xEE)
            );
            let mut window = OffsetWriter::new(File::open(&part).unwrap(), start, len).unwrap();
            let uuid = ext4::read_uuid(&mut window).unwrap();
            assert_eq!(uuid, slot_uuid(&[7; 16], slot));
            // Slot B differs from the image in its superblock copies only.
            let differ: Vec<u64> = (0..len / 1024)
                .map(|k| k * 1024)
                .filter(|&o| {
                    let (a, b) = (o as usize, (start + o) as usize);
                    bytes[b..b + 1024] != after[b..b + 1024] && a < len as usize
                })
                .collect();
            match slot {
                SlotId::A => assert!(differ.is_empty(), "{differ:?}"),
                SlotId::B => assert_eq!(differ, [1024, 32768 * 4096]),
            }
        }
        let e = seal(&img, 0, len + 4096, len, SlotId::A, [9; 32]).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot hold the image and its hash tree"),
            "{e}"
        );
    }

    #[test]
    fn partial_blocks_and_uuid_seeded_checksums_are_refused() {
        assert!(data_blocks(4097).is_err());
        assert!(data_blocks(0).is_err());
        let d = tempfile::tempdir().unwrap();
        let img = image(d.path());
        let mut bytes = std::fs::read(&img).unwrap();
        // Clear metadata_csum_seed: the UUID then seeds every checksum.
        bytes[1024 + 0x61] &= !0x20;
        let mut c = std::io::Cursor::new(bytes);
        let e = identity_patches(&mut c, SlotId::B).unwrap_err();
        assert!(e.to_string().contains("seeded from the UUID"), "{e}");
        assert!(identity_patches(&mut c, SlotId::A).unwrap().is_empty());
    }
}
