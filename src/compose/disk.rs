//! Assembling `disk.img`: GPT, the ESP written in place, the slot
//! filesystem copied (sparsely) into both root slots, and an empty
//! journaled ext4 for /data.

use super::ComposeError;
use super::build::DiskIds;
use crate::boot_env::SlotId;
use crate::filesystems::{ext4, fat, gpt};
use crate::progress::Progress;
use crate::recipe::Recipe;
use crate::tree::{Metadata, Timestamp, Tree};
use std::fs::File;
use std::path::Path;

/// Partition names, in disk order.
pub const PARTITIONS: [&str; 4] = ["esp", "root-a", "root-b", "data"];

/// What goes on the disk.
#[derive(Debug)]
pub struct DiskInputs<'a> {
    /// The recipe (sizes, name).
    pub recipe: &'a Recipe,
    /// Partition GUIDs.
    pub ids: &'a DiskIds,
    /// ESP content.
    pub esp: &'a Tree,
    /// The slot filesystem image.
    pub rootfs: &'a Path,
    /// Its dm-verity parameters (each slot's root hash, as the boot entries
    /// name them).
    pub verity: &'a crate::bundle::manifest::ArtifactVerity,
    /// Timestamp for generated metadata.
    pub epoch: i64,
}

/// The GPT layout for a recipe (pure).
pub fn layout(recipe: &Recipe, ids: &DiskIds) -> Result<gpt::DiskLayout, gpt::GptError> {
    let d = &recipe.disk;
    let part = |name: &str, ty: gpt::Guid, guid: &str, size| gpt::PartitionSpec {
        name: name.to_string(),
        type_guid: ty,
        guid: guid.parse().ok(),
        size: gpt::PartitionSize::Fixed(size),
        // Slots are read-only; slot A is committed, so DPS tools
        // (systemd-dissect) pick it, not B.
        attributes: match name {
            "root-a" => gpt::attributes::READ_ONLY,
            "root-b" => gpt::attributes::READ_ONLY | gpt::attributes::NO_AUTO,
            _ => 0,
        },
    };
    let specs = [
        part("esp", gpt::types::ESP, &ids.esp, d.esp),
        part("root-a", gpt::types::ROOT_X86_64, &ids.root_a, d.slot),
        part("root-b", gpt::types::ROOT_X86_64, &ids.root_b, d.slot),
        part("data", gpt::types::LINUX_DATA, &ids.data, d.data),
    ];
    gpt::plan_disk(
        &specs,
        &gpt::DiskOptions {
            image_name: recipe.name.clone(),
            image_version: recipe.version.to_string(),
            disk_guid: ids.disk.parse().ok(),
            ..Default::default()
        },
    )
}

/// Writes the whole disk image to `path` (a fresh, sparse file).
pub fn write_disk(path: &Path, inputs: &DiskInputs<'_>) -> Result<(), ComposeError> {
    let recipe = inputs.recipe;
    let layout = layout(recipe, inputs.ids).map_err(|e| recipe.error("disk", e.to_string()))?;
    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| ComposeError::io("creating", path, e))?;
    file.set_len(layout.size.get())
        .map_err(|e| ComposeError::io("sizing", path, e))?;
    gpt::write_gpt(&mut file, &layout)
        .map_err(|e| ComposeError::Other(format!("writing the partition table: {e}")))?;

    let region = |name: &str| {
        layout
            .partitions
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.offset.get()..p.offset.get() + p.size.get())
            .ok_or_else(|| ComposeError::Other(format!("layout has no {name} partition")))
    };

    // ESP
    let esp = region("esp")?;
    let window = crate::io::OffsetWriter::new(&file, esp.start, esp.end - esp.start)
        .map_err(|e| ComposeError::io("seeking in", path, e))?;
    fat::write_fat(
        inputs.esp,
        &fat::FatOptions {
            size: Some(crate::units::Bytes(esp.end - esp.start)),
            label: "ESP".into(),
            volume_id: None,
            timestamp: Some(inputs.epoch),
        },
        window,
    )
    .map_err(|e| {
        recipe.error(
            "disk.esp",
            format!("the ESP (kernel, initrd and boot loader for two slots) does not fit: {e}"),
        )
    })?;

    // Both slots hold the same filesystem (slot B's under its own UUID),
    // each followed by its hash tree.
    let rootfs =
        File::open(inputs.rootfs).map_err(|e| ComposeError::io("opening", inputs.rootfs, e))?;
    let rootfs_len = rootfs
        .metadata()
        .map_err(|e| ComposeError::io("reading", inputs.rootfs, e))?
        .len();
    let progress = Progress::bytes(2 * rootfs_len, "slots");
    let need = crate::slot_image::slot_len(rootfs_len)
        .map_err(|e| ComposeError::Other(format!("{}: {e}", inputs.rootfs.display())))?;
    for slot in SlotId::ALL {
        let r = region(slot.partition_name())?;
        if need > r.end - r.start {
            return Err(recipe
                .error(
                    "disk.slot",
                    format!(
                        "the root filesystem and its hash tree ({} MiB) do not fit the slot",
                        need.div_ceil(1 << 20)
                    ),
                )
                .into());
        }
        crate::io::sparse::copy_sparse(&rootfs, rootfs_len, &file, r.start)
            .map_err(|e| ComposeError::io("writing", path, e))?;
        file.sync_all()
            .map_err(|e| ComposeError::io("syncing", path, e))?;
        let sealed = crate::slot_image::seal(
            path,
            r.start,
            r.end - r.start,
            rootfs_len,
            slot,
            inputs.verity.salt.0,
        )
        .map_err(|e| {
            ComposeError::Other(format!("sealing slot {slot} of {}: {e}", path.display()))
        })?;
        if sealed != inputs.verity.slot(slot) {
            return Err(ComposeError::Other(format!(
                "slot {slot}'s root hash {} differs from the one computed for its boot entry",
                crate::io::hash::hex(&sealed.root_hash)
            )));
        }
        progress.inc(rootfs_len);
    }
    progress.finish();

    // /data: empty, journaled, root-owned.
    let data = region("data")?;
    let empty = Tree::new(Metadata {
        mtime: Timestamp::from_secs(inputs.epoch),
        ..Metadata::root(0o755)
    });
    let window = crate::io::OffsetWriter::new(&file, data.start, data.end - data.start)
        .map_err(|e| ComposeError::io("seeking in", path, e))?;
    ext4::write_ext4(
        &empty,
        &ext4::Ext4Options {
            size: Some(crate::units::Bytes(data.end - data.start)),
            label: "data".into(),
            uuid: Some(crate::reproducible::derived_uuid(&[
                b"slate-data",
                recipe.name.as_bytes(),
            ])),
            journal: true,
            timestamp: Some(inputs.epoch),
            ..Default::default()
        },
        window,
        // An empty filesystem: nothing worth a bar ("0 B/0 B").
        &Progress::hidden(),
    )
    .map_err(|e| recipe.error("disk.data", e.to_string()))?;
    file.sync_all()
        .map_err(|e| ComposeError::io("syncing", path, e))?;
    Ok(())
}
