//! The streaming write, in three ascending passes:
//!
//! 1. file contents, read from their sources in inode order (and hashed
//!    when the UUID is to be derived from them);
//! 2. attribute blocks, directories, long symlinks, extent tree blocks and
//!    the journal superblock;
//! 3. the superblock, group descriptors, bitmaps, inode tables and the
//!    backup superblocks.
//!
//! Everything checksummed depends on the UUID, which is why file data,
//! the only part that does not, goes first.

use super::block_writer::BlockWriter;
use super::dir::{DirLayout, write_empty};
use super::extent::{self, Placement};
use super::geometry::{BLOCK_SIZE, Geometry, INODE_SIZE, INODES_PER_BLOCK, has_super};
use super::inode::{EXTRA_ISIZE, FLAG_EXTENTS, FLAG_INDEX, InodeFields, device_block};
use super::plan::{
    FAST_SYMLINK_MAX, InodeSource, JOURNAL_INO, LOST_FOUND_BLOCKS, Layout, ROOT_INO,
};
use super::superblock::{self, GroupDesc, Superblock, bg_flags};
use super::{Ext4Error, Ext4Plan, Ext4Summary, checksum, dirhash, journal, xattr};
use crate::progress::Progress;
use crate::reproducible::derived_uuid;
use crate::tree::{DataSource, NodeKind, Timestamp};
use crate::units::Bytes;
use sha2::{Digest, Sha256};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const BS: usize = BLOCK_SIZE as usize;
/// Blocks read from a source file per request.
const READ_CHUNK_BLOCKS: u64 = 256;

fn werr(e: io::Error) -> Ext4Error {
    Ext4Error::Write(e)
}

