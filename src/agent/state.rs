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

    /// Whether [`DeviceState::begin_install`] would be allowed (checked
    /// before anything is written).
    pub fn can_begin_install(&self) -> Result<(), TransitionError> {
        match self.update {
            UpdatePhase::Idle => Ok(()),
            _ => Err(self.refuse("begin an install")),
        }
    }

    /// Idle -> Installing: the target slot is about to be overwritten.
    pub fn begin_install(&mut self, p: PendingUpdate) -> Result<(), TransitionError> {
        self.can_begin_install()?;
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

    /// Installed (trial of `slot` healthy, its boot entry committed) -> Idle;
    /// only now the floor rises. A `Failed` trial is never committed.
    pub fn commit(&mut self, slot: SlotId) -> Result<(), TransitionError> {
        match &self.update {
            UpdatePhase::Installed(p) if p.target == slot => {
                self.floor = self.floor.max(p.security_version);
                self.update = UpdatePhase::Idle;
                Ok(())
            }
            _ => Err(self.refuse("commit")),
        }
    }

    /// A healthy trial of `slot` that the state knows nothing about (its
    /// install record was lost): the slot holds the running image, described
    /// by `running`, and the floor rises to its level.
    pub fn adopt_running(&mut self, slot: SlotId, running: SlotRecord) {
        self.floor = self.floor.max(running.security_version);
        self.slots.insert(slot, running);
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

    /// Installing/Installed/Failed -> Idle, remembering the failure (the
    /// device is back on the other slot, or gave the trial up).
    pub fn rolled_back(&mut self, fallback_reason: &str) -> Result<FailedUpdate, TransitionError> {
        let (p, reason) = match &self.update {
            UpdatePhase::Installing(p) | UpdatePhase::Installed(p) => {
                (p.clone(), fallback_reason.to_string())
            }
            UpdatePhase::Failed { update, reason } => (update.clone(), reason.clone()),
            UpdatePhase::Idle => return Err(self.refuse("roll back")),
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
/// state report (nothing about "needs commit" is stored separately). Every
/// combination of the booted slot's entry, the other slot's entry and the
/// stored phase that a power cut can leave maps to one of these; see
/// [`classify`] and docs/updates.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootKind {
    /// The booted slot is on trial: check health, then commit or mark bad.
    Trial {
        /// The state still says `installing`: the power was cut after the
        /// trial entry was written and before `installed` was saved. The
        /// entry exists only after everything was verified on disk, so the
        /// install is recorded as complete first.
        record_installed: bool,
        /// The state has no record of this trial at all (its install record
        /// was lost, or the entry was made by hand): a healthy verdict adopts
        /// the running image as the slot's content.
        unknown: bool,
    },
    /// The booted slot is on trial but its verdict was already unhealthy
    /// (`failed` saved, the power cut before the entry was marked bad):
    /// finish the fallback without checking again. A slot found bad once is
    /// never committed.
    ResumeFallback,
    /// The booted slot is out of tries, is not on its last counted attempt of
    /// an update, and nothing else is bootable: stay up and report; never
    /// commit it and never reboot into a loop.
    LastResort {
        /// Whether the stored update is this slot's trial (given up now).
        give_up_update: bool,
    },
    /// The booted slot has no boot entry (started by hand): report only.
    Unlisted,
    /// The loader has committed `slot` but the state still shows its trial:
    /// a power cut hit between the boot loader commit and the state write.
    FinishCommit {
        /// The committed slot (normally the booted one).
        slot: SlotId,
    },
    /// A trial of the other slot failed and the loader fell back here.
    RolledBack {
        /// The failed slot.
        from: SlotId,
        /// Why (from the failed trial, or the loader's attempt count).
        reason: String,
        /// Its entry still has tries left (the agent's `failed` verdict was
        /// saved but the entry was not marked bad): mark it bad first.
        mark_bad: bool,
    },
    /// An install into the other slot was cut off before it was bootable:
    /// take the slot out of the boot order and forget the install.
    InterruptedInstall {
        /// The half-written slot.
        target: SlotId,
    },
    /// The other slot's trial entry is complete and waits for the next boot
    /// (this boot was chosen by hand, or the cut hit right after the entry
    /// was written): nothing to do but record the install as complete.
    PendingTrial {
        /// The state still says `installing`.
        record_installed: bool,
    },
    /// The state says an update failed whose slot is this committed one:
    /// forget the stale record (keep the failure), change nothing else.
    StaleFailure,
    /// An ordinary boot of a committed slot.
    Normal,
}

/// Classifies this boot (a pure function of the observations).
pub fn classify(booted: SlotId, boot: &BootSnapshot, update: &UpdatePhase) -> BootKind {
    let mine = boot.get(booted);
    let other = booted.other();
    let theirs = boot.get(other);
    let pending = update.pending();
    let for_me = pending.is_some_and(|p| p.target == booted);
    let for_other = pending.is_some_and(|p| p.target == other);
    let failed_reason = match update {
        UpdatePhase::Failed { reason, .. } => Some(reason.clone()),
        _ => None,
    };
    let trial = |update: &UpdatePhase| match update {
        UpdatePhase::Failed { .. } if for_me => BootKind::ResumeFallback,
        UpdatePhase::Installing(_) if for_me => BootKind::Trial {
            record_installed: true,
            unknown: false,
        },
        UpdatePhase::Installed(_) if for_me => BootKind::Trial {
            record_installed: false,
            unknown: false,
        },
        _ => BootKind::Trial {
            record_installed: false,
            unknown: true,
        },
    };
    match mine {
        SlotBootState::Trying { .. } => trial(update),
        // Out of tries: either this boot was its last counted attempt (the
        // loader took the counter to 0 just before starting it; with a
        // committed slot beside it, that is the only way it boots), or the
        // loader started it because nothing else is bootable.
        SlotBootState::Bad { .. } => {
            let other_good = matches!(theirs, SlotBootState::Good { .. });
            let its_update = matches!(
                update,
                UpdatePhase::Installing(_) | UpdatePhase::Installed(_) | UpdatePhase::Failed { .. }
            ) && for_me;
            if other_good || its_update {
                trial(update)
            } else {
                BootKind::LastResort {
                    give_up_update: for_me,
                }
            }
        }
        SlotBootState::Unbootable => BootKind::Unlisted,
        SlotBootState::Good { .. } => {
            if for_me {
                return match update {
                    UpdatePhase::Failed { .. } => BootKind::StaleFailure,
                    _ => BootKind::FinishCommit { slot: booted },
                };
            }
            if !for_other {
                return BootKind::Normal;
            }
            match (update, theirs) {
                // Out of the boot order, or half-written with an entry that
                // cannot be trusted: the install did not complete.
                (
                    UpdatePhase::Installing(_),
                    SlotBootState::Unbootable | SlotBootState::Good { .. },
                ) => BootKind::InterruptedInstall { target: other },
                (UpdatePhase::Installing(_), SlotBootState::Trying { .. }) => {
                    BootKind::PendingTrial {
                        record_installed: true,
                    }
                }
                (UpdatePhase::Installed(_), SlotBootState::Trying { .. }) => {
                    BootKind::PendingTrial {
                        record_installed: false,
                    }
                }
                // The trial committed in the loader; this boot was chosen by hand.
                (UpdatePhase::Installed(_), SlotBootState::Good { .. }) => {
                    BootKind::FinishCommit { slot: other }
                }
                (UpdatePhase::Failed { .. }, SlotBootState::Trying { .. }) => {
                    BootKind::RolledBack {
                        from: other,
                        reason: failed_reason.unwrap_or_default(),
                        mark_bad: true,
                    }
                }
                (_, SlotBootState::Bad { tries_done, .. }) => BootKind::RolledBack {
                    from: other,
                    reason: failed_reason
                        .unwrap_or_else(|| format!("no healthy boot in {tries_done} attempt(s)")),
                    mark_bad: false,
                },
                // Failed and out of the boot order (or committed against the
                // agent's verdict): the failed slot leaves the boot order.
                _ => BootKind::RolledBack {
                    from: other,
                    reason: failed_reason.unwrap_or_else(|| "boot entry missing".into()),
                    mark_bad: false,
                },
            }
        }
    }
}

/// Why the stored state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed (disk full, I/O error).
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// State files exist but none of them is valid: the floor and the
    /// failure history are unknown, so nothing is assumed.
    #[error(
        "the agent state in {dir} is unreadable ({details}); refusing to assume a factory state \
         (that would lower the anti-rollback floor). Restore a copy, or remove both files to \
         reset the device's update history deliberately"
    )]
    Corrupt {
        /// The state directory.
        dir: String,
        /// What is wrong with each copy.
        details: String,
    },
}

