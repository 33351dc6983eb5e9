//! Image versions: validated strings ordered the way people read them
//! (`1.9.0 < 1.10.0`, `2.0.0-rc1 < 2.0.0`).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// An image version such as `1.0.0` or `2024.11.3-rc1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

/// Why a version string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {0:?}: use digits, letters and . + ~ - _ (at most 64 characters)")]
pub struct BadVersion(String);

impl FromStr for Version {
    type Err = BadVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c));
        if ok {
            Ok(Version(s.to_string()))
        } else {
            Err(BadVersion(s.to_string()))
        }
    }
}

impl Version {
    /// The version text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_versions(&self.0, &other.0)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Splits into alternating runs of digits and non-digits.
fn runs(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let b = s.as_bytes();
    for i in 1..=b.len() {
        if i == b.len() || b[i].is_ascii_digit() != b[i - 1].is_ascii_digit() {
            out.push(&s[start..i]);
            start = i;
        }
    }
    out
}

/// Natural order: numeric runs compare as numbers, text runs bytewise; a
/// pre-release suffix (`-rc1`, `~beta`) sorts before the plain release.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a_main, a_pre) = split_pre(a);
    let (b_main, b_pre) = split_pre(b);
    let ord = compare_runs(a_main, b_main);
    if ord != Ordering::Equal {
        return ord;
    }
    match (a_pre, b_pre) {
        (None, None) => Ordering::Equal,
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(x), Some(y)) => compare_runs(x, y),
    }
}

fn split_pre(s: &str) -> (&str, Option<&str>) {
    match s.find(['-', '~']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

fn compare_runs(a: &str, b: &str) -> Ordering {
    let (ra, rb) = (runs(a), runs(b));
    for (x, y) in ra.iter().zip(rb.iter()) {
        let ord = match (
            x.as_bytes()[0].is_ascii_digit(),
            y.as_bytes()[0].is_ascii_digit(),
        ) {
            (true, true) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ra.len().cmp(&rb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn natural_order() {
        assert!(v("1.9.0") < v("1.10.0"));
        assert!(v("2.0.0-rc1") < v("2.0.0"));
        assert!(v("2.0.0-rc1") < v("2.0.0-rc2"));
        assert!(v("1.0") < v("1.0.1"));
        assert_eq!(v("01.2").cmp(&v("1.2")), Ordering::Equal);
        assert!(v("3") > v("2.99"));
    }

    #[test]
    fn rejects_bad() {
        for bad in ["", "-1", "1 0", "a/b", &"9".repeat(65)] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
    }
}
