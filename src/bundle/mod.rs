//! Signed update bundles (format: docs/bundle-format.md).
//!
//! A bundle is a 40-byte header, a manifest in canonical JSON, Ed25519
//! signatures over the exact manifest bytes, and a payload of independently
//! zstd-compressed chunks. The manifest binds every byte: each artifact's size
//! and SHA-256, and each chunk's SHA-256 and compressed size. A reader checks
//! the signatures before it parses the manifest and checks each chunk before
//! it hands the chunk's bytes on, so an installer never writes unverified data.
//!
//! - [`format`]: byte layout, header, limits.
//! - [`manifest`]: the manifest types and canonical JSON.
//! - [`signing`]: keys (openssl-compatible PEM), key ids, trust thresholds.
//! - [`writer`]: making a bundle from a build directory.
//! - [`reader`]: verifying and streaming a bundle from any [`std::io::Read`].

pub mod chunks;
pub mod delta;
pub mod error;
pub mod format;
pub mod manifest;
mod pipeline;
pub mod reader;
pub mod signing;
pub mod writer;

pub use chunks::{ChunkSink, ChunkSource, DeviceSink, FileSink, FnSink};
pub use error::{BundleError, CorruptKind, Region};
pub use format::{Header, SignatureRecord};
pub use manifest::{ArtifactEntry, ChunkEntry, Digest, Manifest};
pub use reader::{
    ArtifactHeader, BundleHead, BundleReader, ChunkData, Holes, VerifiedChunk, open,
    read_head_unverified,
};
pub use signing::{KeyError, KeyId, PublicKey, SecretKey, SignatureStatus, TrustedKeys};
pub use writer::{
    ArtifactInput, BundleMeta, WriteError, WriteOptions, WrittenBundle, from_build_dir,
    write_bundle,
};
