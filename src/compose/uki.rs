//! The slots' unified kernel images (`[kernel] uki = true`): systemd-stub
//! from the locked systemd-boot-efi package with the image's os-release,
//! the slot's command line (its partitions and dm-verity root hash), the
//! initramfs and the kernel. The slots' command lines differ, so each slot
//! has its own image; both go into the build directory and the bundle.

use super::ComposeError;
use crate::boot_env::SlotId;
use crate::packages::deb::Unpacked;
use crate::uki::{Content, NewSection, assemble};
pub use crate::uki::{artifact_name, file_name};
use std::path::{Path, PathBuf};

/// Path of systemd-stub inside Debian's systemd-boot-efi package.
pub const STUB_PATH: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// The `.osrel` section: what the image is, for boot menus and
/// `bootctl`-like readers.
pub fn os_release(name: &str, version: &str, slot: SlotId) -> String {
    let q = |s: &str| s.replace(['"', '\\', '\n'], "_");
    format!(
        "ID=slate\nNAME=\"{}\"\nVERSION_ID=\"{}\"\nPRETTY_NAME=\"{} {} (slot {slot})\"\nIMAGE_ID=\"{}\"\nIMAGE_VERSION=\"{}\"\n",
        q(name),
        q(version),
        q(name),
        q(version),
        q(name),
        q(version)
    )
}

/// What one slot's image is made of.
pub struct UkiInputs<'a> {
    /// The staged systemd-boot-efi packages.
    pub boot_pkgs: &'a [Unpacked],
    /// The kernel image.
    pub kernel: &'a Path,
    /// The initramfs.
    pub initrd: &'a Path,
    /// Image name and version, for `.osrel`.
    pub name: &'a str,
    /// Image version.
    pub version: &'a str,
}

/// Writes `uki-a.efi` and `uki-b.efi` into `dir`, `cmdline(slot)` giving
/// each slot's command line. Each is written to a temp name and renamed.
pub fn write_ukis(
    inputs: &UkiInputs<'_>,
    cmdline: &dyn Fn(SlotId) -> String,
    dir: &Path,
) -> Result<[PathBuf; 2], ComposeError> {
    let (stub_path, _) = super::rootfs::staged_file(inputs.boot_pkgs, STUB_PATH)
        .ok_or_else(|| ComposeError::Other(format!("systemd-boot-efi has no {STUB_PATH}")))?;
    let stub = std::fs::read(&stub_path).map_err(|e| ComposeError::io("reading", &stub_path, e))?;
    let one = |slot: SlotId| -> Result<PathBuf, ComposeError> {
        let osrel = os_release(inputs.name, inputs.version, slot);
        let cmdline = cmdline(slot);
        let sections = [
            NewSection {
                name: ".osrel",
                content: Content::Bytes(osrel.as_bytes()),
            },
            NewSection {
                name: ".cmdline",
                content: Content::Bytes(cmdline.as_bytes()),
            },
            NewSection {
                name: ".initrd",
                content: Content::File(inputs.initrd),
            },
            NewSection {
                name: ".linux",
                content: Content::File(inputs.kernel),
            },
        ];
        let path = dir.join(file_name(slot));
        let tmp = path.with_extension("efi.tmp");
        let mut f =
            std::fs::File::create(&tmp).map_err(|e| ComposeError::io("creating", &tmp, e))?;
        assemble(&stub, &sections, &mut f)
            .map_err(|e| ComposeError::Other(format!("assembling {}: {e}", path.display())))?;
        f.sync_all()
            .map_err(|e| ComposeError::io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| ComposeError::io("renaming", &tmp, e))?;
        Ok(path)
    };
    Ok([one(SlotId::A)?, one(SlotId::B)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_os_release() {
        assert_eq!(file_name(SlotId::B), "uki-b.efi");
        assert_eq!(artifact_name(SlotId::A), "uki-a");
        let o = os_release("x\"y", "1.0.0", SlotId::B);
        assert!(o.contains("PRETTY_NAME=\"x_y 1.0.0 (slot B)\"\n"), "{o}");
        assert!(o.starts_with("ID=slate\n"));
    }
}
