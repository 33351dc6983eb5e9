//! Inputs that make outputs reproducible: SOURCE_DATE_EPOCH and name-derived ids.

use sha2::{Digest, Sha256};

/// Why SOURCE_DATE_EPOCH was refused.
#[derive(Debug, thiserror::Error)]
#[error("SOURCE_DATE_EPOCH={0:?} is not an integer number of seconds")]
pub struct BadEpoch(String);

/// The SOURCE_DATE_EPOCH environment variable, if set (an empty value counts as unset).
pub fn source_date_epoch() -> Result<Option<i64>, BadEpoch> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v.trim().parse().map(Some).map_err(|_| BadEpoch(v)),
        Err(_) => Ok(None),
    }
}

/// A version-4-shaped UUID derived from a hash of `parts`, so ids are stable
/// for the same inputs and distinct for different ones.
pub fn derived_uuid(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// Formats 16 bytes (in RFC 4122 byte order) as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parses a textual UUID (RFC 4122 byte order).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut u = [0u8; 16];
    for (i, b) in u.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_round_trip_and_stability() {
        let a = derived_uuid(&[b"minimal", b"1.0.0"]);
        assert_eq!(a, derived_uuid(&[b"minimal", b"1.0.0"]));
        assert_ne!(a, derived_uuid(&[b"minimal1", b".0.0"]));
        let s = format_uuid(&a);
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert_eq!(parse_uuid(&s), Some(a));
        assert_eq!(parse_uuid("not-a-uuid"), None);
    }
}
