//! Unified kernel images (issue 13): `slate::uki::assemble` adds the kernel,
//! initrd, command line and os-release of a built image to Debian's
//! systemd-stub. Checked by independent readers: objdump (binutils) lists
//! the sections with their sizes and contents, and OVMF + systemd-stub +
//! the kernel boot the result as the firmware's default boot program to a
//! committed, dm-verity-verified slot A.

mod images;
mod scenarios;

use images::{Recipe, keygen, partition_range, run_ok};
use scenarios::*;
use slate::uki::{Content, NewSection, assemble};
use std::path::Path;
use std::process::Command;

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// The `options` line of slot A's boot entry on the ESP of `disk`.
fn slot_a_options(disk: &Path, scratch: &Path) -> String {
    let (off, _) = partition_range(disk, 1);
    let entry = esp_entries(disk)
        .into_iter()
        .find(|e| e.ends_with("-a.conf"))
        .expect("slot A has an entry");
    let copy = scratch.join(&entry);
    run_ok(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-n")
            .arg("-i")
            .arg(format!("{}@@{off}", disk.display()))
            .arg(format!("::/loader/entries/{entry}"))
            .arg(&copy),
    );
    std::fs::read_to_string(&copy)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .expect("an options line")
        .to_string()
}

#[test]
fn unified_image_has_its_sections_and_boots_slot_a() {
    let test = "uki";
    if scenarios::skip(test) || slate_skip_without_stub(test) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, public) = keygen(d.path(), "k");
    let out = images::build(d.path(), "img", &Recipe::counter("1.0.0", &public));
    let disk = d.path().join("disk.img");
    std::fs::copy(out.join("disk.img"), &disk).unwrap();
    let cmdline = slot_a_options(&disk, d.path());
    assert!(cmdline.contains("slate.verity="), "{cmdline}");
    let osrel = b"ID=slate\nVERSION_ID=1.0.0\n";
    let stub = std::fs::read(STUB).unwrap();
    let (kernel, initrd) = (out.join("vmlinuz"), out.join("initrd.img"));
    let sections = [
        NewSection {
            name: ".osrel",
            content: Content::Bytes(osrel),
        },
        NewSection {
            name: ".cmdline",
            content: Content::Bytes(cmdline.as_bytes()),
        },
        NewSection {
            name: ".initrd",
            content: Content::File(&initrd),
        },
        NewSection {
            name: ".linux",
            content: Content::File(&kernel),
        },
    ];
    let uki = d.path().join("slate-a.efi");
    let mut f = std::fs::File::create(&uki).unwrap();
    let layout = assemble(&stub, &sections, &mut f).unwrap();
    drop(f);
    // The same inputs give the same bytes.
    let again = d.path().join("again.efi");
    assemble(
        &stub,
        &sections,
        &mut std::fs::File::create(&again).unwrap(),
    )
    .unwrap();
    assert_eq!(std::fs::read(&uki).unwrap(), std::fs::read(&again).unwrap());

    // objdump's view: every section of the stub and ours, with our sizes.
    let h = run_ok(Command::new("objdump").arg("-h").arg(&uki));
    let h = String::from_utf8_lossy(&h.stdout);
    let size_of = |name: &str| -> u64 {
        let line = h
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("objdump -h lists no {name}:\n{h}"));
        u64::from_str_radix(line.split_whitespace().nth(2).unwrap(), 16).unwrap()
    };
    for s in [".text", ".sbat", ".sdmagic"] {
        size_of(s);
    }
    assert_eq!(size_of(".osrel"), osrel.len() as u64);
    assert_eq!(size_of(".cmdline"), cmdline.len() as u64);
    let len = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert_eq!(size_of(".initrd"), len(&initrd));
    assert_eq!(size_of(".linux"), len(&kernel));
    assert_eq!(layout.len(), 12, "{layout:?}");
    // objdump's dump of .cmdline is our text.
    let dump = run_ok(
        Command::new("objcopy")
            .args(["-O", "binary", "--only-section=.cmdline"])
            .arg(&uki)
            .arg(d.path().join("cmdline.bin")),
    );
    let _ = dump;
    assert_eq!(
        std::fs::read(d.path().join("cmdline.bin")).unwrap(),
        cmdline.as_bytes()
    );

    // sbsigntool parses it as a PE image it can sign, and verifies the
    // signature it made (the Secure Boot signer to come must match this).
    let (key, cert) = (d.path().join("db.key"), d.path().join("db.crt"));
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
    let signed = d.path().join("signed.efi");
    run_ok(
        Command::new("sbsign")
            .arg("--key")
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .arg("--output")
            .arg(&signed)
            .arg(&uki),
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

    // The firmware's default boot program (a fresh variable store boots the
    // removable-media path) is now the UKI instead of systemd-boot: OVMF
    // loads it, systemd-stub starts the kernel with the embedded command
    // line (nothing else gives it one), and the agent commits slot A with
    // its root verified.
    let (off, _) = partition_range(&disk, 1);
    run_ok(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-o", "-i"])
            .arg(format!("{}@@{off}", disk.display()))
            .arg(&uki)
            .arg("::/EFI/BOOT/BOOTX64.EFI"),
    );
    let log = d.path().join("console.log");
    let o = boot(&disk, &["booted:A", "committed:A"], &[], 180, &log);
    assert_met(&o, "the UKI boots slot A");
    let booted = &events(&o, "booted")[0];
    assert_eq!(
        booted["verity"],
        build_verity(&out)["root_hash_a"],
        "{booted:?}"
    );
}

fn slate_skip_without_stub(test: &str) -> bool {
    if Path::new(STUB).exists()
        && ["objdump", "objcopy", "sbsign", "sbverify", "openssl"]
            .iter()
            .all(|t| images::shared::have(t))
    {
        return false;
    }
    images::shared::skipped(
        test,
        "systemd-boot-efi's linuxx64.efi.stub, binutils or sbsigntool is missing",
    );
    true
}
