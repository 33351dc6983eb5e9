//! A whole disk assembled from the library (GPT + FAT ESP + empty slots),
//! checked with sgdisk, fsck.fat, mtools and, as root, the kernel's own
//! partition scan (losetup -P, blkid).

mod common;

use common::*;
use slate::filesystems::fat::{self, FatKind, FatOptions};
use slate::filesystems::gpt::{
    self, DiskLayout, DiskOptions, Guid, PartitionSize, PartitionSpec, attributes, types,
};
use slate::io::OffsetWriter;
use slate::tree::{ScanOptions, scan_host_dir};
use slate::units::Bytes;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

fn specs() -> Vec<PartitionSpec> {
    let part = |name: &str, t: Guid, mib: u64, attrs: u64| PartitionSpec {
        name: name.into(),
        type_guid: t,
        size: PartitionSize::Fixed(Bytes(mib * MIB)),
        guid: None,
        attributes: attrs,
    };
    vec![
        part("esp", types::ESP, 64, attributes::REQUIRED),
        part("root-a", types::ROOT_X86_64, 48, attributes::READ_ONLY),
        part(
            "root-b",
            types::ROOT_X86_64,
            48,
            attributes::READ_ONLY | attributes::NO_AUTO,
        ),
        PartitionSpec {
            size: PartitionSize::Rest,
            ..part("data", types::LINUX_DATA, 0, attributes::GROW_FS)
        },
    ]
}

struct Disk {
    _dir: tempfile::TempDir,
    path: PathBuf,
    src: PathBuf,
    layout: DiskLayout,
}

