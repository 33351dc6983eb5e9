//! Bundles that are damaged or forged are refused by `slate extract` as they
//! are by `slate verify` (tests/bundle_corrupt.rs), and extract leaves nothing
//! at its output; signed manifests whose only fault is an artifact name that
//! is a path are refused by the name check; artifacts of two valid bundles
//! spliced into one are found. (Failure catalogue: docs/reliability.md.)

mod bundle_support;

use bundle_support::*;
use std::path::{Path, PathBuf};

/// `slate extract` expecting a one-line refusal (exit 1, no panic); checks
/// that the output directory is still empty. Returns the line.
fn extract_refused(bundle: &Path, pubs: &[&Path], threshold: usize, needle: &str) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("rootfs.img");
    let mut c = slate();
    c.arg("extract").arg(bundle).arg("-o").arg(&out);
    for p in pubs {
        c.arg("--pubkey").arg(p);
    }
    c.arg("--threshold").arg(threshold.to_string());
    let e = fails_with(VERIFICATION, &mut c);
    assert!(e.contains(needle), "extract: {e:?} lacks {needle:?}");
    let left: Vec<_> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "extract left {left:?} behind after: {e}");
    e
}

/// Refused by verify (with `code`) and by extract, both naming `needle`.
fn refused_by_both(bundle: &Path, pubs: &[&Path], threshold: usize, code: &str, needle: &str) {
    let (exit, v, err) = verify_json(bundle, pubs, threshold);
    assert_eq!(
        exit, VERIFICATION,
        "verify accepted or crashed ({exit}): {err}"
    );
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert_eq!(v["error"]["code"], code, "{v} / {err}");
    assert!(err.contains(needle), "verify: {err:?} lacks {needle:?}");
    extract_refused(bundle, pubs, threshold, needle);
}

struct Fixture {
    dir: tempfile::TempDir,
    bundle: Vec<u8>,
    layout: Layout,
    public: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let build = small_build(&dir.path().join("build"));
    let (key, public) = keygen(&dir.path().join("k"));
    let out = dir.path().join("good.slate");
    bundle(&build, &[&key], &out, &["--chunk-size", "64K"]);
    let bundle = std::fs::read(&out).unwrap();
    let layout = Layout::parse(&bundle);
    Fixture {
        dir,
        bundle,
        layout,
        public,
    }
}

impl Fixture {
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

#[test]
fn every_region_damaged_is_refused_by_extract() {
    let f = fixture();
    let l = &f.layout;
    let flip = |at: usize| {
        let mut b = f.bundle.clone();
        b[at] ^= 0x10;
        b
    };
    let mut cases: Vec<(&str, Vec<u8>, &str, String)> = vec![
        (
            "magic",
            flip(2),
            "not_a_bundle",
            "not a slate bundle".into(),
        ),
        (
            "version",
            flip(8),
            "unsupported",
            "unsupported bundle format version".into(),
        ),
        ("header", flip(26), "corrupt", "header checksum".into()),
        (
            "manifest",
            flip(l.manifest_range().start + l.manifest_len / 2),
            "bad_signature",
            "does not verify".into(),
        ),
        (
            "signer key",
            flip(l.signatures_offset() + 5),
            "untrusted",
            "not signed by a trusted key".into(),
        ),
        (
            "signature",
            flip(l.signatures_offset() + 70),
            "bad_signature",
            "does not verify".into(),
        ),
        (
            "truncated",
            f.bundle[..f.bundle.len() - 100].to_vec(),
            "corrupt",
            "truncated in the payload".into(),
        ),
        (
            "garbage after",
            [&f.bundle[..], b"garbage"].concat(),
            "corrupt",
            format!("after the end of the bundle at byte {}", f.bundle.len()),
        ),
        (
            "garbage",
            mixed_bytes(100_000, 3),
            "not_a_bundle",
            "not a slate bundle".into(),
        ),
    ];
    // A newer format version with a valid header checksum.
    let mut v2 = f.bundle.clone();
    v2[8] = 2;
    fix_crc(&mut v2);
    cases.push((
        "unknown version",
        v2,
        "unsupported",
        "format version 2 (this slate reads version 1)".into(),
    ));
    // A chunk of each artifact, the last one included: extract of the
    // rootfs must refuse a bundle whose later artifacts are damaged too.
    for name in ["rootfs", "kernel", "initrd"] {
        let (_, index, off, len) = l.chunks.iter().rfind(|c| c.0 == name).unwrap().clone();
        cases.push((
            "chunk",
            flip((off + len / 2) as usize),
            "corrupt",
            format!("chunk {index} of {name} "),
        ));
    }
    for (what, bytes, code, needle) in cases {
        let p = f.write("bad.slate", &bytes);
        eprintln!("case: {what}");
        refused_by_both(&p, &[&f.public], 1, code, &needle);
    }
}

#[test]
fn signatures_against_the_threshold_through_extract() {
    let f = fixture();
    let t = f.dir.path();
    let manifest = &f.bundle[f.layout.manifest_range()];
    let payload = &f.bundle[f.layout.payload_offset()..];
    let p1 = pubkey_file(1, &t.join("p1.pub"));
    let p2 = pubkey_file(2, &t.join("p2.pub"));
    let other = pubkey_file(3, &t.join("p3.pub"));
    let rec = |s| record(s, manifest);

    // Signed by a key the device does not trust.
    let good = f.write("good.slate", &f.bundle);
    refused_by_both(
        &good,
        &[&other],
        1,
        "untrusted",
        "not signed by a trusted key",
    );
    // No signature.
    let none = f.write("none.slate", &assemble(manifest, &[], payload));
    refused_by_both(&none, &[&p1], 1, "no_signature", "no signature");
    // One key twice does not make two.
    let twice = f.write(
        "twice.slate",
        &assemble(manifest, &[rec(1), rec(1)], payload),
    );
    refused_by_both(
        &twice,
        &[&p1, &p2],
        2,
        "untrusted",
        "signed by 1 distinct trusted key(s), 2 required",
    );
    // Two distinct keys do: extract writes the rootfs.
    let both = f.write(
        "both.slate",
        &assemble(manifest, &[rec(2), rec(1)], payload),
    );
    let out = t.join("rootfs.img");
    ok(slate()
        .arg("extract")
        .arg(&both)
        .args(["--pubkey"])
        .arg(&p1)
        .arg("--pubkey")
        .arg(&p2)
        .args(["--threshold", "2", "-o"])
        .arg(&out));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(t.join("build/rootfs.ext4")).unwrap()
    );
}