/// The two-copy store under a directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

/// One copy as found on disk.
enum Copy {
    Missing,
    Valid(DeviceState),
    Invalid(String),
}

impl StateStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn copy_path(&self, i: u64) -> PathBuf {
        self.dir.join(format!("state.{}.json", i % 2))
    }

    fn read_copy(path: &Path) -> Copy {
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(s) => Copy::Valid(s),
                Err(e) => Copy::Invalid(format!("{}: {e}", path.display())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Copy::Missing,
            Err(e) => Copy::Invalid(format!("{}: {e}", path.display())),
        }
    }

    /// The newest valid copy; `None` when no state was ever saved (first
    /// boot). One bad copy costs one step of history; no valid copy at all
    /// while some exist is an error, never a silent factory reset.
    pub fn load(&self) -> Result<Option<DeviceState>, StateError> {
        match (
            Self::read_copy(&self.copy_path(0)),
            Self::read_copy(&self.copy_path(1)),
        ) {
            (Copy::Valid(a), Copy::Valid(b)) => Ok(Some(if b.seq > a.seq { b } else { a })),
            (Copy::Valid(s), _) | (_, Copy::Valid(s)) => Ok(Some(s)),
            (Copy::Missing, Copy::Missing) => Ok(None),
            (a, b) => {
                let details = [a, b]
                    .into_iter()
                    .filter_map(|c| match c {
                        Copy::Invalid(why) => Some(why),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                Err(StateError::Corrupt {
                    dir: self.dir.display().to_string(),
                    details,
                })
            }
        }
    }

    /// Saves `state` with the next sequence number into the older copy
    /// (temp file, fsync, rename, directory fsync). On error the state on
    /// disk is unchanged and `state.seq` is not advanced.
    pub fn save(&self, state: &mut DeviceState) -> Result<(), StateError> {
        let io = |what, path: &Path| {
            let path = path.display().to_string();
            move |source| StateError::Io { what, path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let mut next = state.clone();
        next.seq += 1;
        let mut json = serde_json::to_vec_pretty(&next).map_err(|e| StateError::Io {
            what: "encoding",
            path: self.dir.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        json.push(b'\n');
        let path = self.copy_path(next.seq);
        crate::io::write_atomic(&path, &json).map_err(io("writing", &path))?;
        state.seq = next.seq;
        Ok(())
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
    const GOOD2: SlotBootState = SlotBootState::Good { generation: 2 };
    const TRYING2: SlotBootState = SlotBootState::Trying {
        generation: 2,
        tries_left: 2,
        tries_done: 1,
    };
    const BAD2: SlotBootState = SlotBootState::Bad {
        generation: 2,
        tries_done: 3,
    };
    const NONE: SlotBootState = SlotBootState::Unbootable;

    #[test]
    fn happy_path() {
        let mut s = DeviceState::factory("1.0.0", 1);
        s.begin_install(pending(SlotId::B)).unwrap();
        assert!(s.begin_install(pending(SlotId::B)).is_err());
        s.installed().unwrap();
        assert_eq!(
            classify(SlotId::B, &snap(GOOD1, TRYING2), &s.update),
            BootKind::Trial {
                record_installed: false,
                unknown: false
            }
        );
        assert_eq!(s.floor, 1, "floor rises only on commit");
        assert!(s.commit(SlotId::A).is_err(), "only the target commits");
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
                reason: "health check exited with status 1".into(),
                mark_bad: false,
            }
        );
        assert!(s.commit(SlotId::B).is_err(), "a failed trial never commits");
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
        match classify(SlotId::A, &snap(GOOD1, BAD2), &s.update) {
            BootKind::RolledBack {
                from,
                reason,
                mark_bad,
            } => {
                assert_eq!(from, SlotId::B);
                assert_eq!(reason, "no healthy boot in 3 attempt(s)");
                assert!(!mark_bad);
            }
            k => panic!("{k:?}"),
        }
    }

    /// Issue 9: the cut between the trial entry and `installed`.
    #[test]
    fn trial_entry_without_installed_record_is_a_trial() {
        let mut s = DeviceState::factory("1.0.0", 1);
        s.begin_install(pending(SlotId::B)).unwrap();
        let k = classify(SlotId::B, &snap(GOOD1, TRYING2), &s.update);
        assert_eq!(
            k,
            BootKind::Trial {
                record_installed: true,
                unknown: false
            }
        );
        // What the agent then does: record, then commit.
        s.installed().unwrap();
        s.commit(SlotId::B).unwrap();
        assert_eq!((s.floor, s.update.word()), (5, "idle"));
        // The same cut, but the committed slot booted (chosen by hand).
        let mut s = DeviceState::factory("1.0.0", 1);
        s.begin_install(pending(SlotId::B)).unwrap();
        assert_eq!(
            classify(SlotId::A, &snap(GOOD1, TRYING2), &s.update),
            BootKind::PendingTrial {
                record_installed: true
            }
        );
        // ... or the trial was used up by panics before the agent ran.
        assert!(matches!(
            classify(SlotId::A, &snap(GOOD1, BAD2), &s.update),
            BootKind::RolledBack {
                from: SlotId::B,
                ..
            }
        ));
        assert!(s.rolled_back("x").is_ok());
    }

    #[test]
    fn interrupted_install_and_finish_commit() {
        let mut s = DeviceState::factory("1.0.0", 1);
        s.begin_install(pending(SlotId::B)).unwrap();
        let k = classify(SlotId::A, &snap(GOOD1, NONE), &s.update);
        assert_eq!(k, BootKind::InterruptedInstall { target: SlotId::B });
        s.abandon().unwrap();
        s.begin_install(pending(SlotId::B)).unwrap();
        s.installed().unwrap();
        assert_eq!(
            classify(SlotId::B, &snap(GOOD1, GOOD2), &s.update),
            BootKind::FinishCommit { slot: SlotId::B }
        );
        assert_eq!(
            classify(SlotId::A, &snap(GOOD1, NONE), &UpdatePhase::Idle),
            BootKind::Normal
        );
    }

    #[test]
    fn verdict_unhealthy_is_final() {
        let mut s = DeviceState::factory("1.0.0", 1);
        s.begin_install(pending(SlotId::B)).unwrap();
        s.installed().unwrap();
        s.trial_failed("bad".into()).unwrap();
        // Cut before the entry was marked bad: B boots again on its next try.
        assert_eq!(
            classify(SlotId::B, &snap(GOOD1, TRYING2), &s.update),
            BootKind::ResumeFallback
        );
        // The committed slot was started instead: mark B bad from here.
        assert_eq!(
            classify(SlotId::A, &snap(GOOD1, TRYING2), &s.update),
            BootKind::RolledBack {
                from: SlotId::B,
                reason: "bad".into(),
                mark_bad: true
            }
        );
    }

    #[test]
    fn bad_slot_with_nothing_else_is_a_last_resort() {
        let mut s = DeviceState::factory("1.0.0", 1);
        s.begin_install(pending(SlotId::B)).unwrap();
        s.installed().unwrap();
        // Its last counted attempt (the loader took the counter to 0 for
        // this very boot): still a trial, with or without a fallback.
        for other in [GOOD1, NONE] {
            assert_eq!(
                classify(SlotId::B, &snap(other, BAD2), &s.update),
                BootKind::Trial {
                    record_installed: false,
                    unknown: false
                }
            );
        }
        s.trial_failed("r".into()).unwrap();
        assert_eq!(
            classify(SlotId::B, &snap(GOOD1, BAD2), &s.update),
            BootKind::ResumeFallback
        );
        assert_eq!(
            classify(SlotId::A, &snap(BAD2, NONE), &UpdatePhase::Idle),
            BootKind::LastResort {
                give_up_update: false
            }
        );
    }

    /// Every (booted entry x other entry x phase x target) combination has a
    /// named case, and the case never does something unsafe: only a slot on
    /// trial is ever health-checked into a commit, a committed slot is never
    /// taken out of the boot order, and a failed verdict is never retried.
    #[test]
    fn every_combination_has_a_safe_case() {
        let states = [GOOD1, GOOD2, TRYING2, BAD2, NONE];
        let phases = |t: SlotId| {
            vec![
                UpdatePhase::Idle,
                UpdatePhase::Installing(pending(t)),
                UpdatePhase::Installed(pending(t)),
                UpdatePhase::Failed {
                    update: pending(t),
                    reason: "r".into(),
                },
            ]
        };
        let mut n = 0;
        for booted in SlotId::ALL {
            for mine in states {
                for theirs in states {
                    for target in SlotId::ALL {
                        for phase in phases(target) {
                            n += 1;
                            let boot = match booted {
                                SlotId::A => snap(mine, theirs),
                                SlotId::B => snap(theirs, mine),
                            };
                            let k = classify(booted, &boot, &phase);
                            let ctx = format!("{booted} {mine:?} {theirs:?} {phase:?} -> {k:?}");
                            match &k {
                                BootKind::Trial { .. } | BootKind::ResumeFallback => {
                                    assert!(
                                        matches!(
                                            mine,
                                            SlotBootState::Trying { .. }
                                                | SlotBootState::Bad { .. }
                                        ),
                                        "{ctx}"
                                    )
                                }
                                BootKind::LastResort { .. } => {
                                    assert!(matches!(mine, SlotBootState::Bad { .. }), "{ctx}");
                                    assert!(!matches!(theirs, SlotBootState::Good { .. }), "{ctx}");
                                }
                                BootKind::InterruptedInstall { target: t }
                                | BootKind::RolledBack { from: t, .. } => {
                                    assert_eq!(*t, booted.other(), "{ctx}");
                                    assert!(matches!(mine, SlotBootState::Good { .. }), "{ctx}");
                                }
                                BootKind::FinishCommit { slot } => {
                                    assert!(
                                        matches!(boot.get(*slot), SlotBootState::Good { .. }),
                                        "{ctx}"
                                    );
                                    assert!(!matches!(phase, UpdatePhase::Failed { .. }), "{ctx}");
                                }
                                _ => {}
                            }
                            if matches!(phase, UpdatePhase::Failed { .. }) && target == booted {
                                assert!(
                                    !matches!(
                                        k,
                                        BootKind::Trial { .. } | BootKind::FinishCommit { .. }
                                    ),
                                    "{ctx}"
                                );
                            }
                            // The transition the agent will apply is allowed.
                            let mut s = DeviceState::factory("1", 0);
                            s.update = phase.clone();
                            match &k {
                                BootKind::Trial {
                                    record_installed: true,
                                    ..
                                }
                                | BootKind::PendingTrial {
                                    record_installed: true,
                                } => s.installed().unwrap(),
                                BootKind::RolledBack { .. } => {
                                    s.rolled_back("x").unwrap();
                                }
                                BootKind::InterruptedInstall { .. } => s.abandon().unwrap(),
                                BootKind::FinishCommit { slot } => {
                                    if matches!(phase, UpdatePhase::Installing(_)) {
                                        s.installed().unwrap();
                                    }
                                    s.commit(*slot).unwrap()
                                }
                                BootKind::StaleFailure
                                | BootKind::LastResort {
                                    give_up_update: true,
                                } => {
                                    s.rolled_back("x").unwrap();
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(n, 2 * 5 * 5 * 2 * 4);
    }

    #[test]
    fn store_survives_one_corrupt_copy() {
        let d = tempfile::tempdir().unwrap();
        let store = StateStore::new(d.path());
        assert!(store.load().unwrap().is_none());
        let mut s = DeviceState::factory("1.0.0", 1);
        store.save(&mut s).unwrap();
        s.floor = 7;
        store.save(&mut s).unwrap();
        assert_eq!(store.load().unwrap().unwrap().floor, 7);
        // Corrupt the newest copy: the previous one is used.
        std::fs::write(store.copy_path(s.seq), b"{ torn").unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.floor, 1);
        assert_eq!(back.seq, s.seq - 1);
    }

    /// Issue 9: both copies unreadable is an error, not a factory reset.
    #[test]
    fn both_copies_corrupt_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let store = StateStore::new(d.path());
        let mut s = DeviceState::factory("1.0.0", 4);
        store.save(&mut s).unwrap();
        store.save(&mut s).unwrap();
        std::fs::write(store.copy_path(0), b"garbage").unwrap();
        std::fs::write(store.copy_path(1), b"").unwrap();
        let e = store.load().unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("state.0.json"), "{e}");
        // Only one copy ever written, and it is torn: also an error.
        let d = tempfile::tempdir().unwrap();
        let store = StateStore::new(d.path());
        std::fs::write(store.copy_path(1), b"{").unwrap();
        assert!(store.load().is_err());
    }

    /// Issue 9: a failed write is an error and leaves the stored state as it was.
    #[test]
    fn failed_save_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let store = StateStore::new(d.path());
        let mut s = DeviceState::factory("1.0.0", 1);
        store.save(&mut s).unwrap();
        let seq = s.seq;
        // A directory where the next copy's file must go: the rename fails.
        std::fs::create_dir(store.copy_path(seq + 1)).unwrap();
        std::fs::write(store.copy_path(seq + 1).join("x"), b"x").unwrap();
        s.floor = 9;
        assert!(store.save(&mut s).is_err());
        assert_eq!(s.seq, seq, "seq not advanced by a failed save");
        assert_eq!(store.load().unwrap().unwrap().floor, 1);
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