/// Plans and writes a 200 MiB sparse disk whose ESP holds a few files.
fn assemble() -> Disk {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("esp");
    fs::create_dir_all(src.join("EFI/BOOT")).unwrap();
    fs::create_dir_all(src.join("loader/entries")).unwrap();
    fs::write(
        src.join("EFI/BOOT/BOOTX64.EFI"),
        (0..400_000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    fs::write(src.join("loader/loader.conf"), b"timeout 0\n").unwrap();
    fs::write(src.join("loader/entries/slate-a+3-0.conf"), b"title A\n").unwrap();

    let opts = DiskOptions {
        image_name: "slate-test".into(),
        image_version: "1.2.3".into(),
        size: Some(Bytes(200 * MIB)),
        ..DiskOptions::default()
    };
    let layout = gpt::plan_disk(&specs(), &opts).unwrap();
    let path = dir.path().join("disk.img");
    let mut file = fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    file.set_len(layout.size.get()).unwrap();
    gpt::write_gpt(&mut file, &layout).unwrap();
    let esp = &layout.partitions[0];
    let tree = scan_host_dir(&src, &ScanOptions { xattrs: false }).unwrap();
    let window = OffsetWriter::new(&mut file, esp.offset.get(), esp.size.get()).unwrap();
    let fat_opts = FatOptions {
        size: Some(esp.size),
        label: "ESP".into(),
        ..FatOptions::default()
    };
    let summary = fat::write_fat(&tree, &fat_opts, window).unwrap();
    assert_eq!(summary.kind, FatKind::Fat32);
    file.sync_all().unwrap();
    Disk {
        _dir: dir,
        path,
        src,
        layout,
    }
}

fn sgdisk(args: &[&str], disk: &Path) -> String {
    let out = run_ok(cmd("sgdisk").args(args).arg(disk));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value after `key` in sgdisk's `-i` output.
fn field<'a>(info: &'a str, key: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{info}"))
        .trim()
}

fn check_with_sgdisk(disk: &Path, layout: &DiskLayout) {
    let verify = sgdisk(&["-v"], disk);
    assert!(verify.contains("No problems found"), "{verify}");
    let print = sgdisk(&["-p"], disk);
    assert_eq!(
        field(&print, "Disk identifier (GUID):"),
        layout.disk_guid.to_string().to_uppercase()
    );
    for p in &layout.partitions {
        let info = sgdisk(&["-i", &p.number.to_string()], disk);
        let code = field(&info, "Partition GUID code:");
        assert!(
            code.starts_with(&p.type_guid.to_string().to_uppercase()),
            "{info}"
        );
        assert_eq!(
            field(&info, "Partition unique GUID:"),
            p.guid.to_string().to_uppercase()
        );
        assert!(
            field(&info, "First sector:").starts_with(&format!("{} ", p.first_lba)),
            "{info}"
        );
        assert!(
            field(&info, "Last sector:").starts_with(&format!("{} ", p.last_lba)),
            "{info}"
        );
        assert_eq!(
            field(&info, "Attribute flags:"),
            format!("{:016X}", p.attributes)
        );
        assert_eq!(field(&info, "Partition name:"), format!("'{}'", p.name));
    }
}

#[test]
fn sgdisk_verifies_the_table_and_mtools_reads_the_esp() {
    if skip_without(
        "sgdisk_verifies_the_table_and_mtools_reads_the_esp",
        &["sgdisk", "fsck.fat", "mcopy"],
    ) {
        return;
    }
    let disk = assemble();
    let l = &disk.layout;
    assert_eq!(
        l.partitions
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["esp", "root-a", "root-b", "data"]
    );
    assert!(l.partitions.iter().all(|p| p.offset.get() % MIB == 0));
    check_with_sgdisk(&disk.path, l);

    // Sparse: only tables, FAT metadata and the ESP's files occupy blocks.
    let md = fs::metadata(&disk.path).unwrap();
    assert_eq!(md.len(), 200 * MIB);
    assert!(
        md.blocks() * 512 < 8 * MIB,
        "{} bytes allocated",
        md.blocks() * 512
    );

    // The ESP region: fsck.fat on a copy of it, mtools in place.
    let esp = &l.partitions[0];
    let region = disk.path.with_file_name("esp-region.img");
    let mut f = fs::File::open(&disk.path).unwrap();
    f.seek(SeekFrom::Start(esp.offset.get())).unwrap();
    let mut out = fs::File::create(&region).unwrap();
    std::io::copy(&mut (&mut f).take(esp.size.get()), &mut out).unwrap();
    out.flush().unwrap();
    let fsck = run_ok(cmd("fsck.fat").args(["-n", "-v"]).arg(&region));
    assert!(String::from_utf8_lossy(&fsck.stdout).contains("32 bit entries"));
    let back = disk.path.with_file_name("back");
    fs::create_dir(&back).unwrap();
    let spec = format!("{}@@{}", disk.path.display(), esp.offset.get());
    run_ok(
        cmd("mcopy")
            .env("LC_ALL", "C.UTF-8")
            .args(["-s", "-n", "-i", &spec, "::/*"])
            .arg(&back),
    );
    assert_eq!(walk(&disk.src), walk(&back));
    for rel in walk(&disk.src) {
        if disk.src.join(&rel).is_file() {
            assert!(
                fs::read(disk.src.join(&rel)).unwrap() == fs::read(back.join(&rel)).unwrap(),
                "{}",
                rel.display()
            );
        }
    }
}

#[test]
fn backup_table_recovers_a_damaged_primary() {
    if skip_without("backup_table_recovers_a_damaged_primary", &["sgdisk"]) {
        return;
    }
    let disk = assemble();
    let l = &disk.layout;
    // Smash the primary header and the start of its entry array.
    let mut f = fs::File::options()
        .read(true)
        .write(true)
        .open(&disk.path)
        .unwrap();
    f.seek(SeekFrom::Start(512)).unwrap();
    f.write_all(&[0xA5; 1024]).unwrap();
    f.sync_all().unwrap();

    // Our reader falls back to the backup and finds every partition.
    let t = gpt::read_table(&mut f).unwrap();
    assert!(t.from_backup);
    assert_eq!(t.disk_guid, l.disk_guid);
    let got: Vec<(String, Guid, Guid, u64, u64, u64)> = t
        .partitions
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.type_guid,
                p.guid,
                p.first_lba,
                p.last_lba,
                p.attributes,
            )
        })
        .collect();
    let want: Vec<(String, Guid, Guid, u64, u64, u64)> = l
        .partitions
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.type_guid,
                p.guid,
                p.first_lba,
                p.last_lba,
                p.attributes,
            )
        })
        .collect();
    assert_eq!(got, want);

    // sgdisk notices, rebuilds the primary from the backup, and then
    // verifies a table with the same partitions.
    let verify = String::from_utf8_lossy(
        &cmd("sgdisk")
            .arg("-v")
            .arg(&disk.path)
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        verify.contains("corrupt") && !verify.contains("No problems found"),
        "{verify}"
    );
    let mut repair = cmd("sgdisk");
    repair.args(["-e"]).arg(&disk.path);
    let out = repair.output().unwrap();
    assert!(
        out.status.success()
            || String::from_utf8_lossy(&out.stdout).contains("operation has completed"),
        "{out:?}"
    );
    check_with_sgdisk(&disk.path, l);
    let t = gpt::read_table(&mut f).unwrap();
    assert!(!t.from_backup);
}

