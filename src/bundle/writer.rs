//! Making a bundle: cut each artifact into chunks, hash and zstd-compress
//! them on every core, mark all-zero chunks as holes, then sign the manifest
//! and write header, manifest, signatures and payload.
//!
//! The manifest (which lists compressed sizes) precedes the payload, so the
//! payload is first written to a spool (a temp file beside the output) and
//! copied after the signatures. The output is a pure function of the inputs,
//! the keys and the options: no clock, no randomness.

use super::format::{
    DEFAULT_CHUNK_SIZE, FORMAT_VERSION, Header, MAX_CHUNK_SIZE, MAX_CHUNKS, MAX_SIGNATURES,
    MIN_CHUNK_SIZE, max_compressed_len,
};
use super::manifest::{ArtifactEntry, ArtifactVerity, ChunkEntry, Digest, Manifest, ZeroDigests};
use super::pipeline::{Pool, default_workers};
use super::signing::{KeyId, SecretKey};
use crate::build_manifest::BuildManifest;
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The zstd level `slate bundle` uses by default; see docs/bundle-format.md.
pub const DEFAULT_LEVEL: i32 = 9;

/// Identity of the image a bundle carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleMeta {
    /// Image name.
    pub name: String,
    /// Image version.
    pub version: String,
    /// Compatibility string devices compare with their own.
    pub compatible: String,
    /// Anti-rollback level.
    pub security_version: u64,
    /// Creation time in seconds (SOURCE_DATE_EPOCH), never the wall clock.
    pub created: u64,
}

impl BundleMeta {
    /// The manifest of a bundle with this metadata and these artifacts.
    fn manifest(&self, artifacts: Vec<ArtifactEntry>) -> Manifest {
        Manifest {
            artifacts,
            compatible: self.compatible.clone(),
            created: self.created,
            format: FORMAT_VERSION,
            name: self.name.clone(),
            security_version: self.security_version,
            version: self.version.clone(),
        }
    }
}

/// One file to put into a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInput {
    /// Role: `rootfs`, `kernel`, `initrd`, ...
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Expected size; a file of another size is refused.
    pub size: u64,
    /// Expected SHA-256, checked while reading; a mismatch is refused.
    pub sha256: Option<Digest>,
    /// The slot image's verity parameters as the build recorded them: when
    /// set, they are computed again from the file (a mismatch is refused)
    /// and signed with the manifest.
    pub verity: Option<ArtifactVerity>,
}

/// Knobs for [`write_bundle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Uncompressed chunk size: a power of two, 64 KiB to 16 MiB.
    pub chunk_size: u64,
    /// zstd level, 1 to 19.
    pub level: i32,
    /// Compression threads.
    pub workers: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            level: DEFAULT_LEVEL,
            workers: default_workers(),
        }
    }
}

