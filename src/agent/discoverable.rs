//! Keeping what systemd's tools see in line with what the device boots
//! (the Discoverable Partitions Specification): of two root partitions of
//! the same type, `systemd-dissect` and friends take the one without the
//! `no-auto` attribute (GPT attribute bit 63). The committed slot is the
//! one they must pick, so after every healthy boot the committed slot's
//! partition has `no-auto` clear and the other slot's has it set.
//!
//! The table is rewritten like a grow (backup first, a barrier, then the
//! primary; `gpt::plan_attributes`), and only when a bit differs, so a
//! power cut anywhere leaves one valid table and the next healthy boot
//! finishes the change. Nothing in slate's own boot path reads the bit.

use super::cmdline::BootParams;
use super::fault::{self, FaultPoint};
use super::system;
use crate::boot_env::SlotId;
use crate::filesystems::gpt::{self, attributes::NO_AUTO};
use anyhow::{Context, Result};
use std::fs::File;

/// The attributes partition `p` should have when `committed` is the
/// committed slot: the slots' `no-auto` bit set or cleared, everything else
/// as it is.
pub fn wanted_attributes(p: &gpt::PartitionInfo, committed: SlotId) -> u64 {
    match SlotId::ALL.iter().find(|s| s.partition_name() == p.name) {
        Some(s) if *s == committed => p.attributes & !NO_AUTO,
        Some(_) => p.attributes | NO_AUTO,
        None => p.attributes,
    }
}

/// Makes `committed` the root that DPS tools pick on the disk holding the
/// booted root (`slate.root=`). Returns whether the table was rewritten.
pub fn reconcile(params: &BootParams, committed: SlotId) -> Result<bool> {
    let root = params
        .root
        .as_deref()
        .context("the kernel command line has no slate.root=")?;
    let part = system::partition_by_guid(root)?;
    let mut disk = File::options()
        .read(true)
        .write(true)
        .open(&part.disk)
        .with_context(|| format!("opening {}", part.disk.display()))?;
    let ctx = || {
        format!(
            "marking slot {committed} as the root DPS tools pick on {}",
            part.disk.display()
        )
    };
    let Some(plan) =
        gpt::plan_attributes(&mut disk, &|p| wanted_attributes(p, committed)).with_context(ctx)?
    else {
        return Ok(false);
    };
    plan.write_backup(&mut disk).with_context(ctx)?;
    fault::hit(FaultPoint::DpsAfterBackup);
    plan.write_primary(&mut disk).with_context(ctx)?;
    Ok(true)
}
