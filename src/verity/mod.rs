//! dm-verity hash trees: the format the kernel's `verity` target checks a
//! read-only block device against (format version 1, SHA-256, 4 KiB data
//! and hash blocks), as `veritysetup format` writes it. See
//! docs/verity.md.
//!
//! Every data block's digest is `SHA-256(salt || block)`; 128 digests fill
//! a hash block (zero-padded at the end of each level); each level hashes
//! the one below the same way until one block is left, whose digest is the
//! root hash. On the hash device the levels are stored top first (the
//! single top block, then each lower level), after an optional 512-byte
//! superblock in a block of its own.
//!
//! [`format`] streams the data once and keeps one hash block per level in
//! memory: the lowest level is written as it is computed, and each higher
//! level is computed from the level below, read back from the output.

pub mod dm;

use crate::io::hash::hex;

use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The dm-verity parameters of one root slot: what the signed manifest
/// records, what the boot entry hands the initramfs, and what the installer
/// checks a written slot against. The tree lives in the slot partition
/// right after the data, without a verity superblock; hash and data blocks
/// are [`BLOCK_SIZE`] bytes, the algorithm SHA-256, the format version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotVerity {
    /// Data blocks (the image's length / [`BLOCK_SIZE`]).
    pub data_blocks: u64,
    /// Where the tree starts in the partition, in bytes.
    pub hash_offset: u64,
    /// Salt of every digest.
    pub salt: [u8; 32],
    /// The root hash.
    pub root_hash: [u8; 32],
}

/// The kernel command line parameter that carries a [`SlotVerity`].
pub const CMDLINE_KEY: &str = "slate.verity";

impl SlotVerity {
    /// `ROOT_HASH:SALT:DATA_BLOCKS:HASH_START_BLOCK`, the value of
    /// [`CMDLINE_KEY`] (one word, so busybox sh passes it on whole).
    pub fn to_cmdline_value(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            hex(&self.root_hash),
            hex(&self.salt),
            self.data_blocks,
            self.hash_offset / BLOCK_SIZE
        )
    }

    /// Parses [`SlotVerity::to_cmdline_value`]'s format.
    pub fn parse_cmdline_value(s: &str) -> Option<SlotVerity> {
        let mut it = s.split(':');
        let root_hash = unhex32(it.next()?)?;
        let salt = unhex32(it.next()?)?;
        let data_blocks = it.next()?.parse().ok().filter(|&n: &u64| n > 0)?;
        let hash_block: u64 = it.next()?.parse().ok()?;
        if it.next().is_some() || hash_block < data_blocks {
            return None;
        }
        Some(SlotVerity {
            data_blocks,
            hash_offset: hash_block.checked_mul(BLOCK_SIZE)?,
            salt,
            root_hash,
        })
    }

    /// Bytes the tree takes after the data.
    pub fn tree_len(&self) -> u64 {
        tree_len(self.data_blocks)
    }
}

/// Bytes of the tree (no superblock) for `data_blocks` data blocks.
pub fn tree_len(data_blocks: u64) -> u64 {
    level_blocks(data_blocks).iter().sum::<u64>() * BLOCK_SIZE
}

/// 32 bytes from 64 hex digits (either case).
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Data and hash block size.
pub const BLOCK_SIZE: u64 = 4096;

/// Bytes of a SHA-256 digest.
const DIGEST_LEN: usize = 32;

/// Digests per hash block.
const HASHES_PER_BLOCK: u64 = BLOCK_SIZE / DIGEST_LEN as u64;

/// Length of the on-disk superblock (it occupies a whole hash block).
pub const SUPERBLOCK_LEN: usize = 512;

/// Longest salt the superblock can hold.
pub const MAX_SALT_LEN: usize = 256;

/// Magic at the start of a verity superblock.
const MAGIC: &[u8; 8] = b"verity\0\0";

