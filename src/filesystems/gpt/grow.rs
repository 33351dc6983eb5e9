//! Growing the last partition of a disk that is larger than its table.
//!
//! An image written to a bigger device keeps the image's geometry: the
//! backup header sits where the image ended, and the last usable sector is
//! the image's. [`plan_grow`] works out the table for the whole device, with
//! one partition (which must be the last) extended to the new last usable
//! sector in whole alignment units; [`GrowPlan::write_backup`] and then
//! [`GrowPlan::write_primary`] write it so that a power cut at any instant
//! leaves one valid table, and the next [`plan_grow`] finishes the job:
//!
//! 1. `write_backup`: the new backup entry array, then the new backup header
//!    in the last sector, then a barrier. Until the primary is rewritten it
//!    still describes the old size with a valid CRC (and points at the old
//!    backup, untouched): the next plan is the same plan again.
//! 2. `write_primary`: the protective MBR's size, the primary entry array,
//!    the primary header, a barrier. A cut in there can leave a primary whose
//!    CRCs fail; the new backup at the end of the device is then the table,
//!    and the next plan only restores the primary from it.
//! 3. Still in `write_primary`, after its barrier: the old backup header's
//!    sector, now inside the usable area, is zeroed (and synced), so no stale
//!    `EFI PART` header is left where the filesystem will grow. A cut before
//!    that leaves the stale header, which nothing reads.
//!
//! Headers are rewritten from the bytes read (only `MyLBA`, `AlternateLBA`,
//! `LastUsableLBA`, `PartitionEntryLBA` and the two CRCs change) and only the
//! grown entry's `EndingLBA` changes in the entry array, so everything the
//! reader does not model (revision, reserved fields, names, attributes) is
//! kept exactly.

use super::reader::{Header, RawTable, read_copy, read_raw};
use super::{GptError, Guid, PartitionInfo};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// A device a table can be rewritten on: reads, writes and a durability
/// barrier between the steps.
pub trait GrowDevice: Read + Write + Seek {
    /// Makes everything written so far durable (`fsync`).
    fn barrier(&mut self) -> io::Result<()>;
}

