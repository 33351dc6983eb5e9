//! Updates from removable media: a whole block device whose content is a
//! slate bundle (a USB stick written with `dd`, an extra virtio disk in
//! QEMU) is installed after a committed boot when it is newer than the
//! running version and has not failed before.

use super::boot::Device;
use super::events::emit;
use super::install::{self, Outcome, Source};
use super::lock::{LOCK_PATH, UpdateLock};
use super::system;
use crate::bundle;
use anyhow::Result;
use serde_json::json;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whole-disk block devices that may hold a bundle: not the boot disk, not
/// loop/ram/zram devices, not empty.
pub fn candidate_devices(boot_disk: Option<&str>) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["loop", "ram", "zram", "dm-", "md"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .filter(|n| Some(format!("/dev/{n}").as_str()) != boot_disk)
        .filter(|n| {
            std::fs::read_to_string(format!("/sys/block/{n}/size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .is_some_and(|s| s > 0)
        })
        .map(|n| PathBuf::from(format!("/dev/{n}")))
        .collect();
    out.sort();
    out
}

/// Whether the device starts with the bundle magic.
fn has_bundle_magic(dev: &std::path::Path) -> bool {
    let mut magic = [0u8; 8];
    std::fs::File::open(dev)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == bundle::format::MAGIC
}

/// Looks for bundles on removable media and installs the first wanted one
/// (rebooting into it). Returns without error when there is nothing to do.
/// Takes the update lock and loads the state under it.
pub fn check_removable_media(dev: &Device) -> Result<()> {
    let lock = UpdateLock::wait(Path::new(LOCK_PATH), Duration::from_secs(600))?;
    let mut state = dev.load_state()?;
    let state = &mut state;
    let boot_disk = dev
        .params
        .root
        .as_deref()
        .and_then(|g| system::partition_by_guid(g).ok())
        .map(|p| p.disk.to_string_lossy().into_owned());
    for path in candidate_devices(boot_disk.as_deref()) {
        if !has_bundle_magic(&path) {
            continue;
        }
        let source = Source::Path(path.clone());
        // Look at the signed manifest first: skip what is not wanted without
        // calling it a rejection.
        let keys = match install::trusted_keys(dev) {
            Ok(k) => k,
            Err(e) => {
                emit("rejected", &[("reason", json!(format!("{e:#}")))]);
                return Ok(());
            }
        };
        let head = source.open().map_err(|e| e.to_string()).and_then(|src| {
            bundle::open(src, &keys).map_err(|e| format!("{}: {e}", path.display()))
        });
        match head {
            Ok(r) => {
                let m = r.manifest();
                let digest = r.manifest_digest().to_string();
                if !install::wanted_automatically(&m.version, &dev.config.version, &digest, state) {
                    let why = if state.has_failed(&digest) {
                        "it failed before"
                    } else {
                        "it is not newer than the running version"
                    };
                    emit(
                        "skipped",
                        &[
                            ("version", json!(m.version)),
                            ("source", json!(path.display().to_string())),
                            ("reason", json!(why)),
                        ],
                    );
                    continue;
                }
            }
            Err(reason) => {
                // Bad signature, wrong key, corrupt head: refuse, loudly.
                emit("rejected", &[("reason", json!(reason))]);
                continue;
            }
        }
        match install::install(dev, &lock, state, &source)? {
            Outcome::Installed { .. } => {
                drop(lock);
                system::reboot()?;
                return Ok(());
            }
            Outcome::Rejected(_) => continue,
        }
    }
    Ok(())
}
