//! The agent's persistent state on /data and the update lifecycle as an
//! explicit state machine.
//!
//! ```text
//!            begin_install            installed             (reboot, trial boot)
//!   Idle ─────────────────▶ Installing ─────────▶ Installed ──┬─ healthy ──▶ commit ──▶ Idle
//!    ▲                          │                      │      └─ unhealthy ─▶ Failed
//!    │  abandon (power cut      │                      │                        │
//!    └──────── before the ──────┘                      └── tries used up ───────┤
//!              slot was bootable)                          rolled_back ◀────────┘
//! ```
//!
//! The state is stored twice (`state.0.json`, `state.1.json`), each written
//! atomically with a sequence number; loading picks the newest valid copy,
//! so neither a torn write nor one corrupted file loses the anti-rollback
//! floor or the list of failed updates.

use crate::boot_env::{BootSnapshot, SlotBootState, SlotId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Remembered failed updates are capped at this many (oldest dropped).
pub const MAX_FAILED: usize = 32;

/// What is known about a slot's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// Image version in the slot.
    pub version: String,
    /// Digest of the bundle it was installed from (none for the factory image).
    pub digest: Option<String>,
    /// Its anti-rollback level.
    pub security_version: u64,
}

/// The update in progress, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpdate {
    /// The slot being written / tried.
    pub target: SlotId,
    /// Its version.
    pub version: String,
    /// Bundle digest (sha256 of its signed manifest).
    pub digest: String,
    /// Its anti-rollback level.
    pub security_version: u64,
}

/// The lifecycle phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum UpdatePhase {
    /// Nothing in progress.
    Idle,
    /// The target slot is out of the boot order and being written.
    Installing(PendingUpdate),
    /// Written and verified; the boot loader will try it next.
    Installed(PendingUpdate),
    /// Its trial boot was unhealthy; waiting to be back on the other slot.
    Failed {
        /// The update.
        #[serde(flatten)]
        update: PendingUpdate,
        /// Why it failed.
        reason: String,
    },
}

impl UpdatePhase {
    /// The update, in any non-idle phase.
    pub fn pending(&self) -> Option<&PendingUpdate> {
        match self {
            UpdatePhase::Idle => None,
            UpdatePhase::Installing(p) | UpdatePhase::Installed(p) => Some(p),
            UpdatePhase::Failed { update, .. } => Some(update),
        }
    }

    /// Lowercase phase name.
    pub fn word(&self) -> &'static str {
        match self {
            UpdatePhase::Idle => "idle",
            UpdatePhase::Installing(_) => "installing",
            UpdatePhase::Installed(_) => "installed",
            UpdatePhase::Failed { .. } => "failed",
        }
    }
}

/// An update that did not survive its trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedUpdate {
    /// Bundle digest: the same bundle is not installed again automatically.
    pub digest: String,
    /// Its version.
    pub version: String,
    /// Why it failed.
    pub reason: String,
}

/// Everything the agent keeps across boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceState {
    /// Write sequence number (the newer of the two copies wins).
    pub seq: u64,
    /// Anti-rollback floor: bundles below it are refused.
    pub floor: u64,
    /// What each slot holds.
    pub slots: BTreeMap<SlotId, SlotRecord>,
    /// The update lifecycle.
    pub update: UpdatePhase,
    /// Failed updates, newest last.
    pub failed: Vec<FailedUpdate>,
}

/// A transition the current phase does not allow (a bug or a tampered file).
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} while the update phase is {phase}")]
pub struct TransitionError {
    action: &'static str,
    phase: &'static str,
}

impl DeviceState {
    /// First boot of a factory image: both slots hold `version`.
    pub fn factory(version: &str, security_version: u64) -> Self {
        let rec = SlotRecord {
            version: version.to_string(),
            digest: None,
            security_version,
        };
        Self {
            seq: 0,
            floor: security_version,
            slots: SlotId::ALL.iter().map(|s| (*s, rec.clone())).collect(),
            update: UpdatePhase::Idle,
            failed: Vec::new(),
        }
    }

    fn refuse(&self, action: &'static str) -> TransitionError {
        TransitionError {
            action,
            phase: self.update.word(),
        }
    }

    /// Idle -> Installing: the target slot is about to be overwritten.
    pub fn begin_install(&mut self, p: PendingUpdate) -> Result<(), TransitionError> {
        if self.update != UpdatePhase::Idle {
            return Err(self.refuse("begin an install"));
        }
        self.slots.insert(
            p.target,
            SlotRecord {
                version: p.version.clone(),
                digest: Some(p.digest.clone()),
                security_version: p.security_version,
            },
        );
        self.update = UpdatePhase::Installing(p);
        Ok(())
    }

    /// Installing -> Installed: the slot is written, verified and tried next.
    pub fn installed(&mut self) -> Result<(), TransitionError> {
        match &self.update {
            UpdatePhase::Installing(p) => {
                self.update = UpdatePhase::Installed(p.clone());
                Ok(())
            }
            _ => Err(self.refuse("finish an install")),
        }
    }

