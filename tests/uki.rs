//! Unified kernel images (issue 13): with `[kernel] uki = true` each slot
//! boots one UKI that slate assembles in Rust from Debian's systemd-stub,
//! the kernel, the initramfs, the slot's command line and os-release.
//! Checked by independent readers: objdump and objcopy (binutils) list the
//! sections and extract the command line, sbsign/sbverify (sbsigntool) sign
//! and verify the image, mtools reads the ESP, and OVMF + systemd-boot +
//! systemd-stub + the kernel boot it: a device running a kernel-and-initrd
//! image updates to a UKI image and commits it with its root verified, and
//! refuses a UKI built for another disk.

mod images;
mod scenarios;

use images::{
    Recipe, build, build_verity, bundle, dissected_root, keygen, partition_range, run_ok,
    sha256sum, slate,
};
use scenarios::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// `mtype` of one file on the ESP of `disk`, as bytes (`None` if absent).
fn esp_file(disk: &Path, path: &str, scratch: &Path) -> Option<Vec<u8>> {
    let (off, _) = partition_range(disk, 1);
    let copy = scratch.join("esp-file");
    let _ = std::fs::remove_file(&copy);
    let ok = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-n", "-i"])
        .arg(format!("{}@@{off}", disk.display()))
        .arg(format!("::/{path}"))
        .arg(&copy)
        .output()
        .unwrap()
        .status
        .success();
    ok.then(|| std::fs::read(&copy).unwrap())
}

/// The text of `slot`'s boot entry on the ESP of `disk`.
fn entry_of(disk: &Path, slot: &str, scratch: &Path) -> String {
    let name = esp_entries(disk)
        .into_iter()
        .find(|e| {
            e.split('+')
                .next()
                .unwrap()
                .trim_end_matches(".conf")
                .ends_with(&format!("-{slot}"))
        })
        .unwrap_or_else(|| panic!("slot {slot} has no entry: {:?}", esp_entries(disk)));
    String::from_utf8(esp_file(disk, &format!("loader/entries/{name}"), scratch).unwrap()).unwrap()
}

/// objdump -h's sizes of `uki`'s sections, by name.
fn section_sizes(uki: &Path) -> Vec<(String, u64)> {
    let h = run_ok(Command::new("objdump").arg("-h").arg(uki));
    String::from_utf8_lossy(&h.stdout)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 3 && w[0].parse::<u32>().is_ok())
                .then(|| (w[1].to_string(), u64::from_str_radix(w[2], 16).unwrap()))
        })
        .collect()
}

/// The `.cmdline` section of `uki`, extracted by objcopy.
fn objcopy_cmdline(uki: &Path, scratch: &Path) -> String {
    let out = scratch.join("cmdline.bin");
    run_ok(
        Command::new("objcopy")
            .args(["-O", "binary", "--only-section=.cmdline"])
            .arg(uki)
            .arg(&out),
    );
    String::from_utf8(std::fs::read(out).unwrap()).unwrap()
}

fn uki_recipe(name: &str, version: &str, key: &Path) -> Recipe {
    Recipe {
        name: name.into(),
        uki: true,
        ..Recipe::counter(version, key)
    }
}

