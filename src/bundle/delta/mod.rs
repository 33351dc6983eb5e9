//! Delta downloads: which chunks of a bundle a device already has, and which
//! byte ranges of the bundle it must fetch for the rest.
//!
//! A bundle's manifest gives every chunk's length and SHA-256, so the chunks
//! a device holds somewhere (the running slot, the boot files on the ESP, the
//! target slot's old content, chunks it has already written) are found by
//! looking their `(length, digest)` up in a [`SeedIndex`]. [`plan`] decides,
//! for each chunk of each artifact, where it comes from ([`ChunkPlan`]) and
//! merges the chunks to fetch into as few HTTP range requests as the payload
//! layout allows. The plan is deterministic: `slate diff` runs it on a host to
//! predict a download, and the device runs the same function before it
//! fetches, so predicted and actual [`Counts`] agree.
//!
//! [`fetch`] executes a plan: each local chunk is read and hashed again
//! before it is used (a seed that changed since it was indexed is fetched
//! instead), each fetched chunk is checked against its signed digest.

pub mod fetch;

use super::format::Header;
use super::manifest::{ArtifactEntry, Digest, Manifest};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::PathBuf;

/// Bytes asked for first: enough for the header and a small manifest. A
/// longer head is fetched with a second request once the header says how long.
pub const PROBE_LEN: u64 = 16 << 10;

/// Longest single range request: neighbouring chunks are merged up to this.
pub const MAX_REQUEST_LEN: u64 = 16 << 20;

/// The label of chunks copied from earlier in the artifact being written.
pub const WRITTEN: &str = "written";

/// A place on the device (or host) that may hold chunks of the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// Name in reports (`slot`, `kernel`, `initrd`, `target`, a file name).
    pub label: String,
    /// File or block device to read chunks from.
    pub path: PathBuf,
    /// The seed is the destination itself (the target slot's old content):
    /// a chunk may come from it only at or after its own offset, which the
    /// sequential writer has not overwritten yet.
    pub ahead_only: bool,
}

/// Where chunks of known `(length, SHA-256)` can be read.
#[derive(Debug, Default)]
pub struct SeedIndex {
    seeds: Vec<Seed>,
    map: HashMap<(u64, Digest), Vec<(usize, u64)>>,
}

