//! Verifying and streaming a bundle from a plain [`Read`] (a file, an HTTP
//! body, a block device): no seeking, and memory bounded by a few chunks
//! whatever the bundle's size.
//!
//! ```no_run
//! # use slate::bundle::{open, Holes, TrustedKeys, PublicKey};
//! # fn f(keys: TrustedKeys, slot: &mut std::fs::File) -> Result<(), Box<dyn std::error::Error>> {
//! let src = std::fs::File::open("update.slate")?;
//! let mut bundle = open(src, &keys)?; // signatures checked, manifest parsed
//! println!("installing {}", bundle.manifest().version);
//! while let Some(artifact) = bundle.next_artifact()? {
//!     if artifact.name == "rootfs" {
//!         // Each chunk is verified before it reaches `slot`.
//!         bundle.copy_artifact(slot, Holes::WriteZeros, |_done| {})?;
//!     }
//! }
//! bundle.finish()?; // every artifact verified, nothing after the end
//! # Ok(()) }
//! ```

use super::error::{BundleError, CorruptKind, Region};
use super::format::{HEADER_LEN, Header, SIGNATURE_RECORD_LEN, SignatureRecord, region_at};
use super::manifest::{ArtifactEntry, Digest, Manifest, ZeroDigests};
use super::pipeline::{Pool, default_workers};
use super::signing::{SignatureStatus, TrustedKeys, verify_embedded, verify_trusted};
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};

/// How [`BundleReader::copy_artifact`] produces hole chunks (all zeros, not
/// stored in the bundle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holes {
    /// Write the zeros: the destination reads as the artifact whatever it held
    /// before (block devices, reused slots).
    WriteZeros,
    /// Seek over them: only for destinations known to read as zeros there,
    /// such as a new or truncated file. A trailing hole writes one zero byte
    /// so a file ends up with the artifact's length.
    Seek,
}

/// The parts of a bundle before its payload, verified.
#[derive(Debug, Clone)]
pub struct BundleHead {
    /// The decoded header.
    pub header: Header,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The exact signed manifest bytes.
    pub manifest_bytes: Vec<u8>,
    /// SHA-256 of the manifest bytes: the bundle's identity.
    pub manifest_digest: Digest,
    /// One entry per signature record, in bundle order.
    pub signatures: Vec<SignatureStatus>,
}

/// An artifact about to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactHeader {
    /// Position in the manifest.
    pub index: usize,
    /// Role: `rootfs`, `kernel`, `initrd`, ...
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the whole artifact.
    pub sha256: Digest,
    /// Uncompressed bytes per chunk.
    pub chunk_size: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// How many of them are holes.
    pub holes: u64,
    /// Its share of the payload.
    pub compressed_size: u64,
}

impl ArtifactHeader {
    /// Describes manifest artifact `index`.
    pub fn of(index: usize, a: &ArtifactEntry) -> Self {
        ArtifactHeader {
            index,
            name: a.name.clone(),
            size: a.size,
            sha256: a.sha256,
            chunk_size: a.chunk_size,
            chunks: a.chunks.len() as u64,
            holes: a.holes(),
            compressed_size: a.compressed_size(),
        }
    }
}

/// The content of a verified chunk.
#[derive(Debug, Clone, Copy)]
pub enum ChunkData<'a> {
    /// Decompressed bytes whose SHA-256 matched the manifest.
    Bytes(&'a [u8]),
    /// A hole: this many zero bytes.
    Zeros(u64),
}

/// A chunk handed to [`BundleReader::read_chunks`] after verification.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedChunk<'a> {
    /// Chunk index in the artifact.
    pub index: u64,
    /// Offset of the chunk in the artifact.
    pub offset: u64,
    /// Whether it is the artifact's last chunk.
    pub last: bool,
    /// Its content.
    pub data: ChunkData<'a>,
}

impl VerifiedChunk<'_> {
    /// Uncompressed length.
    pub fn len(&self) -> u64 {
        match self.data {
            ChunkData::Bytes(b) => b.len() as u64,
            ChunkData::Zeros(n) => n,
        }
    }

    /// Whether the chunk has no bytes (never true for a valid bundle).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before artifact `next` (== count once all are done).
    Between {
        next: usize,
    },
    /// Positioned at the start of artifact `index`'s payload.
    At {
        index: usize,
    },
    Failed,
}

