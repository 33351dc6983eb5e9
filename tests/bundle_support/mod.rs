//! Helpers shared by the bundle tests: build directories, running the binary,
//! and an independent reading of the bundle layout written from
//! docs/bundle-format.md (not from slate's own reader), used to find and
//! patch regions and to craft bundles the writer would refuse to make.

#![allow(dead_code)]

use slate::build_manifest::{Artifact, BuildManifest, FORMAT};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The slate binary with a fixed environment.
pub fn slate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slate"));
    c.env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env_remove("SOURCE_DATE_EPOCH");
    c
}

/// Runs and returns (exit code, stdout, stderr); fails the test on a signal
/// (a panic or abort is never an acceptable answer).
pub fn run(c: &mut Command) -> (i32, String, String) {
    let out: Output = c.output().expect("running slate");
    let code = out.status.code().unwrap_or_else(|| {
        panic!(
            "slate died from a signal: {:?}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(code, 101, "slate panicked: {stderr}");
    (code, stdout, stderr)
}

/// Runs and asserts success.
pub fn ok(c: &mut Command) -> String {
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "slate failed: {err}");
    out
}

/// Exit codes (docs/cli.md): anything else, invalid input, verification
/// failed, I/O.
pub const FAILURE: i32 = 1;
pub const INVALID_INPUT: i32 = 3;
pub const VERIFICATION: i32 = 4;
pub const IO: i32 = 5;

/// Runs and asserts a one-line error with exit code 1; returns the line.
pub fn fails(c: &mut Command) -> String {
    fails_with(FAILURE, c)
}

/// Runs and asserts a one-line error with exit code `want`; returns the line.
pub fn fails_with(want: i32, c: &mut Command) -> String {
    let (code, _, err) = run(c);
    assert_eq!(code, want, "expected exit {want}, got {code}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "error is not one line: {err}");
    assert!(lines[0].starts_with("slate: error: "), "{err}");
    lines[0].to_string()
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no rand crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Mixed content: compressible text runs, random runs and zero runs.
pub fn mixed_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut v = vec![0u8; len];
    let mut pos = 0;
    while pos < len {
        let run = (rng.below(200_000) as usize + 1).min(len - pos);
        match rng.below(3) {
            0 => rng.fill(&mut v[pos..pos + run]),
            1 => {
                for (i, b) in v[pos..pos + run].iter_mut().enumerate() {
                    *b = b"slate bundle test data "[i % 23];
                }
            }
            _ => {}
        }
        pos += run;
    }
    v
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    slate::bundle::Digest::of(bytes).to_string()
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    use std::io::Read;
    let mut f = File::open(path).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let d: [u8; 32] = h.finalize().into();
    slate::bundle::Digest(d).to_string()
}

/// Writes a build directory: each artifact file plus manifest.json.
pub fn build_dir(dir: &Path, artifacts: &[(&str, &str, &[u8])]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (_, file, data) in artifacts {
        std::fs::write(dir.join(file), data).unwrap();
    }
    write_manifest(
        dir,
        &artifacts
            .iter()
            .map(|(n, f, _)| (*n, *f))
            .collect::<Vec<_>>(),
    );
    dir.to_path_buf()
}

/// Writes manifest.json for files already in `dir`.
pub fn write_manifest(dir: &Path, artifacts: &[(&str, &str)]) {
    write_manifest_with(dir, artifacts, &|p| sha256_file(p));
}

/// SHA-256 of a sparse file's content (zeros except `data`, in order),
/// computed in memory rather than by reading gigabytes of holes.
pub fn sha256_sparse(len: u64, data: &[(u64, &[u8])]) -> String {
    use sha2::Digest;
    let zeros = vec![0u8; 1 << 20];
    let mut h = sha2::Sha256::new();
    let mut pos = 0u64;
    let zero_to = |h: &mut sha2::Sha256, pos: &mut u64, end: u64| {
        while *pos < end {
            let n = (end - *pos).min(zeros.len() as u64) as usize;
            h.update(&zeros[..n]);
            *pos += n as u64;
        }
    };
    for (off, bytes) in data {
        zero_to(&mut h, &mut pos, *off);
        h.update(bytes);
        pos += bytes.len() as u64;
    }
    zero_to(&mut h, &mut pos, len);
    let d: [u8; 32] = h.finalize().into();
    slate::bundle::Digest(d).to_string()
}

/// Writes manifest.json, taking each file's digest from `sha`.
pub fn write_manifest_with(dir: &Path, artifacts: &[(&str, &str)], sha: &dyn Fn(&Path) -> String) {
    let m = BuildManifest {
        format: FORMAT,
        name: "minimal".into(),
        version: "1.2.3".into(),
        compatible: "slate-qemu-x86_64".into(),
        security_version: 7,
        source_date_epoch: 1_700_000_000,
        artifacts: artifacts
            .iter()
            .map(|(name, file)| {
                let p = dir.join(file);
                Artifact {
                    name: name.to_string(),
                    file: file.to_string(),
                    size: std::fs::metadata(&p).unwrap().len(),
                    sha256: sha(&p),
                    verity: None,
                }
            })
            .collect(),
        disk: None,
        layout: None,
        packages: vec![],
    };
    std::fs::write(dir.join("manifest.json"), m.to_json()).unwrap();
}

/// A small build: a rootfs with zero runs, a kernel and an initrd.
pub fn small_build(dir: &Path) -> PathBuf {
    // Mixed data around a zero run that covers whole chunks (holes).
    let mut rootfs = mixed_bytes(1_200_000, 11);
    rootfs.resize(3_400_000, 0);
    rootfs.extend_from_slice(&mixed_bytes(500_000, 12));
    let kernel = mixed_bytes(700_000, 22);
    let initrd = mixed_bytes(1000, 33);
    build_dir(
        dir,
        &[
            ("rootfs", "rootfs.ext4", &rootfs),
            ("kernel", "vmlinuz", &kernel),
            ("initrd", "initrd.img", &initrd),
        ],
    )
}

/// A sparse file of `len` bytes with `data` written at each offset.
pub fn sparse_file(path: &Path, len: u64, data: &[(u64, &[u8])]) {
    let mut f = File::create(path).unwrap();
    f.set_len(len).unwrap();
    for (off, bytes) in data {
        f.seek(SeekFrom::Start(*off)).unwrap();
        f.write_all(bytes).unwrap();
    }
}

/// Makes PREFIX.key / PREFIX.pub with `slate keygen`.
pub fn keygen(prefix: &Path) -> (PathBuf, PathBuf) {
    ok(slate().arg("keygen").arg(prefix));
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

/// Bundles `build` with `keys` (and extra arguments) into `out`.
pub fn bundle(build: &Path, keys: &[&Path], out: &Path, extra: &[&str]) {
    let mut c = slate();
    c.arg("bundle").arg(build);
    for k in keys {
        c.arg("--key").arg(k);
    }
    c.arg("-o").arg(out).args(extra);
    ok(&mut c);
}

/// `slate verify --json` on `bundle`; returns (exit code, parsed stdout, stderr).
pub fn verify_json(
    bundle: &Path,
    pubs: &[&Path],
    threshold: usize,
) -> (i32, serde_json::Value, String) {
    let mut c = slate();
    c.arg("verify").arg(bundle).arg("--json");
    for p in pubs {
        c.arg("--pubkey").arg(p);
    }
    c.arg("--threshold").arg(threshold.to_string());
    let (code, out, err) = run(&mut c);
    let v = serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null);
    (code, v, err)
}

/// Asserts `slate verify` refuses `bundle` with error `code` (and corrupt
/// `kind` if given) and a one-line message containing `needle`.
pub fn assert_refused(bundle: &Path, pubs: &[&Path], code: &str, kind: Option<&str>, needle: &str) {
    let (exit, v, err) = verify_json(bundle, pubs, 1);
    assert_eq!(exit, VERIFICATION, "accepted or crashed ({exit}): {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["error"]["code"], code, "{v} / {err}");
    if let Some(k) = kind {
        assert_eq!(v["error"]["kind"], k, "{v}");
    }
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

// ---- The layout, read per docs/bundle-format.md -------------------------

pub const HEADER_LEN: usize = 40;
pub const RECORD_LEN: usize = 96;

/// Where each region of a bundle is.
#[derive(Debug, Clone)]
pub struct Layout {
    pub manifest_len: usize,
    pub signature_count: usize,
    pub payload_len: u64,
    pub manifest: serde_json::Value,
    /// (artifact name, chunk index, bundle offset, compressed size) of data chunks.
    pub chunks: Vec<(String, u64, u64, u64)>,
}

impl Layout {
    pub fn parse(b: &[u8]) -> Layout {
        assert_eq!(&b[0..8], b"\x89SLATE\r\n");
        let le32 = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
        assert_eq!(le32(8), 1);
        assert_eq!(
            crc32c::crc32c(&b[0..36]),
            u32::from_le_bytes(b[36..40].try_into().unwrap())
        );
        let manifest_len = le32(16);
        let signature_count = le32(20);
        let payload_len = u64::from_le_bytes(b[24..32].try_into().unwrap());
        let manifest: serde_json::Value =
            serde_json::from_slice(&b[HEADER_LEN..HEADER_LEN + manifest_len]).unwrap();
        let mut off = (HEADER_LEN + manifest_len + signature_count * RECORD_LEN) as u64;
        let mut chunks = Vec::new();
        for a in manifest["artifacts"].as_array().unwrap() {
            let name = a["name"].as_str().unwrap().to_string();
            for (i, c) in a["chunks"].as_array().unwrap().iter().enumerate() {
                let z = c["compressed_size"].as_u64().unwrap();
                if z > 0 {
                    chunks.push((name.clone(), i as u64, off, z));
                }
                off += z;
            }
        }
        assert_eq!(
            off,
            b.len() as u64,
            "layout does not add up to the file length"
        );
        Layout {
            manifest_len,
            signature_count,
            payload_len,
            manifest,
            chunks,
        }
    }

    pub fn manifest_range(&self) -> std::ops::Range<usize> {
        HEADER_LEN..HEADER_LEN + self.manifest_len
    }

    pub fn signatures_offset(&self) -> usize {
        HEADER_LEN + self.manifest_len
    }

    pub fn payload_offset(&self) -> usize {
        self.signatures_offset() + self.signature_count * RECORD_LEN
    }
}

/// Assembles a bundle from parts, per the format document.
pub fn assemble(manifest: &[u8], records: &[[u8; 96]], payload: &[u8]) -> Vec<u8> {
    assemble_with(manifest, records, payload, payload.len() as u64)
}

/// Like [`assemble`] with an arbitrary payload length in the header.
pub fn assemble_with(
    manifest: &[u8],
    records: &[[u8; 96]],
    payload: &[u8],
    payload_len: u64,
) -> Vec<u8> {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(b"\x89SLATE\r\n");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[16..20].copy_from_slice(&(manifest.len() as u32).to_le_bytes());
    h[20..24].copy_from_slice(&(records.len() as u32).to_le_bytes());
    h[24..32].copy_from_slice(&payload_len.to_le_bytes());
    fix_crc(&mut h);
    let mut out = h.to_vec();
    out.extend_from_slice(manifest);
    for r in records {
        out.extend_from_slice(r);
    }
    out.extend_from_slice(payload);
    out
}

/// Recomputes the header checksum after a deliberate header edit.
pub fn fix_crc(h: &mut [u8]) {
    let crc = crc32c::crc32c(&h[0..36]);
    h[36..40].copy_from_slice(&crc.to_le_bytes());
}

/// A signature record made with ed25519-dalek directly.
pub fn record(seed: u8, manifest: &[u8]) -> [u8; 96] {
    use ed25519_dalek::Signer;
    let k = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let mut r = [0u8; 96];
    r[..32].copy_from_slice(k.verifying_key().as_bytes());
    r[32..].copy_from_slice(&k.sign(manifest).to_bytes());
    r
}

/// Writes the SPKI PEM public key for `seed` (see [`record`]).
pub fn pubkey_file(seed: u8, path: &Path) -> PathBuf {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let k = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let pem = k
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    std::fs::write(path, pem).unwrap();
    path.to_path_buf()
}

/// A canonical manifest with one artifact of `size` bytes in `chunks`, as
/// the format document spells it (written by hand, not by slate).
pub fn manifest_json(size: u64, chunk_size: u64, chunks: &[(u64, String)], sha: &str) -> Vec<u8> {
    let chunks: Vec<String> = chunks
        .iter()
        .map(|(z, h)| format!("{{\"compressed_size\":{z},\"sha256\":\"{h}\"}}"))
        .collect();
    format!(
        "{{\"artifacts\":[{{\"chunk_size\":{chunk_size},\"chunks\":[{}],\"name\":\"rootfs\",\
         \"sha256\":\"{sha}\",\"size\":{size}}}],\"compatible\":\"c\",\"created\":0,\"format\":1,\
         \"name\":\"n\",\"security_version\":0,\"version\":\"1\"}}",
        chunks.join(",")
    )
    .into_bytes()
}
