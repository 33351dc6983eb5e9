//! The firmware's boot options, kept so that a refused boot image falls
//! back ([`crate::boot_env::uefi`] says why): after each committed boot the
//! agent makes `BootOrder` start with `tries + 1` options that all start
//! this disk's systemd-boot. Read and written through efivarfs (mounted if
//! it is not yet); a firmware without variables, or one that refuses the
//! writes, is reported and changes nothing else.

use super::system::BlockPartition;
use crate::boot_env::systemd_boot::LOADER_PATH;
use crate::boot_env::uefi::{
    self, BootOptionsPlan, GLOBAL_VARIABLE_GUID, LoadOption, PartitionFile, VARIABLE_ATTRIBUTES,
};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where efivarfs is mounted.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// The firmware's variables, one file per variable in efivarfs: four bytes
/// of attributes, then the data.
#[derive(Debug)]
pub struct EfiVars {
    dir: PathBuf,
}

impl EfiVars {
    /// The running system's variables; `Ok(None)` when it did not boot
    /// through UEFI.
    pub fn open() -> Result<Option<Self>> {
        if !Path::new("/sys/firmware/efi").is_dir() {
            return Ok(None);
        }
        let dir = PathBuf::from(EFIVARS);
        let empty = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {EFIVARS}"))?
            .next()
            .is_none();
        if empty {
            rustix::mount::mount(
                "efivarfs",
                EFIVARS,
                "efivarfs",
                rustix::mount::MountFlags::NOSUID
                    | rustix::mount::MountFlags::NODEV
                    | rustix::mount::MountFlags::NOEXEC,
                None,
            )
            .with_context(|| format!("mounting efivarfs at {EFIVARS}"))?;
        }
        Ok(Some(Self { dir }))
    }

    /// Variables in `dir` (a test directory, or efivarfs).
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-{GLOBAL_VARIABLE_GUID}"))
    }

    /// The data of global variable `name`, `None` if it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(b) if b.len() >= 4 => Ok(Some(b[4..].to_vec())),
            Ok(_) => bail!("{}: shorter than its attributes", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The `Boot####` options, by number.
    pub fn boot_options(&self) -> Result<Vec<(u16, LoadOption)>> {
        let suffix = format!("-{GLOBAL_VARIABLE_GUID}");
        let mut nums: Vec<u16> = std::fs::read_dir(&self.dir)
            .with_context(|| format!("listing {}", self.dir.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                uefi::parse_boot_variable(name.strip_suffix(&suffix)?)
            })
            .collect();
        nums.sort_unstable();
        let mut out = Vec::new();
        for n in nums {
            let name = uefi::boot_variable(n);
            let Some(data) = self.read(&name)? else {
                continue;
            };
            // Someone else's malformed option is left alone, not ours to fix.
            if let Ok(o) = LoadOption::decode(&data) {
                out.push((n, o));
            }
        }
        Ok(out)
    }

    /// Writes global variable `name` (non-volatile, boot and runtime
    /// access) in one write, as efivarfs requires.
    pub fn write(&self, name: &str, data: &[u8]) -> Result<()> {
        let path = self.path(name);
        let ctx = || format!("writing {}", path.display());
        make_mutable(&path).with_context(ctx)?;
        let mut buf = VARIABLE_ATTRIBUTES.to_le_bytes().to_vec();
        buf.extend_from_slice(data);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            // efivarfs takes no O_TRUNC; a plain file is cut below.
            .truncate(false)
            .open(&path)
            .with_context(ctx)?;
        let n = f.write(&buf).with_context(ctx)?;
        if n != buf.len() {
            bail!(
                "{}: short write ({n} of {} bytes)",
                path.display(),
                buf.len()
            );
        }
        // efivarfs replaces the variable with what one write carries; a
        // plain file (tests) keeps an old tail unless cut.
        if f.metadata().with_context(ctx)?.len() > n as u64 {
            f.set_len(n as u64).with_context(ctx)?;
        }
        Ok(())
    }

    /// Deletes global variable `name`.
    pub fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        make_mutable(&path).with_context(|| format!("deleting {}", path.display()))?;
        std::fs::remove_file(&path).with_context(|| format!("deleting {}", path.display()))
    }
}

