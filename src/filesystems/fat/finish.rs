//! The pass over a volume `fatfs` has just written that makes it conform and
//! depend only on the tree.
//!
//! It walks the directories `fatfs` created (following cluster chains in the
//! FAT) and, in each:
//! - rewrites the `.` and `..` entries as the first two slots (fatfs 0.3.6
//!   writes a long-name slot before each, which fsck.fat and the FAT
//!   specification reject), with `..` pointing at cluster 0 when the parent
//!   is the root, as the specification requires on FAT32 too;
//! - gives entries whose names start with a dot (`.hidden`) a valid short
//!   name (fatfs leaves its base empty, which fsck.fat rejects), updating the
//!   checksum in their long-name slots;
//! - stamps every entry's creation, access and modification fields with the
//!   mtime of its tree node.
//!
//! It then writes the volume id into the boot sector (and its FAT32 backup)
//! and the free-cluster count into the FAT32 FSInfo sector.

use super::{DosTime, FatError, FatKind, Geometry, geometry::SECTOR};
use crate::tree::{NodeId, Tree};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};

const SLOT: usize = 32;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_LFN: u8 = 0x0F;
const DELETED: u8 = 0xE5;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";
/// A FAT directory is at most 65536 slots (2 MiB).
const MAX_DIR_BYTES: u64 = 65_536 * SLOT as u64;

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> FatError {
    move |source| FatError::Io {
        context: format!("{what} the FAT image"),
        source,
    }
}

fn internal(msg: impl Into<String>) -> FatError {
    FatError::Internal(msg.into())
}

/// Where a directory's slots live: byte ranges of the volume.
type Extents = Vec<(u64, u64)>;

/// Runs the pass; returns the number of free clusters.
pub fn finish<S: Read + Write + Seek>(
    s: &mut S,
    geo: &Geometry,
    tree: &Tree,
    volume_id: u32,
    stamp: &dyn Fn(NodeId) -> DosTime,
) -> Result<u64, FatError> {
    let mut boot = [0u8; 512];
    read_at(s, 0, &mut boot)?;
    let bpb = Bpb::parse(&boot);
    bpb.check(geo)?;

    let root_extents = match geo.kind {
        FatKind::Fat32 => chain_extents(s, geo, bpb.root_cluster)?,
        _ => vec![(geo.root_dir_offset(), geo.root_dir_sectors * SECTOR)],
    };
    // (directory, its extents, its first cluster, its parent's first cluster)
    let mut pending = vec![(NodeId::ROOT, root_extents, 0u32, 0u32)];
    while let Some((dir, extents, cluster, parent_cluster)) = pending.pop() {
        let len: u64 = extents.iter().map(|e| e.1).sum();
        if len > MAX_DIR_BYTES {
            return Err(internal("a directory is larger than FAT allows"));
        }
        let mut buf = vec![0u8; len as usize];
        let mut at = 0usize;
        for &(off, n) in &extents {
            read_at(s, off, &mut buf[at..at + n as usize])?;
            at += n as usize;
        }
        let subdirs = fix_directory(&mut buf, tree, dir, cluster, parent_cluster, stamp)?;
        let mut at = 0usize;
        for &(off, n) in &extents {
            write_at(s, off, &buf[at..at + n as usize])?;
            at += n as usize;
        }
        for (child, child_cluster) in subdirs {
            let ext = chain_extents(s, geo, child_cluster)?;
            pending.push((child, ext, child_cluster, cluster));
        }
    }

    let id_at = if geo.kind == FatKind::Fat32 {
        0x43
    } else {
        0x27
    };
    write_at(s, id_at, &volume_id.to_le_bytes())?;
    let (free, first_free) = count_free(s, geo)?;
    if geo.kind == FatKind::Fat32 {
        write_at(
            s,
            u64::from(bpb.backup_boot_sector) * SECTOR + id_at,
            &volume_id.to_le_bytes(),
        )?;
        let fsinfo = u64::from(bpb.fs_info_sector) * SECTOR;
        let mut sig = [0u8; 4];
        read_at(s, fsinfo, &mut sig)?;
        if u32::from_le_bytes(sig) != 0x4161_5252 {
            return Err(internal("FSInfo sector has no signature"));
        }
        let next = first_free.unwrap_or(0xFFFF_FFFF);
        write_at(s, fsinfo + 488, &(free as u32).to_le_bytes())?;
        write_at(s, fsinfo + 492, &next.to_le_bytes())?;
    }
    Ok(free)
}

