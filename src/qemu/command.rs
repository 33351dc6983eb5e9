//! The QEMU command line, built as a pure function of the machine wanted.
//!
//! Choices worth knowing:
//! - `-nodefaults -no-user-config`: no default NIC, VGA or monitor, so OVMF
//!   has nothing to probe but our disks (faster, and no PXE attempts); the
//!   console is the one serial port, on QEMU's stdout.
//! - The system disk is `virtio-blk` with `bootindex=0` and
//!   `cache=writethrough`: QEMU tells the guest the disk has *no* volatile
//!   write cache and reports a write complete only after it reached the
//!   image file with O_DSYNC. A SIGKILL of QEMU therefore acts exactly like a
//!   power cut on such a disk: what the guest had not yet written (its page
//!   cache) is lost, what the disk acknowledged is kept, a request in flight
//!   may be torn. With `cache=writeback` (QEMU's default) the guest would see
//!   a write-back cache whose unflushed contents *survive* a SIGKILL (they sit
//!   in the host's page cache), which is kinder than real hardware.
//!   `directsync` gives the guest the same view as `writethrough` but adds
//!   O_DIRECT, which fails on tmpfs and bypasses the host cache for reads.
//! - `--snapshot` is the drive's `snapshot=on`: writes go to a temporary
//!   qcow2 overlay (created in `$TMPDIR`, which the runner points at its
//!   private temporary directory) and the image file is never opened for
//!   writing.
//! - The update bundle is a second virtio-blk disk, raw and read-only.
//! - An i6300esb watchdog whose expiry resets the machine (the guest then
//!   reboots through the firmware, like real hardware); QEMU stays up on
//!   reboots, so there is no `-no-reboot`.

use super::Accel;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// How this QEMU spells "reset the machine when the watchdog fires".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogSyntax {
    /// `-action watchdog=reset` (QEMU 6.0 and later).
    Action,
    /// `-watchdog-action reset` (older QEMU).
    Legacy,
}

impl WatchdogSyntax {
    /// Picks the syntax from the output of `qemu-system-x86_64 -action help`
    /// (stdout and stderr; an older QEMU prints "invalid option").
    pub fn from_action_help(output: &str) -> Self {
        if output.contains("watchdog=") {
            Self::Action
        } else {
            Self::Legacy
        }
    }
}

/// Everything the command line depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The accelerator.
    pub accel: Accel,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// OVMF code (read-only pflash unit 0).
    pub firmware_code: PathBuf,
    /// This run's copy of the OVMF variable store (pflash unit 1).
    pub firmware_vars: PathBuf,
    /// The firmware is OVMF's Secure Boot build: SMM on, pflash secure.
    pub secure_boot: bool,
    /// The raw system disk.
    pub disk: PathBuf,
    /// Keep `disk` unchanged.
    pub snapshot: bool,
    /// Raw update media attached read-only, in order (`update0`, ...).
    pub updates: Vec<PathBuf>,
    /// How to ask for a watchdog reset.
    pub watchdog: WatchdogSyntax,
    /// A writable fault disk (selects a fault point in the agent).
    pub fault_disk: Option<PathBuf>,
    /// A blkdebug rules file placed between the system disk and its image.
    pub blkdebug: Option<PathBuf>,
    /// A network card on restricted user networking.
    pub net: Option<super::net::UserNet>,
}

