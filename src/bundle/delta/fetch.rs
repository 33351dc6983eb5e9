//! Executing a [`super::DeltaPlan`] against an http(s) URL: the signed head
//! first (a probe range, then the rest of the head if it is longer), then,
//! artifact by artifact, local chunks re-hashed and the rest fetched with the
//! plan's range requests on one kept-alive connection. Every chunk is checked
//! against its signed digest before a sink sees it.

use super::{ArtifactPlan, ChunkPlan, Counts, DeltaPlan, SeedIndex, WRITTEN, plan};
use crate::bundle::chunks::{ChunkSink, ChunkSource};
use crate::bundle::error::{BundleError, CorruptKind};
use crate::bundle::format::{HEADER_LEN, Header};
use crate::bundle::manifest::{ArtifactEntry, Digest, Manifest, ZeroDigests};
use crate::bundle::reader::{
    ArtifactHeader, BundleHead, BundleReader, ChunkData, Fault, VerifiedChunk, append_chunk,
};
use crate::bundle::signing::TrustedKeys;
use crate::io::ranges::{RangeBody, RangeClient, RangeError};
use crate::io::source::HttpTimeouts;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// What fetching a bundle's head found.
pub enum Remote {
    /// The server answers range requests: the verified head, and the client
    /// to fetch the rest with.
    Ranges(RemoteHead),
    /// The server ignores `Range`: its `200` reply, whose body is the whole
    /// bundle, already opened and verified up to the payload.
    Whole(BundleReader<Box<dyn Read + Send>>),
}

/// A bundle's verified head, fetched with range requests.
pub struct RemoteHead {
    client: RangeClient,
    head: BundleHead,
}

impl RemoteHead {
    /// The verified head.
    pub fn head(&self) -> &BundleHead {
        &self.head
    }

    /// Plans the download of the artifacts `select` picks, given `seeds`.
    pub fn plan(&self, seeds: &SeedIndex, select: &dyn Fn(&str) -> bool) -> DeltaPlan {
        plan(&self.head.header, &self.head.manifest, seeds, select)
    }

    /// Starts fetching with `plan` (from [`Self::plan`] with `seeds`).
    pub fn into_reader(self, seeds: SeedIndex, plan: DeltaPlan) -> DeltaReader {
        DeltaReader {
            client: self.client,
            head: self.head,
            seeds,
            files: Vec::new(),
            plan,
            next: 0,
            current: None,
            counts: Counts::default(),
            refetched: 0,
            dctx: None,
        }
    }
}

fn fetch_err(e: RangeError) -> BundleError {
    BundleError::Fetch(e)
}

/// Fetches and verifies the head of the bundle at `url` (signatures against
/// `keys`). A server without range support gives [`Remote::Whole`].
pub fn fetch_head(
    url: &str,
    keys: &TrustedKeys,
    timeouts: HttpTimeouts,
) -> Result<Remote, BundleError> {
    let mut client = RangeClient::new(url, timeouts);
    let mut probe = match client.get(0, super::PROBE_LEN, true) {
        Ok(b) => b,
        Err(RangeError::NotSupported { body, .. }) => {
            let body: Box<dyn Read + Send> = Box::new(body);
            return crate::bundle::open(body, keys).map(Remote::Whole);
        }
        Err(e) => return Err(fetch_err(e)),
    };
    let total = probe.range.total;
    let mut first = Vec::new();
    probe.read_to_end(&mut first).map_err(BundleError::Io)?;
    finish_body(probe)?;
    // How long the head is, from the header (a bad one is reported by open()).
    let header = header_of(&first);
    let head_len = header.as_ref().map_or(0, |h| h.payload_offset());
    if let (Some(t), Ok(h)) = (total, &header) {
        if t != h.bundle_len() {
            return Err(BundleError::Corrupt(CorruptKind::Manifest(format!(
                "the server's copy is {t} bytes, its header says {}",
                h.bundle_len()
            ))));
        }
    }
    let got = first.len() as u64;
    let rest: Box<dyn Read> = if head_len > got {
        Box::new(client.get(got, head_len - got, false).map_err(fetch_err)?)
    } else {
        Box::new(io::empty())
    };
    let mut src = io::Cursor::new(first).chain(rest);
    let head = crate::bundle::open(&mut src, keys)?.head().clone();
    // Drain what is left of the second request so the connection is reused.
    io::copy(&mut src, &mut io::sink()).map_err(BundleError::Io)?;
    Ok(Remote::Ranges(RemoteHead { client, head }))
}