/// Where one file's bytes come from during the write.
pub(crate) enum Source<'a> {
    File(std::fs::File, &'a Path),
    Bytes(&'a [u8]),
}

impl<'a> Source<'a> {
    pub(crate) fn open(src: &'a DataSource) -> Result<Self, Ext4Error> {
        match src {
            DataSource::Host(path) => std::fs::File::open(path)
                .map(|f| Source::File(f, path))
                .map_err(|source| Ext4Error::Read {
                    path: path.clone(),
                    source,
                }),
            DataSource::Bytes(b) => Ok(Source::Bytes(b)),
        }
    }

    /// Fills `buf` from byte `offset`, or says the source is shorter than planned.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ReadFail> {
        match self {
            Source::File(f, _) => f.read_exact_at(buf, offset).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    ReadFail::Short
                } else {
                    ReadFail::Io(e)
                }
            }),
            Source::Bytes(b) => {
                let start = usize::try_from(offset).map_err(|_| ReadFail::Short)?;
                let src = b.get(start..start + buf.len()).ok_or(ReadFail::Short)?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

pub(crate) enum ReadFail {
    Short,
    Io(io::Error),
}

/// Writes `plan` into `out` (a zero-filled region of at least `plan.size()` bytes).
pub(crate) fn write<W: Write + Seek>(
    plan: &Ext4Plan<'_>,
    mut out: W,
    progress: &Progress,
) -> Result<Ext4Summary, Ext4Error> {
    let have = out.seek(SeekFrom::End(0)).map_err(werr)?;
    if have < plan.size {
        return Err(Ext4Error::RegionTooSmall {
            have,
            need: plan.size,
        });
    }
    let mut w = BlockWriter::new(out);
    let digest = write_file_data(plan, &mut w, progress)?;
    let uuid = match (plan.opts.uuid, digest) {
        (Some(u), _) => u,
        (None, Some(d)) => derived_uuid(&[&d]),
        (None, None) => unreachable!("a digest is made when no UUID is given"),
    };
    let fs_seed = checksum::fs_seed(&uuid);
    write_metadata_blocks(plan, &mut w, &uuid, fs_seed)?;
    let (free_blocks, free_inodes) = write_group_metadata(plan, &mut w, &uuid, fs_seed)?;
    let written = w.finish().map_err(werr)?;
    let geo = &plan.layout.geo;
    Ok(Ext4Summary {
        size: Bytes(plan.size),
        uuid,
        blocks: geo.blocks_count,
        free_blocks,
        inodes: geo.inodes_count(),
        free_inodes,
        journal_blocks: plan.layout.journal_blocks,
        bytes_written: written,
    })
}

fn put<W: Write + Seek>(w: &mut BlockWriter<W>, block: u64, data: &[u8]) -> Result<(), Ext4Error> {
    w.put(block, data).map_err(werr)
}

/// Pass 1: copies file contents from their sources, in inode order. Returns
/// the digest for a derived UUID when none was given.
fn write_file_data<W: Write + Seek>(
    plan: &Ext4Plan<'_>,
    w: &mut BlockWriter<W>,
    progress: &Progress,
) -> Result<Option<[u8; 32]>, Ext4Error> {
    let d = &plan.demand;
    let l = &plan.layout;
    // The derived UUID covers the label, the tree's metadata digest and a
    // CRC32C of every chunk of file data: enough to tell builds apart at a
    // fraction of the cost of a cryptographic hash over all contents.
    let mut digest = plan.opts.uuid.is_none().then(|| {
        let mut h = Sha256::new();
        h.update(b"slate ext4 uuid");
        h.update((plan.opts.label.len() as u64).to_le_bytes());
        h.update(plan.opts.label.as_bytes());
        h.update(d.metadata_digest);
        h
    });
    for (ino, f) in d.files() {
        let p = &l.placements[ino as usize - 1];
        if p.extents().is_empty() {
            continue;
        }
        let src = Source::open(&f.source)?;
        for e in p.extents() {
            let mut done = 0u64;
            while done < u64::from(e.len) {
                let n = (u64::from(e.len) - done).min(READ_CHUNK_BLOCKS);
                let offset = (u64::from(e.logical) + done) * BLOCK_SIZE;
                let want = (f.size - offset).min(n * BLOCK_SIZE) as usize;
                let buf = w.slot(e.physical + done, n as usize).map_err(werr)?;
                src.read_at(&mut buf[..want], offset).map_err(|fail| {
                    let path = match (&src, d.source(ino)) {
                        (Source::File(_, p), _) => p.to_path_buf(),
                        (Source::Bytes(_), InodeSource::Node(id)) => d.tree.display_path(id).into(),
                        (Source::Bytes(_), _) => unreachable!("files are tree nodes"),
                    };
                    match fail {
                        ReadFail::Short => Ext4Error::SourceChanged { path },
                        ReadFail::Io(source) => Ext4Error::Read { path, source },
                    }
                })?;
                if let Some(h) = &mut digest {
                    h.update(ino.to_le_bytes());
                    h.update(offset.to_le_bytes());
                    h.update(crc32c::crc32c(&buf[..want]).to_le_bytes());
                }
                progress.inc(want as u64);
                done += n;
            }
        }
    }
    Ok(digest.map(|h| h.finalize().into()))
}

/// Pass 2: attribute blocks, directories, long symlinks, every extent tree
/// block and the journal superblock, in allocation order.
fn write_metadata_blocks<W: Write + Seek>(
    plan: &Ext4Plan<'_>,
    w: &mut BlockWriter<W>,
    uuid: &[u8; 16],
    fs_seed: u32,
) -> Result<(), Ext4Error> {
    let d = &plan.demand;
    let l = &plan.layout;
    let hash_seed = dirhash::seed_words(&d.hash_seed);
    for ino in std::iter::once(ROOT_INO).chain(super::plan::LOST_FOUND_INO..=d.max_ino()) {
        let i = ino as usize - 1;
        let p = &l.placements[i];
        let seed = checksum::inode_seed(fs_seed, ino, 0);
        let xref = d.xattr_ref[i];
        if xref != 0 && d.xattr_blocks[xref as usize - 1].owner == ino {
            let info = d.xattr_blocks[xref as usize - 1];
            let nr = l.xattr_block_nr[xref as usize - 1];
            let InodeSource::Node(id) = d.source(ino) else {
                unreachable!("only tree nodes have attributes")
            };
            let mut block = xattr::layout(&d.tree.node(id).meta.xattrs)
                .ok()
                .and_then(|x| x.block)
                .unwrap_or_else(|| unreachable!("validated while planning"));
            let rc = xattr::BLOCK_REFCOUNT_OFFSET;
            block[rc..rc + 4].copy_from_slice(&info.refcount.to_le_bytes());
            let csum = checksum::xattr_block(fs_seed, nr, &block);
            let co = xattr::BLOCK_CSUM_OFFSET;
            block[co..co + 4].copy_from_slice(&csum.to_le_bytes());
            put(w, nr, &block)?;
        }
        let mut logical = 0u32;
        let mut emit = |b: &[u8]| {
            let n = p
                .physical(logical)
                .unwrap_or_else(|| unreachable!("planned"));
            logical += 1;
            put(w, n, b)
        };
        let is_file = match d.source(ino) {
            InodeSource::Node(id) => matches!(d.tree.node(id).kind, NodeKind::File(_)),
            _ => false,
        };
        match d.source(ino) {
            InodeSource::LostFound => {
                write_empty(LOST_FOUND_BLOCKS, ino, d.parent[i], seed, &mut emit)?;
            }
            InodeSource::Node(id) => match &d.tree.node(id).kind {
                NodeKind::Directory(_) => {
                    let entries = d.dir_entries(ino);
                    let layout = DirLayout::new(&entries, &hash_seed)
                        .unwrap_or_else(|_| unreachable!("validated while planning"));
                    layout.write(&entries, ino, d.parent[i], seed, &mut emit)?;
                }
                NodeKind::Symlink(t) if t.len() > FAST_SYMLINK_MAX => {
                    let mut b = vec![0u8; BS];
                    b[..t.len()].copy_from_slice(t);
                    emit(&b)?;
                }
                _ => {}
            },
            _ => {}
        }
        // Files' tree blocks follow their data; they come next.
        if !is_file {
            extent::tree_blocks(p, seed, |n, b| put(w, n, b))?;
        }
    }
    for (ino, _) in d.files() {
        let p = &l.placements[ino as usize - 1];
        let seed = checksum::inode_seed(fs_seed, ino, 0);
        extent::tree_blocks(p, seed, |n, b| put(w, n, b))?;
    }
    if l.journal_blocks > 0 {
        let p = &l.placements[JOURNAL_INO as usize - 1];
        let first = p.physical(0).unwrap_or_default();
        put(
            w,
            first,
            &journal::superblock(l.journal_blocks as u32, uuid),
        )?;
        let seed = checksum::inode_seed(fs_seed, JOURNAL_INO, 0);
        extent::tree_blocks(p, seed, |n, b| put(w, n, b))?;
    }
    Ok(())
}

/// Pass 3: superblock, descriptors, bitmaps, inode tables and backup
/// superblocks. Returns the free block and inode counts.
fn write_group_metadata<W: Write + Seek>(
    plan: &Ext4Plan<'_>,
    w: &mut BlockWriter<W>,
    uuid: &[u8; 16],
    fs_seed: u32,
) -> Result<(u64, u64), Ext4Error> {
    let d = &plan.demand;
    let l = &plan.layout;
    let geo = &l.geo;
    let groups = geo.group_count();
    let ipg = geo.inodes_per_group;
    let max_ino = d.max_ino();
    let in_use = |ino: u32| ino <= max_ino && d.source(ino) != InodeSource::Free;
    // Inodes in use in group g, and one past the last one in use there.
    let used_inodes = |g: u32| -> (u32, u32) {
        let first = g * ipg + 1;
        let last = max_ino.min(first + ipg - 1);
        if last < first {
            return (0, 0);
        }
        let n = (first..=last).filter(|&i| in_use(i)).count() as u32;
        let hw = (first..=last)
            .rev()
            .find(|&i| in_use(i))
            .map_or(0, |i| i - first + 1);
        (n, hw)
    };
    let mut dirs = vec![0u32; groups as usize];
    for ino in 1..=max_ino {
        if is_dir(plan, ino) {
            dirs[((ino - 1) / ipg) as usize] += 1;
        }
    }
    let mut bitmap = vec![0u8; BS];
    let mut descs = Vec::with_capacity(groups as usize);
    let (mut free_blocks, mut free_inodes) = (0u64, 0u64);
    for g in 0..groups {
        let used = block_bitmap(geo, l, g, &mut bitmap);
        let group_len = geo.group_range(g).end - geo.group_range(g).start;
        let block_bitmap_csum =
            checksum::bitmap(fs_seed, &bitmap[..(geo.blocks_per_group / 8) as usize]);
        let (iused, ihigh) = used_inodes(g);
        inode_bitmap(g * ipg, ihigh, ipg, &in_use, &mut bitmap);
        let inode_bitmap_csum = checksum::bitmap(fs_seed, &bitmap[..(ipg / 8) as usize]);
        let mut flags = bg_flags::ITABLE_ZEROED;
        if ihigh == 0 {
            flags |= bg_flags::INODE_UNINIT;
        }
        let gl = geo.groups[g as usize];
        descs.push(GroupDesc {
            block_bitmap: gl.block_bitmap,
            inode_bitmap: gl.inode_bitmap,
            inode_table: gl.inode_table,
            free_blocks: (group_len - used) as u32,
            free_inodes: ipg - iused,
            used_dirs: dirs[g as usize],
            flags,
            itable_unused: ipg - ihigh,
            block_bitmap_csum,
            inode_bitmap_csum,
        });
        free_blocks += group_len - used;
        free_inodes += u64::from(ipg - iused);
    }
    let mut gdt = vec![0u8; (geo.gdt_blocks * BLOCK_SIZE) as usize];
    for (g, desc) in descs.iter().enumerate() {
        desc.encode(fs_seed, g as u32, &mut gdt[g * 64..g * 64 + 64]);
    }
    let journal_inode = (l.journal_blocks > 0).then(|| {
        let p = &l.placements[JOURNAL_INO as usize - 1];
        (extent::inode_root(p), l.journal_blocks * BLOCK_SIZE)
    });
    let mut label = [0u8; 16];
    label[..plan.opts.label.len()].copy_from_slice(plan.opts.label.as_bytes());
    let sb = Superblock {
        inodes_count: geo.inodes_count() as u32,
        blocks_count: geo.blocks_count,
        r_blocks_count: geo.blocks_count * u64::from(plan.opts.reserved_percent) / 100,
        free_blocks,
        free_inodes: free_inodes as u32,
        blocks_per_group: geo.blocks_per_group as u32,
        inodes_per_group: ipg,
        time: plan.timestamp(),
        uuid: *uuid,
        label,
        hash_seed: d.hash_seed,
        journal: journal_inode,
    };

    let mut block = vec![0u8; BS];
    let off = superblock::OFFSET as usize;
    block[off..off + superblock::LEN].copy_from_slice(&sb.encode(0));
    put(w, 0, &block)?;
    put(w, 1, &gdt)?;
    for g in 0..groups {
        block_bitmap(geo, l, g, &mut bitmap);
        put(w, geo.groups[g as usize].block_bitmap, &bitmap)?;
    }
    for g in 0..groups {
        let (_, ihigh) = used_inodes(g);
        if ihigh > 0 {
            inode_bitmap(g * ipg, ihigh, ipg, &in_use, &mut bitmap);
            put(w, geo.groups[g as usize].inode_bitmap, &bitmap)?;
        }
    }
    for g in 0..groups {
        let (_, ihigh) = used_inodes(g);
        let table = geo.groups[g as usize].inode_table;
        for k in 0..ihigh.div_ceil(INODES_PER_BLOCK) {
            let slot = w.slot(table + u64::from(k), 1).map_err(werr)?;
            for j in 0..INODES_PER_BLOCK {
                let ino = g * ipg + k * INODES_PER_BLOCK + j + 1;
                if ino > max_ino {
                    break;
                }
                if !in_use(ino) {
                    continue;
                }
                let at = (j as u64 * INODE_SIZE) as usize;
                inode_fields(plan, ino).encode(
                    fs_seed,
                    ino,
                    &mut slot[at..at + INODE_SIZE as usize],
                );
            }
        }
    }
    for g in 1..groups {
        if has_super(u64::from(g)) {
            let start = geo.group_range(g).start;
            block.fill(0);
            block[..superblock::LEN].copy_from_slice(&sb.encode(g));
            put(w, start, &block)?;
            put(w, start + 1, &gdt)?;
        }
    }
    Ok((free_blocks, free_inodes))
}

fn is_dir(plan: &Ext4Plan<'_>, ino: u32) -> bool {
    match plan.demand.source(ino) {
        InodeSource::LostFound => true,
        InodeSource::Node(id) => matches!(plan.demand.tree.node(id).kind, NodeKind::Directory(_)),
        _ => false,
    }
}

/// Sets bits `[from, to)`.
fn set_bits(bits: &mut [u8], from: u64, to: u64) {
    let (mut from, to) = (from as usize, (to as usize).min(bits.len() * 8));
    while from < to && from % 8 != 0 {
        bits[from / 8] |= 1 << (from % 8);
        from += 1;
    }
    let whole = (to - from.min(to)) / 8;
    if from < to {
        bits[from / 8..from / 8 + whole].fill(0xFF);
        from += whole * 8;
    }
    while from < to {
        bits[from / 8] |= 1 << (from % 8);
        from += 1;
    }
}

/// Group `g`'s block bitmap: reserved metadata plus every block below the
/// allocation end, with the bits past the group's end set. Returns the
/// number of blocks in use within the group.
fn block_bitmap(geo: &Geometry, l: &Layout, g: u32, bits: &mut [u8]) -> u64 {
    bits.fill(0);
    let r = geo.group_range(g);
    match &l.used {
        None => set_bits(bits, 0, l.alloc_end.min(r.end).saturating_sub(r.start)),
        Some(used) => {
            for b in r.clone() {
                if used[(b / 64) as usize] & (1 << (b % 64)) != 0 {
                    let k = (b - r.start) as usize;
                    bits[k / 8] |= 1 << (k % 8);
                }
            }
        }
    }
    let first = geo.reserved.partition_point(|x| x.end <= r.start);
    for x in geo.reserved[first..].iter().take_while(|x| x.start < r.end) {
        set_bits(
            bits,
            x.start.max(r.start) - r.start,
            x.end.min(r.end) - r.start,
        );
    }
    let used = bits.iter().map(|b| u64::from(b.count_ones())).sum();
    set_bits(bits, r.end - r.start, BLOCK_SIZE * 8);
    used
}

/// The inode bitmap of the group whose first inode is `base + 1`: the
/// inodes below `high` for which `in_use` holds, and the padding past `ipg`.
fn inode_bitmap(base: u32, high: u32, ipg: u32, in_use: &impl Fn(u32) -> bool, bits: &mut [u8]) {
    bits.fill(0);
    for k in 0..high {
        if in_use(base + k + 1) {
            bits[(k / 8) as usize] |= 1 << (k % 8);
        }
    }
    set_bits(bits, u64::from(ipg), BLOCK_SIZE * 8);
}

/// The fields of inode `ino`.
fn inode_fields(plan: &Ext4Plan<'_>, ino: u32) -> InodeFields {
    let d = &plan.demand;
    let l = &plan.layout;
    let i = ino as usize - 1;
    let p = &l.placements[i];
    let sb_time = Timestamp::from_secs(plan.timestamp());
    let mut f = InodeFields {
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        time: Timestamp::default(),
        links: 0,
        sectors: 0,
        flags: 0,
        i_block: [0; 60],
        file_acl: 0,
        xattrs: None,
        extra_isize: 0,
    };
    match d.source(ino) {
        InodeSource::Reserved => {
            // mke2fs stamps the bad-blocks inode with the creation time.
            if ino == 1 {
                f.time = sb_time;
            }
        }
        InodeSource::Free => {}
        InodeSource::Journal => {
            f.mode = 0o100600;
            f.size = l.journal_blocks * BLOCK_SIZE;
            f.links = 1;
            f.time = sb_time;
            extent_fields(&mut f, p);
        }
        InodeSource::LostFound => {
            f.mode = 0o040700;
            f.size = LOST_FOUND_BLOCKS * BLOCK_SIZE;
            f.links = d.links[i];
            f.time = sb_time;
            extent_fields(&mut f, p);
        }
        InodeSource::Node(id) => {
            let node = d.tree.node(id);
            let m = &node.meta;
            f.mode = node.st_mode() as u16;
            f.uid = m.uid;
            f.gid = m.gid;
            f.time = m.mtime;
            f.links = d.links[i];
            f.extra_isize = EXTRA_ISIZE;
            match &node.kind {
                NodeKind::Directory(_) => {
                    f.size = u64::from(d.dir_blocks[i]) * BLOCK_SIZE;
                    extent_fields(&mut f, p);
                    if d.dir_blocks[i] > 1 {
                        f.flags |= FLAG_INDEX;
                    }
                }
                NodeKind::File(data) => {
                    f.size = data.size;
                    extent_fields(&mut f, p);
                }
                NodeKind::Symlink(t) => {
                    f.size = t.len() as u64;
                    if t.len() > FAST_SYMLINK_MAX {
                        extent_fields(&mut f, p);
                    } else {
                        f.i_block[..t.len()].copy_from_slice(t);
                    }
                }
                NodeKind::CharDevice(dev) | NodeKind::BlockDevice(dev) => {
                    f.i_block = device_block(*dev);
                }
                NodeKind::Fifo | NodeKind::Socket => {}
            }
            if let Ok(x) = xattr::layout(&m.xattrs) {
                f.xattrs = x.in_inode;
            }
            let xref = d.xattr_ref[i];
            if xref != 0 {
                f.file_acl = l.xattr_block_nr[xref as usize - 1];
                f.sectors += BLOCK_SIZE / 512;
            }
        }
    }
    if ino == ROOT_INO || !matches!(d.source(ino), InodeSource::Reserved) {
        f.extra_isize = EXTRA_ISIZE;
    }
    f
}

fn extent_fields(f: &mut InodeFields, p: &Placement) {
    f.flags |= FLAG_EXTENTS;
    f.i_block = extent::inode_root(p);
    f.sectors += p.total_blocks() * (BLOCK_SIZE / 512);
}