/// The boot-sector fields the pass relies on.
#[derive(Debug)]
struct Bpb {
    bytes_per_sector: u16,
    sectors_per_cluster: u8,
    reserved: u16,
    fats: u8,
    root_entries: u16,
    total_sectors: u32,
    sectors_per_fat: u32,
    root_cluster: u32,
    fs_info_sector: u16,
    backup_boot_sector: u16,
}

impl Bpb {
    fn parse(b: &[u8; 512]) -> Bpb {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let total16 = u16_at(19);
        let spf16 = u16_at(22);
        Bpb {
            bytes_per_sector: u16_at(11),
            sectors_per_cluster: b[13],
            reserved: u16_at(14),
            fats: b[16],
            root_entries: u16_at(17),
            total_sectors: if total16 != 0 {
                total16.into()
            } else {
                u32_at(32)
            },
            sectors_per_fat: if spf16 != 0 { spf16.into() } else { u32_at(36) },
            root_cluster: u32_at(44),
            fs_info_sector: u16_at(48),
            backup_boot_sector: u16_at(50),
        }
    }

    /// fatfs must have laid out exactly what [`Geometry`] computed, or the
    /// offsets this pass uses would be wrong.
    fn check(&self, geo: &Geometry) -> Result<(), FatError> {
        let same = u64::from(self.bytes_per_sector) == SECTOR
            && u64::from(self.sectors_per_cluster) == geo.sectors_per_cluster
            && u64::from(self.reserved) == geo.reserved_sectors
            && self.fats == 2
            && u64::from(self.root_entries) * SLOT as u64 == geo.root_dir_sectors * SECTOR
            && u64::from(self.total_sectors) == geo.total_sectors
            && u64::from(self.sectors_per_fat) == geo.sectors_per_fat;
        if !same {
            return Err(internal(format!(
                "fatfs laid the volume out differently than computed: {self:?} vs {geo:?}"
            )));
        }
        Ok(())
    }
}

fn read_at<S: Read + Seek>(s: &mut S, off: u64, buf: &mut [u8]) -> Result<(), FatError> {
    s.seek(SeekFrom::Start(off)).map_err(io_err("seeking in"))?;
    s.read_exact(buf).map_err(io_err("reading back"))
}

fn write_at<S: Write + Seek>(s: &mut S, off: u64, buf: &[u8]) -> Result<(), FatError> {
    s.seek(SeekFrom::Start(off)).map_err(io_err("seeking in"))?;
    s.write_all(buf).map_err(io_err("writing"))
}

/// The FAT entry of cluster `n` (first FAT).
fn fat_entry<S: Read + Seek>(s: &mut S, geo: &Geometry, n: u32) -> Result<u32, FatError> {
    let n64 = u64::from(n);
    Ok(match geo.kind {
        FatKind::Fat12 => {
            let mut b = [0u8; 2];
            read_at(s, geo.fat_offset() + n64 + n64 / 2, &mut b)?;
            let v = u16::from_le_bytes(b);
            u32::from(if n % 2 == 1 { v >> 4 } else { v & 0xFFF })
        }
        FatKind::Fat16 => {
            let mut b = [0u8; 2];
            read_at(s, geo.fat_offset() + 2 * n64, &mut b)?;
            u16::from_le_bytes(b).into()
        }
        FatKind::Fat32 => {
            let mut b = [0u8; 4];
            read_at(s, geo.fat_offset() + 4 * n64, &mut b)?;
            u32::from_le_bytes(b) & 0x0FFF_FFFF
        }
    })
}

