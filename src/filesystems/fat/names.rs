//! Which names a FAT directory can hold, and how many 32-byte directory
//! slots each takes.

/// Characters per long-file-name (LFN) slot.
const LFN_CHARS_PER_SLOT: usize = 13;

/// Checks that `name` can be stored as a FAT long file name that Linux, mtools
/// and firmware read back unchanged, and returns it as text.
pub fn check_name(name: &[u8]) -> Result<&str, &'static str> {
    let s = std::str::from_utf8(name).map_err(|_| "name is not valid UTF-8")?;
    if s.encode_utf16().count() > 255 {
        return Err("name is longer than 255 UTF-16 units");
    }
    for c in s.chars() {
        let ok = c.is_ascii_alphanumeric()
            || "$%'-_@~`!(){}. +,;=[]^#&".contains(c)
            // fatfs stores only the Basic Multilingual Plane.
            || ('\u{80}'..='\u{FFFF}').contains(&c);
        if !ok {
            return Err(if c.is_ascii_control() {
                "name contains a control character, which FAT cannot store"
            } else if c > '\u{FFFF}' {
                "name contains a character outside the Basic Multilingual Plane, which FAT cannot store"
            } else {
                "name contains one of the characters \\ / : * ? \" < > |, which FAT cannot store"
            });
        }
    }
    // Windows and Linux vfat strip trailing dots and spaces on lookup, so such
    // a name could never be opened again.
    if s.ends_with('.') || s.ends_with(' ') {
        return Err("name ends with a dot or space, which FAT drops");
    }
    Ok(s)
}

/// The key under which FAT compares names: it ignores case.
pub fn fold_case(name: &str) -> String {
    name.chars().flat_map(char::to_uppercase).collect()
}

/// Directory slots fatfs writes for an entry called `name`: its long name
/// (always, 13 UTF-16 units per slot) plus the short 8.3 entry.
pub fn slots(name: &str) -> u64 {
    (name.encode_utf16().count().div_ceil(LFN_CHARS_PER_SLOT) + 1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_typical_esp_names() {
        for n in [
            "EFI",
            "BOOTX64.EFI",
            "loader.conf",
            "6.1.0-17-amd64",
            "a b+c,d;e=f[g]",
            "ü",
        ] {
            assert_eq!(check_name(n.as_bytes()), Ok(n));
        }
    }

    #[test]
    fn rejects_unrepresentable() {
        for n in [
            &b"a:b"[..],
            b"a*",
            b"q?",
            b"x\\y",
            b"a\"b",
            b"<",
            b">",
            b"|",
            b"trail.",
            b"trail ",
            b"\x01",
            b"\xff",
            "😀".as_bytes(),
        ] {
            assert!(check_name(n).is_err(), "{n:?}");
        }
        assert!(check_name("é".repeat(127).as_bytes()).is_ok());
        assert!(check_name("é".repeat(256).as_bytes()).is_err());
    }

    #[test]
    fn slot_counts() {
        assert_eq!(slots("a"), 2);
        assert_eq!(slots("abcdefghijklm"), 2);
        assert_eq!(slots("abcdefghijklmn"), 3);
        assert_eq!(slots(&"x".repeat(255)), 21);
    }

    #[test]
    fn folding() {
        assert_eq!(fold_case("Boot"), fold_case("BOOT"));
        assert_ne!(fold_case("boot1"), fold_case("boot"));
    }
}
