//! `slate-agent status [--json]`: slots, versions, boot states, which slot
//! is booted and which is committed.

use super::boot::Device;
use super::state::DeviceState;
use super::system::EspMount;
use crate::boot_env::systemd_boot::SystemdBoot;
use crate::boot_env::{BootFlow, BootSnapshot, SlotId};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// One slot in the report.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    /// Image version in the slot.
    pub version: String,
    /// Boot loader state: good, trying, bad, unbootable (or unknown).
    pub boot_state: String,
    /// Whether this slot is running.
    pub booted: bool,
    /// Bundle digest it was installed from.
    pub digest: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Image name.
    pub image: String,
    /// Running version.
    pub version: String,
    /// Compatibility string.
    pub compatible: String,
    /// The slot that booted.
    pub booted: SlotId,
    /// The committed (fallback) slot.
    pub committed: Option<SlotId>,
    /// The slot the boot loader starts next.
    pub next_boot: Option<SlotId>,
    /// Boot loader backend.
    pub boot_loader: String,
    /// Anti-rollback floor.
    pub security_floor: u64,
    /// Per slot.
    pub slots: BTreeMap<SlotId, SlotStatus>,
    /// Update phase (idle, installing, installed, failed).
    pub update: String,
    /// Failed updates that will not be retried automatically.
    pub failed: Vec<super::state::FailedUpdate>,
    /// The running root's dm-verity device, as the kernel reports it
    /// (`None`: the root is not verified).
    pub root_verity: Option<super::verity::RootVerity>,
    /// The kernel's lockdown mode (`integrity` when the firmware booted it
    /// with Secure Boot on; `None`: unknown).
    pub lockdown: Option<String>,
}

/// Builds the report from observations (pure).
pub fn report(dev: &Device, state: &DeviceState, boot: Option<&BootSnapshot>) -> StatusReport {
    let slots = SlotId::ALL
        .iter()
        .map(|s| {
            let rec = state.slots.get(s);
            (
                *s,
                SlotStatus {
                    version: rec.map(|r| r.version.clone()).unwrap_or_default(),
                    boot_state: boot
                        .map(|b| b.get(*s).word().to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    booted: *s == dev.booted,
                    digest: rec.and_then(|r| r.digest.clone()),
                },
            )
        })
        .collect();
    StatusReport {
        image: dev.config.name.clone(),
        version: dev.config.version.clone(),
        compatible: dev.config.compatible.clone(),
        booted: dev.booted,
        committed: boot.and_then(|b| b.committed()),
        next_boot: boot.and_then(|b| b.next_boot()),
        boot_loader: dev.config.boot_loader.clone(),
        security_floor: state.floor,
        slots,
        update: state.update.word().to_string(),
        failed: state.failed.clone(),
        root_verity: None,
        lockdown: None,
    }
}

/// Gathers the report on the device (mounts the ESP read-only briefly).
pub fn gather(config_path: &std::path::Path) -> Result<StatusReport> {
    let dev = Device::open(config_path)?;
    let state = dev.load_state()?;
    let snapshot = (|| -> Result<BootSnapshot> {
        let guid = dev
            .params
            .esp
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("no slate.esp="))?;
        let part = super::system::partition_by_guid(guid)?;
        let dir = std::path::Path::new("/run/slate/esp-status");
        // While the agent has the ESP mounted read-write (an install), a
        // read-only mount of the same device is refused: share its mount.
        let esp = EspMount::mount(&part.dev, dir, false)
            .or_else(|_| EspMount::mount(&part.dev, dir, true))?;
        let snap = SystemdBoot::new(esp.path()).snapshot()?;
        esp.unmount()?;
        Ok(snap)
    })();
    if let Err(e) = &snapshot {
        eprintln!("slate-agent: boot loader state unavailable: {e:#}");
    }
    let mut r = report(&dev, &state, snapshot.as_ref().ok());
    r.root_verity = super::verity::running_root(&dev.params);
    r.lockdown = super::lockdown::mode();
    Ok(r)
}

/// Human-readable form.
pub fn render(r: &StatusReport) -> String {
    let mut s = format!(
        "{} {} (booted slot {}, committed {}, next boot {})\n",
        r.image,
        r.version,
        r.booted,
        r.committed
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        r.next_boot
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
    );
    for (slot, st) in &r.slots {
        s.push_str(&format!(
            "  slot {slot}: {:<10} {:<11}{}\n",
            st.version,
            st.boot_state,
            if st.booted { " (booted)" } else { "" }
        ));
    }
    s.push_str(&format!(
        "  update: {}, security floor {}, {} failed update(s) remembered\n",
        r.update,
        r.security_floor,
        r.failed.len()
    ));
    s
}