/// The byte ranges of the cluster chain starting at `first`.
fn chain_extents<S: Read + Seek>(
    s: &mut S,
    geo: &Geometry,
    first: u32,
) -> Result<Extents, FatError> {
    let end_of_chain = match geo.kind {
        FatKind::Fat12 => 0xFF8,
        FatKind::Fat16 => 0xFFF8,
        FatKind::Fat32 => 0x0FFF_FFF8,
    };
    let valid = |c: u32| c >= 2 && u64::from(c) < geo.clusters + 2;
    let mut out: Extents = Vec::new();
    let mut c = first;
    loop {
        if !valid(c) || out.len() as u64 * geo.cluster_bytes() >= MAX_DIR_BYTES {
            return Err(internal(format!(
                "directory cluster chain from {first} is broken at {c}"
            )));
        }
        out.push((geo.cluster_offset(c.into()), geo.cluster_bytes()));
        let next = fat_entry(s, geo, c)?;
        if next >= end_of_chain {
            return Ok(out);
        }
        c = next;
    }
}

/// Number of free clusters, and the first free one.
fn count_free<S: Read + Seek>(s: &mut S, geo: &Geometry) -> Result<(u64, Option<u32>), FatError> {
    let width: u64 = match geo.kind {
        FatKind::Fat12 => 0,
        FatKind::Fat16 => 2,
        FatKind::Fat32 => 4,
    };
    let last = geo.clusters + 2;
    let mut free = 0u64;
    let mut first = None;
    if width == 0 {
        // FAT12 tables are at most 6 KiB.
        let mut fat = vec![0u8; ((last * 3).div_ceil(2) + 1) as usize];
        read_at(s, geo.fat_offset(), &mut fat)?;
        for n in 2..last {
            let o = (n + n / 2) as usize;
            let v = u16::from_le_bytes([fat[o], fat[o + 1]]);
            let v = if n % 2 == 1 { v >> 4 } else { v & 0xFFF };
            if v == 0 {
                free += 1;
                first.get_or_insert(n as u32);
            }
        }
        return Ok((free, first));
    }
    // FAT16/32 tables can be large: read them in chunks.
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    while n < last {
        let count = (last - n).min(buf.len() as u64 / width);
        let chunk = &mut buf[..(count * width) as usize];
        read_at(s, geo.fat_offset() + n * width, chunk)?;
        for (i, e) in chunk.chunks_exact(width as usize).enumerate() {
            let c = n + i as u64;
            let v = match width {
                2 => u32::from(u16::from_le_bytes([e[0], e[1]])),
                _ => u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & 0x0FFF_FFFF,
            };
            if c >= 2 && v == 0 {
                free += 1;
                first.get_or_insert(c as u32);
            }
        }
        n += count;
    }
    Ok((free, first))
}

/// A short-name entry for `.` or `..`.
fn dot_entry(name: &[u8; 11], cluster: u32, t: DosTime) -> [u8; SLOT] {
    let mut e = [0u8; SLOT];
    e[..11].copy_from_slice(name);
    e[11] = ATTR_DIRECTORY;
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    set_times(&mut e, t);
    e
}

fn set_times(e: &mut [u8], t: DosTime) {
    e[13] = t.hundredths;
    e[14..16].copy_from_slice(&t.time.to_le_bytes());
    e[16..18].copy_from_slice(&t.date.to_le_bytes());
    e[18..20].copy_from_slice(&t.date.to_le_bytes());
    e[22..24].copy_from_slice(&t.time.to_le_bytes());
    e[24..26].copy_from_slice(&t.date.to_le_bytes());
}

fn first_cluster(e: &[u8]) -> u32 {
    u32::from(u16::from_le_bytes([e[20], e[21]])) << 16
        | u32::from(u16::from_le_bytes([e[26], e[27]]))
}

/// The checksum of a short name that its long-name slots carry.
fn lfn_checksum(short: &[u8]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, b| sum.rotate_right(1).wrapping_add(*b))
}

/// Long name being collected from its slots (which come last part first).
struct LongName {
    units: Vec<u16>,
    checksum: u8,
    /// Slot index of its first slot.
    start: usize,
}

