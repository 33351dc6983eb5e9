//! Firmware boot options (UEFI 2.10, 3.1.3 "Load Options" and 10.3 "Device
//! Path Nodes"): the `Boot####` and `BootOrder` variables in the encoding
//! the firmware's boot manager reads, and the plan that gives slate's loader
//! one boot option per try.
//!
//! Why more than one: when the firmware refuses the image systemd-boot
//! starts (a UKI changed on the ESP fails Secure Boot's check, a damaged PE
//! file does not load), systemd-boot has already counted the try and
//! returns to the firmware, whose boot manager starts the next option in
//! `BootOrder`. With `tries + 1` options that all start systemd-boot, the
//! last one finds the trial's tries spent and boots the committed slot.

use std::fmt;

/// `EFI_GLOBAL_VARIABLE`, the vendor GUID of `Boot####` and `BootOrder`.
pub const GLOBAL_VARIABLE_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// `LOAD_OPTION_ACTIVE`.
pub const LOAD_OPTION_ACTIVE: u32 = 0x1;
/// Non-volatile, boot-service and runtime access: what boot options carry.
pub const VARIABLE_ATTRIBUTES: u32 = 0x7;
/// Description prefix of the options slate owns (`slate 1`, `slate 2`, ...).
pub const DESCRIPTION_PREFIX: &str = "slate ";

/// A boot option that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed load option: {0}")]
pub struct MalformedOption(&'static str);

/// Where an option's loader lives: a GPT partition (by number, extent and
/// unique GUID, as `efibootmgr` writes it) and a file on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFile {
    /// Partition number (1-based).
    pub number: u32,
    /// First LBA of the partition, in the disk's logical blocks.
    pub start_lba: u64,
    /// Size in logical blocks.
    pub size_lba: u64,
    /// The partition's unique GUID.
    pub guid: uuid::Uuid,
    /// Path on the partition, `\`-separated (`\EFI\BOOT\BOOTX64.EFI`).
    pub file: String,
}

impl PartitionFile {
    /// The device path: a hard-drive node (GPT signature), a file-path node
    /// and the end node.
    pub fn device_path(&self) -> Vec<u8> {
        let mut dp = Vec::with_capacity(42 + 4 + 2 * (self.file.len() + 1) + 4);
        // Media (4) / Hard Drive (1), 42 bytes.
        dp.extend_from_slice(&[4, 1]);
        dp.extend_from_slice(&42u16.to_le_bytes());
        dp.extend_from_slice(&self.number.to_le_bytes());
        dp.extend_from_slice(&self.start_lba.to_le_bytes());
        dp.extend_from_slice(&self.size_lba.to_le_bytes());
        dp.extend_from_slice(&self.guid.to_bytes_le());
        dp.extend_from_slice(&[0x02, 0x02]); // GPT partition table, GUID signature
        // Media (4) / File Path (4): a NUL-terminated UCS-2 path.
        let path = ucs2(&self.file);
        dp.extend_from_slice(&[4, 4]);
        dp.extend_from_slice(&((4 + path.len()) as u16).to_le_bytes());
        dp.extend_from_slice(&path);
        // End of the whole device path.
        dp.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        dp
    }
}

/// `EFI_LOAD_OPTION`: attributes, a description, a device path and
/// optional data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption {
    /// `LOAD_OPTION_*` bits.
    pub attributes: u32,
    /// What a boot menu shows.
    pub description: String,
    /// The encoded device path list.
    pub device_path: Vec<u8>,
    /// Data passed to the loaded image.
    pub optional_data: Vec<u8>,
}