#[test]
fn huge_claims_are_refused_by_extract() {
    let f = fixture();
    let t = f.dir.path();
    let p1 = pubkey_file(1, &t.join("p1.pub"));
    let z = sha256_hex(&[0u8; 65536]);
    // A signed manifest claiming a petabyte artifact, and a 4 GiB manifest.
    let m = manifest_json(1 << 50, 65536, &[(0, z.clone())], &z);
    let r = record(1, &m);
    let p = f.write("huge.slate", &assemble_with(&m, &[r], &[], 0));
    refused_by_both(
        &p,
        &[&p1],
        1,
        "corrupt",
        "1 chunks listed, size 1125899906842624",
    );
    let mut h = f.bundle[..40].to_vec();
    h[16..20].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    fix_crc(&mut h);
    let p = f.write("huge2.slate", &h);
    refused_by_both(
        &p,
        &[&f.public],
        1,
        "corrupt",
        "manifest length 4294967280 exceeds the limit",
    );
}

/// A manifest as the format document spells it, with one artifact named
/// `name` holding `data` in one chunk (written by hand, not by slate).
fn named_manifest(name: &str, data: &[u8], frame_len: usize) -> Vec<u8> {
    let sha = sha256_hex(data);
    format!(
        "{{\"artifacts\":[{{\"chunk_size\":65536,\"chunks\":[{{\"compressed_size\":{frame_len},\
         \"sha256\":\"{sha}\"}}],\"name\":{name:?},\"sha256\":\"{sha}\",\"size\":{}}}],\
         \"compatible\":\"c\",\"created\":0,\"format\":1,\"name\":\"n\",\"security_version\":0,\
         \"version\":\"1\"}}",
        data.len()
    )
    .into_bytes()
}

#[test]
fn signed_manifest_with_path_names_is_refused_by_the_name_check() {
    let f = fixture();
    let t = f.dir.path();
    let p1 = pubkey_file(1, &t.join("p1.pub"));
    let data = b"payload of an artifact whose name is a path".repeat(10);
    let frame = zstd::bulk::compress(&data, 3).unwrap();
    // The control: the same bundle with a plain name verifies and extracts,
    // so only the name can be what refuses the others.
    let m = named_manifest("rootfs", &data, frame.len());
    let p = f.write("plain.slate", &assemble(&m, &[record(1, &m)], &frame));
    let (code, _, err) = verify_json(&p, &[&p1], 1);
    assert_eq!(code, 0, "{err}");
    let out = t.join("plain.img");
    ok(slate()
        .arg("extract")
        .arg(&p)
        .arg("--pubkey")
        .arg(&p1)
        .arg("-o")
        .arg(&out));
    assert_eq!(std::fs::read(&out).unwrap(), data);

    for name in ["../x", "/x", "../../etc/passwd", "a/../b", "..", "rootfs/"] {
        let m = named_manifest(name, &data, frame.len());
        let p = f.write("named.slate", &assemble(&m, &[record(1, &m)], &frame));
        let needle = format!("artifact name {name:?} must be");
        refused_by_both(&p, &[&p1], 1, "corrupt", &needle);
        // Asking for exactly that artifact does not help.
        let out_dir = tempfile::tempdir().unwrap();
        let e = fails_with(
            VERIFICATION,
            slate()
                .arg("extract")
                .arg(&p)
                .arg("--pubkey")
                .arg(&p1)
                .arg("--artifact")
                .arg(name)
                .arg("-o")
                .arg(out_dir.path().join("x")),
        );
        assert!(e.contains(&needle), "{e}");
        assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0);
        assert!(!t.join("x").exists() && !Path::new("/x").exists());
    }
}

