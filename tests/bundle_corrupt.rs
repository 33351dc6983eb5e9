//! Every way a bundle can be damaged or forged is refused by `slate verify`
//! with a one-line error of the right kind and exit code 1, never a panic.

mod bundle_support;

use bundle_support::*;
use std::path::{Path, PathBuf};

struct Fixture {
    dir: tempfile::TempDir,
    bundle: Vec<u8>,
    layout: Layout,
    public: PathBuf,
    key: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let build = small_build(&dir.path().join("build"));
    let (key, public) = keygen(&dir.path().join("k"));
    let out = dir.path().join("good.slate");
    // 64 KiB chunks: many chunks from small files.
    bundle(&build, &[&key], &out, &["--chunk-size", "64K"]);
    let bundle = std::fs::read(&out).unwrap();
    let layout = Layout::parse(&bundle);
    assert!(layout.chunks.len() > 20, "{}", layout.chunks.len());
    Fixture {
        dir,
        bundle,
        layout,
        public,
        key,
    }
}

impl Fixture {
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn refused(&self, bytes: &[u8], code: &str, kind: Option<&str>, needle: &str) {
        let p = self.write("bad.slate", bytes);
        assert_refused(&p, &[&self.public], code, kind, needle);
    }

    fn flipped(&self, offset: usize, bit: u8) -> Vec<u8> {
        let mut b = self.bundle.clone();
        b[offset] ^= 1 << bit;
        b
    }
}

#[test]
fn the_fixture_itself_verifies() {
    let f = fixture();
    let p = f.write("copy.slate", &f.bundle);
    let (code, v, err) = verify_json(&p, &[&f.public], 1);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["valid"], true);
}

#[test]
fn header_bit_flips() {
    let f = fixture();
    for byte in 0..HEADER_LEN {
        let bit = (byte % 8) as u8;
        let b = f.flipped(byte, bit);
        match byte {
            0..=7 => f.refused(&b, "not_a_bundle", None, "not a slate bundle"),
            8..=11 => f.refused(&b, "unsupported", None, "unsupported bundle format version"),
            _ => f.refused(&b, "corrupt", Some("header_checksum"), "header checksum"),
        }
    }
    // A newer version with a valid checksum is refused as such.
    let mut b = f.bundle.clone();
    b[8] = 2;
    fix_crc(&mut b);
    f.refused(
        &b,
        "unsupported",
        None,
        "format version 2 (this slate reads version 1)",
    );
    let mut b = f.bundle.clone();
    b[12] = 4;
    fix_crc(&mut b);
    f.refused(&b, "unsupported", None, "header flags");
    let mut b = f.bundle.clone();
    b[33] = 1;
    fix_crc(&mut b);
    f.refused(&b, "corrupt", Some("reserved_field"), "reserved");
}

#[test]
fn manifest_bit_flips() {
    let f = fixture();
    let r = f.layout.manifest_range();
    let mut rng = Rng(0x5eed);
    let mut offsets = vec![r.start, r.start + 1, r.end - 1, (r.start + r.end) / 2];
    offsets.extend((0..12).map(|_| r.start + rng.below(r.len() as u64) as usize));
    for off in offsets {
        let b = f.flipped(off, (off % 8) as u8);
        f.refused(&b, "bad_signature", None, "does not verify");
    }
}

#[test]
fn signature_bit_flips() {
    let f = fixture();
    let s = f.layout.signatures_offset();
    // In the embedded public key: the signer is no longer the trusted key.
    for off in [s, s + 17, s + 31] {
        let b = f.flipped(off, 3);
        f.refused(&b, "untrusted", None, "not signed by a trusted key");
    }
    // In the signature itself.
    for off in [s + 32, s + 63, s + 64, s + 95] {
        let b = f.flipped(off, 6);
        f.refused(&b, "bad_signature", None, "does not verify");
    }
}

