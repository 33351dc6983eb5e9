//! The streaming reader API the device installer uses: plain `Read` sources
//! with short reads, hole handling, skipping, sink failures, trailing data.

mod bundle_support;

use bundle_support::*;
use slate::bundle::{
    BundleError, ChunkData, CorruptKind, Holes, PublicKey, SecretKey, TrustedKeys, open,
};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// A source that is only `Read` and returns short, uneven reads, like a
/// network stream.
struct Trickle<R> {
    inner: R,
    rng: Rng,
}

impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.rng.below(4096) as usize + 1).min(buf.len());
        self.inner.read(&mut buf[..n])
    }
}

struct Built {
    _dir: tempfile::TempDir,
    bundle: Vec<u8>,
    keys: TrustedKeys,
    build: std::path::PathBuf,
}

fn built() -> Built {
    let dir = tempfile::tempdir().unwrap();
    let build = small_build(&dir.path().join("build"));
    let (key, public) = keygen(&dir.path().join("k"));
    let out = dir.path().join("b.slate");
    bundle(&build, &[&key], &out, &["--chunk-size", "64K"]);
    let keys = TrustedKeys::new([PublicKey::read_pem_file(&public).unwrap()], 1).unwrap();
    Built {
        bundle: std::fs::read(&out).unwrap(),
        _dir: dir,
        keys,
        build,
    }
}

fn trickle(b: &[u8], seed: u64) -> Trickle<&[u8]> {
    Trickle {
        inner: b,
        rng: Rng(seed),
    }
}

#[test]
fn copies_every_artifact_from_a_trickling_stream() {
    let b = built();
    for (seed, workers) in [(1, 1), (2, 2), (3, 4)] {
        let mut r = open(trickle(&b.bundle, seed), &b.keys).unwrap();
        r.set_workers(workers);
        assert_eq!(r.manifest().name, "minimal");
        assert_eq!(
            r.manifest_digest().to_string(),
            sha256_hex(r.manifest_bytes())
        );
        let files = ["rootfs.ext4", "vmlinuz", "initrd.img"];
        let mut i = 0;
        while let Some(a) = r.next_artifact().unwrap() {
            let want = std::fs::read(b.build.join(files[i])).unwrap();
            assert_eq!(a.size, want.len() as u64);
            assert_eq!(a.sha256.to_string(), sha256_hex(&want));
            // A destination full of garbage: holes must be written as zeros.
            let mut dst = std::io::Cursor::new(vec![0xa5u8; want.len()]);
            let mut progress = 0;
            r.copy_artifact(&mut dst, Holes::WriteZeros, |n| progress += n)
                .unwrap();
            assert_eq!(progress, a.size);
            assert!(dst.into_inner() == want, "{} differs", a.name);
            i += 1;
        }
        assert_eq!(i, 3);
        let rest = r.finish().unwrap();
        assert!(rest.inner.is_empty());
    }
}

#[test]
fn seeking_over_holes_makes_a_sparse_file_of_the_right_length() {
    let t = tempfile::tempdir().unwrap();
    // Data, then a hole to the very end: the trailing hole must still set the length.
    let rootfs = t.path().join("rootfs.img");
    let head = mixed_bytes(100_000, 5);
    sparse_file(&rootfs, 8 << 20, &[(0, &head), (3 << 20, b"middle")]);
    write_manifest(t.path(), &[("rootfs", "rootfs.img")]);
    let key = SecretKey::from_seed(&[9; 32]);
    let (meta, inputs) = slate::bundle::from_build_dir(t.path()).unwrap();
    let mut out = Vec::new();
    let mut spool = std::io::Cursor::new(Vec::new());
    let w = slate::bundle::write_bundle(
        &mut out,
        &mut spool,
        &meta,
        &inputs,
        &[key],
        &Default::default(),
        |_| {},
    )
    .unwrap();
    assert!(
        w.manifest.artifacts[0].holes() >= 6,
        "{:?}",
        w.manifest.artifacts[0].holes()
    );
    assert!(out.len() < 200_000, "holes were stored: {}", out.len());
    let keys = TrustedKeys::new([SecretKey::from_seed(&[9; 32]).public()], 1).unwrap();
    let mut r = open(&out[..], &keys).unwrap();
    r.next_artifact().unwrap().unwrap();
    let dest = t.path().join("copy.img");
    let mut f = std::fs::File::create(&dest).unwrap();
    r.copy_artifact(&mut f, Holes::Seek, |_| {}).unwrap();
    r.finish().unwrap();
    drop(f);
    let md = std::fs::metadata(&dest).unwrap();
    assert_eq!(md.len(), 8 << 20);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(&rootfs).unwrap()
    );
    use std::os::unix::fs::MetadataExt;
    // Two data chunks of 1 MiB are written; the six holes are not.
    assert!(
        md.blocks() * 512 <= 3 << 20,
        "not sparse: {} blocks",
        md.blocks()
    );
}

