//! A from-scratch ext4 writer: turns a [`Tree`] into a filesystem image
//! without root, loop devices or e2fsprogs.
//!
//! The image has 4 KiB blocks, 256-byte inodes, extents, `flex_bg`,
//! `sparse_super`, `large_file`, `huge_file`, `dir_nlink`, `extra_isize`,
//! `64bit`, `metadata_csum` and, on request, an empty internal journal.
//! Directories of more than one block get an htree index. Everything is
//! deterministic: the UUID and directory hash seed come from the options or
//! are derived from the label and a digest of the tree and its contents, and
//! no time but the tree's and [`Ext4Options::timestamp`] is used.
//!
//! Writing is planned first ([`Ext4Plan::new`]: inode numbers, directory
//! layouts, block groups and every block's location, all pure functions),
//! then done in one streaming pass ([`Ext4Plan::write`]) that reads file
//! contents in large chunks, writes in ascending order and skips all-zero
//! blocks, so memory does not depend on file sizes and the output is sparse.
//! See `docs/ext4-writer.md` for the layout choices.
//!
//! [`read_size`] reads an existing filesystem's size back (the agent grows
//! /data online by it).

mod alloc;
mod block_writer;
mod checksum;
mod dir;
mod dirhash;
mod extent;
mod geometry;
mod identity;
mod inode;
mod journal;
mod layout;
mod plan;
mod probe;
mod superblock;
mod write;
mod xattr;

pub use identity::{IdentityError, SuperblockPatch, read_uuid, uuid_patches};
pub use layout::{
    Ext4Layout, LAYOUT_FORMAT, LAYOUT_VERSION, LayoutError, LayoutGroup, LayoutInode, LayoutXattr,
};
pub use probe::{Ext4Size, ProbeError, read_size};

use crate::progress::Progress;
use crate::tree::Tree;
use crate::units::{Bytes, MIB};
use geometry::BLOCK_SIZE;
use plan::{AllocError, Demand, Layout};
use std::io::{Seek, Write};
use std::path::PathBuf;

/// How to build an ext4 image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Options {
    /// Image size; `None` picks [`required_size`] plus headroom (10%, at least 1 MiB).
    pub size: Option<Bytes>,
    /// Volume label, at most 16 bytes.
    pub label: String,
    /// Filesystem UUID; `None` derives it from the label, a digest of the
    /// tree's names and metadata, and CRC32Cs of its file contents.
    pub uuid: Option<[u8; 16]>,
    /// Directory hash seed; `None` derives it from the UUID if given, else
    /// from the label and the tree's metadata.
    pub hash_seed: Option<[u8; 16]>,
    /// Create an empty internal journal (for writable filesystems).
    pub journal: bool,
    /// Journal size; `None` picks mke2fs's default for the filesystem size.
    pub journal_size: Option<Bytes>,
    /// Percentage of blocks reserved for root (0 suits read-only images).
    pub reserved_percent: u8,
    /// Superblock creation/write time and the time of slate's own inodes
    /// (lost+found, journal); SOURCE_DATE_EPOCH, or 0 when `None`.
    pub timestamp: Option<i64>,
    /// One inode per this many bytes of image (at least one per tree node).
    pub bytes_per_inode: u64,
}