/// What [`write_bundle`] produced.
#[derive(Debug, Clone)]
pub struct WrittenBundle {
    /// The signed manifest.
    pub manifest: Manifest,
    /// SHA-256 of the manifest bytes: the bundle's identity.
    pub manifest_digest: Digest,
    /// Key ids of the signatures, in bundle order.
    pub key_ids: Vec<KeyId>,
    /// Total bytes written.
    pub bundle_len: u64,
}

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// Reading an input or writing the output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// OS error.
        source: io::Error,
    },
    /// The inputs cannot make a valid bundle.
    #[error("{0}")]
    Input(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> WriteError {
    let what = what.into();
    move |source| WriteError::Io { what, source }
}

fn input<T>(msg: impl Into<String>) -> Result<T, WriteError> {
    Err(WriteError::Input(msg.into()))
}

/// Reads `<dir>/manifest.json` and describes the bundle it makes: the slot
/// artifacts (not the disk image) with the sizes and digests the build
/// recorded. `created` is SOURCE_DATE_EPOCH from the environment if set, else
/// the one the build used.
pub fn from_build_dir(dir: &Path) -> Result<(BundleMeta, Vec<ArtifactInput>), WriteError> {
    let md =
        std::fs::metadata(dir).map_err(io_err(format!("build directory {}", dir.display())))?;
    if !md.is_dir() {
        return input(format!("{} is not a build directory", dir.display()));
    }
    let bm = BuildManifest::load(dir).map_err(|e| match e {
        crate::build_manifest::ManifestError::Io { path, source } => WriteError::Io {
            what: format!("reading {path}"),
            source,
        },
        e => WriteError::Input(e.to_string()),
    })?;
    let created = match crate::reproducible::source_date_epoch() {
        Ok(Some(v)) => v,
        Ok(None) => bm.source_date_epoch,
        Err(e) => return input(e.to_string()),
    };
    let created = u64::try_from(created)
        .map_err(|_| WriteError::Input(format!("creation time {created} is before 1970")))?;
    let mpath = dir.join(crate::build_manifest::FILE_NAME);
    let mut inputs = Vec::new();
    // A build whose slots boot unified kernel images ships those instead of
    // its kernel and initrd (the images hold both).
    let ukis = crate::boot_env::SlotId::ALL.iter().all(|s| {
        let name = crate::uki::artifact_name(*s);
        bm.artifacts.iter().any(|a| a.name == name)
    });
    for a in &bm.artifacts {
        if ukis && (a.name == "kernel" || a.name == "initrd") {
            continue;
        }
        let plain = !a.file.is_empty()
            && a.file != "."
            && a.file != ".."
            && !a.file.contains('/')
            && !a.file.contains('\0');
        if !plain {
            return input(format!(
                "{}: artifact {} has file {:?}, which is not a plain file name in the build directory",
                mpath.display(),
                a.name,
                a.file
            ));
        }
        let sha256 = Digest::from_hex(&a.sha256.to_ascii_lowercase()).ok_or_else(|| {
            WriteError::Input(format!(
                "{}: artifact {} has sha256 {:?}, not 64 hex digits",
                mpath.display(),
                a.name,
                a.sha256
            ))
        })?;
        inputs.push(ArtifactInput {
            name: a.name.clone(),
            path: dir.join(&a.file),
            size: a.size,
            sha256: Some(sha256),
            verity: a.verity,
        });
    }
    let meta = BundleMeta {
        name: bm.name,
        version: bm.version,
        compatible: bm.compatible,
        security_version: bm.security_version,
        created,
    };
    Ok((meta, inputs))
}

/// Writes a bundle of `artifacts` signed by `keys` to `out`, using `spool`
/// (any empty read-write file) to hold the payload until the manifest is
/// known. `on_progress` receives the input bytes done since its last call.
pub fn write_bundle<W: Write, S: Read + Write + Seek>(
    out: &mut W,
    spool: &mut S,
    meta: &BundleMeta,
    artifacts: &[ArtifactInput],
    keys: &[SecretKey],
    opts: &WriteOptions,
    mut on_progress: impl FnMut(u64),
) -> Result<WrittenBundle, WriteError> {
    precheck(meta, artifacts, keys, opts)?;
    let mut entries = Vec::with_capacity(artifacts.len());
    for a in artifacts {
        entries.push(chunk_artifact(a, spool, opts, &mut on_progress)?);
    }
    let manifest = meta.manifest(entries);
    manifest
        .validate()
        .map_err(|e| WriteError::Input(format!("manifest: {e}")))?;
    let bytes = manifest.to_canonical_json();
    // Readers re-encode and compare; prove here that they will agree.
    if Manifest::parse(&bytes).as_ref() != Ok(&manifest) {
        return input("internal error: the manifest does not parse back to itself");
    }
    let manifest_len = u32::try_from(bytes.len())
        .ok()
        .filter(|n| *n <= super::format::MAX_MANIFEST_LEN)
        .ok_or_else(|| {
            WriteError::Input(format!(
                "the manifest would be {} bytes, over the limit of {}; use a larger chunk size",
                bytes.len(),
                super::format::MAX_MANIFEST_LEN
            ))
        })?;
    let records: Vec<_> = keys.iter().map(|k| k.sign_record(&bytes)).collect();
    let header = Header {
        manifest_len,
        signature_count: records.len() as u32,
        payload_len: manifest.payload_len(),
    };
    out.write_all(&header.encode())
        .map_err(io_err("writing the bundle"))?;
    out.write_all(&bytes)
        .map_err(io_err("writing the bundle"))?;
    for r in &records {
        out.write_all(&r.encode())
            .map_err(io_err("writing the bundle"))?;
    }
    spool
        .seek(SeekFrom::Start(0))
        .map_err(io_err("rewinding the payload spool"))?;
    copy_exact(spool, out, header.payload_len)?;
    out.flush().map_err(io_err("writing the bundle"))?;
    Ok(WrittenBundle {
        manifest_digest: Digest::of(&bytes),
        manifest,
        key_ids: keys.iter().map(|k| k.public().id()).collect(),
        bundle_len: header.bundle_len(),
    })
}

/// Cheap checks before any data is read, so a bad invocation fails at once.
fn precheck(
    meta: &BundleMeta,
    artifacts: &[ArtifactInput],
    keys: &[SecretKey],
    opts: &WriteOptions,
) -> Result<(), WriteError> {
    if keys.is_empty() {
        return input("at least one signing key is needed");
    }
    if keys.len() > MAX_SIGNATURES as usize {
        return input(format!(
            "{} signing keys given, a bundle holds at most {MAX_SIGNATURES}",
            keys.len()
        ));
    }
    for (i, k) in keys.iter().enumerate() {
        let id = k.public().id();
        if keys[..i].iter().any(|o| o.public().id() == id) {
            return input(format!("signing key {id} is given twice"));
        }
    }
    let cs = opts.chunk_size;
    if !cs.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&cs) {
        return input(format!(
            "chunk size {cs} is not a power of two between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}"
        ));
    }
    if !(1..=19).contains(&opts.level) {
        return input(format!("zstd level {} is not between 1 and 19", opts.level));
    }
    if artifacts.is_empty() {
        return input("the build lists no artifacts to bundle");
    }
    let mut chunks = 0u64;
    for a in artifacts {
        if a.size == 0 {
            return input(format!(
                "artifact {} ({}) is empty",
                a.name,
                a.path.display()
            ));
        }
        chunks = chunks.saturating_add(a.size.div_ceil(cs));
    }
    if chunks > MAX_CHUNKS {
        return input(format!(
            "the artifacts need {chunks} chunks of {cs} bytes, more than the {MAX_CHUNKS} a bundle may hold; use a larger chunk size"
        ));
    }
    // Validate names and text now with a stand-in manifest of the right shape.
    let stand_in = meta.manifest(
        artifacts
            .iter()
            .map(|a| ArtifactEntry {
                chunk_size: cs,
                chunks: vec![
                    ChunkEntry {
                        compressed_size: 0,
                        sha256: Digest::default(),
                    };
                    a.size.div_ceil(cs) as usize
                ],
                name: a.name.clone(),
                sha256: Digest::default(),
                size: a.size,
                verity: None,
            })
            .collect(),
    );
    stand_in.validate().map_err(|e| WriteError::Input(e.0))
}