/// What goes wrong making a hash tree.
#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    /// Reading the data or writing the tree failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The parameters cannot describe a verity device.
    #[error("{0}")]
    Unsupported(String),
    /// The data ended before the blocks it was said to have.
    #[error("the data ends after {got} bytes; {want} were expected")]
    ShortData {
        /// Bytes read.
        got: u64,
        /// Bytes expected.
        want: u64,
    },
}

/// What a hash tree is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    /// Data blocks of [`BLOCK_SIZE`] bytes to cover.
    pub data_blocks: u64,
    /// Salt, at most [`MAX_SALT_LEN`] bytes.
    pub salt: Vec<u8>,
    /// Write a superblock with this UUID before the tree (as `veritysetup
    /// format --uuid` does); `None` writes the tree alone
    /// (`--no-superblock`).
    pub superblock: Option<[u8; 16]>,
}

/// A finished hash tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityTree {
    /// The root hash: what the kernel's verity table names.
    pub root_hash: [u8; 32],
    /// Data blocks covered.
    pub data_blocks: u64,
    /// Where the tree's top block starts in the hash output, in bytes (the
    /// kernel's `hash_start` is this plus where the output starts, in
    /// blocks): [`BLOCK_SIZE`] after a superblock, else 0.
    pub tree_offset: u64,
    /// Hash blocks of the tree (without the superblock's).
    pub hash_blocks: u64,
}

impl VerityTree {
    /// Bytes of the hash output: superblock block, if any, and the tree.
    pub fn hash_len(&self) -> u64 {
        self.tree_offset + self.hash_blocks * BLOCK_SIZE
    }
}

/// Hash blocks of each level, lowest (the data's hashes) first, as the
/// kernel counts them: as many levels as make `data_blocks` fit under one
/// block; none for a single data block (its digest is the root hash).
pub fn level_blocks(data_blocks: u64) -> Vec<u64> {
    let mut levels = Vec::new();
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(HASHES_PER_BLOCK);
        levels.push(n);
    }
    levels
}