impl Default for Ext4Options {
    fn default() -> Self {
        Self {
            size: None,
            label: String::new(),
            uuid: None,
            hash_seed: None,
            journal: false,
            journal_size: None,
            reserved_percent: 0,
            timestamp: None,
            bytes_per_inode: 16 * 1024,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Summary {
    /// Image size.
    pub size: Bytes,
    /// Filesystem UUID.
    pub uuid: [u8; 16],
    /// Filesystem blocks (4 KiB).
    pub blocks: u64,
    /// Free blocks.
    pub free_blocks: u64,
    /// Inodes.
    pub inodes: u64,
    /// Free inodes.
    pub free_inodes: u64,
    /// Journal blocks (0 without a journal).
    pub journal_blocks: u64,
    /// Bytes actually written (the rest of the image was left as holes).
    pub bytes_written: u64,
}

/// Why an image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// A source file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The host file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A source file became shorter after the tree was scanned.
    #[error("{} changed while the image was being written", path.display())]
    SourceChanged {
        /// The host file.
        path: PathBuf,
    },
    /// Writing the image failed.
    #[error("writing the image: {0}")]
    Write(#[source] std::io::Error),
    /// Something in the tree that ext4 cannot store.
    #[error("{path}: {reason}")]
    Unsupported {
        /// Path of the object in the tree.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An option that cannot be honoured.
    #[error("invalid ext4 option: {0}")]
    InvalidOption(String),
    /// The requested size cannot hold the tree.
    #[error(
        "tree needs at least {} MiB, --size is {} MiB",
        needed.mib_ceil(),
        mib_display(*size)
    )]
    TooSmall {
        /// The smallest size that works.
        needed: Bytes,
        /// The size asked for.
        size: Bytes,
    },
    /// The tree cannot be laid out like the previous image.
    #[error("cannot reuse the previous layout: {0}")]
    Previous(String),
    /// The output given to the writer is shorter than the image.
    #[error("the output region holds {have} bytes but the image needs {need}")]
    RegionTooSmall {
        /// Bytes available.
        have: u64,
        /// Bytes needed.
        need: u64,
    },
}

/// A size in MiB for messages: whole numbers as such, others with two decimals.
fn mib_display(size: Bytes) -> String {
    if size.get() % MIB == 0 {
        (size.get() / MIB).to_string()
    } else {
        format!("{:.2}", size.get() as f64 / MIB as f64)
    }
}

/// An image fully planned and ready to be written.
#[derive(Debug)]
pub struct Ext4Plan<'t> {
    demand: Demand<'t>,
    layout: Layout,
    size: u64,
    opts: Ext4Options,
}

fn check_options(opts: &Ext4Options) -> Result<(), Ext4Error> {
    if opts.label.len() > 16 {
        return Err(Ext4Error::InvalidOption(format!(
            "label {:?} is longer than 16 bytes",
            opts.label
        )));
    }
    if opts.reserved_percent > 50 {
        return Err(Ext4Error::InvalidOption(format!(
            "reserved_percent {} is over 50",
            opts.reserved_percent
        )));
    }
    if opts.bytes_per_inode < 1024 {
        return Err(Ext4Error::InvalidOption(format!(
            "bytes_per_inode {} is below 1024",
            opts.bytes_per_inode
        )));
    }
    if let Some(t) = opts.timestamp {
        if !inode::TIME_RANGE.contains(&t) || t >= 1 << 40 {
            return Err(Ext4Error::InvalidOption(format!(
                "timestamp {t} is out of range"
            )));
        }
    }
    Ok(())
}

/// Tries `blocks` with the inode count from `bytes_per_inode`, then with the
/// fewest inodes the tree needs.
fn try_blocks(d: &Demand<'_>, opts: &Ext4Options, blocks: u64) -> Result<Layout, AllocError> {
    let by_ratio = blocks.saturating_mul(BLOCK_SIZE) / opts.bytes_per_inode;
    let journal = plan::journal_blocks(opts, blocks);
    allocate_either(d, blocks, by_ratio, journal)
}

fn allocate_either(
    d: &Demand<'_>,
    blocks: u64,
    by_ratio: u64,
    journal: u64,
) -> Result<Layout, AllocError> {
    match plan::allocate(d, blocks, by_ratio, journal) {
        Ok(l) => Ok(l),
        Err(_) => plan::allocate(d, blocks, u64::from(d.max_ino()), journal),
    }
}

impl<'t> Ext4Plan<'t> {
    /// Plans the image of `tree`: validates it, numbers inodes, lays out
    /// directories and places every block. Fails with [`Ext4Error::TooSmall`]
    /// when `opts.size` cannot hold the tree.
    pub fn new(tree: &'t Tree, opts: &Ext4Options) -> Result<Self, Ext4Error> {
        check_options(opts)?;
        let demand = Demand::new(tree, opts)?;
        let (size, layout) = match opts.size {
            Some(size) => {
                let layout = try_blocks(&demand, opts, size.get() / BLOCK_SIZE).map_err(|_| {
                    match plan::required_blocks(&demand, opts) {
                        Ok(n) => Ext4Error::TooSmall {
                            needed: Bytes(n * BLOCK_SIZE),
                            size,
                        },
                        Err(e) => e,
                    }
                })?;
                (size.get(), layout)
            }
            None => {
                let required = plan::required_blocks(&demand, opts)?;
                let mib = MIB / BLOCK_SIZE;
                let mut blocks = (required + (required / 10).max(mib)).next_multiple_of(mib);
                let mut layout = None;
                // A larger size can mean a larger default journal, so step up
                // until it fits (a journal is at most 1 GiB: 1024 steps).
                for _ in 0..2048 {
                    match try_blocks(&demand, opts, blocks) {
                        Ok(l) => {
                            layout = Some(l);
                            break;
                        }
                        Err(_) => blocks += mib,
                    }
                }
                let layout = layout.ok_or_else(|| Ext4Error::Unsupported {
                    path: "/".into(),
                    reason: "no image size fits this tree".into(),
                })?;
                (blocks * BLOCK_SIZE, layout)
            }
        };
        Ok(Self {
            demand,
            layout,
            size,
            opts: opts.clone(),
        })
    }

