//! Named fault points in the agent's install, boot-verdict, commit,
//! rollback and /data growth paths, for tests that stop the device at
//! exactly one instant.
//!
//! The names are always compiled (so `slate qemu --fault` can check them);
//! firing is compiled only with the `fault-injection` cargo feature, which
//! test builds enable and release builds do not: without it [`hit`] is an
//! empty inline function.
//!
//! A test selects one point at run time with a small *fault disk* attached to
//! the guest (`slate qemu --fault POINT[:ACTION]`): a block device whose first
//! sector is
//!
//! ```text
//! SLATE-FAULT v1\n
//! point=<name>\n
//! action=poweroff|panic\n
//! ```
//!
//! and whose second sector holds `fired\n` once the point has fired, so the
//! fault happens once per disk even across the guest's reboots. The disk is
//! separate from the system disk: marking it fired syncs nothing else.
//!
//! Actions: `poweroff` cuts the power at once (`reboot(2)` with
//! `RB_POWER_OFF`, no sync: what was not durable yet is lost, as in a power
//! cut); `panic` makes the agent itself panic (a crash of the agent while the
//! machine keeps running).

use std::fmt;
use std::str::FromStr;

/// Magic line that starts a fault disk.
pub const MAGIC: &[u8] = b"SLATE-FAULT v1\n";

/// Bytes per sector of the fault disk layout.
pub const SECTOR: usize = 512;

macro_rules! fault_points {
    ($($variant:ident = $name:literal: $doc:literal,)*) => {
        /// A place in the agent where a test can stop the device.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum FaultPoint {
            $(#[doc = $doc] $variant,)*
        }

        impl FaultPoint {
            /// Every point, in the order the update reaches them.
            pub const ALL: &'static [FaultPoint] = &[$(FaultPoint::$variant,)*];

            /// The point's name (`install.after_disable`, ...).
            pub fn name(self) -> &'static str {
                match self {
                    $(FaultPoint::$variant => $name,)*
                }
            }

            /// What the point is (one line).
            pub fn description(self) -> &'static str {
                match self {
                    $(FaultPoint::$variant => $doc,)*
                }
            }
        }
    };
}

fault_points! {
    AfterVerify = "install.after_verify":
        "Every check passed (the whole bundle verified; from a URL, its signed head); nothing is written yet.",
    AfterDisable = "install.after_disable":
        "The target slot's boot entry was removed; the state does not say `installing` yet.",
    AfterInstalling = "install.after_installing":
        "The state says `installing`; nothing was written to the slot.",
    AfterFirstWrite = "install.after_first_write":
        "The first bytes of the rootfs reached the slot.",
    MidSlot = "install.mid_slot":
        "Half of the rootfs was written to the slot.",
    AfterSlotSync = "install.after_slot_sync":
        "The whole rootfs was written and fsynced, before the read-back.",
    AfterBootFiles = "install.after_boot_files":
        "The slot's kernel and initrd were written to the ESP and read back.",
    AfterSeal = "install.after_seal":
        "The slot's filesystem identity and dm-verity tree were written and its root hash matched the signed one; its manifest is not stored yet.",
    AfterSlotManifest = "install.after_slot_manifest":
        "The new slot's signed manifest is stored on /data; the slot has no boot entry yet.",
    AfterTrialEntry = "install.after_trial_entry":
        "The trial boot entry exists; the state still says `installing`.",
    AfterInstalled = "install.after_installed":
        "The state says `installed`; the reboot has not happened.",
    TrialBeforeVerdict = "trial.before_verdict":
        "A trial boot, before the health check decided.",
    TrialAfterMarkGood = "trial.after_mark_good":
        "A healthy trial's entry was committed; the state still shows the trial.",
    TrialAfterFailedSaved = "trial.after_failed_saved":
        "An unhealthy trial's verdict was saved; its entry still has tries left.",
    TrialAfterMarkBad = "trial.after_mark_bad":
        "An unhealthy trial's entry was marked bad; the reboot has not happened.",
    RollbackAfterDisable = "rollback.after_disable":
        "Back on the committed slot: the failed slot's entry was removed, the state still shows the trial.",
    RollbackAfterSaved = "rollback.after_saved":
        "The rollback was saved in the state; the boot's own verdict has not run.",
    AbandonAfterDisable = "abandon.after_disable":
        "An interrupted install's slot was taken out of the boot order; the state still says `installing`.",
    CommitAfterSaved = "commit.after_saved":
        "The commit (and the raised floor) was saved; nothing else happened yet.",
    DpsAfterBackup = "commit.dps_after_backup":
        "After a healthy boot: the backup GPT with the slots' no-auto bits for the committed slot is written and synced; the primary still has the old bits.",
    GrowAfterBackup = "grow.after_backup":
        "Growing /data on a larger disk: the new backup GPT is at the end of the disk and synced; the primary still describes the old size.",
}