#[test]
fn chunks_are_handed_over_in_order_and_verified() {
    let b = built();
    let mut r = open(&b.bundle[..], &b.keys).unwrap();
    let a = r.next_artifact().unwrap().unwrap();
    let mut next = 0u64;
    let mut holes = 0;
    r.read_chunks(|c| {
        assert_eq!(c.index, next);
        assert_eq!(c.offset, next * a.chunk_size);
        assert_eq!(c.last, next + 1 == a.chunks);
        if let ChunkData::Zeros(_) = c.data {
            holes += 1;
        }
        next += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(next, a.chunks);
    assert_eq!(holes, a.holes);
    // read_chunks without a current artifact is a usage error, not a panic.
    assert!(matches!(
        r.read_chunks(|_| Ok(())),
        Err(BundleError::Unsupported(_))
    ));
}

#[test]
fn unread_artifacts_are_skipped_or_verified_by_finish() {
    let b = built();
    // Skip rootfs and kernel, copy only the initrd.
    let mut r = open(trickle(&b.bundle, 7), &b.keys).unwrap();
    let mut names = vec![];
    while let Some(a) = r.next_artifact().unwrap() {
        names.push(a.name.clone());
        if a.name == "initrd" {
            let mut v = std::io::Cursor::new(Vec::new());
            r.copy_artifact(&mut v, Holes::WriteZeros, |_| {}).unwrap();
            assert_eq!(
                v.into_inner(),
                std::fs::read(b.build.join("initrd.img")).unwrap()
            );
        }
    }
    assert_eq!(names, ["rootfs", "kernel", "initrd"]);
    r.finish().unwrap();

    // finish() verifies whatever was not read: a damaged last chunk is found.
    let layout = Layout::parse(&b.bundle);
    let (_, _, off, _) = *layout.chunks.last().unwrap();
    let mut bad = b.bundle.clone();
    bad[off as usize + 2] ^= 0x40;
    let r = open(&bad[..], &b.keys).unwrap();
    let e = r.finish().unwrap_err();
    assert!(e.corrupt_kind().is_some(), "{e}");
}

#[test]
fn trailing_data_is_an_error_for_finish_but_not_into_inner() {
    let b = built();
    let mut with_tail = b.bundle.clone();
    with_tail.extend_from_slice(&[0u8; 4096]);
    let r = open(&with_tail[..], &b.keys).unwrap();
    assert!(matches!(
        r.finish().unwrap_err(),
        BundleError::Corrupt(CorruptKind::TrailingData { .. })
    ));
    // A block device holding a bundle then old data: verify every artifact,
    // then stop at the bundle's end.
    let mut r = open(&with_tail[..], &b.keys).unwrap();
    while r.next_artifact().unwrap().is_some() {
        r.verify_artifact(|_| {}).unwrap();
    }
    let rest = r.into_inner();
    assert_eq!(rest.len(), 4096);
}

/// Fails every write after `left` bytes.
struct Failing {
    left: usize,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for Failing {
    fn seek(&mut self, _: SeekFrom) -> std::io::Result<u64> {
        Ok(0)
    }
}

#[test]
fn sink_errors_name_the_artifact_and_poison_the_reader() {
    let b = built();
    let mut r = open(&b.bundle[..], &b.keys).unwrap();
    r.next_artifact().unwrap().unwrap();
    let e = r
        .copy_artifact(&mut Failing { left: 100_000 }, Holes::WriteZeros, |_| {})
        .unwrap_err();
    assert!(matches!(e, BundleError::Sink { .. }), "{e}");
    assert_eq!(e.to_string(), "writing artifact rootfs: disk on fire");
    assert!(matches!(r.next_artifact(), Err(BundleError::Aborted)));
}

#[test]
fn corrupt_chunk_is_never_handed_over() {
    let b = built();
    let layout = Layout::parse(&b.bundle);
    // The fourth data chunk of rootfs.
    let (name, index, off, len) = layout.chunks[3].clone();
    assert_eq!(name, "rootfs");
    let mut bad = b.bundle.clone();
    bad[(off + len / 2) as usize] ^= 1;
    let mut r = open(&bad[..], &b.keys).unwrap();
    r.next_artifact().unwrap().unwrap();
    let mut seen = vec![];
    let e = r
        .read_chunks(|c| {
            seen.push(c.index);
            Ok(())
        })
        .unwrap_err();
    assert!(seen.iter().all(|i| *i < index), "{seen:?} includes {index}");
    let msg = e.to_string();
    assert!(msg.contains(&format!("chunk {index} of rootfs")), "{msg}");
}

#[test]
fn keys_from_raw_bytes_and_pem_agree() {
    let k = SecretKey::from_seed(&[3; 32]);
    let raw = k.public().to_raw();
    let a = TrustedKeys::from_raw(&[raw], 1).unwrap();
    let pem = k.public().to_pem();
    let b = PublicKey::from_pem(&pem, Path::new("x.pub")).unwrap();
    assert_eq!(a.keys()[0], b);
    assert!(
        TrustedKeys::from_raw(&[[0u8; 32]], 1).is_err(),
        "weak key accepted"
    );
}

#[test]
fn whole_artifact_digest_is_checked_unless_turned_off() {
    // A manifest whose chunk digests are right but whose whole-artifact
    // digest is not (a signer bug): signed with a trusted key.
    let b = built();
    let l = Layout::parse(&b.bundle);
    let m = std::str::from_utf8(&b.bundle[l.manifest_range()]).unwrap();
    // (The rootfs has many chunks, so its digest appears only once.)
    let rootfs_sha = l.manifest["artifacts"][0]["sha256"].as_str().unwrap();
    assert_eq!(m.matches(rootfs_sha).count(), 1);
    let m = m.replace(rootfs_sha, &"0".repeat(64)).into_bytes();
    let key = SecretKey::from_seed(&[8; 32]);
    let rec = key.sign_record(&m).encode();
    let bundle = assemble(&m, &[rec], &b.bundle[l.payload_offset()..]);
    let keys = TrustedKeys::new([key.public()], 1).unwrap();

    let e = open(&bundle[..], &keys).unwrap().finish().unwrap_err();
    assert_eq!(
        e.to_string(),
        "corrupt bundle: artifact rootfs does not match its sha256"
    );
    assert_eq!(e.corrupt_kind().unwrap().code(), "artifact_digest");

    let mut r = open(&bundle[..], &keys).unwrap();
    r.set_check_whole_digest(false);
    r.finish().unwrap();
}
