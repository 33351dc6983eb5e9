//! `slate-agent boot`: what happens after every boot. Grow /data when the
//! disk is larger than the image ([`super::grow`]), work out what this
//! boot is (trial, fallback after a failed trial, interrupted install,
//! ordinary), run the health check, then commit or fall back; afterwards
//! look for an update on removable media.

use super::cmdline::{self, BootParams};
use super::config::AgentConfig;
use super::events::emit;
use super::fault::{self, FaultPoint};
use super::health::{self, Health};
use super::lock::{LOCK_PATH, UpdateLock};
use super::state::{
    BootKind, DeviceState, SlotRecord, StateError, StateStore, UpdatePhase, classify,
};
use super::system::{self, EspMount};
use super::watchdog;
use crate::boot_env::systemd_boot::SystemdBoot;
use crate::boot_env::{BootFlow, BootSnapshot, SlotBootState, SlotId};
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

    /// The stored state, or the factory state on first boot. Unreadable
    /// state (every copy corrupt, an I/O error) is an error: the floor is
    /// never silently reset.
    pub fn load_state(&self) -> Result<DeviceState, StateError> {
        Ok(self.store.load()?.unwrap_or_else(|| {
            DeviceState::factory(&self.config.version, self.config.security_version)
        }))
    }

    /// Saves the state; a failure (disk full, I/O error) stops the caller's
    /// transition.
    pub fn save_state(&self, state: &mut DeviceState) -> Result<()> {
        self.store
            .save(state)
            .context("saving the update state on /data")
    }

    /// What the running image says about itself, as a slot record.
    pub fn running_record(&self) -> SlotRecord {
        SlotRecord {
            version: self.config.version.clone(),
            digest: None,
            security_version: self.config.security_version,
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

/// How long the boot verdict waits for an install holding the lock.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// The committed slot this boot could fall back to, if any.
pub fn fallback_of(snapshot: &BootSnapshot, booted: SlotId) -> Option<SlotId> {
    let other = booted.other();
    matches!(snapshot.get(other), SlotBootState::Good { .. }).then_some(other)
}

/// The state as this boot found it: readable (and saved as it changes) or
/// unreadable (kept in memory only, installs refused).
struct Ledger<'a> {
    dev: &'a Device,
    state: DeviceState,
    persistent: bool,
    fresh: bool,
}

impl Ledger<'_> {
    fn save(&mut self) -> Result<()> {
        if self.persistent {
            self.dev.save_state(&mut self.state)
        } else {
            Ok(())
        }
    }
}