/// efivarfs marks most variables immutable; clear that before a change.
fn make_mutable(path: &Path) -> std::io::Result<()> {
    use rustix::fs::IFlags;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let flags = match rustix::fs::ioctl_getflags(&f) {
        Ok(flags) => flags,
        // A plain directory in tests: no flags to clear.
        Err(rustix::io::Errno::NOTTY | rustix::io::Errno::OPNOTSUPP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if flags.contains(IFlags::IMMUTABLE) {
        rustix::fs::ioctl_setflags(&f, flags - IFlags::IMMUTABLE)?;
    }
    Ok(())
}

/// The loader of the ESP `esp` as a firmware boot option's target.
pub fn loader_on(esp: &BlockPartition) -> Result<PartitionFile> {
    let guid = uuid::Uuid::parse_str(&esp.guid)
        .with_context(|| format!("{}: GPT GUID {:?}", esp.dev.display(), esp.guid))?;
    Ok(PartitionFile {
        number: esp.number,
        start_lba: esp.first_lba,
        size_lba: esp.last_lba + 1 - esp.first_lba,
        guid,
        file: format!("\\{}", LOADER_PATH.replace('/', "\\")),
    })
}

/// Plans and applies `tries + 1` options for `loader` at the head of
/// `BootOrder`: options first, then the order, then stale options. Returns
/// what changed (an empty plan when everything was in place).
pub fn ensure_boot_options(
    vars: &EfiVars,
    loader: &PartitionFile,
    tries: u32,
) -> Result<BootOptionsPlan> {
    let existing = vars.boot_options()?;
    let order = vars
        .read("BootOrder")?
        .map(|d| uefi::decode_boot_order(&d))
        .unwrap_or_default();
    let plan = uefi::plan_boot_options(&existing, &order, loader, tries + 1);
    for (n, o) in &plan.write {
        vars.write(&uefi::boot_variable(*n), &o.encode())?;
    }
    if let Some(order) = &plan.order {
        vars.write("BootOrder", &uefi::encode_boot_order(order))?;
    }
    for n in &plan.delete {
        vars.delete(&uefi::boot_variable(*n))?;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp() -> BlockPartition {
        BlockPartition {
            dev: "/dev/vda1".into(),
            disk: "/dev/vda".into(),
            name: "esp".into(),
            guid: "0b3e1c2a-5d4f-4e6a-8b7c-9d0e1f2a3b4c".into(),
            size: 64 << 20,
            number: 1,
            first_lba: 2048,
            last_lba: 2048 + (64 << 11) - 1,
        }
    }

    #[test]
    fn options_are_written_once_in_efivarfs_layout() {
        let d = tempfile::tempdir().unwrap();
        let vars = EfiVars::at(d.path());
        let misc = LoadOption {
            attributes: 1,
            description: "UEFI Misc Device".into(),
            device_path: vec![0x7f, 0xff, 4, 0],
            optional_data: vec![],
        };
        vars.write("Boot0000", &misc.encode()).unwrap();
        vars.write("BootOrder", &[0, 0]).unwrap();
        let loader = loader_on(&esp()).unwrap();
        assert_eq!(loader.file, r"\EFI\BOOT\BOOTX64.EFI");
        assert_eq!(loader.size_lba, 64 << 11);
        let plan = ensure_boot_options(&vars, &loader, 3).unwrap();
        assert_eq!(plan.write.len(), 4);
        let raw =
            std::fs::read(d.path().join(format!("BootOrder-{GLOBAL_VARIABLE_GUID}"))).unwrap();
        assert_eq!(raw, [7, 0, 0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 0, 0]);
        let options = vars.boot_options().unwrap();
        assert_eq!(options.len(), 5);
        assert_eq!(options[4].1.description, "slate 4");
        assert!(ensure_boot_options(&vars, &loader, 3).unwrap().is_empty());
        // Fewer tries: the extra option leaves the order, then the store.
        let plan = ensure_boot_options(&vars, &loader, 1).unwrap();
        assert_eq!(plan.delete, [3, 4]);
        assert_eq!(vars.boot_options().unwrap().len(), 3);
        assert_eq!(
            uefi::decode_boot_order(&vars.read("BootOrder").unwrap().unwrap()),
            [1, 2, 0]
        );
    }
}