/// A short name not in `taken`, built from the long name like Windows does
/// (`.hidden.conf` becomes `HIDDEN~1.CON`).
fn short_name_for(long: &str, taken: &HashSet<[u8; 11]>) -> Option<[u8; 11]> {
    let trimmed = long.trim_start_matches('.');
    let (base, ext) = match trimmed.rfind('.') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (trimmed, ""),
    };
    let clean = |s: &str, n: usize| -> Vec<u8> {
        s.chars()
            .filter(|c| *c != ' ' && *c != '.')
            .map(|c| {
                if c.is_ascii_alphanumeric() || "!#$%&'()-@^_`{}~".contains(c) {
                    c.to_ascii_uppercase() as u8
                } else {
                    b'_'
                }
            })
            .take(n)
            .collect()
    };
    let mut base = clean(base, 6);
    if base.is_empty() {
        base.push(b'_');
    }
    let ext = clean(ext, 3);
    (1..1_000_000u32).find_map(|n| {
        let tail = format!("~{n}");
        let keep = (8 - tail.len()).min(base.len());
        let mut s = [b' '; 11];
        s[..keep].copy_from_slice(&base[..keep]);
        s[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        s[8..8 + ext.len()].copy_from_slice(&ext);
        (!taken.contains(&s)).then_some(s)
    })
}