#[test]
fn kernel_sees_partitions_with_their_partuuids() {
    if !is_root() {
        common::skipped(
            "kernel_sees_partitions_with_their_partuuids",
            "needs root for losetup",
        );
        return;
    }
    if skip_without(
        "kernel_sees_partitions_with_their_partuuids",
        &["losetup", "blkid"],
    ) {
        return;
    }
    if skip_without(
        "kernel_sees_partitions_with_their_partuuids",
        &["sgdisk", "truncate"],
    ) {
        return;
    }
    // First a reference disk made by sgdisk: some kernels (minimal VM ones)
    // are built without GPT support and never show partitions.
    let d = tempfile::tempdir().unwrap();
    let reference = d.path().join("ref.img");
    run_ok(cmd("truncate").args(["-s", "8M"]).arg(&reference));
    run_ok(cmd("sgdisk").args(["-n", "1:2048:+1M"]).arg(&reference));
    let Some(dev) = attach(&reference) else {
        common::skipped(
            "kernel_sees_partitions_with_their_partuuids",
            "losetup -P failed",
        );
        return;
    };
    let scanned = wait_for_partitions(&dev, 1);
    run_ok(cmd("losetup").arg("-d").arg(&dev));
    if !scanned {
        // The kernel of this machine kind (a container's) does not scan
        // loop devices for partitions; sgdisk -v checks the table instead.
        common::unsupported_here(
            "kernel_sees_partitions_with_their_partuuids",
            "this kernel shows no partitions of an sgdisk-made GPT disk",
        );
        return;
    }

    let disk = assemble();
    let l = &disk.layout;
    let dev = attach(&disk.path).expect("losetup worked a moment ago");
    let result = std::panic::catch_unwind(|| {
        assert!(
            wait_for_partitions(&dev, 4),
            "the kernel found no partitions on our disk"
        );
        let node = |n: u32| PathBuf::from(format!("{dev}p{n}"));
        let probe = |p: &Path| {
            let out = run_ok(cmd("blkid").args(["-p", "-o", "export"]).arg(p));
            String::from_utf8(out.stdout).unwrap()
        };
        let whole = probe(Path::new(&dev));
        assert!(whole.contains("PTTYPE=gpt"), "{whole}");
        assert!(
            whole.contains(&format!("PTUUID={}", l.disk_guid)),
            "{whole}"
        );
        for p in &l.partitions {
            let info = probe(&node(p.number));
            assert!(
                info.contains(&format!("PART_ENTRY_UUID={}\n", p.guid)),
                "{info}"
            );
            assert!(
                info.contains(&format!("PART_ENTRY_TYPE={}\n", p.type_guid)),
                "{info}"
            );
            assert!(
                info.contains(&format!("PART_ENTRY_NAME={}\n", p.name)),
                "{info}"
            );
            assert!(
                info.contains(&format!("PART_ENTRY_OFFSET={}\n", p.first_lba)),
                "{info}"
            );
            assert!(
                info.contains(&format!(
                    "PART_ENTRY_SIZE={}\n",
                    p.last_lba - p.first_lba + 1
                )),
                "{info}"
            );
            // The kernel's own view of where the partition starts.
            let sys = format!(
                "/sys/class/block/{}/start",
                node(p.number).file_name().unwrap().to_string_lossy()
            );
            assert_eq!(
                fs::read_to_string(sys).unwrap().trim(),
                p.first_lba.to_string()
            );
        }
        let esp = probe(&node(1));
        assert!(esp.contains("TYPE=vfat"), "{esp}");
        assert!(esp.contains("LABEL=ESP"), "{esp}");
        // Our reader on the block device agrees.
        let mut f = fs::File::open(&dev).unwrap();
        let t = gpt::read_table(&mut f).unwrap();
        assert_eq!(t.partitions.len(), 4);
        assert_eq!(t.by_name("root-b").unwrap().guid, l.partitions[2].guid);
    });
    run_ok(cmd("losetup").arg("-d").arg(&dev));
    result.unwrap();
}

