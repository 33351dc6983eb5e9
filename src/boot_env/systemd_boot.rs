//! systemd-boot backend: Boot Loader Specification type #1 entries on the ESP,
//! with systemd-boot's own boot counting.
//!
//! Each slot has one entry, `loader/entries/slate-<generation>-<slot>.conf`.
//! systemd-boot sorts entries by id in descending version order and starts
//! the first one, except that entries with no tries left go last. So:
//!
//! - committed slot: `slate-00000001-a.conf` (no counter: never counted);
//! - trial: `slate-00000002-b+3-0.conf`, a higher generation so it sorts
//!   first; systemd-boot renames it to `+2-1`, `+1-2`, `+0-3` on each attempt
//!   *before* starting the kernel, so panics and hangs count too, and at
//!   `+0-N` it sorts last and the committed slot boots again;
//! - commit: rename the trial entry to drop the counter;
//! - mark bad: rename to `+0-N`.
//!
//! Every change is a write-to-temp + fsync + rename + directory fsync, and
//! a slot's kernel and initrd are written before its entry exists, so an
//! entry never points at half-written files.
//!
//! FAT has no journal: a power cut while clusters are allocated or freed can
//! leave the allocation table inconsistent (Linux then remounts the ESP
//! read-only). So each slot's kernel and initrd are files of a fixed
//! capacity ([`boot_file_capacity`]), allocated once when the disk is built
//! and overwritten in place, zero-padded: an update changes file data only,
//! never the allocation table. (The kernel's EFI stub ignores bytes after
//! the image, and the initramfs unpacker skips zero padding.) Only a boot
//! file outgrowing its capacity is reallocated.

use super::{BootEnvError, BootFile, BootFlow, BootSnapshot, EntrySpec, SlotBootState, SlotId};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Directory of the entries, relative to the ESP root.
pub const ENTRIES_DIR: &str = "loader/entries";
/// Where systemd-boot is installed on the ESP (the removable-media path, so
/// no NVRAM boot variable is needed).
pub const LOADER_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// Path of systemd-boot inside Debian's systemd-boot-efi package.
pub const PACKAGE_BINARY: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// `loader/loader.conf`: boot the first entry immediately, no editor, no
/// automatic entries that could sort before ours.
pub fn loader_conf() -> &'static str {
    "timeout 0\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n"
}

/// ESP path of a slot's kernel, e.g. `slate/a/vmlinuz`.
pub fn kernel_path(slot: SlotId) -> String {
    format!("slate/{}/vmlinuz", slot.lower())
}

/// ESP path of a slot's initrd.
pub fn initrd_path(slot: SlotId) -> String {
    format!("slate/{}/initrd", slot.lower())
}

/// ESP path of a slot's unified kernel image. Not below `EFI/Linux/`:
/// systemd-boot would list an image there as a type #2 entry of its own,
/// ordered by the version in its signed `.osrel`, which cannot carry the
/// device's generation or boot counter.
pub fn uki_path(slot: SlotId) -> String {
    format!("slate/{}/uki.efi", slot.lower())
}

/// ESP path of a slot's boot file.
pub fn boot_file_path(slot: SlotId, file: BootFile) -> String {
    match file {
        BootFile::Kernel => kernel_path(slot),
        BootFile::Initrd => initrd_path(slot),
        BootFile::Uki => uki_path(slot),
    }
}

/// The size a boot file is allocated with: room for later versions (a
/// sixteenth, at least 1 MiB) in whole MiB. The loader reads the padding
/// too, so it is kept small.
pub fn boot_file_capacity(size: u64) -> u64 {
    (size + (size / 16).max(1 << 20)).next_multiple_of(1 << 20)
}

/// A parsed entry file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryName {
    /// Ordering key.
    pub generation: u64,
    /// The slot it boots.
    pub slot: SlotId,
    /// Boot counter `(tries_left, tries_done)`, if counting.
    pub counter: Option<(u32, u32)>,
}

