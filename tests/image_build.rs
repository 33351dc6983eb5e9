//! `slate build`: the disk it writes is valid by independent tools, builds
//! are reproducible, and bad recipes fail cleanly (issue 4).

mod images;

use images::{Recipe, build, extract_partition, keygen, run_ok, sha256_range, sha256sum, slate};
use std::path::Path;
use std::process::Command;

fn tool_ok(program: &str, args: &[&str], path: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(path)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {args:?} {} failed:\n{text}",
        path.display()
    );
    text
}

#[test]
fn disk_is_valid_per_sgdisk_fsck_and_e2fsck() {
    if !images::have_apt("disk_is_valid") || !images::have_validators("disk_is_valid") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, public) = keygen(d.path(), "k");
    let out = build(d.path(), "img", &Recipe::counter("1.0.0", &public));
    let disk = out.join("disk.img");

    let v = tool_ok("sgdisk", &["-v"], &disk);
    assert!(v.contains("No problems found"), "{v}");
    let p = tool_ok("sgdisk", &["-p"], &disk);
    for name in ["esp", "root-a", "root-b", "data"] {
        assert!(p.contains(name), "partition {name} missing:\n{p}");
    }
    let types = [
        (1, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        (2, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
        (3, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
        (4, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
    ];
    for (n, ty) in types {
        let info = tool_ok("sgdisk", &["-i", &n.to_string()], &disk);
        assert!(info.contains(ty), "partition {n} type:\n{info}");
    }

    let esp = extract_partition(&disk, 1, &d.path().join("esp.img"));
    tool_ok("fsck.fat", &["-n"], &esp);
    let entries = tool_ok("mdir", &["-b", "-i"], &esp.with_extension("img"));
    let _ = entries;
    let listing = run_ok(
        Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-b", "-i"])
            .arg(&esp)
            .arg("::/loader/entries"),
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("slate-00000001-a.conf"), "{listing}");
    assert!(listing.contains("slate-00000000-b.conf"), "{listing}");
    for f in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/slate/a/vmlinuz",
        "::/slate/b/initrd",
    ] {
        run_ok(
            Command::new("mtype")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(&esp)
                .arg(f)
                .stdout(std::process::Stdio::null()),
        );
    }
    let kernel_on_esp = d.path().join("vmlinuz.esp");
    run_ok(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&esp)
            .arg("::/slate/a/vmlinuz")
            .arg(&kernel_on_esp),
    );
    // The ESP copy is the kernel, zero-padded to its fixed capacity (so
    // updates can overwrite it in place).
    let on_esp = std::fs::read(&kernel_on_esp).unwrap();
    let kernel = std::fs::read(out.join("vmlinuz")).unwrap();
    assert_eq!(
        on_esp.len() as u64,
        slate::boot_env::systemd_boot::boot_file_capacity(kernel.len() as u64)
    );
    assert_eq!(&on_esp[..kernel.len()], &kernel[..]);
    assert!(on_esp[kernel.len()..].iter().all(|b| *b == 0));

    for (n, name) in [(2, "root-a"), (3, "root-b"), (4, "data")] {
        let part = extract_partition(&disk, n, &d.path().join(format!("{name}.img")));
        tool_ok("e2fsck", &["-fn"], &part);
    }
    // Slot A holds exactly the slot image; slot B the same filesystem under
    // its own UUID (blkid, an independent reader, sees two UUIDs), and it
    // differs from the image only inside its superblock copies.
    let rootfs = out.join("rootfs.ext4");
    let len = std::fs::metadata(&rootfs).unwrap().len();
    let (off, _) = images::partition_range(&disk, 2);
    assert_eq!(sha256_range(&disk, off, len), sha256sum(&rootfs), "slot A");
    let uuid = |p: &Path| {
        let out = run_ok(
            Command::new("blkid")
                .args(["-p", "-o", "value", "-s", "UUID"])
                .arg(p),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (ua, ub) = (
        uuid(&d.path().join("root-a.img")),
        uuid(&d.path().join("root-b.img")),
    );
    assert!(ua.len() == 36 && ub.len() == 36 && ua != ub, "{ua} / {ub}");
    assert_eq!(uuid(&rootfs), ua);
    let image = std::fs::read(&rootfs).unwrap();
    let slot_b = std::fs::read(d.path().join("root-b.img")).unwrap();
    let differ: Vec<usize> = (0..image.len())
        .step_by(1024)
        .filter(|&i| image[i..i + 1024] != slot_b[i..i + 1024])
        .collect();
    assert_eq!(differ, [1024], "slot B differs outside its superblock");
    // systemd-dissect takes the committed slot A as the root, read-only.
    assert_eq!(images::dissected_root(&disk), ("root-a".into(), true));
    // Both slots verify with veritysetup against the build's root hashes; one
    // flipped byte in slot B's data is refused.
    let scratch = d.path().join("verity");
    for n in [2, 3] {
        images::veritysetup_verify(&disk, n, &out, &scratch).unwrap();
    }
    let (off_b, _) = images::partition_range(&disk, 3);
    images::flip_bit(&disk, off_b + 3 * 4096 + 7);
    let refused = images::veritysetup_verify(&disk, 3, &out, &scratch).unwrap_err();
    assert!(refused.contains("Verification failed"), "{refused}");
    images::flip_bit(&disk, off_b + 3 * 4096 + 7);
    images::veritysetup_verify(&disk, 3, &out, &scratch).unwrap();
    // The data partition has a journal; the slots do not need one.
    let data = d.path().join("data.img");
    let features = tool_ok("dumpe2fs", &["-h"], &data);
    assert!(features.contains("has_journal"), "{features}");

    // The manifest's digests are right (checked by coreutils).
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    for a in manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .chain([&manifest["disk"]])
    {
        let file = out.join(a["file"].as_str().unwrap());
        assert_eq!(
            a["sha256"].as_str().unwrap(),
            sha256sum(&file),
            "{}",
            file.display()
        );
    }

    // What init needs is in the root filesystem (read by debugfs).
    let ls = run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg("stat /usr/bin/slate-agent")
            .arg(&rootfs),
    );
    assert!(String::from_utf8_lossy(&ls.stdout).contains("Type: regular"));
    let inittab = run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg("cat /etc/inittab")
            .arg(&rootfs),
    );
    let inittab = String::from_utf8_lossy(&inittab.stdout);
    assert!(
        inittab.contains("::once:/usr/bin/slate-agent boot"),
        "{inittab}"
    );
    assert!(inittab.contains("::wait:/usr/bin/count-boots"), "{inittab}");
    let init = run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg("stat /sbin/init")
            .arg(&rootfs),
    );
    assert!(String::from_utf8_lossy(&init.stdout).contains("Fast link dest: \"/bin/busybox\""));

    // The lock file pins what was used, and the next build uses it.
    let lock = std::fs::read_to_string(d.path().join("img.lock")).unwrap();
    assert!(lock.contains("name = \"busybox-static\""), "{lock}");
    let again = run_ok(
        slate()
            .arg("build")
            .arg(d.path().join("img.toml"))
            .arg("--out-dir")
            .arg(d.path().join("img")),
    );
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !stderr.contains("resolving packages"),
        "lock not used:\n{stderr}"
    );
    assert_eq!(
        sha256sum(&out.join("disk.img")),
        manifest["disk"]["sha256"].as_str().unwrap()
    );
}

