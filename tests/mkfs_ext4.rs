//! End-to-end tests of `slate mkfs ext4`, judged by independent tools:
//! `e2fsck -fn`, the Linux kernel (loop mounts, as root; skipped otherwise)
//! with `tests/compare-trees.py`, and the `ext4-view` reader.

#[path = "ext4_support/mod.rs"]
mod common;

use common::*;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// 2033-05-18: clamps the torture tree's post-2038 mtimes, keeps the rest.
const EPOCH: i64 = 2_000_000_000;

/// Generates the torture tree into `dir/src`; None (with a message) without python3.
fn generate_torture_tree(dir: &Path) -> Option<PathBuf> {
    if !have("python3") {
        skip("torture tree", "python3 not installed");
        return None;
    }
    let src = dir.join("src");
    run_ok(
        Command::new("python3")
            .arg(tests_dir().join("gen-torture-tree.py"))
            .arg(&src),
    );
    Some(src)
}

/// `slate mkfs ext4 SRC OUT ARGS...` with SOURCE_DATE_EPOCH set or removed.
fn mkfs(src: &Path, out: &Path, args: &[&str], epoch: Option<i64>) -> std::process::Output {
    let mut cmd = slate();
    cmd.args(["mkfs", "ext4"]).arg(src).arg(out).args(args);
    match epoch {
        Some(e) => cmd.env("SOURCE_DATE_EPOCH", e.to_string()),
        None => cmd.env_remove("SOURCE_DATE_EPOCH"),
    };
    run(&mut cmd)
}

fn mkfs_ok(src: &Path, out: &Path, args: &[&str], epoch: Option<i64>) {
    let o = mkfs(src, out, args, epoch);
    assert!(
        o.status.success(),
        "mkfs failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// What the image should show for the source's metadata.
#[derive(Clone, Copy)]
struct Expect {
    all_root: bool,
    clamp: Option<i64>,
}

impl Expect {
    fn mtime(&self, md: &fs::Metadata) -> (i64, u32) {
        let t = (md.mtime(), md.mtime_nsec() as u32);
        match self.clamp {
            Some(c) if t > (c, 0) => (c, 0),
            _ => t,
        }
    }
}

/// Mounts the image read-only and compares every path with the source.
fn compare_mounted(src: &Path, img: &Path, ex: Expect) {
    if let Some(why) = cannot_mount() {
        skip("kernel comparison", why);
        return;
    }
    let m = Mount::new(img, "ro");
    let mut cmd = Command::new("python3");
    cmd.arg(tests_dir().join("compare-trees.py"))
        .arg(src)
        .arg(m.path());
    if ex.all_root {
        cmd.arg("--all-root");
    }
    if let Some(c) = ex.clamp {
        cmd.args(["--clamp", &c.to_string()]);
    }
    run_ok(&mut cmd);
    m.unmount();
}

/// The data segments of a host file (SEEK_DATA/SEEK_HOLE).
fn data_segments(f: &fs::File, size: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{SeekFrom, seek};
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let Ok(start) = seek(f, SeekFrom::Data(pos)) else {
            break;
        };
        let end = seek(f, SeekFrom::Hole(start)).unwrap().min(size);
        out.push((start, end));
        pos = end;
    }
    out
}

/// Reads `len` bytes at `pos` of an image file through ext4-view.
fn view_read(file: &mut ext4_view::File, pos: u64, len: usize) -> Vec<u8> {
    file.seek_to(pos).unwrap();
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = file.read_bytes(&mut buf[got..]).unwrap();
        assert!(n > 0, "short read at {}", pos + got as u64);
        got += n;
    }
    buf
}

/// ext4-view 1.0 reads the 32-bit seconds field with `i32::try_from(u32)`,
/// so it reports any time whose low 32 bits have the top bit set (before
/// 1970, or 2038 to 2106) as corrupt. The kernel reads them fine.
fn ext4_view_time_limit(e: &ext4_view::Ext4Error, secs: i64) -> bool {
    (secs as i32) < 0 && format!("{e:?}").contains("InodeTimestamp")
}

