//! What an installer reads verified artifacts through, whatever the bundle
//! arrives by: a [`super::BundleReader`] streaming the whole bundle, or a
//! [`super::delta::DeltaReader`] assembling each artifact from local chunks
//! and HTTP range requests. Both hand over every chunk only after checking it
//! against its signed digest, in artifact order.

use super::error::BundleError;
use super::manifest::Manifest;
use super::reader::{ArtifactHeader, ChunkData, VerifiedChunk};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Where verified chunks go, in order from offset 0.
pub trait ChunkSink {
    /// Takes the next chunk of the artifact.
    fn put(&mut self, chunk: VerifiedChunk<'_>) -> io::Result<()>;

    /// Reads back `buf.len()` bytes this sink already took, from `offset`
    /// (an earlier chunk a later one repeats). `Ok(false)` when the sink
    /// cannot; the reader then fetches the chunk instead.
    fn read_written(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        let _ = (offset, buf);
        Ok(false)
    }
}

/// A bundle's artifacts, verified chunk by chunk.
pub trait ChunkSource {
    /// The signed manifest.
    fn manifest(&self) -> &Manifest;

    /// Moves to the next artifact, or `None` after the last.
    fn next_artifact(&mut self) -> Result<Option<ArtifactHeader>, BundleError>;

    /// Hands the current artifact's chunks to `sink`, each verified.
    fn read_into(&mut self, sink: &mut dyn ChunkSink) -> Result<(), BundleError>;

    /// Verifies the current artifact without keeping it (a source that does
    /// not fetch artifacts nobody reads may skip it).
    fn skip_artifact(&mut self) -> Result<(), BundleError>;

    /// For a delta download, what it fetched and reused so far.
    fn delta_counts(&self) -> Option<super::delta::Counts> {
        None
    }
}

/// A sink writing at increasing offsets of a file or block device with
/// positional writes; holes are written as zeros, so whatever the file
/// held before is replaced. It can read back what it wrote.
#[derive(Debug)]
pub struct FileSink<'a> {
    file: &'a File,
    pos: u64,
    sparse: bool,
}

impl<'a> FileSink<'a> {
    /// Writes from offset 0 of `file`.
    pub fn new(file: &'a File) -> Self {
        Self {
            file,
            pos: 0,
            sparse: false,
        }
    }

    /// Writes from offset 0 of `file`, which is empty: holes are skipped
    /// (they read as zeros) and the file is extended to its full length.
    pub fn sparse(file: &'a File) -> Self {
        Self {
            sparse: true,
            ..Self::new(file)
        }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl ChunkSink for FileSink<'_> {
    fn put(&mut self, chunk: VerifiedChunk<'_>) -> io::Result<()> {
        match chunk.data {
            ChunkData::Bytes(b) => {
                self.file.write_all_at(b, self.pos)?;
                self.pos += b.len() as u64;
            }
            ChunkData::Zeros(n) if self.sparse => {
                self.pos += n;
                if chunk.last {
                    self.file.set_len(self.pos)?;
                }
            }
            ChunkData::Zeros(n) => {
                for z in crate::io::sparse::zero_slices(n) {
                    self.file.write_all_at(z, self.pos)?;
                    self.pos += z.len() as u64;
                }
            }
        }
        Ok(())
    }

    fn read_written(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        if offset + buf.len() as u64 > self.pos {
            return Ok(false);
        }
        self.file.read_exact_at(buf, offset)?;
        Ok(true)
    }
}

/// A sink for a [`crate::io::blockdev::DeviceWriter`] (a slot).
#[derive(Debug)]
pub struct DeviceSink<'w, 'f> {
    /// The writer.
    pub writer: &'w mut crate::io::blockdev::DeviceWriter<'f>,
}

impl ChunkSink for DeviceSink<'_, '_> {
    fn put(&mut self, chunk: VerifiedChunk<'_>) -> io::Result<()> {
        match chunk.data {
            ChunkData::Bytes(b) => self.writer.write(b),
            ChunkData::Zeros(n) => self.writer.write_zeros(n),
        }
    }

    fn read_written(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        self.writer.read_at(offset, buf)
    }
}

/// A sink made of a closure (no read-back).
pub struct FnSink<F>(pub F);

impl<F: FnMut(VerifiedChunk<'_>) -> io::Result<()>> ChunkSink for FnSink<F> {
    fn put(&mut self, chunk: VerifiedChunk<'_>) -> io::Result<()> {
        (self.0)(chunk)
    }
}

impl<R: io::Read> ChunkSource for super::BundleReader<R> {
    fn manifest(&self) -> &Manifest {
        super::BundleReader::manifest(self)
    }

    fn next_artifact(&mut self) -> Result<Option<ArtifactHeader>, BundleError> {
        super::BundleReader::next_artifact(self)
    }

    fn read_into(&mut self, sink: &mut dyn ChunkSink) -> Result<(), BundleError> {
        self.read_chunks(|c| sink.put(c))
    }

    fn skip_artifact(&mut self) -> Result<(), BundleError> {
        self.verify_artifact(|_| {})
    }
}