/// A bundle whose signatures verified, positioned at its payload.
pub struct BundleReader<R> {
    src: Counted<R>,
    head: BundleHead,
    state: State,
    workers: usize,
    check_whole: bool,
}

impl<R> std::fmt::Debug for BundleReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleReader")
            .field("manifest_digest", &self.head.manifest_digest)
            .field("offset", &self.src.offset)
            .field("state", &self.state)
            .finish()
    }
}

/// Reads the header, manifest and signature records from `src`, checks the
/// signatures against `keys` (every trusted signature must verify with
/// `verify_strict`, and `keys.threshold()` distinct trusted keys must have
/// signed), and only then parses the manifest.
pub fn open<R: Read>(src: R, keys: &TrustedKeys) -> Result<BundleReader<R>, BundleError> {
    let mut src = Counted {
        inner: src,
        offset: 0,
    };
    let raw = read_raw_head(&mut src)?;
    let signatures = verify_trusted(&raw.manifest_bytes, &raw.records, keys)?;
    let head = finish_head(raw, signatures)?;
    Ok(BundleReader {
        src,
        head,
        state: State::Between { next: 0 },
        workers: default_workers(),
        check_whole: true,
    })
}

/// Reads the parts before the payload for display, checking each signature
/// only against the public key embedded beside it: proof of integrity, not of
/// trust. At least one signature must verify before the manifest is parsed.
/// Never install from this; use [`open`].
pub fn read_head_unverified<R: Read>(src: R) -> Result<BundleHead, BundleError> {
    let mut src = Counted {
        inner: src,
        offset: 0,
    };
    let raw = read_raw_head(&mut src)?;
    let signatures = verify_embedded(&raw.manifest_bytes, &raw.records)?;
    finish_head(raw, signatures)
}

struct RawHead {
    header: Header,
    manifest_bytes: Vec<u8>,
    records: Vec<SignatureRecord>,
}

fn read_raw_head<R: Read>(src: &mut Counted<R>) -> Result<RawHead, BundleError> {
    let mut hb = [0u8; HEADER_LEN];
    let n = src.read_full(&mut hb)?;
    if n == 0 {
        return Err(CorruptKind::Empty.into());
    }
    if n < HEADER_LEN {
        // A short file that is not a bundle at all says so, rather than "truncated".
        if hb[..n.min(8)] != super::format::MAGIC[..n.min(8)] {
            return Err(BundleError::NotABundle);
        }
        return Err(CorruptKind::Truncated {
            region: Region::Header,
            offset: n as u64,
            expected: HEADER_LEN as u64,
        }
        .into());
    }
    let header = Header::decode(&hb)?;
    // Both lengths were capped by Header::decode, so these allocations are
    // bounded; the manifest buffer grows with the data that actually arrives.
    let manifest_bytes = src.read_vec_in(u64::from(header.manifest_len), &header)?;
    let mut records = Vec::with_capacity(header.signature_count as usize);
    for _ in 0..header.signature_count {
        let mut rb = [0u8; SIGNATURE_RECORD_LEN];
        src.read_exact_in(&mut rb, &header)?;
        records.push(SignatureRecord::decode(&rb));
    }
    Ok(RawHead {
        header,
        manifest_bytes,
        records,
    })
}

fn finish_head(raw: RawHead, signatures: Vec<SignatureStatus>) -> Result<BundleHead, BundleError> {
    let manifest = Manifest::parse(&raw.manifest_bytes)
        .map_err(|e| BundleError::Corrupt(CorruptKind::Manifest(e.0)))?;
    let payload = manifest.payload_len();
    if payload != raw.header.payload_len {
        return Err(CorruptKind::PayloadLength {
            header: raw.header.payload_len,
            manifest: payload,
        }
        .into());
    }
    Ok(BundleHead {
        header: raw.header,
        manifest_digest: Digest::of(&raw.manifest_bytes),
        manifest,
        manifest_bytes: raw.manifest_bytes,
        signatures,
    })
}