/// The 512-byte superblock `veritysetup` reads (little-endian): magic,
/// version 1, hash type 1, UUID, algorithm name, block sizes, data blocks,
/// salt length and salt.
pub fn superblock(uuid: &[u8; 16], data_blocks: u64, salt: &[u8]) -> [u8; SUPERBLOCK_LEN] {
    let mut sb = [0u8; SUPERBLOCK_LEN];
    sb[0..8].copy_from_slice(MAGIC);
    sb[8..12].copy_from_slice(&1u32.to_le_bytes());
    sb[12..16].copy_from_slice(&1u32.to_le_bytes());
    sb[16..32].copy_from_slice(uuid);
    sb[32..38].copy_from_slice(b"sha256");
    sb[64..68].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb[68..72].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb[72..80].copy_from_slice(&data_blocks.to_le_bytes());
    sb[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
    sb[88..88 + salt.len()].copy_from_slice(salt);
    sb
}

/// `SHA-256(salt || block)`.
fn salted(salt: &[u8], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Packs digests into hash blocks and writes each full block to `out`.
struct Packer {
    block: Vec<u8>,
    written: u64,
}

impl Packer {
    fn new() -> Self {
        Self {
            block: Vec::with_capacity(BLOCK_SIZE as usize),
            written: 0,
        }
    }

    fn push(&mut self, digest: &[u8; 32], out: &mut impl Write) -> io::Result<()> {
        self.block.extend_from_slice(digest);
        if self.block.len() == BLOCK_SIZE as usize {
            self.flush(out)?;
        }
        Ok(())
    }

    /// Writes a partly filled block, zero-padded.
    fn finish(mut self, out: &mut impl Write) -> io::Result<u64> {
        if !self.block.is_empty() {
            self.block.resize(BLOCK_SIZE as usize, 0);
            self.flush(out)?;
        }
        Ok(self.written)
    }

    fn flush(&mut self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.block)?;
        self.block.clear();
        self.written += 1;
        Ok(())
    }
}

/// Reads exactly `buf.len()` bytes or reports how far the data went.
fn read_blocks(
    data: &mut impl Read,
    buf: &mut [u8],
    done: u64,
    want: u64,
) -> Result<(), VerityError> {
    let mut filled = 0;
    while filled < buf.len() {
        match data.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(VerityError::ShortData {
                    got: done + filled as u64,
                    want,
                });
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes the digests of `p.data_blocks` blocks of `data` to `out`, packed
/// into hash blocks (level 0 of the tree).
fn hash_data(
    data: &mut impl Read,
    p: &VerityParams,
    out: &mut impl Write,
) -> Result<(), VerityError> {
    const BATCH: usize = 256;
    let total = p.data_blocks * BLOCK_SIZE;
    let mut buf = vec![0u8; BATCH * BLOCK_SIZE as usize];
    let mut done = 0u64;
    let mut packer = Packer::new();
    while done < total {
        let n = ((total - done) as usize).min(buf.len());
        read_blocks(data, &mut buf[..n], done, total)?;
        for block in buf[..n].chunks_exact(BLOCK_SIZE as usize) {
            packer.push(&salted(&p.salt, block), out)?;
        }
        done += n as u64;
    }
    packer.finish(out)?;
    out.flush()?;
    Ok(())
}

/// Computes the hash tree of the first `p.data_blocks` blocks of `data`
/// and writes it to `out` from its current position (the superblock
/// first, when asked for). `out` is read back for the upper levels.
pub fn format<R: Read, W: Read + Write + Seek>(
    mut data: R,
    p: &VerityParams,
    mut out: W,
) -> Result<VerityTree, VerityError> {
    if p.data_blocks == 0 {
        return Err(VerityError::Unsupported("no data blocks to hash".into()));
    }
    if p.salt.len() > MAX_SALT_LEN {
        return Err(VerityError::Unsupported(format!(
            "a salt of {} bytes is longer than the {MAX_SALT_LEN} a verity superblock holds",
            p.salt.len()
        )));
    }
    let base = out.stream_position()?;
    let tree_offset = match &p.superblock {
        Some(uuid) => {
            let mut block = vec![0u8; BLOCK_SIZE as usize];
            block[..SUPERBLOCK_LEN].copy_from_slice(&superblock(uuid, p.data_blocks, &p.salt));
            out.write_all(&block)?;
            BLOCK_SIZE
        }
        None => 0,
    };
    let levels = level_blocks(p.data_blocks);
    // Level i starts after every level above it.
    let start_of =
        |i: usize| -> u64 { base + tree_offset + levels[i + 1..].iter().sum::<u64>() * BLOCK_SIZE };

    // Level 0: the data's digests, streamed; a single block is its own root.
    let mut top = match levels.first() {
        Some(_) => {
            out.seek(SeekFrom::Start(start_of(0)))?;
            hash_data(
                &mut data,
                p,
                &mut io::BufWriter::with_capacity(1 << 20, &mut out),
            )?;
            [0; 32]
        }
        None => {
            let mut block = vec![0u8; BLOCK_SIZE as usize];
            read_blocks(&mut data, &mut block, 0, BLOCK_SIZE)?;
            salted(&p.salt, &block)
        }
    };

    // Each higher level hashes the blocks of the one below.
    for i in 0..levels.len() {
        let mut below = Vec::new();
        out.seek(SeekFrom::Start(start_of(i)))?;
        (&mut out)
            .take(levels[i] * BLOCK_SIZE)
            .read_to_end(&mut below)?;
        if i + 1 == levels.len() {
            top = salted(&p.salt, &below);
            break;
        }
        out.seek(SeekFrom::Start(start_of(i + 1)))?;
        let mut packer = Packer::new();
        for b in below.chunks_exact(BLOCK_SIZE as usize) {
            packer.push(&salted(&p.salt, b), &mut out)?;
        }
        packer.finish(&mut out)?;
    }
    let hash_blocks: u64 = levels.iter().sum();
    out.seek(SeekFrom::Start(
        base + tree_offset + hash_blocks * BLOCK_SIZE,
    ))?;
    out.flush()?;
    Ok(VerityTree {
        root_hash: top,
        data_blocks: p.data_blocks,
        tree_offset,
        hash_blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(blocks: u64) -> Vec<u8> {
        (0..blocks * BLOCK_SIZE)
            .map(|i| (i * 31 + i / 4096) as u8)
            .collect()
    }

    fn tree(blocks: u64, sb: bool) -> (VerityTree, Vec<u8>) {
        let p = VerityParams {
            data_blocks: blocks,
            salt: vec![0, 0x11],
            superblock: sb.then_some([7; 16]),
        };
        let mut out = io::Cursor::new(Vec::new());
        let t = format(&data(blocks)[..], &p, &mut out).unwrap();
        (t, out.into_inner())
    }

    #[test]
    fn levels_follow_the_kernel() {
        assert_eq!(level_blocks(1), Vec::<u64>::new());
        assert_eq!(level_blocks(2), [1]);
        assert_eq!(level_blocks(128), [1]);
        assert_eq!(level_blocks(129), [2, 1]);
        assert_eq!(level_blocks(300), [3, 1]);
        assert_eq!(level_blocks(128 * 128 + 1), [129, 2, 1]);
    }

    #[test]
    fn the_root_is_the_salted_hash_of_the_top_block() {
        let (t, out) = tree(300, false);
        assert_eq!(t.hash_blocks, 4);
        assert_eq!(out.len() as u64, t.hash_len());
        // The top block comes first and holds the digests of level 0's three.
        assert_eq!(t.root_hash, salted(&[0, 0x11], &out[..4096]));
        for k in 0..3 {
            let l0 = &out[4096 * (1 + k)..4096 * (2 + k)];
            assert_eq!(&out[32 * k..32 * (k + 1)], salted(&[0, 0x11], l0));
        }
        assert!(out[96..4096].iter().all(|&b| b == 0), "padding");
        // Level 0's last block holds 300 - 256 = 44 digests, then zeros.
        let d = data(300);
        let last = &out[4096 * 3..];
        assert_eq!(&last[..32], salted(&[0, 0x11], &d[256 * 4096..257 * 4096]));
        assert!(last[44 * 32..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_superblock_comes_first_in_its_own_block() {
        let (plain, tree_only) = tree(300, false);
        let (t, out) = tree(300, true);
        assert_eq!(t.root_hash, plain.root_hash);
        assert_eq!(t.tree_offset, 4096);
        assert_eq!(&out[..8], b"verity\0\0");
        assert_eq!(&out[72..80], &300u64.to_le_bytes());
        assert_eq!(&out[80..82], &2u16.to_le_bytes());
        assert_eq!(&out[88..90], &[0, 0x11]);
        assert!(out[512..4096].iter().all(|&b| b == 0));
        assert_eq!(&out[4096..], &tree_only[..]);
    }

    #[test]
    fn one_block_is_its_own_root_and_short_data_is_named() {
        let (t, out) = tree(1, false);
        assert_eq!((t.hash_blocks, out.len()), (0, 0));
        assert_eq!(t.root_hash, salted(&[0, 0x11], &data(1)));
        let p = VerityParams {
            data_blocks: 3,
            salt: Vec::new(),
            superblock: None,
        };
        let e = format(&data(2)[..], &p, io::Cursor::new(Vec::new())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the data ends after 8192 bytes; 12288 were expected"
        );
        let p = VerityParams {
            salt: vec![0; 257],
            ..p
        };
        assert!(format(&data(3)[..], &p, io::Cursor::new(Vec::new())).is_err());
    }
}
