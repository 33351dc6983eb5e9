//! `slate keygen`, `bundle`, `verify` and `inspect` on good input, and
//! `slate bundle` refusing bad build directories and keys.

mod bundle_support;

use bundle_support::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn bundle_from_build_verifies_and_inspects() {
    let t = tempfile::tempdir().unwrap();
    let build = small_build(&t.path().join("build"));
    let (key, public) = keygen(&t.path().join("k"));
    let out = t.path().join("out.slate");
    bundle(&build, &[&key], &out, &[]);

    let (code, v, err) = verify_json(&out, &[&public], 1);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["valid"], true);
    assert_eq!(v["name"], "minimal");
    assert_eq!(v["signatures"][0]["trusted"], true);
    let human = ok(slate().arg("verify").arg(&out).arg("--pubkey").arg(&public));
    assert!(human.contains("valid: minimal 1.2.3"), "{human}");

    let j: serde_json::Value =
        serde_json::from_str(&ok(slate().arg("inspect").arg(&out).arg("--json"))).unwrap();
    assert_eq!(j["name"], "minimal");
    assert_eq!(j["version"], "1.2.3");
    assert_eq!(j["compatible"], "slate-qemu-x86_64");
    assert_eq!(j["security_version"], 7);
    assert_eq!(j["created"], 1_700_000_000);
    assert_eq!(j["format"], 1);
    let id = ok(slate()
        .arg("verify")
        .arg(&out)
        .arg("--pubkey")
        .arg(&public)
        .arg("--json"));
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    assert_eq!(j["signatures"][0]["key_id"], id["signatures"][0]["key_id"]);
    assert_eq!(j["signatures"][0]["valid"], true);
    let names: Vec<&str> = j["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rootfs", "kernel", "initrd"]);
    // The default chunk size for artifacts this small.
    for a in j["artifacts"].as_array().unwrap() {
        assert_eq!(a["chunk_size"], 65536, "{a}");
    }
    // The rootfs has zero runs of more than a chunk: some chunks are holes.
    assert!(j["artifacts"][0]["holes"].as_u64().unwrap() >= 1, "{j}");

    // Independent reading of the layout agrees with inspect, and the
    // artifact digests are those of the build's files.
    let bytes = std::fs::read(&out).unwrap();
    let layout = Layout::parse(&bytes);
    assert_eq!(j["manifest_len"], layout.manifest_len as u64);
    assert_eq!(j["bundle_len"], bytes.len() as u64);
    assert_eq!(
        j["manifest_sha256"],
        sha256_hex(&bytes[layout.manifest_range()])
    );
    let rootfs = std::fs::read(build.join("rootfs.ext4")).unwrap();
    assert_eq!(j["artifacts"][0]["sha256"], sha256_hex(&rootfs));

    // Every data chunk is a standalone zstd frame that the zstd tool
    // decompresses to bytes with the manifest's digest.
    if which("zstd") {
        let a = &layout.manifest["artifacts"][0];
        for (name, index, off, len) in layout.chunks.iter().filter(|c| c.0 == "rootfs") {
            let frame = t.path().join("frame.zst");
            std::fs::write(&frame, &bytes[*off as usize..(*off + *len) as usize]).unwrap();
            let o = std::process::Command::new("zstd")
                .args(["-q", "-d", "-c"])
                .arg(&frame)
                .output()
                .unwrap();
            assert!(o.status.success(), "zstd refused chunk {index} of {name}");
            assert_eq!(
                a["chunks"][*index as usize]["sha256"],
                sha256_hex(&o.stdout),
                "chunk {index}"
            );
            let start = *index as usize * (64 << 10);
            assert_eq!(o.stdout, rootfs[start..start + o.stdout.len()]);
        }
    } else {
        eprintln!("skipping the zstd cross-check: zstd is not installed");
    }
}