impl SeedIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a seed; returns its number for the `index_*` calls.
    pub fn add_seed(&mut self, seed: Seed) -> usize {
        self.seeds.push(seed);
        self.seeds.len() - 1
    }

    /// The seeds, by number.
    pub fn seeds(&self) -> &[Seed] {
        &self.seeds
    }

    /// Number of indexed chunk locations.
    pub fn len(&self) -> usize {
        self.map.values().map(Vec::len).sum()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn insert(&mut self, seed: usize, offset: u64, len: u64, digest: Digest) {
        self.map
            .entry((len, digest))
            .or_default()
            .push((seed, offset));
    }

    /// Indexes `seed` from a manifest describing its content (the chunks of
    /// the artifact it holds, from offset 0).
    pub fn index_artifact(&mut self, seed: usize, a: &ArtifactEntry) {
        self.index_artifact_except(seed, a, &[]);
    }

    /// [`Self::index_artifact`] for a seed whose bytes differ from the
    /// artifact's in the `(offset, len)` ranges of `changed` (a slot's own
    /// filesystem identity): chunks touching them are left out.
    pub fn index_artifact_except(
        &mut self,
        seed: usize,
        a: &ArtifactEntry,
        changed: &[(u64, u64)],
    ) {
        for (i, c) in a.chunks.iter().enumerate() {
            let i = i as u64;
            let (start, len) = (i * a.chunk_size, a.chunk_len(i));
            if changed
                .iter()
                .any(|&(at, n)| at < start + len && start < at + n)
            {
                continue;
            }
            self.insert(seed, start, len, c.sha256);
        }
    }

    /// Indexes `seed` by hashing `src` (its content from offset 0) in chunks
    /// of `chunk_size`, the last one possibly shorter. Returns the bytes read.
    pub fn index_reader(
        &mut self,
        seed: usize,
        mut src: impl Read,
        chunk_size: u64,
    ) -> io::Result<u64> {
        let mut buf = vec![0u8; chunk_size as usize];
        let mut offset = 0u64;
        loop {
            let n = read_full(&mut src, &mut buf)?;
            if n == 0 {
                return Ok(offset);
            }
            self.insert(seed, offset, n as u64, Digest::of(&buf[..n]));
            offset += n as u64;
            if n < buf.len() {
                return Ok(offset);
            }
        }
    }

    /// Indexes `seed`'s file at every chunk size `manifest` uses.
    pub fn index_file(&mut self, seed: usize, manifest: &Manifest) -> io::Result<()> {
        for cs in chunk_sizes(manifest) {
            let f = std::fs::File::open(&self.seeds[seed].path)?;
            self.index_reader(seed, io::BufReader::with_capacity(1 << 20, f), cs)?;
        }
        Ok(())
    }

    /// Like [`Self::index_file`], for a file whose content may be followed
    /// by padding (a boot file on the ESP, allocated with room to grow):
    /// the start of each chunk is also indexed at the length of every short
    /// last chunk in `manifest`, so an artifact's tail is found although the
    /// file's chunk at that offset goes on. At most `limit` bytes are read.
    pub fn index_padded_file(
        &mut self,
        seed: usize,
        manifest: &Manifest,
        limit: u64,
    ) -> io::Result<()> {
        for cs in chunk_sizes(manifest) {
            let mut tails: Vec<u64> = manifest
                .artifacts
                .iter()
                .filter(|a| a.chunk_size == cs)
                .map(|a| a.size % cs)
                .filter(|&t| t > 0)
                .collect();
            tails.sort_unstable();
            tails.dedup();
            let f = std::fs::File::open(&self.seeds[seed].path)?;
            let mut src = io::BufReader::with_capacity(1 << 20, f).take(limit);
            let mut buf = vec![0u8; cs as usize];
            let mut offset = 0u64;
            loop {
                let n = read_full(&mut src, &mut buf)?;
                if n == 0 {
                    break;
                }
                self.insert(seed, offset, n as u64, Digest::of(&buf[..n]));
                for &t in tails.iter().filter(|&&t| (t as usize) < n) {
                    self.insert(seed, offset, t, Digest::of(&buf[..t as usize]));
                }
                offset += n as u64;
                if n < buf.len() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The first location of a chunk usable for a chunk at `own_offset`.
    fn find(&self, len: u64, digest: Digest, own_offset: u64) -> Option<(usize, u64)> {
        self.map
            .get(&(len, digest))?
            .iter()
            .copied()
            .find(|&(s, off)| !self.seeds[s].ahead_only || off >= own_offset)
    }
}

/// The distinct chunk sizes of a manifest's artifacts, in order.
pub fn chunk_sizes(m: &Manifest) -> Vec<u64> {
    let mut v: Vec<u64> = m.artifacts.iter().map(|a| a.chunk_size).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Where one chunk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkPlan {
    /// All zeros, nothing stored.
    Hole,
    /// Read from a seed at this offset.
    Seed {
        /// The seed's number in the [`SeedIndex`].
        seed: usize,
        /// Byte offset in the seed.
        offset: u64,
    },
    /// A copy of an earlier chunk of the same artifact, read back from the
    /// destination at this offset.
    Written {
        /// Byte offset in the artifact.
        offset: u64,
    },
    /// Fetched as part of the artifact's request number `request`.
    Fetch {
        /// Index into [`ArtifactPlan::requests`].
        request: usize,
    },
}

/// One HTTP range request: bytes `start..start + len` of the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Request {
    /// First byte.
    pub start: u64,
    /// Length.
    pub len: u64,
}

/// The plan for one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactPlan {
    /// Position in the manifest.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// One entry per chunk.
    pub chunks: Vec<ChunkPlan>,
    /// Its range requests, in payload order.
    pub requests: Vec<Request>,
    /// Bundle offset of each chunk's compressed bytes.
    pub chunk_offsets: Vec<u64>,
}

/// What a delta download costs and saves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// HTTP body bytes received: the head and every range.
    pub downloaded: u64,
    /// HTTP requests.
    pub requests: u64,
    /// Artifact bytes taken from local chunks.
    pub reused: u64,
    /// Artifact bytes that are holes (zeros, never stored).
    pub holes: u64,
    /// Artifact bytes decompressed from fetched chunks.
    pub fetched: u64,
    /// The whole bundle's length: what a full download costs.
    pub full: u64,
    /// Reused bytes by where they came from.
    pub reused_by_source: BTreeMap<String, u64>,
}

impl Counts {
    /// Adds `n` reused bytes from `label`.
    pub fn reuse(&mut self, label: &str, n: u64) {
        self.reused += n;
        *self.reused_by_source.entry(label.to_string()).or_default() += n;
    }
}

/// A whole download plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaPlan {
    /// The requests for the header, manifest and signatures.
    pub head: Vec<Request>,
    /// The planned artifacts, in manifest order.
    pub artifacts: Vec<ArtifactPlan>,
    /// What it costs, if every seed chunk still matches.
    pub counts: Counts,
}

