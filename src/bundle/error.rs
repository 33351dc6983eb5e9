//! Why a bundle was refused. One enum keeps I/O, unsupported input,
//! corruption and trust failures apart, so a caller such as the device agent
//! can branch on the kind and print a one-line reason.

use super::signing::KeyId;
use std::fmt;
use std::io;

/// Everything that can go wrong reading a bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Reading the bundle failed (not a format problem).
    #[error("{0}")]
    Io(#[source] io::Error),
    /// The destination of a verified artifact refused a write or seek.
    #[error("writing artifact {artifact}: {source}")]
    Sink {
        /// The artifact being written.
        artifact: String,
        /// The writer's error.
        #[source]
        source: io::Error,
    },
    /// The data does not start with the bundle magic.
    #[error("not a slate bundle (bad magic)")]
    NotABundle,
    /// A format version or feature this reader does not implement.
    #[error("unsupported {0}")]
    Unsupported(String),
    /// The bundle is damaged or malformed.
    #[error("corrupt bundle: {0}")]
    Corrupt(CorruptKind),
    /// The bundle carries no signature at all.
    #[error("the bundle has no signature")]
    NoSignature,
    /// A signature by a trusted key (or, unverified, by its embedded key)
    /// does not verify over the manifest bytes.
    #[error("signature by key {key_id} does not verify: the manifest or signature was altered")]
    BadSignature {
        /// The signer's key id.
        key_id: KeyId,
    },
    /// Fewer distinct trusted keys signed than the threshold requires.
    #[error("{}", untrusted_message(*.valid, *.threshold, .signers))]
    Untrusted {
        /// Distinct trusted keys whose signature verified.
        valid: usize,
        /// How many were required.
        threshold: usize,
        /// Key ids of every signature record, in bundle order.
        signers: Vec<KeyId>,
    },
    /// An HTTP range request for part of the bundle failed.
    #[error("{0}")]
    Fetch(crate::io::ranges::RangeError),
    /// An earlier error left the reader at an unknown position in the stream.
    #[error("the bundle reader stopped at an earlier error")]
    Aborted,
}

fn untrusted_message(valid: usize, threshold: usize, signers: &[KeyId]) -> String {
    let ids: Vec<String> = signers.iter().map(|k| k.short()).collect();
    if valid == 0 {
        format!("not signed by a trusted key (signed by {})", ids.join(", "))
    } else {
        format!(
            "signed by {valid} distinct trusted key(s), {threshold} required (signers: {})",
            ids.join(", ")
        )
    }
}

impl BundleError {
    /// A stable machine-readable name of the error class, for `--json`.
    pub fn code(&self) -> &'static str {
        match self {
            BundleError::Io(_) => "io",
            BundleError::Sink { .. } => "sink",
            BundleError::Fetch(_) => "fetch",
            BundleError::NotABundle => "not_a_bundle",
            BundleError::Unsupported(_) => "unsupported",
            BundleError::Corrupt(_) => "corrupt",
            BundleError::NoSignature => "no_signature",
            BundleError::BadSignature { .. } => "bad_signature",
            BundleError::Untrusted { .. } => "untrusted",
            BundleError::Aborted => "aborted",
        }
    }

    /// The corruption kind, if this is [`BundleError::Corrupt`].
    pub fn corrupt_kind(&self) -> Option<&CorruptKind> {
        match self {
            BundleError::Corrupt(k) => Some(k),
            _ => None,
        }
    }
}

/// The part of a bundle where something was found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The fixed header.
    Header,
    /// The manifest.
    Manifest,
    /// The signature records.
    Signatures,
    /// The chunk payload.
    Payload,
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Region::Header => "header",
            Region::Manifest => "manifest",
            Region::Signatures => "signatures",
            Region::Payload => "payload",
        })
    }
}

/// How a bundle is damaged. Chunk offsets are within the artifact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptKind {
    /// The bundle has no bytes at all.
    #[error("the bundle is empty (0 bytes)")]
    Empty,
    /// The data ends early.
    #[error("truncated in the {region} at byte {offset} (expected {expected} bytes in all)")]
    Truncated {
        /// The region the data ended in.
        region: Region,
        /// How many bytes there were.
        offset: u64,
        /// How long the bundle should be, as far as known.
        expected: u64,
    },
    /// Bytes follow the end of the payload.
    #[error("unexpected data after the end of the bundle at byte {offset}")]
    TrailingData {
        /// The bundle length per its header.
        offset: u64,
    },
    /// The header checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// A reserved header field is not zero.
    #[error("reserved header field is not zero")]
    ReservedField,
    /// A length or count exceeds its limit.
    #[error("{what} {value} exceeds the limit of {max}")]
    Limit {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        max: u64,
    },
    /// The signed manifest is malformed or inconsistent.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// The header's payload length disagrees with the manifest.
    #[error("header says the payload is {header} bytes, the manifest adds up to {manifest}")]
    PayloadLength {
        /// From the header.
        header: u64,
        /// Sum of the manifest's compressed sizes.
        manifest: u64,
    },
    /// A chunk is not a valid zstd frame.
    #[error("chunk {index} of {artifact} (offset {offset}) does not decompress: {reason}")]
    ChunkDecompress {
        /// Artifact name.
        artifact: String,
        /// Chunk index.
        index: u64,
        /// Offset of the chunk in the artifact.
        offset: u64,
        /// zstd's message.
        reason: String,
    },
    /// A chunk decompresses to the wrong length.
    #[error(
        "chunk {index} of {artifact} (offset {offset}) decompresses to {found} bytes, expected {expected}"
    )]
    ChunkLength {
        /// Artifact name.
        artifact: String,
        /// Chunk index.
        index: u64,
        /// Offset of the chunk in the artifact.
        offset: u64,
        /// Manifest length.
        expected: u64,
        /// Decompressed length.
        found: u64,
    },
    /// A chunk's content does not match its digest.
    #[error("chunk {index} of {artifact} (offset {offset}) does not match its sha256")]
    ChunkDigest {
        /// Artifact name.
        artifact: String,
        /// Chunk index.
        index: u64,
        /// Offset of the chunk in the artifact.
        offset: u64,
    },
    /// The artifact as a whole does not match its digest.
    #[error("artifact {artifact} does not match its sha256")]
    ArtifactDigest {
        /// Artifact name.
        artifact: String,
    },
}

impl CorruptKind {
    /// A stable machine-readable name of the kind, for `--json`.
    pub fn code(&self) -> &'static str {
        match self {
            CorruptKind::Empty => "empty",
            CorruptKind::Truncated { .. } => "truncated",
            CorruptKind::TrailingData { .. } => "trailing_data",
            CorruptKind::HeaderChecksum => "header_checksum",
            CorruptKind::ReservedField => "reserved_field",
            CorruptKind::Limit { .. } => "limit",
            CorruptKind::Manifest(_) => "manifest",
            CorruptKind::PayloadLength { .. } => "payload_length",
            CorruptKind::ChunkDecompress { .. } => "chunk_decompress",
            CorruptKind::ChunkLength { .. } => "chunk_length",
            CorruptKind::ChunkDigest { .. } => "chunk_digest",
            CorruptKind::ArtifactDigest { .. } => "artifact_digest",
        }
    }
}

impl From<CorruptKind> for BundleError {
    fn from(k: CorruptKind) -> Self {
        BundleError::Corrupt(k)
    }
}