/// What the health check's verdict means for this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Commit the booted slot's trial when healthy, fall back when not.
    Trial,
    /// Report only: the booted slot is already committed.
    Committed,
    /// Report only: nothing can be committed or fallen back to.
    ReportOnly,
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
            (
                "verity",
                json!(super::verity::running_root(&dev.params).map(|v| v.root_hash)),
            ),
            ("lockdown", json!(super::lockdown::mode())),
        ],
    );
    // Early, before the verdict: an image on a larger disk gets all of it.
    super::grow::run(&dev.params);
    let _lock = UpdateLock::wait(std::path::Path::new(LOCK_PATH), LOCK_WAIT)?;
    let mut ledger = open_ledger(&dev);
    if ledger.fresh {
        // First boot: the factory floor becomes durable at once.
        ledger.save()?;
    }
    let esp = dev.mount_esp(true)?;
    let mut flow = SystemdBoot::new(esp.path());
    let snapshot = flow.snapshot()?;
    let kind = classify(booted, &snapshot, &ledger.state.update);
    let verdict = match settle(&mut ledger, &mut flow, &snapshot, &kind)? {
        Some(v) => v,
        None => {
            // The fallback was finished: boot the committed slot.
            esp.unmount()?;
            return system::reboot();
        }
    };
    if verdict == Verdict::Trial {
        fault::hit(FaultPoint::TrialBeforeVerdict);
    }
    let health = health::check_with_retries(
        &dev.config.health_command,
        Duration::from_millis(dev.config.health_timeout_ms),
        dev.config.health_retries,
        Duration::from_millis(dev.config.health_interval_ms),
    );
    match health {
        Health::Healthy => {
            emit("healthy", &[("slot", json!(booted.to_string()))]);
            match verdict {
                Verdict::Trial => commit_trial(&mut ledger, &mut flow, &kind)?,
                Verdict::Committed => {}
                Verdict::ReportOnly => {
                    esp.unmount()?;
                    return stay_up(booted, "healthy, but its boot entry cannot be committed");
                }
            }
            esp.unmount()?;
            if ledger.persistent
                && let Err(e) = super::discoverable::reconcile(&dev.params, booted)
            {
                emit("warning", &[("reason", json!(format!("{e:#}")))]);
            }
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
            if ledger.persistent {
                keep_boot_options(&dev);
            }
            // Services can wait for this (like systemd's boot-complete).
            let _ = std::fs::create_dir_all("/run/slate")
                .and_then(|()| std::fs::write(COMMITTED_MARKER, format!("{booted}\n")));
            if ledger.persistent {
                drop(_lock);
                super::media::check_removable_media(&dev)?;
            }
        }
        Health::Unhealthy(reason) => {
            emit(
                "unhealthy",
                &[
                    ("slot", json!(booted.to_string())),
                    ("reason", json!(reason)),
                ],
            );
            if verdict == Verdict::Trial {
                if matches!(ledger.state.update, UpdatePhase::Installed(_)) {
                    ledger.state.trial_failed(reason.clone())?;
                    ledger.save()?;
                    fault::hit(FaultPoint::TrialAfterFailedSaved);
                }
                flow.mark_bad(booted)?;
                if fallback_of(&snapshot, booted).is_some() {
                    fault::hit(FaultPoint::TrialAfterMarkBad);
                    esp.unmount()?;
                    return system::reboot();
                }
                esp.unmount()?;
                return stay_up(
                    booted,
                    &format!("{reason}; no committed slot to fall back to"),
                );
            }
            // The committed slot (or the only one that boots) is the best
            // this device has: stay up so it can be reached and fixed.
            esp.unmount()?;
            if verdict == Verdict::ReportOnly {
                return stay_up(booted, &reason);
            }
            if let Err(e) = watchdog::disarm() {
                eprintln!("slate-agent: stopping the watchdog: {e}");
            }
        }
    }
    Ok(())
}

/// Makes the firmware's boot order start with one option per try of this
/// disk's loader ([`super::firmware`]), so that an image the firmware
/// refuses falls back too; reported when something changed or failed,
/// never fatal.
fn keep_boot_options(dev: &Device) {
    let result = (|| -> Result<Option<crate::boot_env::uefi::BootOptionsPlan>> {
        let Some(vars) = super::firmware::EfiVars::open()? else {
            return Ok(None);
        };
        let guid = dev
            .params
            .esp
            .as_deref()
            .context("no slate.esp= on the command line")?;
        let loader = super::firmware::loader_on(&system::partition_by_guid(guid)?)?;
        super::firmware::ensure_boot_options(&vars, &loader, dev.config.tries).map(Some)
    })();
    match result {
        Ok(Some(plan)) if !plan.is_empty() => {
            let order = plan.order.as_ref().map(|o| {
                o.iter()
                    .map(|n| crate::boot_env::uefi::boot_variable(*n))
                    .collect::<Vec<_>>()
            });
            emit(
                "boot_options",
                &[
                    ("written", json!(plan.write.len())),
                    ("deleted", json!(plan.delete.len())),
                    ("order", json!(order)),
                ],
            );
        }
        Ok(_) => {}
        Err(e) => emit(
            "warning",
            &[("reason", json!(format!("firmware boot options: {e:#}")))],
        ),
    }
}

/// Loads the state; unreadable state is reported and kept out of every
/// decision that needs it (installs, the floor).
fn open_ledger(dev: &Device) -> Ledger<'_> {
    if std::path::Path::new("/run/slate/data-unavailable").exists() {
        emit(
            "warning",
            &[(
                "reason",
                json!("data partition unavailable; state is not persistent"),
            )],
        );
    }
    match dev.store.load() {
        Ok(stored) => Ledger {
            dev,
            fresh: stored.is_none(),
            state: stored.unwrap_or_else(|| {
                DeviceState::factory(&dev.config.version, dev.config.security_version)
            }),
            persistent: true,
        },
        Err(e) => {
            emit("state_unreadable", &[("reason", json!(e.to_string()))]);
            let mut state = DeviceState::factory(&dev.config.version, dev.config.security_version);
            state.update = UpdatePhase::Idle;
            Ledger {
                dev,
                state,
                persistent: false,
                fresh: false,
            }
        }
    }
}

