//! The signed manifest: typed, written in canonical JSON (sorted keys, no
//! whitespace, non-negative integers, ASCII strings without escapes), and
//! parsed back only after a signature over its bytes has verified.
//!
//! Parsing is strict: unknown fields are refused, every value is checked
//! against the limits in [`super::format`], and the parsed manifest must
//! re-encode to exactly the signed bytes, so there is one byte string per
//! manifest and no room for a parser disagreement between two readers.

use super::format::{
    FORMAT_VERSION, MAX_ARTIFACT_NAME_LEN, MAX_ARTIFACTS, MAX_CHUNK_SIZE, MAX_CHUNKS, MAX_INTEGER,
    MAX_TEXT_LEN, MIN_CHUNK_SIZE, max_compressed_len,
};
use serde::{Deserialize, Deserializer};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::fmt::Write as _;

/// A SHA-256 digest; lowercase hex in JSON and messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// Parses 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Digest> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (hex_val(b[2 * i])? << 4) | hex_val(b[2 * i + 1])?;
        }
        Some(Digest(out))
    }

    /// SHA-256 of `len` zero bytes, hashed from a small buffer.
    pub fn of_zeros(len: u64) -> Digest {
        let mut h = Sha256::new();
        for z in crate::io::sparse::zero_slices(len) {
            h.update(z);
        }
        Digest(h.finalize().into())
    }
}

/// The digests of all-zero chunks, by length, each computed once: a hole's
/// signed digest must be one of these.
#[derive(Default)]
pub(crate) struct ZeroDigests(Vec<(u64, Digest)>);

impl ZeroDigests {
    /// The SHA-256 of `len` zero bytes.
    pub(crate) fn of(&mut self, len: u64) -> Digest {
        if let Some((_, d)) = self.0.iter().find(|(l, _)| *l == len) {
            return *d;
        }
        let d = Digest::of_zeros(len);
        self.0.push((len, d));
        d
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HexVisitor;
        impl serde::de::Visitor<'_> for HexVisitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sha256 as 64 lowercase hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Digest, E> {
                Digest::from_hex(s)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_str(HexVisitor)
    }
}

/// The manifest, format version 1. Field order here is the canonical
/// (sorted) key order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The payloads, in install and payload order.
    pub artifacts: Vec<ArtifactEntry>,
    /// Devices install only bundles whose `compatible` equals their own.
    pub compatible: String,
    /// Creation time: SOURCE_DATE_EPOCH of the build, seconds since 1970 (0 if unknown).
    pub created: u64,
    /// Bundle format version, equal to the header's.
    pub format: u32,
    /// Image name.
    pub name: String,
    /// Anti-rollback level.
    pub security_version: u64,
    /// Image version.
    pub version: String,
}

/// One artifact (rootfs, kernel, initrd, ...).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactEntry {
    /// Uncompressed bytes per chunk (the last chunk may be shorter); a power of two.
    pub chunk_size: u64,
    /// The chunks in order; `ceil(size / chunk_size)` of them.
    pub chunks: Vec<ChunkEntry>,
    /// Role: `rootfs`, `kernel`, `initrd`, ...
    pub name: String,
    /// SHA-256 of the whole artifact.
    pub sha256: Digest,
    /// Size in bytes.
    pub size: u64,
    /// The dm-verity root hash of each slot holding this artifact (the
    /// `rootfs` only; absent in bundles built without verity).
    #[serde(default)]
    pub verity: Option<ArtifactVerity>,
}

/// The dm-verity parameters of a slot image, signed with the manifest: the
/// installer writes the image, computes its tree and compares the root hash
/// for the slot it wrote before the slot may boot (see `slot_image`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactVerity {
    /// Data blocks of 4096 bytes: the artifact's size / 4096.
    pub data_blocks: u64,
    /// Where the tree starts in the slot partition, bytes (the artifact's size).
    pub hash_offset: u64,
    /// Root hash in slot A.
    pub root_hash_a: Digest,
    /// Root hash in slot B (whose filesystem has its own UUID).
    pub root_hash_b: Digest,
    /// Salt of every digest (the artifact's SHA-256).
    pub salt: Digest,
}

