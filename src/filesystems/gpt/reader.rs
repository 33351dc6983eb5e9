//! Reading a GPT back, for the device-side agent.
//!
//! Written here rather than with the `gpt` crate because the agent reads
//! tables it did not write and must not trust them: the crate (4.1) does not
//! check the entry array's CRC, panics on entry sizes other than 128 and
//! allocates whatever size a header claims. This reader checks the header
//! CRC, its own LBA, the entry geometry (bounded) and the entry array CRC,
//! and falls back to the backup header at the end of the device (or where a
//! CRC-valid primary says it is, for images written to a larger disk).

use super::{GptError, Guid};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Entry arrays larger than this are refused rather than allocated.
const MAX_ARRAY_BYTES: u64 = 1 << 20;

/// A partition as recorded in the table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionInfo {
    /// Partition number (index in the entry array plus one).
    pub number: u32,
    /// Name (GPT partition label).
    pub name: String,
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique GUID (PARTUUID).
    pub guid: Guid,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// Attribute bits.
    pub attributes: u64,
}

impl PartitionInfo {
    /// Byte offset of the partition for a device with `sector_size`-byte sectors.
    pub fn offset(&self, sector_size: u64) -> u64 {
        self.first_lba * sector_size
    }

    /// Byte length of the partition.
    pub fn size(&self, sector_size: u64) -> u64 {
        (self.last_lba - self.first_lba + 1) * sector_size
    }
}

/// A table read from a device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GptTable {
    /// Disk GUID.
    pub disk_guid: Guid,
    /// Sector size the table was found with (512 or 4096).
    pub sector_size: u64,
    /// Whether the primary header was unusable and the backup was read.
    pub from_backup: bool,
    /// First usable sector.
    pub first_usable_lba: u64,
    /// Last usable sector.
    pub last_usable_lba: u64,
    /// Used entries, in table order.
    pub partitions: Vec<PartitionInfo>,
}

impl GptTable {
    /// The partition with unique GUID `guid`.
    pub fn by_guid(&self, guid: Guid) -> Option<&PartitionInfo> {
        self.partitions.iter().find(|p| p.guid == guid)
    }

    /// The first partition named `name`.
    pub fn by_name(&self, name: &str) -> Option<&PartitionInfo> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// What was wrong with the primary and backup tables.
#[derive(Debug)]
pub struct Corruption {
    primary: Problem,
    backup: Problem,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "primary header: {}; backup header: {}",
            self.primary, self.backup
        )
    }
}

/// One reason a header or its entries were rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
enum Problem {
    DeviceTooSmall,
    NoSignature,
    BadRevision(u32),
    BadHeaderSize(u32),
    HeaderCrc,
    WrongLba { expected: u64, found: u64 },
    BadUsableRange,
    BadEntryGeometry,
    EntriesOutsideDevice,
    EntriesCrc,
    BadPartition(u32),
    ReadFailed(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::DeviceTooSmall => write!(f, "device too small for a GPT"),
            Problem::NoSignature => write!(f, "no 'EFI PART' signature"),
            Problem::BadRevision(r) => write!(f, "unsupported revision {r:#x}"),
            Problem::BadHeaderSize(s) => write!(f, "invalid header size {s}"),
            Problem::HeaderCrc => write!(f, "header CRC mismatch"),
            Problem::WrongLba { expected, found } => {
                write!(f, "header at LBA {expected} says it is at LBA {found}")
            }
            Problem::BadUsableRange => write!(f, "usable range is outside the device"),
            Problem::BadEntryGeometry => write!(f, "implausible partition entry count or size"),
            Problem::EntriesOutsideDevice => write!(f, "partition entries lie outside the device"),
            Problem::EntriesCrc => write!(f, "partition entry array CRC mismatch"),
            Problem::BadPartition(n) => write!(f, "partition {n} lies outside the usable range"),
            Problem::ReadFailed(e) => write!(f, "read failed: {e}"),
        }
    }
}

/// A checked header: the fields the reader uses, and its bytes as stored
/// (for rewriting it, see `grow`).
#[derive(Debug, Clone)]
pub(super) struct Header {
    /// Where this header is (`MyLBA`).
    pub my_lba: u64,
    /// Where the other header is.
    pub alternate_lba: u64,
    /// First usable sector.
    pub first_usable: u64,
    /// Last usable sector.
    pub last_usable: u64,
    /// Disk GUID.
    pub disk_guid: Guid,
    /// First sector of the entry array.
    pub entries_lba: u64,
    /// Entries in the array.
    pub entry_count: u32,
    /// Bytes per entry.
    pub entry_size: u32,
    /// CRC32 of the entry array.
    pub entries_crc: u32,
    /// The header's `HeaderSize` bytes as read.
    pub raw: Vec<u8>,
}