impl DeltaPlan {
    /// The plan of manifest artifact `index`, if it was selected.
    pub fn artifact(&self, index: usize) -> Option<&ArtifactPlan> {
        self.artifacts.iter().find(|a| a.index == index)
    }
}

/// The requests that fetch the head of a bundle of `bundle_len` bytes whose
/// payload starts at `head_len`: a probe of [`PROBE_LEN`] (the whole bundle
/// if shorter), and the rest of the head if the probe did not cover it.
pub fn head_requests(bundle_len: u64, head_len: u64) -> Vec<Request> {
    let probe = PROBE_LEN.min(bundle_len).max(1);
    let mut v = vec![Request {
        start: 0,
        len: probe,
    }];
    if head_len > probe {
        v.push(Request {
            start: probe,
            len: head_len - probe,
        });
    }
    v
}

/// Plans the download of the artifacts `select` picks from a bundle with
/// `header` and `manifest`, given the chunks `seeds` holds.
pub fn plan(
    header: &Header,
    manifest: &Manifest,
    seeds: &SeedIndex,
    select: &dyn Fn(&str) -> bool,
) -> DeltaPlan {
    let head = head_requests(header.bundle_len(), header.payload_offset());
    let mut counts = Counts {
        full: header.bundle_len(),
        ..Counts::default()
    };
    let mut artifacts = Vec::new();
    let mut offset = header.payload_offset();
    for (index, a) in manifest.artifacts.iter().enumerate() {
        if select(&a.name) {
            artifacts.push(plan_artifact(index, a, offset, seeds, &mut counts));
        }
        offset += a.compressed_size();
    }
    for r in head
        .iter()
        .chain(artifacts.iter().flat_map(|a| &a.requests))
    {
        counts.downloaded += r.len;
        counts.requests += 1;
    }
    DeltaPlan {
        head,
        artifacts,
        counts,
    }
}