#[test]
fn every_chunk_bit_flip() {
    let f = fixture();
    let mut rng = Rng(77);
    for (name, index, off, len) in &f.layout.chunks {
        let at = *off as usize + rng.below(*len) as usize;
        let b = f.flipped(at, (rng.below(8)) as u8);
        let p = f.write("bad.slate", &b);
        let (exit, v, err) = verify_json(&p, &[&f.public], 1);
        assert_eq!(
            exit, VERIFICATION,
            "flip in chunk {index} of {name} accepted: {err}"
        );
        assert_eq!(v["error"]["code"], "corrupt");
        let kind = v["error"]["kind"].as_str().unwrap();
        assert!(
            ["chunk_digest", "chunk_decompress", "chunk_length"].contains(&kind),
            "{kind}"
        );
        assert!(
            err.contains(&format!("chunk {index} of {name} ")),
            "{err:?} does not name chunk {index} of {name}"
        );
    }
}

#[test]
fn truncation_at_every_boundary_and_random_points() {
    let f = fixture();
    let l = &f.layout;
    let mut points = vec![
        (0, "empty"),
        (1, "header"),
        (8, "header"),
        (39, "header"),
        (40, "manifest"),
        (40 + l.manifest_len / 2, "manifest"),
        (l.signatures_offset(), "signatures"),
        (l.signatures_offset() + 50, "signatures"),
        (l.payload_offset(), "payload"),
        (f.bundle.len() - 1, "payload"),
    ];
    for (_, _, off, len) in &l.chunks {
        points.push((*off as usize, "payload"));
        points.push((*off as usize + (*len as usize) / 2, "payload"));
    }
    let mut rng = Rng(99);
    for _ in 0..25 {
        let at = rng.below(f.bundle.len() as u64) as usize;
        let region = if at < 40 {
            "header"
        } else if at < l.signatures_offset() {
            "manifest"
        } else if at < l.payload_offset() {
            "signatures"
        } else {
            "payload"
        };
        points.push((at, region));
    }
    for (at, region) in points {
        let b = &f.bundle[..at];
        if region == "empty" {
            f.refused(b, "corrupt", Some("empty"), "empty");
        } else {
            f.refused(
                b,
                "corrupt",
                Some("truncated"),
                &format!("truncated in the {region}"),
            );
        }
    }
}

#[test]
fn appended_garbage() {
    let f = fixture();
    for extra in [vec![0u8], vec![0x42; 1 << 20], b"\x89SLATE\r\n".to_vec()] {
        let mut b = f.bundle.clone();
        b.extend_from_slice(&extra);
        f.refused(
            &b,
            "corrupt",
            Some("trailing_data"),
            &format!("after the end of the bundle at byte {}", f.bundle.len()),
        );
    }
}

#[test]
fn wrong_key_and_missing_or_duplicated_signatures() {
    let f = fixture();
    let t = f.dir.path();
    let other = pubkey_file(200, &t.join("other.pub"));
    let good = f.write("good2.slate", &f.bundle);
    assert_refused(
        &good,
        &[&other],
        "untrusted",
        None,
        "not signed by a trusted key",
    );

    let manifest = &f.bundle[f.layout.manifest_range()];
    let payload = &f.bundle[f.layout.payload_offset()..];
    let rec = |s| record(s, manifest);

    // No signature at all.
    f.refused(
        &assemble(manifest, &[], payload),
        "no_signature",
        None,
        "no signature",
    );

    // One key's signature twice does not reach a threshold of 2.
    let p1 = pubkey_file(1, &t.join("p1.pub"));
    let p2 = pubkey_file(2, &t.join("p2.pub"));
    let twice = f.write(
        "twice.slate",
        &assemble(manifest, &[rec(1), rec(1)], payload),
    );
    let (exit, v, err) = verify_json(&twice, &[&p1, &p2], 2);
    assert_eq!(exit, VERIFICATION, "{err}");
    assert_eq!(v["error"]["code"], "untrusted");
    assert!(
        err.contains("signed by 1 distinct trusted key(s), 2 required"),
        "{err}"
    );
    // ... while two distinct keys do, in either order, next to an unknown one.
    let both = f.write(
        "both.slate",
        &assemble(manifest, &[rec(9), rec(2), rec(1)], payload),
    );
    let (exit, v, err) = verify_json(&both, &[&p1, &p2], 2);
    assert_eq!(exit, 0, "{err}");
    assert_eq!(v["signatures"][0]["trusted"], false);
    // A forged record claiming a trusted key fails loudly even above threshold.
    let mut forged = rec(2);
    forged[40] ^= 1;
    let b = f.write(
        "forged.slate",
        &assemble(manifest, &[rec(1), forged], payload),
    );
    let (exit, v, _) = verify_json(&b, &[&p1, &p2], 1);
    assert_eq!(exit, VERIFICATION);
    assert_eq!(v["error"]["code"], "bad_signature");
    // A record whose key is not even a curve point is only "untrusted".
    let mut junk = rec(1);
    junk[..32].copy_from_slice(&[0xff; 32]);
    let b = f.write("junk.slate", &assemble(manifest, &[junk], payload));
    assert_refused(&b, &[&p1], "untrusted", None, "not signed by a trusted key");
    // More records than the limit.
    let mut h = f.bundle[..40].to_vec();
    h[20..24].copy_from_slice(&17u32.to_le_bytes());
    fix_crc(&mut h);
    f.refused(
        &h,
        "corrupt",
        Some("limit"),
        "signature count 17 exceeds the limit of 16",
    );
}

