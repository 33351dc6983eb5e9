//! What a disk image or a build directory holds, read the way a device
//! would: the GPT, the boot entries on the ESP, each slot's root filesystem
//! (its `/etc/os-release`), for `slate inspect` (docs/json.md).

use crate::boot_env::systemd_boot::EntryName;
use crate::build_manifest::BuildManifest;
use crate::filesystems::gpt;
use serde::Serialize;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// One GPT partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    /// 1-based number.
    pub number: u32,
    /// GPT name (esp, root-a, root-b, data).
    pub name: String,
    /// Type GUID.
    pub type_guid: String,
    /// Unique GUID (PARTUUID).
    pub guid: String,
    /// Byte offset in the disk.
    pub offset: u64,
    /// Byte length.
    pub size: u64,
    /// `ext4`, `vfat`, or `null` when neither is found.
    pub filesystem: Option<String>,
}

/// A root slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotInfo {
    /// Its partition number.
    pub partition: u32,
    /// `IMAGE_VERSION` from the slot's /etc/os-release (`null` if unreadable).
    pub version: Option<String>,
    /// Image name (`IMAGE_ID`).
    pub image: Option<String>,
    /// Regular files, directories and symlinks in the slot.
    pub files: u64,
    /// The slot's boot entry on the ESP, if any.
    pub boot_entry: Option<String>,
    /// `good`, `trying`, `bad`, or `unbootable` (no entry).
    pub boot_state: String,
}