impl GrowDevice for File {
    fn barrier(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

impl GrowDevice for io::Cursor<Vec<u8>> {
    fn barrier(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why the table cannot be grown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrowError {
    /// The table could not be read, or neither copy is valid.
    #[error(transparent)]
    Gpt(#[from] GptError),
    /// Writing the new table failed.
    #[error("{context}")]
    Io {
        /// What was being written.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No partition has the GUID asked for.
    #[error("no partition with GUID {0} in the table")]
    NoPartition(Guid),
    /// Another partition lies after the one to grow.
    #[error("partition {number} is not the last one on the disk (partition {after} follows it)")]
    NotLast {
        /// The partition to grow.
        number: u32,
        /// A partition after it.
        after: u32,
    },
    /// The primary table is damaged and the backup is not at the end of the
    /// device, so this is no interrupted grow: left for a person to repair.
    #[error("the primary GPT is damaged and the backup is not at the end of the disk")]
    DamagedPrimary,
    /// The table describes a larger device than this one.
    #[error("the partition table is for a larger disk ({need} sectors, the disk has {have})")]
    DiskTooSmall {
        /// Sectors the table needs.
        need: u64,
        /// Sectors the device has.
        have: u64,
    },
    /// The entry array or the usable area does not fit where it must go.
    #[error("the partition table's geometry does not fit: {0}")]
    Geometry(String),
}

/// A rewritten table, ready to be written; see the module documentation
/// (also made by [`plan_attributes`], which changes attribute bits only).
#[derive(Debug, Clone)]
pub struct GrowPlan {
    sector: u64,
    total: u64,
    template: Vec<u8>,
    entries: Vec<u8>,
    last_usable: u64,
    primary_entries_lba: u64,
    backup_entries_lba: u64,
    write_backup: bool,
    stale_backup: Option<u64>,
    old_last_lba: u64,
    partition: PartitionInfo,
}

impl GrowPlan {
    /// The partition as the new table has it.
    pub fn partition(&self) -> &PartitionInfo {
        &self.partition
    }

    /// Sector size of the table, bytes.
    pub fn sector_size(&self) -> u64 {
        self.sector
    }

    /// The partition's size in bytes before.
    pub fn old_size(&self) -> u64 {
        (self.old_last_lba + 1 - self.partition.first_lba) * self.sector
    }

    /// The partition's size in bytes in the new table.
    pub fn new_size(&self) -> u64 {
        self.partition.size(self.sector)
    }

    /// Whether this plan only restores a damaged primary from the backup at
    /// the end of the device (a cut inside [`GrowPlan::write_primary`]).
    pub fn restores_primary(&self) -> bool {
        !self.write_backup
    }

    /// Step 1: the backup entry array and header at the end of the device,
    /// then a barrier. Nothing to do when the plan restores the primary.
    pub fn write_backup(&self, dev: &mut impl GrowDevice) -> Result<(), GrowError> {
        if !self.write_backup {
            return Ok(());
        }
        let backup_lba = self.total - 1;
        write_at(
            dev,
            self.backup_entries_lba * self.sector,
            &self.entries,
            "backup entries",
        )?;
        let header = self.header(backup_lba, 1, self.backup_entries_lba);
        write_at(dev, backup_lba * self.sector, &header, "backup header")?;
        barrier(dev, "backup GPT")
    }

    /// Step 2: the protective MBR, the primary entry array and header, a
    /// barrier; then the old backup header is zeroed and synced.
    pub fn write_primary(&self, dev: &mut impl GrowDevice) -> Result<(), GrowError> {
        self.write_protective_mbr(dev)?;
        let entries_at = self.primary_entries_lba * self.sector;
        write_at(dev, entries_at, &self.entries, "primary entries")?;
        let header = self.header(1, self.total - 1, self.primary_entries_lba);
        write_at(dev, self.sector, &header, "primary header")?;
        barrier(dev, "primary GPT")?;
        if let Some(lba) = self.stale_backup {
            let zero = vec![0u8; self.sector as usize];
            write_at(dev, lba * self.sector, &zero, "the old backup header")?;
            barrier(dev, "the old backup header")?;
        }
        Ok(())
    }

    /// A header sector: the template with this copy's locations, the new
    /// usable area and both CRCs.
    fn header(&self, my_lba: u64, alternate: u64, entries_lba: u64) -> Vec<u8> {
        let mut h = self.template.clone();
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(&self.entries).to_le_bytes());
        h[16..20].fill(0);
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h.resize(self.sector as usize, 0);
        h
    }

    /// Sets a protective MBR's size to the whole device (capped at 32 bits).
    /// A sector that is no protective MBR (hybrid, none) is left alone.
    fn write_protective_mbr(&self, dev: &mut impl GrowDevice) -> Result<(), GrowError> {
        let mut mbr = [0u8; 512];
        dev.seek(SeekFrom::Start(0))
            .and_then(|_| dev.read_exact(&mut mbr))
            .map_err(|source| io_error("reading the protective MBR", source))?;
        let protective = mbr[510..] == [0x55, 0xAA]
            && mbr[446 + 4] == 0xEE
            && mbr[462..510].iter().all(|b| *b == 0);
        if !protective {
            return Ok(());
        }
        let size = u32::try_from(self.total - 1).unwrap_or(u32::MAX);
        mbr[458..462].copy_from_slice(&size.to_le_bytes());
        write_at(dev, 0, &mbr, "protective MBR")
    }
}

fn io_error(context: &str, source: io::Error) -> GrowError {
    GrowError::Io {
        context: format!("writing the grown partition table: {context}"),
        source,
    }
}

fn write_at(dev: &mut impl GrowDevice, off: u64, buf: &[u8], what: &str) -> Result<(), GrowError> {
    dev.seek(SeekFrom::Start(off))
        .and_then(|_| dev.write_all(buf))
        .map_err(|source| io_error(what, source))
}

fn barrier(dev: &mut impl GrowDevice, what: &str) -> Result<(), GrowError> {
    dev.flush()
        .and_then(|()| dev.barrier())
        .map_err(|source| io_error(&format!("syncing the {what}"), source))
}

/// Works out the table that makes partition `guid` fill the device, its
/// size a whole number of `alignment` bytes (the builder's rule for the
/// last partition). `Ok(None)` when the table already spans the device.
///
/// A damaged primary next to a valid backup at the end of the device (a cut
/// inside [`GrowPlan::write_primary`]) gives a plan that restores the
/// primary as a copy of the backup; a damaged primary otherwise is refused.
pub fn plan_grow(
    dev: &mut (impl Read + Seek),
    guid: Guid,
    alignment: u64,
) -> Result<Option<GrowPlan>, GrowError> {
    let raw = read_raw(dev)?;
    let sector = raw.table.sector_size;
    let total = raw.device_len / sector;
    let entry_sectors = raw.header.entries_bytes().div_ceil(sector);
    if raw.table.from_backup {
        return restore_primary(raw, guid, total, entry_sectors).map(Some);
    }
    let h = &raw.header;
    if h.alternate_lba == total - 1 {
        return Ok(None);
    }
    // Usable up to the new backup entry array, which ends before the last sector.
    let backup_entries_lba = (total - 1).saturating_sub(entry_sectors);
    let last_usable = backup_entries_lba.saturating_sub(1);
    if h.alternate_lba > total - 1 || last_usable < h.last_usable {
        return Err(GrowError::DiskTooSmall {
            need: (h.alternate_lba + 1).max(h.last_usable + entry_sectors + 2),
            have: total,
        });
    }
    let part = last_partition(&raw, guid)?.clone();
    let align = (alignment / sector).max(1);
    let units = (last_usable + 1 - part.first_lba) / align;
    let new_last = (part.first_lba + units * align - 1).max(part.last_lba);
    let mut entries = raw.entries.clone();
    let at = (part.number as usize - 1) * h.entry_size as usize + 40;
    entries[at..at + 8].copy_from_slice(&new_last.to_le_bytes());
    Ok(Some(GrowPlan {
        sector,
        total,
        template: h.raw.clone(),
        entries,
        last_usable,
        primary_entries_lba: h.entries_lba,
        backup_entries_lba,
        write_backup: true,
        // Zeroed only where nothing of the new table lives.
        stale_backup: Some(h.alternate_lba)
            .filter(|a| *a > h.last_usable && *a < backup_entries_lba),
        old_last_lba: part.last_lba,
        partition: PartitionInfo {
            last_lba: new_last,
            ..part
        },
    }))
}

/// The partition `guid`, checked to be the last one on the disk.
fn last_partition(raw: &RawTable, guid: Guid) -> Result<&PartitionInfo, GrowError> {
    let parts = &raw.table.partitions;
    let part = parts
        .iter()
        .find(|p| p.guid == guid)
        .ok_or(GrowError::NoPartition(guid))?;
    match parts
        .iter()
        .find(|p| p.number != part.number && p.last_lba >= part.first_lba)
    {
        Some(after) => Err(GrowError::NotLast {
            number: part.number,
            after: after.number,
        }),
        None => Ok(part),
    }
}

/// The plan that rewrites only the primary, as a copy of the valid backup
/// found at the end of the device.
fn restore_primary(
    raw: RawTable,
    guid: Guid,
    total: u64,
    entry_sectors: u64,
) -> Result<GrowPlan, GrowError> {
    let h: Header = raw.header;
    if h.my_lba != total - 1 {
        return Err(GrowError::DamagedPrimary);
    }
    // The primary's entries go right after its header, before the usable area.
    if 2 + entry_sectors > h.first_usable {
        return Err(GrowError::Geometry(format!(
            "{entry_sectors} sectors of entries do not fit before the first usable sector {}",
            h.first_usable
        )));
    }
    let part = raw
        .table
        .partitions
        .iter()
        .find(|p| p.guid == guid)
        .ok_or(GrowError::NoPartition(guid))?
        .clone();
    Ok(GrowPlan {
        sector: raw.table.sector_size,
        total,
        template: h.raw.clone(),
        entries: raw.entries,
        last_usable: h.last_usable,
        primary_entries_lba: 2,
        backup_entries_lba: h.entries_lba,
        write_backup: false,
        stale_backup: None,
        old_last_lba: part.last_lba,
        partition: part,
    })
}

/// Works out the table whose partitions have the attribute bits `want`
/// gives each (names, bounds, GUIDs and everything else kept), written with
/// the same steps as a grow: backup first, a barrier, then the primary.
/// `Ok(None)` when both copies already have them. A damaged primary next to
/// a valid backup (a cut inside [`GrowPlan::write_primary`]) is restored
/// from the backup with the bits applied; a backup that differs from a
/// valid primary (a cut after [`GrowPlan::write_backup`]) is rewritten.
pub fn plan_attributes(
    dev: &mut (impl Read + Seek),
    want: &dyn Fn(&PartitionInfo) -> u64,
) -> Result<Option<GrowPlan>, GrowError> {
    let raw = read_raw(dev)?;
    let sector = raw.table.sector_size;
    let total = raw.device_len / sector;
    let h = &raw.header;
    let esize = h.entry_size as usize;
    let mut entries = raw.entries.clone();
    for p in &raw.table.partitions {
        let at = (p.number as usize - 1) * esize + 48;
        entries[at..at + 8].copy_from_slice(&want(p).to_le_bytes());
    }
    let entry_sectors = h.entries_bytes().div_ceil(sector);
    let (backup_lba, primary_entries_lba, backup_entries_lba) = if raw.table.from_backup {
        if 2 + entry_sectors > h.first_usable {
            return Err(GrowError::Geometry(format!(
                "{entry_sectors} sectors of entries do not fit before the first usable sector {}",
                h.first_usable
            )));
        }
        (h.my_lba, 2, h.entries_lba)
    } else {
        let backup = h.alternate_lba;
        if backup >= total || backup <= h.last_usable + entry_sectors {
            return Err(GrowError::Geometry(format!(
                "the backup header at sector {backup} leaves no room for its entries"
            )));
        }
        let same = entries == raw.entries
            && read_copy(dev, backup, sector, total).is_some_and(|b| b == entries);
        if same {
            return Ok(None);
        }
        (backup, h.entries_lba, backup - entry_sectors)
    };
    let part = raw
        .table
        .partitions
        .first()
        .cloned()
        .ok_or_else(|| GrowError::Geometry("the table has no partitions".into()))?;
    Ok(Some(GrowPlan {
        sector,
        total: backup_lba + 1,
        template: h.raw.clone(),
        entries,
        last_usable: h.last_usable,
        primary_entries_lba,
        backup_entries_lba,
        write_backup: true,
        stale_backup: None,
        old_last_lba: part.last_lba,
        partition: part,
    }))
}

#[cfg(test)]
mod tests;