impl EntryName {
    /// The file name, e.g. `slate-00000002-b+3-0.conf`.
    pub fn file_name(&self) -> String {
        let counter = match self.counter {
            Some((left, done)) => format!("+{left}-{done}"),
            None => String::new(),
        };
        format!(
            "slate-{:08}-{}{counter}.conf",
            self.generation,
            self.slot.lower()
        )
    }

    /// Parses a file name written by [`EntryName::file_name`] (or renamed by
    /// systemd-boot's counting).
    pub fn parse(name: &str) -> Option<EntryName> {
        let stem = name.strip_prefix("slate-")?.strip_suffix(".conf")?;
        let (gen_text, rest) = stem.split_once('-')?;
        if gen_text.len() != 8 || !gen_text.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let generation = gen_text.parse().ok()?;
        let (slot_text, counter) = match rest.split_once('+') {
            Some((s, c)) => {
                let (left, done) = match c.split_once('-') {
                    Some((l, d)) => (l.parse().ok()?, d.parse().ok()?),
                    None => (c.parse().ok()?, 0),
                };
                (s, Some((left, done)))
            }
            None => (rest, None),
        };
        let slot = match slot_text {
            "a" => SlotId::A,
            "b" => SlotId::B,
            _ => return None,
        };
        Some(EntryName {
            generation,
            slot,
            counter,
        })
    }

    /// The boot state this name encodes.
    pub fn state(&self) -> SlotBootState {
        match self.counter {
            None => SlotBootState::Good {
                generation: self.generation,
            },
            Some((0, done)) => SlotBootState::Bad {
                generation: self.generation,
                tries_done: done,
            },
            Some((left, done)) => SlotBootState::Trying {
                generation: self.generation,
                tries_left: left,
                tries_done: done,
            },
        }
    }
}

/// The text of an entry file. A unified kernel image gets an `efi` line
/// and no `options`: systemd-stub then uses the command line embedded (and
/// signed) in the image.
pub fn entry_text(spec: &EntrySpec, slot: SlotId) -> String {
    if spec.uki {
        return format!(
            "title {}\nversion {}\nefi /{}\n",
            spec.title,
            spec.version,
            uki_path(slot)
        );
    }
    format!(
        "title {}\nversion {}\nlinux /{}\ninitrd /{}\noptions {}\n",
        spec.title,
        spec.version,
        kernel_path(slot),
        initrd_path(slot),
        spec.options
    )
}

/// Whether entry text is complete enough for systemd-boot to boot it (it
/// ignores entries without a `linux` or `efi` line); a torn write fails
/// this. An `efi` entry is the last line written, so its presence means the
/// entry is whole.
pub fn entry_is_usable(text: &str) -> bool {
    let complete = |l: &str| text.lines().any(|x| x.starts_with(l));
    (complete("linux /") && complete("options ")) || (complete("efi /") && text.ends_with('\n'))
}

/// Writes `size` bytes from `src` over the start of `path` and zeros up to
/// `capacity`, without changing the file's length (no FAT allocation).
fn overwrite_in_place(
    path: &Path,
    src: &mut dyn Read,
    size: u64,
    capacity: u64,
) -> Result<(), BootEnvError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("opening", path))?;
    let copied = std::io::copy(&mut src.take(size), &mut f).map_err(io_err("writing", path))?;
    if copied != size {
        return Err(io_err("writing", path)(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("source ended after {copied} of {size} bytes"),
        )));
    }
    std::io::copy(&mut std::io::repeat(0).take(capacity - size), &mut f)
        .map_err(io_err("writing", path))?;
    f.flush().map_err(io_err("writing", path))?;
    f.sync_all().map_err(io_err("syncing", path))
}

/// fsyncs a file after it was renamed on FAT. Linux's vfat creates the new
/// directory entry with no first cluster and size 0 and fills both in only
/// when the file's inode is written back; a directory fsync does not write
/// it. Without this a power cut after the rename leaves an empty entry file
/// and a lost cluster (found by the fault scenarios: `fsck.fat` reclaimed
/// the cluster and the trial entry was gone).
fn sync_renamed(path: &Path) -> Result<(), BootEnvError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", path))
}