struct Job {
    data: Vec<u8>,
    out: Vec<u8>,
}

struct Done {
    digest: Digest,
    /// None for an all-zero chunk (a hole).
    compressed: Option<io::Result<()>>,
    job: Job,
}

fn hash_and_compress(cctx: &mut Option<zstd::bulk::Compressor<'static>>, mut job: Job) -> Done {
    let digest = Digest::of(&job.data);
    if crate::io::sparse::is_zero(&job.data) {
        return Done {
            digest,
            compressed: None,
            job,
        };
    }
    job.out.clear();
    job.out
        .reserve(zstd::zstd_safe::compress_bound(job.data.len()));
    let compressed = Some(match cctx {
        None => Err(io::Error::other("cannot create a zstd context")),
        Some(c) => c.compress_to_buffer(&job.data, &mut job.out).map(|_| ()),
    });
    Done {
        digest,
        compressed,
        job,
    }
}

enum Pending {
    /// A chunk inside a hole of the sparse input: not even read.
    KnownHole(u64),
    Data(u64),
}

/// Chunks one artifact into the spool and describes it.
fn chunk_artifact<S: Write>(
    a: &ArtifactInput,
    spool: &mut S,
    opts: &WriteOptions,
    on_progress: &mut impl FnMut(u64),
) -> Result<ArtifactEntry, WriteError> {
    let shown = a.path.display().to_string();
    let file = File::open(&a.path).map_err(io_err(format!("opening artifact {shown}")))?;
    let md = file
        .metadata()
        .map_err(io_err(format!("reading artifact {shown}")))?;
    if !md.is_file() {
        return input(format!(
            "artifact {}: {shown} is not a regular file",
            a.name
        ));
    }
    if md.len() != a.size {
        return input(format!(
            "artifact {}: {shown} is {} bytes, the build manifest says {}",
            a.name,
            md.len(),
            a.size
        ));
    }
    let data_ranges = data_ranges(&file, a.size);
    let cs = opts.chunk_size;
    let count = a.size.div_ceil(cs);
    let mut chunks: Vec<ChunkEntry> = Vec::with_capacity(count as usize);
    let mut whole = Sha256::new();
    let mut zero_digests = ZeroDigests::default();
    let mut spare: Vec<Job> = Vec::new();
    let mut range_cursor = 0usize;
    let level = opts.level;

    std::thread::scope(|s| -> Result<(), WriteError> {
        let mut pool: Pool<'_, Job, Done> = Pool::start(
            s,
            opts.workers,
            move || zstd::bulk::Compressor::new(level).ok(),
            hash_and_compress,
        );
        let mut pending = std::collections::VecDeque::new();
        let mut next = 0u64;
        loop {
            while next < count && pool.has_room() && pending.len() < 64 {
                let start = next * cs;
                let len = cs.min(a.size - start);
                if !overlaps_data(&data_ranges, &mut range_cursor, start..start + len) {
                    pending.push_back(Pending::KnownHole(next));
                } else {
                    let mut job = spare.pop().unwrap_or(Job {
                        data: Vec::new(),
                        out: Vec::new(),
                    });
                    job.data.resize(len as usize, 0);
                    file.read_exact_at(&mut job.data, start)
                        .map_err(io_err(format!("reading artifact {shown}")))?;
                    pool.submit(job)
                        .map_err(|e| io_err("compressing")(e.into()))?;
                    pending.push_back(Pending::Data(next));
                }
                next += 1;
            }
            let Some(p) = pending.pop_front() else { break };
            match p {
                Pending::KnownHole(i) => {
                    let len = cs.min(a.size - i * cs);
                    let digest = zero_digests.of(len);
                    for z in crate::io::sparse::zero_slices(len) {
                        whole.update(z);
                    }
                    chunks.push(ChunkEntry {
                        compressed_size: 0,
                        sha256: digest,
                    });
                    on_progress(len);
                }
                Pending::Data(i) => {
                    let done = pool
                        .receive()
                        .map_err(|e| io_err("compressing")(e.into()))?;
                    let len = done.job.data.len() as u64;
                    whole.update(&done.job.data);
                    let compressed_size = match done.compressed {
                        None => 0,
                        Some(Err(e)) => {
                            return Err(io_err(format!(
                                "compressing chunk {i} of artifact {}",
                                a.name
                            ))(e));
                        }
                        Some(Ok(())) => {
                            let n = done.job.out.len() as u64;
                            if n == 0 || n > max_compressed_len(len) {
                                return input(format!(
                                    "internal error: zstd made {n} bytes of {len}"
                                ));
                            }
                            spool
                                .write_all(&done.job.out)
                                .map_err(io_err("writing the payload spool"))?;
                            n
                        }
                    };
                    chunks.push(ChunkEntry {
                        compressed_size,
                        sha256: done.digest,
                    });
                    on_progress(len);
                    spare.push(done.job);
                }
            }
        }
        Ok(())
    })?;
    let sha256 = Digest(whole.finalize().into());
    if let Some(expected) = a.sha256
        && expected != sha256
    {
        return input(format!(
            "artifact {}: {shown} has sha256 {sha256}, the build manifest says {expected}",
            a.name
        ));
    }
    let verity = match &a.verity {
        None => None,
        Some(recorded) => Some(artifact_verity(a, &shown, sha256, recorded)?),
    };
    Ok(ArtifactEntry {
        chunk_size: cs,
        chunks,
        name: a.name.clone(),
        sha256,
        size: a.size,
        verity,
    })
}

