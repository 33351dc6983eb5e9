//! The boot spec: boot parameters shipped with every build (`boot.json`), so
//! the agent can write a boot entry for a slot after installing it from a
//! bundle. A contract of the device layout shared by the composer (which
//! writes it) and the agent (which reads it); neither imports the other.

use serde::{Deserialize, Serialize};

/// File name of the boot spec in a build directory and in a bundle.
pub const FILE_NAME: &str = "boot.json";

/// Boot parameters of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSpec {
    /// Image name.
    pub name: String,
    /// Image version.
    pub version: String,
    /// The recipe's kernel command line (without slate's parameters).
    pub cmdline: String,
    /// Kernel release.
    pub kernel_release: String,
    /// Watchdog period for the initramfs, seconds.
    pub watchdog_secs: u64,
}

impl BootSpec {
    /// The JSON text written to `boot.json` (pretty, newline-terminated).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_fields() {
        let b = BootSpec {
            name: "n".into(),
            version: "1.0.0".into(),
            cmdline: "console=ttyS0".into(),
            kernel_release: "6.1.0-57-cloud-amd64".into(),
            watchdog_secs: 90,
        };
        let text = b.to_json();
        assert!(text.ends_with("}\n"));
        assert_eq!(serde_json::from_str::<BootSpec>(&text).unwrap(), b);
        let extra = text.replacen('{', "{\"extra\": 1,", 1);
        assert!(serde_json::from_str::<BootSpec>(&extra).is_err());
    }
}