    /// Plans the image of `tree` in the geometry of a previous build's
    /// layout: same size, UUID and hash seed, the same inode number for
    /// every path that still exists, and the same blocks for every inode
    /// whose block count did not grow (so an unchanged file stays where it
    /// was); a grown inode keeps its old blocks as its first ones and gets
    /// only the rest from free space. `opts.size`, `opts.uuid` and
    /// `opts.hash_seed` are ignored.
    /// Fails with [`Ext4Error::Previous`] when the tree does not fit.
    pub fn with_previous(
        tree: &'t Tree,
        opts: &Ext4Options,
        prev: &Ext4Layout,
    ) -> Result<Self, Ext4Error> {
        let bad = |e: LayoutError| Ext4Error::Previous(e.to_string());
        let mut opts = opts.clone();
        opts.uuid = Some(prev.uuid().map_err(bad)?);
        opts.hash_seed = Some(prev.hash_seed().map_err(bad)?);
        opts.size = Some(Bytes(prev.image_size));
        check_options(&opts)?;
        let mut demand = Demand::new(tree, &opts)?;
        demand.renumber(prev);
        let journal = plan::journal_blocks(&opts, prev.blocks_count);
        if journal != prev.journal_blocks {
            return Err(Ext4Error::Previous(format!(
                "the journal would be {journal} blocks, the previous image's is {}",
                prev.journal_blocks
            )));
        }
        let layout =
            plan::allocate_previous(&demand, prev, journal).map_err(Ext4Error::Previous)?;
        Ok(Self {
            demand,
            layout,
            size: prev.image_size,
            opts,
        })
    }

    /// The image size: the output region must hold this many bytes.
    pub fn size(&self) -> Bytes {
        Bytes(self.size)
    }

    /// Bytes of file data the write will read (for progress bars).
    pub fn data_bytes(&self) -> u64 {
        self.demand
            .files()
            .map(|(ino, f)| {
                let p = &self.layout.placements[ino as usize - 1];
                p.extents()
                    .iter()
                    .map(|e| {
                        let start = u64::from(e.logical) * BLOCK_SIZE;
                        (u64::from(e.len) * BLOCK_SIZE).min(f.size.saturating_sub(start))
                    })
                    .sum::<u64>()
            })
            .sum()
    }

    fn timestamp(&self) -> i64 {
        self.opts.timestamp.unwrap_or(0)
    }

    /// Writes the image into `out`, which must be zero-filled and at least
    /// [`Self::size`] bytes long (a file `set_len` to that size, or an
    /// [`crate::io::OffsetWriter`] window of a zeroed disk image).
    /// All-zero blocks are skipped, leaving holes.
    pub fn write<W: Write + Seek>(
        &self,
        out: W,
        progress: &Progress,
    ) -> Result<Ext4Summary, Ext4Error> {
        write::write(self, out, progress)
    }
}

/// The smallest image, in bytes, that holds `tree` with `opts` (ignoring
/// `opts.size`); used to size partitions and to explain a too-small `--size`.
pub fn required_size(tree: &Tree, opts: &Ext4Options) -> Result<Bytes, Ext4Error> {
    check_options(opts)?;
    let demand = Demand::new(tree, opts)?;
    Ok(Bytes(plan::required_blocks(&demand, opts)? * BLOCK_SIZE))
}

/// Plans and writes `tree` as an ext4 image into `out`, a zero-filled region
/// of the planned size (`opts.size`, or see [`Ext4Plan::size`]).
pub fn write_ext4<W: Write + Seek>(
    tree: &Tree,
    opts: &Ext4Options,
    out: W,
    progress: &Progress,
) -> Result<Ext4Summary, Ext4Error> {
    Ext4Plan::new(tree, opts)?.write(out, progress)
}