#[test]
fn builds_are_reproducible_across_directories() {
    if !images::have_apt("builds_are_reproducible") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, public) = keygen(d.path(), "k");
    let mut outs = Vec::new();
    for sub in ["first/place", "second"] {
        let dir = d.path().join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        // Each build gets its own copy of the key, in a different place.
        let key = dir.join("dev.pub");
        std::fs::copy(&public, &key).unwrap();
        outs.push(build(&dir, "img", &Recipe::counter("1.0.0", &key)));
    }
    for f in [
        "disk.img",
        "rootfs.ext4",
        "vmlinuz",
        "initrd.img",
        "boot.json",
        "manifest.json",
    ] {
        let (a, b) = (outs[0].join(f), outs[1].join(f));
        let status = Command::new("cmp").arg(&a).arg(&b).status().unwrap();
        assert!(status.success(), "{f} differs between builds");
    }
}

/// Runs a build expected to fail; returns its stderr and checks that it is
/// one line and that no output directory appeared.
fn failing_build(dir: &Path, file: &str, text: &str) -> String {
    let recipe = dir.join(format!("{file}.toml"));
    std::fs::write(&recipe, text).unwrap();
    let out_dir = dir.join(format!("{file}-out"));
    let out = slate()
        .arg("build")
        .arg(&recipe)
        .arg("--out-dir")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "build of {file} succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("slate: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{stderr}");
    assert!(!out_dir.exists(), "{file}: output left behind");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "{file}: temp files left: {leftovers:?}"
    );
    errors[0].to_string()
}