impl Header {
    /// Bytes of the entry array.
    pub fn entries_bytes(&self) -> u64 {
        u64::from(self.entry_count) * u64::from(self.entry_size)
    }
}

/// A valid table as stored: the header it was read from and its raw entry
/// array, for rewriting it (see `grow`).
#[derive(Debug)]
pub(super) struct RawTable {
    /// What the table says.
    pub table: GptTable,
    /// The header that was used (the primary unless `table.from_backup`).
    pub header: Header,
    /// The entry array, `header.entries_bytes()` long.
    pub entries: Vec<u8>,
    /// Size of the device in bytes.
    pub device_len: u64,
}

/// Reads and checks the partition table of `dev` (a disk image or block device).
pub fn read_table(dev: &mut (impl Read + Seek)) -> Result<GptTable, GptError> {
    Ok(read_raw(dev)?.table)
}

/// [`read_table`], keeping the header and entry array as stored.
pub(super) fn read_raw(dev: &mut (impl Read + Seek)) -> Result<RawTable, GptError> {
    let len = dev.seek(SeekFrom::End(0)).map_err(|source| GptError::Io {
        context: "finding the size of the disk".into(),
        source,
    })?;
    let mut first_failure = None;
    for sector in [512u64, 4096] {
        match read_with_sector_size(dev, len, sector) {
            Ok(t) => return Ok(t),
            // A 4096-byte-sector table is tried only if no signature was seen at 512.
            Err(c) if c.primary == Problem::NoSignature && c.backup == Problem::NoSignature => {
                first_failure.get_or_insert(c);
            }
            Err(c) => return Err(GptError::Corrupt(c)),
        }
    }
    Err(GptError::Corrupt(first_failure.expect("two attempts ran")))
}

/// The entry array of the table copy whose header is at `lba`, if that
/// copy is valid (header and entry CRCs).
pub(super) fn read_copy(
    dev: &mut (impl Read + Seek),
    lba: u64,
    sector: u64,
    total: u64,
) -> Option<Vec<u8>> {
    let h = read_header(dev, lba, sector, total).ok()?;
    read_entries(dev, &h, sector, total)
        .ok()
        .map(|(_, arr)| arr)
}

/// The used partitions of `dev`'s table; see [`read_table`].
pub fn read_partitions(dev: &mut (impl Read + Seek)) -> Result<Vec<PartitionInfo>, GptError> {
    Ok(read_table(dev)?.partitions)
}

fn read_with_sector_size(
    dev: &mut (impl Read + Seek),
    len: u64,
    sector: u64,
) -> Result<RawTable, Corruption> {
    let total = len / sector;
    if total < 3 {
        return Err(Corruption {
            primary: Problem::DeviceTooSmall,
            backup: Problem::DeviceTooSmall,
        });
    }
    let primary = read_header(dev, 1, sector, total);
    let primary_err = match primary {
        Ok(h) => match read_entries(dev, &h, sector, total) {
            Ok((parts, arr)) => return Ok(raw_table(h, sector, len, false, parts, arr)),
            Err(p) => (p, Some(h.alternate_lba)),
        },
        Err((p, alternate)) => (p, alternate),
    };
    // Backup: at the end of the device, or where a header with a valid CRC
    // (only its entries being bad) says it is.
    let mut candidates = vec![total - 1];
    if let Some(alt) = primary_err
        .1
        .filter(|a| *a != total - 1 && *a > 1 && *a < total)
    {
        candidates.push(alt);
    }
    let mut backup_err = Problem::NoSignature;
    for (i, lba) in candidates.into_iter().enumerate() {
        let res = read_header(dev, lba, sector, total)
            .map_err(|e| e.0)
            .and_then(|h| read_entries(dev, &h, sector, total).map(|p| (h, p)));
        match res {
            Ok((h, (parts, arr))) => return Ok(raw_table(h, sector, len, true, parts, arr)),
            Err(p) if i == 0 || p != Problem::NoSignature => backup_err = p,
            Err(_) => {}
        }
    }
    Err(Corruption {
        primary: primary_err.0,
        backup: backup_err,
    })
}

