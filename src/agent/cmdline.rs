//! The `slate.*` parameters on the kernel command line: which slot booted
//! and the GPT GUIDs of its partitions.

use crate::boot_env::SlotId;
use crate::verity::{CMDLINE_KEY, SlotVerity};

/// What the boot entry told the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootParams {
    /// The slot that booted.
    pub slot: Option<SlotId>,
    /// GUID of the booted root partition.
    pub root: Option<String>,
    /// GUID of the data partition.
    pub data: Option<String>,
    /// GUID of the ESP.
    pub esp: Option<String>,
    /// The root's dm-verity parameters, when it is verified.
    pub verity: Option<SlotVerity>,
    /// Everything else, in order (the image's own command line).
    pub rest: Vec<String>,
}

/// Parses a kernel command line.
pub fn parse(cmdline: &str) -> BootParams {
    let mut p = BootParams::default();
    for word in cmdline.split_whitespace() {
        match word.split_once('=') {
            Some(("slate.slot", v)) => p.slot = v.parse().ok(),
            Some(("slate.root", v)) => p.root = Some(v.to_string()),
            Some(("slate.data", v)) => p.data = Some(v.to_string()),
            Some(("slate.esp", v)) => p.esp = Some(v.to_string()),
            Some(("slate.wd", _)) => {}
            Some((CMDLINE_KEY, v)) => p.verity = SlotVerity::parse_cmdline_value(v),
            _ => p.rest.push(word.to_string()),
        }
    }
    p
}

/// The full command line for a slot: the image's own parameters, then
/// slate's, with `panic=` added so a kernel panic reboots into the boot
/// loader (which counts the failed attempt), and the slot's dm-verity
/// parameters when its root is verified.
pub fn compose(
    base: &str,
    slot: SlotId,
    root: &str,
    data: &str,
    esp: &str,
    watchdog_secs: u64,
    verity: Option<&SlotVerity>,
) -> String {
    let mut words: Vec<String> = base
        .split_whitespace()
        .filter(|w| !w.starts_with("slate."))
        .map(String::from)
        .collect();
    if !words.iter().any(|w| w.starts_with("panic=")) {
        words.push("panic=5".into());
    }
    words.push(format!("slate.slot={slot}"));
    words.push(format!("slate.root={root}"));
    words.push(format!("slate.data={data}"));
    words.push(format!("slate.esp={esp}"));
    words.push(format!("slate.wd={watchdog_secs}"));
    if let Some(v) = verity {
        words.push(format!("{CMDLINE_KEY}={}", v.to_cmdline_value()));
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = compose(
            "console=ttyS0 quiet slate.slot=B",
            SlotId::A,
            "r",
            "d",
            "e",
            60,
            None,
        );
        assert_eq!(
            c,
            "console=ttyS0 quiet panic=5 slate.slot=A slate.root=r slate.data=d slate.esp=e slate.wd=60"
        );
        let p = parse(&c);
        assert_eq!(p.slot, Some(SlotId::A));
        assert_eq!(p.root.as_deref(), Some("r"));
        assert_eq!(p.rest, ["console=ttyS0", "quiet", "panic=5"]);
        assert!(!compose("panic=1", SlotId::B, "r", "d", "e", 1, None).contains("panic=5"));
    }
}
