//! GUID partition tables: planning a disk, writing its tables, reading them back.
//!
//! - [`plan_disk`] is pure layout math: partitions 1 MiB-aligned in the given
//!   order, deterministic GUIDs, the disk size including the backup GPT.
//! - [`write_gpt`] writes only the table structures (protective MBR, primary
//!   and backup headers and entry arrays) into a disk file the caller created
//!   sparse with `set_len`; partition contents are streamed into
//!   `layout.partitions[i]`'s byte range with [`crate::io::OffsetWriter`].
//! - [`read_table`] / [`read_partitions`] read a disk's table on the device,
//!   checking both CRCs and falling back to the backup header when the
//!   primary is damaged.
//! - [`plan_grow`] and [`GrowPlan`] rewrite a table read from a device
//!   larger than the table says, so that its last partition fills the
//!   device, in an order a power cut cannot break (on the device, for /data).
//!
//! 512-byte sectors and the standard 128 entries of 128 bytes throughout
//! (the reader also accepts 4096-byte sectors and other entry counts).

mod grow;
mod guid;
mod layout;
mod reader;

pub use grow::{GrowDevice, GrowError, GrowPlan, plan_attributes, plan_grow};
pub use guid::{Guid, ParseGuidError};
pub use layout::plan_disk;
pub use reader::{Corruption, GptTable, PartitionInfo, read_partitions, read_table};

use crate::units::{Bytes, MIB};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;

/// Bytes per sector of the disks slate writes.
pub const SECTOR: u64 = 512;
/// Entries in the partition array slate writes.
pub const ENTRY_COUNT: u32 = 128;
/// Bytes per partition entry.
pub const ENTRY_SIZE: u64 = 128;
/// A partition name holds at most 36 UTF-16 code units.
pub const MAX_NAME_UNITS: usize = 36;

/// Partition type GUIDs (UAPI Discoverable Partitions Specification).
pub mod types {
    use super::Guid;

    /// EFI System Partition.
    pub const ESP: Guid = Guid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
    /// Root partition, x86-64.
    pub const ROOT_X86_64: Guid = Guid::from_u128(0x4F68BCE3_E8CD_4DB1_96E7_FBCAF984B709);
    /// Root partition, 64-bit ARM.
    pub const ROOT_ARM64: Guid = Guid::from_u128(0xB921B045_1DF0_41C3_AF44_4C6F280D3FAE);
    /// Generic Linux data: never mounted automatically by its type.
    pub const LINUX_DATA: Guid = Guid::from_u128(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);
    /// Variable data (`/var`).
    pub const VAR: Guid = Guid::from_u128(0x4D21B016_B534_45C2_A9FB_5C16E091FD2D);
}

/// Partition attribute bits (UEFI and the Discoverable Partitions Specification).
pub mod attributes {
    /// UEFI: required for the platform to function.
    pub const REQUIRED: u64 = 1 << 0;
    /// UEFI: firmware must not expose a block I/O protocol for it.
    pub const NO_BLOCK_IO: u64 = 1 << 1;
    /// UEFI: legacy BIOS bootable.
    pub const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;
    /// DPS: grow the filesystem to the partition on first mount.
    pub const GROW_FS: u64 = 1 << 59;
    /// DPS: mount read-only.
    pub const READ_ONLY: u64 = 1 << 60;
    /// DPS: do not mount automatically.
    pub const NO_AUTO: u64 = 1 << 63;
}

/// How big a partition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionSize {
    /// This many bytes (rounded up to whole sectors).
    Fixed(Bytes),
    /// Everything up to the backup GPT, in whole alignment units (last
    /// partition only; needs [`DiskOptions::size`]).
    Rest,
}

/// One partition to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// Name (GPT partition label), e.g. `esp`, `root-a`.
    pub name: String,
    /// Type GUID, see [`types`].
    pub type_guid: Guid,
    /// Size.
    pub size: PartitionSize,
    /// Unique GUID (PARTUUID); `None` derives it from image name, version
    /// and partition name.
    pub guid: Option<Guid>,
    /// Attribute bits, see [`attributes`].
    pub attributes: u64,
}