/// The slot image's verity parameters, computed from the file (salted with
/// its SHA-256) and checked against what the build recorded.
fn artifact_verity(
    a: &ArtifactInput,
    shown: &str,
    sha256: Digest,
    recorded: &ArtifactVerity,
) -> Result<ArtifactVerity, WriteError> {
    let computed = crate::slot_image::image_verity(&a.path, sha256.0)
        .map(|v| ArtifactVerity::from_image(&v))
        .map_err(|e| {
            WriteError::Input(format!(
                "artifact {}: {shown}: computing its dm-verity trees: {e}",
                a.name
            ))
        })?;
    if computed != *recorded {
        return input(format!(
            "artifact {}: {shown} has dm-verity root hashes {}/{}, the build manifest says {}/{}",
            a.name,
            computed.root_hash_a,
            computed.root_hash_b,
            recorded.root_hash_a,
            recorded.root_hash_b
        ));
    }
    Ok(computed)
}

/// The file's data segments per SEEK_DATA/SEEK_HOLE; the whole file where
/// the filesystem cannot tell.
fn data_ranges(file: &File, size: u64) -> Vec<Range<u64>> {
    use rustix::fs::{SeekFrom as RSeek, seek};
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match seek(file, RSeek::Data(pos)) {
            Ok(p) => p,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return vec![0..size],
        };
        if start >= size {
            break;
        }
        let end = match seek(file, RSeek::Hole(start)) {
            Ok(p) => p.min(size),
            Err(_) => return vec![0..size],
        };
        if end <= start {
            return vec![0..size];
        }
        out.push(start..end);
        pos = end;
    }
    out
}