/// A file on the ESP.
#[derive(Debug, Clone, Serialize)]
pub struct EspFile {
    /// Path on the ESP.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// A disk image.
#[derive(Debug, Clone, Serialize)]
pub struct DiskInfo {
    /// Bytes.
    pub size: u64,
    /// Disk GUID.
    pub disk_guid: String,
    /// Partitions in table order.
    pub partitions: Vec<PartitionInfo>,
    /// Slots `A` and `B`.
    pub slots: std::collections::BTreeMap<String, SlotInfo>,
    /// Every file on the ESP, sorted.
    pub esp_files: Vec<EspFile>,
}

/// A region of a file, read-only, as the reader fatfs wants.
struct Region {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Region {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        let n = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Region {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Region {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let p = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = p.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

/// A partition as ext4-view reads it.
struct Ext4Region {
    file: File,
    start: u64,
    len: u64,
}

impl ext4_view::Ext4Read for Ext4Region {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn core::error::Error + Send + Sync + 'static>> {
        if start_byte.saturating_add(dst.len() as u64) > self.len {
            return Err("read past the end of the partition".into());
        }
        self.file.read_exact_at(dst, self.start + start_byte)?;
        Ok(())
    }
}

fn filesystem(file: &File, offset: u64) -> Option<String> {
    let mut b = [0u8; 1024 + 0x3a];
    file.read_exact_at(&mut b, offset).ok()?;
    if u16::from_le_bytes([b[1024 + 0x38], b[1024 + 0x39]]) == 0xEF53 {
        return Some("ext4".into());
    }
    (b[510] == 0x55 && b[511] == 0xaa && (&b[0x52..0x57] == b"FAT32" || &b[0x36..0x39] == b"FAT"))
        .then(|| "vfat".into())
}

/// Boot entry files on the ESP: (file name, text).
type EntryTexts = Vec<(String, String)>;

fn esp_listing(file: &File, p: &PartitionInfo) -> io::Result<(Vec<EspFile>, EntryTexts)> {
    let region = Region {
        file: file.try_clone()?,
        start: p.offset,
        len: p.size,
        pos: 0,
    };
    let fs = fatfs::FileSystem::new(region, fatfs::FsOptions::new())?;
    let mut files = Vec::new();
    let mut entries = Vec::new();
    let mut stack = vec![(String::new(), fs.root_dir())];
    while let Some((prefix, dir)) = stack.pop() {
        for e in dir.iter() {
            let e = e?;
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let path = format!("{prefix}/{name}");
            if e.is_dir() {
                stack.push((path, e.to_dir()));
            } else {
                if prefix.eq_ignore_ascii_case("/loader/entries") {
                    let mut text = String::new();
                    e.to_file().read_to_string(&mut text)?;
                    entries.push((name.clone(), text));
                }
                files.push(EspFile {
                    path,
                    size: e.len(),
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((files, entries))
}

fn count_files(
    fs: &ext4_view::Ext4,
    dir: ext4_view::PathBuf,
    n: &mut u64,
) -> Result<(), ext4_view::Ext4Error> {
    for e in fs.read_dir(&dir)? {
        let e = e?;
        let name = e.file_name();
        if name.as_ref() == b"." || name.as_ref() == b".." {
            continue;
        }
        *n += 1;
        if e.file_type()?.is_dir() {
            count_files(fs, e.path(), n)?;
        }
    }
    Ok(())
}

fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
    })
}

fn slot_info(file: &File, p: &PartitionInfo, entry: Option<&(String, EntryName)>) -> SlotInfo {
    let mut info = SlotInfo {
        partition: p.number,
        version: None,
        image: None,
        files: 0,
        boot_entry: entry.map(|(n, _)| n.clone()),
        boot_state: entry
            .map(|(_, e)| e.state().word().to_string())
            .unwrap_or_else(|| "unbootable".into()),
    };
    let Ok(clone) = file.try_clone() else {
        return info;
    };
    let reader = Ext4Region {
        file: clone,
        start: p.offset,
        len: p.size,
    };
    if let Ok(fs) = ext4_view::Ext4::load(Box::new(reader)) {
        if let Ok(text) = fs.read_to_string("/etc/os-release") {
            info.version = os_release_field(&text, "IMAGE_VERSION");
            info.image = os_release_field(&text, "IMAGE_ID");
        }
        let mut n = 0;
        if count_files(&fs, ext4_view::PathBuf::new("/"), &mut n).is_ok() {
            info.files = n;
        }
    }
    info
}

/// Reads a disk image.
pub fn inspect_disk(path: &Path) -> io::Result<DiskInfo> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let table = gpt::read_table(&mut file)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let ss = table.sector_size;
    let partitions: Vec<PartitionInfo> = table
        .partitions
        .iter()
        .map(|p| PartitionInfo {
            number: p.number,
            name: p.name.clone(),
            type_guid: p.type_guid.to_string(),
            guid: p.guid.to_string(),
            offset: p.offset(ss),
            size: p.size(ss),
            filesystem: filesystem(&file, p.offset(ss)),
        })
        .collect();
    let (esp_files, entry_texts) = match partitions.iter().find(|p| p.name == "esp") {
        Some(p) => esp_listing(&file, p)?,
        None => (Vec::new(), Vec::new()),
    };
    // The newest entry of each slot (the one systemd-boot would pick).
    let mut entries: Vec<(String, EntryName)> = entry_texts
        .iter()
        .filter_map(|(n, _)| EntryName::parse(n).map(|e| (n.clone(), e)))
        .collect();
    entries.sort_by_key(|(_, e)| std::cmp::Reverse(e.generation));
    let mut slots = std::collections::BTreeMap::new();
    for (slot, name) in [("A", "root-a"), ("B", "root-b")] {
        if let Some(p) = partitions.iter().find(|p| p.name == name) {
            let entry = entries.iter().find(|(_, e)| e.slot.to_string() == slot);
            slots.insert(slot.to_string(), slot_info(&file, p, entry));
        }
    }
    Ok(DiskInfo {
        size,
        disk_guid: table.disk_guid.to_string(),
        partitions,
        slots,
        esp_files,
    })
}

/// A build directory: its manifest and its disk.
#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    /// The build manifest.
    pub manifest: BuildManifest,
    /// The disk image, if the build has one.
    pub disk: Option<DiskInfo>,
}

/// Reads a build directory.
pub fn inspect_build(dir: &Path) -> anyhow::Result<BuildInfo> {
    use anyhow::Context;
    let manifest = BuildManifest::load(dir)?;
    let disk = match &manifest.disk {
        Some(d) => Some(
            inspect_disk(&dir.join(&d.file))
                .with_context(|| format!("reading {}", dir.join(&d.file).display()))?,
        ),
        None => None,
    };
    Ok(BuildInfo { manifest, disk })
}