impl ArtifactVerity {
    /// From the slot image contract's form.
    pub fn from_image(v: &crate::slot_image::ImageVerity) -> Self {
        ArtifactVerity {
            data_blocks: v.data_blocks,
            hash_offset: v.hash_offset,
            root_hash_a: Digest(v.root_a),
            root_hash_b: Digest(v.root_b),
            salt: Digest(v.salt),
        }
    }

    /// The parameters of `slot`.
    pub fn slot(&self, slot: crate::boot_env::SlotId) -> crate::verity::SlotVerity {
        crate::verity::SlotVerity {
            data_blocks: self.data_blocks,
            hash_offset: self.hash_offset,
            salt: self.salt.0,
            root_hash: match slot {
                crate::boot_env::SlotId::A => self.root_hash_a.0,
                crate::boot_env::SlotId::B => self.root_hash_b.0,
            },
        }
    }
}

/// One chunk of an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkEntry {
    /// Length of its zstd frame in the payload; 0 marks a hole (all zeros,
    /// nothing stored).
    pub compressed_size: u64,
    /// SHA-256 of the uncompressed chunk (for a hole: of its zeros).
    pub sha256: Digest,
}

impl ChunkEntry {
    /// Whether this chunk is all zeros with no payload.
    pub fn is_hole(&self) -> bool {
        self.compressed_size == 0
    }
}

impl ArtifactEntry {
    /// Uncompressed length of chunk `index` (the last one may be short).
    pub fn chunk_len(&self, index: u64) -> u64 {
        let start = index.saturating_mul(self.chunk_size);
        self.size.saturating_sub(start).min(self.chunk_size)
    }

    /// Sum of the compressed sizes (this artifact's share of the payload).
    pub fn compressed_size(&self) -> u64 {
        self.chunks.iter().map(|c| c.compressed_size).sum()
    }

    /// Number of hole chunks.
    pub fn holes(&self) -> u64 {
        self.chunks.iter().filter(|c| c.is_hole()).count() as u64
    }
}

/// Why a signed manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ManifestError> {
    Err(ManifestError(msg.into()))
}

