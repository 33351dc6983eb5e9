//! Block maps (`disk.img.bmap`, bmaptool's format 2.0): which 4 KiB blocks
//! of a disk image must be written when flashing it, with a SHA-256 per
//! range, so `bmaptool copy disk.img /dev/sdX` writes only those.
//!
//! A block is mapped unless its content cannot matter: blocks an ext4
//! filesystem's block bitmaps call free, and the tail of a partition past
//! its filesystem (for a root slot: past the dm-verity tree that follows it). Everything else is mapped, including all-zero blocks
//! that are holes in disk.img: slate's writers leave zero blocks unwritten
//! (inode tables, zero runs inside files), and on a used device those must
//! still read as zero. Partitions that are not ext4 (the ESP) and the GPT
//! areas are mapped whole.

use crate::filesystems::gpt;
use crate::io::hash;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Partition types whose filesystem is followed by a hash tree (docs/verity.md).
const ROOT_TYPES: [gpt::Guid; 2] = [gpt::types::ROOT_X86_64, gpt::types::ROOT_ARM64];

/// The bmap block size.
pub const BLOCK: u64 = 4096;

fn u16_at(b: &[u8], o: usize) -> u64 {
    u16::from_le_bytes([b[o], b[o + 1]]) as u64
}

fn u32_at(b: &[u8], o: usize) -> u64 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as u64
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Marks the bytes `[start, end)` of the image as needed.
fn mark(map: &mut [bool], start: u64, end: u64) {
    if end <= start {
        return;
    }
    let n = map.len();
    let first = ((start / BLOCK) as usize).min(n);
    let last = (end.div_ceil(BLOCK) as usize).min(n);
    for m in &mut map[first..last] {
        *m = true;
    }
}

/// Marks the blocks an ext4 filesystem at `offset` uses; its size in
/// bytes, or `None` if there is no ext4 superblock there.
fn mark_ext4(file: &File, offset: u64, part_len: u64, map: &mut [bool]) -> io::Result<Option<u64>> {
    let mut sb = vec![0u8; 1024];
    file.read_exact_at(&mut sb, offset + 1024)?;
    if u16_at(&sb, 0x38) != 0xEF53 {
        return Ok(None);
    }
    let log = u32_at(&sb, 0x18);
    if log > 6 {
        return Err(invalid(format!(
            "ext4 at {offset}: block size 2^{}",
            10 + log
        )));
    }
    let bs = 1024u64 << log;
    let is64 = u32_at(&sb, 0x60) & 0x80 != 0;
    let blocks = u32_at(&sb, 0x4) | if is64 { u32_at(&sb, 0x150) << 32 } else { 0 };
    let first_data = u32_at(&sb, 0x14);
    let per_group = u32_at(&sb, 0x20);
    let desc_size = if is64 { u16_at(&sb, 0xFE).max(32) } else { 32 };
    if per_group == 0 || blocks.saturating_mul(bs) > part_len {
        return Err(invalid(format!("ext4 at {offset}: implausible superblock")));
    }
    let groups = (blocks - first_data).div_ceil(per_group);
    let mut gdt = vec![0u8; (groups * desc_size) as usize];
    file.read_exact_at(&mut gdt, offset + (first_data + 1) * bs)?;
    let mut bitmap = vec![0u8; bs as usize];
    for g in 0..groups {
        let d = &gdt[(g * desc_size) as usize..((g + 1) * desc_size) as usize];
        let first = first_data + g * per_group;
        let count = per_group.min(blocks - first);
        const BLOCK_UNINIT: u64 = 0x2;
        if u16_at(d, 0x12) & BLOCK_UNINIT != 0 {
            // No bitmap to read: keep the whole group.
            mark(map, offset + first * bs, offset + (first + count) * bs);
            continue;
        }
        let at = u32_at(d, 0)
            | if is64 && desc_size >= 64 {
                u32_at(d, 0x20) << 32
            } else {
                0
            };
        file.read_exact_at(&mut bitmap, offset + at * bs)?;
        for i in 0..count {
            if bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0 {
                let b = first + i;
                mark(map, offset + b * bs, offset + (b + 1) * bs);
            }
        }
    }
    // Block 0 (boot block / superblock padding) when blocks are 1 KiB.
    mark(map, offset, offset + 2048);
    Ok(Some(blocks * bs))
}

