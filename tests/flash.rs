//! Flashing (issue 11): `disk.img.bmap` beside disk.img is read by bmaptool
//! (Debian's bmap-tools), which then writes an exact copy to a new file, and
//! onto a used device (a file full of old data) an image every filesystem
//! checker accepts: the blocks it skips are ones whose content cannot matter.

mod images;

use images::{Recipe, build, extract_partition, keygen, run_ok};
use std::process::Command;

fn have_bmaptool() -> bool {
    let ok = Command::new("bmaptool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP bmap_copy: bmaptool (Debian package bmap-tools) is not installed");
    }
    ok
}

#[test]
fn bmaptool_copies_the_disk_exactly_and_safely() {
    if !images::have_apt("bmap_copy") || !have_bmaptool() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, public) = keygen(d.path(), "k");
    let out = build(d.path(), "img", &Recipe::counter("1.0.0", &public));
    let disk = out.join("disk.img");
    let bmap = out.join("disk.img.bmap");
    let text = std::fs::read_to_string(&bmap).unwrap();
    assert!(text.contains("<bmap version=\"2.0\">"), "{text}");

    // To a new file: identical to disk.img.
    let copy = d.path().join("copy.img");
    run_ok(
        Command::new("bmaptool")
            .arg("copy")
            .arg("--bmap")
            .arg(&bmap)
            .arg(&disk)
            .arg(&copy),
    );
    let (a, b) = (std::fs::read(&disk).unwrap(), std::fs::read(&copy).unwrap());
    assert!(a == b, "bmaptool copy differs from disk.img");

    // Fewer blocks than the whole disk are mapped ...
    let field = |name: &str| -> u64 {
        let open = format!("<{name}>");
        let s = &text[text.find(&open).unwrap() + open.len()..];
        s[..s.find('<').unwrap()].trim().parse().unwrap()
    };
    assert!(field("MappedBlocksCount") < field("BlocksCount"));
    // ... and onto old data the result still checks out everywhere.
    let used = d.path().join("used.img");
    std::fs::write(&used, vec![0xa5u8; a.len()]).unwrap();
    run_ok(
        Command::new("bmaptool")
            .arg("copy")
            .arg("--bmap")
            .arg(&bmap)
            .arg(&disk)
            .arg(&used),
    );
    let v = run_ok(Command::new("sgdisk").arg("-v").arg(&used));
    assert!(String::from_utf8_lossy(&v.stdout).contains("No problems found"));
    let esp = extract_partition(&used, 1, &d.path().join("esp.img"));
    run_ok(Command::new("fsck.fat").arg("-n").arg(&esp));
    for n in [2, 3, 4] {
        let part = extract_partition(&used, n, &d.path().join(format!("p{n}.img")));
        run_ok(Command::new("e2fsck").arg("-fn").arg(&part));
    }
    // The root filesystem's files are intact: same content as the build's.
    let (off, _) = images::partition_range(&used, 2);
    let rootfs = std::fs::read(out.join("rootfs.ext4")).unwrap();
    let slot = &std::fs::read(&used).unwrap()[off as usize..off as usize + rootfs.len()];
    let cat = |img: &std::path::Path| {
        run_ok(
            Command::new("debugfs")
                .arg("-R")
                .arg("cat /usr/bin/count-boots")
                .arg(img),
        )
        .stdout
    };
    let flashed = d.path().join("slot.img");
    std::fs::write(&flashed, slot).unwrap();
    assert_eq!(cat(&flashed), cat(&out.join("rootfs.ext4")));
    assert!(!cat(&flashed).is_empty());
}
