//! `slate mkfs cpio` checked with GNU cpio, gzip and zstd.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A source tree with every kind of node cpio stores (devices only as root).
fn make_source(root: &Path) {
    let p = |rel: &str| root.join(rel);
    fs::create_dir_all(p("bin")).unwrap();
    fs::create_dir_all(p("etc/init.d")).unwrap();
    fs::create_dir_all(p("lib/modules/6.1")).unwrap();
    fs::create_dir_all(p("tmp")).unwrap();
    fs::create_dir_all(p("dev")).unwrap();
    fs::write(
        p("bin/busybox"),
        (0..1_048_577u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    fs::write(
        p("etc/init.d/rcS"),
        b"#!/bin/sh\nmount -t proc proc /proc\n",
    )
    .unwrap();
    fs::write(p("etc/empty"), b"").unwrap();
    fs::write(p("lib/modules/6.1/virtio_blk.ko"), vec![0x7f; 4097]).unwrap();
    fs::write(p("Ünïcödé файл"), "ok\n".as_bytes()).unwrap();
    // Hard links across directories (busybox applets).
    fs::hard_link(p("bin/busybox"), p("bin/sh")).unwrap();
    fs::hard_link(p("bin/busybox"), p("etc/init.d/busybox-link")).unwrap();
    // Symlinks: relative, absolute, long.
    std::os::unix::fs::symlink("busybox", p("bin/ls")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", p("init")).unwrap();
    std::os::unix::fs::symlink("x".repeat(300), p("long-link")).unwrap();
    // Special permission bits.
    fs::write(p("bin/su"), b"su").unwrap();
    fs::set_permissions(p("bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(p("bin/wall"), b"wall").unwrap();
    fs::set_permissions(p("bin/wall"), fs::Permissions::from_mode(0o2755)).unwrap();
    fs::set_permissions(p("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(p("etc/init.d/rcS"), fs::Permissions::from_mode(0o700)).unwrap();
    // A fifo, and device nodes when we may create them.
    use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
    mknodat(
        CWD,
        p("dev/initctl"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    if is_root() {
        mknodat(
            CWD,
            p("dev/null"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            makedev(1, 3),
        )
        .unwrap();
        mknodat(
            CWD,
            p("dev/vda"),
            FileType::BlockDevice,
            Mode::from_raw_mode(0o660),
            makedev(254, 0),
        )
        .unwrap();
        rustix::fs::chown(
            p("etc/empty"),
            Some(rustix::fs::Uid::from_raw(1234)),
            Some(rustix::fs::Gid::from_raw(5678)),
        )
        .unwrap();
    }
    // A sparse file.
    let mut f = fs::File::create(p("lib/sparse")).unwrap();
    f.write_all(b"head").unwrap();
    f.seek(SeekFrom::Start(2 << 20)).unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    // Fixed mtimes, children first so directory times stick.
    let mut all = walk(root);
    all.reverse();
    for (i, rel) in all.iter().enumerate() {
        set_mtime(&root.join(rel), 1_600_000_000 + i as i64 * 1000);
    }
    set_mtime(root, 1_500_000_000);
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: Option<i64>,
    rdev: u64,
    link: Option<PathBuf>,
}

/// What cpio must preserve of every path under `root`, plus hard-link groups.
fn describe(
    root: &Path,
    owners: bool,
    epoch: Option<i64>,
) -> (BTreeMap<PathBuf, Entry>, Vec<Vec<PathBuf>>) {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    for rel in walk(root) {
        let p = root.join(&rel);
        let md = p.symlink_metadata().unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "char"
        } else {
            "block"
        };
        if ft.is_file() {
            inodes.entry(md.ino()).or_default().push(rel.clone());
        }
        out.insert(
            rel,
            Entry {
                kind,
                mode: md.mode() & 0o7777,
                uid: if owners { md.uid() } else { 0 },
                gid: if owners { md.gid() } else { 0 },
                size: if ft.is_dir() { 0 } else { md.len() },
                // GNU cpio -m restores the mtimes of regular files only
                // (directories get theirs checked by `dir_dates_match`).
                mtime: ft
                    .is_file()
                    .then(|| epoch.map_or(md.mtime(), |e| md.mtime().min(e))),
                rdev: md.rdev(),
                link: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
            },
        );
    }
    let groups = inodes.into_values().filter(|g| g.len() > 1).collect();
    (out, groups)
}

/// Extracts a plain archive with GNU cpio into `dest`.
fn extract(archive: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    let mut c = cmd("cpio");
    c.current_dir(dest)
        .args(["-i", "-d", "-m", "--quiet", "--no-absolute-filenames"]);
    if !is_root() {
        c.arg("--no-preserve-owner");
    }
    c.stdin(fs::File::open(archive).unwrap());
    run_ok(&mut c);
}

fn assert_same(src: &Path, got: &Path, owners: bool, epoch: Option<i64>) {
    let (a, ga) = describe(src, owners && is_root(), epoch);
    let (b, gb) = describe(got, owners && is_root(), None);
    for (rel, ea) in &a {
        let eb = b
            .get(rel)
            .unwrap_or_else(|| panic!("{} missing from the extraction", rel.display()));
        assert_eq!(ea, eb, "{}", rel.display());
        if ea.kind == "file" {
            assert!(
                fs::read(src.join(rel)).unwrap() == fs::read(got.join(rel)).unwrap(),
                "content of {}",
                rel.display()
            );
        }
    }
    assert_eq!(a.len(), b.len(), "extra paths in the extraction");
    assert_eq!(ga, gb, "hard-link groups differ");
    assert!(!ga.is_empty());
}

/// Compares directory dates in `cpio -tv` (day resolution, UTC) with the source's.
fn dir_dates_match(archive: &Path, src: &Path, epoch: Option<i64>) {
    let list = run_ok(
        cmd("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(fs::File::open(archive).unwrap()),
    );
    let mut checked = 0;
    for line in String::from_utf8(list.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if !f[0].starts_with('d') {
            continue;
        }
        let name = f[8..].join(" ");
        let secs = src.join(&name).metadata().unwrap().mtime();
        let secs = epoch.map_or(secs, |e| secs.min(e));
        let want = run_ok(cmd("date").args(["-u", "-d", &format!("@{secs}"), "+%b %-d %Y"]));
        assert_eq!(
            f[5..8].join(" "),
            String::from_utf8(want.stdout).unwrap().trim(),
            "{line}"
        );
        checked += 1;
    }
    assert!(checked > 5);
}

fn mkcpio(src: &Path, out: &Path, extra: &[&str], epoch: Option<i64>) {
    let mut c = slate();
    c.args(["mkfs", "cpio"]).arg(src).arg(out).args(extra);
    if let Some(e) = epoch {
        c.env("SOURCE_DATE_EPOCH", e.to_string());
    }
    run_ok(&mut c);
}

#[test]
fn gnu_cpio_extracts_what_was_archived() {
    if skip_without("gnu_cpio_extracts_what_was_archived", &["cpio"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir(&src).unwrap();
    make_source(&src);
    let plain = d.path().join("initrd.cpio");
    mkcpio(&src, &plain, &[], None);
    let x = d.path().join("x");
    extract(&plain, &x);
    assert_same(&src, &x, true, None);
    dir_dates_match(&plain, &src, None);

    // Order: "." first, then every parent before its children.
    let list = run_ok(
        cmd("cpio")
            .args(["-t", "--quiet"])
            .stdin(fs::File::open(&plain).unwrap()),
    );
    let names: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(names[0], ".");
    for (i, n) in names.iter().enumerate() {
        if let Some((parent, _)) = n.rsplit_once('/') {
            assert!(
                names[..i].iter().any(|m| m == parent),
                "{n} before {parent}"
            );
        }
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names.len(), sorted.len());
}

#[test]
fn compressed_archives_test_clean_and_match_the_plain_one() {
    if skip_without(
        "compressed_archives_test_clean_and_match_the_plain_one",
        &["gzip", "zstd"],
    ) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir(&src).unwrap();
    make_source(&src);
    let plain = d.path().join("a.cpio");
    mkcpio(&src, &plain, &[], None);
    let plain_bytes = fs::read(&plain).unwrap();
    for (method, tool) in [("gzip", "gzip"), ("zstd", "zstd")] {
        let out = d.path().join(format!("a.cpio.{method}"));
        mkcpio(&src, &out, &["--compress", method], None);
        run_ok(cmd(tool).arg("-t").arg(&out));
        let dec = run_ok(cmd(tool).args(["-d", "-c"]).arg(&out));
        assert!(
            dec.stdout == plain_bytes,
            "{method} output does not decompress to the plain archive"
        );
    }
}

#[test]
fn all_root_epoch_and_reproducibility() {
    if skip_without("all_root_epoch_and_reproducibility", &["cpio", "cp"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("one/src");
    fs::create_dir_all(&a).unwrap();
    make_source(&a);
    let b = d.path().join("two/deeper/copy");
    fs::create_dir_all(b.parent().unwrap()).unwrap();
    run_ok(cmd("cp").arg("-a").arg(&a).arg(&b));
    let epoch = 1_600_010_000;
    for method in ["none", "gzip", "zstd"] {
        let (oa, ob) = (
            d.path().join(format!("a.{method}")),
            d.path().join(format!("b.{method}")),
        );
        mkcpio(&a, &oa, &["--compress", method, "--all-root"], Some(epoch));
        mkcpio(&b, &ob, &["--compress", method, "--all-root"], Some(epoch));
        assert!(
            fs::read(&oa).unwrap() == fs::read(&ob).unwrap(),
            "{method}: copies give different archives"
        );
    }
    // Owners are 0:0 and mtimes clamped.
    let list = run_ok(
        cmd("cpio")
            .args(["-t", "-v", "--numeric-uid-gid", "--quiet"])
            .stdin(fs::File::open(d.path().join("a.none")).unwrap()),
    );
    for line in String::from_utf8(list.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((f[2], f[3]), ("0", "0"), "{line}");
    }
    let x = d.path().join("x");
    extract(&d.path().join("a.none"), &x);
    assert_same(&a, &x, false, Some(epoch));
    dir_dates_match(&d.path().join("a.none"), &a, Some(epoch));
}

#[test]
fn bad_input_fails_with_one_line_and_no_output() {
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("initrd");
    let err = run_fail(
        slate()
            .args(["mkfs", "cpio", "/nonexistent/slate-src"])
            .arg(&out),
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/slate-src"), "{err}");
    assert!(listing(&out_dir).is_empty());
    // newc sizes are 32-bit: a 5 GiB (sparse) file cannot be stored.
    let src = d.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("small"), b"x").unwrap();
    let f = fs::File::create(src.join("huge")).unwrap();
    f.set_len(5 << 30).unwrap();
    let err = run_fail(
        slate()
            .args(["mkfs", "cpio"])
            .arg(&src)
            .arg(&out)
            .args(["--compress", "zstd"]),
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/huge: file is 5368709120 bytes; newc stores at most 4294967295"),
        "{err}"
    );
    assert!(listing(&out_dir).is_empty(), "{:?}", listing(&out_dir));
}