fn checks_built_images(out: &Path, scratch: &Path) {
    let v = build_verity(out);
    let len = |p: PathBuf| std::fs::metadata(p).unwrap().len();
    for (slot, root) in [("a", "root_hash_a"), ("b", "root_hash_b")] {
        let uki = out.join(format!("uki-{slot}.efi"));
        let sizes = section_sizes(&uki);
        let size = |n: &str| {
            sizes
                .iter()
                .find(|(s, _)| s == n)
                .unwrap_or_else(|| panic!("objdump lists no {n} in {}: {sizes:?}", uki.display()))
                .1
        };
        for s in [".text", ".sbat", ".sdmagic", ".osrel"] {
            size(s);
        }
        assert_eq!(size(".linux"), len(out.join("vmlinuz")));
        assert_eq!(size(".initrd"), len(out.join("initrd.img")));
        let cmdline = objcopy_cmdline(&uki, scratch);
        assert_eq!(size(".cmdline"), cmdline.len() as u64);
        let upper = slot.to_uppercase();
        assert!(
            cmdline.contains(&format!(" slate.slot={upper} ")),
            "{cmdline}"
        );
        let root_hash = v[root].as_str().unwrap();
        assert!(
            cmdline.contains(&format!(" slate.verity={root_hash}:")),
            "slot {upper}'s command line carries its root hash: {cmdline}"
        );
    }
    // sbsigntool parses it as a PE image it can sign, and verifies the
    // signature it made.
    let (key, cert) = (scratch.join("db.key"), scratch.join("db.crt"));
    run_ok(
        Command::new("openssl")
            .args([
                "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=slate test db/"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    let signed = scratch.join("signed.efi");
    run_ok(
        Command::new("sbsign")
            .arg("--key")
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .arg("--output")
            .arg(&signed)
            .arg(out.join("uki-a.efi")),
    );
    let v = run_ok(
        Command::new("sbverify")
            .arg("--cert")
            .arg(&cert)
            .arg(&signed),
    );
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("Signature verification OK"),
        "{v:?}"
    );
    // The ESP holds each slot's image, byte for byte, and entries that start
    // it with no options (systemd-stub uses the embedded command line).
    let disk = out.join("disk.img");
    for slot in ["a", "b"] {
        assert_eq!(
            esp_file(&disk, &format!("slate/{slot}/uki.efi"), scratch).as_deref(),
            Some(
                std::fs::read(out.join(format!("uki-{slot}.efi")))
                    .unwrap()
                    .as_slice()
            )
        );
        assert_eq!(
            esp_file(&disk, &format!("slate/{slot}/vmlinuz"), scratch),
            None
        );
        let entry = entry_of(&disk, slot, scratch);
        assert!(
            entry.ends_with(&format!("\nefi /slate/{slot}/uki.efi\n")),
            "{entry}"
        );
        assert!(!entry.contains("options"), "{entry}");
    }
}

#[test]
fn slots_boot_unified_images_through_an_update() {
    let test = "uki";
    if scenarios::skip(test) || slate_skip_without_stub(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let scratch = d.path();
    let (private, public) = keygen(d.path(), "k");
    // The device starts on an image that boots a kernel and an initrd.
    let v1 = build(d.path(), "v1", &Recipe::counter("1.0.0", &public));
    let v2 = build(d.path(), "v2", &uki_recipe("scenario", "2.0.0", &public));
    checks_built_images(&v2, scratch);
    // Reproducible: a second build gives the same images and disk.
    let again = build(
        d.path(),
        "v2-again",
        &uki_recipe("scenario", "2.0.0", &public),
    );
    for f in ["uki-a.efi", "uki-b.efi", "disk.img"] {
        assert_eq!(sha256sum(&v2.join(f)), sha256sum(&again.join(f)), "{f}");
    }
    // The bundle ships the images instead of the kernel and the initrd.
    let b2 = bundle(&v2, &private, &d.path().join("v2.slate"));
    let inspect = run_ok(slate().arg("inspect").arg("--json").arg(&b2));
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let names: Vec<&str> = inspect["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"uki-a") && names.contains(&"uki-b"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"kernel") && !names.contains(&"initrd"),
        "{names:?}"
    );
    // An image of another name has other partition GUIDs in its command lines.
    let foreign = build(d.path(), "other", &uki_recipe("other", "3.0.0", &public));
    let b3 = bundle(&foreign, &private, &d.path().join("other.slate"));

    let disk = d.path().join("disk.img");
    std::fs::copy(v1.join("disk.img"), &disk).unwrap();
    let log = d.path().join("console.log");
    let o = boot(
        &disk,
        &[
            "committed:A",
            "installing:B",
            "installed:B",
            "booted:B",
            "committed:B",
        ],
        &[&b2],
        300,
        &log,
    );
    assert_met(&o, "v1 (kernel + initrd) -> v2 (UKI)");
    let booted = events(&o, "booted");
    assert_eq!(
        booted.last().unwrap()["verity"],
        build_verity(&v2)["root_hash_b"],
        "{}",
        describe(&o)
    );
    assert_eq!(dissected_root(&disk), ("root-b".into(), true));
    // Slot B boots its image, written whole; slot A keeps its kernel and initrd.
    assert_eq!(
        esp_file(&disk, "slate/b/uki.efi", scratch).as_deref(),
        Some(std::fs::read(v2.join("uki-b.efi")).unwrap().as_slice())
    );
    assert_eq!(esp_file(&disk, "slate/b/vmlinuz", scratch), None);
    assert!(esp_file(&disk, "slate/a/vmlinuz", scratch).is_some());
    let entry = entry_of(&disk, "b", scratch);
    assert!(entry.ends_with("\nefi /slate/b/uki.efi\n"), "{entry}");

    // A UKI built for another disk names partitions this device does not
    // have: the install fails before slot A gets an entry, and B stays
    // committed.
    let o = boot(
        &disk,
        &["committed:B", "installing:A", "install_failed:A"],
        &[&b3],
        300,
        &log,
    );
    assert_met(&o, "a foreign UKI is refused");
    let reason = install_failure(&o);
    assert!(
        reason.contains("uki-a does not fit this device")
            && reason.contains("names slot A's root partition"),
        "{reason}"
    );
    assert_no_entry(&disk, "a");
    let state = device_state(&disk, &d.path().join("state.data"));
    assert_eq!(state["update"]["phase"], "idle", "{state}");
}

fn slate_skip_without_stub(test: &str) -> bool {
    if Path::new(STUB).exists()
        && [
            "objdump", "objcopy", "sbsign", "sbverify", "openssl", "mcopy",
        ]
        .iter()
        .all(|t| images::shared::have(t))
    {
        return false;
    }
    images::shared::skipped(
        test,
        "systemd-boot-efi's linuxx64.efi.stub, binutils, mtools or sbsigntool is missing",
    );
    true
}
