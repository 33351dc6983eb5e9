//! The byte layout of a bundle (docs/bundle-format.md): the fixed header, the
//! signature records and every limit a reader enforces before it allocates.
//!
//! ```text
//! offset                      length          region
//! 0                           40              header
//! 40                          manifest_len    manifest (canonical JSON)
//! 40 + manifest_len           96 * count      signature records
//! 40 + manifest_len + 96*n    payload_len     payload: the data chunks, in manifest order
//! ```

use super::error::{BundleError, CorruptKind, Region};

/// The first eight bytes of every bundle. The high-bit byte and the CR LF
/// catch transfers that mangle binary files as text (the PNG trick).
pub const MAGIC: [u8; 8] = *b"\x89SLATE\r\n";

/// The bundle format this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Length of the version-1 header.
pub const HEADER_LEN: usize = 40;

/// One signature record: the 32-byte Ed25519 public key, then the 64-byte signature.
pub const SIGNATURE_RECORD_LEN: usize = 96;

/// Largest manifest accepted (16 MiB): enough for [`MAX_CHUNKS`] chunk entries.
pub const MAX_MANIFEST_LEN: u32 = 16 << 20;

/// Most signature records in one bundle.
pub const MAX_SIGNATURES: u32 = 16;

/// Most artifacts in one bundle.
pub const MAX_ARTIFACTS: usize = 16;

/// Most chunks over all artifacts of a bundle (8 GiB at the default chunk
/// size, 2 TiB at [`MAX_CHUNK_SIZE`]).
pub const MAX_CHUNKS: u64 = 1 << 17;

/// Smallest chunk size (64 KiB); chunk sizes are powers of two.
pub const MIN_CHUNK_SIZE: u64 = 1 << 16;

/// Largest chunk size (16 MiB): a reader's buffers are a small multiple of it.
pub const MAX_CHUNK_SIZE: u64 = 1 << 24;

/// The chunk size `slate bundle` uses (64 KiB) for artifacts that fit in
/// [`MAX_CHUNKS`] chunks of it; see [`chunk_size_for`] and
/// docs/bundle-format.md for why.
pub const DEFAULT_CHUNK_SIZE: u64 = MIN_CHUNK_SIZE;

/// The chunk size for artifacts of `sizes` bytes: [`DEFAULT_CHUNK_SIZE`], or
/// the smallest larger power of two at which they fit in [`MAX_CHUNKS`]
/// chunks; `None` when not even [`MAX_CHUNK_SIZE`] is enough.
pub fn chunk_size_for(sizes: impl IntoIterator<Item = u64> + Clone) -> Option<u64> {
    let mut cs = DEFAULT_CHUNK_SIZE;
    while cs <= MAX_CHUNK_SIZE {
        let chunks = sizes
            .clone()
            .into_iter()
            .fold(0u64, |n, s| n.saturating_add(s.div_ceil(cs)));
        if chunks <= MAX_CHUNKS {
            return Some(cs);
        }
        cs *= 2;
    }
    None
}

/// Longest text field (name, version, compatible), in bytes.
pub const MAX_TEXT_LEN: usize = 128;

/// Longest artifact name, in bytes.
pub const MAX_ARTIFACT_NAME_LEN: usize = 32;

/// Largest integer in a manifest (2^53 - 1): every JSON reader represents it exactly.
pub const MAX_INTEGER: u64 = (1 << 53) - 1;

/// Largest compressed size a chunk of `chunk_len` bytes may claim. zstd's own
/// worst case is below this, so an honest writer never reaches it.
pub fn max_compressed_len(chunk_len: u64) -> u64 {
    chunk_len
        .saturating_add(chunk_len / 128)
        .saturating_add(1024)
}