impl Machine {
    /// QEMU's arguments (without the program name).
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |parts: &[&OsStr]| args.extend(parts.iter().map(|p| p.to_os_string()));
        let machine = if self.secure_boot {
            "q35,smm=on"
        } else {
            "q35"
        };
        push(&[
            "-nodefaults".as_ref(),
            "-no-user-config".as_ref(),
            "-machine".as_ref(),
            machine.as_ref(),
            "-accel".as_ref(),
            self.accel.as_str().as_ref(),
        ]);
        if self.accel == Accel::Kvm {
            push(&["-cpu".as_ref(), "host".as_ref()]);
        }
        if self.secure_boot {
            // Only SMM code may write the variable store (the keys).
            push(&[
                "-global".as_ref(),
                "driver=cfi.pflash01,property=secure,value=on".as_ref(),
            ]);
        }
        let memory = self.memory_mib.to_string();
        push(&[
            "-m".as_ref(),
            memory.as_ref(),
            "-display".as_ref(),
            "none".as_ref(),
            "-monitor".as_ref(),
            "none".as_ref(),
            "-serial".as_ref(),
            "stdio".as_ref(),
        ]);
        let code = drive_option(
            "if=pflash,format=raw,unit=0,readonly=on",
            &self.firmware_code,
        );
        let vars = drive_option("if=pflash,format=raw,unit=1", &self.firmware_vars);
        let snapshot = if self.snapshot { ",snapshot=on" } else { "" };
        let system_opts = format!("if=none,id=system,format=raw,cache=writethrough{snapshot}");
        let system = match &self.blkdebug {
            // The raw format on top of blkdebug on top of the image file.
            Some(rules) => drive_keys(
                &format!("{system_opts},file.driver=blkdebug,file.image.driver=file"),
                &[("file.config", rules), ("file.image.filename", &self.disk)],
            ),
            None => drive_option(&system_opts, &self.disk),
        };
        push(&[
            "-drive".as_ref(),
            &code,
            "-drive".as_ref(),
            &vars,
            "-drive".as_ref(),
            &system,
            "-device".as_ref(),
            "virtio-blk-pci,drive=system,bootindex=0".as_ref(),
        ]);
        for (i, update) in self.updates.iter().enumerate() {
            let drive = drive_option(
                &format!("if=none,id=update{i},format=raw,readonly=on"),
                update,
            );
            let device: OsString = format!("virtio-blk-pci,drive=update{i}").into();
            push(&["-drive".as_ref(), &drive, "-device".as_ref(), &device]);
        }
        if let Some(fault) = &self.fault_disk {
            let drive = drive_option("if=none,id=fault,format=raw", fault);
            push(&[
                "-drive".as_ref(),
                &drive,
                "-device".as_ref(),
                "virtio-blk-pci,drive=fault".as_ref(),
            ]);
        }
        if let Some(net) = &self.net {
            args.extend(net.args().into_iter().map(OsString::from));
        }
        let mut push = |parts: &[&OsStr]| args.extend(parts.iter().map(|p| p.to_os_string()));
        push(&["-device".as_ref(), "i6300esb".as_ref()]);
        match self.watchdog {
            WatchdogSyntax::Action => push(&["-action".as_ref(), "watchdog=reset".as_ref()]),
            WatchdogSyntax::Legacy => push(&["-watchdog-action".as_ref(), "reset".as_ref()]),
        }
        args
    }
}

/// `-drive` option text: `options` then `file=PATH`, with commas in the path
/// doubled (QEMU's escape; a single comma would start a new option).
fn drive_option(options: &str, file: &std::path::Path) -> OsString {
    drive_keys(options, &[("file", file)])
}