impl<R: Read> BundleReader<R> {
    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.head.manifest
    }

    /// SHA-256 of the signed manifest bytes: the bundle's identity.
    pub fn manifest_digest(&self) -> Digest {
        self.head.manifest_digest
    }

    /// The exact signed manifest bytes.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.head.manifest_bytes
    }

    /// The signature records and what was found for each.
    pub fn signatures(&self) -> &[SignatureStatus] {
        &self.head.signatures
    }

    /// Header, manifest and signatures together.
    pub fn head(&self) -> &BundleHead {
        &self.head
    }

    /// Sets how many threads decompress and hash chunks (default: one per core).
    pub fn set_workers(&mut self, workers: usize) {
        self.workers = workers.max(1);
    }

    /// Turns the end-of-artifact SHA-256 check off or on (default on). Every
    /// chunk is still checked against its signed digest, which pins every
    /// byte; the whole-artifact hash costs as much again and only re-proves
    /// that the signer's manifest is consistent. An installer that reads the
    /// written slot back and compares it with [`ArtifactHeader::sha256`] gets
    /// a stronger check for the same cost and may turn this one off.
    pub fn set_check_whole_digest(&mut self, on: bool) {
        self.check_whole = on;
    }

    /// Moves to the next artifact and describes it, or returns `None` after
    /// the last. An artifact that was not read is skipped (its payload is read
    /// and dropped unverified, since nothing uses it).
    pub fn next_artifact(&mut self) -> Result<Option<ArtifactHeader>, BundleError> {
        let next = match self.state {
            State::Between { next } => next,
            State::At { index } => {
                let len = self.head.manifest.artifacts[index].compressed_size();
                self.state = State::Failed;
                let copied = io::copy(&mut (&mut self.src).take(len), &mut io::sink())
                    .map_err(BundleError::Io)?;
                if copied < len {
                    return Err(self.truncated());
                }
                index + 1
            }
            State::Failed => return Err(BundleError::Aborted),
        };
        let Some(a) = self.head.manifest.artifacts.get(next) else {
            self.state = State::Between { next };
            return Ok(None);
        };
        self.state = State::At { index: next };
        Ok(Some(ArtifactHeader::of(next, a)))
    }

    /// Streams the current artifact (the one [`Self::next_artifact`] returned):
    /// each chunk is decompressed and its SHA-256 checked before `on_chunk`
    /// sees it; at the end the whole artifact's SHA-256 is checked. If this
    /// fails, the chunks already handed over must be treated as garbage.
    /// Errors from `on_chunk` come back as [`BundleError::Sink`].
    pub fn read_chunks<F>(&mut self, on_chunk: F) -> Result<(), BundleError>
    where
        F: FnMut(VerifiedChunk<'_>) -> io::Result<()>,
    {
        let State::At { index } = self.state else {
            return Err(match self.state {
                State::Failed => BundleError::Aborted,
                _ => BundleError::Unsupported(
                    "read_chunks called without a current artifact (call next_artifact first)"
                        .into(),
                ),
            });
        };
        self.state = State::Failed;
        let artifact = &self.head.manifest.artifacts[index];
        stream_artifact(
            &mut self.src,
            &self.head.header,
            artifact,
            self.workers,
            self.check_whole,
            on_chunk,
        )?;
        self.state = State::Between { next: index + 1 };
        Ok(())
    }

    /// Writes the current artifact to `dst` from its current position,
    /// verifying each chunk before writing it (see [`Self::read_chunks`]).
    /// `on_progress` receives the artifact bytes done since its last call.
    pub fn copy_artifact<W: Write + Seek>(
        &mut self,
        dst: &mut W,
        holes: Holes,
        mut on_progress: impl FnMut(u64),
    ) -> Result<(), BundleError> {
        self.read_chunks(|c| {
            match c.data {
                ChunkData::Bytes(b) => dst.write_all(b)?,
                ChunkData::Zeros(n) => match holes {
                    Holes::WriteZeros => {
                        for z in crate::io::sparse::zero_slices(n) {
                            dst.write_all(z)?;
                        }
                    }
                    Holes::Seek if c.last => {
                        dst.seek(SeekFrom::Current(n as i64 - 1))?;
                        dst.write_all(&[0])?;
                    }
                    Holes::Seek => {
                        dst.seek(SeekFrom::Current(n as i64))?;
                    }
                },
            }
            on_progress(c.len());
            Ok(())
        })
    }

    /// Verifies the current artifact without writing it anywhere.
    pub fn verify_artifact(&mut self, mut on_progress: impl FnMut(u64)) -> Result<(), BundleError> {
        self.read_chunks(|c| {
            on_progress(c.len());
            Ok(())
        })
    }

    /// Verifies any artifacts not read yet, then checks that the bundle ends
    /// exactly where its header says. Returns the source.
    pub fn finish(mut self) -> Result<R, BundleError> {
        while self.next_artifact_keep()?.is_some() {
            self.verify_artifact(|_| {})?;
        }
        let mut probe = [0u8; 1];
        match self.src.read_full(&mut probe)? {
            0 => Ok(self.src.inner),
            _ => Err(CorruptKind::TrailingData {
                offset: self.head.header.bundle_len(),
            }
            .into()),
        }
    }

    /// Gives back the source without reading further, e.g. for a block device
    /// that holds a bundle and then unrelated bytes.
    pub fn into_inner(self) -> R {
        self.src.inner
    }

    /// Like next_artifact, but an unread current artifact is returned for
    /// verification instead of being skipped.
    fn next_artifact_keep(&mut self) -> Result<Option<()>, BundleError> {
        match self.state {
            State::At { .. } => Ok(Some(())),
            _ => self.next_artifact().map(|a| a.map(|_| ())),
        }
    }

    fn truncated(&self) -> BundleError {
        CorruptKind::Truncated {
            region: Region::Payload,
            offset: self.src.offset,
            expected: self.head.header.bundle_len(),
        }
        .into()
    }
}

