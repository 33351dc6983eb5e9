//! Byte sizes as a newtype, with the human-friendly parser every command uses.

use std::fmt;
use std::str::FromStr;

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

/// One KiB, MiB, GiB, TiB.
pub const KIB: u64 = 1024;
/// One MiB.
pub const MIB: u64 = 1024 * KIB;
/// One GiB.
pub const GIB: u64 = 1024 * MIB;
/// One TiB.
pub const TIB: u64 = 1024 * GIB;

/// Why a size string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {reason} (expected e.g. 64M, 1G, 4096K or a plain byte count)")]
pub struct ParseSizeError {
    input: String,
    reason: &'static str,
}

impl Bytes {
    /// The raw byte count.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Size in MiB, rounded up (for messages).
    pub const fn mib_ceil(self) -> u64 {
        self.0.div_ceil(MIB)
    }

    /// Round up to a multiple of `align` (which must be non-zero).
    pub fn align_up(self, align: u64) -> Option<Bytes> {
        self.0.checked_next_multiple_of(align).map(Bytes)
    }
}

impl FromStr for Bytes {
    type Err = ParseSizeError;

    /// Parses `64M`, `1G`, `4096K`, `1T`, `512` (bytes); suffixes are binary
    /// (K = 1024) and case-insensitive, and `MiB`/`MB`/`B` spellings are accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseSizeError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, suffix) = t.split_at(digits_end);
        if num.is_empty() {
            return Err(err("no number"));
        }
        let n: u64 = num.parse().map_err(|_| err("number too large"))?;
        let mult = match suffix.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => KIB,
            "M" | "MB" | "MIB" => MIB,
            "G" | "GB" | "GIB" => GIB,
            "T" | "TB" | "TIB" => TIB,
            _ => return Err(err("unknown unit")),
        };
        n.checked_mul(mult)
            .map(Bytes)
            .ok_or_else(|| err("too large"))
    }
}

impl fmt::Display for Bytes {
    /// Prints the exact size with the largest binary unit that divides it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (unit, m) in [("T", TIB), ("G", GIB), ("M", MIB), ("K", KIB)] {
            if v != 0 && v % m == 0 {
                return write!(f, "{}{unit}", v / m);
            }
        }
        write!(f, "{v}")
    }
}

impl serde::Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Bytes {
    /// Accepts either a number of bytes or a string such as "64M".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(Bytes(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        assert_eq!("64M".parse::<Bytes>().unwrap(), Bytes(64 * MIB));
        assert_eq!("1G".parse::<Bytes>().unwrap(), Bytes(GIB));
        assert_eq!("4096K".parse::<Bytes>().unwrap(), Bytes(4096 * KIB));
        assert_eq!("512".parse::<Bytes>().unwrap(), Bytes(512));
        assert_eq!("2MiB".parse::<Bytes>().unwrap(), Bytes(2 * MIB));
        assert_eq!("3g".parse::<Bytes>().unwrap(), Bytes(3 * GIB));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "M",
            "12Q",
            "-1",
            "1.5G",
            "99999999999999999999",
            "16777216T",
        ] {
            let e = bad.parse::<Bytes>().unwrap_err();
            assert!(e.to_string().contains("invalid size"), "{bad}: {e}");
        }
    }

    #[test]
    fn displays_largest_unit() {
        assert_eq!(Bytes(64 * MIB).to_string(), "64M");
        assert_eq!(Bytes(1536 * KIB).to_string(), "1536K");
        assert_eq!(Bytes(1000).to_string(), "1000");
    }
}
