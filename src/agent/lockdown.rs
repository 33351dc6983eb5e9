//! The kernel's lockdown mode, as the device's evidence of Secure Boot:
//! Debian's kernel locks itself down (`integrity`: only signed modules,
//! no /dev/mem, no kexec of unsigned kernels) when the firmware booted it
//! with Secure Boot on. Read from securityfs, mounted if it is not yet.

use std::path::Path;

/// Where securityfs is mounted.
const SECURITYFS: &str = "/sys/kernel/security";

/// The active mode in a `lockdown` file's text (`none [integrity]
/// confidentiality` -> `integrity`).
pub fn active_mode(text: &str) -> Option<String> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_string())
}

/// The running kernel's lockdown mode; `None` when the kernel has no
/// lockdown support or securityfs cannot be mounted.
pub fn mode() -> Option<String> {
    let file = Path::new(SECURITYFS).join("lockdown");
    if !file.exists() {
        let _ = rustix::mount::mount(
            "securityfs",
            SECURITYFS,
            "securityfs",
            rustix::mount::MountFlags::NOSUID
                | rustix::mount::MountFlags::NODEV
                | rustix::mount::MountFlags::NOEXEC,
            None,
        );
    }
    active_mode(&std::fs::read_to_string(file).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_bracketed_mode() {
        assert_eq!(
            active_mode("none [integrity] confidentiality\n").as_deref(),
            Some("integrity")
        );
        assert_eq!(
            active_mode("[none] integrity confidentiality\n").as_deref(),
            Some("none")
        );
        assert_eq!(active_mode("garbage"), None);
    }
}
