//! UTC instants as seconds since the Unix epoch, and their RFC 3339 text
//! (`2027-01-31T12:00:00Z`, the only form TUF metadata and SPDX use), plus
//! the durations people write for expiry periods (`90d`, `12h`).

/// Formats `epoch` (seconds, UTC) as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` exactly (what [`format`] writes).
pub fn parse(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 20 || b[19] != b'Z' {
        return None;
    }
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

/// Parses a duration: a positive whole number with a unit, `s`, `m`, `h`
/// or `d` (`90d`, `12h`); returns seconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let (n, unit) = text.split_at(text.len().checked_sub(1)?);
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    let n: i64 = n.parse().ok().filter(|n| *n > 0)?;
    n.checked_mul(scale)
}

/// The current time: SOURCE_DATE_EPOCH when set (reproducible outputs),
/// else the system clock.
pub fn now_or_source_date() -> Result<i64, crate::reproducible::BadEpoch> {
    Ok(crate::reproducible::source_date_epoch()?.unwrap_or_else(system_now))
}

/// The system clock, in whole seconds (0 before the epoch).
pub fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Year, month, day of day `z` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(format(0), "1970-01-01T00:00:00Z");
        assert_eq!(format(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(parse("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse("2026-12-31T23:59:59Z"), Some(1_798_761_599));
    }

    #[test]
    fn round_trips_and_refuses_other_forms() {
        for t in [-86_401, 0, 1, 68_169_600, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse(&format(t)), Some(t), "{t}");
        }
        for bad in [
            "2027-01-01T00:00:00",
            "2027-01-01 00:00:00Z",
            "2027-02-29T00:00:00Z",
            "2027-13-01T00:00:00Z",
            "2027-01-01T24:00:00Z",
            "2027-01-01T00:00:00.5Z",
            "+027-01-01T00:00:00Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d"), Some(90 * 86_400));
        assert_eq!(parse_duration("12h"), Some(43_200));
        assert_eq!(parse_duration("5m"), Some(300));
        assert_eq!(parse_duration("1s"), Some(1));
        for bad in ["", "d", "0d", "-1d", "1w", "1.5d", "99999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