/// Attaches `img` to a free loop device with partition scanning.
fn attach(img: &Path) -> Option<String> {
    let out = cmd("losetup")
        .args(["-P", "-f", "--show"])
        .arg(img)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits (the scan is asynchronous) until partitions 1..=n of `dev` exist.
fn wait_for_partitions(dev: &str, n: u32) -> bool {
    for _ in 0..60 {
        if (1..=n).all(|i| Path::new(&format!("{dev}p{i}")).exists()) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// `sgdisk -p`'s last usable sector and the disk's size in sectors.
fn usable_end(disk: &Path) -> (u64, u64) {
    let print = sgdisk(&["-p"], disk);
    let last = field(&print, "First usable sector is")
        .rsplit(' ')
        .next()
        .and_then(|v| v.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no last usable sector in:\n{print}"));
    let sectors = print
        .lines()
        .find_map(|l| l.strip_prefix("Disk "))
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no disk size in:\n{print}"));
    (last, sectors)
}

/// The data partition's first and last sector per `sgdisk -i 4`.
fn data_extent(disk: &Path) -> (u64, u64) {
    let info = sgdisk(&["-i", "4"], disk);
    let num = |k: &str| -> u64 { field(&info, k).split(' ').next().unwrap().parse().unwrap() };
    (num("First sector:"), num("Last sector:"))
}

/// Issue 11: /data grown on a larger disk. The rewritten table verifies
/// with sgdisk (backup at the end of the disk), the data partition ends
/// within one MiB of the last usable sector in whole MiB, and an
/// interrupted rewrite (backup written, primary not; or a torn primary) is
/// finished by the next plan.
#[test]
fn grown_table_fills_the_disk_and_verifies_with_sgdisk() {
    let test = "grown_table_fills_the_disk_and_verifies_with_sgdisk";
    if skip_without(test, &["sgdisk"]) {
        return;
    }
    let disk = assemble();
    let data = disk.layout.partitions[3].guid;
    let grow_by = 192 * MIB + 7 * 512;
    let open = || {
        fs::File::options()
            .read(true)
            .write(true)
            .open(&disk.path)
            .unwrap()
    };
    let mut f = open();
    f.set_len(200 * MIB + grow_by).unwrap();
    let total = (200 * MIB + grow_by) / 512;
    let before = sgdisk(&["-v"], &disk.path);
    assert!(!before.contains("No problems found"), "{before}");

    // The cut after the backup: the primary still rules, the plan is redone.
    let plan = gpt::plan_grow(&mut f, data, MIB).unwrap().unwrap();
    plan.write_backup(&mut f).unwrap();
    drop(f);
    assert_eq!(data_extent(&disk.path), {
        let p = &disk.layout.partitions[3];
        (p.first_lba, p.last_lba)
    });
    let mut f = open();
    let plan = gpt::plan_grow(&mut f, data, MIB).unwrap().unwrap();
    assert!(!plan.restores_primary());
    assert_eq!(plan.old_size(), 38 * MIB);
    assert_eq!(plan.new_size(), (38 + 192) * MIB);
    plan.write_backup(&mut f).unwrap();
    plan.write_primary(&mut f).unwrap();
    drop(f);

    let verify = sgdisk(&["-v"], &disk.path);
    assert!(verify.contains("No problems found"), "{verify}");
    let (last_usable, sectors) = usable_end(&disk.path);
    assert_eq!(sectors, total);
    assert_eq!(last_usable, total - 34, "the backup sits at the end");
    let (first, last) = data_extent(&disk.path);
    assert_eq!(first, disk.layout.partitions[3].first_lba);
    assert_eq!((last + 1 - first) % 2048, 0, "whole MiB");
    assert!(
        last <= last_usable && last_usable - last < 2048,
        "{last} {last_usable}"
    );
    // Everything else as it was.
    let mut grown = disk.layout.clone();
    grown.partitions[3].last_lba = last;
    check_with_sgdisk(&disk.path, &grown);

    // A torn primary (new header over the old entries) after a further
    // growth: sgdisk sees the damage, our plan restores it from the backup.
    let mut f = open();
    f.set_len(200 * MIB + grow_by + 64 * MIB).unwrap();
    let mut old_entries = vec![0u8; 32 * 512];
    f.seek(SeekFrom::Start(1024)).unwrap();
    f.read_exact(&mut old_entries).unwrap();
    let plan = gpt::plan_grow(&mut f, data, MIB).unwrap().unwrap();
    plan.write_backup(&mut f).unwrap();
    plan.write_primary(&mut f).unwrap();
    f.seek(SeekFrom::Start(1024)).unwrap();
    f.write_all(&old_entries).unwrap();
    drop(f);
    let torn = sgdisk(&["-v"], &disk.path);
    assert!(!torn.contains("No problems found"), "{torn}");
    let mut f = open();
    let repair = gpt::plan_grow(&mut f, data, MIB).unwrap().unwrap();
    assert!(repair.restores_primary());
    repair.write_backup(&mut f).unwrap();
    repair.write_primary(&mut f).unwrap();
    assert!(gpt::plan_grow(&mut f, data, MIB).unwrap().is_none());
    drop(f);
    let verify = sgdisk(&["-v"], &disk.path);
    assert!(verify.contains("No problems found"), "{verify}");
    let (first, last) = data_extent(&disk.path);
    assert_eq!(last + 1 - first, (38 + 192 + 64) * 2048);
}
