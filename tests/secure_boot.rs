//! Secure Boot (issue 13): slate's Authenticode signer in Rust, checked by
//! an independent verifier, sbverify (sbsigntool), with keys made by
//! openssl and by `slate keygen --secure-boot` (checked by openssl); then
//! the firmware itself: OVMF's Secure Boot build with slate's PK, KEK and
//! db enrolled by virt-fw-vars (PyPI virt-firmware) boots a signed image,
//! updates it and reports the kernel locked down, and refuses an unsigned
//! boot chain.

mod images;
mod scenarios;

use images::{Recipe, build, build_verity, bundle, keygen, run_ok, sha256sum, slate};
use scenarios::{
    assert_fell_back_to_a, assert_met, assert_no_entry, describe, events, install_failure,
};
use slate::authenticode::{SigningKey, TrustedCert, sign_file, verify_file};
use slate::qemu::{QemuOptions, run};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
        // slate's own verifier (the agent's check before a trial) agrees.
        let trusted = TrustedCert::load(&cert).unwrap();
        verify_file(&out, &trusted).unwrap();
        let e = verify_file(&tampered, &trusted).unwrap_err().to_string();
        assert!(e.contains("differ from what was signed"), "{e}");
        let e = verify_file(&out, &TrustedCert::load(&other_cert).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("signed by another certificate"), "{e}");
        let e = verify_file(Path::new(input), &trusted)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not signed"), "{e}");
        // ... and accepts what sbsign (another signer) made with the same key.
        if images::shared::have("sbsign") {
            let theirs = d.path().join(format!("{name}.sbsign.efi"));
            run_ok(
                Command::new("sbsign")
                    .arg("--key")
                    .arg(&key)
                    .arg("--cert")
                    .arg(&cert)
                    .arg("--output")
                    .arg(&theirs)
                    .arg(input),
            );
            verify_file(&theirs, &trusted).unwrap();
        }
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

/// virt-fw-vars: `$SLATE_VIRT_FW_VARS`, else on the PATH.
fn virt_fw_vars() -> Option<PathBuf> {
    match std::env::var_os("SLATE_VIRT_FW_VARS") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => images::shared::have("virt-fw-vars").then(|| PathBuf::from("virt-fw-vars")),
    }
}

/// An OVMF variable store with `keys`' PK, KEK and db enrolled and Secure
/// Boot on, made by virt-fw-vars.
fn enrolled_vars(tool: &Path, keys: &Path, out: &Path) -> PathBuf {
    let owner = "6c1d5c3e-7f5a-4b8e-9d2a-5e1f0a3b7c11";
    run_ok(
        Command::new(tool)
            .args(["--input", "/usr/share/OVMF/OVMF_VARS_4M.fd", "--output"])
            .arg(out)
            .args(["--set-pk", owner])
            .arg(keys.join("PK.crt"))
            .args(["--add-kek", owner])
            .arg(keys.join("KEK.crt"))
            .args(["--add-db", owner])
            .arg(keys.join("db.crt"))
            .arg("--secure-boot"),
    );
    out.to_path_buf()
}

fn secure_boot_qemu(
    disk: &Path,
    vars: &Path,
    updates: &[&Path],
    expect: &[&str],
    timeout: u64,
    log: &Path,
    nvram: Option<&Path>,
) -> slate::qemu::QemuOutcome {
    let mut opts = QemuOptions::new(disk);
    opts.updates = updates.iter().map(|p| p.to_path_buf()).collect();
    opts.expect = expect.iter().map(|e| e.parse().unwrap()).collect();
    opts.timeout = Duration::from_secs(timeout);
    opts.console_log = Some(log.to_path_buf());
    opts.secure_boot_vars = Some(vars.to_path_buf());
    opts.nvram = nvram.map(Path::to_path_buf);
    run(&opts).expect("QEMU could not run")
}