/// Runs `slate verify` under a 512 MiB address-space limit, so a large
/// allocation would abort the process instead of succeeding.
fn verify_capped(bundle: &Path, public: &Path) -> (i32, String) {
    let mut c = std::process::Command::new("prlimit");
    c.arg("--as=536870912")
        .arg(env!("CARGO_BIN_EXE_slate"))
        .arg("verify")
        .arg(bundle)
        .arg("--pubkey")
        .arg(public);
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let code = o
        .status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal (large allocation?): {err}"));
    (code, err)
}

#[test]
fn huge_claims_are_refused_before_allocating() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: prlimit (util-linux) is not installed");
        return;
    }
    let f = fixture();
    let t = f.dir.path();
    let p1 = pubkey_file(1, &t.join("p1.pub"));
    let z = sha256_hex(&[0u8; 65536]);
    let check = |bytes: Vec<u8>, needle: &str| {
        let p = f.write("huge.slate", &bytes);
        let (code, err) = verify_capped(&p, &p1);
        assert_eq!(code, VERIFICATION, "{err}");
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
    };

    // Header: a 4 GiB manifest.
    let mut h = f.bundle[..40].to_vec();
    h[16..20].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    fix_crc(&mut h);
    check(
        h,
        "manifest length 4294967280 exceeds the limit of 16777216",
    );

    // Header: a payload of 2^60 bytes.
    let mut h = f.bundle.clone();
    h[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
    fix_crc(&mut h);
    check(h, "payload length 1152921504606846976 exceeds");

    // Signed manifests (so they get past the signature check) claiming:
    let signed = |m: Vec<u8>, payload_len: u64| {
        let r = record(1, &m);
        assemble_with(&m, &[r], &[], payload_len)
    };
    // a petabyte artifact in one chunk,
    check(
        signed(manifest_json(1 << 50, 65536, &[(0, z.clone())], &z), 0),
        "1 chunks listed, size 1125899906842624 needs",
    );
    // a 1 GiB chunk size (the reader would allocate one chunk),
    check(
        signed(manifest_json(1 << 30, 1 << 30, &[(0, z.clone())], &z), 0),
        "chunk_size 1073741824 is not a power of two between",
    );
    // a compressed size of 2^45 bytes for a 64 KiB chunk,
    check(
        signed(
            manifest_json(65536, 65536, &[(1 << 45, z.clone())], &z),
            1 << 45,
        ),
        "claims 35184372088832 compressed bytes",
    );
    // more chunks than a bundle may have (the manifest is still under 16 MiB),
    let n = (1u64 << 17) + 1;
    let many: Vec<(u64, String)> = (0..n).map(|_| (0, z.clone())).collect();
    check(
        signed(manifest_json(n * 65536, 65536, &many, &z), 0),
        "more than 131072 chunks",
    );
    // a payload the header and manifest disagree on,
    check(
        signed(
            manifest_json(65536, 65536, &[(100, z.clone())], &z),
            1 << 40,
        ),
        "header says the payload is 1099511627776 bytes, the manifest adds up to 100",
    );
    // and an integer beyond 2^53.
    let m = String::from_utf8(manifest_json(65536, 65536, &[(0, z.clone())], &z))
        .unwrap()
        .replace(
            "\"security_version\":0",
            "\"security_version\":18446744073709551615",
        );
    check(
        signed(m.into_bytes(), 0),
        "security_version 18446744073709551615 exceeds",
    );
}

