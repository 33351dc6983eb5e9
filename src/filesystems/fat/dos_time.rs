//! Unix timestamps to the date and time fields of FAT directory entries.
//!
//! FAT stores local time without a zone; slate writes UTC, as `mtools` and
//! the Linux `vfat` driver read it with `TZ=UTC`/`tz=UTC`. Times outside the
//! representable 1980-01-01 .. 2107-12-31 range are clamped to its ends.

use crate::tree::Timestamp;
use crate::utc::civil_from_days;

/// A FAT date, time and the 10 ms creation-time refinement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DosTime {
    /// `(year - 1980) << 9 | month << 5 | day`.
    pub date: u16,
    /// `hour << 11 | minute << 5 | second / 2`.
    pub time: u16,
    /// Creation time's extra hundredths of a second (0..=199), which carry
    /// the odd second the 2-second `time` field drops.
    pub hundredths: u8,
}

/// 1980-01-01T00:00:00Z, the earliest FAT time.
const MIN_SECS: i64 = 315_532_800;
/// 2107-12-31T23:59:59Z, the latest FAT time.
const MAX_SECS: i64 = 4_354_819_199;

impl DosTime {
    /// The FAT representation of `t` (UTC), clamped to the FAT range.
    pub fn from_timestamp(t: Timestamp) -> DosTime {
        let (secs, nanos) = if t.secs < MIN_SECS {
            (MIN_SECS, 0)
        } else if t.secs > MAX_SECS {
            (MAX_SECS, 0)
        } else {
            (t.secs, t.nanos)
        };
        let days = secs.div_euclid(86_400);
        // Seconds of the day exceed u16, so split them before narrowing.
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (hour, min, sec) = (
            (sod / 3600) as u16,
            (sod / 60 % 60) as u16,
            (sod % 60) as u16,
        );
        DosTime {
            date: (((y - 1980) as u16) << 9) | ((m as u16) << 5) | d as u16,
            time: (hour << 11) | (min << 5) | (sec / 2),
            hundredths: ((sec % 2) * 100) as u8 + (nanos / 10_000_000) as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(secs: i64) -> (i64, u16, u16, u16, u16, u16) {
        let t = DosTime::from_timestamp(Timestamp::from_secs(secs));
        (
            1980 + i64::from(t.date >> 9),
            t.date >> 5 & 0xf,
            t.date & 0x1f,
            t.time >> 11,
            t.time >> 5 & 0x3f,
            (t.time & 0x1f) * 2 + u16::from(t.hundredths / 100),
        )
    }

    #[test]
    fn known_dates() {
        assert_eq!(fields(MIN_SECS), (1980, 1, 1, 0, 0, 0));
        // 2000-02-29T12:34:57Z: leap day, odd second.
        assert_eq!(fields(951_827_697), (2000, 2, 29, 12, 34, 57));
        // 2024-12-31T23:59:58Z.
        assert_eq!(fields(1_735_689_598), (2024, 12, 31, 23, 59, 58));
        // 2038-01-19T03:14:08Z, one second past the 32-bit limit.
        assert_eq!(fields(2_147_483_648), (2038, 1, 19, 3, 14, 8));
        assert_eq!(fields(MAX_SECS), (2107, 12, 31, 23, 59, 59));
    }

    #[test]
    fn clamps_out_of_range() {
        assert_eq!(fields(0), fields(MIN_SECS));
        assert_eq!(fields(-1_000_000_000), fields(MIN_SECS));
        assert_eq!(fields(10_000_000_000), fields(MAX_SECS));
    }

    #[test]
    fn hundredths_carry_odd_second_and_fraction() {
        let t = DosTime::from_timestamp(Timestamp {
            secs: 951_827_697,
            nanos: 250_000_000,
        });
        assert_eq!(t.hundredths, 125);
    }

    #[test]
    fn every_day_round_trips() {
        // days_from_civil, written independently, must invert civil_from_days.
        fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
            let y = if m <= 2 { y - 1 } else { y };
            let era = y.div_euclid(400);
            let yoe = y - era * 400;
            let mp = (m + 9) % 12;
            let doy = (153 * mp + 2) / 5 + d - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            era * 146_097 + doe - 719_468
        }
        for day in (MIN_SECS / 86_400)..=(MAX_SECS / 86_400) {
            let (y, m, d) = civil_from_days(day);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }
}
