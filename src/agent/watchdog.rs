//! The watchdog the initramfs armed: the agent stops it once the boot has a
//! verdict (the magic close: write 'V', then close).

use std::io::Write;

/// Device node of the first watchdog.
pub const DEVICE: &str = "/dev/watchdog";

/// Stops the watchdog. Returns `Ok(false)` when there is none.
pub fn disarm() -> std::io::Result<bool> {
    let mut f = match std::fs::OpenOptions::new().write(true).open(DEVICE) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    f.write_all(b"V")?;
    Ok(true)
}