/// Consecutive data chunks on their way through a worker: one chunk of a
/// MiB or more, or as many smaller ones as make up to [`JOB_BYTES`], so the
/// hand-offs between threads stay per MiB rather than per chunk.
#[derive(Default)]
struct Job {
    /// Index of the first chunk.
    first: u64,
    /// Each chunk's uncompressed length and signed digest.
    chunks: Vec<(usize, Digest)>,
    /// Where each chunk's compressed bytes end in `compressed`.
    ends: Vec<usize>,
    compressed: Vec<u8>,
    /// The chunks, decompressed and checked, back to back.
    out: Vec<u8>,
}

/// Uncompressed bytes a [`Job`] of small chunks covers at most.
const JOB_BYTES: u64 = 1 << 20;

impl Job {
    fn clear(&mut self) {
        self.chunks.clear();
        self.ends.clear();
        self.compressed.clear();
    }
}

/// What is wrong with one chunk.
pub(crate) enum Fault {
    Decompress(String),
    Length(u64),
    Digest,
}

impl Fault {
    /// The error for chunk `index` of `a`.
    pub(crate) fn of_chunk(self, a: &ArtifactEntry, index: u64) -> BundleError {
        let offset = index * a.chunk_size;
        let artifact = a.name.clone();
        BundleError::Corrupt(match self {
            Fault::Decompress(reason) => CorruptKind::ChunkDecompress {
                artifact,
                index,
                offset,
                reason,
            },
            Fault::Length(found) => CorruptKind::ChunkLength {
                artifact,
                index,
                offset,
                expected: a.chunk_len(index),
                found,
            },
            Fault::Digest => CorruptKind::ChunkDigest {
                artifact,
                index,
                offset,
            },
        })
    }
}

/// Decompresses one chunk to the end of `out` and checks its length and
/// digest (on failure `out` may hold part of it).
pub(crate) fn append_chunk(
    d: &mut zstd::bulk::Decompressor<'static>,
    compressed: &[u8],
    len: usize,
    expected: Digest,
    out: &mut Vec<u8>,
) -> Result<(), Fault> {
    let start = out.len();
    out.reserve(len);
    let mut tail = io::Cursor::new(&mut *out);
    tail.set_position(start as u64);
    match d.decompress_to_buffer(compressed, &mut tail) {
        Err(e) => Err(Fault::Decompress(e.to_string())),
        Ok(n) if n != len => Err(Fault::Length(n as u64)),
        Ok(_) if Digest::of(&out[start..]) != expected => Err(Fault::Digest),
        Ok(_) => Ok(()),
    }
}

struct Done {
    job: Job,
    /// The first bad chunk's index and what is wrong with it.
    result: Result<(), (u64, Fault)>,
}