impl fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultPoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultPoint::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultPoint::ALL.iter().map(|p| p.name()).collect();
                format!("unknown fault point {s:?} (known: {})", names.join(", "))
            })
    }
}

/// What happens at the selected point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultAction {
    /// Power off at once, without syncing.
    #[default]
    PowerOff,
    /// The agent panics; the machine keeps running.
    Panic,
    /// Flips one byte in the middle of the bundle file being installed, as
    /// if the medium changed between the verification and the write (only
    /// at points that know their source; a file source on a writable
    /// filesystem).
    Flip,
}

impl FaultAction {
    /// The action's name.
    pub fn name(self) -> &'static str {
        match self {
            FaultAction::PowerOff => "poweroff",
            FaultAction::Panic => "panic",
            FaultAction::Flip => "flip",
        }
    }
}

impl FromStr for FaultAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "poweroff" => Ok(FaultAction::PowerOff),
            "panic" => Ok(FaultAction::Panic),
            "flip" => Ok(FaultAction::Flip),
            _ => Err(format!(
                "unknown fault action {s:?} (expected poweroff, panic or flip)"
            )),
        }
    }
}

/// One selected fault: `POINT[:ACTION]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultSpec {
    /// Where.
    pub point: FaultPoint,
    /// What.
    pub action: FaultAction,
}

impl FromStr for FaultSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (point, action) = match s.split_once(':') {
            Some((p, a)) => (p.parse()?, a.parse()?),
            None => (s.parse()?, FaultAction::default()),
        };
        Ok(FaultSpec { point, action })
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.point, self.action.name())
    }
}

impl FaultSpec {
    /// The fault disk's content (two sectors).
    pub fn disk_image(&self) -> Vec<u8> {
        let mut out = vec![0u8; 2 * SECTOR];
        let head = format!(
            "{}point={}\naction={}\n",
            String::from_utf8_lossy(MAGIC),
            self.point,
            self.action.name()
        );
        out[..head.len()].copy_from_slice(head.as_bytes());
        out
    }

    /// Parses the first sector of a fault disk.
    pub fn parse_sector(sector: &[u8]) -> Option<FaultSpec> {
        let rest = sector.strip_prefix(MAGIC)?;
        let text = String::from_utf8_lossy(rest);
        let mut point = None;
        let mut action = FaultAction::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("point", v)) => point = v.parse().ok(),
                Some(("action", v)) => action = v.trim_end_matches('\0').parse().ok()?,
                _ => {}
            }
        }
        Some(FaultSpec {
            point: point?,
            action,
        })
    }
}

/// Marks the point reached; fires the selected fault if it is this one.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn hit(_point: FaultPoint) {}

/// Marks the point reached; fires the selected fault if it is this one.
#[cfg(feature = "fault-injection")]
pub fn hit(point: FaultPoint) {
    imp::hit(point, None)
}

/// [`hit`] at a point that reads the bundle from `source` (for `flip`).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn hit_source(_point: FaultPoint, _source: &std::path::Path) {}

/// [`hit`] at a point that reads the bundle from `source` (for `flip`).
#[cfg(feature = "fault-injection")]
pub fn hit_source(point: FaultPoint, source: &std::path::Path) {
    imp::hit(point, Some(source))
}