/// A build whose kernel is incompressible random bytes: two such builds
/// with different seeds have payloads of identical layout.
fn random_kernel_build(dir: &Path, seed: u64) -> PathBuf {
    let rootfs = mixed_bytes(400_000, 11);
    let mut kernel = vec![0u8; 300_000];
    Rng(seed).fill(&mut kernel);
    build_dir(
        dir,
        &[
            ("rootfs", "rootfs.ext4", &rootfs),
            ("kernel", "vmlinuz", &kernel),
        ],
    )
}

#[test]
fn artifacts_of_two_valid_bundles_spliced_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let (key, public) = keygen(&t.path().join("k"));
    let mut bundles = Vec::new();
    for (name, seed) in [("a", 5), ("b", 6)] {
        let build = random_kernel_build(&t.path().join(name), seed);
        let out = t.path().join(format!("{name}.slate"));
        bundle(&build, &[&key], &out, &["--chunk-size", "64K"]);
        let (code, _, err) = verify_json(&out, &[&public], 1);
        assert_eq!(code, 0, "{err}");
        bundles.push(std::fs::read(&out).unwrap());
    }
    let (a, b) = (&bundles[0], &bundles[1]);
    let (la, lb) = (Layout::parse(a), Layout::parse(b));
    let kernel_start = |l: &Layout| {
        l.chunks
            .iter()
            .find(|c| c.0 == "kernel")
            .map(|c| c.2 as usize)
            .unwrap()
    };
    let (ka, kb) = (kernel_start(&la), kernel_start(&lb));
    assert_eq!(
        a.len() - ka,
        b.len() - kb,
        "kernel payloads differ in length"
    );

    // A's header, manifest, signature and rootfs; B's kernel.
    let spliced = [&a[..ka], &b[kb..]].concat();
    assert_eq!(spliced.len(), a.len(), "the splice keeps A's layout");
    let p = t.path().join("spliced.slate");
    std::fs::write(&p, &spliced).unwrap();
    refused_by_both(&p, &[&public], 1, "corrupt", "chunk 0 of kernel ");
    // Asking for the spliced-in artifact itself.
    let out_dir = tempfile::tempdir().unwrap();
    let e = fails_with(
        VERIFICATION,
        slate()
            .arg("extract")
            .arg(&p)
            .arg("--pubkey")
            .arg(&public)
            .arg("--artifact")
            .arg("kernel")
            .arg("-o")
            .arg(out_dir.path().join("vmlinuz")),
    );
    assert!(e.contains("chunk 0 of kernel"), "{e}");
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0);

    // B's manifest and payload under A's signature record.
    let sig_a = &a[la.signatures_offset()..la.payload_offset()];
    let mb = &b[lb.manifest_range()];
    let mut rec = [0u8; RECORD_LEN];
    rec.copy_from_slice(sig_a);
    let forged = assemble(mb, &[rec], &b[lb.payload_offset()..]);
    let p = t.path().join("resigned.slate");
    std::fs::write(&p, &forged).unwrap();
    refused_by_both(&p, &[&public], 1, "bad_signature", "does not verify");
}

#[test]
fn extract_of_a_later_artifact_refuses_damage_in_an_earlier_one() {
    let f = fixture();
    let (_, index, off, len) = f
        .layout
        .chunks
        .iter()
        .find(|c| c.0 == "rootfs")
        .unwrap()
        .clone();
    let mut b = f.bundle.clone();
    b[(off + len / 2) as usize] ^= 0x01;
    let p = f.write("bad.slate", &b);
    let out_dir = tempfile::tempdir().unwrap();
    for artifact in ["kernel", "initrd"] {
        let e = fails_with(
            VERIFICATION,
            slate()
                .arg("extract")
                .arg(&p)
                .arg("--pubkey")
                .arg(&f.public)
                .arg("--artifact")
                .arg(artifact)
                .arg("-o")
                .arg(out_dir.path().join(artifact)),
        );
        assert!(e.contains(&format!("chunk {index} of rootfs ")), "{e}");
    }
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0);
}