/// Walks the source and checks every entry through ext4-view: names, type,
/// permissions, owner, mtime, size, symlink target and contents.
fn compare_with_ext4_view(src: &Path, img: &Path, ex: Expect) -> usize {
    let fs4 = ext4_view(img);
    let mut checked = 0;
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let host_dir = src.join(&rel);
        let img_dir: Vec<u8> = [b"/", rel.as_os_str().as_bytes()].concat();
        let mut host_names: Vec<OsString> = fs::read_dir(&host_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        host_names.sort();
        let mut img_names: Vec<Vec<u8>> = fs4
            .read_dir(img_dir.as_slice())
            .unwrap()
            .map(|e| e.unwrap().file_name().as_ref().to_vec())
            .filter(|n| n != b"." && n != b"..")
            .filter(|n| !(rel.as_os_str().is_empty() && n == b"lost+found"))
            .collect();
        img_names.sort();
        let want: Vec<Vec<u8>> = host_names
            .iter()
            .map(|n| n.as_bytes().to_vec())
            .filter(|n| !(rel.as_os_str().is_empty() && n == b"lost+found"))
            .collect();
        assert_eq!(img_names, want, "entries of {}", host_dir.display());
        for name in &host_names {
            let hp = host_dir.join(name);
            let rel_child = rel.join(name);
            let ip: Vec<u8> = [b"/", rel_child.as_os_str().as_bytes()].concat();
            let hm = fs::symlink_metadata(&hp).unwrap();
            let what = hp.display().to_string();
            let im = match fs4.symlink_metadata(ip.as_slice()) {
                Ok(m) => m,
                Err(e) if ext4_view_time_limit(&e, ex.mtime(&hm).0) => {
                    // Checked by the kernel comparison instead.
                    eprintln!("ext4-view cannot read the mtime of {what}; skipped");
                    checked += 1;
                    continue;
                }
                Err(e) => panic!("{what}: {e:?}"),
            };
            let ft = hm.file_type();
            use std::os::unix::fs::FileTypeExt;
            let it = im.file_type();
            let same_type = (ft.is_dir() && it.is_dir())
                || (ft.is_file() && it.is_regular_file())
                || (ft.is_symlink() && it.is_symlink())
                || (ft.is_char_device() && it.is_char_dev())
                || (ft.is_block_device() && it.is_block_dev())
                || (ft.is_fifo() && it.is_fifo())
                || (ft.is_socket() && it.is_socket());
            assert!(same_type, "{what}: type {it:?}");
            assert_eq!(u32::from(im.mode()), hm.mode() & 0o7777, "{what}: mode");
            let owner = if ex.all_root {
                (0, 0)
            } else {
                (hm.uid(), hm.gid())
            };
            assert_eq!((im.uid(), im.gid()), owner, "{what}: owner");
            let t = im.modified();
            assert_eq!(
                (t.seconds(), t.nanoseconds()),
                ex.mtime(&hm),
                "{what}: mtime"
            );
            if ft.is_symlink() {
                let target = fs4.read_link(ip.as_slice()).unwrap();
                assert_eq!(
                    target.as_ref(),
                    fs::read_link(&hp).unwrap().as_os_str().as_bytes(),
                    "{what}: target"
                );
            } else if ft.is_file() {
                assert_eq!(im.len(), hm.len(), "{what}: size");
                if hm.len() <= 32 << 20 {
                    assert!(
                        fs4.read(ip.as_slice()).unwrap() == fs::read(&hp).unwrap(),
                        "{what}: content"
                    );
                } else {
                    let host = fs::File::open(&hp).unwrap();
                    let mut file = fs4.open(ip.as_slice()).unwrap();
                    let segs = data_segments(&host, hm.len());
                    for &(s, e) in &segs {
                        let mut want = vec![0u8; (e - s) as usize];
                        host.read_exact_at(&mut want, s).unwrap();
                        assert!(view_read(&mut file, s, want.len()) == want, "{what} at {s}");
                    }
                    // A sample of the holes reads as zeros.
                    for k in 1..8 {
                        let pos = hm.len() / 8 * k;
                        if !segs.iter().any(|&(s, e)| s <= pos + 4096 && pos < e) {
                            assert!(view_read(&mut file, pos, 4096).iter().all(|b| *b == 0));
                        }
                    }
                }
            } else if ft.is_dir() {
                stack.push(rel_child);
            }
            checked += 1;
        }
    }
    checked
}

