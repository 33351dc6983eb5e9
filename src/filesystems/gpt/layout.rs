//! Where partitions go on a GPT disk: pure arithmetic on sectors.

use super::{
    DiskLayout, DiskOptions, ENTRY_COUNT, ENTRY_SIZE, GptError, Guid, MAX_NAME_UNITS,
    PartitionSize, PartitionSpec, PlannedPartition, SECTOR,
};
use crate::units::Bytes;
use std::collections::BTreeSet;

/// Sectors the entry array takes (32 for 128 entries of 128 bytes).
pub(super) const ENTRY_SECTORS: u64 = (ENTRY_COUNT as u64 * ENTRY_SIZE).div_ceil(SECTOR);
/// Protective MBR, primary header, primary entry array.
pub(super) const FIRST_USABLE_LBA: u64 = 2 + ENTRY_SECTORS;
/// Backup entry array and backup header at the end of the disk.
const BACKUP_SECTORS: u64 = ENTRY_SECTORS + 1;

fn invalid(msg: String) -> GptError {
    GptError::Invalid(msg)
}

fn overflow(what: &str) -> GptError {
    invalid(format!("{what}: size arithmetic overflows"))
}

/// Plans a disk: partitions in the given order, each starting on an
/// `opts.alignment` boundary, with sizes rounded up to whole sectors.
/// Partition and disk GUIDs not given are derived from image name, version
/// and partition name. Without `opts.size` the disk ends at the next
/// alignment boundary that leaves room for the backup GPT.
pub fn plan_disk(parts: &[PartitionSpec], opts: &DiskOptions) -> Result<DiskLayout, GptError> {
    let align = opts.alignment.get();
    if align == 0 || align % SECTOR != 0 {
        return Err(invalid(format!(
            "partition alignment {} is not a positive multiple of {SECTOR} bytes",
            opts.alignment
        )));
    }
    let align_lba = align / SECTOR;
    if parts.is_empty() {
        return Err(invalid("a disk needs at least one partition".into()));
    }
    if parts.len() > ENTRY_COUNT as usize {
        return Err(invalid(format!(
            "{} partitions; a GPT holds at most {ENTRY_COUNT}",
            parts.len()
        )));
    }
    let disk_guid = opts.disk_guid.unwrap_or_else(|| {
        Guid::derived(&[
            b"slate-gpt-disk",
            opts.image_name.as_bytes(),
            opts.image_version.as_bytes(),
        ])
    });
    if disk_guid.is_nil() {
        return Err(invalid("the disk GUID must not be all zeros".into()));
    }

    // Disk size in sectors, if fixed.
    let total_lba = match opts.size {
        Some(s) if s.get() % SECTOR != 0 => {
            return Err(invalid(format!(
                "disk size {s} is not a multiple of {SECTOR} bytes"
            )));
        }
        Some(s) => Some(s.get() / SECTOR),
        None => None,
    };
    let last_usable_fixed = total_lba.map(|t| t.saturating_sub(BACKUP_SECTORS + 1));

    let mut names = BTreeSet::new();
    let mut guids = BTreeSet::from([disk_guid]);
    let mut planned = Vec::with_capacity(parts.len());
    let mut next_free = FIRST_USABLE_LBA;
    for (i, p) in parts.iter().enumerate() {
        let label = if p.name.is_empty() {
            format!("partition {}", i + 1)
        } else {
            format!("partition {}", p.name)
        };
        check_name(&p.name).map_err(|why| invalid(format!("{label}: {why}")))?;
        if !names.insert(p.name.as_str()) {
            return Err(invalid(format!("{label}: the name is used twice")));
        }
        if p.type_guid.is_nil() {
            return Err(invalid(format!(
                "{label}: the type GUID must not be all zeros"
            )));
        }
        let guid = p.guid.unwrap_or_else(|| {
            Guid::derived(&[
                b"slate-gpt-partition",
                opts.image_name.as_bytes(),
                opts.image_version.as_bytes(),
                p.name.as_bytes(),
            ])
        });
        if guid.is_nil() {
            return Err(invalid(format!("{label}: the GUID must not be all zeros")));
        }
        if !guids.insert(guid) {
            return Err(invalid(format!(
                "{label}: GUID {guid} is already used by the disk or another partition"
            )));
        }
        let first = next_free
            .checked_next_multiple_of(align_lba)
            .ok_or_else(|| overflow(&label))?;
        let sectors = match p.size {
            PartitionSize::Fixed(b) => {
                if b.get() == 0 {
                    return Err(invalid(format!("{label}: size must not be 0")));
                }
                b.get().div_ceil(SECTOR)
            }
            PartitionSize::Rest => {
                if i + 1 != parts.len() {
                    return Err(invalid(format!(
                        "{label}: only the last partition can take the rest of the disk"
                    )));
                }
                let last = last_usable_fixed.ok_or_else(|| {
                    invalid(format!(
                        "{label}: taking the rest of the disk needs a disk size"
                    ))
                })?;
                // Whole alignment units, so the filesystem inside gets a round size.
                let room = (last + 1).saturating_sub(first);
                let s = room - room % align_lba;
                if s == 0 {
                    return Err(too_small(opts, first + align_lba));
                }
                s
            }
        };
        let last = first
            .checked_add(sectors - 1)
            .ok_or_else(|| overflow(&label))?;
        let offset = first.checked_mul(SECTOR).ok_or_else(|| overflow(&label))?;
        let bytes = sectors
            .checked_mul(SECTOR)
            .ok_or_else(|| overflow(&label))?;
        next_free = last.checked_add(1).ok_or_else(|| overflow(&label))?;
        planned.push(PlannedPartition {
            number: i as u32 + 1,
            name: p.name.clone(),
            type_guid: p.type_guid,
            guid,
            attributes: p.attributes,
            first_lba: first,
            last_lba: last,
            offset: Bytes(offset),
            size: Bytes(bytes),
        });
    }

    // Smallest disk: the partitions, then the backup GPT, rounded up to the alignment.
    let needed_lba = next_free
        .checked_add(BACKUP_SECTORS)
        .and_then(|n| n.checked_next_multiple_of(align_lba))
        .ok_or_else(|| overflow("disk"))?;
    let total_lba = match total_lba {
        Some(t) if t < next_free + BACKUP_SECTORS => {
            return Err(too_small(opts, needed_lba));
        }
        Some(t) => t,
        None => needed_lba,
    };
    let size = total_lba
        .checked_mul(SECTOR)
        .ok_or_else(|| overflow("disk"))?;
    let layout = DiskLayout {
        disk_guid,
        size: Bytes(size),
        first_usable_lba: FIRST_USABLE_LBA,
        last_usable_lba: total_lba - BACKUP_SECTORS - 1,
        partitions: planned,
    };
    layout.validate()?;
    Ok(layout)
}