#[test]
fn bad_recipes_fail_with_one_line_naming_the_field() {
    if !images::have_apt("bad_recipes") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, public) = keygen(d.path(), "k");
    let good = Recipe::counter("1.0.0", &public);

    let no_kernel = good
        .toml()
        .replace("package = \"linux-image-cloud-amd64\"\n", "");
    let e = failing_build(d.path(), "nokernel", &no_kernel);
    assert!(
        e.contains("nokernel.toml:") && e.contains("kernel: missing kernel"),
        "{e}"
    );

    let unknown_pkg = good.toml().replace(
        "packages = [\"busybox-static\"]",
        "packages = [\"busybox-static\", \"no-such-package-slate\"]",
    );
    let e = failing_build(d.path(), "unknownpkg", &unknown_pkg);
    assert!(
        e.contains("unknownpkg.toml:")
            && e.contains("rootfs.packages[1]")
            && e.contains("no-such-package-slate"),
        "{e}"
    );

    let small = Recipe {
        slot: "8M".into(),
        ..good.clone()
    };
    let e = failing_build(d.path(), "small", &small.toml());
    assert!(e.contains("small.toml:") && e.contains("disk.slot"), "{e}");
    // A filesystem as large as the slot leaves no room for its hash tree.
    let exact = Recipe {
        slot: "64M".into(),
        ..good.clone()
    }
    .toml()
    .replacen("[rootfs]\n", "[rootfs]\nsize = \"64M\"\n", 1);
    assert!(exact.contains("size = \"64M\""), "{exact}");
    let e = failing_build(d.path(), "notree", &exact);
    assert!(
        e.contains("notree.toml:") && e.contains("disk.slot") && e.contains("hash tree"),
        "{e}"
    );

    let unknown_key = good.toml().replace("[disk]", "[disk]\nslots = 3");
    let e = failing_build(d.path(), "unknownkey", &unknown_key);
    assert!(
        e.contains("unknownkey.toml:") && e.contains("unknown field `slots`"),
        "{e}"
    );

    let missing_key = Recipe {
        keys: vec![d.path().join("absent.pub")],
        ..good.clone()
    };
    let e = failing_build(d.path(), "nokey", &missing_key.toml());
    assert!(
        e.contains("update.public_keys[0]") && e.contains("absent.pub"),
        "{e}"
    );

    let bad_module = good
        .toml()
        .replace("\"virtio_blk\"]", "\"virtio_blk\", \"no_such_module\"]");
    let e = failing_build(d.path(), "badmodule", &bad_module);
    assert!(
        e.contains("kernel.modules[2]") && e.contains("no_such_module"),
        "{e}"
    );
}

#[test]
fn example_recipes_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            slate::recipe::Recipe::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "expected the example recipes in {}", dir.display());
}