    /// Installing -> Idle: an install that never made its slot bootable.
    pub fn abandon(&mut self) -> Result<(), TransitionError> {
        match &self.update {
            UpdatePhase::Installing(_) => {
                self.update = UpdatePhase::Idle;
                Ok(())
            }
            _ => Err(self.refuse("abandon an install")),
        }
    }

    /// Installed/Failed (booted target) -> Idle: the trial was healthy and
    /// the boot loader entry is committed; only now the floor rises.
    pub fn commit(&mut self, booted: SlotId) -> Result<(), TransitionError> {
        match self.update.pending() {
            Some(p)
                if p.target == booted
                    && matches!(
                        self.update,
                        UpdatePhase::Installed(_) | UpdatePhase::Failed { .. }
                    ) =>
            {
                self.floor = self.floor.max(p.security_version);
                self.update = UpdatePhase::Idle;
                Ok(())
            }
            _ => Err(self.refuse("commit")),
        }
    }

    /// Installed -> Failed: the trial boot was unhealthy.
    pub fn trial_failed(&mut self, reason: String) -> Result<(), TransitionError> {
        match &self.update {
            UpdatePhase::Installed(p) => {
                self.update = UpdatePhase::Failed {
                    update: p.clone(),
                    reason,
                };
                Ok(())
            }
            _ => Err(self.refuse("fail a trial")),
        }
    }

    /// Installed/Failed -> Idle, remembering the failure.
    pub fn rolled_back(&mut self, fallback_reason: &str) -> Result<FailedUpdate, TransitionError> {
        let (p, reason) = match &self.update {
            UpdatePhase::Installed(p) => (p.clone(), fallback_reason.to_string()),
            UpdatePhase::Failed { update, reason } => (update.clone(), reason.clone()),
            _ => return Err(self.refuse("roll back")),
        };
        let f = FailedUpdate {
            digest: p.digest,
            version: p.version,
            reason,
        };
        self.remember_failure(f.clone());
        self.update = UpdatePhase::Idle;
        Ok(f)
    }

    /// Adds a failure (bounded list).
    pub fn remember_failure(&mut self, f: FailedUpdate) {
        self.failed.retain(|x| x.digest != f.digest);
        self.failed.push(f);
        if self.failed.len() > MAX_FAILED {
            let excess = self.failed.len() - MAX_FAILED;
            self.failed.drain(..excess);
        }
    }

    /// Whether a bundle with this digest failed before.
    pub fn has_failed(&self, digest: &str) -> bool {
        self.failed.iter().any(|f| f.digest == digest)
    }
}

/// What a boot means, worked out from what the boot loader and the stored
/// state report (nothing about "needs commit" is stored separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootKind {
    /// The booted slot is on trial: check health, then commit or mark bad.
    Trial,
    /// The booted slot is committed but the state still shows its trial:
    /// a power cut hit between the boot loader commit and the state write.
    FinishCommit,
    /// A trial of the other slot failed and the loader fell back here.
    RolledBack {
        /// The failed slot.
        from: SlotId,
        /// Why (from the failed trial, or the loader's attempt count).
        reason: String,
    },
    /// An install into the other slot was cut off before it was bootable.
    InterruptedInstall,
    /// An ordinary boot of a committed slot.
    Normal,
}

/// Classifies this boot (a pure function of the observations).
pub fn classify(booted: SlotId, boot: &BootSnapshot, update: &UpdatePhase) -> BootKind {
    let mine = boot.get(booted);
    let pending = update.pending();
    if matches!(
        mine,
        SlotBootState::Trying { .. } | SlotBootState::Bad { .. }
    ) {
        return BootKind::Trial;
    }
    match (update, pending) {
        (UpdatePhase::Installing(_), Some(p)) if p.target != booted => BootKind::InterruptedInstall,
        (UpdatePhase::Installed(_) | UpdatePhase::Failed { .. }, Some(p)) if p.target == booted => {
            BootKind::FinishCommit
        }
        (UpdatePhase::Installed(_) | UpdatePhase::Failed { .. }, Some(p)) => {
            match boot.get(p.target) {
                // Not tried yet (e.g. chosen by hand in the boot menu): leave it.
                SlotBootState::Trying { .. } => BootKind::Normal,
                SlotBootState::Bad { tries_done, .. } => BootKind::RolledBack {
                    from: p.target,
                    reason: match update {
                        UpdatePhase::Failed { reason, .. } => reason.clone(),
                        _ => format!("no healthy boot in {tries_done} attempt(s)"),
                    },
                },
                _ => BootKind::RolledBack {
                    from: p.target,
                    reason: match update {
                        UpdatePhase::Failed { reason, .. } => reason.clone(),
                        _ => "boot entry missing".into(),
                    },
                },
            }
        }
        _ => BootKind::Normal,
    }
}