impl LoadOption {
    /// The variable's contents.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&(self.device_path.len() as u16).to_le_bytes());
        out.extend_from_slice(&ucs2(&self.description));
        out.extend_from_slice(&self.device_path);
        out.extend_from_slice(&self.optional_data);
        out
    }

    /// Reads a variable's contents.
    pub fn decode(data: &[u8]) -> Result<Self, MalformedOption> {
        if data.len() < 6 {
            return Err(MalformedOption("shorter than its fixed header"));
        }
        let attributes = u32::from_le_bytes(data[..4].try_into().unwrap());
        let dp_len = u16::from_le_bytes([data[4], data[5]]) as usize;
        let mut units = Vec::new();
        let mut at = 6;
        loop {
            let unit = data
                .get(at..at + 2)
                .ok_or(MalformedOption("description has no terminating NUL"))?;
            at += 2;
            match u16::from_le_bytes([unit[0], unit[1]]) {
                0 => break,
                u => units.push(u),
            }
        }
        let device_path = data
            .get(at..at + dp_len)
            .ok_or(MalformedOption("device path runs past the end"))?
            .to_vec();
        Ok(Self {
            attributes,
            description: String::from_utf16_lossy(&units),
            device_path,
            optional_data: data[at + dp_len..].to_vec(),
        })
    }

    /// An option slate owns: its description is `slate <n>`.
    pub fn is_slates(&self) -> bool {
        self.description
            .strip_prefix(DESCRIPTION_PREFIX)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// `BootOrder`: a list of option numbers.
pub fn decode_boot_order(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// `BootOrder`'s contents.
pub fn encode_boot_order(order: &[u16]) -> Vec<u8> {
    order.iter().flat_map(|n| n.to_le_bytes()).collect()
}

/// The variable name of option `n`: `Boot000A`.
pub fn boot_variable(n: u16) -> String {
    format!("Boot{n:04X}")
}

/// The option number of a `Boot####` variable name.
pub fn parse_boot_variable(name: &str) -> Option<u16> {
    let hex = name.strip_prefix("Boot")?;
    (hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u16::from_str_radix(hex, 16).ok())
        .flatten()
}

/// What to change so that `BootOrder` starts with slate's options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootOptionsPlan {
    /// Options to (over)write, first.
    pub write: Vec<(u16, LoadOption)>,
    /// The new `BootOrder`, written after the options exist (`None`: keep).
    pub order: Option<Vec<u16>>,
    /// Options of slate's no longer wanted, deleted last.
    pub delete: Vec<u16>,
}

impl BootOptionsPlan {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.write.is_empty() && self.order.is_none() && self.delete.is_empty()
    }
}

impl fmt::Display for BootOptionsPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.write.iter().map(|(n, _)| boot_variable(*n)).collect();
        write!(f, "write [{}]", names.join(", "))?;
        if let Some(o) = &self.order {
            let o: Vec<String> = o.iter().map(|n| format!("{n:04X}")).collect();
            write!(f, ", BootOrder {}", o.join(","))?;
        }
        let d: Vec<String> = self.delete.iter().map(|n| boot_variable(*n)).collect();
        write!(f, ", delete [{}]", d.join(", "))
    }
}

/// Plans `count` options `slate 1..=count`, all starting `loader`, at the
/// head of `order`. `existing` are the firmware's `Boot####` options.
/// Options already right are kept (no write); the order of writes keeps
/// every intermediate state bootable: new options are unreferenced until
/// `BootOrder` names them, and old ones go only after it no longer does.
pub fn plan_boot_options(
    existing: &[(u16, LoadOption)],
    order: &[u16],
    loader: &PartitionFile,
    count: u32,
) -> BootOptionsPlan {
    let device_path = loader.device_path();
    let mut taken: std::collections::BTreeSet<u16> = existing.iter().map(|(n, _)| *n).collect();
    let mut plan = BootOptionsPlan::default();
    let mut ours = Vec::new();
    for k in 1..=count {
        let want = LoadOption {
            attributes: LOAD_OPTION_ACTIVE,
            description: format!("{DESCRIPTION_PREFIX}{k}"),
            device_path: device_path.clone(),
            optional_data: Vec::new(),
        };
        let same_name = existing
            .iter()
            .find(|(_, o)| o.description == want.description);
        let n = match same_name {
            Some((n, o)) if *o == want => *n,
            Some((n, _)) => {
                plan.write.push((*n, want));
                *n
            }
            None => {
                let n = (0..=u16::MAX)
                    .find(|n| !taken.contains(n))
                    .unwrap_or(u16::MAX);
                taken.insert(n);
                plan.write.push((n, want));
                n
            }
        };
        ours.push(n);
    }
    plan.delete = existing
        .iter()
        .filter(|(n, o)| o.is_slates() && !ours.contains(n))
        .map(|(n, _)| *n)
        .collect();
    let rest = order
        .iter()
        .filter(|n| !ours.contains(n) && !plan.delete.contains(n));
    let new_order: Vec<u16> = ours.iter().chain(rest).copied().collect();
    if new_order != order {
        plan.order = Some(new_order);
    }
    plan
}

fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(|u| u.to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp() -> PartitionFile {
        PartitionFile {
            number: 1,
            start_lba: 2048,
            size_lba: 131072,
            guid: uuid::Uuid::parse_str("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").unwrap(),
            file: r"\EFI\BOOT\BOOTX64.EFI".into(),
        }
    }

    fn other(desc: &str) -> LoadOption {
        LoadOption {
            attributes: LOAD_OPTION_ACTIVE,
            description: desc.into(),
            device_path: vec![0x7f, 0xff, 4, 0],
            optional_data: vec![1, 2],
        }
    }

    #[test]
    fn device_path_layout() {
        let dp = esp().device_path();
        assert_eq!(&dp[..4], &[4, 1, 42, 0]);
        assert_eq!(u32::from_le_bytes(dp[4..8].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(dp[8..16].try_into().unwrap()), 2048);
        // The GUID is stored mixed-endian, as in the GPT itself.
        assert_eq!(&dp[24..28], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(&dp[40..42], &[2, 2]);
        assert_eq!(&dp[42..44], &[4, 4]);
        let file_len = u16::from_le_bytes([dp[44], dp[45]]) as usize;
        assert_eq!(file_len, 4 + 2 * 22);
        assert_eq!(&dp[42 + file_len..], &[0x7f, 0xff, 4, 0]);
    }

    #[test]
    fn load_options_round_trip_and_refuse_truncation() {
        let o = other("UEFI Misc Device");
        let bytes = o.encode();
        assert_eq!(LoadOption::decode(&bytes).unwrap(), o);
        for cut in [0, 5, 8, bytes.len() - 3] {
            assert!(LoadOption::decode(&bytes[..cut]).is_err(), "{cut}");
        }
        assert!(
            LoadOption {
                description: "slate 3".into(),
                ..o.clone()
            }
            .is_slates()
        );
        for d in ["slate", "slate x", "slate 1 old", "Slate 1"] {
            assert!(!other(d).is_slates(), "{d}");
        }
        assert_eq!(decode_boot_order(&encode_boot_order(&[3, 0x1f])), [3, 0x1f]);
        assert_eq!(boot_variable(0x1f), "Boot001F");
        assert_eq!(parse_boot_variable("Boot001F"), Some(0x1f));
        for bad in ["BootOrder", "Boot01", "BootNext", "Boot00g1"] {
            assert_eq!(parse_boot_variable(bad), None, "{bad}");
        }
    }

    #[test]
    fn plan_puts_new_options_first_and_is_idempotent() {
        let existing = vec![
            (0, other("UEFI Misc Device")),
            (1, other("EFI Internal Shell")),
        ];
        let plan = plan_boot_options(&existing, &[0, 1], &esp(), 3);
        let nums: Vec<u16> = plan.write.iter().map(|(n, _)| *n).collect();
        assert_eq!(nums, [2, 3, 4]);
        assert_eq!(plan.order, Some(vec![2, 3, 4, 0, 1]));
        assert!(plan.delete.is_empty());
        // Applied, the same plan changes nothing.
        let mut after = existing.clone();
        after.extend(plan.write.iter().cloned());
        assert!(plan_boot_options(&after, &[2, 3, 4, 0, 1], &esp(), 3).is_empty());
        // Someone moved ours back: only the order changes.
        let p = plan_boot_options(&after, &[0, 2, 3, 4, 1], &esp(), 3);
        assert!(p.write.is_empty() && p.delete.is_empty());
        assert_eq!(p.order, Some(vec![2, 3, 4, 0, 1]));
    }

    #[test]
    fn plan_rewrites_moved_partitions_and_drops_extra_options() {
        let mut moved = esp();
        moved.start_lba = 4096;
        let existing: Vec<(u16, LoadOption)> =
            plan_boot_options(&[(0, other("disk"))], &[0], &moved, 4)
                .write
                .into_iter()
                .chain([(0, other("disk"))])
                .collect();
        // Fewer tries, the ESP elsewhere: 1 and 2 are rewritten in place,
        // 3 and 4 leave BootOrder and are deleted after it is written.
        let plan = plan_boot_options(&existing, &[1, 2, 3, 4, 0], &esp(), 2);
        let nums: Vec<u16> = plan.write.iter().map(|(n, _)| *n).collect();
        assert_eq!(nums, [1, 2]);
        assert!(
            plan.write
                .iter()
                .all(|(_, o)| o.device_path == esp().device_path())
        );
        assert_eq!(plan.order, Some(vec![1, 2, 0]));
        assert_eq!(plan.delete, [3, 4]);
        assert_eq!(
            plan.to_string(),
            "write [Boot0001, Boot0002], BootOrder 0001,0002,0000, delete [Boot0003, Boot0004]"
        );
    }
}
