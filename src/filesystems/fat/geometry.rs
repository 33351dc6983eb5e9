//! Which FAT variant and cluster size a volume of a given size gets, and how
//! many clusters it then has. Pure arithmetic, mirroring the formulas `fatfs`
//! 0.3.6 formats with (so sizing decisions can be made without a disk).

use std::fmt;

/// Bytes per sector; slate always formats with 512.
pub const SECTOR: u64 = 512;
/// Entries in the fixed root directory of FAT12/16 volumes (fatfs's default).
pub const ROOT_ENTRIES: u32 = 512;
const FATS: u64 = 2;
const FAT16_MIN_CLUSTERS: u64 = 4085;
const FAT32_MIN_CLUSTERS: u64 = 65525;
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF4;
/// fatfs refuses clusters larger than 32 KiB (64 sectors).
const MAX_SECTORS_PER_CLUSTER: u64 = 64;

/// The FAT variant, named after the width of a table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum FatKind {
    /// 12-bit entries: volumes up to about 2 MiB here.
    Fat12,
    /// 16-bit entries: up to about 32 MiB here.
    Fat16,
    /// 32-bit entries: what UEFI expects on a fixed-disk ESP.
    Fat32,
}

impl FatKind {
    fn bits(self) -> u64 {
        match self {
            FatKind::Fat12 => 12,
            FatKind::Fat16 => 16,
            FatKind::Fat32 => 32,
        }
    }

    /// The variant a volume with this many data clusters must be (the
    /// definition every FAT implementation uses).
    pub fn from_clusters(clusters: u64) -> FatKind {
        if clusters < FAT16_MIN_CLUSTERS {
            FatKind::Fat12
        } else if clusters < FAT32_MIN_CLUSTERS {
            FatKind::Fat16
        } else {
            FatKind::Fat32
        }
    }
}

impl fmt::Display for FatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FatKind::Fat12 => "FAT12",
            FatKind::Fat16 => "FAT16",
            FatKind::Fat32 => "FAT32",
        })
    }
}

/// The layout of a FAT volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// FAT12, FAT16 or FAT32.
    pub kind: FatKind,
    /// Sectors in the volume.
    pub total_sectors: u64,
    /// Sectors per cluster (a power of two, 1..=64).
    pub sectors_per_cluster: u64,
    /// Sectors before the first FAT.
    pub reserved_sectors: u64,
    /// Sectors of one FAT.
    pub sectors_per_fat: u64,
    /// Sectors of the fixed root directory (0 on FAT32).
    pub root_dir_sectors: u64,
    /// Data clusters (numbered from 2).
    pub clusters: u64,
}

impl Geometry {
    /// Bytes per cluster.
    pub fn cluster_bytes(&self) -> u64 {
        self.sectors_per_cluster * SECTOR
    }

    /// Byte offset of the first FAT.
    pub fn fat_offset(&self) -> u64 {
        self.reserved_sectors * SECTOR
    }

    /// Byte offset of the fixed root directory (FAT12/16).
    pub fn root_dir_offset(&self) -> u64 {
        (self.reserved_sectors + FATS * self.sectors_per_fat) * SECTOR
    }

    /// Byte offset of cluster 2, the first data cluster.
    pub fn data_offset(&self) -> u64 {
        self.root_dir_offset() + self.root_dir_sectors * SECTOR
    }

    /// Byte offset of data cluster `n` (n >= 2).
    pub fn cluster_offset(&self, n: u64) -> u64 {
        self.data_offset() + (n - 2) * self.cluster_bytes()
    }

    /// Picks the layout for a volume of `size` bytes: FAT32 whenever the
    /// volume can hold enough clusters for it, else FAT16, else FAT12; small
    /// clusters (512 bytes) up to 260 MiB and the usual larger ones above, so
    /// an ESP wastes little space. `None` if no FAT variant fits the size
    /// (too small, or 2 TiB and more).
    pub fn for_size(size: u64) -> Option<Geometry> {
        if size % SECTOR != 0 {
            return None;
        }
        let total_sectors = size / SECTOR;
        if total_sectors > u64::from(u32::MAX) {
            return None;
        }
        let preferred: u64 = match size {
            s if s <= 260 << 20 => 1,
            s if s <= 8 << 30 => 8,
            s if s <= 16 << 30 => 16,
            s if s <= 32 << 30 => 32,
            _ => 64,
        };
        let mut order = vec![preferred];
        order.extend((0..7).map(|i| 1u64 << i).filter(|s| *s != preferred));
        for kind in [FatKind::Fat32, FatKind::Fat16, FatKind::Fat12] {
            for &spc in &order {
                if let Some(g) = Self::try_layout(total_sectors, spc, kind) {
                    return Some(g);
                }
            }
        }
        None
    }