/// Disk-wide choices for [`plan_disk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOptions {
    /// Image name, an input of derived GUIDs.
    pub image_name: String,
    /// Image version, an input of derived GUIDs.
    pub image_version: String,
    /// Disk GUID; `None` derives it from image name and version.
    pub disk_guid: Option<Guid>,
    /// Total disk size; `None` means just large enough.
    pub size: Option<Bytes>,
    /// Partition start alignment (default 1 MiB).
    pub alignment: Bytes,
}

impl Default for DiskOptions {
    fn default() -> Self {
        Self {
            image_name: String::new(),
            image_version: String::new(),
            disk_guid: None,
            size: None,
            alignment: Bytes(MIB),
        }
    }
}

/// A planned partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedPartition {
    /// Partition number (1-based; its index in the entry array plus one).
    pub number: u32,
    /// Name.
    pub name: String,
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique GUID (PARTUUID).
    pub guid: Guid,
    /// Attribute bits.
    pub attributes: u64,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// Byte offset in the disk (`first_lba * 512`).
    pub offset: Bytes,
    /// Byte length.
    pub size: Bytes,
}

/// A whole disk's plan; see [`plan_disk`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskLayout {
    /// Disk GUID.
    pub disk_guid: Guid,
    /// Total size of the disk image, backup GPT included.
    pub size: Bytes,
    /// First sector partitions may use (34).
    pub first_usable_lba: u64,
    /// Last sector partitions may use.
    pub last_usable_lba: u64,
    /// The partitions, in table order.
    pub partitions: Vec<PlannedPartition>,
}

/// Why a table could not be planned, written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GptError {
    /// Reading or writing the disk failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The requested layout is impossible (names, sizes, GUIDs).
    #[error("{0}")]
    Invalid(String),
    /// Neither the primary nor the backup table on the disk is valid.
    #[error("no valid GUID partition table: {0}")]
    Corrupt(Corruption),
}

/// Writes the protective MBR and both GPT headers and entry arrays for
/// `layout` into `file`, which must already be `layout.size` bytes long.
/// Nothing else is written, so a sparse file stays sparse.
pub fn write_gpt(file: &mut File, layout: &DiskLayout) -> Result<(), GptError> {
    layout.validate()?;
    let len = file
        .metadata()
        .map_err(|source| GptError::Io {
            context: "reading the size of the disk image".into(),
            source,
        })?
        .len();
    if len != layout.size.get() {
        return Err(GptError::Invalid(format!(
            "the disk image is {len} bytes but the layout is for {} bytes",
            layout.size.get()
        )));
    }
    let lib = |e: gpt::GptError| GptError::Io {
        context: "writing the GUID partition table".into(),
        source: io::Error::other(e.to_string()),
    };
    let uuid = |g: Guid| uuid::Uuid::from_bytes(*g.as_bytes());
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(&mut *file, Some(uuid(layout.disk_guid)))
        .map_err(lib)?;
    let parts: BTreeMap<u32, gpt::partition::Partition> = layout
        .partitions
        .iter()
        .map(|p| {
            let part = gpt::partition::Partition {
                part_type_guid: uuid(p.type_guid).into(),
                part_guid: uuid(p.guid),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                flags: p.attributes,
                name: p.name.clone(),
            };
            (p.number, part)
        })
        .collect();
    disk.update_partitions(parts).map_err(lib)?;
    // The crate computes the usable area itself; it must agree with the plan
    // the caller streams partition contents by.
    let h = disk.header();
    let total = layout.size.get() / SECTOR;
    if h.first_usable != layout.first_usable_lba
        || h.last_usable != layout.last_usable_lba
        || h.backup_lba != total - 1
        || h.num_parts != ENTRY_COUNT
        || u64::from(h.part_size) != ENTRY_SIZE
    {
        return Err(GptError::Invalid(format!(
            "the gpt crate laid out a header that differs from the plan: {h:?}"
        )));
    }
    disk.write_inplace().map_err(lib)?;
    let mbr_sectors = u32::try_from(total - 1).unwrap_or(u32::MAX);
    gpt::mbr::ProtectiveMBR::with_lb_size(mbr_sectors)
        .overwrite_lba0(&mut *file)
        .map_err(|e| GptError::Io {
            context: "writing the protective MBR".into(),
            source: io::Error::other(e.to_string()),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests;
