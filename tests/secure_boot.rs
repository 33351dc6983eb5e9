//! Secure Boot signatures (issue 13): slate's Authenticode signer in Rust,
//! checked by an independent verifier, sbverify (sbsigntool), with a key and
//! certificate made by another independent tool, openssl.

mod images;

use images::run_ok;
use slate::authenticode::{SigningKey, sign_file};
use std::path::{Path, PathBuf};
use std::process::Command;

const LOADER: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

fn skip(test: &str) -> bool {
    if Path::new(LOADER).exists()
        && ["sbverify", "openssl"]
            .iter()
            .all(|t| images::shared::have(t))
    {
        return false;
    }
    images::shared::skipped(test, "systemd-boot-efi, sbsigntool or openssl is missing");
    true
}

/// A self-signed RSA-2048 db key and certificate, made by openssl.
fn openssl_db(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (key, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    run_ok(
        Command::new("openssl")
            .args([
                "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
            ])
            .args(["-subj", &format!("/CN=slate test {name}/")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    (key, cert)
}

fn sbverify(cert: &Path, image: &Path) -> (bool, String) {
    let o = Command::new("sbverify")
        .arg("--cert")
        .arg(cert)
        .arg(image)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (
        o.status.success() && text.contains("Signature verification OK"),
        text,
    )
}

#[test]
fn signed_efi_images_pass_sbverify() {
    if skip("secure_boot_signer") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (key, cert) = openssl_db(d.path(), "db");
    let (_, other_cert) = openssl_db(d.path(), "other");
    let signer = SigningKey::load(&key, &cert).unwrap();
    for (name, input) in [("loader", LOADER), ("stub", STUB)] {
        let out = d.path().join(format!("{name}.signed.efi"));
        sign_file(Path::new(input), &out, &signer).unwrap();
        let (ok, text) = sbverify(&cert, &out);
        assert!(ok, "{name}: {text}");
        let (ok, text) = sbverify(&other_cert, &out);
        assert!(!ok, "{name} verified with another certificate: {text}");
        // Deterministic: signing again gives the same bytes.
        let again = d.path().join(format!("{name}.again.efi"));
        sign_file(Path::new(input), &again, &signer).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
        // One changed byte of code breaks the signature.
        let mut bytes = std::fs::read(&out).unwrap();
        bytes[0x1000] ^= 1;
        let tampered = d.path().join(format!("{name}.tampered.efi"));
        std::fs::write(&tampered, &bytes).unwrap();
        let (ok, text) = sbverify(&cert, &tampered);
        assert!(!ok, "{name}: a tampered image verified: {text}");
        // A signed image is not signed twice.
        let e = sign_file(&out, &d.path().join("twice.efi"), &signer).unwrap_err();
        assert!(e.to_string().contains("is signed already"), "{e}");
    }
    // A certificate that is not the key's is refused when loading.
    let e = SigningKey::load(&key, &other_cert).unwrap_err().to_string();
    assert!(e.contains("is not the certificate of"), "{e}");
    let e = SigningKey::load(&cert, &cert).unwrap_err().to_string();
    assert!(e.contains("not a PKCS#8 RSA private key"), "{e}");
}