/// The full acceptance run on the torture tree: with and without
/// --all-root, e2fsck, the kernel, ext4-view, and reproducibility.
#[test]
fn torture_tree_round_trips() {
    let start = std::time::Instant::now();
    let step = |what: &str| eprintln!("{:>7.1}s {what}", start.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().unwrap();
    let Some(src) = generate_torture_tree(dir.path()) else {
        return;
    };
    step("generated");
    let img = dir.path().join("plain.img");

    // Exact metadata, no SOURCE_DATE_EPOCH.
    mkfs_ok(&src, &img, &["--label", "torture"], None);
    step("mkfs");
    let allocated = fs::metadata(&img).unwrap().blocks() * 512;
    assert!(
        allocated < 400 << 20,
        "image not sparse: {allocated} bytes allocated"
    );
    e2fsck_clean(&img);
    step("e2fsck");
    let ex = Expect {
        all_root: false,
        clamp: None,
    };
    let n = compare_with_ext4_view(&src, &img, ex);
    assert!(n > 20_000, "only {n} paths checked");
    step("ext4-view");
    compare_mounted(&src, &img, ex);
    step("kernel");
    fs::remove_file(&img).unwrap();

    // --all-root with clamped timestamps.
    let img = dir.path().join("root.img");
    mkfs_ok(&src, &img, &["--all-root"], Some(EPOCH));
    e2fsck_clean(&img);
    let ex = Expect {
        all_root: true,
        clamp: Some(EPOCH),
    };
    compare_with_ext4_view(&src, &img, ex);
    compare_mounted(&src, &img, ex);
    step("--all-root");

    // Reproducible: a copy of the tree in another directory gives
    // identical bytes.
    if !have("cp") || !have("cmp") {
        skip("reproducibility", "cp/cmp missing");
        return;
    }
    let copy = dir.path().join("elsewhere/copy");
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    run_ok(Command::new("cp").arg("-a").arg(&src).arg(&copy));
    step("copied");
    let again = dir.path().join("again.img");
    mkfs_ok(&copy, &again, &["--all-root"], Some(EPOCH));
    run_ok(Command::new("cmp").arg(&img).arg(&again));
    step("reproduced");
}

/// A small tree with a few of everything.
fn small_tree(dir: &Path) -> PathBuf {
    let src = dir.join("small");
    fs::create_dir_all(src.join("etc/sub")).unwrap();
    fs::write(src.join("etc/hostname"), b"slate\n").unwrap();
    fs::write(src.join("etc/sub/data"), vec![7u8; 300_000]).unwrap();
    std::os::unix::fs::symlink("hostname", src.join("etc/link")).unwrap();
    src
}

#[test]
fn journal_image_survives_a_read_write_mount() {
    let dir = tempfile::tempdir().unwrap();
    let src = small_tree(dir.path());
    let img = dir.path().join("data.img");
    mkfs_ok(&src, &img, &["--journal", "--size", "64M"], Some(EPOCH));
    assert_eq!(fs::metadata(&img).unwrap().len(), 64 << 20);
    e2fsck_clean(&img);
    if have("dumpe2fs") {
        let o = run_ok(Command::new("dumpe2fs").arg("-h").arg(&img));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("has_journal"), "{text}");
        // mke2fs's default for 64 MiB: 1024 blocks.
        assert!(text.contains("Total journal blocks:     1024"), "{text}");
    }
    if let Some(why) = cannot_mount() {
        skip("read-write mount", why);
        return;
    }
    let m = Mount::new(&img, "rw");
    fs::write(m.path().join("etc/new-file"), vec![1u8; 100_000]).unwrap();
    fs::create_dir(m.path().join("newdir")).unwrap();
    fs::remove_file(m.path().join("etc/hostname")).unwrap();
    m.unmount();
    e2fsck_clean(&img);
    let fs4 = ext4_view(&img);
    assert_eq!(fs4.read("/etc/new-file").unwrap(), vec![1u8; 100_000]);
    assert!(!fs4.exists("/etc/hostname").unwrap());
}