    /// The layout fatfs computes for `kind` with `spc` sectors per cluster,
    /// if the resulting cluster count is legal for that kind.
    fn try_layout(total_sectors: u64, spc: u64, kind: FatKind) -> Option<Geometry> {
        if !(1..=MAX_SECTORS_PER_CLUSTER).contains(&spc) || !spc.is_power_of_two() {
            return None;
        }
        // fatfs reserves 8 sectors on FAT32 (boot, FSInfo, backup boot) and 1 otherwise.
        let reserved = if kind == FatKind::Fat32 { 8 } else { 1 };
        let root_dir_sectors = if kind == FatKind::Fat32 {
            0
        } else {
            (u64::from(ROOT_ENTRIES) * 32).div_ceil(SECTOR)
        };
        if total_sectors <= reserved + root_dir_sectors + 8 {
            return None;
        }
        // Smallest FAT that covers every cluster plus the two reserved entries
        // (fatfs's determine_sectors_per_fat, rounded towards a larger FAT).
        let t0 = total_sectors - reserved - root_dir_sectors;
        let t1 = t0 + 2 * spc;
        let t2 = spc * SECTOR * 8 / kind.bits() + FATS;
        let sectors_per_fat = t1.div_ceil(t2);
        let data_sectors = t0.checked_sub(FATS * sectors_per_fat)?;
        let clusters = data_sectors / spc;
        let max = match kind {
            FatKind::Fat12 => FAT16_MIN_CLUSTERS - 1,
            FatKind::Fat16 => FAT32_MIN_CLUSTERS - 1,
            FatKind::Fat32 => FAT32_MAX_CLUSTERS,
        };
        if FatKind::from_clusters(clusters) != kind || clusters > max {
            return None;
        }
        Some(Geometry {
            kind,
            total_sectors,
            sectors_per_cluster: spc,
            reserved_sectors: reserved,
            sectors_per_fat,
            root_dir_sectors,
            clusters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn kind_by_size() {
        let kind = |s: u64| Geometry::for_size(s).map(|g| (g.kind, g.cluster_bytes()));
        assert_eq!(kind(MIB), Some((FatKind::Fat12, 512)));
        assert_eq!(kind(2 * MIB), Some((FatKind::Fat12, 512)));
        assert_eq!(kind(3 * MIB), Some((FatKind::Fat16, 512)));
        assert_eq!(kind(32 * MIB), Some((FatKind::Fat16, 512)));
        assert_eq!(kind(33 * MIB), Some((FatKind::Fat32, 512)));
        assert_eq!(kind(64 * MIB), Some((FatKind::Fat32, 512)));
        assert_eq!(kind(260 * MIB), Some((FatKind::Fat32, 512)));
        assert_eq!(kind(261 * MIB), Some((FatKind::Fat32, 4096)));
        assert_eq!(kind(1 << 30), Some((FatKind::Fat32, 4096)));
        assert_eq!(kind(20 << 30), Some((FatKind::Fat32, 16384)));
        assert_eq!(kind(1000), None, "not a whole number of sectors");
        assert_eq!(kind(8 * 512), None, "too small");
        assert_eq!(kind(2 << 40), None, "too many sectors");
    }

    #[test]
    fn every_size_gets_a_legal_layout() {
        // Around the FAT16/FAT32 boundary a size can be "unfortunate" for
        // 512-byte clusters; the next cluster size must then take over.
        for sectors in (60_000..70_000u64).step_by(7) {
            let g = Geometry::for_size(sectors * SECTOR).expect("a layout");
            assert_eq!(FatKind::from_clusters(g.clusters), g.kind);
            let used = g.reserved_sectors
                + FATS * g.sectors_per_fat
                + g.root_dir_sectors
                + g.clusters * g.sectors_per_cluster;
            assert!(used <= sectors);
            let fat_bits = (g.clusters + 2) * g.kind.bits();
            assert!(g.sectors_per_fat * SECTOR * 8 >= fat_bits);
        }
    }

    #[test]
    fn fat32_only_when_not_possible_otherwise() {
        // The smallest FAT32 volume: every smaller one has too few clusters
        // even with 512-byte clusters.
        let first = (60_000u64..80_000)
            .find(|s| Geometry::for_size(s * SECTOR).unwrap().kind == FatKind::Fat32)
            .unwrap();
        for s in first - 100..first {
            assert_ne!(Geometry::for_size(s * SECTOR).unwrap().kind, FatKind::Fat32);
        }
        assert!(first * SECTOR < 33 * MIB);
    }
}
