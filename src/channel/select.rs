//! Which target a device installs next: the newest bundle of its channel
//! and `compatible`, newer than what it runs, not below its security floor,
//! whose rollout includes the device's wave; every other target with the
//! reason it was passed over.
//!
//! A device's wave is a stable number in `[0, 10000)` derived from its id
//! (SHA-256 of `slate rollout` and the id); a target with rollout `P` %
//! reaches the waves below `100 P`. Raising `P` only adds devices, so the
//! devices of a 10 % rollout are still in it at 50 %.

use super::metadata::TargetFile;
use crate::version::Version;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// slate's custom data on a target (`custom.slate`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SlateTarget {
    /// `bundle` or `head`.
    pub kind: String,
    /// The bundle's `compatible`.
    pub compatible: String,
    /// The bundle's version.
    pub version: String,
    /// The bundle's security version.
    pub security_version: u64,
    /// The channel the target was published to.
    pub channel: String,
    /// Percent of devices (0-100) it is offered to.
    pub rollout: u32,
    /// For a bundle: its head's target name; for a head: its bundle's.
    pub pair: String,
}

impl SlateTarget {
    /// slate's data of `t`, if it carries any.
    pub fn of(t: &TargetFile) -> Option<SlateTarget> {
        let v = t.custom.as_ref()?.get("slate")?;
        serde_json::from_value(v.clone()).ok()
    }
}

/// What the device is.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its `compatible`.
    pub compatible: String,
    /// The version it runs.
    pub version: Version,
    /// Its anti-rollback floor.
    pub security_floor: u64,
    /// The channel it follows.
    pub channel: String,
    /// Its stable id (what the wave derives from).
    pub id: String,
}

/// A target considered, and why it was or was not chosen.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Considered {
    /// Target name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its rollout percent.
    pub rollout: u32,
    /// `null` for the chosen one, else why not.
    pub skipped: Option<String>,
}

/// The decision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Selection {
    /// The device's wave, 0-9999.
    pub wave: u32,
    /// The bundle target to install, if any.
    pub chosen: Option<String>,
    /// Every bundle target of the device's channel and compatible, newest first.
    pub considered: Vec<Considered>,
}

/// The wave of device `id`, 0-9999.
pub fn wave(id: &str) -> u32 {
    let d = Sha256::digest([b"slate rollout\0".as_slice(), id.as_bytes()].concat());
    (u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) % 10_000) as u32
}

/// Whether a rollout of `percent` reaches `wave`.
pub fn reaches(percent: u32, wave: u32) -> bool {
    wave < percent.min(100) * 100
}

/// Picks the target `device` installs next from `targets`.
pub fn select(targets: &BTreeMap<String, TargetFile>, device: &Device) -> Selection {
    let wave = wave(&device.id);
    let mut mine: Vec<(Version, &String, SlateTarget)> = targets
        .iter()
        .filter_map(|(name, t)| {
            let s = SlateTarget::of(t)?;
            (s.kind == "bundle" && s.channel == device.channel && s.compatible == device.compatible)
                .then_some(s)
                .and_then(|s| Some((s.version.parse::<Version>().ok()?, name, s)))
        })
        .collect();
    mine.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let mut chosen = None;
    let considered = mine
        .into_iter()
        .map(|(version, name, s)| {
            let skipped = if chosen.is_some() {
                Some("a newer target was chosen".to_string())
            } else if version <= device.version {
                Some(format!("not newer than the running {}", device.version))
            } else if s.security_version < device.security_floor {
                Some(format!(
                    "security version {} is below the device's floor {}",
                    s.security_version, device.security_floor
                ))
            } else if !targets.contains_key(&s.pair) {
                Some(format!("its head target {} is missing", s.pair))
            } else if !reaches(s.rollout, wave) {
                Some(format!(
                    "rollout {} % does not reach this device's wave {wave}",
                    s.rollout
                ))
            } else {
                chosen = Some(name.clone());
                None
            };
            Considered {
                name: name.clone(),
                version: s.version,
                rollout: s.rollout,
                skipped,
            }
        })
        .collect();
    Selection {
        wave,
        chosen,
        considered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target(version: &str, rollout: u32, security: u64) -> (String, TargetFile) {
        let name = format!("stable/dev-{version}.slate");
        let custom = json!({"slate": {
            "kind": "bundle", "compatible": "dev", "version": version,
            "security_version": security, "channel": "stable", "rollout": rollout,
            "pair": format!("{name}.head"),
        }});
        (
            name,
            TargetFile {
                length: 1,
                hashes: BTreeMap::new(),
                custom: Some(custom),
            },
        )
    }

    fn with_heads(list: Vec<(String, TargetFile)>) -> BTreeMap<String, TargetFile> {
        let mut m = BTreeMap::new();
        for (name, t) in list {
            m.insert(
                format!("{name}.head"),
                TargetFile {
                    length: 1,
                    hashes: BTreeMap::new(),
                    custom: None,
                },
            );
            m.insert(name, t);
        }
        m
    }

    fn device(version: &str, id: &str) -> Device {
        Device {
            compatible: "dev".into(),
            version: version.parse().unwrap(),
            security_floor: 1,
            channel: "stable".into(),
            id: id.into(),
        }
    }

    #[test]
    fn newest_eligible_wins_with_reasons() {
        let t = with_heads(vec![
            target("1.0.0", 100, 1),
            target("2.0.0", 100, 1),
            target("3.0.0", 0, 1),
            target("2.5.0", 100, 0),
        ]);
        let s = select(&t, &device("1.0.0", "d"));
        assert_eq!(s.chosen.as_deref(), Some("stable/dev-2.0.0.slate"));
        let why: Vec<_> = s
            .considered
            .iter()
            .map(|c| (c.version.as_str(), c.skipped.is_none()))
            .collect();
        assert_eq!(
            why,
            [
                ("3.0.0", false),
                ("2.5.0", false),
                ("2.0.0", true),
                ("1.0.0", false)
            ]
        );
        assert!(
            s.considered[0]
                .skipped
                .as_ref()
                .unwrap()
                .contains("rollout 0 %")
        );
        assert!(
            s.considered[1]
                .skipped
                .as_ref()
                .unwrap()
                .contains("below the device's floor")
        );
        assert!(select(&t, &device("2.0.0", "d")).chosen.is_none());
    }

    #[test]
    fn rollout_is_stable_and_monotonic() {
        let ids: Vec<String> = (0..1000).map(|i| format!("device-{i}")).collect();
        let pick =
            |p: u32| -> Vec<&String> { ids.iter().filter(|id| reaches(p, wave(id))).collect() };
        let ten = pick(10);
        assert!((70..=130).contains(&ten.len()), "{}", ten.len());
        assert_eq!(ten, pick(10));
        let half = pick(50);
        assert!(ten.iter().all(|id| half.contains(id)));
        assert_eq!(pick(100).len(), 1000);
        assert!(pick(0).is_empty());
    }
}