#[test]
fn label_uuid_and_default_size() {
    let dir = tempfile::tempdir().unwrap();
    let src = small_tree(dir.path());
    let img = dir.path().join("a.img");
    let uuid = "0b1d2e3f-4a5b-4c6d-8e7f-a0b1c2d3e4f5";
    mkfs_ok(&src, &img, &["--label", "rootfs-a", "--uuid", uuid], None);
    let size = fs::metadata(&img).unwrap().len();
    assert_eq!(size % (1 << 20), 0, "default size {size} is whole MiB");
    e2fsck_clean(&img);
    let fs4 = ext4_view(&img);
    assert_eq!(fs4.label().to_str().unwrap(), "rootfs-a");
    assert_eq!(fs4.uuid().to_string(), uuid);
    assert_eq!(fs4.read("/etc/sub/data").unwrap(), vec![7u8; 300_000]);
}

/// Asserts a failed run: nonzero exit, one line on stderr mentioning
/// `needle`, and nothing left in `out_dir`.
fn assert_clean_failure(o: &std::process::Output, needle: &str, out_dir: &Path) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "succeeded unexpectedly");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(needle), "{err:?} does not mention {needle:?}");
    let left: Vec<_> = fs::read_dir(out_dir).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    err
}

#[test]
fn bad_input_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let src = small_tree(dir.path());
    let outs = dir.path().join("out");
    fs::create_dir(&outs).unwrap();
    let img = outs.join("x.img");

    let missing = dir.path().join("no-such-dir");
    let o = mkfs(&missing, &img, &[], None);
    assert_clean_failure(&o, &missing.display().to_string(), &outs);

    let o = mkfs(&src, &img, &["--size", "12Q"], None);
    assert_clean_failure(&o, "12Q", &outs);

    let o = mkfs(&src, &img, &["--uuid", "not-a-uuid"], None);
    assert_clean_failure(&o, "not-a-uuid", &outs);

    let o = mkfs(&src, &img, &["--label", "a-label-longer-than-16"], None);
    assert_clean_failure(&o, "a-label-longer-than-16", &outs);

    // Content larger than --size: the message gives the real minimum.
    fs::write(src.join("big"), vec![9u8; 5 << 20]).unwrap();
    let o = mkfs(&src, &img, &["--size", "1M"], None);
    let err = assert_clean_failure(&o, "--size is 1 MiB", &outs);
    let needed: u64 = err
        .trim()
        .strip_prefix("slate: error: tree needs at least ")
        .and_then(|r| r.strip_suffix(" MiB, --size is 1 MiB"))
        .unwrap_or_else(|| panic!("unexpected message {err:?}"))
        .parse()
        .unwrap();
    assert!((6..=8).contains(&needed), "needs {needed} MiB?");
    mkfs_ok(&src, &img, &["--size", &format!("{needed}M")], None);
    e2fsck_clean(&img);
    let o = mkfs(&src, &img, &["--size", &format!("{}M", needed - 1)], None);
    assert!(!o.status.success(), "{needed} MiB is not the minimum");
    fs::remove_file(&img).unwrap();
}

#[test]
fn unreadable_file_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let src = small_tree(dir.path());
    let secret = src.join("etc/secret");
    fs::write(&secret, b"no").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    let outs = dir.path().join("out");
    fs::create_dir(&outs).unwrap();
    let img = outs.join("x.img");

    let o = if is_root() {
        // Root reads anything: run as nobody so the permission bites.
        if !have("setpriv") {
            skip("unreadable file as root", "setpriv missing");
            return;
        }
        for p in [dir.path(), outs.as_path()] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
        }
        let bin = dir.path().join("slate");
        fs::copy(env!("CARGO_BIN_EXE_slate"), &bin).unwrap();
        run(Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(["mkfs", "ext4"])
            .arg(&src)
            .arg(&img))
    } else {
        mkfs(&src, &img, &[], None)
    };
    let err = assert_clean_failure(&o, &secret.display().to_string(), &outs);
    assert!(err.contains("ermission denied"), "{err}");
}

