//! Choosing the accelerator: KVM when the host really has it, TCG otherwise.
//!
//! `/dev/kvm` opening read-write is necessary but not enough: some hosts
//! (e.g. VMs with a paravirtual `kvm_pvm` module) expose a `/dev/kvm` on a CPU
//! without VT-x/AMD-V, and QEMU then dies in the firmware with "KVM internal
//! error ... emulation failure". So KVM also needs the `vmx` or `svm` CPU
//! flag in /proc/cpuinfo. `SLATE_QEMU_ACCEL=kvm|tcg` overrides the guess.

use super::QemuError;
use std::fmt;

/// Environment variable forcing the accelerator.
pub const ACCEL_ENV: &str = "SLATE_QEMU_ACCEL";

/// How QEMU runs the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's portable binary translator (slow, works everywhere).
    Tcg,
}

impl Accel {
    /// `$SLATE_QEMU_ACCEL` if set, else KVM when usable, else TCG.
    pub fn detect() -> Result<Self, QemuError> {
        match std::env::var(ACCEL_ENV) {
            Ok(v) if !v.is_empty() => v.parse(),
            _ => Ok(if kvm_usable() { Self::Kvm } else { Self::Tcg }),
        }
    }

    /// The name QEMU's `-accel` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Accel {
    type Err = QemuError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kvm" => Ok(Self::Kvm),
            "tcg" => Ok(Self::Tcg),
            other => Err(QemuError::Unsupported(format!(
                "{ACCEL_ENV}={other}: expected kvm or tcg"
            ))),
        }
    }
}

fn kvm_usable() -> bool {
    let opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    opens
        && std::fs::read_to_string("/proc/cpuinfo")
            .map(|info| cpu_has_virtualization(&info))
            .unwrap_or(false)
}

/// Whether a /proc/cpuinfo text lists the `vmx` (Intel) or `svm` (AMD) flag.
pub fn cpu_has_virtualization(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(key, _)| key.trim() == "flags")
        .any(|(_, flags)| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_flags() {
        let intel = "processor\t: 0\nflags\t\t: fpu vme vmx ssse3\nbugs\t\t: spectre\n";
        let amd = "flags\t\t: fpu svm\n";
        let nested_without = "flags\t\t: fpu sse2 hypervisor\nvmx flags\t: ept\n";
        assert!(cpu_has_virtualization(intel));
        assert!(cpu_has_virtualization(amd));
        assert!(!cpu_has_virtualization(nested_without));
        assert!(!cpu_has_virtualization(""));
    }

    #[test]
    fn parses_names() {
        assert_eq!("kvm".parse::<Accel>().unwrap(), Accel::Kvm);
        assert_eq!("tcg".parse::<Accel>().unwrap(), Accel::Tcg);
        let err = "hvf".parse::<Accel>().unwrap_err().to_string();
        assert!(err.contains(ACCEL_ENV) && err.contains("hvf"), "{err}");
    }
}