/// The mapped blocks of `disk` (one flag per [`BLOCK`]).
pub fn mapped_blocks(disk: &Path) -> io::Result<Vec<bool>> {
    let mut file = File::open(disk)?;
    let size = file.metadata()?.len();
    let mut map = vec![false; size.div_ceil(BLOCK) as usize];
    let table = gpt::read_table(&mut file).map_err(|e| invalid(e.to_string()))?;
    let ss = table.sector_size;
    let mut parts = table.partitions.clone();
    parts.sort_by_key(|p| p.first_lba);
    // Outside the partitions: the GPT and the gaps between them.
    let mut pos = 0;
    for p in &parts {
        mark(&mut map, pos, p.offset(ss));
        pos = p.offset(ss) + p.size(ss);
    }
    mark(&mut map, pos, size);
    for p in &parts {
        let (off, len) = (p.offset(ss), p.size(ss));
        match mark_ext4(&file, off, len, &mut map)? {
            None => mark(&mut map, off, off + len),
            // A root slot's dm-verity tree follows its filesystem.
            Some(fs) if ROOT_TYPES.contains(&p.type_guid) && fs % BLOCK == 0 => {
                let tree = crate::verity::tree_len(fs / BLOCK);
                mark(&mut map, off + fs, off + (fs + tree).min(len));
            }
            Some(_) => {}
        }
    }
    Ok(map)
}

/// Writes the bmap of `disk` to `out` (atomically).
pub fn write_bmap(disk: &Path, out: &Path) -> io::Result<()> {
    let map = mapped_blocks(disk)?;
    let file = File::open(disk)?;
    let size = file.metadata()?.len();
    let mut ranges = String::new();
    let mut mapped = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut i = 0usize;
    while i < map.len() {
        if !map[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < map.len() && map[i] {
            i += 1;
        }
        let (first, last) = (start as u64, i as u64 - 1);
        mapped += last - first + 1;
        let mut hasher = hash::HashingWriter::new(io::sink());
        let mut pos = first * BLOCK;
        let end = ((last + 1) * BLOCK).min(size);
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], pos)?;
            io::Write::write_all(&mut hasher, &buf[..n])?;
            pos += n as u64;
        }
        let (digest, _, _) = hasher.finish();
        let text = if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        };
        ranges.push_str(&format!(
            "        <Range chksum=\"{}\"> {text} </Range>\n",
            hash::hex(&digest)
        ));
    }
    let zeros = "0".repeat(64);
    let doc = |checksum: &str| {
        format!(
            "<?xml version=\"1.0\" ?>\n\
             <!-- Block map of disk.img for bmaptool (written by slate). -->\n\
             <bmap version=\"2.0\">\n\
             \x20   <ImageSize> {size} </ImageSize>\n\
             \x20   <BlockSize> {BLOCK} </BlockSize>\n\
             \x20   <BlocksCount> {} </BlocksCount>\n\
             \x20   <MappedBlocksCount> {mapped} </MappedBlocksCount>\n\
             \x20   <ChecksumType> sha256 </ChecksumType>\n\
             \x20   <BmapFileChecksum> {checksum} </BmapFileChecksum>\n\
             \x20   <BlockMap>\n{ranges}    </BlockMap>\n\
             </bmap>\n",
            map.len()
        )
    };
    let draft = doc(&zeros);
    let (digest, _) = hash::sha256_reader(draft.as_bytes())?;
    crate::io::write_atomic(out, doc(&hash::hex(&digest)).as_bytes())
}
