//! Counting boots from the console alone.
//!
//! QEMU stays up when the guest reboots (a `reboot`, a panic with `panic=N`,
//! a watchdog reset), and the firmware starts again. OVMF announces every
//! start the same way on the serial port: its terminal driver resets the
//! terminal (`ESC [ = 3 h`, "set 80x25 mode", together with clear-screen
//! sequences), then the boot manager prints `BdsDxe: loading Boot0001 ...`.
//! Either is a *firmware line*.
//!
//! A new boot begins at the first firmware line after the operating system
//! has printed something (any non-blank line that is not a firmware line,
//! such as a kernel message or an event). Firmware lines in a row belong to
//! the same start, and the firmware lines of the very first start do not
//! count again, so the first boot is boot 1 whatever the firmware prints.
//! Reading the console rather than a side channel (QMP) keeps a boot's
//! events and its reset in the one order the guest produced them.
//!
//! Limits: a firmware that prints none of these markers (not OVMF) leaves
//! every event in boot 1; a reset before the OS printed anything (e.g. a
//! silent crash in the boot loader) is not seen.

use super::console::ConsoleLine;

/// OVMF's terminal reset: "set mode 80x25", printed once per firmware start.
const TERMINAL_RESET: &[u8] = b"\x1b[=3h";
/// OVMF's boot manager, printed for each boot option it tries.
const BOOT_MANAGER: &str = "BdsDxe:";

/// Whether a line comes from the firmware starting up.
pub fn is_firmware_line(line: &ConsoleLine) -> bool {
    line.raw
        .windows(TERMINAL_RESET.len())
        .any(|w| w == TERMINAL_RESET)
        || line.text.trim_start().starts_with(BOOT_MANAGER)
}

/// Tracks which boot the console is in.
#[derive(Debug, Clone)]
pub struct BootCounter {
    boot: u32,
    seen_firmware: bool,
    os_output_since_firmware: bool,
}

impl Default for BootCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl BootCounter {
    /// Starts in boot 1.
    pub fn new() -> Self {
        Self {
            boot: 1,
            seen_firmware: false,
            os_output_since_firmware: false,
        }
    }

    /// The current boot, 1-based.
    pub fn current(&self) -> u32 {
        self.boot
    }

    /// Feeds one line; returns the new boot number if this line starts one.
    pub fn observe(&mut self, line: &ConsoleLine) -> Option<u32> {
        if is_firmware_line(line) {
            let restarted = self.seen_firmware && self.os_output_since_firmware;
            self.seen_firmware = true;
            self.os_output_since_firmware = false;
            if restarted {
                self.boot = self.boot.saturating_add(1);
                return Some(self.boot);
            }
        } else if !line.is_blank() {
            self.os_output_since_firmware = true;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(counter: &mut BootCounter, raw: &[u8]) -> Option<u32> {
        counter.observe(&ConsoleLine::new(raw.to_vec()))
    }

    const OVMF_START: &[u8] = b"\x1b[2J\x1b[01;01H\x1b[=3h\x1b[2J\x1b[01;01H\x1b[=3h\x1b[2J\x1b[01;01HBdsDxe: loading Boot0001 \"UEFI Misc Device\"\r";

    #[test]
    fn counts_a_reboot_as_recorded_from_ovmf() {
        let mut c = BootCounter::new();
        assert_eq!(feed(&mut c, OVMF_START), None);
        assert_eq!(feed(&mut c, b"BdsDxe: starting Boot0001\r"), None);
        assert_eq!(feed(&mut c, b"SLATE-EVENT {\"event\":\"booted\"}\r"), None);
        assert_eq!(c.current(), 1);
        assert_eq!(
            feed(&mut c, b"[    2.66] reboot: Restarting system\r"),
            None
        );
        assert_eq!(feed(&mut c, OVMF_START), Some(2));
        assert_eq!(feed(&mut c, b"BdsDxe: starting Boot0001\r"), None);
        assert_eq!(c.current(), 2);
        assert_eq!(feed(&mut c, b"SLATE-EVENT {\"event\":\"booted\"}\r"), None);
        assert_eq!(feed(&mut c, OVMF_START), Some(3));
    }

    #[test]
    fn blank_lines_do_not_end_the_firmware_phase() {
        let mut c = BootCounter::new();
        feed(&mut c, OVMF_START);
        feed(&mut c, b"\x1b[2J\x1b[01;01H\r");
        feed(&mut c, b"");
        assert_eq!(feed(&mut c, b"BdsDxe: loading Boot0002\r"), None);
        assert_eq!(c.current(), 1);
    }

    #[test]
    fn output_before_the_first_firmware_line_is_still_boot_one() {
        let mut c = BootCounter::new();
        feed(&mut c, b"qemu: some early noise");
        assert_eq!(feed(&mut c, OVMF_START), None);
        assert_eq!(c.current(), 1);
    }

    #[test]
    fn a_watchdog_reset_mid_line_is_a_new_boot() {
        let mut c = BootCounter::new();
        feed(&mut c, OVMF_START);
        feed(&mut c, b"[    1.0] Run /init as init process\r");
        // The reset cut the OS off mid-line; the firmware's escapes follow.
        assert_eq!(
            feed(
                &mut c,
                b"partial output\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: loading\r"
            ),
            Some(2)
        );
    }
}