#[test]
fn signed_boot_chain_boots_and_updates_under_secure_boot() {
    let test = "secure_boot_qemu";
    if scenarios::skip(test) || skip(test) {
        return;
    }
    let Some(tool) = virt_fw_vars() else {
        images::shared::skipped(test, "virt-fw-vars (PyPI virt-firmware) is missing");
        return;
    };
    if !Path::new("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd").exists() {
        images::shared::skipped(test, "OVMF_CODE_4M.secboot.fd (Debian ovmf) is missing");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // slate's own Secure Boot keys; openssl parses and checks each certificate.
    let keys = d.path().join("sb");
    run_ok(slate().args(["keygen", "--secure-boot"]).arg(&keys));
    for role in ["PK", "KEK", "db"] {
        let cert = keys.join(format!("{role}.crt"));
        run_ok(
            Command::new("openssl")
                .args(["verify", "-CAfile"])
                .arg(&cert)
                .arg(&cert),
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(keys.join(format!("{role}.key")))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{role}.key");
    }
    let e = slate()
        .args(["keygen", "--secure-boot"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("already exists"));

    let (private, public) = keygen(d.path(), "k");
    let recipe = |version: &str, signed: bool| {
        let mut r = Recipe {
            uki: true,
            ..Recipe::counter(version, &public)
        };
        if signed {
            r.extra.push_str(&format!(
                "\n[secure_boot]\nkey = {:?}\ncert = {:?}\n",
                keys.join("db.key").display().to_string(),
                keys.join("db.crt").display().to_string()
            ));
        }
        r
    };
    let v1 = build(d.path(), "v1", &recipe("1.0.0", true));
    let v2 = build(d.path(), "v2", &recipe("2.0.0", true));
    let db = keys.join("db.crt");
    for f in ["uki-a.efi", "uki-b.efi", "systemd-bootx64.efi"] {
        let (ok, text) = sbverify(&db, &v1.join(f));
        assert!(ok, "{f}: {text}");
    }
    // Reproducible, signatures included.
    let again = build(d.path(), "v1-again", &recipe("1.0.0", true));
    for f in ["uki-a.efi", "uki-b.efi", "systemd-bootx64.efi", "disk.img"] {
        assert_eq!(sha256sum(&v1.join(f)), sha256sum(&again.join(f)), "{f}");
    }
    let b2 = bundle(&v2, &private, &d.path().join("v2.slate"));
    let vars = enrolled_vars(&tool, &keys, &d.path().join("vars.fd"));

    let disk = d.path().join("disk.img");
    std::fs::copy(v1.join("disk.img"), &disk).unwrap();
    let log = d.path().join("console.log");
    let o = secure_boot_qemu(
        &disk,
        &vars,
        &[&b2],
        &[
            "committed:A",
            "installing:B",
            "installed:B",
            "booted:B",
            "committed:B",
        ],
        300,
        &log,
        None,
    );
    assert_met(&o, "signed v1 -> signed v2 under Secure Boot");
    // The kernel saw Secure Boot (it locked itself down), loaded the
    // signed dm-verity modules and verified each slot's root.
    let booted = events(&o, "booted");
    assert_eq!(booted.len(), 2, "{}", describe(&o));
    for b in &booted {
        assert_eq!(b["lockdown"], "integrity", "{}", describe(&o));
    }
    assert_eq!(booted[0]["verity"], build_verity(&v1)["root_hash_a"]);
    assert_eq!(booted[1]["verity"], build_verity(&v2)["root_hash_b"]);

    // A bundle whose unified kernel images are not signed with the db key
    // would leave the firmware at its boot menu: the device refuses it
    // before its trial exists, and B stays committed.
    let plain = build(d.path(), "unsigned", &recipe("3.0.0", false));
    let b3 = bundle(&plain, &private, &d.path().join("unsigned.slate"));
    let o = secure_boot_qemu(
        &disk,
        &vars,
        &[&b3],
        &["committed:B", "installing:A", "install_failed:A"],
        300,
        &d.path().join("refused.log"),
        None,
    );
    assert_met(&o, "an unsigned UKI is refused by the device");
    let reason = install_failure(&o);
    assert!(
        reason.contains("uki-a fails this device's Secure Boot check")
            && reason.contains("not signed"),
        "{reason}"
    );
    assert_no_entry(&disk, "a");

    // The unsigned image's own disk: the firmware refuses its boot loader.
    let log = d.path().join("unsigned.log");
    let o = secure_boot_qemu(
        &plain.join("disk.img"),
        &vars,
        &[],
        &["booted:A"],
        45,
        &log,
        None,
    );
    assert_eq!(o.expectations_met, 0, "{}", describe(&o));
    let console = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(
        console.contains("Access Denied") || console.contains("Security Violation"),
        "the firmware did not refuse the unsigned loader:\n{console}"
    );
}

/// The firmware's boot options in `BootOrder` order, as (title, device
/// path), printed by virt-fw-vars from the variable store `vars`.
fn firmware_boot_order(tool: &Path, vars: &Path) -> Vec<(String, String)> {
    let o = Command::new(tool)
        .arg("--input")
        .arg(vars)
        .arg("--print")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let order = field("BootOrder");
    let order = order
        .strip_prefix("boot order:")
        .unwrap_or(&order)
        .to_string();
    order
        .split([',', ' '])
        .filter(|n| !n.is_empty())
        .map(|n| {
            let entry = field(&format!("Boot{n}"));
            let title = entry
                .split_once("title=\"")
                .and_then(|(_, t)| t.split_once('"'))
                .map(|(t, _)| t.to_string())
                .unwrap_or_else(|| panic!("Boot{n}: {entry}"));
            let path = entry.split_once("devpath=").map_or("", |(_, p)| p);
            (title, path.to_string())
        })
        .collect()
}

/// Flips a byte of the `.cmdline` of `uki` where it lies in partition 1
/// (the ESP) of `disk`: the file's signature no longer matches.
fn tamper_esp_copy(disk: &Path, uki: &Path) {
    let cmdline =
        slate::uki::read_section(&mut std::fs::File::open(uki).unwrap(), ".cmdline", 4096)
            .unwrap()
            .expect("a .cmdline section");
    let (start, len) = images::partition_range(disk, 1);
    let esp = {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(disk).unwrap();
        f.seek(SeekFrom::Start(start)).unwrap();
        let mut b = vec![0; len as usize];
        f.read_exact(&mut b).unwrap();
        b
    };
    let at: Vec<usize> = esp
        .windows(cmdline.len())
        .enumerate()
        .filter(|(_, w)| *w == cmdline.as_slice())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "{} on the ESP: {at:?}", uki.display());
    images::flip_bit(disk, start + at[0] as u64 + 8);
}

/// A UKI changed on the ESP after its install (someone with the disk):
/// the firmware refuses it, systemd-boot returns to the firmware with that
/// try counted, the firmware starts the next boot option, and once B's
/// tries are spent the loader falls back to A, which commits with a
/// `rollback` naming B.
#[test]
fn tampered_uki_is_refused_by_the_firmware_and_the_device_falls_back() {
    let test = "secure_boot_tampered_uki";
    if scenarios::skip(test) || skip(test) {
        return;
    }
    let Some(tool) = virt_fw_vars() else {
        images::shared::skipped(test, "virt-fw-vars (PyPI virt-firmware) is missing");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let keys = d.path().join("sb");
    run_ok(slate().args(["keygen", "--secure-boot"]).arg(&keys));
    let (private, public) = keygen(d.path(), "k");
    let recipe = |version: &str| {
        let mut r = Recipe {
            uki: true,
            ..Recipe::counter(version, &public)
        };
        r.extra.push_str(&format!(
            "\n[secure_boot]\nkey = {:?}\ncert = {:?}\n",
            keys.join("db.key").display().to_string(),
            keys.join("db.crt").display().to_string()
        ));
        r
    };
    let v1 = build(d.path(), "v1", &recipe("1.0.0"));
    let v2 = build(d.path(), "v2", &recipe("2.0.0"));
    let b2 = bundle(&v2, &private, &d.path().join("v2.slate"));
    let vars = enrolled_vars(&tool, &keys, &d.path().join("vars.fd"));
    let disk = d.path().join("disk.img");
    std::fs::copy(v1.join("disk.img"), &disk).unwrap();
    let nvram = d.path().join("nvram.fd");
    let o = secure_boot_qemu(
        &disk,
        &vars,
        &[&b2],
        &["committed:A", "installed:B"],
        240,
        &d.path().join("install.log"),
        Some(&nvram),
    );
    assert_met(&o, "v1 installs v2 into B");
    // The agent put one firmware boot option per try (tries + 1) of the
    // disk's loader at the head of the boot order; virt-fw-vars reads them
    // back from the variable store the firmware kept.
    let written = events(&o, "boot_options");
    assert_eq!(written.len(), 1, "{}", describe(&o));
    assert_eq!(written[0]["written"], 3, "{}", describe(&o));
    let order = firmware_boot_order(&tool, &nvram);
    let head: Vec<&str> = order.iter().take(3).map(|(t, _)| t.as_str()).collect();
    assert_eq!(head, ["slate 1", "slate 2", "slate 3"], "{order:?}");
    for (title, path) in &order[..3] {
        assert_eq!(
            path, r"Partition(nr=1)/FilePath(\EFI\BOOT\BOOTX64.EFI)",
            "{title}"
        );
    }
    assert_eq!(
        order
            .iter()
            .filter(|(t, _)| t.starts_with("slate "))
            .count(),
        3,
        "{order:?}"
    );
    tamper_esp_copy(&disk, &v2.join("uki-b.efi"));

    let log = d.path().join("tampered.log");
    let o = secure_boot_qemu(
        &disk,
        &vars,
        &[],
        &["booted:A", "rollback", "committed:A"],
        300,
        &log,
        Some(&nvram),
    );
    assert_met(&o, "the refused UKI falls back");
    assert_fell_back_to_a(&o, "2.0.0");
    let console = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(
        console.contains("Access Denied") || console.contains("Security Violation"),
        "the firmware did not refuse B's UKI:\n{console}"
    );
    // The firmware itself went through the agent's options, each naming
    // this disk's ESP by its GPT GUID (OVMF prints the device path).
    let esp = format!("HD(1,GPT,{},", images::partition_guid(&disk, 1));
    for n in 1..=3 {
        let started = console.lines().any(|l| {
            l.contains("BdsDxe: starting Boot")
                && l.contains(&format!("\"slate {n}\""))
                && l.to_ascii_uppercase().contains(&esp)
        });
        assert!(
            started,
            "the firmware never started \"slate {n}\" on {esp}:\n{console}"
        );
    }
}