impl Manifest {
    /// The canonical JSON bytes (see docs/bundle-format.md). The manifest
    /// must be valid ([`Manifest::validate`]) for the result to parse back.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        let mut s = String::with_capacity(256 + self.chunk_count() as usize * 96);
        s.push_str("{\"artifacts\":[");
        for (i, a) in self.artifacts.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{{\"chunk_size\":{},\"chunks\":[", a.chunk_size);
            for (j, c) in a.chunks.iter().enumerate() {
                if j > 0 {
                    s.push(',');
                }
                let _ = write!(
                    s,
                    "{{\"compressed_size\":{},\"sha256\":\"{}\"}}",
                    c.compressed_size, c.sha256
                );
            }
            let _ = write!(
                s,
                "],\"name\":\"{}\",\"sha256\":\"{}\",\"size\":{}",
                a.name, a.sha256, a.size
            );
            if let Some(v) = &a.verity {
                let _ = write!(
                    s,
                    ",\"verity\":{{\"data_blocks\":{},\"hash_offset\":{},\"root_hash_a\":\"{}\",\
                     \"root_hash_b\":\"{}\",\"salt\":\"{}\"}}",
                    v.data_blocks, v.hash_offset, v.root_hash_a, v.root_hash_b, v.salt
                );
            }
            s.push('}');
        }
        let _ = write!(
            s,
            "],\"compatible\":\"{}\",\"created\":{},\"format\":{},\"name\":\"{}\",\
             \"security_version\":{},\"version\":\"{}\"}}",
            self.compatible,
            self.created,
            self.format,
            self.name,
            self.security_version,
            self.version
        );
        s.into_bytes()
    }

    /// Parses signed manifest bytes: strict schema, limits, consistency, and
    /// canonical form.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError(e.to_string()))?;
        m.validate()?;
        if m.to_canonical_json() != bytes {
            return err("not in canonical form (sorted keys, no whitespace, no escapes)");
        }
        Ok(m)
    }

    /// Total chunks over all artifacts.
    pub fn chunk_count(&self) -> u64 {
        self.artifacts.iter().map(|a| a.chunks.len() as u64).sum()
    }

    /// Sum of all compressed sizes: the payload length.
    pub fn payload_len(&self) -> u64 {
        self.artifacts.iter().map(|a| a.compressed_size()).sum()
    }

    /// Checks every field against the format's rules and limits.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT_VERSION {
            return err(format!(
                "manifest format {} (this slate reads {FORMAT_VERSION})",
                self.format
            ));
        }
        check_text("name", &self.name)?;
        check_text("version", &self.version)?;
        check_text("compatible", &self.compatible)?;
        check_int("security_version", self.security_version)?;
        check_int("created", self.created)?;
        if self.artifacts.is_empty() {
            return err("the bundle has no artifacts (empty payload)");
        }
        if self.artifacts.len() > MAX_ARTIFACTS {
            return err(format!(
                "{} artifacts exceed the limit of {MAX_ARTIFACTS}",
                self.artifacts.len()
            ));
        }
        let mut total_chunks = 0u64;
        let mut payload = 0u64;
        for (i, a) in self.artifacts.iter().enumerate() {
            check_artifact_name(&a.name)?;
            if self.artifacts[..i].iter().any(|b| b.name == a.name) {
                return err(format!("artifact {} is listed twice", a.name));
            }
            let at = |what: &str| format!("artifact {}: {what}", a.name);
            if a.size == 0 {
                return err(at("is empty (size 0)"));
            }
            check_int(&at("size"), a.size)?;
            if !a.chunk_size.is_power_of_two()
                || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&a.chunk_size)
            {
                return err(at(&format!(
                    "chunk_size {} is not a power of two between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}",
                    a.chunk_size
                )));
            }
            let expected = a.size.div_ceil(a.chunk_size);
            if a.chunks.len() as u64 != expected {
                return err(at(&format!(
                    "{} chunks listed, size {} needs {expected}",
                    a.chunks.len(),
                    a.size
                )));
            }
            total_chunks = total_chunks.saturating_add(expected);
            if total_chunks > MAX_CHUNKS {
                return err(format!("more than {MAX_CHUNKS} chunks in the bundle"));
            }
            for (j, c) in a.chunks.iter().enumerate() {
                let len = a.chunk_len(j as u64);
                let max = max_compressed_len(len);
                if c.compressed_size > max {
                    return err(at(&format!(
                        "chunk {j} claims {} compressed bytes for {len} bytes of data (limit {max})",
                        c.compressed_size
                    )));
                }
                payload = payload.saturating_add(c.compressed_size);
            }
            if let Some(v) = &a.verity {
                check_verity(a, v).map_err(|e| ManifestError(at(&e.0)))?;
            }
        }
        check_int("payload length", payload)?;
        Ok(())
    }
}

/// A slot image's verity parameters must describe exactly the artifact,
/// with the tree after it.
fn check_verity(a: &ArtifactEntry, v: &ArtifactVerity) -> Result<(), ManifestError> {
    const BLOCK: u64 = crate::verity::BLOCK_SIZE;
    if a.name != "rootfs" {
        return err("only the rootfs carries verity parameters");
    }
    if a.size % BLOCK != 0 || v.data_blocks != a.size / BLOCK {
        return err(format!(
            "verity covers {} blocks of {BLOCK} bytes, the artifact has {} bytes",
            v.data_blocks, a.size
        ));
    }
    check_int("verity hash_offset", v.hash_offset)?;
    if v.hash_offset < a.size || v.hash_offset % BLOCK != 0 {
        return err(format!(
            "verity hash_offset {} is not a block boundary at or after the data's end",
            v.hash_offset
        ));
    }
    Ok(())
}

