//! FAT12/16/32 images for the EFI system partition, written with `fatfs`.
//!
//! [`write_fat`] formats a zero-filled region with `fatfs`, creates every
//! directory and file of a [`Tree`] in [`Tree::walk`] order (long file names,
//! contents streamed from the host), and then runs a finishing pass over the
//! directories it wrote (module `finish`): `fatfs` 0.3.6 puts long-name slots
//! in front of the `.`/`..` entries (fsck.fat rejects that), points `..` of
//! top-level FAT32 directories at cluster 2 instead of 0, gives names that
//! start with a dot an empty short-name base, leaves the FSInfo free count
//! unset and takes timestamps from a clock. The pass repairs the first four
//! and stamps every entry with its node's mtime, so the image depends only
//! on the tree, the label and SOURCE_DATE_EPOCH.
//!
//! FAT32 is chosen whenever the size allows it (from about 33 MiB), since
//! UEFI firmware expects FAT32 on a fixed-disk ESP; smaller volumes get FAT16
//! and then FAT12. FAT has no owners, modes, links or special files: owners
//! and modes are dropped, hard-linked files are stored once per name, and
//! symlinks, devices, fifos and sockets are refused with their path.

mod cache;
mod dos_time;
mod finish;
mod geometry;
mod names;

pub use dos_time::DosTime;
pub use geometry::{FatKind, Geometry};

use super::contents::{CopyError, copy_contents};
use crate::progress::Progress;
use crate::tree::{NodeId, NodeKind, Timestamp, Tree};
use crate::units::{Bytes, MIB};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// How to build a FAT image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FatOptions {
    /// Image size; `None` means the size of the storage handed to
    /// [`write_fat`] (see [`required_size`] and [`default_size`]).
    pub size: Option<Bytes>,
    /// Volume label: up to 11 ASCII characters, stored upper-case; empty
    /// means `NO NAME`.
    pub label: String,
    /// Volume serial number; `None` derives it from the label and content.
    pub volume_id: Option<u32>,
    /// SOURCE_DATE_EPOCH: later mtimes are clamped to it.
    pub timestamp: Option<i64>,
}

/// What [`write_fat`] produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FatSummary {
    /// Image size.
    pub size: Bytes,
    /// FAT variant.
    pub kind: FatKind,
    /// Bytes per cluster.
    pub cluster_size: u64,
    /// Volume serial number.
    pub volume_id: u32,
    /// Volume label as stored.
    pub label: String,
    /// Regular files written (a hard-linked file counts once per name).
    pub files: u64,
    /// Directories written, not counting the root.
    pub directories: u64,
    /// Bytes of file contents written.
    pub data_bytes: u64,
    /// Free space left in the image.
    pub free_bytes: u64,
}