fn which(tool: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn bundles_are_reproducible_across_thread_counts() {
    let t = tempfile::tempdir().unwrap();
    let build = small_build(&t.path().join("build"));
    let (key, _) = keygen(&t.path().join("k"));
    let a = t.path().join("a.slate");
    let b = t.path().join("b.slate");
    bundle(&build, &[&key], &a, &["--threads", "1"]);
    bundle(&build, &[&key], &b, &["--threads", "3"]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // SOURCE_DATE_EPOCH from the environment wins over the build's.
    let c = t.path().join("c.slate");
    ok(slate()
        .env("SOURCE_DATE_EPOCH", "42")
        .arg("bundle")
        .arg(&build)
        .arg("--key")
        .arg(&key)
        .arg("-o")
        .arg(&c));
    let j: serde_json::Value =
        serde_json::from_str(&ok(slate().arg("inspect").arg(&c).arg("--json"))).unwrap();
    assert_eq!(j["created"], 42);
    // Output files are world-readable, not 0600 like temp files.
    let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

#[test]
fn keygen_makes_private_key_0600_and_never_overwrites() {
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("fleet");
    let (key, public) = keygen(&prefix);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    assert!(
        std::fs::read_to_string(&public)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----\n")
    );

    let e = fails(slate().arg("keygen").arg(&prefix));
    assert!(e.contains("fleet.key already exists"), "{e}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), pem);
    // Only the public half existing also blocks, and creates nothing.
    std::fs::remove_file(&key).unwrap();
    let e = fails(slate().arg("keygen").arg(&prefix));
    assert!(e.contains("fleet.pub already exists"), "{e}");
    assert!(!key.exists());

    ok(slate().arg("keygen").arg(&prefix).arg("--force"));
    assert_ne!(std::fs::read_to_string(&key).unwrap(), pem);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // No temp files left behind.
    let names: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn several_keys_and_thresholds() {
    let t = tempfile::tempdir().unwrap();
    let build = small_build(&t.path().join("build"));
    let (k1, p1) = keygen(&t.path().join("one"));
    let (k2, p2) = keygen(&t.path().join("two"));
    let (_, p3) = keygen(&t.path().join("three"));
    let out = t.path().join("out.slate");
    bundle(&build, &[&k1, &k2], &out, &[]);
    let (code, v, err) = verify_json(&out, &[&p1, &p2], 2);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["signatures"].as_array().unwrap().len(), 2);
    // Rotation: a device that trusts only the new key accepts it.
    assert_eq!(verify_json(&out, &[&p2], 1).0, 0);
    // Threshold 2 with one of the signers untrusted fails.
    let (code, v, err) = verify_json(&out, &[&p1, &p3], 2);
    assert_eq!(code, VERIFICATION);
    assert_eq!(v["error"]["code"], "untrusted");
    assert!(
        err.contains("signed by 1 distinct trusted key(s), 2 required"),
        "{err}"
    );
    // A threshold above the trusted keys is invalid input.
    let e = fails_with(
        INVALID_INPUT,
        slate()
            .arg("verify")
            .arg(&out)
            .arg("--pubkey")
            .arg(&p1)
            .arg("--pubkey")
            .arg(&p1)
            .arg("--threshold")
            .arg("2"),
    );
    assert!(e.contains("threshold 2"), "{e}");
    // The same key twice when signing is refused.
    let (code, _, err) = run(slate()
        .arg("bundle")
        .arg(&build)
        .arg("--key")
        .arg(&k1)
        .arg("--key")
        .arg(&k1)
        .arg("-o")
        .arg(t.path().join("dup.slate")));
    assert_eq!(code, INVALID_INPUT);
    assert!(err.contains("given twice"), "{err}");
}

/// Runs `slate bundle` expecting a one-line refusal; checks nothing was written.
fn bundle_refused(build: &std::path::Path, key: &std::path::Path, needle: &str) {
    bundle_refused_with(INVALID_INPUT, build, key, needle)
}

/// [`bundle_refused`] with exit code `code`.
fn bundle_refused_with(code: i32, build: &std::path::Path, key: &std::path::Path, needle: &str) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("x.slate");
    let e = fails_with(
        code,
        slate()
            .arg("bundle")
            .arg(build)
            .arg("--key")
            .arg(key)
            .arg("-o")
            .arg(&out),
    );
    assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    assert_eq!(
        std::fs::read_dir(out_dir.path()).unwrap().count(),
        0,
        "output left behind"
    );
}

#[test]
fn bundle_refuses_inconsistent_builds() {
    let t = tempfile::tempdir().unwrap();
    let (key, public) = keygen(&t.path().join("k"));

    // Content changed after the build recorded its digest (same size).
    let b1 = small_build(&t.path().join("b1"));
    let mut k = std::fs::read(b1.join("vmlinuz")).unwrap();
    k[5000] ^= 1;
    std::fs::write(b1.join("vmlinuz"), &k).unwrap();
    bundle_refused(&b1, &key, "vmlinuz has sha256");

    // Size differs.
    let b2 = small_build(&t.path().join("b2"));
    std::fs::write(b2.join("initrd.img"), b"short").unwrap();
    bundle_refused(
        &b2,
        &key,
        "initrd.img is 5 bytes, the build manifest says 1000",
    );

    // Missing artifact file.
    let b3 = small_build(&t.path().join("b3"));
    std::fs::remove_file(b3.join("initrd.img")).unwrap();
    bundle_refused_with(IO, &b3, &key, "initrd.img");

    // Empty artifact.
    let b4 = t.path().join("b4");
    build_dir(
        &b4,
        &[("rootfs", "rootfs.ext4", b"x"), ("kernel", "vmlinuz", b"")],
    );
    bundle_refused(&b4, &key, "artifact kernel");

    // No build directory / no manifest.
    bundle_refused_with(IO, &t.path().join("nope"), &key, "nope");
    let b5 = t.path().join("b5");
    std::fs::create_dir(&b5).unwrap();
    bundle_refused_with(IO, &b5, &key, "manifest.json");

    // An artifact file escaping the build directory.
    let b6 = small_build(&t.path().join("b6"));
    let m = std::fs::read_to_string(b6.join("manifest.json"))
        .unwrap()
        .replace("\"vmlinuz\"", "\"../b1/vmlinuz\"");
    std::fs::write(b6.join("manifest.json"), m).unwrap();
    bundle_refused(&b6, &key, "not a plain file name");

    // Keys: a public key, a missing file, garbage.
    let good = small_build(&t.path().join("good"));
    bundle_refused(&good, &public, "is a public key");
    bundle_refused_with(IO, &good, &t.path().join("missing.key"), "missing.key");
    let junk = t.path().join("junk.key");
    std::fs::write(
        &junk,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    bundle_refused(&good, &junk, "junk.key");
}

#[test]
fn help_fits_80_columns() {
    for cmd in ["keygen", "bundle", "verify", "inspect"] {
        let out = ok(slate().arg(cmd).arg("--help"));
        for line in out.lines() {
            assert!(line.chars().count() <= 80, "{cmd}: {line:?}");
        }
    }
}

#[test]
fn keygen_creates_its_directory() {
    // Issue 11: `slate keygen keys/dev` in a fresh directory failed.
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("new/keys/dev");
    ok(slate().arg("keygen").arg(&prefix));
    let dir = t.path().join("new/keys");
    assert!(dir.join("dev.key").is_file() && dir.join("dev.pub").is_file());
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
    // Only the directory is created: a file in the way is an error.
    std::fs::write(t.path().join("file"), "").unwrap();
    let (code, _, err) = run(slate().arg("keygen").arg(t.path().join("file/dev")));
    assert_eq!(code, IO, "{err}");
    assert!(err.contains("file"), "{err}");
}