/// The two-copy store under a directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn copy_path(&self, i: u64) -> PathBuf {
        self.dir.join(format!("state.{}.json", i % 2))
    }

    fn read_copy(path: &Path) -> Option<DeviceState> {
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The newest valid copy, if any.
    pub fn load(&self) -> Option<DeviceState> {
        let a = Self::read_copy(&self.copy_path(0));
        let b = Self::read_copy(&self.copy_path(1));
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.seq > a.seq { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// Saves `state` with the next sequence number into the older copy.
    pub fn save(&self, state: &mut DeviceState) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        state.seq += 1;
        let mut json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        json.push(b'\n');
        crate::io::write_atomic(self.copy_path(state.seq), &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(target: SlotId) -> PendingUpdate {
        PendingUpdate {
            target,
            version: "2.0.0".into(),
            digest: "d2".into(),
            security_version: 5,
        }
    }

    fn snap(a: SlotBootState, b: SlotBootState) -> BootSnapshot {
        BootSnapshot { a, b }
    }

    const GOOD1: SlotBootState = SlotBootState::Good { generation: 1 };

    #[test]
    fn happy_path() {
        let mut s = DeviceState::factory("1.0.0", 1);
        s.begin_install(pending(SlotId::B)).unwrap();
        assert!(s.begin_install(pending(SlotId::B)).is_err());
        s.installed().unwrap();
        let trying = SlotBootState::Trying {
            generation: 2,
            tries_left: 2,
            tries_done: 1,
        };
        assert_eq!(
            classify(SlotId::B, &snap(GOOD1, trying), &s.update),
            BootKind::Trial
        );
        assert_eq!(s.floor, 1, "floor rises only on commit");
        s.commit(SlotId::B).unwrap();
        assert_eq!(s.floor, 5);
        assert_eq!(s.update, UpdatePhase::Idle);
        assert_eq!(s.slots[&SlotId::B].version, "2.0.0");
    }

    #[test]
    fn give_up_path_remembers_failure() {
        let mut s = DeviceState::factory("1.0.0", 1);
        s.begin_install(pending(SlotId::B)).unwrap();
        s.installed().unwrap();
        s.trial_failed("health check exited with status 1".into())
            .unwrap();
        let bad = SlotBootState::Bad {
            generation: 2,
            tries_done: 1,
        };
        let kind = classify(SlotId::A, &snap(GOOD1, bad), &s.update);
        assert_eq!(
            kind,
            BootKind::RolledBack {
                from: SlotId::B,
                reason: "health check exited with status 1".into()
            }
        );
        let f = s.rolled_back("unused").unwrap();
        assert_eq!(f.reason, "health check exited with status 1");
        assert!(s.has_failed("d2"));
        assert_eq!(s.floor, 1);
        assert!(s.commit(SlotId::B).is_err());
    }

    #[test]
    fn tries_exhausted_without_agent() {
        let mut s = DeviceState::factory("1.0.0", 1);
        s.begin_install(pending(SlotId::B)).unwrap();
        s.installed().unwrap();
        let bad = SlotBootState::Bad {
            generation: 2,
            tries_done: 3,
        };
        match classify(SlotId::A, &snap(GOOD1, bad), &s.update) {
            BootKind::RolledBack { from, reason } => {
                assert_eq!(from, SlotId::B);
                assert_eq!(reason, "no healthy boot in 3 attempt(s)");
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn interrupted_install_and_finish_commit() {
        let mut s = DeviceState::factory("1.0.0", 1);
        s.begin_install(pending(SlotId::B)).unwrap();
        let k = classify(
            SlotId::A,
            &snap(GOOD1, SlotBootState::Unbootable),
            &s.update,
        );
        assert_eq!(k, BootKind::InterruptedInstall);
        s.abandon().unwrap();
        s.begin_install(pending(SlotId::B)).unwrap();
        s.installed().unwrap();
        let good2 = SlotBootState::Good { generation: 2 };
        assert_eq!(
            classify(SlotId::B, &snap(GOOD1, good2), &s.update),
            BootKind::FinishCommit
        );
        assert_eq!(
            classify(
                SlotId::A,
                &snap(GOOD1, SlotBootState::Unbootable),
                &UpdatePhase::Idle
            ),
            BootKind::Normal
        );
    }

    #[test]
    fn store_survives_one_corrupt_copy() {
        let d = tempfile::tempdir().unwrap();
        let store = StateStore::new(d.path());
        assert!(store.load().is_none());
        let mut s = DeviceState::factory("1.0.0", 1);
        store.save(&mut s).unwrap();
        s.floor = 7;
        store.save(&mut s).unwrap();
        assert_eq!(store.load().unwrap().floor, 7);
        // Corrupt the newest copy: the previous one is used.
        std::fs::write(store.copy_path(s.seq), b"{ torn").unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.floor, 1);
        assert_eq!(back.seq, s.seq - 1);
    }

    #[test]
    fn failure_list_is_bounded() {
        let mut s = DeviceState::factory("1", 0);
        for i in 0..100 {
            s.remember_failure(FailedUpdate {
                digest: format!("d{i}"),
                version: "x".into(),
                reason: "r".into(),
            });
        }
        assert_eq!(s.failed.len(), MAX_FAILED);
        assert!(s.has_failed("d99") && !s.has_failed("d0"));
    }
}