fn too_small(opts: &DiskOptions, needed_lba: u64) -> GptError {
    let needed = Bytes(needed_lba.saturating_mul(SECTOR));
    invalid(format!(
        "the partitions need a disk of at least {} MiB, the disk size is {} MiB",
        needed.mib_ceil(),
        opts.size.map_or(0, |s| s.get() >> 20)
    ))
}

/// Checks a partition name: 1 to 36 UTF-16 units, no NUL (which ends a name on disk).
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let units = name.encode_utf16().count();
    if units == 0 {
        return Err("the name must not be empty".into());
    }
    if units > MAX_NAME_UNITS {
        return Err(format!(
            "the name is {units} UTF-16 units long; GPT stores at most {MAX_NAME_UNITS}"
        ));
    }
    if name.contains('\0') {
        return Err("the name contains a NUL character".into());
    }
    Ok(())
}

impl DiskLayout {
    /// Checks the invariants [`plan_disk`] guarantees (and [`super::write_gpt`]
    /// relies on): partitions inside the usable area, in order, not
    /// overlapping, with consistent byte ranges, unique GUIDs and valid names.
    pub fn validate(&self) -> Result<(), GptError> {
        let total = self.size.get() / SECTOR;
        if self.size.get() % SECTOR != 0 || total < FIRST_USABLE_LBA + BACKUP_SECTORS + 1 {
            return Err(invalid(format!("disk size {} is unusable", self.size)));
        }
        if self.first_usable_lba != FIRST_USABLE_LBA
            || self.last_usable_lba != total - BACKUP_SECTORS - 1
        {
            return Err(invalid("usable area does not match the disk size".into()));
        }
        if self.partitions.is_empty() || self.partitions.len() > ENTRY_COUNT as usize {
            return Err(invalid("a disk needs 1 to 128 partitions".into()));
        }
        let mut guids = BTreeSet::from([self.disk_guid]);
        let mut prev_last = None;
        for (i, p) in self.partitions.iter().enumerate() {
            let label = format!("partition {}", p.name);
            check_name(&p.name).map_err(|why| invalid(format!("{label}: {why}")))?;
            if p.number != i as u32 + 1 {
                return Err(invalid(format!(
                    "{label}: numbered {} at position {}",
                    p.number,
                    i + 1
                )));
            }
            if p.first_lba < self.first_usable_lba
                || p.last_lba > self.last_usable_lba
                || p.first_lba > p.last_lba
            {
                return Err(invalid(format!("{label}: outside the usable area")));
            }
            if prev_last.is_some_and(|l| p.first_lba <= l) {
                return Err(invalid(format!(
                    "{label}: overlaps the partition before it"
                )));
            }
            prev_last = Some(p.last_lba);
            if p.offset.get() != p.first_lba * SECTOR
                || p.size.get() != (p.last_lba - p.first_lba + 1) * SECTOR
            {
                return Err(invalid(format!(
                    "{label}: byte range does not match its sectors"
                )));
            }
            if p.type_guid.is_nil() || p.guid.is_nil() || !guids.insert(p.guid) {
                return Err(invalid(format!(
                    "{label}: GUIDs must be non-zero and unique"
                )));
            }
        }
        Ok(())
    }
}
