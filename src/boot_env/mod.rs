//! Boot loader integration behind one trait, so systemd-boot, GRUB and
//! U-Boot can be backends. The verbs are what an A/B updater needs: look at
//! the slots' boot state, take a slot out of the boot order before
//! overwriting it, install its kernel, try it next with bounded attempts,
//! then mark it good (commit) or bad (fall back).

pub mod systemd_boot;
pub mod uefi;

use std::fmt;
use std::io::Read;
use std::str::FromStr;

/// One of the two root slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlotId {
    /// Slot A (partition `root-a`).
    A,
    /// Slot B (partition `root-b`).
    B,
}

impl SlotId {
    /// Both slots.
    pub const ALL: [SlotId; 2] = [SlotId::A, SlotId::B];

    /// The other slot.
    pub fn other(self) -> SlotId {
        match self {
            SlotId::A => SlotId::B,
            SlotId::B => SlotId::A,
        }
    }

    /// `a` or `b`, as used in file and partition names.
    pub fn lower(self) -> &'static str {
        match self {
            SlotId::A => "a",
            SlotId::B => "b",
        }
    }

    /// The GPT partition name of this slot.
    pub fn partition_name(self) -> &'static str {
        match self {
            SlotId::A => "root-a",
            SlotId::B => "root-b",
        }
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlotId::A => "A",
            SlotId::B => "B",
        })
    }
}

impl FromStr for SlotId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "A" | "a" => Ok(SlotId::A),
            "B" | "b" => Ok(SlotId::B),
            _ => Err(format!("invalid slot {s:?} (expected A or B)")),
        }
    }
}

impl serde::Serialize for SlotId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SlotId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the boot loader will do with a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotBootState {
    /// Not in the boot order at all.
    Unbootable,
    /// Committed: boots without counting attempts.
    Good {
        /// Ordering key: the higher generation boots first.
        generation: u64,
    },
    /// On trial: the loader counts attempts down.
    Trying {
        /// Ordering key.
        generation: u64,
        /// Attempts left.
        tries_left: u32,
        /// Attempts made.
        tries_done: u32,
    },
    /// Out of attempts or marked bad: only booted when nothing else is left.
    Bad {
        /// Ordering key.
        generation: u64,
        /// Attempts made.
        tries_done: u32,
    },
}

impl SlotBootState {
    fn rank(&self) -> Option<(u8, u64)> {
        match *self {
            SlotBootState::Unbootable => None,
            SlotBootState::Bad { generation, .. } => Some((0, generation)),
            SlotBootState::Good { generation } | SlotBootState::Trying { generation, .. } => {
                Some((1, generation))
            }
        }
    }

    /// The generation, if the slot is in the boot order.
    pub fn generation(&self) -> Option<u64> {
        self.rank().map(|r| r.1)
    }

    /// A short lowercase word for status output.
    pub fn word(&self) -> &'static str {
        match self {
            SlotBootState::Unbootable => "unbootable",
            SlotBootState::Good { .. } => "good",
            SlotBootState::Trying { .. } => "trying",
            SlotBootState::Bad { .. } => "bad",
        }
    }
}

/// Both slots' boot states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootSnapshot {
    /// Slot A.
    pub a: SlotBootState,
    /// Slot B.
    pub b: SlotBootState,
}

impl BootSnapshot {
    /// State of one slot.
    pub fn get(&self, slot: SlotId) -> SlotBootState {
        match slot {
            SlotId::A => self.a,
            SlotId::B => self.b,
        }
    }

    /// The slot the loader starts next: good or trying before bad, then the
    /// higher generation.
    pub fn next_boot(&self) -> Option<SlotId> {
        match (self.a.rank(), self.b.rank()) {
            (None, None) => None,
            (Some(_), None) => Some(SlotId::A),
            (None, Some(_)) => Some(SlotId::B),
            (Some(a), Some(b)) => Some(if b > a { SlotId::B } else { SlotId::A }),
        }
    }

