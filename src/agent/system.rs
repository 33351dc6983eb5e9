//! The agent's view of the running system: block devices by GPT GUID,
//! the ESP mount, rebooting.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::path::{Path, PathBuf};

/// A partition found through sysfs and its disk's GPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPartition {
    /// `/dev/vda2`.
    pub dev: PathBuf,
    /// `/dev/vda`.
    pub disk: PathBuf,
    /// GPT partition name.
    pub name: String,
    /// GPT unique GUID (lowercase text).
    pub guid: String,
    /// Size in bytes.
    pub size: u64,
    /// Partition number (1-based).
    pub number: u32,
    /// First LBA, in the disk's logical blocks.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
}

/// All GPT partitions of all disks, via /sys/class/block.
pub fn partitions() -> Result<Vec<BlockPartition>> {
    let mut out = Vec::new();
    let mut disks: Vec<String> = std::fs::read_dir("/sys/block")
        .context("listing /sys/block")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    disks.sort();
    for disk in disks {
        let disk_dev = PathBuf::from(format!("/dev/{disk}"));
        let Ok(mut f) = File::open(&disk_dev) else {
            continue;
        };
        let Ok(parts) = crate::filesystems::gpt::read_partitions(&mut f) else {
            continue;
        };
        let block_size =
            std::fs::read_to_string(format!("/sys/block/{disk}/queue/logical_block_size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(512);
        for p in parts {
            // The kernel names partitions by number: vda2, nvme0n1p2.
            let sep = if disk.ends_with(|c: char| c.is_ascii_digit()) {
                "p"
            } else {
                ""
            };
            out.push(BlockPartition {
                dev: PathBuf::from(format!("/dev/{disk}{sep}{}", p.number)),
                disk: disk_dev.clone(),
                name: p.name.clone(),
                guid: p.guid.to_string().to_ascii_lowercase(),
                size: (p.last_lba + 1 - p.first_lba) * block_size,
                number: p.number,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
            });
        }
    }
    Ok(out)
}

/// The partition with this GUID.
pub fn partition_by_guid(guid: &str) -> Result<BlockPartition> {
    let want = guid.to_ascii_lowercase();
    partitions()?
        .into_iter()
        .find(|p| p.guid == want)
        .with_context(|| format!("no partition with GPT GUID {guid}"))
}

/// How long a read-write mount of the ESP waits while a read-only mount of
/// it (a `slate-agent status`) is in the way.
pub const ESP_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The ESP mounted at a directory for as long as this value lives.
#[derive(Debug)]
pub struct EspMount {
    dir: PathBuf,
    mounted: bool,
}

impl EspMount {
    /// Mounts `dev` (vfat) at `dir`, read-write or read-only.
    ///
    /// The kernel refuses (EBUSY) a read-write mount of a device it has
    /// mounted read-only elsewhere: `slate-agent status` holds such a mount
    /// for a moment. A read-write mount therefore retries for up to
    /// [`ESP_BUSY_WAIT`] before it fails.
    pub fn mount(dev: &Path, dir: &Path, writable: bool) -> Result<Self> {
        use rustix::mount::{MountFlags, mount};
        std::fs::create_dir_all(dir).ok();
        let flags = if writable {
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC
        } else {
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC
        };
        let deadline = std::time::Instant::now() + ESP_BUSY_WAIT;
        loop {
            match mount(dev, dir, "vfat", flags, None::<&std::ffi::CStr>) {
                Err(rustix::io::Errno::BUSY)
                    if writable && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => {
                    r.with_context(|| {
                        format!("mounting the ESP {} at {}", dev.display(), dir.display())
                    })?;
                    break;
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            mounted: true,
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Flushes and unmounts (also done on drop, ignoring errors).
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        rustix::fs::sync();
        rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::empty())
            .with_context(|| format!("unmounting {}", self.dir.display()))
    }
}

impl Drop for EspMount {
    fn drop(&mut self) {
        if self.mounted {
            rustix::fs::sync();
            let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::empty());
        }
    }
}

/// The kernel command line.
pub fn kernel_cmdline() -> Result<String> {
    std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")
}

/// Reboots through init (clean shutdown: services stop, /data is unmounted).
pub fn reboot() -> Result<()> {
    rustix::fs::sync();
    let status = std::process::Command::new("/sbin/reboot").status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => {
            // init is unusable: sync and reset directly.
            rustix::fs::sync();
            rustix::system::reboot(rustix::system::RebootCommand::Restart).context("rebooting")?;
            bail!("reboot returned")
        }
    }
}