/// The version-1 header, decoded.
///
/// ```text
/// 0   8  magic             MAGIC
/// 8   4  format_version    u32 LE, 1
/// 12  4  flags             u32 LE, 0 (any set bit is a feature this reader lacks)
/// 16  4  manifest_len      u32 LE, 1..=MAX_MANIFEST_LEN
/// 20  4  signature_count   u32 LE, 1..=MAX_SIGNATURES
/// 24  8  payload_len       u64 LE, sum of the chunks' compressed sizes
/// 32  4  reserved          0
/// 36  4  header_crc32c     CRC-32C (Castagnoli) of bytes 0..36, u32 LE
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the canonical JSON manifest.
    pub manifest_len: u32,
    /// Number of signature records after the manifest.
    pub signature_count: u32,
    /// Length of the payload after the signature records.
    pub payload_len: u64,
}

impl Header {
    /// Serialises the header, with its checksum.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // flags (12..16) and reserved (32..36) stay zero.
        b[16..20].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.signature_count.to_le_bytes());
        b[24..32].copy_from_slice(&self.payload_len.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header, in the order the format document gives:
    /// magic, version, checksum, flags, reserved bytes, then each length
    /// against its limit. Nothing is allocated here.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, BundleError> {
        let (magic, rest) = b.split_at(8);
        if magic != MAGIC {
            return Err(BundleError::NotABundle);
        }
        let version = le32(rest, 0);
        if version != FORMAT_VERSION {
            return Err(BundleError::Unsupported(format!(
                "bundle format version {version} (this slate reads version {FORMAT_VERSION})"
            )));
        }
        let stored_crc = le32(b, 36);
        if crc32c::crc32c(&b[0..36]) != stored_crc {
            return Err(BundleError::Corrupt(CorruptKind::HeaderChecksum));
        }
        let flags = le32(b, 12);
        if flags != 0 {
            return Err(BundleError::Unsupported(format!(
                "bundle header flags {flags:#x} (this slate knows none)"
            )));
        }
        if le32(b, 32) != 0 {
            return Err(BundleError::Corrupt(CorruptKind::ReservedField));
        }
        let manifest_len = le32(b, 16);
        if manifest_len == 0 {
            return Err(BundleError::Corrupt(CorruptKind::Manifest(
                "the header gives the manifest a length of 0".into(),
            )));
        }
        check_limit(
            "manifest length",
            manifest_len.into(),
            MAX_MANIFEST_LEN.into(),
        )?;
        let signature_count = le32(b, 20);
        if signature_count == 0 {
            return Err(BundleError::NoSignature);
        }
        check_limit(
            "signature count",
            signature_count.into(),
            MAX_SIGNATURES.into(),
        )?;
        let payload_len = u64::from_le_bytes(b[24..32].try_into().unwrap_or([0xff; 8]));
        // The manifest bounds the real payload far lower; this only keeps the
        // arithmetic below from overflowing before the manifest is checked.
        check_limit("payload length", payload_len, MAX_INTEGER)?;
        Ok(Header {
            manifest_len,
            signature_count,
            payload_len,
        })
    }

    /// Offset of the first signature record.
    pub fn signatures_offset(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.manifest_len)
    }

    /// Offset of the payload.
    pub fn payload_offset(&self) -> u64 {
        self.signatures_offset() + u64::from(self.signature_count) * SIGNATURE_RECORD_LEN as u64
    }

    /// Length of the whole bundle.
    pub fn bundle_len(&self) -> u64 {
        self.payload_offset() + self.payload_len
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

/// Refuses `value` above `max`, naming the field.
pub(crate) fn check_limit(what: &'static str, value: u64, max: u64) -> Result<(), BundleError> {
    if value > max {
        return Err(BundleError::Corrupt(CorruptKind::Limit {
            what,
            value,
            max,
        }));
    }
    Ok(())
}

/// One signature record: an Ed25519 public key and its signature over the
/// manifest bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureRecord {
    /// The signer's raw 32-byte public key (RFC 8032 encoding).
    pub public_key: [u8; 32],
    /// The 64-byte signature (R || S).
    pub signature: [u8; 64],
}

