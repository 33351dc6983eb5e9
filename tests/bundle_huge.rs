//! A bundle that is itself larger than 4 GiB, so that its chunks sit at
//! bundle offsets past 2^31 and 2^32: damage out there is found and named by
//! `slate verify` and `slate extract`, and an artifact stored past 4 GiB is
//! extracted intact. (tests/bundle_large.rs covers a >4 GiB *artifact* in a
//! small bundle.)
//!
//! The bundle is assembled by hand per docs/bundle-format.md as a sparse
//! file: each rootfs chunk is a zstd frame of raw blocks (RFC 8878 3.1.1.2)
//! holding 1 MiB that is zero but for its last byte, so the file is 4.3 GB
//! long but only frame and block headers and those bytes take disk space
//! (~140 MiB). Signed with a test key, so only the damage can refuse it.

mod bundle_support;

use bundle_support::*;
use sha2::Digest as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

const CHUNK: u64 = 1 << 20;
/// Raw block size (the zstd maximum).
const BLOCK: u64 = 128 << 10;
/// Rootfs chunks: 4160 MiB of content, 4.36 GB of frames.
const CHUNKS: u64 = 4160;
const FRAME_HEADER: [u8; 9] = {
    // Magic, then Frame_Header_Descriptor 0xA0: single segment, 4-byte
    // content size, no checksum, no dictionary; content size 1 MiB.
    let m = 0xFD2F_B528u32.to_le_bytes();
    let s = (CHUNK as u32).to_le_bytes();
    [m[0], m[1], m[2], m[3], 0xA0, s[0], s[1], s[2], s[3]]
};
/// Bytes of one rootfs chunk's frame.
const FRAME_LEN: u64 = 9 + (CHUNK / BLOCK) * (3 + BLOCK);

/// One chunk's content: zeros, then a 1.
fn chunk_content() -> Vec<u8> {
    let mut c = vec![0u8; CHUNK as usize];
    c[CHUNK as usize - 1] = 1;
    c
}

/// Writes one chunk's frame at `at` (only the nonzero bytes).
fn write_frame(f: &File, at: u64) {
    f.write_all_at(&FRAME_HEADER, at).unwrap();
    let blocks = CHUNK / BLOCK;
    let mut pos = at + 9;
    for i in 0..blocks {
        let last = u32::from(i == blocks - 1);
        let h = ((BLOCK as u32) << 3 | last).to_le_bytes();
        f.write_all_at(&h[..3], pos).unwrap();
        pos += 3 + BLOCK;
    }
    f.write_all_at(&[1], pos - 1).unwrap();
}

struct Huge {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
    public: std::path::PathBuf,
    payload_offset: u64,
    kernel: Vec<u8>,
    kernel_offset: u64,
    kernel_frame: Vec<u8>,
    len: u64,
}

fn huge_bundle() -> Huge {
    let dir = tempfile::tempdir().unwrap();
    let content = chunk_content();
    let chunk_sha = sha256_hex(&content);
    let mut whole = sha2::Sha256::new();
    for _ in 0..CHUNKS {
        whole.update(&content);
    }
    let whole: [u8; 32] = whole.finalize().into();
    let whole = slate::bundle::Digest(whole).to_string();
    let kernel = mixed_bytes(200_000, 9);
    let kernel_frame = zstd::bulk::compress(&kernel, 3).unwrap();
    let chunks: Vec<String> = (0..CHUNKS)
        .map(|_| format!("{{\"compressed_size\":{FRAME_LEN},\"sha256\":\"{chunk_sha}\"}}"))
        .collect();
    let manifest = format!(
        "{{\"artifacts\":[{{\"chunk_size\":{CHUNK},\"chunks\":[{}],\"name\":\"rootfs\",\
         \"sha256\":\"{whole}\",\"size\":{}}},{{\"chunk_size\":{CHUNK},\"chunks\":[\
         {{\"compressed_size\":{},\"sha256\":\"{k}\"}}],\"name\":\"kernel\",\"sha256\":\"{k}\",\
         \"size\":{}}}],\"compatible\":\"c\",\"created\":0,\"format\":1,\"name\":\"huge\",\
         \"security_version\":0,\"version\":\"1\"}}",
        chunks.join(","),
        CHUNKS * CHUNK,
        kernel_frame.len(),
        kernel.len(),
        k = sha256_hex(&kernel),
    )
    .into_bytes();
    let payload_len = CHUNKS * FRAME_LEN + kernel_frame.len() as u64;
    let head = assemble_with(&manifest, &[record(1, &manifest)], &[], payload_len);
    let path = dir.path().join("huge.slate");
    let f = File::create(&path).unwrap();
    f.write_all_at(&head, 0).unwrap();
    let payload_offset = head.len() as u64;
    for i in 0..CHUNKS {
        write_frame(&f, payload_offset + i * FRAME_LEN);
    }
    let kernel_offset = payload_offset + CHUNKS * FRAME_LEN;
    f.write_all_at(&kernel_frame, kernel_offset).unwrap();
    let len = kernel_offset + kernel_frame.len() as u64;
    assert_eq!(f.metadata().unwrap().len(), len);
    assert!(len > (4 << 30) + (64 << 20), "{len}");
    let public = pubkey_file(1, &dir.path().join("p1.pub"));
    Huge {
        dir,
        path,
        public,
        payload_offset,
        kernel,
        kernel_offset,
        kernel_frame,
        len,
    }
}