/// Brings state and boot loader in line for `kind` before the health
/// check. Returns what the verdict means, or `None` when this boot only
/// finishes a fallback (reboot next).
fn settle(
    ledger: &mut Ledger,
    flow: &mut SystemdBoot,
    snapshot: &BootSnapshot,
    kind: &BootKind,
) -> Result<Option<Verdict>> {
    let booted = ledger.dev.booted;
    Ok(Some(match kind {
        BootKind::Trial {
            record_installed, ..
        } => {
            if *record_installed {
                ledger.state.installed()?;
                ledger.save()?;
            }
            Verdict::Trial
        }
        BootKind::ResumeFallback => {
            let reason = match &ledger.state.update {
                UpdatePhase::Failed { reason, .. } => reason.clone(),
                _ => String::new(),
            };
            flow.mark_bad(booted)?;
            if fallback_of(snapshot, booted).is_some() {
                emit(
                    "unhealthy",
                    &[
                        ("slot", json!(booted.to_string())),
                        ("reason", json!(reason)),
                    ],
                );
                return Ok(None);
            }
            Verdict::ReportOnly
        }
        BootKind::LastResort { give_up_update } => {
            if *give_up_update {
                ledger
                    .state
                    .rolled_back("no healthy boot and no other bootable slot")?;
                ledger.save()?;
            }
            Verdict::ReportOnly
        }
        BootKind::Unlisted => Verdict::ReportOnly,
        BootKind::FinishCommit { slot } => {
            if matches!(ledger.state.update, UpdatePhase::Installing(_)) {
                ledger.state.installed()?;
            }
            ledger.state.commit(*slot)?;
            ledger.save()?;
            fault::hit(FaultPoint::CommitAfterSaved);
            Verdict::Committed
        }
        BootKind::RolledBack {
            from,
            reason,
            mark_bad,
        } => {
            if *mark_bad {
                flow.mark_bad(*from)?;
            }
            let failed = ledger.state.rolled_back(reason)?;
            // The failed slot stays out of the boot order until the next install.
            flow.disable(*from)?;
            fault::hit(FaultPoint::RollbackAfterDisable);
            ledger.save()?;
            fault::hit(FaultPoint::RollbackAfterSaved);
            emit(
                "rollback",
                &[
                    ("from", json!(from.to_string())),
                    ("to", json!(booted.to_string())),
                    ("version", json!(failed.version)),
                    ("reason", json!(failed.reason)),
                ],
            );
            Verdict::Committed
        }
        BootKind::InterruptedInstall { target } => {
            flow.disable(*target)?;
            fault::hit(FaultPoint::AbandonAfterDisable);
            ledger.state.abandon()?;
            ledger.save()?;
            emit(
                "abandoned",
                &[
                    ("slot", json!(target.to_string())),
                    ("reason", json!("the install was interrupted")),
                ],
            );
            Verdict::Committed
        }
        BootKind::PendingTrial { record_installed } => {
            if *record_installed {
                ledger.state.installed()?;
                ledger.save()?;
            }
            Verdict::Committed
        }
        BootKind::StaleFailure => {
            ledger.state.rolled_back("stale")?;
            ledger.save()?;
            Verdict::Committed
        }
        BootKind::Normal => Verdict::Committed,
    }))
}

/// A healthy trial: the loader entry is committed first, then the state
/// (a cut between the two is `FinishCommit` on the next boot).
fn commit_trial(ledger: &mut Ledger, flow: &mut SystemdBoot, kind: &BootKind) -> Result<()> {
    let booted = ledger.dev.booted;
    flow.mark_good(booted)?;
    fault::hit(FaultPoint::TrialAfterMarkGood);
    match kind {
        BootKind::Trial { unknown: true, .. } => {
            let running = ledger.dev.running_record();
            ledger.state.adopt_running(booted, running);
        }
        _ => ledger.state.commit(booted)?,
    }
    ledger.save()?;
    fault::hit(FaultPoint::CommitAfterSaved);
    Ok(())
}

/// Nothing better boots: stay up and say so (no reboot loop).
fn stay_up(booted: SlotId, reason: &str) -> Result<()> {
    emit(
        "last_resort",
        &[
            ("slot", json!(booted.to_string())),
            ("reason", json!(reason)),
        ],
    );
    if let Err(e) = watchdog::disarm() {
        eprintln!("slate-agent: stopping the watchdog: {e}");
    }
    Ok(())
}