/// The systemd-boot backend over a mounted ESP.
#[derive(Debug, Clone)]
pub struct SystemdBoot {
    esp: PathBuf,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BootEnvError {
    let path = path.display().to_string();
    move |source| BootEnvError::Io { what, path, source }
}

impl SystemdBoot {
    /// A backend for the ESP mounted at `esp`.
    pub fn new(esp: impl Into<PathBuf>) -> Self {
        Self { esp: esp.into() }
    }

    /// Usable entries of each slot: `(file name, parsed)`, highest generation first.
    pub fn entries(&self) -> Result<Vec<(String, EntryName)>, BootEnvError> {
        let dir = self.esp.join(ENTRIES_DIR);
        let mut out = Vec::new();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("listing", &dir)(e)),
        };
        for e in rd {
            let e = e.map_err(io_err("listing", &dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(parsed) = EntryName::parse(&name) else {
                continue;
            };
            // A torn or garbled entry is invisible to systemd-boot; mirror that.
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            if entry_is_usable(&text) {
                out.push((name, parsed));
            }
        }
        out.sort_by(|a, b| b.1.generation.cmp(&a.1.generation).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    fn entry_of(&self, slot: SlotId) -> Result<Option<(String, EntryName)>, BootEnvError> {
        Ok(self.entries()?.into_iter().find(|(_, e)| e.slot == slot))
    }

    fn entries_dir(&self) -> PathBuf {
        self.esp.join(ENTRIES_DIR)
    }

    fn rename_entry(&self, from: &str, to: &EntryName) -> Result<(), BootEnvError> {
        let dir = self.entries_dir();
        let (src, dst) = (dir.join(from), dir.join(to.file_name()));
        if src != dst {
            fs::rename(&src, &dst).map_err(io_err("renaming", &src))?;
            sync_renamed(&dst)?;
            crate::io::sync_dir(&dir).map_err(io_err("syncing", &dir))?;
        }
        Ok(())
    }

    fn write_file(&self, rel: &str, src: &mut dyn Read) -> Result<(), BootEnvError> {
        let dest = self.esp.join(rel);
        let parent = dest.parent().unwrap_or(&self.esp).to_path_buf();
        fs::create_dir_all(&parent).map_err(io_err("creating", &parent))?;
        // A name systemd-boot never reads (entries must end in .conf).
        let tmp = dest.with_extension("tmp");
        {
            let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
            std::io::copy(src, &mut f).map_err(io_err("writing", &tmp))?;
            f.flush().map_err(io_err("writing", &tmp))?;
            f.sync_all().map_err(io_err("syncing", &tmp))?;
        }
        fs::rename(&tmp, &dest).map_err(io_err("renaming", &tmp))?;
        sync_renamed(&dest)?;
        crate::io::sync_dir(&parent).map_err(io_err("syncing", &parent))
    }

    /// Simulates what systemd-boot does at power-on (for tests of the state
    /// machine): picks the next entry and counts the attempt. Returns the
    /// slot that boots.
    pub fn simulate_firmware_boot(&self) -> Result<Option<SlotId>, BootEnvError> {
        let snap = self.snapshot()?;
        let Some(slot) = snap.next_boot() else {
            return Ok(None);
        };
        if let Some((file, mut e)) = self.entry_of(slot)? {
            if let Some((left, done)) = e.counter {
                if left > 0 {
                    e.counter = Some((left - 1, done + 1));
                    self.rename_entry(&file, &e)?;
                }
            }
        }
        Ok(Some(slot))
    }
}

impl BootFlow for SystemdBoot {
    fn name(&self) -> &'static str {
        "systemd-boot"
    }

    fn snapshot(&self) -> Result<BootSnapshot, BootEnvError> {
        let entries = self.entries()?;
        let state = |slot: SlotId| {
            entries
                .iter()
                .find(|(_, e)| e.slot == slot)
                .map(|(_, e)| e.state())
                .unwrap_or(SlotBootState::Unbootable)
        };
        Ok(BootSnapshot {
            a: state(SlotId::A),
            b: state(SlotId::B),
        })
    }

    fn disable(&mut self, slot: SlotId) -> Result<(), BootEnvError> {
        let dir = self.entries_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("listing", &dir)(e)),
        };
        let mut removed = false;
        for e in rd {
            let e = e.map_err(io_err("listing", &dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Also removes torn entries of this slot.
            if EntryName::parse(&name).is_some_and(|p| p.slot == slot) {
                fs::remove_file(e.path()).map_err(io_err("removing", &e.path()))?;
                removed = true;
            }
        }
        if removed {
            crate::io::sync_dir(&dir).map_err(io_err("syncing", &dir))?;
        }
        Ok(())
    }

    fn install_boot_file(
        &mut self,
        slot: SlotId,
        file: BootFile,
        src: &mut dyn Read,
        size: u64,
    ) -> Result<(), BootEnvError> {
        let state = self.snapshot()?.get(slot);
        if state != SlotBootState::Unbootable {
            return Err(BootEnvError::Transition {
                slot,
                action: "install a boot file",
                state: state.word(),
            });
        }
        // A slot boots either a kernel and an initrd or one unified image:
        // the other kind's files of this slot go (it is out of the boot order).
        let stale: &[BootFile] = match file {
            BootFile::Uki => &[BootFile::Kernel, BootFile::Initrd],
            BootFile::Kernel | BootFile::Initrd => &[BootFile::Uki],
        };
        for f in stale {
            let p = self.esp.join(boot_file_path(slot, *f));
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &p)(e)),
            }
        }
        let rel = boot_file_path(slot, file);
        let dest = self.esp.join(&rel);
        let capacity = fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        if file == BootFile::Uki {
            // Exact size (a signature covers the whole file): in place when
            // the length is unchanged, else a new file.
            return if size == capacity {
                overwrite_in_place(&dest, src, size, capacity)
            } else {
                self.write_file(&rel, &mut src.take(size))
            };
        }
        if size <= capacity {
            overwrite_in_place(&dest, src, size, capacity)
        } else {
            // Outgrown (or missing): allocate a new file with headroom.
            let mut padded = src
                .take(size)
                .chain(std::io::repeat(0).take(boot_file_capacity(size) - size));
            self.write_file(&rel, &mut padded)
        }
    }

    fn read_boot_file(&self, slot: SlotId, file: BootFile) -> Result<Box<dyn Read>, BootEnvError> {
        let p = self.esp.join(boot_file_path(slot, file));
        Ok(Box::new(File::open(&p).map_err(io_err("opening", &p))?))
    }

    fn try_next(
        &mut self,
        slot: SlotId,
        tries: u32,
        entry: &EntrySpec,
    ) -> Result<(), BootEnvError> {
        let snap = self.snapshot()?;
        if snap.get(slot) != SlotBootState::Unbootable {
            return Err(BootEnvError::Transition {
                slot,
                action: "start a trial",
                state: snap.get(slot).word(),
            });
        }
        let name = EntryName {
            generation: snap.max_generation() + 1,
            slot,
            counter: Some((tries.max(1), 0)),
        };
        let text = entry_text(entry, slot);
        self.write_file(
            &format!("{ENTRIES_DIR}/{}", name.file_name()),
            &mut text.as_bytes(),
        )
    }

    fn mark_good(&mut self, slot: SlotId) -> Result<(), BootEnvError> {
        let Some((file, mut e)) = self.entry_of(slot)? else {
            return Err(BootEnvError::Transition {
                slot,
                action: "commit",
                state: "unbootable",
            });
        };
        // A counter at +0-N is normal here: systemd-boot decrements before
        // it starts the kernel, so the last allowed attempt runs with no
        // tries left. The agent commits only the slot that booted healthy.
        e.counter = None;
        self.rename_entry(&file, &e)
    }

    fn mark_bad(&mut self, slot: SlotId) -> Result<(), BootEnvError> {
        let Some((file, mut e)) = self.entry_of(slot)? else {
            return Ok(());
        };
        let done = e.counter.map(|c| c.1).unwrap_or(0);
        e.counter = Some((0, done.max(1)));
        self.rename_entry(&file, &e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> EntrySpec {
        EntrySpec {
            title: "slate test".into(),
            version: "2.0.0".into(),
            options: "console=ttyS0".into(),
            uki: false,
        }
    }

    fn committed_a(dir: &Path) -> SystemdBoot {
        let sd = SystemdBoot::new(dir);
        let a = EntryName {
            generation: 1,
            slot: SlotId::A,
            counter: None,
        };
        fs::create_dir_all(dir.join(ENTRIES_DIR)).unwrap();
        fs::write(
            dir.join(ENTRIES_DIR).join(a.file_name()),
            entry_text(&spec(), SlotId::A),
        )
        .unwrap();
        sd
    }

    #[test]
    fn names_round_trip() {
        for n in [
            "slate-00000002-b+3-0.conf",
            "slate-00000001-a.conf",
            "slate-00000009-a+0-3.conf",
        ] {
            assert_eq!(EntryName::parse(n).unwrap().file_name(), n);
        }
        for bad in [
            "slate-1-a.conf",
            "slate-00000001-c.conf",
            "other.conf",
            "slate-00000001-a.conf.tmp",
        ] {
            assert!(EntryName::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn trial_then_commit() {
        let d = tempfile::tempdir().unwrap();
        let mut sd = committed_a(d.path());
        sd.disable(SlotId::B).unwrap();
        sd.install_boot_file(SlotId::B, BootFile::Kernel, &mut &b"kernel"[..], 6)
            .unwrap();
        sd.install_boot_file(SlotId::B, BootFile::Initrd, &mut &b"initrd"[..], 6)
            .unwrap();
        // A smaller kernel later overwrites the same allocation in place.
        let len = fs::metadata(d.path().join("slate/b/vmlinuz"))
            .unwrap()
            .len();
        assert_eq!(len, 2 << 20, "allocated with headroom");
        sd.install_boot_file(SlotId::B, BootFile::Kernel, &mut &b"kern"[..], 4)
            .unwrap();
        let data = fs::read(d.path().join("slate/b/vmlinuz")).unwrap();
        assert_eq!(data.len(), 2 << 20);
        assert_eq!(&data[..4], b"kern");
        assert!(data[4..].iter().all(|b| *b == 0), "padding is zeros");
        sd.try_next(SlotId::B, 2, &spec()).unwrap();
        assert_eq!(sd.simulate_firmware_boot().unwrap(), Some(SlotId::B));
        let s = sd.snapshot().unwrap();
        assert_eq!(
            s.b,
            SlotBootState::Trying {
                generation: 2,
                tries_left: 1,
                tries_done: 1
            }
        );
        sd.mark_good(SlotId::B).unwrap();
        let s = sd.snapshot().unwrap();
        assert_eq!(s.committed(), Some(SlotId::B));
        assert_eq!(sd.simulate_firmware_boot().unwrap(), Some(SlotId::B));
    }

    #[test]
    fn unified_images_are_exact_size_and_replace_kernel_and_initrd() {
        let d = tempfile::tempdir().unwrap();
        let mut sd = committed_a(d.path());
        sd.install_boot_file(SlotId::B, BootFile::Kernel, &mut &b"kernel"[..], 6)
            .unwrap();
        sd.install_boot_file(SlotId::B, BootFile::Uki, &mut &b"MZ-uki"[..], 6)
            .unwrap();
        let uki = d.path().join("slate/b/uki.efi");
        assert_eq!(fs::read(&uki).unwrap(), b"MZ-uki", "not padded");
        assert!(!d.path().join("slate/b/vmlinuz").exists());
        // Same length: overwritten; another length: a new file.
        sd.install_boot_file(SlotId::B, BootFile::Uki, &mut &b"MZ-two"[..], 6)
            .unwrap();
        assert_eq!(fs::read(&uki).unwrap(), b"MZ-two");
        sd.install_boot_file(SlotId::B, BootFile::Uki, &mut &b"MZ-longer"[..], 9)
            .unwrap();
        assert_eq!(fs::read(&uki).unwrap(), b"MZ-longer");
        assert!(!d.path().join("slate/b/uki.tmp").exists());
        let spec = EntrySpec {
            uki: true,
            ..spec()
        };
        let text = entry_text(&spec, SlotId::B);
        assert_eq!(
            text,
            "title slate test\nversion 2.0.0\nefi /slate/b/uki.efi\n"
        );
        assert!(entry_is_usable(&text));
        assert!(!entry_is_usable(text.trim_end()), "torn before its newline");
        sd.try_next(SlotId::B, 3, &spec).unwrap();
        assert_eq!(sd.simulate_firmware_boot().unwrap(), Some(SlotId::B));
        sd.mark_good(SlotId::B).unwrap();
        assert_eq!(sd.snapshot().unwrap().committed(), Some(SlotId::B));
        // Back to a kernel and an initrd: the image goes.
        sd.disable(SlotId::A).unwrap();
        sd.install_boot_file(SlotId::A, BootFile::Uki, &mut &b"MZ"[..], 2)
            .unwrap();
        sd.install_boot_file(SlotId::A, BootFile::Initrd, &mut &b"i"[..], 1)
            .unwrap();
        assert!(!d.path().join("slate/a/uki.efi").exists());
    }

    #[test]
    fn tries_run_out_and_fall_back() {
        let d = tempfile::tempdir().unwrap();
        let mut sd = committed_a(d.path());
        sd.try_next(SlotId::B, 2, &spec()).unwrap();
        // Two attempts that never reach the agent (panic, hang).
        assert_eq!(sd.simulate_firmware_boot().unwrap(), Some(SlotId::B));
        assert_eq!(sd.simulate_firmware_boot().unwrap(), Some(SlotId::B));
        assert_eq!(sd.simulate_firmware_boot().unwrap(), Some(SlotId::A));
        assert!(matches!(
            sd.snapshot().unwrap().b,
            SlotBootState::Bad { tries_done: 2, .. }
        ));
        // Its last attempt runs at +0-2: if that boot is healthy it commits.
        sd.mark_good(SlotId::B).unwrap();
        assert_eq!(sd.snapshot().unwrap().committed(), Some(SlotId::B));
    }

    #[test]
    fn mark_bad_falls_back_now() {
        let d = tempfile::tempdir().unwrap();
        let mut sd = committed_a(d.path());
        sd.try_next(SlotId::B, 3, &spec()).unwrap();
        assert_eq!(sd.simulate_firmware_boot().unwrap(), Some(SlotId::B));
        sd.mark_bad(SlotId::B).unwrap();
        assert_eq!(sd.simulate_firmware_boot().unwrap(), Some(SlotId::A));
    }

    #[test]
    fn torn_entry_is_ignored_and_kernel_needs_disabled_slot() {
        let d = tempfile::tempdir().unwrap();
        let mut sd = committed_a(d.path());
        fs::write(
            d.path().join(ENTRIES_DIR).join("slate-00000005-b+3-0.conf"),
            "title x\nlin",
        )
        .unwrap();
        assert_eq!(sd.snapshot().unwrap().b, SlotBootState::Unbootable);
        assert_eq!(sd.simulate_firmware_boot().unwrap(), Some(SlotId::A));
        let e = sd
            .install_boot_file(SlotId::A, BootFile::Kernel, &mut &b""[..], 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("slot A: cannot install a boot file while it is good"),
            "{e}"
        );
        sd.disable(SlotId::B).unwrap();
        assert_eq!(fs::read_dir(d.path().join(ENTRIES_DIR)).unwrap().count(), 1);
    }
}