/// Repairs the dot entries of directory `dir`, stamps every entry and
/// returns its subdirectories with their first clusters.
fn fix_directory(
    buf: &mut [u8],
    tree: &Tree,
    dir: NodeId,
    cluster: u32,
    parent_cluster: u32,
    stamp: &dyn Fn(NodeId) -> DosTime,
) -> Result<Vec<(NodeId, u32)>, FatError> {
    let shown = || tree.display_path(dir);
    let slots = buf.len() / SLOT;
    let own_time = stamp(dir);
    let mut i = 0;
    if dir != NodeId::ROOT {
        let at = |k: usize| &buf[k * SLOT..(k + 1) * SLOT];
        let is_lfn =
            |k: usize| k < slots && at(k)[11] == ATTR_LFN && at(k)[0] != 0 && at(k)[0] != DELETED;
        let is_name = |k: usize, n: &[u8; 11]| k < slots && &at(k)[..11] == n;
        let dot = dot_entry(DOT, cluster, own_time);
        let dotdot = dot_entry(DOTDOT, parent_cluster, own_time);
        if is_lfn(0) && is_name(1, DOT) && is_lfn(2) && is_name(3, DOTDOT) {
            buf[..SLOT].copy_from_slice(&dot);
            buf[SLOT..2 * SLOT].copy_from_slice(&dotdot);
            for k in 2..4 {
                let e = &mut buf[k * SLOT..(k + 1) * SLOT];
                e.fill(0);
                e[0] = DELETED;
            }
            i = 4;
        } else if is_name(0, DOT) && is_name(1, DOTDOT) {
            buf[..SLOT].copy_from_slice(&dot);
            buf[SLOT..2 * SLOT].copy_from_slice(&dotdot);
            i = 2;
        } else {
            return Err(internal(format!(
                "{}: unexpected '.' and '..' entries",
                shown()
            )));
        }
    }

    let children: HashMap<&[u8], NodeId> = tree.children(dir).collect();
    let mut short_names: HashSet<[u8; 11]> = buf
        .chunks_exact(SLOT)
        .take_while(|e| e[0] != 0)
        .filter(|e| e[0] != DELETED && e[11] & 0x3F != ATTR_LFN)
        .map(|e| e[..11].try_into().expect("11 bytes"))
        .collect();
    let mut found = 0usize;
    let mut subdirs = Vec::new();
    let mut long: Option<LongName> = None;
    while i < slots {
        let e = &mut buf[i * SLOT..(i + 1) * SLOT];
        i += 1;
        match e[0] {
            0 => break,
            DELETED => {
                long = None;
                continue;
            }
            _ => {}
        }
        if e[11] & 0x3F == ATTR_LFN {
            let order = usize::from(e[0] & 0x1F);
            if e[0] & 0x40 != 0 {
                long = Some(LongName {
                    units: vec![0xFFFF; order * 13],
                    checksum: e[13],
                    start: i - 1,
                });
            }
            if let Some(l) = long
                .as_mut()
                .filter(|l| order >= 1 && order * 13 <= l.units.len())
            {
                let part = &mut l.units[(order - 1) * 13..order * 13];
                let offsets = (1..11)
                    .step_by(2)
                    .chain((14..26).step_by(2))
                    .chain((28..32).step_by(2));
                for (u, o) in part.iter_mut().zip(offsets) {
                    *u = u16::from_le_bytes([e[o], e[o + 1]]);
                }
            }
            continue;
        }
        if e[11] & ATTR_VOLUME_ID != 0 {
            set_times(e, own_time);
            long = None;
            continue;
        }
        let (name, lfn_start) = match long.take() {
            Some(l) if l.checksum == lfn_checksum(&e[..11]) => {
                let end = l
                    .units
                    .iter()
                    .position(|u| *u == 0)
                    .unwrap_or(l.units.len());
                let name = String::from_utf16(&l.units[..end])
                    .map_err(|_| internal(format!("{}: a long name is not UTF-16", shown())))?;
                (name, l.start)
            }
            _ => {
                return Err(internal(format!(
                    "{}: entry {:?} has no long name",
                    shown(),
                    String::from_utf8_lossy(&e[..11])
                )));
            }
        };
        let child = *children
            .get(name.as_bytes())
            .ok_or_else(|| internal(format!("{}: entry {name:?} is not in the tree", shown())))?;
        set_times(e, stamp(child));
        if e[11] & ATTR_DIRECTORY != 0 {
            subdirs.push((child, first_cluster(e)));
        }
        if e[0] == b' ' {
            let short = short_name_for(&name, &short_names)
                .ok_or_else(|| internal(format!("{}: no free short name", shown())))?;
            e[..11].copy_from_slice(&short);
            short_names.insert(short);
            let sum = lfn_checksum(&short);
            for k in lfn_start..i - 1 {
                buf[k * SLOT + 13] = sum;
            }
        }
        found += 1;
    }
    if found != children.len() {
        return Err(internal(format!(
            "{}: found {found} of {} entries",
            shown(),
            children.len()
        )));
    }
    Ok(subdirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lfn_checksum_matches_spec_example() {
        // From the FAT specification's ChkSum algorithm, computed by hand for
        // a name whose bytes are all spaces except the first.
        let mut sum = 0u8;
        for b in b"A          " {
            sum = (if sum & 1 != 0 { 0x80u8 } else { 0 })
                .wrapping_add(sum >> 1)
                .wrapping_add(*b);
        }
        assert_eq!(lfn_checksum(b"A          "), sum);
    }

    #[test]
    fn short_names_for_dot_names() {
        let mut taken = HashSet::new();
        let a = short_name_for(".hidden.conf", &taken).unwrap();
        assert_eq!(&a, b"HIDDEN~1CON");
        taken.insert(a);
        assert_eq!(
            &short_name_for(".hidden.conf", &taken).unwrap(),
            b"HIDDEN~2CON"
        );
        assert_eq!(&short_name_for("...", &taken).unwrap(), b"_~1        ");
        assert_eq!(&short_name_for(".é b+c", &taken).unwrap(), b"_B_C~1     ");
    }

    #[test]
    fn dot_entries_point_at_clusters() {
        let t = DosTime {
            date: 0x21,
            time: 0,
            hundredths: 0,
        };
        let e = dot_entry(DOTDOT, 0x0012_3456, t);
        assert_eq!(&e[..11], DOTDOT);
        assert_eq!(first_cluster(&e), 0x0012_3456);
        assert_eq!(e[11], ATTR_DIRECTORY);
        assert_eq!(u16::from_le_bytes([e[24], e[25]]), 0x21);
    }
}
