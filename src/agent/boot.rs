//! `slate-agent boot`: what happens after every boot. Work out what this
//! boot is (trial, fallback after a failed trial, interrupted install,
//! ordinary), run the health check, then commit or fall back; afterwards
//! look for an update on removable media.

use super::cmdline::{self, BootParams};
use super::config::AgentConfig;
use super::events::emit;
use super::health::{self, Health};
use super::state::{BootKind, DeviceState, StateStore, classify};
use super::system::{self, EspMount};
use super::watchdog;
use crate::boot_env::systemd_boot::SystemdBoot;
use crate::boot_env::{BootFlow, SlotId};
use anyhow::{Context, Result};
use serde_json::json;
use std::time::Duration;

/// Written once this boot's slot is committed, for services that should
/// only start (or report) after the verdict.
pub const COMMITTED_MARKER: &str = "/run/slate/committed";

/// Everything the agent needs about the running device.
#[derive(Debug)]
pub struct Device {
    /// The image's agent configuration.
    pub config: AgentConfig,
    /// Parameters from the kernel command line.
    pub params: BootParams,
    /// The slot that booted.
    pub booted: SlotId,
    /// Persistent state store.
    pub store: StateStore,
}

impl Device {
    /// Reads the configuration and the command line.
    pub fn open(config_path: &std::path::Path) -> Result<Self> {
        let config = AgentConfig::load(config_path)?;
        let params = cmdline::parse(&system::kernel_cmdline()?);
        let booted = params
            .slot
            .context("the kernel command line has no slate.slot= (not booted by slate?)")?;
        let store = StateStore::new(&config.state_dir);
        Ok(Self {
            config,
            params,
            booted,
            store,
        })
    }

    /// The stored state, or the factory state on first boot.
    pub fn load_state(&self) -> DeviceState {
        self.store.load().unwrap_or_else(|| {
            DeviceState::factory(&self.config.version, self.config.security_version)
        })
    }

    /// Saves the state (a failure is reported but not fatal: /data may be a tmpfs).
    pub fn save_state(&self, state: &mut DeviceState) {
        if let Err(e) = self.store.save(state) {
            eprintln!(
                "slate-agent: saving state in {}: {e}",
                self.config.state_dir.display()
            );
        }
    }

    /// Mounts the ESP.
    pub fn mount_esp(&self, writable: bool) -> Result<EspMount> {
        let guid = self
            .params
            .esp
            .as_deref()
            .context("the kernel command line has no slate.esp=")?;
        let part = system::partition_by_guid(guid)?;
        EspMount::mount(&part.dev, &self.config.esp_mount, writable)
    }
}

/// Runs the boot sequence.
pub fn run(config_path: &std::path::Path) -> Result<()> {
    let dev = Device::open(config_path)?;
    let booted = dev.booted;
    emit(
        "booted",
        &[
            ("slot", json!(booted.to_string())),
            ("version", json!(dev.config.version)),
        ],
    );
    let mut state = dev.load_state();
    if std::path::Path::new("/run/slate/data-unavailable").exists() {
        emit(
            "warning",
            &[(
                "reason",
                json!("data partition unavailable; state is not persistent"),
            )],
        );
    }
    let esp = dev.mount_esp(true)?;
    let mut flow = SystemdBoot::new(esp.path());
    let snapshot = flow.snapshot()?;
    let kind = classify(booted, &snapshot, &state.update);

    match &kind {
        BootKind::RolledBack { from, reason } => {
            let failed = state.rolled_back(reason)?;
            // The failed slot stays out of the boot order until the next install.
            flow.disable(*from)?;
            dev.save_state(&mut state);
            emit(
                "rollback",
                &[
                    ("from", json!(from.to_string())),
                    ("to", json!(booted.to_string())),
                    ("version", json!(failed.version)),
                    ("reason", json!(failed.reason)),
                ],
            );
        }
        BootKind::InterruptedInstall => {
            if let Some(p) = state.update.pending() {
                flow.disable(p.target)?;
            }
            state.abandon()?;
            dev.save_state(&mut state);
        }
        BootKind::FinishCommit => {
            state.commit(booted)?;
            dev.save_state(&mut state);
        }
        BootKind::Trial | BootKind::Normal => {}
    }

    let verdict = health::check(
        &dev.config.health_command,
        Duration::from_millis(dev.config.health_timeout_ms),
    );
    match verdict {
        Health::Healthy => {
            emit("healthy", &[("slot", json!(booted.to_string()))]);
            flow.mark_good(booted)?;
            if kind == BootKind::Trial && state.update.pending().is_some_and(|p| p.target == booted)
            {
                state.commit(booted)?;
            }
            dev.save_state(&mut state);
            esp.unmount()?;
            emit(
                "committed",
                &[
                    ("slot", json!(booted.to_string())),
                    ("version", json!(dev.config.version)),
                ],
            );
            if let Err(e) = watchdog::disarm() {
                eprintln!("slate-agent: stopping the watchdog: {e}");
            }
            // Services can wait for this (like systemd's boot-complete).
            let _ = std::fs::create_dir_all("/run/slate")
                .and_then(|()| std::fs::write(COMMITTED_MARKER, format!("{booted}\n")));
            super::media::check_removable_media(&dev, &mut state)?;
        }
        Health::Unhealthy(reason) => {
            emit(
                "unhealthy",
                &[
                    ("slot", json!(booted.to_string())),
                    ("reason", json!(reason)),
                ],
            );
            if kind == BootKind::Trial {
                if matches!(state.update, super::state::UpdatePhase::Installed(_)) {
                    state.trial_failed(reason.clone())?;
                    dev.save_state(&mut state);
                }
                flow.mark_bad(booted)?;
                esp.unmount()?;
                system::reboot()?;
            } else {
                // The committed slot is the best this device has: stay up so
                // it can be reached and fixed, and keep the watchdog running
                // only if it was armed for a reason the agent cannot judge.
                esp.unmount()?;
                if let Err(e) = watchdog::disarm() {
                    eprintln!("slate-agent: stopping the watchdog: {e}");
                }
            }
        }
    }
    Ok(())
}
