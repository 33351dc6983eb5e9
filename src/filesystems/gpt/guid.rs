//! GUIDs as GPT stores them.
//!
//! Text form and [`Guid::as_bytes`] use RFC 4122 byte order
//! (`c12a7328-f81f-11d2-...` is `c1 2a 73 28 f8 1f ...`); on disk the first
//! three fields are little-endian (`28 73 2a c1 1f f8 d2 11 ...`), see
//! [`Guid::to_disk_bytes`].

use crate::reproducible::{derived_uuid, format_uuid, parse_uuid};
use std::fmt;
use std::str::FromStr;

/// A GUID (partition type, partition or disk identifier).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Guid([u8; 16]);

/// Why a GUID string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid GUID {0:?} (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
pub struct ParseGuidError(String);

impl Guid {
    /// The all-zero GUID (an unused GPT entry's type).
    pub const NIL: Guid = Guid([0; 16]);

    /// From 16 bytes in RFC 4122 (text) order.
    pub const fn from_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    /// From the GUID written as one hexadecimal number, e.g.
    /// `0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B` (for constants).
    pub const fn from_u128(v: u128) -> Guid {
        Guid(v.to_be_bytes())
    }

    /// The 16 bytes in RFC 4122 (text) order.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// From the 16 bytes as stored in a GPT header or entry.
    pub fn from_disk_bytes(d: [u8; 16]) -> Guid {
        Guid(swap_fields(d))
    }

    /// The 16 bytes as stored in a GPT header or entry: the first three
    /// fields little-endian, the last two as in the text.
    pub fn to_disk_bytes(&self) -> [u8; 16] {
        swap_fields(self.0)
    }

    /// Whether this is the all-zero GUID.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// A stable version-4-shaped GUID derived from `parts` (see
    /// [`crate::reproducible::derived_uuid`]).
    pub fn derived(parts: &[&[u8]]) -> Guid {
        Guid(derived_uuid(parts))
    }
}

/// Swaps the byte order of the first three fields (its own inverse).
fn swap_fields(b: [u8; 16]) -> [u8; 16] {
    let mut o = b;
    o[..4].reverse();
    o[4..6].reverse();
    o[6..8].reverse();
    o
}

impl fmt::Display for Guid {
    /// Lower-case hyphenated, as blkid and /dev/disk/by-partuuid show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_uuid(&self.0))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = ParseGuidError;

    /// Parses the hyphenated form, in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let dashes_ok = t.len() == 36 && [8, 13, 18, 23].iter().all(|&i| t.as_bytes()[i] == b'-');
        match parse_uuid(t) {
            Some(b) if dashes_ok => Ok(Guid(b)),
            _ => Err(ParseGuidError(s.to_string())),
        }
    }
}

impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

    #[test]
    fn text_round_trip_and_case() {
        let g: Guid = ESP.parse().unwrap();
        assert_eq!(g.to_string(), ESP);
        assert_eq!(ESP.to_uppercase().parse::<Guid>().unwrap(), g);
        assert_eq!(g, Guid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B));
        for bad in [
            "",
            "c12a7328f81f11d2ba4b00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93",
            "g12a7328-f81f-11d2-ba4b-00a0c93ec93b",
            "c12a7328-f81f11d2-ba4b-00a0c93ec93b-",
        ] {
            assert!(bad.parse::<Guid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn disk_byte_order_is_mixed_endian() {
        // The ESP type GUID as it appears in every GPT entry (UEFI spec,
        // and what `xxd` shows in a disk made by sgdisk).
        let on_disk = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        let g: Guid = ESP.parse().unwrap();
        assert_eq!(g.to_disk_bytes(), on_disk);
        assert_eq!(Guid::from_disk_bytes(on_disk), g);
        assert_eq!(g.as_bytes()[0], 0xc1);
    }

    #[test]
    fn derived_guids_are_stable_and_distinct() {
        let a = Guid::derived(&[b"img", b"1.0", b"root-a"]);
        assert_eq!(a, Guid::derived(&[b"img", b"1.0", b"root-a"]));
        assert_ne!(a, Guid::derived(&[b"img", b"1.0", b"root-b"]));
        assert!(!a.is_nil());
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        assert_eq!(
            serde_json::from_str::<Guid>(&format!("\"{a}\"")).unwrap(),
            a
        );
    }
}