    /// The committed slot the device falls back to: the good slot with the
    /// highest generation.
    pub fn committed(&self) -> Option<SlotId> {
        let good = |s: SlotBootState| match s {
            SlotBootState::Good { generation } => Some(generation),
            _ => None,
        };
        match (good(self.a), good(self.b)) {
            (Some(a), Some(b)) => Some(if b > a { SlotId::B } else { SlotId::A }),
            (Some(_), None) => Some(SlotId::A),
            (None, Some(_)) => Some(SlotId::B),
            (None, None) => None,
        }
    }

    /// Highest generation in use.
    pub fn max_generation(&self) -> u64 {
        self.a
            .generation()
            .into_iter()
            .chain(self.b.generation())
            .max()
            .unwrap_or(0)
    }
}

/// The files a slot boots from besides its root filesystem: a kernel and
/// an initramfs, or one unified kernel image holding both and the command
/// line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFile {
    /// The kernel image.
    Kernel,
    /// The initramfs.
    Initrd,
    /// A unified kernel image (written at its exact size: a signed image
    /// must not be padded).
    Uki,
}

/// What a boot entry starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    /// Menu title.
    pub title: String,
    /// Image version.
    pub version: String,
    /// The full kernel command line. With `uki` it is the image's own
    /// (embedded) command line and the entry passes none.
    pub options: String,
    /// The entry starts the slot's unified kernel image.
    pub uki: bool,
}

/// Why the boot loader state could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum BootEnvError {
    /// A file operation on the boot partition failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// A transition that the current state does not allow.
    #[error("slot {slot}: cannot {action} while it is {state}")]
    Transition {
        /// The slot.
        slot: SlotId,
        /// What was attempted.
        action: &'static str,
        /// Its current state.
        state: &'static str,
    },
}

/// A boot loader backend.
pub trait BootFlow {
    /// Backend name for status output.
    fn name(&self) -> &'static str;
    /// Reads both slots' boot state.
    fn snapshot(&self) -> Result<BootSnapshot, BootEnvError>;
    /// Takes `slot` out of the boot order (before its contents are rewritten).
    fn disable(&mut self, slot: SlotId) -> Result<(), BootEnvError>;
    /// Installs one boot file (kernel or initrd) of `size` bytes for
    /// `slot`, streaming it from `src`; the slot must be disabled.
    fn install_boot_file(
        &mut self,
        slot: SlotId,
        file: BootFile,
        src: &mut dyn Read,
        size: u64,
    ) -> Result<(), BootEnvError>;
    /// Reads back a boot file of `slot` (to verify it after writing).
    fn read_boot_file(&self, slot: SlotId, file: BootFile) -> Result<Box<dyn Read>, BootEnvError>;
    /// Makes `slot` the next boot, with `tries` attempts before the loader
    /// falls back to the committed slot.
    fn try_next(&mut self, slot: SlotId, tries: u32, entry: &EntrySpec)
    -> Result<(), BootEnvError>;
    /// Commits a slot that booted healthy (on trial, including its last
    /// attempt): it becomes good and primary.
    fn mark_good(&mut self, slot: SlotId) -> Result<(), BootEnvError>;
    /// Marks a slot bad so the loader falls back on the next boot.
    fn mark_bad(&mut self, slot: SlotId) -> Result<(), BootEnvError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_boot_prefers_good_then_generation() {
        let s = BootSnapshot {
            a: SlotBootState::Good { generation: 1 },
            b: SlotBootState::Trying {
                generation: 2,
                tries_left: 1,
                tries_done: 0,
            },
        };
        assert_eq!(s.next_boot(), Some(SlotId::B));
        assert_eq!(s.committed(), Some(SlotId::A));
        let s = BootSnapshot {
            b: SlotBootState::Bad {
                generation: 2,
                tries_done: 3,
            },
            ..s
        };
        assert_eq!(s.next_boot(), Some(SlotId::A));
        assert_eq!(s.max_generation(), 2);
        assert_eq!("b".parse::<SlotId>().unwrap().other(), SlotId::A);
    }
}