fn decompress_and_check(
    dctx: &mut Option<zstd::bulk::Decompressor<'static>>,
    mut job: Job,
) -> Done {
    job.out.clear();
    let Some(d) = dctx else {
        let fault = Fault::Decompress("cannot create a zstd context".into());
        return Done {
            result: Err((job.first, fault)),
            job,
        };
    };
    let mut start = 0;
    let mut result = Ok(());
    for (k, (&(len, expected), &end)) in job.chunks.iter().zip(&job.ends).enumerate() {
        let compressed = &job.compressed[start..end];
        if let Err(f) = append_chunk(d, compressed, len, expected, &mut job.out) {
            result = Err((job.first + k as u64, f));
            break;
        }
        start = end;
    }
    Done { job, result }
}

enum Pending {
    Hole(u64),
    /// The next job in the pool (its chunks say which).
    Data,
}

/// Memory for chunks in the workers' queues. With jobs of 1 MiB the pool's
/// own bound (two jobs per worker) is lower.
const JOB_BUFFER_BUDGET: u64 = 48 << 20;

/// What the whole-artifact hasher thread is fed, in artifact order.
enum ToHash {
    Bytes(Vec<u8>),
    Zeros(u64),
}

/// Runs the whole-artifact SHA-256 on its own thread, so the caller's thread
/// is left with reading and writing: the hash is sequential and as costly as
/// all the chunk hashes together. Buffers come back for reuse.
fn spawn_whole_hasher<'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    queue: usize,
) -> (
    SyncSender<ToHash>,
    Receiver<Vec<u8>>,
    std::thread::ScopedJoinHandle<'scope, Digest>,
) {
    let (tx, rx) = sync_channel::<ToHash>(queue);
    let (back_tx, back_rx) = channel::<Vec<u8>>();
    let handle = s.spawn(move || {
        let mut h = Sha256::new();
        for item in rx {
            match item {
                ToHash::Bytes(b) => {
                    h.update(&b);
                    let _ = back_tx.send(b);
                }
                ToHash::Zeros(n) => {
                    for z in crate::io::sparse::zero_slices(n) {
                        h.update(z);
                    }
                }
            }
        }
        Digest(h.finalize().into())
    });
    (tx, back_rx, handle)
}

