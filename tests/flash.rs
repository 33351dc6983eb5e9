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

    // `slate inspect` reads the same image back (issue 11), checked against
    // sgdisk and mtools, in the shape docs/json.md shows.
    let j = run_ok(images::slate().arg("inspect").arg(&out).arg("--json"));
    let j: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md")).unwrap();
    let ex = &doc[doc.find("```json inspect-image\n").unwrap() + 22..];
    let ex: serde_json::Value = serde_json::from_str(&ex[..ex.find("```").unwrap()]).unwrap();
    assert_eq!(keys(&ex), keys(&j));
    assert_eq!(keys(&ex["disk"]), keys(&j["disk"]));
    assert_eq!(
        keys(&ex["disk"]["slots"]["A"]),
        keys(&j["disk"]["slots"]["A"])
    );
    assert_eq!(j["schema"], 1);
    assert_eq!(j["kind"], "build");
    assert_eq!(j["build"]["version"], "1.0.0");
    for (n, p) in j["disk"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let (off, len) = images::partition_range(&disk, n as u32 + 1);
        assert_eq!(
            (p["offset"].as_u64(), p["size"].as_u64()),
            (Some(off), Some(len))
        );
    }
    for slot in ["A", "B"] {
        let s = &j["disk"]["slots"][slot];
        assert_eq!(s["version"], "1.0.0", "{s}");
        assert_eq!(s["image"], "scenario", "{s}");
        assert!(s["files"].as_u64().unwrap() > 100, "{s}");
    }
    assert_eq!(j["disk"]["slots"]["A"]["boot_state"], "good");
    let esp = extract_partition(&disk, 1, &d.path().join("esp2.img"));
    let listing = run_ok(
        Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-/", "-b", "-i"])
            .arg(&esp)
            .arg("::/"),
    );
    let mut from_mtools: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(|l| l.trim_start_matches("::").to_string())
        .collect();
    from_mtools.sort();
    let from_slate: Vec<String> = j["disk"]["esp_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(from_slate, from_mtools);
    // A disk image directly: the same disk, `kind` disk and no build.
    let k = run_ok(images::slate().arg("inspect").arg(&disk).arg("--json"));
    let k: serde_json::Value = serde_json::from_slice(&k.stdout).unwrap();
    assert_eq!(k["kind"], "disk");
    assert!(k["build"].is_null());
    assert_eq!(k["disk"], j["disk"]);
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}