/// `options` then `,KEY=PATH` for each pair, commas in paths doubled.
fn drive_keys(options: &str, paths: &[(&str, &std::path::Path)]) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut bytes = options.as_bytes().to_vec();
    for (key, file) in paths {
        if !bytes.is_empty() {
            bytes.push(b',');
        }
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(b'=');
        for &b in file.as_os_str().as_bytes() {
            if b == b',' {
                bytes.push(b',');
            }
            bytes.push(b);
        }
    }
    OsString::from_vec(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            accel: Accel::Tcg,
            memory_mib: 512,
            firmware_code: "/fw/OVMF_CODE_4M.fd".into(),
            firmware_vars: "/tmp/run/OVMF_VARS_4M.fd".into(),
            secure_boot: false,
            disk: "/img/disk.img".into(),
            snapshot: false,
            updates: Vec::new(),
            watchdog: WatchdogSyntax::Action,
            fault_disk: None,
            blkdebug: None,
            net: None,
        }
    }

    fn strings(m: &Machine) -> Vec<String> {
        m.args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    /// The value following `flag` each time it appears.
    fn values(args: &[String], flag: &str) -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn full_command_for_tcg() {
        let args = strings(&machine());
        assert_eq!(
            args.join(" "),
            "-nodefaults -no-user-config -machine q35 -accel tcg -m 512 \
             -display none -monitor none -serial stdio \
             -drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/OVMF_CODE_4M.fd \
             -drive if=pflash,format=raw,unit=1,file=/tmp/run/OVMF_VARS_4M.fd \
             -drive if=none,id=system,format=raw,cache=writethrough,file=/img/disk.img \
             -device virtio-blk-pci,drive=system,bootindex=0 \
             -device i6300esb -action watchdog=reset"
        );
        assert!(!args.iter().any(|a| a == "-no-reboot" || a == "-snapshot"));
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let args = strings(&Machine {
            accel: Accel::Kvm,
            ..machine()
        });
        assert_eq!(values(&args, "-accel"), ["kvm"]);
        assert_eq!(values(&args, "-cpu"), ["host"]);
    }

    #[test]
    fn secure_boot_turns_on_smm_and_secure_flash() {
        let args = strings(&Machine {
            secure_boot: true,
            ..machine()
        });
        assert_eq!(values(&args, "-machine"), ["q35,smm=on"]);
        assert_eq!(
            values(&args, "-global"),
            ["driver=cfi.pflash01,property=secure,value=on"]
        );
        assert!(values(&strings(&machine()), "-global").is_empty());
    }

    #[test]
    fn snapshot_and_update_disk() {
        let m = Machine {
            snapshot: true,
            updates: vec!["/b/v2.bundle".into(), "/b/v3.bundle".into()],
            memory_mib: 1024,
            ..machine()
        };
        let args = strings(&m);
        let drives = values(&args, "-drive");
        assert_eq!(drives.len(), 5);
        assert!(drives[2].contains("cache=writethrough,snapshot=on,file=/img/disk.img"));
        assert_eq!(
            drives[3],
            "if=none,id=update0,format=raw,readonly=on,file=/b/v2.bundle"
        );
        assert_eq!(
            drives[4],
            "if=none,id=update1,format=raw,readonly=on,file=/b/v3.bundle"
        );
        let devices = values(&args, "-device");
        assert_eq!(
            devices,
            [
                "virtio-blk-pci,drive=system,bootindex=0",
                "virtio-blk-pci,drive=update0",
                "virtio-blk-pci,drive=update1",
                "i6300esb"
            ]
        );
        assert_eq!(values(&args, "-m"), ["1024"]);
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let m = Machine {
            disk: "/img/a,b.img".into(),
            ..machine()
        };
        let drives = values(&strings(&m), "-drive");
        assert!(drives[2].ends_with(",file=/img/a,,b.img"), "{}", drives[2]);
    }

    #[test]
    fn legacy_watchdog_syntax() {
        let m = Machine {
            watchdog: WatchdogSyntax::Legacy,
            fault_disk: None,
            blkdebug: None,
            ..machine()
        };
        let args = strings(&m);
        assert_eq!(values(&args, "-watchdog-action"), ["reset"]);
        assert!(!args.iter().any(|a| a == "-action"));
    }

    #[test]
    fn picks_watchdog_syntax_from_help() {
        let help = "action options:\n  panic=<str>\n  reboot=<str>\n  watchdog=<str>\n";
        assert_eq!(
            WatchdogSyntax::from_action_help(help),
            WatchdogSyntax::Action
        );
        assert_eq!(
            WatchdogSyntax::from_action_help("qemu-system-x86_64: -action: invalid option"),
            WatchdogSyntax::Legacy
        );
        assert_eq!(WatchdogSyntax::from_action_help(""), WatchdogSyntax::Legacy);
    }
}
