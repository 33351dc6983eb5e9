//! Interop with openssl, both ways: keys openssl makes sign bundles slate
//! verifies, and openssl verifies slate's signatures over the manifest bytes
//! (extracted at the offsets docs/bundle-format.md gives).

mod bundle_support;
mod common;

use bundle_support::*;
use std::path::Path;
use std::process::Command;

fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl")
}

fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        common::skipped("bundle_openssl", "openssl is not installed");
    }
    ok
}

/// (manifest bytes, signature records) at the documented offsets.
fn extract(bundle: &[u8]) -> (Vec<u8>, Vec<[u8; 96]>) {
    let l = Layout::parse(bundle);
    let manifest = bundle[l.manifest_range()].to_vec();
    let records = (0..l.signature_count)
        .map(|i| {
            let at = l.signatures_offset() + i * RECORD_LEN;
            bundle[at..at + RECORD_LEN].try_into().unwrap()
        })
        .collect();
    (manifest, records)
}

#[test]
fn openssl_keys_sign_bundles_slate_verifies() {
    if !have_openssl() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let build = small_build(&d.join("build"));
    let o = openssl(&["genpkey", "-algorithm", "ed25519", "-out", "o.key"], d);
    assert!(o.status.success(), "{o:?}");
    let o = openssl(&["pkey", "-in", "o.key", "-pubout", "-out", "o.pub"], d);
    assert!(o.status.success(), "{o:?}");
    let out = d.join("o.slate");
    bundle(&build, &[&d.join("o.key")], &out, &[]);
    let (code, v, err) = verify_json(&out, &[&d.join("o.pub")], 1);
    assert_eq!(code, 0, "{err}");

    // The key id is the SHA-256 of the SPKI DER, as openssl computes it.
    let o = openssl(
        &[
            "pkey", "-pubin", "-in", "o.pub", "-outform", "DER", "-out", "o.der",
        ],
        d,
    );
    assert!(o.status.success());
    let der = std::fs::read(d.join("o.der")).unwrap();
    assert_eq!(der.len(), 44);
    assert_eq!(v["signatures"][0]["key_id"], sha256_hex(&der));

    // openssl's own signature over the manifest equals slate's (Ed25519 is
    // deterministic), and a bundle with openssl's signature verifies.
    let bytes = std::fs::read(&out).unwrap();
    let (manifest, records) = extract(&bytes);
    std::fs::write(d.join("manifest.bin"), &manifest).unwrap();
    let o = openssl(
        &[
            "pkeyutl",
            "-sign",
            "-rawin",
            "-inkey",
            "o.key",
            "-in",
            "manifest.bin",
            "-out",
            "o.sig",
        ],
        d,
    );
    assert!(o.status.success(), "{o:?}");
    let sig = std::fs::read(d.join("o.sig")).unwrap();
    assert_eq!(sig.len(), 64);
    assert_eq!(&records[0][32..], &sig[..]);
    let mut rec = records[0];
    rec[32..].copy_from_slice(&sig);
    let payload = &bytes[Layout::parse(&bytes).payload_offset()..];
    let p = d.join("resigned.slate");
    std::fs::write(&p, assemble(&manifest, &[rec], payload)).unwrap();
    assert_eq!(verify_json(&p, &[&d.join("o.pub")], 1).0, 0);

    // Encrypted PKCS#8 keys are refused with a clear message.
    let o = openssl(
        &[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-aes256",
            "-pass",
            "pass:x",
            "-out",
            "enc.key",
        ],
        d,
    );
    assert!(o.status.success(), "{o:?}");
    let e = fails_with(
        INVALID_INPUT,
        slate()
            .arg("bundle")
            .arg(&build)
            .arg("--key")
            .arg(d.join("enc.key"))
            .arg("-o")
            .arg(d.join("enc.slate")),
    );
    assert!(
        e.contains("encrypted private keys are not supported"),
        "{e}"
    );
    // So are keys of other algorithms.
    let o = openssl(&["genpkey", "-algorithm", "ed448", "-out", "ed448.key"], d);
    assert!(o.status.success(), "{o:?}");
    let e = fails_with(
        INVALID_INPUT,
        slate()
            .arg("bundle")
            .arg(&build)
            .arg("--key")
            .arg(d.join("ed448.key"))
            .arg("-o")
            .arg(d.join("x.slate")),
    );
    assert!(e.contains("not an Ed25519 private key"), "{e}");
}

#[test]
fn openssl_verifies_slate_signatures_and_reads_slate_keys() {
    if !have_openssl() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let build = small_build(&d.join("build"));
    let (k1, p1) = keygen(&d.join("one"));
    let (k2, p2) = keygen(&d.join("two"));
    let out = d.join("s.slate");
    bundle(&build, &[&k1, &k2], &out, &[]);
    let bytes = std::fs::read(&out).unwrap();
    let (manifest, records) = extract(&bytes);
    assert_eq!(records.len(), 2);
    std::fs::write(d.join("manifest.bin"), &manifest).unwrap();
    for (i, p) in [&p1, &p2].iter().enumerate() {
        std::fs::write(d.join("sig"), &records[i][32..]).unwrap();
        let o = openssl(
            &[
                "pkeyutl",
                "-verify",
                "-rawin",
                "-pubin",
                "-inkey",
                p.to_str().unwrap(),
                "-sigfile",
                "sig",
                "-in",
                "manifest.bin",
            ],
            d,
        );
        assert!(
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("Verified Successfully"),
            "openssl rejected signature {i}: {o:?}"
        );
        // The record's embedded key is the one in the .pub file.
        let o = openssl(
            &[
                "pkey",
                "-pubin",
                "-in",
                p.to_str().unwrap(),
                "-outform",
                "DER",
                "-out",
                "k.der",
            ],
            d,
        );
        assert!(o.status.success());
        let der = std::fs::read(d.join("k.der")).unwrap();
        assert_eq!(&der[12..], &records[i][..32]);
    }
    // A changed manifest byte makes openssl reject it too.
    let mut m = manifest.clone();
    m[20] ^= 1;
    std::fs::write(d.join("manifest.bin"), &m).unwrap();
    std::fs::write(d.join("sig"), &records[0][32..]).unwrap();
    let o = openssl(
        &[
            "pkeyutl",
            "-verify",
            "-rawin",
            "-pubin",
            "-inkey",
            p1.to_str().unwrap(),
            "-sigfile",
            "sig",
            "-in",
            "manifest.bin",
        ],
        d,
    );
    assert!(!o.status.success(), "openssl accepted a changed manifest");

    // openssl reads slate's private key and derives the same public key, and
    // re-encodes it byte for byte (PKCS#8 v1, as openssl writes).
    let o = openssl(&["pkey", "-in", k1.to_str().unwrap(), "-pubout"], d);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout, std::fs::read(&p1).unwrap());
    let o = openssl(&["pkey", "-in", k1.to_str().unwrap()], d);
    assert_eq!(o.stdout, std::fs::read(&k1).unwrap());
}
