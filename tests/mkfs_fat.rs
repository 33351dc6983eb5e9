//! `slate mkfs fat` checked with independent tools: fsck.fat, mtools
//! (minfo, mcopy) and, as root, the kernel's vfat driver.

mod common;

use common::*;
use proptest::prelude::*;
use slate::filesystems::fat::{self, FatKind, FatOptions};
use slate::tree::{FileData, Metadata, Node, NodeKind, Timestamp, Tree};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An ESP-like source tree; returns the paths of regular files with their mtimes.
fn make_source(root: &Path) -> Vec<(PathBuf, i64)> {
    let mut files = Vec::new();
    let mut put = |rel: &str, data: &[u8], mtime: i64| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        set_mtime(&p, mtime);
        files.push((PathBuf::from(rel), mtime));
    };
    put("EFI/BOOT/BOOTX64.EFI", &noise(300_001, 1), 1_700_000_001);
    put(
        "EFI/Linux/vmlinuz-6.1",
        &noise(2 * MIB as usize + 3, 2),
        1_700_000_002,
    );
    put(
        "loader/loader.conf",
        b"timeout 0\ndefault slate-a*\n",
        1_600_000_000,
    );
    put(
        "loader/entries/slate-a+3-0.conf",
        b"title slate A\nlinux /EFI/Linux/vmlinuz-6.1\n",
        1_650_000_000,
    );
    put(
        "Ünïcödé name, with spaces [1].txt",
        "grüße\n".as_bytes(),
        1_000_000_000,
    );
    put("empty", b"", 1_234_567_890);
    // Before 1980: FAT clamps to 1980-01-01.
    put("old.txt", b"old", 100);
    for i in 0..120 {
        put(
            &format!("many/entry-with-a-long-name-{i:04}.cfg"),
            &noise(i * 37, i as u64),
            1_500_000_000 + i as i64,
        );
    }
    let mut deep = String::new();
    for i in 0..12 {
        deep.push_str(&format!("level{i}/"));
    }
    put(&format!("{deep}bottom"), b"deep", 1_400_000_000);
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    // A sparse file: data at both ends of a 3 MiB hole.
    let sp = root.join("sparse.bin");
    let mut f = fs::File::create(&sp).unwrap();
    f.write_all(b"start").unwrap();
    f.seek(SeekFrom::Start(3 * MIB)).unwrap();
    f.write_all(b"end").unwrap();
    drop(f);
    set_mtime(&sp, 1_300_000_000);
    files.push((PathBuf::from("sparse.bin"), 1_300_000_000));
    files
}

/// The mtime FAT stores for `secs` (UTC): 2-second resolution, 1980..2107.
fn fat_mtime(secs: i64) -> i64 {
    let s = secs.clamp(315_532_800, 4_354_819_198);
    s - s % 2
}

fn mtools(tool: &str) -> std::process::Command {
    let mut c = cmd(tool);
    c.env("LC_ALL", "C.UTF-8");
    c
}

/// Copies everything out of `img` (at byte `offset`) with mcopy into `dest`.
fn mcopy_all(img: &Path, offset: u64, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    let spec = format!("{}@@{offset}", img.display());
    run_ok(
        mtools("mcopy")
            .args(["-s", "-m", "-n", "-i", &spec, "::/*"])
            .arg(dest),
    );
}

/// Asserts `got` holds the regular files of `src` with equal contents, the
/// same set of paths, and FAT-rounded mtimes (clamped to `epoch`).
fn assert_same_tree(src: &Path, got: &Path, files: &[(PathBuf, i64)], epoch: Option<i64>) {
    let a = walk(src);
    let b = walk(got);
    assert_eq!(
        a,
        b,
        "paths differ between {} and {}",
        src.display(),
        got.display()
    );
    for rel in &a {
        let (ma, mb) = (
            src.join(rel).symlink_metadata().unwrap(),
            got.join(rel).symlink_metadata().unwrap(),
        );
        assert_eq!(ma.is_dir(), mb.is_dir(), "{}", rel.display());
        if ma.is_file() {
            assert!(
                fs::read(src.join(rel)).unwrap() == fs::read(got.join(rel)).unwrap(),
                "content of {}",
                rel.display()
            );
        }
    }
    for (rel, mtime) in files {
        let want = fat_mtime(epoch.map_or(*mtime, |e| (*mtime).min(e)));
        let have = got.join(rel).metadata().unwrap().mtime();
        assert_eq!(have, want, "mtime of {}", rel.display());
    }
}

