use super::*;
use crate::tree::{DeviceNumber, FileData, Metadata, Node};
use std::fs::File;

fn meta(mtime: i64) -> Metadata {
    Metadata {
        mtime: Timestamp::from_secs(mtime),
        ..Metadata::root(0o755)
    }
}

fn file_node(bytes: &[u8], mtime: i64) -> Node {
    Node {
        kind: NodeKind::File(FileData::from_bytes(bytes.to_vec())),
        meta: meta(mtime),
    }
}

/// A sparse, zero-filled image file of `size` bytes.
fn image(dir: &tempfile::TempDir, name: &str, size: u64) -> File {
    let f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.path().join(name))
        .unwrap();
    f.set_len(size).unwrap();
    f
}

fn sample_tree() -> Tree {
    let mut t = Tree::new(meta(1_000_000_000));
    let d = meta(1_100_000_000);
    t.put(
        b"/EFI/BOOT/BOOTX64.EFI",
        file_node(&[0xAB; 70_000], 1_200_000_001),
        &d,
    )
    .unwrap();
    t.put(
        b"/loader/loader.conf",
        file_node(b"timeout 0\n", 1_300_000_000),
        &d,
    )
    .unwrap();
    t.put(
        b"/loader/entries/slate-a+3-0.conf",
        file_node(b"title a\n", 1_400_000_000),
        &d,
    )
    .unwrap();
    t.put(
        "/Ünïcödé name with spaces.txt".as_bytes(),
        file_node(b"u", 1_500_000_000),
        &d,
    )
    .unwrap();
    t.put(b"/empty", file_node(b"", 1_600_000_000), &d).unwrap();
    t.mkdir_p(b"/empty-dir", &meta(1_700_000_000)).unwrap();
    // A directory with more entries than one 512-byte cluster holds.
    for i in 0..40 {
        t.put(
            format!("/many/a-rather-long-file-name-{i:03}.txt").as_bytes(),
            file_node(&[i as u8; 600], 1_234_567_890),
            &d,
        )
        .unwrap();
    }
    t
}

fn dos(secs: i64) -> DosTime {
    DosTime::from_timestamp(Timestamp::from_secs(secs))
}

fn dos_of(dt: fatfs::DateTime) -> (u16, u16) {
    let date = ((dt.date.year - 1980) << 9) | (dt.date.month << 5) | dt.date.day;
    let time = (dt.time.hour << 11) | (dt.time.min << 5) | (dt.time.sec / 2);
    (date, time)
}

#[test]
fn geometry_matches_what_fatfs_formats() {
    let d = tempfile::tempdir().unwrap();
    let tree = Tree::new(meta(0));
    for (i, mib) in [1u64, 2, 3, 16, 32, 33, 64, 100, 261]
        .into_iter()
        .enumerate()
    {
        for extra in [0u64, 512 * 37] {
            let size = mib * MIB + extra;
            let mut f = image(&d, &format!("g{i}-{extra}"), size);
            let s = write_fat(&tree, &FatOptions::default(), &mut f).unwrap();
            let g = Geometry::for_size(size).unwrap();
            f.seek(SeekFrom::Start(0)).unwrap();
            let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
            let kind = match fs.fat_type() {
                fatfs::FatType::Fat12 => FatKind::Fat12,
                fatfs::FatType::Fat16 => FatKind::Fat16,
                fatfs::FatType::Fat32 => FatKind::Fat32,
            };
            assert_eq!(
                (kind, u64::from(fs.cluster_size())),
                (g.kind, g.cluster_bytes()),
                "{size}"
            );
            assert_eq!(s.kind, g.kind);
            let stats = fs.stats().unwrap();
            assert_eq!(u64::from(stats.total_clusters()), g.clusters, "{size}");
            // The FSInfo count (FAT32) or a FAT scan (FAT12/16) agrees with ours.
            assert_eq!(
                u64::from(stats.free_clusters()) * g.cluster_bytes(),
                s.free_bytes,
                "{size}"
            );
        }
    }
}

