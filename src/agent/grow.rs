//! Growing /data to fill the disk: an image written to a device larger
//! than the image gets, on its first boot, a data partition and an ext4
//! filesystem that span the whole device.
//!
//! Three steps, each skipped when already done, so a power cut anywhere is
//! finished by the next boot:
//!
//! 1. **Table** ([`gpt::plan_grow`]): the backup GPT moves to the end of the
//!    disk and the data partition (the last, found by `slate.data=`) ends at
//!    the new last usable sector, in whole MiB; backup first, synced, then
//!    the primary, synced.
//! 2. **Kernel**: the running kernel still knows the old partition size, and
//!    a mounted disk cannot be re-read (`BLKRRPART`), so the data
//!    partition alone is resized with `BLKPG_RESIZE_PARTITION`.
//! 3. **Filesystem**: `EXT4_IOC_RESIZE_FS` on the mounted /data; the kernel
//!    grows ext4 online, journaled. Only ever grown, never shrunk.
//!
//! Anything unexpected (a damaged table, the data partition not last, /data
//! not mounted from it) is reported with `data_grow_refused` and the boot
//! goes on; nothing to do reports nothing.

use super::cmdline::BootParams;
use super::events::emit;
use super::fault::{self, FaultPoint};
use super::system::{self, BlockPartition};
use crate::filesystems::{ext4, gpt};
use anyhow::{Context, Result, ensure};
use serde_json::json;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Where boot/init.sh mounts the data partition.
pub const DATA_MOUNT: &str = "/data";

/// The data partition's size is kept a whole number of these (the
/// builder's rule for the last partition).
const ALIGNMENT: u64 = 1 << 20;

/// What growing /data did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grown {
    /// The data partition's device, e.g. `/dev/vda4`.
    pub partition: PathBuf,
    /// Filesystem size before, bytes.
    pub old_size: u64,
    /// Filesystem size now, bytes.
    pub new_size: u64,
}

/// The boot stage: grows /data when the disk has room for it and reports
/// `data_grown`, or `data_grow_refused`; never fails the boot.
pub fn run(params: &BootParams) {
    match grow(params, Path::new(DATA_MOUNT)) {
        Ok(None) => {}
        Ok(Some(g)) => emit(
            "data_grown",
            &[
                ("partition", json!(g.partition.display().to_string())),
                ("old_size", json!(g.old_size)),
                ("new_size", json!(g.new_size)),
            ],
        ),
        Err(e) => emit("data_grow_refused", &[("reason", json!(format!("{e:#}")))]),
    }
}

/// Grows the partition `slate.data=` names, and the filesystem mounted
/// from it at `mount`, to fill its disk. `Ok(None)` when both already do.
pub fn grow(params: &BootParams, mount: &Path) -> Result<Option<Grown>> {
    let (guid, part) = locate(params)?;
    let mut disk = File::options()
        .read(true)
        .write(true)
        .open(&part.disk)
        .with_context(|| format!("opening {}", part.disk.display()))?;
    let plan = gpt::plan_grow(&mut disk, guid, ALIGNMENT)
        .with_context(|| format!("the partition table of {}", part.disk.display()))?;
    let (entry, sector) = table_entry(&mut disk, guid, plan.as_ref())?;
    let kernel = kernel_size(&part.dev)?;
    if plan.is_none() && kernel >= entry.size(sector) && !fs_has_room(mount, &part.dev, kernel)? {
        return Ok(None);
    }
    ensure!(
        entry.type_guid == gpt::types::LINUX_DATA,
        "the data partition {} has type {}, not Linux data",
        part.dev.display(),
        entry.type_guid
    );
    require_mounted(mount, &part.dev)?;
    if let Some(plan) = &plan {
        rewrite_table(&mut disk, plan, &part.disk)?;
    }
    tell_kernel(&disk, &part, &entry, sector)?;
    grow_filesystem(mount, &part.dev)
}

/// The data partition's GUID and where it is.
fn locate(params: &BootParams) -> Result<(gpt::Guid, BlockPartition)> {
    let text = params
        .data
        .as_deref()
        .context("the kernel command line has no slate.data=")?;
    let guid: gpt::Guid = text
        .parse()
        .with_context(|| format!("slate.data={text} is not a GUID"))?;
    Ok((guid, system::partition_by_guid(text)?))
}

/// The data partition as the table will have it (after `plan`), and the
/// table's sector size.
fn table_entry(
    disk: &mut File,
    guid: gpt::Guid,
    plan: Option<&gpt::GrowPlan>,
) -> Result<(gpt::PartitionInfo, u64)> {
    if let Some(p) = plan {
        return Ok((p.partition().clone(), p.sector_size()));
    }
    let table = gpt::read_table(disk).context("reading the partition table")?;
    let entry = table
        .by_guid(guid)
        .with_context(|| format!("no partition with GUID {guid}"))?;
    Ok((entry.clone(), table.sector_size))
}