/// A name over 255 bytes can only come through the library (no host
/// filesystem stores one): the tree refuses it, naming the directory.
#[test]
fn overlong_name_is_refused_by_the_library() {
    use slate::tree::{FileData, Metadata, Node, NodeKind, Tree};
    let mut t = Tree::new(Metadata::root(0o755));
    let dir = t.mkdir_p(b"/etc", &Metadata::root(0o755)).unwrap();
    let name = vec![b'n'; 256];
    let e = t
        .add(
            dir,
            &name,
            Node {
                kind: NodeKind::File(FileData::from_bytes(b"x".to_vec())),
                meta: Metadata::root(0o644),
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/etc") && e.contains("longer than 255 bytes"),
        "{e}"
    );
}

/// A file over 4 GiB with 400 MiB of it declared as data (the source's holes
/// there read as zeros, which the writer allocates but never writes): sizes
/// and extents past 2^32 bytes, an extent tree, and allocation across
/// several block groups with backup superblocks in the way.
#[test]
fn large_file_spans_groups() {
    use slate::filesystems::ext4::{Ext4Options, Ext4Plan};
    use slate::tree::{FileData, Metadata, Node, NodeKind, Tree};
    const SIZE: u64 = (4 << 30) + 12_345;
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("big");
    let f = fs::File::create(&host).unwrap();
    f.set_len(SIZE).unwrap();
    for (at, what) in [(0, &b"head"[..]), (3 << 30, b"middle"), (SIZE - 4, b"tail")] {
        f.write_all_at(what, at).unwrap();
    }
    drop(f);
    let mut t = Tree::new(Metadata::root(0o755));
    let mut data = FileData::host(&host, SIZE);
    data.data = vec![
        0..200 << 20,
        3 << 30..(3 << 30) + (200 << 20),
        SIZE - (1 << 20)..SIZE,
    ];
    let node = Node {
        kind: NodeKind::File(data),
        meta: Metadata::root(0o644),
    };
    t.put(b"/big", node, &Metadata::root(0o755)).unwrap();
    let plan = Ext4Plan::new(&t, &Ext4Options::default()).unwrap();
    assert!(plan.size().get() > 401 << 20);
    let img = dir.path().join("img");
    let out = fs::File::create(&img).unwrap();
    out.set_len(plan.size().get()).unwrap();
    let progress = slate::progress::Progress::bytes(plan.data_bytes(), "test");
    plan.write(&out, &progress).unwrap();
    drop(out);
    let allocated = fs::metadata(&img).unwrap().blocks() * 512;
    assert!(
        allocated < 64 << 20,
        "zeros were written: {allocated} bytes"
    );
    e2fsck_clean(&img);

    let fs4 = ext4_view(&img);
    assert_eq!(fs4.metadata("/big").unwrap().len(), SIZE);
    let mut file = fs4.open("/big").unwrap();
    assert_eq!(view_read(&mut file, 0, 4), b"head");
    assert_eq!(view_read(&mut file, 3 << 30, 6), b"middle");
    assert_eq!(view_read(&mut file, SIZE - 4, 4), b"tail");
    assert!(view_read(&mut file, 1 << 32, 4096).iter().all(|b| *b == 0));
    assert!(
        view_read(&mut file, 100 << 20, 4096)
            .iter()
            .all(|b| *b == 0)
    );

    if let Some(why) = cannot_mount() {
        skip("kernel read of the 4 GiB file", why);
        return;
    }
    let m = Mount::new(&img, "ro");
    let big = fs::File::open(m.path().join("big")).unwrap();
    let md = big.metadata().unwrap();
    assert_eq!(md.len(), SIZE);
    assert!(
        md.blocks() * 512 >= 401 << 20,
        "data not allocated: {}",
        md.blocks()
    );
    let mut buf = [0u8; 6];
    big.read_exact_at(&mut buf, 3 << 30).unwrap();
    assert_eq!(&buf, b"middle");
    big.read_exact_at(&mut buf[..4], SIZE - 4).unwrap();
    assert_eq!(&buf[..4], b"tail");
    drop(big);
    m.unmount();
}