#[cfg(feature = "fault-injection")]
mod imp {
    use super::{FaultAction, FaultPoint, FaultSpec, SECTOR};
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;
    use std::sync::OnceLock;

    const FIRED: &[u8] = b"fired\n";

    /// The fault disk and what it selects, looked up once per process.
    fn selected() -> Option<&'static (PathBuf, FaultSpec)> {
        static SEL: OnceLock<Option<(PathBuf, FaultSpec)>> = OnceLock::new();
        SEL.get_or_init(find).as_ref()
    }

    fn find() -> Option<(PathBuf, FaultSpec)> {
        let mut names: Vec<String> = std::fs::read_dir("/sys/block")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let dev = PathBuf::from(format!("/dev/{n}"));
            let Ok(f) = File::open(&dev) else { continue };
            let mut sector = [0u8; SECTOR];
            if f.read_exact_at(&mut sector, 0).is_err() {
                continue;
            }
            if let Some(spec) = FaultSpec::parse_sector(&sector) {
                return Some((dev, spec));
            }
        }
        None
    }

    /// Claims the one-shot fault: false when it fired before.
    fn claim(dev: &PathBuf) -> bool {
        let Ok(f) = File::options().read(true).write(true).open(dev) else {
            return false;
        };
        let mut mark = [0u8; 6];
        if f.read_exact_at(&mut mark, SECTOR as u64).is_ok() && mark == FIRED {
            return false;
        }
        // Only this device is synced: the system disk is left as it is.
        f.write_all_at(FIRED, SECTOR as u64).is_ok() && f.sync_all().is_ok()
    }

    /// Flips the byte in the middle of `path`, synced.
    fn flip(path: &std::path::Path) {
        let Ok(f) = File::options().read(true).write(true).open(path) else {
            return;
        };
        let Ok(len) = f.metadata().map(|m| m.len()) else {
            return;
        };
        let mut b = [0u8; 1];
        if f.read_exact_at(&mut b, len / 2).is_ok() {
            b[0] ^= 0x20;
            let _ = f.write_all_at(&b, len / 2).and_then(|()| f.sync_all());
        }
    }

    pub fn hit(point: FaultPoint, source: Option<&std::path::Path>) {
        let Some((dev, spec)) = selected() else {
            return;
        };
        if spec.point != point || !claim(dev) {
            return;
        }
        crate::agent::events::emit(
            "fault",
            &[
                ("point", serde_json::json!(point.name())),
                ("action", serde_json::json!(spec.action.name())),
            ],
        );
        match spec.action {
            FaultAction::PowerOff => {
                let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
                // Not allowed to power off (not root): stop here all the same.
                std::process::abort();
            }
            FaultAction::Panic => panic!("fault injected at {point}"),
            FaultAction::Flip => {
                if let Some(path) = source {
                    flip(path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_are_unique() {
        let mut names: Vec<&str> = FaultPoint::ALL.iter().map(|p| p.name()).collect();
        for p in FaultPoint::ALL {
            assert_eq!(p.name().parse::<FaultPoint>().unwrap(), *p);
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FaultPoint::ALL.len());
        assert!("install.nope".parse::<FaultPoint>().is_err());
    }

    #[test]
    fn disk_image_round_trip() {
        let spec: FaultSpec = "install.mid_slot:panic".parse().unwrap();
        assert_eq!(spec.action, FaultAction::Panic);
        let img = spec.disk_image();
        assert_eq!(img.len(), 2 * SECTOR);
        assert_eq!(FaultSpec::parse_sector(&img[..SECTOR]), Some(spec));
        let default: FaultSpec = "trial.before_verdict".parse().unwrap();
        assert_eq!(default.action, FaultAction::PowerOff);
        assert_eq!(default.to_string(), "trial.before_verdict:poweroff");
        assert_eq!(FaultSpec::parse_sector(&[0u8; SECTOR]), None);
        assert!("install.mid_slot:explode".parse::<FaultSpec>().is_err());
    }
}