fn header_of(bytes: &[u8]) -> Result<Header, BundleError> {
    match bytes.get(..HEADER_LEN) {
        Some(h) => Header::decode(h.try_into().expect("40 bytes")),
        None => Err(BundleError::NotABundle),
    }
}

/// Checks that a range body ended where its headers said (so the
/// connection goes back to the pool).
fn finish_body(mut b: RangeBody) -> Result<(), BundleError> {
    io::copy(&mut b, &mut io::sink()).map_err(BundleError::Io)?;
    Ok(())
}

/// An open range body, positioned at a chunk of request `request`.
struct OpenRequest {
    request: usize,
    body: RangeBody,
}

/// The artifacts of a remote bundle, assembled from local chunks and ranges.
pub struct DeltaReader {
    client: RangeClient,
    head: BundleHead,
    seeds: SeedIndex,
    files: Vec<Option<File>>,
    plan: DeltaPlan,
    next: usize,
    current: Option<usize>,
    counts: Counts,
    refetched: u64,
    dctx: Option<zstd::bulk::Decompressor<'static>>,
}

impl std::fmt::Debug for DeltaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaReader")
            .field("url", &self.client.url())
            .field("next", &self.next)
            .finish()
    }
}

impl DeltaReader {
    /// The plan it follows.
    pub fn plan(&self) -> &DeltaPlan {
        &self.plan
    }

    /// The verified head.
    pub fn head(&self) -> &BundleHead {
        &self.head
    }

    /// What was done so far: bytes and requests as received from the
    /// server, reused and hole bytes as handed to sinks.
    pub fn counts(&self) -> Counts {
        Counts {
            downloaded: self.client.received(),
            requests: self.client.requests(),
            full: self.head.header.bundle_len(),
            ..self.counts.clone()
        }
    }

    /// Local chunks that no longer matched their digest and were fetched.
    pub fn refetched(&self) -> u64 {
        self.refetched
    }

    fn seed_file(&mut self, seed: usize) -> io::Result<&File> {
        if self.files.len() <= seed {
            self.files.resize_with(seed + 1, || None);
        }
        if self.files[seed].is_none() {
            self.files[seed] = Some(File::open(&self.seeds.seeds()[seed].path)?);
        }
        Ok(self.files[seed].as_ref().expect("opened"))
    }