/// Why a FAT image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    /// Reading a source file or writing the image failed.
    #[error("{context}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The tree holds something FAT cannot represent.
    #[error("{path}: {reason}")]
    Unsupported {
        /// Path of the offending node in the tree.
        path: String,
        /// What FAT cannot store.
        reason: String,
    },
    /// The content does not fit in the requested size.
    #[error(
        "tree needs at least {} MiB, the image size is {} MiB",
        needed.mib_ceil(),
        size.get() / MIB
    )]
    TooSmall {
        /// Smallest size that holds the tree.
        needed: Bytes,
        /// The size asked for.
        size: Bytes,
    },
    /// An option is unusable (label, size).
    #[error("{0}")]
    InvalidOption(String),
    /// fatfs produced something the finishing pass did not expect (a bug).
    #[error("internal error finishing the FAT image: {0}")]
    Internal(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> FatError {
    let context = context.into();
    move |source| FatError::Io { context, source }
}

/// The largest file FAT can store.
const MAX_FILE_SIZE: u64 = u32::MAX as u64;
/// A FAT directory holds at most 65536 slots.
const MAX_DIR_SLOTS: u64 = 65_536;

/// The smallest image (a whole number of MiB) that holds `tree` with the
/// label in `opts`; `opts.size` is not consulted.
pub fn required_size(tree: &Tree, opts: &FatOptions) -> Result<Bytes, FatError> {
    let survey = {
        label_bytes(&opts.label)?;
        Survey::of(tree)?
    };
    survey.smallest_fit(survey.lower_bound())
}

/// [`required_size`] plus modest headroom (a tenth, at least 1 MiB): the size
/// `slate mkfs fat` uses when no `--size` is given.
pub fn default_size(tree: &Tree, opts: &FatOptions) -> Result<Bytes, FatError> {
    let survey = {
        label_bytes(&opts.label)?;
        Survey::of(tree)?
    };
    let min = survey.smallest_fit(survey.lower_bound())?.get();
    let headroom = (min / 10).max(MIB);
    let target = (min + headroom).next_multiple_of(MIB);
    survey.smallest_fit(target)
}

/// Formats `storage` (zero-filled, `opts.size` bytes or its whole length)
/// as FAT and writes `tree` into it. Contents are streamed from their
/// sources; nothing but directory metadata is held in memory.
pub fn write_fat<S: Read + Write + Seek>(
    tree: &Tree,
    opts: &FatOptions,
    mut storage: S,
) -> Result<FatSummary, FatError> {
    let label = label_bytes(&opts.label)?;
    let survey = Survey::of(tree)?;
    let len = storage
        .seek(SeekFrom::End(0))
        .map_err(io_err("finding the size of the FAT image"))?;
    let size = match opts.size {
        Some(s) if s.get() != len => {
            return Err(FatError::InvalidOption(format!(
                "the FAT image is {len} bytes but its size is set to {} bytes",
                s.get()
            )));
        }
        _ => len,
    };
    let geo = Geometry::for_size(size).ok_or_else(|| {
        FatError::InvalidOption(if size % geometry::SECTOR != 0 {
            format!("FAT image size {size} is not a multiple of 512 bytes")
        } else if size < MIB {
            format!("FAT image size {size} is too small for a FAT filesystem")
        } else {
            format!(
                "FAT image size {} is too large (FAT stops below 2 TiB)",
                Bytes(size)
            )
        })
    })?;
    if !survey.fits(&geo) {
        let needed = survey.smallest_fit(survey.lower_bound())?;
        return Err(FatError::TooSmall {
            needed,
            size: Bytes(size),
        });
    }

    let mut storage = cache::BlockCache::new(storage, size);
    let format = fatfs::FormatVolumeOptions::new()
        .bytes_per_sector(geometry::SECTOR as u16)
        .bytes_per_cluster(geo.cluster_bytes() as u32)
        .total_sectors(geo.total_sectors as u32)
        .fats(2)
        .volume_id(0)
        .volume_label(label);
    fatfs::format_volume(&mut storage, format).map_err(io_err("formatting the FAT image"))?;
    storage
        .seek(SeekFrom::Start(0))
        .map_err(io_err("seeking in the FAT image"))?;

    let mut hasher = Sha256::new();
    hasher.update(label);
    let mut counts = Counts::default();
    {
        let fs = fatfs::FileSystem::new(
            &mut storage,
            fatfs::FsOptions::new()
                .time_provider(&FIXED_CLOCK)
                .update_accessed_date(false),
        )
        .map_err(io_err("opening the new FAT image"))?;
        let kind = match fs.fat_type() {
            fatfs::FatType::Fat12 => FatKind::Fat12,
            fatfs::FatType::Fat16 => FatKind::Fat16,
            fatfs::FatType::Fat32 => FatKind::Fat32,
        };
        if kind != geo.kind || u64::from(fs.cluster_size()) != geo.cluster_bytes() {
            return Err(FatError::Internal(format!(
                "fatfs formatted {kind} with {}-byte clusters, expected {} with {}",
                fs.cluster_size(),
                geo.kind,
                geo.cluster_bytes()
            )));
        }
        populate(tree, &fs, opts.timestamp, &mut hasher, &mut counts)?;
        fs.unmount().map_err(io_err("closing the FAT image"))?;
    }

    let volume_id = opts.volume_id.unwrap_or_else(|| {
        let d = hasher.finalize();
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    });
    let stamp =
        |id: NodeId| DosTime::from_timestamp(clamped(tree.node(id).meta.mtime, opts.timestamp));
    let free_clusters = finish::finish(&mut storage, &geo, tree, volume_id, &stamp)?;
    storage.flush().map_err(io_err("writing the FAT image"))?;

    Ok(FatSummary {
        size: Bytes(size),
        kind: geo.kind,
        cluster_size: geo.cluster_bytes(),
        volume_id,
        label: String::from_utf8_lossy(&label).trim_end().to_string(),
        files: counts.files,
        directories: counts.dirs,
        data_bytes: counts.bytes,
        free_bytes: free_clusters * geo.cluster_bytes(),
    })
}

/// `t` clamped to SOURCE_DATE_EPOCH.
fn clamped(t: Timestamp, epoch: Option<i64>) -> Timestamp {
    match epoch {
        Some(e) if t > Timestamp::from_secs(e) => Timestamp::from_secs(e),
        _ => t,
    }
}

/// The label as the 11 space-padded bytes FAT stores.
fn label_bytes(label: &str) -> Result<[u8; 11], FatError> {
    let label = if label.is_empty() { "NO NAME" } else { label };
    let bad = |why: &str| FatError::InvalidOption(format!("volume label {label:?}: {why}"));
    if label.len() > 11 {
        return Err(bad("longer than 11 characters"));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !c.is_ascii_graphic() && *c != ' ' || "\"*+,./:;<=>?[\\]|".contains(*c))
    {
        return Err(bad(&format!("FAT labels cannot contain {c:?}")));
    }
    if label.starts_with(' ') {
        return Err(bad("starts with a space"));
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.to_ascii_uppercase().as_bytes());
    Ok(out)
}

/// A `fatfs` clock that never reads the wall clock; the finishing pass
/// stamps the real times afterwards.
#[derive(Debug)]
struct FixedClock;

static FIXED_CLOCK: FixedClock = FixedClock;

impl fatfs::TimeProvider for FixedClock {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    files: u64,
    dirs: u64,
    bytes: u64,
}

/// Creates every directory and file of `tree` in walk order.
fn populate<T: fatfs::ReadWriteSeek>(
    tree: &Tree,
    fs: &fatfs::FileSystem<T>,
    epoch: Option<i64>,
    hasher: &mut Sha256,
    counts: &mut Counts,
) -> Result<(), FatError> {
    // FAT has no holes: every file is written at its full apparent size.
    let total = tree
        .walk()
        .iter()
        .map(|e| match &tree.node(e.id).kind {
            NodeKind::File(f) => f.size,
            _ => 0,
        })
        .sum();
    let progress = Progress::bytes(total, "fat");
    let mut buf = vec![0u8; 256 * 1024];
    // Open directories from the root down to the current entry's parent.
    let mut dirs = vec![fs.root_dir()];
    let mut path: Vec<&str> = Vec::new();
    for e in tree.walk().into_iter().skip(1) {
        dirs.truncate(e.depth);
        path.truncate(e.depth - 1);
        // Checked by Survey::of.
        let name = names::check_name(e.name).map_err(|r| FatError::Internal(r.into()))?;
        path.push(name);
        let node = tree.node(e.id);
        let mtime = clamped(node.meta.mtime, epoch);
        hasher.update((e.depth as u64).to_le_bytes());
        hasher.update((e.name.len() as u64).to_le_bytes());
        hasher.update(e.name);
        hasher.update(mtime.secs.to_le_bytes());
        let parent = &dirs[e.depth - 1];
        match &node.kind {
            NodeKind::Directory(_) => {
                hasher.update(b"d");
                let d = parent.create_dir(name).map_err(io_err(format!(
                    "creating directory /{} in the FAT image",
                    path.join("/")
                )))?;
                dirs.push(d);
                counts.dirs += 1;
            }
            NodeKind::File(data) => {
                hasher.update(b"f");
                hasher.update(data.size.to_le_bytes());
                let shown = format!("/{}", path.join("/"));
                let mut f = parent
                    .create_file(name)
                    .map_err(io_err(format!("creating {shown} in the FAT image")))?;
                let mut sink = HashingWriter {
                    inner: &mut f,
                    hasher: &mut *hasher,
                    progress: &progress,
                };
                copy_contents(data, &mut sink, &mut buf).map_err(|e| match e {
                    CopyError::Read(src, source) => FatError::Io {
                        context: format!("reading {src}"),
                        source,
                    },
                    CopyError::Write(source) => FatError::Io {
                        context: format!("writing {shown} into the FAT image"),
                        source,
                    },
                })?;
                f.flush()
                    .map_err(io_err(format!("writing {shown} into the FAT image")))?;
                counts.files += 1;
                counts.bytes += data.size;
            }
            _ => {
                return Err(FatError::Internal(
                    "unsupported node passed the survey".into(),
                ));
            }
        }
    }
    progress.finish();
    Ok(())
}

/// Feeds everything written into the volume-id hash and the progress bar.
struct HashingWriter<'a, W> {
    inner: W,
    hasher: &'a mut Sha256,
    progress: &'a Progress,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.progress.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What a tree needs from a FAT volume, independent of its size.
#[derive(Debug)]
struct Survey {
    /// Size of every file, once per name.
    file_sizes: Vec<u64>,
    /// Slots each subdirectory needs (its entries, plus `.`/`..` with the
    /// long-name slots fatfs gives them).
    dir_slots: Vec<u64>,
    /// Slots the root needs (its entries plus the volume label).
    root_slots: u64,
    data_bytes: u64,
}

impl Survey {
    /// Checks that FAT can hold every node and counts what it needs.
    fn of(tree: &Tree) -> Result<Survey, FatError> {
        let mut s = Survey {
            file_sizes: Vec::new(),
            dir_slots: Vec::new(),
            root_slots: 1,
            data_bytes: 0,
        };
        // Directory -> (its path for messages, slots so far, folded names seen).
        let mut open: HashMap<NodeId, (String, u64, BTreeMap<String, String>)> = HashMap::new();
        open.insert(NodeId::ROOT, (String::new(), 1, BTreeMap::new()));
        for e in tree.walk().into_iter().skip(1) {
            let (parent_path, slots, seen) = open.get_mut(&e.parent).ok_or_else(|| {
                FatError::Internal("walk visited a child before its parent".into())
            })?;
            let shown = format!("{parent_path}/{}", String::from_utf8_lossy(e.name));
            let name = names::check_name(e.name).map_err(|reason| FatError::Unsupported {
                path: shown.clone(),
                reason: reason.to_string(),
            })?;
            if let Some(other) = seen.insert(names::fold_case(name), name.to_string()) {
                return Err(FatError::Unsupported {
                    path: shown,
                    reason: format!("FAT ignores case, and {other:?} is in the same directory"),
                });
            }
            *slots += names::slots(name);
            if *slots > MAX_DIR_SLOTS {
                return Err(FatError::Unsupported {
                    path: parent_path.clone() + "/",
                    reason: "too many entries for a FAT directory".into(),
                });
            }
            let node = tree.node(e.id);
            match &node.kind {
                NodeKind::Directory(_) => {
                    // fatfs writes "." and ".." each with a long-name slot.
                    open.insert(e.id, (shown, 4, BTreeMap::new()));
                }
                NodeKind::File(f) => {
                    if f.size > MAX_FILE_SIZE {
                        return Err(FatError::Unsupported {
                            path: shown,
                            reason: format!(
                                "file is {} bytes; FAT stores at most {MAX_FILE_SIZE}",
                                f.size
                            ),
                        });
                    }
                    s.file_sizes.push(f.size);
                    s.data_bytes += f.size;
                }
                other => {
                    let what = match other {
                        NodeKind::Symlink(_) => "a symlink",
                        NodeKind::CharDevice(_) => "a character device",
                        NodeKind::BlockDevice(_) => "a block device",
                        NodeKind::Fifo => "a fifo",
                        _ => "a socket",
                    };
                    return Err(FatError::Unsupported {
                        path: shown,
                        reason: format!("FAT cannot store {what}"),
                    });
                }
            }
        }
        for (id, (_, slots, _)) in open {
            if id == NodeId::ROOT {
                s.root_slots = slots;
            } else {
                s.dir_slots.push(slots);
            }
        }
        // HashMap order must not leak into anything observable.
        s.dir_slots.sort_unstable();
        Ok(s)
    }

    /// Clusters the content takes on `geo`.
    fn clusters(&self, geo: &Geometry) -> u64 {
        let cb = geo.cluster_bytes();
        let files: u64 = self.file_sizes.iter().map(|s| s.div_ceil(cb)).sum();
        let dirs: u64 = self.dir_slots.iter().map(|s| (s * 32).div_ceil(cb)).sum();
        let root = if geo.kind == FatKind::Fat32 {
            (self.root_slots * 32).div_ceil(cb)
        } else {
            0
        };
        files + dirs + root
    }

    fn fits(&self, geo: &Geometry) -> bool {
        let root_ok =
            geo.kind == FatKind::Fat32 || self.root_slots <= u64::from(geometry::ROOT_ENTRIES);
        root_ok && self.clusters(geo) <= geo.clusters
    }

    /// A size below which the tree cannot fit, to start searching from.
    fn lower_bound(&self) -> u64 {
        self.data_bytes.next_multiple_of(MIB).max(MIB)
    }

    /// The smallest whole number of MiB, from `start`, whose volume holds the tree.
    fn smallest_fit(&self, start: u64) -> Result<Bytes, FatError> {
        let mut size = start.next_multiple_of(MIB);
        loop {
            match Geometry::for_size(size) {
                Some(g) if self.fits(&g) => return Ok(Bytes(size)),
                Some(_) => {}
                None if size >= 2 << 40 => {
                    return Err(FatError::Unsupported {
                        path: "/".into(),
                        reason: "the tree is too large for a FAT filesystem".into(),
                    });
                }
                None => {}
            }
            size += MIB;
        }
    }
}

#[cfg(test)]
mod tests;