impl Huge {
    /// Runs `check` with the byte at `at` xor-ed with `mask`, then restores it.
    fn with_flip(&self, at: u64, mask: u8, check: impl FnOnce()) {
        let f = File::options()
            .read(true)
            .write(true)
            .open(&self.path)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ mask], at).unwrap();
        check();
        f.write_all_at(&b, at).unwrap();
    }

    /// The bundle offset of rootfs chunk `i`'s data byte `k`.
    fn rootfs_byte(&self, i: u64, k: u64) -> u64 {
        let block = k / BLOCK;
        self.payload_offset + i * FRAME_LEN + 9 + block * (3 + BLOCK) + 3 + k % BLOCK
    }

    fn extract_kernel(&self, out: &Path) -> (i32, String, String) {
        run(slate()
            .arg("extract")
            .arg(&self.path)
            .arg("--pubkey")
            .arg(&self.public)
            .arg("--artifact")
            .arg("kernel")
            .arg("-o")
            .arg(out))
    }
}

/// The first rootfs chunk whose frame starts past `offset`.
fn chunk_past(h: &Huge, offset: u64) -> u64 {
    (offset - h.payload_offset).div_ceil(FRAME_LEN)
}

#[test]
fn flips_past_2_and_4_gib_of_bundle_are_found() {
    let h = huge_bundle();
    let du = std::process::Command::new("du")
        .arg("-k")
        .arg(&h.path)
        .output()
        .unwrap();
    eprintln!(
        "bundle: {} bytes, on disk: {}",
        h.len,
        String::from_utf8_lossy(&du.stdout).trim()
    );

    // Intact: valid, and the kernel stored past 4 GiB comes out intact.
    let (code, v, err) = verify_json(&h.path, &[&h.public], 1);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["valid"], true);
    assert!(h.kernel_offset > 4 << 30);
    let out = h.dir.path().join("vmlinuz");
    let (code, _, err) = h.extract_kernel(&out);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), h.kernel);
    std::fs::remove_file(&out).unwrap();

    // A data byte of a chunk just past 2 GiB, then of one past 4 GiB, and a
    // raw block header past 4 GiB.
    for (what, offset, byte) in [
        ("data past 2 GiB", 2u64 << 30, 1000),
        ("data past 4 GiB", 4 << 30, CHUNK - 1),
        ("block header past 4 GiB", 4 << 30, BLOCK),
    ] {
        let i = chunk_past(&h, offset);
        let at = if what.starts_with("block header") {
            h.rootfs_byte(i, byte) - 2
        } else {
            h.rootfs_byte(i, byte)
        };
        assert!(at > offset, "{what}: {at}");
        let needle = format!("chunk {i} of rootfs (offset {})", i * CHUNK);
        h.with_flip(at, 0x40, || {
            assert_refused(&h.path, &[&h.public], "corrupt", None, &needle);
        });
    }

    // The kernel's own frame, past 4 GiB, through extract. (Damage in an
    // earlier artifact refused by extract: tests/bundle_forged.rs.)
    let at = h.kernel_offset + h.kernel_frame.len() as u64 / 2;
    h.with_flip(at, 0x01, || {
        let (code, _, err) = h.extract_kernel(&out);
        assert_eq!(code, VERIFICATION, "{err}");
        assert!(err.contains("chunk 0 of kernel"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!out.exists());
    });

    // Cut past 4 GiB, inside the kernel's frame.
    let f = File::options().write(true).open(&h.path).unwrap();
    f.set_len(h.len - 10).unwrap();
    assert_refused(
        &h.path,
        &[&h.public],
        "corrupt",
        Some("truncated"),
        "truncated in the payload",
    );
    let names: Vec<_> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "temp files: {names:?}"
    );
}