#[test]
fn round_trip_through_fatfs_with_stamped_times() {
    let d = tempfile::tempdir().unwrap();
    let tree = sample_tree();
    let mut f = image(&d, "img", 40 * MIB);
    let opts = FatOptions {
        label: "esp".into(),
        ..FatOptions::default()
    };
    let s = write_fat(&tree, &opts, &mut f).unwrap();
    assert_eq!(s.kind, FatKind::Fat32);
    assert_eq!(s.label, "ESP");
    assert_eq!(s.files, 45);
    assert_eq!(s.directories, 6);

    f.seek(SeekFrom::Start(0)).unwrap();
    let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
    assert_eq!(fs.volume_id(), s.volume_id);
    assert_eq!(fs.volume_label(), "ESP");
    assert!(!fs.read_status_flags().unwrap().dirty());
    // Every node reads back with its content and its mtime.
    let mut checked = 0;
    let mut stack = vec![(fs.root_dir(), NodeId::ROOT)];
    while let Some((dir, id)) = stack.pop() {
        let on_disk: Vec<_> = dir
            .iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() != "." && e.file_name() != "..")
            .collect();
        assert_eq!(on_disk.len(), tree.children(id).count());
        for e in on_disk {
            let child = tree.child(id, e.file_name().as_bytes()).unwrap();
            let want = dos(tree.node(child).meta.mtime.secs);
            assert_eq!(
                dos_of(e.modified()),
                (want.date, want.time),
                "{}",
                e.file_name()
            );
            assert_eq!(dos_of(e.created()).0, want.date);
            match &tree.node(child).kind {
                NodeKind::File(data) => {
                    let mut got = Vec::new();
                    e.to_file().read_to_end(&mut got).unwrap();
                    match &data.source {
                        crate::tree::DataSource::Bytes(b) => assert_eq!(&got[..], &b[..]),
                        _ => unreachable!(),
                    }
                }
                _ => stack.push((e.to_dir(), child)),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, tree.walk().len() - 1);
}

#[test]
fn dot_entries_come_first() {
    let d = tempfile::tempdir().unwrap();
    let tree = sample_tree();
    for size in [2 * MIB, 8 * MIB, 40 * MIB] {
        let mut f = image(&d, &format!("img{size}"), size);
        write_fat(&tree, &FatOptions::default(), &mut f).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
        let dir = fs.root_dir().open_dir("EFI/BOOT").unwrap();
        let names: Vec<String> = dir.iter().map(|e| e.unwrap().short_file_name()).collect();
        assert_eq!(names, [".", "..", "BOOTX64.EFI"], "{size}");
    }
}

#[test]
fn reproducible_and_clamped() {
    let d = tempfile::tempdir().unwrap();
    let tree = sample_tree();
    let opts = FatOptions {
        timestamp: Some(1_250_000_000),
        ..FatOptions::default()
    };
    let mut a = image(&d, "a", 4 * MIB);
    let mut b = image(&d, "b", 4 * MIB);
    let sa = write_fat(&tree, &opts, &mut a).unwrap();
    let sb = write_fat(&tree, &opts, &mut b).unwrap();
    assert_eq!(sa, sb);
    drop((a, b));
    let (ba, bb) = (
        std::fs::read(d.path().join("a")).unwrap(),
        std::fs::read(d.path().join("b")).unwrap(),
    );
    assert!(ba == bb, "two runs differ");

    // Content feeds the volume id; a given id wins.
    let mut other = sample_tree();
    other
        .put(
            b"/loader/loader.conf",
            file_node(b"timeout 1\n", 1_300_000_000),
            &meta(0),
        )
        .unwrap();
    let mut c = image(&d, "c", 4 * MIB);
    assert_ne!(
        write_fat(&other, &opts, &mut c).unwrap().volume_id,
        sa.volume_id
    );
    let mut e = image(&d, "e", 4 * MIB);
    let given = FatOptions {
        volume_id: Some(0xDEAD_BEEF),
        ..opts.clone()
    };
    assert_eq!(
        write_fat(&tree, &given, &mut e).unwrap().volume_id,
        0xDEAD_BEEF
    );

    // mtimes after the epoch are clamped to it.
    let mut f = image(&d, "f", 4 * MIB);
    write_fat(&tree, &opts, &mut f).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
    let conf = fs.root_dir().open_dir("loader").unwrap();
    let entry = conf
        .iter()
        .map(|e| e.unwrap())
        .find(|e| e.file_name() == "loader.conf")
        .unwrap();
    let want = dos(1_250_000_000);
    assert_eq!(dos_of(entry.modified()), (want.date, want.time));
}

#[test]
fn refuses_what_fat_cannot_store() {
    let d = meta(0);
    let cases: Vec<(Node, &[u8], &str)> = vec![
        (
            Node {
                kind: NodeKind::Symlink(b"x".to_vec()),
                meta: d.clone(),
            },
            b"/boot/link",
            "/boot/link: FAT cannot store a symlink",
        ),
        (
            Node {
                kind: NodeKind::CharDevice(DeviceNumber { major: 1, minor: 3 }),
                meta: d.clone(),
            },
            b"/null",
            "/null: FAT cannot store a character device",
        ),
        (
            file_node(b"", 0),
            b"/a:b",
            "/a:b: name contains one of the characters",
        ),
        (
            file_node(b"", 0),
            b"/dots...",
            "/dots...: name ends with a dot",
        ),
        (
            Node {
                kind: NodeKind::File(FileData::host("/nonexistent", 5 << 30)),
                meta: d.clone(),
            },
            b"/huge",
            "/huge: file is 5368709120 bytes; FAT stores at most 4294967295",
        ),
    ];
    for (node, path, want) in cases {
        let mut t = Tree::new(meta(0));
        t.put(path, node, &d).unwrap();
        let e = required_size(&t, &FatOptions::default()).unwrap_err();
        assert!(e.to_string().starts_with(want), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = write_fat(&t, &FatOptions::default(), image(&dir, "i", 4 * MIB)).unwrap_err();
        assert!(e.to_string().starts_with(want), "{e}");
    }
    let mut t = Tree::new(meta(0));
    t.put(b"/EFI/Boot", file_node(b"", 0), &d).unwrap();
    t.put(b"/EFI/BOOT", file_node(b"", 0), &d).unwrap();
    let e = required_size(&t, &FatOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/EFI/Boot: FAT ignores case"), "{e}");
}

#[test]
fn sizes_and_labels() {
    let d = tempfile::tempdir().unwrap();
    let mut t = Tree::new(meta(0));
    t.put(b"/big", file_node(&vec![1u8; 3 << 20], 0), &meta(0))
        .unwrap();
    let opts = FatOptions::default();
    let need = required_size(&t, &opts).unwrap();
    assert_eq!(need, Bytes(4 * MIB));
    let dflt = default_size(&t, &opts).unwrap();
    assert!(dflt >= Bytes(need.get() + MIB), "{dflt}");
    assert!(write_fat(&t, &opts, image(&d, "ok", need.get())).is_ok());
    match write_fat(&t, &opts, image(&d, "small", need.get() - MIB)) {
        Err(FatError::TooSmall { needed, size }) => {
            assert_eq!((needed, size), (need, Bytes(3 * MIB)));
        }
        other => panic!("{other:?}"),
    }
    let mismatch = FatOptions {
        size: Some(Bytes(8 * MIB)),
        ..FatOptions::default()
    };
    assert!(matches!(
        write_fat(&t, &mismatch, image(&d, "mm", 4 * MIB)),
        Err(FatError::InvalidOption(_))
    ));
    for bad in ["TWELVE CHARS", "a/b", "x*", "é"] {
        let o = FatOptions {
            label: bad.into(),
            ..FatOptions::default()
        };
        assert!(
            matches!(required_size(&t, &o), Err(FatError::InvalidOption(_))),
            "{bad}"
        );
    }
    assert_eq!(&label_bytes("efi").unwrap(), b"EFI        ");
    assert_eq!(&label_bytes("").unwrap(), b"NO NAME    ");
}

#[test]
fn root_of_small_volumes_is_limited() {
    // FAT12/16 roots hold 512 slots; more entries need FAT32.
    let mut t = Tree::new(meta(0));
    for i in 0..300 {
        t.put(format!("/file-{i}").as_bytes(), file_node(b"", 0), &meta(0))
            .unwrap();
    }
    let need = required_size(&t, &FatOptions::default()).unwrap();
    assert_eq!(Geometry::for_size(need.get()).unwrap().kind, FatKind::Fat32);
}