#[test]
fn empty_payloads_and_non_files() {
    let f = fixture();
    let t = f.dir.path();
    let p1 = pubkey_file(1, &t.join("p1.pub"));
    let signed = |m: &[u8]| {
        let r = record(1, m);
        assemble(m, &[r], &[])
    };
    // A signed manifest with no artifacts.
    let none = b"{\"artifacts\":[],\"compatible\":\"c\",\"created\":0,\"format\":1,\"name\":\"n\",\"security_version\":0,\"version\":\"1\"}";
    let p = f.write("none.slate", &signed(none));
    assert_refused(
        &p,
        &[&p1],
        "corrupt",
        Some("manifest"),
        "no artifacts (empty payload)",
    );
    // A zero-size artifact.
    let e = sha256_hex(b"");
    let p = f.write("zero.slate", &signed(&manifest_json(0, 65536, &[], &e)));
    assert_refused(
        &p,
        &[&p1],
        "corrupt",
        Some("manifest"),
        "artifact rootfs: is empty",
    );
    // A zero-length file and one with the payload cut off entirely.
    let p = f.write("empty.slate", b"");
    assert_refused(&p, &[&f.public], "corrupt", Some("empty"), "empty");
    let p = f.write("nopayload.slate", &f.bundle[..f.layout.payload_offset()]);
    assert_refused(
        &p,
        &[&f.public],
        "corrupt",
        Some("truncated"),
        "truncated in the payload",
    );
    // Something that is not a bundle at all.
    let p = f.write(
        "text.slate",
        b"hello world, this is not a bundle at all.....",
    );
    assert_refused(&p, &[&f.public], "not_a_bundle", None, "not a slate bundle");

    // A directory and a missing file, for verify and inspect.
    for cmd in ["verify", "inspect"] {
        let mut c = slate();
        c.arg(cmd).arg(t);
        if cmd == "verify" {
            c.arg("--pubkey").arg(&f.public);
        }
        let e = fails_with(INVALID_INPUT, &mut c);
        assert!(e.contains("is a directory"), "{e}");
        let mut c = slate();
        c.arg(cmd).arg(t.join("missing.slate"));
        if cmd == "verify" {
            c.arg("--pubkey").arg(&f.public);
        }
        let e = fails_with(IO, &mut c);
        assert!(
            e.contains("missing.slate") && e.contains("No such file"),
            "{e}"
        );
        // Said once, not once per error in the chain.
        assert_eq!(e.matches("No such file").count(), 1, "{e}");
        // With --json, the error object is on stdout (issue 11).
        c.arg("--json");
        let (code, out, _) = run(&mut c);
        assert_eq!(code, IO);
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{cmd} --json printed no JSON ({e}): {out:?}"));
        assert_eq!(v["schema"], 1, "{v}");
        assert_eq!(v["error"]["class"], "io", "{v}");
        assert_eq!(v["error"]["exit_code"], IO, "{v}");
        let named = if cmd == "verify" { "bundle" } else { "path" };
        assert!(v[named].as_str().unwrap().ends_with("missing.slate"), "{v}");
        if cmd == "verify" {
            assert_eq!(v["valid"], false, "{v}");
        }
    }
    let _ = &f.key;
}

#[test]
fn inspect_refuses_what_verify_refuses_before_the_payload() {
    let f = fixture();
    let b = f.flipped(f.layout.manifest_range().start + 10, 2);
    let p = f.write("bad.slate", &b);
    let e = fails_with(VERIFICATION, slate().arg("inspect").arg(&p));
    assert!(e.contains("does not verify"), "{e}");
    let b = f.flipped(3, 0);
    let p = f.write("bad.slate", &b);
    let e = fails_with(VERIFICATION, slate().arg("inspect").arg(&p).arg("--json"));
    assert!(e.contains("not a slate bundle"), "{e}");
    // Payload damage is not inspect's business: it still shows the manifest.
    let (_, _, off, _) = f.layout.chunks[0];
    let b = f.flipped(off as usize + 1, 0);
    let p = f.write("bad.slate", &b);
    ok(slate().arg("inspect").arg(&p));
}
