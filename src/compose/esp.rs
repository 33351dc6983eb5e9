//! The EFI system partition tree: systemd-boot, its configuration, one entry
//! per slot, and each slot's kernel and initrd or its unified kernel image.

use super::ComposeError;
use crate::boot_env::systemd_boot::{self, EntryName};
use crate::boot_env::{EntrySpec, SlotId};
use crate::tree::{FileData, Metadata, Node, NodeKind, Timestamp, Tree};
use std::path::Path;

/// A host file to place on the ESP.
#[derive(Debug, Clone)]
pub struct HostFile<'a> {
    /// Path on the build host.
    pub path: &'a Path,
    /// Its size.
    pub size: u64,
}

/// What each slot boots.
#[derive(Debug, Clone)]
pub enum SlotBoot<'a> {
    /// A kernel and an initrd, the same for both slots.
    Separate {
        /// The kernel.
        kernel: HostFile<'a>,
        /// The initrd.
        initrd: HostFile<'a>,
    },
    /// One unified kernel image per slot (A, B): their command lines differ.
    Uki([HostFile<'a>; 2]),
}

/// What goes on the ESP.
#[derive(Debug, Clone)]
pub struct EspInputs<'a> {
    /// systemd-bootx64.efi.
    pub loader: HostFile<'a>,
    /// The slots' boot files.
    pub boot: SlotBoot<'a>,
    /// The entry of each slot (A committed and primary, B committed as fallback).
    pub entries: [(SlotId, EntrySpec); 2],
    /// Timestamp of every file.
    pub mtime: i64,
}

/// Builds the ESP tree for a fresh disk: both slots bootable, A first.
pub fn esp_tree(inputs: &EspInputs<'_>) -> Result<Tree, ComposeError> {
    let meta = |mode| Metadata {
        mtime: Timestamp::from_secs(inputs.mtime),
        ..Metadata::root(mode)
    };
    let mut t = Tree::new(meta(0o755));
    let host = |f: &HostFile<'_>| Node {
        kind: NodeKind::File(FileData::host(f.path, f.size)),
        meta: meta(0o644),
    };
    // Boot files get their fixed capacity now, zero-padded, so updates
    // overwrite them in place (see boot_env::systemd_boot).
    let boot_file = |f: &HostFile<'_>| {
        let mut data = FileData::host(f.path, f.size);
        data.size = systemd_boot::boot_file_capacity(f.size);
        Node {
            kind: NodeKind::File(data),
            meta: meta(0o644),
        }
    };
    let bytes = |s: String| Node {
        kind: NodeKind::File(FileData::from_bytes(s.into_bytes())),
        meta: meta(0o644),
    };
    let d = meta(0o755);
    t.put(
        systemd_boot::LOADER_PATH.as_bytes(),
        host(&inputs.loader),
        &d,
    )?;
    t.put(
        b"loader/loader.conf",
        bytes(systemd_boot::loader_conf().into()),
        &d,
    )?;
    for (slot, spec) in &inputs.entries {
        match &inputs.boot {
            SlotBoot::Separate { kernel, initrd } => {
                t.put(
                    systemd_boot::kernel_path(*slot).as_bytes(),
                    boot_file(kernel),
                    &d,
                )?;
                t.put(
                    systemd_boot::initrd_path(*slot).as_bytes(),
                    boot_file(initrd),
                    &d,
                )?;
            }
            // Exact size: a signed image must not be padded.
            SlotBoot::Uki(ukis) => {
                t.put(
                    systemd_boot::uki_path(*slot).as_bytes(),
                    host(&ukis[if *slot == SlotId::A { 0 } else { 1 }]),
                    &d,
                )?;
            }
        }
        let name = EntryName {
            // A boots first; B is the committed fallback.
            generation: if *slot == SlotId::A { 1 } else { 0 },
            slot: *slot,
            counter: None,
        };
        t.put(
            format!("{}/{}", systemd_boot::ENTRIES_DIR, name.file_name()).as_bytes(),
            bytes(systemd_boot::entry_text(spec, *slot)),
            &d,
        )?;
    }
    Ok(t)
}