#[test]
fn esp_image_is_fsck_clean_and_reads_back_with_mtools() {
    if skip_without(
        "esp_image_is_fsck_clean_and_reads_back_with_mtools",
        &["fsck.fat", "mcopy", "minfo"],
    ) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let files = make_source(&src);
    let img = d.path().join("esp.img");
    let out = run_ok(
        slate()
            .args(["mkfs", "fat"])
            .arg(&src)
            .arg(&img)
            .args(["--size", "64M", "--label", "esp"]),
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("FAT32 64M"), "{summary}");
    assert_eq!(fs::metadata(&img).unwrap().len(), 64 * MIB);

    let fsck = run_ok(cmd("fsck.fat").args(["-n", "-v"]).arg(&img));
    let report = String::from_utf8_lossy(&fsck.stdout);
    assert!(report.contains("32 bit entries"), "{report}");
    assert!(!report.contains("Free cluster summary"), "{report}");

    let info = run_ok(mtools("minfo").arg("-i").arg(&img).arg("::"));
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("disk type=\"FAT32   \""), "{info}");
    assert!(info.contains("label=\"ESP        \""), "{info}");

    let back = d.path().join("back");
    mcopy_all(&img, 0, &back);
    assert_same_tree(&src, &back, &files, None);
}

#[test]
fn default_size_small_trees_and_reproducibility() {
    if skip_without(
        "default_size_small_trees_and_reproducibility",
        &["fsck.fat", "mcopy", "cp"],
    ) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a/src");
    let files = make_source(&a);
    let b = d.path().join("elsewhere/copy");
    fs::create_dir_all(b.parent().unwrap()).unwrap();
    run_ok(cmd("cp").arg("-a").arg(&a).arg(&b));
    let (ia, ib) = (d.path().join("a.img"), d.path().join("b.img"));
    let epoch = 1_650_000_000i64;
    for (src, img) in [(&a, &ia), (&b, &ib)] {
        run_ok(
            slate()
                .env("SOURCE_DATE_EPOCH", epoch.to_string())
                .args(["mkfs", "fat"])
                .arg(src)
                .arg(img),
        );
    }
    assert!(
        fs::read(&ia).unwrap() == fs::read(&ib).unwrap(),
        "images of copies differ"
    );
    let size = fs::metadata(&ia).unwrap().len();
    // ~5.6 MiB of content: FAT16, content plus 1 MiB headroom.
    assert_eq!(size % MIB, 0);
    assert!((7 * MIB..=9 * MIB).contains(&size), "{size}");
    let fsck = run_ok(cmd("fsck.fat").args(["-n", "-v"]).arg(&ia));
    assert!(String::from_utf8_lossy(&fsck.stdout).contains("16 bit entries"));
    let back = d.path().join("back");
    mcopy_all(&ia, 0, &back);
    assert_same_tree(&a, &back, &files, Some(epoch));
}