fn check_int(what: &str, v: u64) -> Result<(), ManifestError> {
    if v > MAX_INTEGER {
        return err(format!("{what} {v} exceeds {MAX_INTEGER}"));
    }
    Ok(())
}

/// Text fields: 1..=128 bytes of printable ASCII other than `"` and `\`, so
/// the canonical form never needs an escape.
fn check_text(what: &str, s: &str) -> Result<(), ManifestError> {
    if s.is_empty() || s.len() > MAX_TEXT_LEN {
        return err(format!(
            "{what} must be 1 to {MAX_TEXT_LEN} bytes long, is {}",
            s.len()
        ));
    }
    if let Some(c) = s.bytes().find(|c| !is_text_byte(*c)) {
        return err(format!(
            "{what} {s:?} contains {:?}; allowed: printable ASCII except '\"' and '\\'",
            char::from(c)
        ));
    }
    Ok(())
}

/// Whether `c` may appear in a manifest string.
pub fn is_text_byte(c: u8) -> bool {
    (0x20..=0x7e).contains(&c) && c != b'"' && c != b'\\'
}

/// Artifact names: 1..=32 of `a-z 0-9 _ -`, starting with a letter or digit.
fn check_artifact_name(name: &str) -> Result<(), ManifestError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ARTIFACT_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
        && name
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        return err(format!(
            "artifact name {name:?} must be 1 to {MAX_ARTIFACT_NAME_LEN} of a-z, 0-9, '_', '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            artifacts: vec![ArtifactEntry {
                chunk_size: 1 << 20,
                chunks: vec![
                    ChunkEntry {
                        compressed_size: 1000,
                        sha256: Digest([1; 32]),
                    },
                    ChunkEntry {
                        compressed_size: 0,
                        sha256: Digest::of_zeros(5),
                    },
                ],
                name: "rootfs".into(),
                sha256: Digest([2; 32]),
                size: (1 << 20) + 5,
                verity: None,
            }],
            compatible: "slate-qemu-x86_64".into(),
            created: 1_700_000_000,
            format: 1,
            name: "minimal".into(),
            security_version: 3,
            version: "1.0.0".into(),
        }
    }

    fn with_verity() -> Manifest {
        let mut m = sample();
        let a = &mut m.artifacts[0];
        a.size = 1 << 20;
        a.chunks.truncate(1);
        a.verity = Some(ArtifactVerity {
            data_blocks: 256,
            hash_offset: 1 << 20,
            root_hash_a: Digest([3; 32]),
            root_hash_b: Digest([4; 32]),
            salt: Digest([5; 32]),
        });
        m
    }

    #[test]
    fn verity_parameters_are_signed_canonically_and_checked() {
        let m = with_verity();
        let b = m.to_canonical_json();
        let s = std::str::from_utf8(&b).unwrap();
        assert!(
            s.contains(&format!(
                "\"size\":1048576,\"verity\":{{\"data_blocks\":256,\"hash_offset\":1048576,\"root_hash_a\":\"{}\",\"root_hash_b\":\"{}\",\"salt\":\"{}\"}}}}]",
                "03".repeat(32),
                "04".repeat(32),
                "05".repeat(32)
            )),
            "{s}"
        );
        assert_eq!(Manifest::parse(&b).unwrap(), m);
        for (bad, why) in [
            (
                s.replace("\"data_blocks\":256", "\"data_blocks\":255"),
                "covers 255 blocks",
            ),
            (
                s.replace("\"hash_offset\":1048576", "\"hash_offset\":4096"),
                "hash_offset 4096",
            ),
            (
                s.replace("\"hash_offset\":1048576", "\"hash_offset\":1048577"),
                "hash_offset 1048577",
            ),
            (
                s.replace("\"name\":\"rootfs\"", "\"name\":\"kernel\""),
                "only the rootfs",
            ),
            (
                s.replace(",\"salt\"", ",\"extra\":1,\"salt\""),
                "unknown field",
            ),
        ] {
            let e = Manifest::parse(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        // An explicit null is not the canonical form (the field is left out).
        let null = String::from_utf8(sample().to_canonical_json())
            .unwrap()
            .replacen("\"size\":1048581", "\"size\":1048581,\"verity\":null", 1);
        assert!(Manifest::parse(null.as_bytes()).is_err());
    }

    #[test]
    fn canonical_json_round_trips_and_is_exact() {
        let m = sample();
        let b = m.to_canonical_json();
        let s = std::str::from_utf8(&b).unwrap();
        assert!(s.starts_with("{\"artifacts\":[{\"chunk_size\":1048576,\"chunks\":[{\"compressed_size\":1000,\"sha256\":\"0101"), "{s}");
        assert!(
            s.ends_with(",\"security_version\":3,\"version\":\"1.0.0\"}"),
            "{s}"
        );
        assert!(!s.contains(' ') && !s.contains('\n'));
        assert_eq!(Manifest::parse(&b).unwrap(), m);
        // serde_json's own reading agrees on every value.
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["artifacts"][0]["size"], (1u64 << 20) + 5);
        assert_eq!(v["compatible"], "slate-qemu-x86_64");
    }

    #[test]
    fn non_canonical_forms_are_refused() {
        let b = String::from_utf8(sample().to_canonical_json()).unwrap();
        for bad in [
            b.replacen("{\"artifacts\"", "{ \"artifacts\"", 1),
            format!("{b}\n"),
            b.replacen("\"created\":1700000000", "\"created\":1700000000.0", 1),
            b.replacen("\"created\":1700000000", "\"created\":1.7e9", 1),
            b.replacen("minimal", "minim\\u0061l", 1),
            b.replacen("\"security_version\":3", "\"security_version\":03", 1),
            // uppercase hex
            b.replacen("01010101", "0101010A", 1),
            // keys out of order
            b.replacen(
                "\"compatible\":\"slate-qemu-x86_64\",\"created\":1700000000",
                "\"created\":1700000000,\"compatible\":\"slate-qemu-x86_64\"",
                1,
            ),
            b.replacen("\"format\":1", "\"format\":1,\"extra\":1", 1),
            b.replacen("\"format\":1", "\"format\":1,\"format\":1", 1),
        ] {
            assert!(Manifest::parse(bad.as_bytes()).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn semantic_limits() {
        let check = |f: &dyn Fn(&mut Manifest), want: &str| {
            let mut m = sample();
            f(&mut m);
            let e = m.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        };
        check(&|m| m.artifacts.clear(), "no artifacts");
        check(&|m| m.artifacts[0].size = 0, "empty");
        check(&|m| m.artifacts[0].size = 1 << 50, "chunks listed");
        check(&|m| m.artifacts[0].chunk_size = 1 << 30, "power of two");
        check(&|m| m.artifacts[0].chunk_size = 3 << 16, "power of two");
        check(
            &|m| m.artifacts[0].chunks[0].compressed_size = 1 << 40,
            "compressed bytes",
        );
        check(&|m| m.security_version = u64::MAX, "exceeds");
        check(&|m| m.name = "a\"b".into(), "contains");
        check(&|m| m.version = String::new(), "1 to 128");
        check(&|m| m.artifacts[0].name = "Root".into(), "artifact name");
        check(&|m| m.format = 2, "format 2");
        check(
            &|m| {
                let a = m.artifacts[0].clone();
                m.artifacts.push(a);
            },
            "twice",
        );
    }

    #[test]
    fn deserialises_from_owned_values_too() {
        let v: serde_json::Value = serde_json::from_slice(&sample().to_canonical_json()).unwrap();
        let m: Manifest = serde_json::from_value(v).unwrap();
        assert_eq!(m, sample());
    }

    #[test]
    fn zero_digest_matches_direct_hash() {
        assert_eq!(Digest::of_zeros(100_000), Digest::of(&vec![0u8; 100_000]));
        assert_eq!(Digest::of_zeros(0), Digest::of(b""));
        assert_eq!(
            Digest::of(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