/// The filesystem's size from its superblock.
fn fs_size(dev: &Path) -> Result<ext4::Ext4Size> {
    let mut f = File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    ext4::read_size(&mut f).with_context(|| format!("{}", dev.display()))
}

/// The partition's size as the running kernel knows it, bytes.
fn kernel_size(dev: &Path) -> Result<u64> {
    let name = dev.file_name().context("a partition device has a name")?;
    let path = Path::new("/sys/class/block").join(name).join("size");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let sectors: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("{}: {text:?} is not a number", path.display()))?;
    Ok(sectors * 512)
}

/// Whether the filesystem mounted at `mount` from `dev` is smaller than
/// the `size` bytes the kernel gives `dev`. An unusable data partition (not
/// mounted there; boot/init.sh reports it) has nothing this stage can do.
fn fs_has_room(mount: &Path, dev: &Path, size: u64) -> Result<bool> {
    if !is_mounted(mount, dev)? {
        return Ok(false);
    }
    let fs = fs_size(dev)?;
    Ok(size / fs.block_size > fs.blocks)
}

/// Whether `mount` is the root of a filesystem on block device `dev`.
fn is_mounted(mount: &Path, dev: &Path) -> Result<bool> {
    let at = rustix::fs::stat(mount).with_context(|| format!("stat {}", mount.display()))?;
    let node = rustix::fs::stat(dev).with_context(|| format!("stat {}", dev.display()))?;
    Ok(at.st_dev == node.st_rdev)
}

/// /data must be the filesystem of the data partition (not the tmpfs
/// boot/init.sh mounts when the partition is unusable).
fn require_mounted(mount: &Path, dev: &Path) -> Result<()> {
    ensure!(
        is_mounted(mount, dev)?,
        "{} is not mounted from {}",
        mount.display(),
        dev.display()
    );
    Ok(())
}

/// Step 1: the new table, backup first.
fn rewrite_table(disk: &mut File, plan: &gpt::GrowPlan, path: &Path) -> Result<()> {
    let ctx = || format!("rewriting the partition table of {}", path.display());
    plan.write_backup(disk).with_context(ctx)?;
    fault::hit(FaultPoint::GrowAfterBackup);
    plan.write_primary(disk).with_context(ctx)
}

/// Step 2: the running kernel learns the partition's new size.
fn tell_kernel(
    disk: &File,
    part: &BlockPartition,
    entry: &gpt::PartitionInfo,
    sector: u64,
) -> Result<()> {
    let want = entry.size(sector);
    if kernel_size(&part.dev)? >= want {
        return Ok(());
    }
    let lba = |v: u64| i64::try_from(v).context("partition bounds beyond 2^63 sectors");
    blkpg::resize_partition(
        disk,
        i32::try_from(entry.number).context("partition number")?,
        lba(entry.first_lba)?,
        lba(entry.last_lba + 1)?,
        lba(sector)?,
    )
    .with_context(|| format!("resizing {} in the kernel (BLKPG)", part.dev.display()))?;
    let now = kernel_size(&part.dev)?;
    ensure!(
        now == want,
        "the kernel has {} at {now} bytes after BLKPG, not {want}",
        part.dev.display()
    );
    Ok(())
}

/// Step 3: the ext4 filesystem of block device `dev`, mounted at `mount`,
/// grown online to the device's size as the kernel knows it. `Ok(None)`
/// when it already fills the device.
pub fn grow_filesystem(mount: &Path, dev: &Path) -> Result<Option<Grown>> {
    let before = fs_size(dev)?;
    let blocks = kernel_size(dev)? / before.block_size;
    if blocks <= before.blocks {
        return Ok(None);
    }
    let dir = File::open(mount).with_context(|| format!("opening {}", mount.display()))?;
    rustix::fs::ext4_ioc_resize_fs(&dir, blocks).with_context(|| {
        format!(
            "growing the ext4 filesystem on {} to {blocks} blocks (EXT4_IOC_RESIZE_FS)",
            mount.display()
        )
    })?;
    // The kernel may stop short of the end (a last group too small for its
    // metadata is left out); that is as full as it gets.
    let after = fs_size(dev)?;
    ensure!(
        after.blocks <= blocks,
        "{} has {} blocks after the resize, more than the {blocks} asked for",
        dev.display(),
        after.blocks
    );
    if after.blocks == before.blocks {
        return Ok(None);
    }
    Ok(Some(Grown {
        partition: dev.to_path_buf(),
        old_size: before.bytes(),
        new_size: after.bytes(),
    }))
}