#[test]
fn bad_input_fails_with_one_line_and_no_output() {
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let img = out_dir.join("esp.img");
    let check = |args: Vec<std::ffi::OsString>, want: &str| {
        let err = run_fail(slate().args(["mkfs", "fat"]).args(&args));
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(lines[0].contains(want), "{err}");
        assert!(
            lines[0].starts_with("slate: error: ") || lines[0].starts_with("error: "),
            "{err}"
        );
        assert!(
            listing(&out_dir).is_empty(),
            "left behind: {:?}",
            listing(&out_dir)
        );
    };
    // Content larger than --size.
    let big = d.path().join("big");
    fs::create_dir(&big).unwrap();
    fs::write(big.join("kernel"), noise(3 * MIB as usize, 9)).unwrap();
    check(
        vec![
            big.clone().into(),
            img.clone().into(),
            "--size".into(),
            "2M".into(),
        ],
        "tree needs at least 4 MiB, --size is 2 MiB",
    );
    let err = run_fail(
        slate()
            .args(["mkfs", "fat"])
            .arg(&big)
            .arg(&img)
            .args(["--size", "2M"]),
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // A name FAT cannot store.
    let bad = d.path().join("bad");
    fs::create_dir_all(bad.join("EFI")).unwrap();
    fs::write(bad.join("EFI/a:b"), b"x").unwrap();
    check(
        vec![bad.into(), img.clone().into()],
        "/EFI/a:b: name contains one of the characters",
    );
    // A symlink.
    let link = d.path().join("link");
    fs::create_dir(&link).unwrap();
    std::os::unix::fs::symlink("target", link.join("l")).unwrap();
    check(
        vec![link.into(), img.clone().into()],
        "/l: FAT cannot store a symlink",
    );
    // A missing source.
    check(
        vec!["/nonexistent/slate-src".into(), img.clone().into()],
        "/nonexistent/slate-src",
    );
    let err = run_fail(
        slate()
            .args(["mkfs", "fat", "/nonexistent/slate-src"])
            .arg(&img),
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // An unparsable size.
    check(
        vec![
            big.clone().into(),
            img.clone().into(),
            "--size".into(),
            "12Q".into(),
        ],
        "12Q",
    );
    // A bad label.
    check(
        vec![
            big.into(),
            img.clone().into(),
            "--label".into(),
            "much too long".into(),
        ],
        "volume label",
    );
}

#[test]
fn kernel_vfat_reads_the_image() {
    if !is_root() {
        common::skipped("kernel_vfat_reads_the_image", "needs root for a loop mount");
        return;
    }
    if skip_without("kernel_vfat_reads_the_image", &["mount", "umount"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let files = make_source(&src);
    let img = d.path().join("esp.img");
    run_ok(
        slate()
            .args(["mkfs", "fat"])
            .arg(&src)
            .arg(&img)
            .args(["--size", "40M"]),
    );
    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = cmd("mount")
        .args(["-t", "vfat", "-o", "ro,loop,tz=UTC,utf8"])
        .arg(&img)
        .arg(&mnt)
        .output()
        .unwrap();
    if !m.status.success() {
        let why = format!(
            "mount failed: {}",
            String::from_utf8_lossy(&m.stderr).trim()
        );
        // A kernel without vfat (a container's) cannot run this at all; the
        // image is still checked by fsck.fat and mtools in the other tests.
        if why.contains("unknown filesystem type") {
            common::unsupported_here("kernel_vfat_reads_the_image", &why);
        } else {
            common::skipped("kernel_vfat_reads_the_image", &why);
        }
        return;
    }
    let result = std::panic::catch_unwind(|| assert_same_tree(&src, &mnt, &files, None));
    run_ok(cmd("umount").arg(&mnt));
    result.unwrap();
}

// Random trees through the library, read back by fatfs and by mtools.

#[derive(Debug, Clone)]
enum Gen {
    File(Vec<u8>, i64),
    Dir(Vec<(String, Gen)>, i64),
}

fn name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{1,12}",
        "[a-z0-9 +,;=\\[\\]~!@#$%&'(){}^-]{1,40}[a-z0-9]",
        "[a-zéüßøæ中文]{1,10}(\\.[a-z]{1,4})?",
        "[A-Z]{1,8}\\.[A-Z]{1,3}",
        "\\.[a-z]{1,8}(\\.[a-z]{1,3})?",
        "[a-z]{1,3}\\.\\.[a-z]{1,3}",
    ]
}

fn gen_strategy() -> impl Strategy<Value = Gen> {
    let leaf = (
        proptest::collection::vec(any::<u8>(), 0..3000),
        315_532_800i64..4_000_000_000,
    )
        .prop_map(|(d, t)| Gen::File(d, t));
    leaf.prop_recursive(4, 40, 8, |inner| {
        (
            proptest::collection::vec((name_strategy(), inner), 0..8),
            315_532_800i64..4_000_000_000,
        )
            .prop_map(|(kids, t)| Gen::Dir(kids, t))
    })
}

/// Builds the tree, skipping names that collide case-insensitively.
fn build(tree: &mut Tree, parent: slate::tree::NodeId, kids: &[(String, Gen)]) {
    let mut seen = std::collections::BTreeSet::new();
    for (name, g) in kids {
        if !seen.insert(name.to_uppercase()) {
            continue;
        }
        let (kind, t) = match g {
            Gen::File(d, t) => (NodeKind::File(FileData::from_bytes(d.clone())), *t),
            Gen::Dir(_, t) => (NodeKind::empty_dir(), *t),
        };
        let meta = Metadata {
            mtime: Timestamp::from_secs(t),
            ..Metadata::root(0o755)
        };
        let id = tree
            .add(parent, name.as_bytes(), Node { kind, meta })
            .unwrap();
        if let Gen::Dir(k, _) = g {
            build(tree, id, k);
        }
    }
}

/// Writes every file of `tree` under `dir`, for comparison.
fn materialise(tree: &Tree, dir: &Path) -> Vec<(PathBuf, i64)> {
    let mut files = Vec::new();
    let mut path: Vec<String> = Vec::new();
    for e in tree.walk().into_iter().skip(1) {
        path.truncate(e.depth - 1);
        path.push(String::from_utf8(e.name.to_vec()).unwrap());
        let rel: PathBuf = path.iter().collect();
        let node = tree.node(e.id);
        match &node.kind {
            NodeKind::File(f) => {
                let slate::tree::DataSource::Bytes(b) = &f.source else {
                    unreachable!()
                };
                fs::write(dir.join(&rel), b).unwrap();
                files.push((rel, node.meta.mtime.secs));
            }
            _ => fs::create_dir_all(dir.join(&rel)).unwrap(),
        }
    }
    files
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_read_back_with_fatfs_and_mtools(kids in proptest::collection::vec((name_strategy(), gen_strategy()), 0..10), big in any::<bool>()) {
        let mut tree = Tree::new(Metadata::root(0o755));
        build(&mut tree, slate::tree::NodeId::ROOT, &kids);
        let opts = FatOptions::default();
        let need = fat::required_size(&tree, &opts).unwrap();
        // Either the minimal size or a FAT32 one.
        let size = if big { need.get().max(40 * MIB) } else { need.get() };
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        let f = fs::File::options().read(true).write(true).create_new(true).open(&img).unwrap();
        f.set_len(size).unwrap();
        let s = fat::write_fat(&tree, &opts, &f).unwrap();
        if big { prop_assert_eq!(s.kind, FatKind::Fat32); }

        // fatfs reads every file back.
        let mut f = f;
        f.seek(SeekFrom::Start(0)).unwrap();
        let fs_ = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
        let expect = d.path().join("expect");
        fs::create_dir(&expect).unwrap();
        let files = materialise(&tree, &expect);
        for (rel, _) in &files {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut fs_.root_dir().open_file(rel.to_str().unwrap()).unwrap(), &mut got).unwrap();
            prop_assert!(got == fs::read(expect.join(rel)).unwrap(), "{}", rel.display());
        }
        drop(fs_);

        if have("mcopy") && have("fsck.fat") {
            run_ok(cmd("fsck.fat").arg("-n").arg(&img));
            if !files.is_empty() || tree.children(slate::tree::NodeId::ROOT).count() > 0 {
                let back = d.path().join("back");
                mcopy_all(&img, 0, &back);
                assert_same_tree(&expect, &back, &files, None);
            }
        }
    }
}