/// Streams one artifact's chunks: the caller's thread reads compressed
/// chunks in order and hands verified chunks to `on_chunk`; workers
/// decompress and check each chunk's hash; one more thread keeps the
/// whole-artifact hash. Results are handed over in order.
fn stream_artifact<R: Read, F>(
    src: &mut Counted<R>,
    header: &Header,
    a: &ArtifactEntry,
    workers: usize,
    check_whole: bool,
    mut on_chunk: F,
) -> Result<(), BundleError>
where
    F: FnMut(VerifiedChunk<'_>) -> io::Result<()>,
{
    let count = a.chunks.len() as u64;
    let mut zero_digests = ZeroDigests::default();
    let mut spare_jobs: Vec<Job> = Vec::new();
    let mut spare_out: Vec<Vec<u8>> = Vec::new();
    let sink_err = |source: io::Error| BundleError::Sink {
        artifact: a.name.clone(),
        source,
    };
    let corrupt = |index: u64, fault: Fault| fault.of_chunk(a, index);
    let hasher_gone = || BundleError::Io(io::Error::other("the hashing thread stopped"));
    // Each job holds up to two job-sized buffers; large chunks get fewer
    // jobs in flight so memory stays near JOB_BUFFER_BUDGET.
    let max_jobs = (JOB_BUFFER_BUDGET / (2 * a.chunk_size.max(JOB_BYTES))).max(1) as usize;
    let hash_queue = if a.chunk_size >= 4 << 20 { 1 } else { 2 };

    let whole = std::thread::scope(|s| -> Result<Option<Digest>, BundleError> {
        let mut pool: Pool<'_, Job, Done> = Pool::start(
            s,
            workers,
            || zstd::bulk::Decompressor::new().ok(),
            decompress_and_check,
        );
        let (hash_tx, hash_back, hasher) = if check_whole {
            let (t, b, h) = spawn_whole_hasher(s, hash_queue);
            (Some(t), Some(b), Some(h))
        } else {
            (None, None, None)
        };
        let mut pending = std::collections::VecDeque::new();
        let mut next = 0u64;
        loop {
            // Keep the workers busy: read ahead while there is room.
            while next < count && pending.len() < 64 {
                if a.chunks[next as usize].is_hole() {
                    pending.push_back(Pending::Hole(next));
                    next += 1;
                    continue;
                }
                if !pool.has_room() || pool.in_flight() >= max_jobs {
                    break;
                }
                let mut job = spare_jobs.pop().unwrap_or_default();
                job.first = next;
                job.out = spare_out
                    .pop()
                    .or_else(|| hash_back.as_ref().and_then(|b| b.try_recv().ok()))
                    .unwrap_or_default();
                let mut bytes = 0;
                while next < count && !a.chunks[next as usize].is_hole() {
                    let len = a.chunk_len(next);
                    if !job.chunks.is_empty() && bytes + len > JOB_BYTES {
                        break;
                    }
                    let c = &a.chunks[next as usize];
                    // Bounded by max_compressed_len(chunk_size) via Manifest::validate.
                    let start = job.compressed.len();
                    job.compressed.resize(start + c.compressed_size as usize, 0);
                    src.read_exact_in(&mut job.compressed[start..], header)?;
                    job.ends.push(job.compressed.len());
                    job.chunks.push((len as usize, c.sha256));
                    bytes += len;
                    next += 1;
                }
                pool.submit(job).map_err(|e| BundleError::Io(e.into()))?;
                pending.push_back(Pending::Data);
            }
            let Some(p) = pending.pop_front() else { break };
            let chunk = |index: u64, data| VerifiedChunk {
                index,
                offset: index * a.chunk_size,
                last: index + 1 == count,
                data,
            };
            match p {
                Pending::Hole(i) => {
                    let len = a.chunk_len(i);
                    if zero_digests.of(len) != a.chunks[i as usize].sha256 {
                        return Err(corrupt(i, Fault::Digest));
                    }
                    on_chunk(chunk(i, ChunkData::Zeros(len))).map_err(sink_err)?;
                    if let Some(t) = &hash_tx {
                        t.send(ToHash::Zeros(len)).map_err(|_| hasher_gone())?;
                    }
                }
                Pending::Data => {
                    let Done { mut job, result } =
                        pool.receive().map_err(|e| BundleError::Io(e.into()))?;
                    if let Err((i, f)) = result {
                        return Err(corrupt(i, f));
                    }
                    let mut pos = 0;
                    for (i, &(len, _)) in (job.first..).zip(&job.chunks) {
                        on_chunk(chunk(i, ChunkData::Bytes(&job.out[pos..pos + len])))
                            .map_err(sink_err)?;
                        pos += len;
                    }
                    let out = std::mem::take(&mut job.out);
                    job.clear();
                    spare_jobs.push(job);
                    match &hash_tx {
                        Some(t) => t.send(ToHash::Bytes(out)).map_err(|_| hasher_gone())?,
                        None => spare_out.push(out),
                    }
                }
            }
        }
        drop(hash_tx);
        match hasher {
            Some(h) => h.join().map(Some).map_err(|_| hasher_gone()),
            None => Ok(None),
        }
    })?;
    if whole.is_some_and(|d| d != a.sha256) {
        return Err(CorruptKind::ArtifactDigest {
            artifact: a.name.clone(),
        }
        .into());
    }
    Ok(())
}

/// A reader that counts bytes, so errors can say where the data ended.
struct Counted<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl<R: Read> Counted<R> {
    /// Reads until `buf` is full or the source ends; returns the bytes read.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BundleError::Io(e)),
            }
        }
        Ok(filled)
    }

    /// Reads exactly `len` bytes into a new vector that grows as they arrive,
    /// so a short input claiming a long region costs little memory.
    fn read_vec_in(&mut self, len: u64, header: &Header) -> Result<Vec<u8>, BundleError> {
        let mut v = Vec::with_capacity(len.min(64 * 1024) as usize);
        (&mut *self)
            .take(len)
            .read_to_end(&mut v)
            .map_err(BundleError::Io)?;
        if (v.len() as u64) < len {
            return Err(CorruptKind::Truncated {
                region: region_at(header, self.offset),
                offset: self.offset,
                expected: header.bundle_len(),
            }
            .into());
        }
        Ok(v)
    }

    /// Fills `buf`; an early end is reported as truncation in the region it hit.
    fn read_exact_in(&mut self, buf: &mut [u8], header: &Header) -> Result<(), BundleError> {
        let n = self.read_full(buf)?;
        if n < buf.len() {
            return Err(CorruptKind::Truncated {
                region: region_at(header, self.offset),
                offset: self.offset,
                expected: header.bundle_len(),
            }
            .into());
        }
        Ok(())
    }
}