fn raw_table(
    header: Header,
    sector: u64,
    device_len: u64,
    from_backup: bool,
    partitions: Vec<PartitionInfo>,
    entries: Vec<u8>,
) -> RawTable {
    RawTable {
        table: GptTable {
            disk_guid: header.disk_guid,
            sector_size: sector,
            from_backup,
            first_usable_lba: header.first_usable,
            last_usable_lba: header.last_usable,
            partitions,
        },
        header,
        entries,
        device_len,
    }
}

fn read_exact_at(dev: &mut (impl Read + Seek), off: u64, buf: &mut [u8]) -> io::Result<()> {
    dev.seek(SeekFrom::Start(off))?;
    dev.read_exact(buf)
}

/// Reads and checks the header at `lba`. On failure, also returns the
/// alternate LBA if the header's CRC was valid.
fn read_header(
    dev: &mut (impl Read + Seek),
    lba: u64,
    sector: u64,
    total: u64,
) -> Result<Header, (Problem, Option<u64>)> {
    let mut b = vec![0u8; sector as usize];
    read_exact_at(dev, lba * sector, &mut b)
        .map_err(|e| (Problem::ReadFailed(e.to_string()), None))?;
    if &b[..8] != SIGNATURE {
        return Err((Problem::NoSignature, None));
    }
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let revision = u32_at(8);
    if revision >> 16 != 1 {
        return Err((Problem::BadRevision(revision), None));
    }
    let size = u32_at(12);
    if size < 92 || u64::from(size) > sector {
        return Err((Problem::BadHeaderSize(size), None));
    }
    let stored_crc = u32_at(16);
    let mut covered = b[..size as usize].to_vec();
    covered[16..20].fill(0);
    if crc32fast::hash(&covered) != stored_crc {
        return Err((Problem::HeaderCrc, None));
    }
    let alternate = u64_at(32);
    let my_lba = u64_at(24);
    if my_lba != lba {
        return Err((
            Problem::WrongLba {
                expected: lba,
                found: my_lba,
            },
            Some(alternate),
        ));
    }
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&b[56..72]);
    let h = Header {
        my_lba,
        alternate_lba: alternate,
        first_usable: u64_at(40),
        last_usable: u64_at(48),
        disk_guid: Guid::from_disk_bytes(guid),
        entries_lba: u64_at(72),
        entry_count: u32_at(80),
        entry_size: u32_at(84),
        entries_crc: u32_at(88),
        raw: b[..size as usize].to_vec(),
    };
    if h.first_usable > h.last_usable.saturating_add(1) || h.last_usable >= total {
        return Err((Problem::BadUsableRange, Some(alternate)));
    }
    Ok(h)
}

/// Reads the entry array of `h`, checks its CRC and returns the used
/// entries and the array as stored.
fn read_entries(
    dev: &mut (impl Read + Seek),
    h: &Header,
    sector: u64,
    total: u64,
) -> Result<(Vec<PartitionInfo>, Vec<u8>), Problem> {
    let esize = u64::from(h.entry_size);
    let bytes = h.entries_bytes();
    if esize < 128 || esize % 8 != 0 || bytes == 0 || bytes > MAX_ARRAY_BYTES {
        return Err(Problem::BadEntryGeometry);
    }
    let end_lba = h.entries_lba + bytes.div_ceil(sector);
    if h.entries_lba < 2 || end_lba > total {
        return Err(Problem::EntriesOutsideDevice);
    }
    let mut arr = vec![0u8; bytes as usize];
    read_exact_at(dev, h.entries_lba * sector, &mut arr)
        .map_err(|e| Problem::ReadFailed(e.to_string()))?;
    if crc32fast::hash(&arr) != h.entries_crc {
        return Err(Problem::EntriesCrc);
    }
    let mut out = Vec::new();
    for (i, e) in arr.chunks_exact(esize as usize).enumerate() {
        let guid_at = |o: usize| {
            let mut g = [0u8; 16];
            g.copy_from_slice(&e[o..o + 16]);
            Guid::from_disk_bytes(g)
        };
        let type_guid = guid_at(0);
        if type_guid.is_nil() {
            continue;
        }
        let number = i as u32 + 1;
        let u64_at = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().expect("8 bytes"));
        let (first_lba, last_lba) = (u64_at(32), u64_at(40));
        if first_lba > last_lba || first_lba < h.first_usable || last_lba > h.last_usable {
            return Err(Problem::BadPartition(number));
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        out.push(PartitionInfo {
            number,
            name: String::from_utf16_lossy(&units),
            type_guid,
            guid: guid_at(16),
            first_lba,
            last_lba,
            attributes: u64_at(48),
        });
    }
    Ok((out, arr))
}