    /// Reads a local chunk and checks it; `false` if it changed.
    fn read_local(
        &mut self,
        from: ChunkPlan,
        sink: &mut dyn ChunkSink,
        buf: &mut [u8],
        want: Digest,
    ) -> io::Result<bool> {
        let ok = match from {
            ChunkPlan::Seed { seed, offset } => {
                let f = self.seed_file(seed)?;
                match f.read_exact_at(buf, offset) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
                    Err(e) => return Err(e),
                }
            }
            ChunkPlan::Written { offset } => sink.read_written(offset, buf)?,
            _ => false,
        };
        Ok(ok && Digest::of(buf) == want)
    }

    fn decompress(
        &mut self,
        a: &ArtifactEntry,
        index: u64,
        compressed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), BundleError> {
        if self.dctx.is_none() {
            self.dctx = Some(zstd::bulk::Decompressor::new().map_err(BundleError::Io)?);
        }
        let d = self.dctx.as_mut().expect("created");
        let (len, want) = (a.chunk_len(index) as usize, a.chunks[index as usize].sha256);
        out.clear();
        append_chunk(d, compressed, len, want, out).map_err(|f| f.of_chunk(a, index))
    }

    fn assemble(&mut self, ap: &ArtifactPlan, sink: &mut dyn ChunkSink) -> Result<(), BundleError> {
        let a = self.head.manifest.artifacts[ap.index].clone();
        let sink_err = |source: io::Error| BundleError::Sink {
            artifact: a.name.clone(),
            source,
        };
        let count = a.chunks.len() as u64;
        let mut buf = vec![0u8; a.chunk_size as usize];
        let mut compressed = Vec::new();
        let mut out = Vec::new();
        let mut open: Option<OpenRequest> = None;
        let mut zero_digests = ZeroDigests::default();
        for (i, &cp) in ap.chunks.iter().enumerate() {
            let index = i as u64;
            let len = a.chunk_len(index);
            let entry = a.chunks[i];
            let chunk = |data| VerifiedChunk {
                index,
                offset: index * a.chunk_size,
                last: index + 1 == count,
                data,
            };
            match cp {
                ChunkPlan::Hole => {
                    if zero_digests.of(len) != entry.sha256 {
                        return Err(Fault::Digest.of_chunk(&a, index));
                    }
                    sink.put(chunk(ChunkData::Zeros(len))).map_err(sink_err)?;
                    self.counts.holes += len;
                }
                ChunkPlan::Seed { .. } | ChunkPlan::Written { .. } => {
                    let b = &mut buf[..len as usize];
                    if self
                        .read_local(cp, sink, b, entry.sha256)
                        .map_err(sink_err)?
                    {
                        sink.put(chunk(ChunkData::Bytes(b))).map_err(sink_err)?;
                        let label = match cp {
                            ChunkPlan::Seed { seed, .. } => self.seeds.seeds()[seed].label.clone(),
                            _ => WRITTEN.to_string(),
                        };
                        self.counts.reuse(&label, len);
                    } else {
                        // Changed since it was indexed: fetch this one alone.
                        self.refetched += 1;
                        let mut body = self
                            .client
                            .get(ap.chunk_offsets[i], entry.compressed_size, false)
                            .map_err(fetch_err)?;
                        compressed.resize(entry.compressed_size as usize, 0);
                        body.read_exact(&mut compressed).map_err(BundleError::Io)?;
                        finish_body(body)?;
                        self.decompress(&a, index, &compressed, &mut out)?;
                        sink.put(chunk(ChunkData::Bytes(&out))).map_err(sink_err)?;
                        self.counts.fetched += len;
                    }
                }
                ChunkPlan::Fetch { request } => {
                    if open.as_ref().is_none_or(|o| o.request != request) {
                        if let Some(o) = open.take() {
                            finish_body(o.body)?;
                        }
                        let r = ap.requests[request];
                        let body = self.client.get(r.start, r.len, false).map_err(fetch_err)?;
                        open = Some(OpenRequest { request, body });
                    }
                    let o = open.as_mut().expect("opened");
                    compressed.resize(entry.compressed_size as usize, 0);
                    o.body
                        .read_exact(&mut compressed)
                        .map_err(BundleError::Io)?;
                    self.decompress(&a, index, &compressed, &mut out)?;
                    sink.put(chunk(ChunkData::Bytes(&out))).map_err(sink_err)?;
                    self.counts.fetched += len;
                }
            }
        }
        if let Some(o) = open.take() {
            finish_body(o.body)?;
        }
        Ok(())
    }
}

impl ChunkSource for DeltaReader {
    fn manifest(&self) -> &Manifest {
        &self.head.manifest
    }

    fn next_artifact(&mut self) -> Result<Option<ArtifactHeader>, BundleError> {
        let Some(a) = self.head.manifest.artifacts.get(self.next) else {
            self.current = None;
            return Ok(None);
        };
        let index = self.next;
        self.next += 1;
        self.current = Some(index);
        Ok(Some(ArtifactHeader::of(index, a)))
    }

    fn read_into(&mut self, sink: &mut dyn ChunkSink) -> Result<(), BundleError> {
        let index = self.current.take().ok_or_else(|| {
            BundleError::Unsupported("read_into called without a current artifact".into())
        })?;
        let ap = self.plan.artifact(index).cloned().ok_or_else(|| {
            BundleError::Unsupported(format!(
                "artifact {} was not planned for download",
                self.head.manifest.artifacts[index].name
            ))
        })?;
        self.assemble(&ap, sink)
    }

    fn delta_counts(&self) -> Option<Counts> {
        Some(self.counts())
    }

    fn skip_artifact(&mut self) -> Result<(), BundleError> {
        // A planned artifact is fetched and verified all the same, so what is
        // downloaded is what the plan predicted; others cost nothing.
        match self.current {
            Some(i) if self.plan.artifact(i).is_some() => self.read_into(
                &mut crate::bundle::chunks::FnSink(|_: VerifiedChunk<'_>| Ok(())),
            ),
            _ => {
                self.current = None;
                Ok(())
            }
        }
    }
}