fn plan_artifact(
    index: usize,
    a: &ArtifactEntry,
    payload_offset: u64,
    seeds: &SeedIndex,
    counts: &mut Counts,
) -> ArtifactPlan {
    let mut written: HashMap<(u64, Digest), u64> = HashMap::new();
    let mut chunks = Vec::with_capacity(a.chunks.len());
    let mut chunk_offsets = Vec::with_capacity(a.chunks.len());
    let mut requests: Vec<Request> = Vec::new();
    // The end of the last request while it can still grow: a hole (no
    // payload bytes) keeps it open, any local chunk closes it.
    let mut open = false;
    let mut at = payload_offset;
    for (i, c) in a.chunks.iter().enumerate() {
        let own = i as u64 * a.chunk_size;
        let len = a.chunk_len(i as u64);
        chunk_offsets.push(at);
        let key = (len, c.sha256);
        let p = if c.is_hole() {
            counts.holes += len;
            ChunkPlan::Hole
        } else if let Some((seed, offset)) = seeds.find(len, c.sha256, own) {
            counts.reuse(&seeds.seeds[seed].label, len);
            open = false;
            ChunkPlan::Seed { seed, offset }
        } else if let Some(&offset) = written.get(&key) {
            counts.reuse(WRITTEN, len);
            open = false;
            ChunkPlan::Written { offset }
        } else {
            counts.fetched += len;
            match requests.last_mut() {
                Some(r) if open && r.len + c.compressed_size <= MAX_REQUEST_LEN => {
                    r.len += c.compressed_size;
                }
                _ => requests.push(Request {
                    start: at,
                    len: c.compressed_size,
                }),
            }
            open = true;
            ChunkPlan::Fetch {
                request: requests.len() - 1,
            }
        };
        if !c.is_hole() {
            written.entry(key).or_insert(own);
        }
        chunks.push(p);
        at += c.compressed_size;
    }
    ArtifactPlan {
        index,
        name: a.name.clone(),
        chunks,
        requests,
        chunk_offsets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::manifest::ChunkEntry;

    const CS: u64 = 1 << 16;

    fn chunk(fill: u8, compressed: u64) -> (Vec<u8>, ChunkEntry) {
        let data = vec![fill; CS as usize];
        let sha256 = Digest::of(&data);
        let compressed_size = if fill == 0 { 0 } else { compressed };
        (
            data,
            ChunkEntry {
                compressed_size,
                sha256,
            },
        )
    }

    fn artifact(name: &str, fills: &[u8]) -> ArtifactEntry {
        let chunks: Vec<ChunkEntry> = fills.iter().map(|&f| chunk(f, 100 + f as u64).1).collect();
        let all: Vec<u8> = fills.iter().flat_map(|&f| chunk(f, 0).0).collect();
        ArtifactEntry {
            chunk_size: CS,
            chunks,
            name: name.into(),
            sha256: Digest::of(&all),
            size: all.len() as u64,
            verity: None,
        }
    }

    fn manifest(artifacts: Vec<ArtifactEntry>) -> (Header, Manifest) {
        let m = Manifest {
            artifacts,
            compatible: "c".into(),
            created: 0,
            format: 1,
            name: "n".into(),
            security_version: 0,
            version: "1".into(),
        };
        let h = Header {
            manifest_len: 50_000,
            signature_count: 1,
            payload_len: m.payload_len(),
        };
        (h, m)
    }

    fn seed(ix: &mut SeedIndex, label: &str, fills: &[u8], ahead_only: bool) -> usize {
        let s = ix.add_seed(Seed {
            label: label.into(),
            path: PathBuf::from(label),
            ahead_only,
        });
        let bytes: Vec<u8> = fills.iter().flat_map(|&f| chunk(f, 0).0).collect();
        ix.index_reader(s, &bytes[..], CS).unwrap();
        s
    }

    #[test]
    fn chunks_come_from_holes_seeds_earlier_chunks_or_ranges() {
        let (h, m) = manifest(vec![artifact("rootfs", &[1, 2, 0, 3, 3, 4, 0, 5, 6])]);
        let mut ix = SeedIndex::new();
        let slot = seed(&mut ix, "slot", &[9, 2, 4], false);
        let p = plan(&h, &m, &ix, &|_| true);
        let a = &p.artifacts[0];
        use ChunkPlan::*;
        assert_eq!(
            a.chunks,
            vec![
                Fetch { request: 0 },
                Seed {
                    seed: slot,
                    offset: CS
                },
                Hole,
                Fetch { request: 1 },
                Written { offset: 3 * CS },
                Seed {
                    seed: slot,
                    offset: 2 * CS
                },
                Hole,
                Fetch { request: 2 },
                Fetch { request: 2 },
            ]
        );
        let base = h.payload_offset();
        assert_eq!(
            a.requests[0],
            Request {
                start: base,
                len: 101
            }
        );
        assert_eq!(
            a.requests[1],
            Request {
                start: base + 101 + 102,
                len: 103
            }
        );
        assert_eq!(
            a.requests[2],
            Request {
                start: base + 101 + 102 + 103 * 2 + 104,
                len: 105 + 106
            }
        );
        let c = &p.counts;
        assert_eq!(c.holes, 2 * CS);
        assert_eq!(c.reused, 3 * CS);
        assert_eq!(c.reused_by_source["slot"], 2 * CS);
        assert_eq!(c.reused_by_source[WRITTEN], CS);
        assert_eq!(c.fetched, 4 * CS);
        // Probe, rest of the head, three ranges.
        assert_eq!(c.requests, 5);
        assert_eq!(c.downloaded, h.payload_offset() + 101 + 103 + 105 + 106);
        assert_eq!(c.full, h.bundle_len());
    }

    #[test]
    fn holes_do_not_split_a_request() {
        let (h, m) = manifest(vec![artifact("rootfs", &[1, 0, 0, 2])]);
        let p = plan(&h, &m, &SeedIndex::new(), &|_| true);
        assert_eq!(p.artifacts[0].requests.len(), 1);
        assert_eq!(p.artifacts[0].requests[0].len, 101 + 102);
    }

    #[test]
    fn old_target_content_is_used_only_ahead_of_the_writer() {
        // Target old content: chunk 5 at offset 0, chunk 6 at offset 2.
        let (h, m) = manifest(vec![artifact("rootfs", &[7, 5, 6, 8])]);
        let mut ix = SeedIndex::new();
        let t = seed(&mut ix, "target", &[5, 1, 6], true);
        let p = plan(&h, &m, &ix, &|_| true);
        use ChunkPlan::*;
        // 5 sits behind its new offset 1 (already overwritten): fetched;
        // 6 at old offset 2 == its new offset: read before it is rewritten.
        assert_eq!(p.artifacts[0].chunks[1], Fetch { request: 0 });
        assert_eq!(
            p.artifacts[0].chunks[2],
            Seed {
                seed: t,
                offset: 2 * CS
            }
        );
    }

    #[test]
    fn unselected_artifacts_cost_nothing_and_requests_are_capped() {
        let many: Vec<u8> = (1..=200).collect();
        let mut big = artifact("rootfs", &many);
        for c in &mut big.chunks {
            c.compressed_size = 1 << 20;
        }
        let (h, m) = manifest(vec![big, artifact("kernel", &[1])]);
        let p = plan(&h, &m, &SeedIndex::new(), &|n| n == "rootfs");
        assert_eq!(p.artifacts.len(), 1);
        let reqs = &p.artifacts[0].requests;
        assert!(reqs.iter().all(|r| r.len <= MAX_REQUEST_LEN), "{reqs:?}");
        assert_eq!(
            reqs.len(),
            200usize.div_ceil((MAX_REQUEST_LEN >> 20) as usize)
        );
        assert_eq!(reqs.iter().map(|r| r.len).sum::<u64>(), 200 << 20);
        // Contiguous, in payload order.
        for w in reqs.windows(2) {
            assert_eq!(w[0].start + w[0].len, w[1].start);
        }
    }

    #[test]
    fn head_is_one_probe_or_a_probe_and_the_rest() {
        assert_eq!(
            head_requests(1000, 500),
            vec![Request {
                start: 0,
                len: 1000
            }]
        );
        assert_eq!(
            head_requests(1 << 20, 100_000),
            vec![
                Request {
                    start: 0,
                    len: PROBE_LEN
                },
                Request {
                    start: PROBE_LEN,
                    len: 100_000 - PROBE_LEN
                }
            ]
        );
    }

    #[test]
    fn manifest_and_reader_indexes_agree() {
        let a = artifact("rootfs", &[1, 2, 3]);
        let bytes: Vec<u8> = [1u8, 2, 3].iter().flat_map(|&f| chunk(f, 0).0).collect();
        let mut x = SeedIndex::new();
        let s = x.add_seed(Seed {
            label: "a".into(),
            path: "a".into(),
            ahead_only: false,
        });
        x.index_artifact(s, &a);
        let mut y = SeedIndex::new();
        let s2 = y.add_seed(Seed {
            label: "a".into(),
            path: "a".into(),
            ahead_only: false,
        });
        assert_eq!(y.index_reader(s2, &bytes[..], CS).unwrap(), 3 * CS);
        let mut kx: Vec<_> = x.map.iter().collect();
        let mut ky: Vec<_> = y.map.iter().collect();
        kx.sort();
        ky.sort();
        assert_eq!(kx, ky);
    }
}