/// Whether `r` overlaps a data range; `cursor` advances through the sorted
/// ranges as `r` moves forward.
fn overlaps_data(ranges: &[Range<u64>], cursor: &mut usize, r: Range<u64>) -> bool {
    while *cursor < ranges.len() && ranges[*cursor].end <= r.start {
        *cursor += 1;
    }
    ranges
        .get(*cursor)
        .is_some_and(|d| d.start < r.end && d.end > r.start)
}

fn copy_exact<R: Read, W: Write>(src: &mut R, dst: &mut W, len: u64) -> Result<(), WriteError> {
    let mut buf = vec![0u8; (1 << 20).min(len.max(1)) as usize];
    let mut left = len;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..k])
            .map_err(io_err("reading the payload spool"))?;
        dst.write_all(&buf[..k])
            .map_err(io_err("writing the bundle"))?;
        left -= k as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_overlap_cursor() {
        let r = [10..20, 40..50];
        let mut c = 0;
        assert!(!overlaps_data(&r, &mut c, 0..10));
        assert!(overlaps_data(&r, &mut c, 5..15));
        assert!(!overlaps_data(&r, &mut c, 20..40));
        assert!(overlaps_data(&r, &mut c, 49..60));
        assert!(!overlaps_data(&r, &mut c, 50..60));
    }
}
