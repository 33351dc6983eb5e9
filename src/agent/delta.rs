//! The device side of delta updates: the signed manifest of each slot's
//! content kept on /data, and the chunks a device already holds (its seeds).
//!
//! A slot's manifest is removed before anything is written to the slot and
//! stored again only once the slot is complete and read back, so a stored
//! manifest never describes content that is not there. Every local chunk is
//! hashed again before it is used anyway: a stale manifest costs a download,
//! never a wrong byte.

use super::events::emit;
use crate::boot_env::SlotId;
use crate::boot_env::systemd_boot::{initrd_path, kernel_path, uki_path};
use crate::bundle::delta::{Seed, SeedIndex};
use crate::bundle::{ArtifactEntry, Manifest};
use serde_json::json;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Where the slot manifests live, below the agent's state directory.
#[derive(Debug, Clone)]
pub struct SlotManifests {
    dir: PathBuf,
}

impl SlotManifests {
    /// The store below `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("slots"),
        }
    }

    /// The file holding `slot`'s manifest.
    pub fn path(&self, slot: SlotId) -> PathBuf {
        self.dir.join(format!("{}.manifest", slot.lower()))
    }

    /// `slot`'s manifest, if one is stored and parses (a damaged one is
    /// ignored: it is only a hint).
    pub fn load(&self, slot: SlotId) -> Option<Manifest> {
        let bytes = std::fs::read(self.path(slot)).ok()?;
        match Manifest::parse(&bytes) {
            Ok(m) => Some(m),
            Err(e) => {
                emit(
                    "slot_manifest_ignored",
                    &[("slot", json!(slot.to_string())), ("reason", json!(e.0))],
                );
                None
            }
        }
    }

    /// Forgets `slot`'s manifest durably (before the slot is overwritten).
    pub fn forget(&self, slot: SlotId) -> io::Result<()> {
        match std::fs::remove_file(self.path(slot)) {
            Ok(()) => crate::io::sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stores the signed manifest bytes of what `slot` now holds.
    pub fn store(&self, slot: SlotId, manifest_bytes: &[u8]) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        crate::io::write_atomic(self.path(slot), manifest_bytes)
    }
}

fn artifact<'m>(m: &'m Manifest, name: &str) -> Option<&'m ArtifactEntry> {
    m.artifacts.iter().find(|a| a.name == name)
}

/// What the device may reuse for a bundle with manifest `new`, in the order
/// `slate diff` models it: the running slot, its kernel and initrd or its
/// unified kernel image on the ESP, then the target slot's old content (ahead of the writer only).
/// Seeds described by a stored manifest with `new`'s chunk size are indexed
/// from it; the others are hashed once here.
pub struct DeviceSeeds<'a> {
    /// The slot manifests on /data.
    pub manifests: &'a SlotManifests,
    /// The running slot and its partition.
    pub running: (SlotId, &'a Path),
    /// The slot being installed and its partition.
    pub target: (SlotId, &'a Path),
    /// Size of both slot partitions.
    pub slot_size: u64,
    /// Where the ESP is mounted.
    pub esp: &'a Path,
}

/// The byte ranges where slot `slot` (on `dev`) differs from the image its
/// stored manifest describes: its superblock copies when it is slot B. A
/// slot whose superblock cannot be read gets the whole first MiB, so no
/// chunk there is trusted without being read and checked.
fn identity_ranges(dev: &Path, slot: SlotId) -> Vec<(u64, u64)> {
    let patches = std::fs::File::open(dev)
        .map_err(crate::slot_image::SlotImageError::from)
        .and_then(|mut f| crate::slot_image::identity_patches(&mut f, slot));
    match patches {
        Ok(p) => p.iter().map(|(at, b)| (*at, b.len() as u64)).collect(),
        Err(_) => vec![(0, 1 << 20)],
    }
}

impl DeviceSeeds<'_> {
    /// Builds the index.
    pub fn index(&self, new: &Manifest) -> io::Result<SeedIndex> {
        let mut ix = SeedIndex::new();
        let (booted, running_dev) = self.running;
        let stored = self.manifests.load(booted);
        let seed = |ix: &mut SeedIndex, label: &str, path: &Path, ahead_only: bool| {
            ix.add_seed(Seed {
                label: label.into(),
                path: path.to_path_buf(),
                ahead_only,
            })
        };
        let usable = |m: &Option<Manifest>, name: &str| {
            m.as_ref()
                .and_then(|m| artifact(m, name))
                .filter(|a| artifact(new, name).is_some_and(|n| n.chunk_size == a.chunk_size))
                .cloned()
        };
        let s = seed(&mut ix, "slot", running_dev, false);
        match usable(&stored, "rootfs") {
            Some(a) => ix.index_artifact_except(s, &a, &identity_ranges(running_dev, booted)),
            None => {
                for cs in crate::bundle::delta::chunk_sizes(new) {
                    let f = std::fs::File::open(running_dev)?;
                    let r = io::BufReader::with_capacity(1 << 20, f).take(self.slot_size);
                    ix.index_reader(s, r, cs)?;
                }
            }
        }
        let own_uki = crate::uki::artifact_name(booted);
        for (name, label, rel) in [
            ("kernel", "kernel", kernel_path(booted)),
            ("initrd", "initrd", initrd_path(booted)),
            (own_uki.as_str(), "uki", uki_path(booted)),
        ] {
            let path = self.esp.join(rel);
            if !path.exists() {
                continue;
            }
            let s = seed(&mut ix, label, &path, false);
            match usable(&stored, name) {
                Some(a) => ix.index_artifact(s, &a),
                None => ix.index_padded_file(s, new, u64::MAX)?,
            }
        }
        let (target, target_dev) = self.target;
        if let Some(a) = usable(&self.manifests.load(target), "rootfs") {
            let s = seed(&mut ix, "target", target_dev, true);
            ix.index_artifact_except(s, &a, &identity_ranges(target_dev, target));
        }
        Ok(ix)
    }
}