impl SignatureRecord {
    /// Serialises the record.
    pub fn encode(&self) -> [u8; SIGNATURE_RECORD_LEN] {
        let mut b = [0u8; SIGNATURE_RECORD_LEN];
        b[..32].copy_from_slice(&self.public_key);
        b[32..].copy_from_slice(&self.signature);
        b
    }

    /// Splits a record into its fields.
    pub fn decode(b: &[u8; SIGNATURE_RECORD_LEN]) -> SignatureRecord {
        let mut public_key = [0u8; 32];
        let mut signature = [0u8; 64];
        public_key.copy_from_slice(&b[..32]);
        signature.copy_from_slice(&b[32..]);
        SignatureRecord {
            public_key,
            signature,
        }
    }
}

/// The region a truncated bundle ended in, for messages.
pub(crate) fn region_at(header: &Header, offset: u64) -> Region {
    if offset < HEADER_LEN as u64 {
        Region::Header
    } else if offset < header.signatures_offset() {
        Region::Manifest
    } else if offset < header.payload_offset() {
        Region::Signatures
    } else {
        Region::Payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            manifest_len: 1234,
            signature_count: 2,
            payload_len: 5 << 32,
        }
    }

    #[test]
    fn chunk_size_grows_only_past_the_chunk_limit() {
        const GIB: u64 = 1 << 30;
        assert_eq!(chunk_size_for([100 << 20, 8 << 20]), Some(64 << 10));
        // 8 GiB in all is exactly the limit at 64 KiB; one byte more doubles it.
        assert_eq!(
            chunk_size_for([8 * GIB - (1 << 20), 1 << 20]),
            Some(64 << 10)
        );
        assert_eq!(chunk_size_for([8 * GIB, 1]), Some(128 << 10));
        assert_eq!(chunk_size_for([100 * GIB]), Some(1 << 20));
        assert_eq!(chunk_size_for([2048 * GIB]), Some(16 << 20));
        assert_eq!(chunk_size_for([2048 * GIB + 1]), None);
        assert_eq!(chunk_size_for([u64::MAX, u64::MAX]), None);
    }

    #[test]
    fn header_round_trips() {
        let h = sample();
        let b = h.encode();
        assert_eq!(&b[0..8], b"\x89SLATE\r\n");
        assert_eq!(Header::decode(&b).unwrap(), h);
        assert_eq!(h.payload_offset(), 40 + 1234 + 192);
        assert_eq!(h.bundle_len(), 40 + 1234 + 192 + (5 << 32));
    }

    #[test]
    fn every_header_bit_flip_is_refused() {
        let b = sample().encode();
        for bit in 0..HEADER_LEN * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&c).is_err(), "bit {bit} went unnoticed");
        }
    }

    fn with_crc(mut b: [u8; HEADER_LEN]) -> [u8; HEADER_LEN] {
        let crc = crc32c::crc32c(&b[0..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn limits_are_checked_before_anything_is_read() {
        let mut b = sample().encode();
        b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = Header::decode(&with_crc(b)).unwrap_err();
        assert!(
            matches!(
                e,
                BundleError::Corrupt(CorruptKind::Limit {
                    what: "manifest length",
                    ..
                })
            ),
            "{e}"
        );
        let mut b = sample().encode();
        b[20..24].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            Header::decode(&with_crc(b)).unwrap_err(),
            BundleError::NoSignature
        ));
        let mut b = sample().encode();
        b[20..24].copy_from_slice(&17u32.to_le_bytes());
        assert!(matches!(
            Header::decode(&with_crc(b)).unwrap_err(),
            BundleError::Corrupt(CorruptKind::Limit { .. })
        ));
        let mut b = sample().encode();
        b[8] = 2;
        let e = Header::decode(&b).unwrap_err();
        assert!(matches!(e, BundleError::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("version 2"), "{e}");
        let mut b = sample().encode();
        b[12] = 1;
        assert!(matches!(
            Header::decode(&with_crc(b)).unwrap_err(),
            BundleError::Unsupported(_)
        ));
    }
}
