//! Delta-friendly images (`slate build --previous`): a tree written again
//! against the layout of an earlier image keeps the UUID, hash seed,
//! geometry, inode numbers and the blocks of every unchanged file. Checked
//! with e2fsck, debugfs and dumpe2fs, and by counting changed chunks.

#[path = "ext4_support/mod.rs"]
mod common;

use common::*;
use slate::filesystems::ext4::{Ext4Error, Ext4Layout, Ext4Options, Ext4Plan, LayoutError};
use slate::progress::Progress;
use slate::tree::{FileData, Metadata, Node, NodeKind, Tree};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

type Files = BTreeMap<String, Vec<u8>>;

/// Deterministic bytes (an LCG, no randomness).
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// A minimal-system-like tree: about 300 files from a few bytes to 600
/// KiB in a handful of directories, ~25 MiB in all.
fn v1() -> Files {
    let mut f = Files::new();
    let dirs = [
        "/usr/bin",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/share/doc",
        "/etc",
    ];
    for i in 0..300u64 {
        let dir = dirs[(i % 4) as usize];
        let len = match i % 7 {
            0 => 600 * 1024 + i as usize,
            1 | 2 => 40 * 1024 + 13 * i as usize,
            3 => 3000 + i as usize,
            _ => 100 + 7 * i as usize,
        };
        f.insert(format!("{dir}/f{i:03}"), bytes(i, len));
    }
    f
}

fn tree(files: &Files) -> Tree {
    let mut t = Tree::new(Metadata::root(0o755));
    for (p, b) in files {
        let node = Node {
            kind: NodeKind::File(FileData::from_bytes(b.clone())),
            meta: Metadata::root(0o644),
        };
        t.put(p.as_bytes(), node, &Metadata::root(0o755)).unwrap();
    }
    t
}

fn opts() -> Ext4Options {
    Ext4Options {
        label: "root".into(),
        timestamp: Some(1_700_000_000),
        ..Ext4Options::default()
    }
}

/// Writes `files` to `img` (against `prev` if given) and returns its layout.
fn build(files: &Files, prev: Option<&Ext4Layout>, img: &Path) -> Ext4Layout {
    let t = tree(files);
    let plan = match prev {
        Some(p) => Ext4Plan::with_previous(&t, &opts(), p).unwrap(),
        None => Ext4Plan::new(&t, &opts()).unwrap(),
    };
    let out = std::fs::File::create(img).unwrap();
    out.set_len(plan.size().get()).unwrap();
    let s = plan.write(&out, &Progress::bytes(0, "test")).unwrap();
    let layout = plan.layout(&s).unwrap();
    // The layout file survives its own round trip.
    assert_eq!(Ext4Layout::from_json(&layout.to_json()).unwrap(), layout);
    layout
}

/// `(inode, blocks)` of each path, as debugfs reports them.
fn debugfs_map(img: &Path, paths: &[&String]) -> BTreeMap<String, (u32, String)> {
    let dir = tempfile::tempdir().unwrap();
    let cmds = dir.path().join("cmds");
    let mut text = String::new();
    for p in paths {
        text.push_str(&format!("imap {p}\nblocks {p}\n"));
    }
    std::fs::write(&cmds, text).unwrap();
    let out = run(Command::new("debugfs").arg("-f").arg(&cmds).arg(img));
    let stdout = String::from_utf8(out.stdout).unwrap();
    // Each command is echoed as "debugfs: cmd"; its output follows.
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in stdout.lines() {
        if let Some(cmd) = line.strip_prefix("debugfs: ") {
            sections.push((cmd.to_string(), String::new()));
        } else if let Some(last) = sections.last_mut() {
            last.1.push_str(line.trim());
            last.1.push('\n');
        }
    }
    let mut map = BTreeMap::new();
    for pair in sections.chunks(2) {
        let path = pair[0].0.strip_prefix("imap ").unwrap().to_string();
        let ino: u32 = pair[0]
            .1
            .strip_prefix("Inode ")
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("debugfs imap {path}: {:?}", pair[0].1));
        let blocks = pair[1].1.trim().to_string();
        assert!(!blocks.is_empty(), "debugfs blocks {path}: nothing");
        map.insert(path, (ino, blocks));
    }
    map
}

/// The "Filesystem UUID" and "Directory Hash Seed" lines of dumpe2fs -h.
fn ids(img: &Path) -> Vec<String> {
    let out = run(Command::new("dumpe2fs").arg("-h").arg(img));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("Filesystem UUID") || l.starts_with("Directory Hash Seed"))
        .map(str::to_string)
        .collect()
}

/// Chunks of `size` bytes that differ between two images (a missing tail
/// counts as differing).
fn differing(a: &[u8], b: &[u8], size: usize) -> usize {
    let n = a.len().max(b.len()).div_ceil(size);
    (0..n)
        .filter(|&i| {
            let r = |x: &[u8]| {
                x.get(i * size..((i + 1) * size).min(x.len()))
                    .map(<[u8]>::to_vec)
            };
            r(a) != r(b)
        })
        .count()
}

fn tools() -> bool {
    for t in ["e2fsck", "debugfs", "dumpe2fs"] {
        if !have(t) {
            skip("previous-layout checks", &format!("{t} not installed"));
            return false;
        }
    }
    true
}

/// The physical blocks in one `blocks` line of [`debugfs_map`].
fn block_numbers(blocks: &str) -> Vec<u64> {
    blocks
        .split_whitespace()
        .map(|b| {
            b.parse()
                .unwrap_or_else(|_| panic!("debugfs blocks: {blocks:?}"))
        })
        .collect()
}

/// The contents of `path` in `img`, as debugfs `cat` reads them.
fn debugfs_cat(img: &Path, path: &str) -> Vec<u8> {
    run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(img))
    .stdout
}

/// The images and layouts [`pair`] made.
struct Pair {
    /// Holds the images.
    _dir: tempfile::TempDir,
    /// v1, built from scratch.
    old: std::path::PathBuf,
    /// v2, built with v1's layout.
    new: std::path::PathBuf,
    /// v1's layout.
    l1: Ext4Layout,
    /// v2's layout.
    l2: Ext4Layout,
    /// Differing 4 KiB, 64 KiB and 1 MiB chunks between v1 and v2 with the
    /// previous layout, then without it.
    c: [usize; 6],
}

/// Builds v1, then `v2` with v1's layout (and without, for comparison);
/// checks v2 and that every path in `same` kept its inode and blocks.
fn pair(name: &str, v2: &Files, same: &[&String]) -> Pair {
    let d = tempfile::tempdir().unwrap();
    let (i1, i2, i2n) = (
        d.path().join("v1"),
        d.path().join("v2"),
        d.path().join("v2n"),
    );
    let l1 = build(&v1(), None, &i1);
    let l2 = build(v2, Some(&l1), &i2);
    build(v2, None, &i2n);
    e2fsck_clean(&i2);
    assert_eq!(ids(&i1), ids(&i2), "{name}: UUID and hash seed");
    assert_eq!(ids(&i1).len(), 2);
    let m1 = debugfs_map(&i1, same);
    let m2 = debugfs_map(&i2, same);
    for p in same {
        assert_eq!(m1[*p], m2[*p], "{name}: {p} moved");
    }
    let (a, b, n) = (
        std::fs::read(&i1).unwrap(),
        std::fs::read(&i2).unwrap(),
        std::fs::read(&i2n).unwrap(),
    );
    let c = [
        differing(&a, &b, 4096),
        differing(&a, &b, 64 << 10),
        differing(&a, &b, 1 << 20),
        differing(&a, &n, 4096),
        differing(&a, &n, 64 << 10),
        differing(&a, &n, 1 << 20),
    ];
    println!(
        "{name}: {} MiB image; differing 4 KiB/64 KiB/1 MiB chunks: \
         with --previous {}/{}/{}, without {}/{}/{} (of {}/{}/{})",
        a.len() >> 20,
        c[0],
        c[1],
        c[2],
        c[3],
        c[4],
        c[5],
        a.len() / 4096,
        a.len() >> 16,
        a.len() >> 20
    );
    Pair {
        _dir: d,
        old: i1,
        new: i2,
        l1,
        l2,
        c,
    }
}

#[test]
fn added_file_keeps_everything_else_in_place() {
    if !tools() {
        return;
    }
    let v1 = v1();
    let mut v2 = v1.clone();
    v2.insert("/etc/motd".into(), b"Hello, slate!\n".to_vec());
    let same: Vec<&String> = v1.keys().collect();
    let Pair { l1, l2, c, .. } = pair("added /etc/motd", &v2, &same);
    // The new file takes the lowest free inode number and a block after
    // everything v1 used.
    let motd = l2.inodes.iter().find(|i| i.path == "/etc/motd").unwrap();
    let highest = l1.inodes.iter().map(|i| i.ino).max().unwrap();
    assert_eq!(motd.ino, highest + 1);
    assert!(motd.extents[0][1] >= l1.alloc_end, "{:?}", motd.extents);
    // One group: the new file's data block, its inode-table block, the
    // /etc directory block, the block and inode bitmaps, the superblock
    // and the descriptor table change. Allow twice that.
    assert_eq!(l1.groups.len(), 1);
    assert!(c[0] <= 14, "{} 4 KiB blocks differ", c[0]);
    assert!(c[1] <= 7, "{} 64 KiB chunks differ", c[1]);
    // And far fewer than without the previous layout.
    assert!(c[2] < c[5], "{c:?}");
}

/// A file grown by three blocks with the same prefix keeps its old
/// blocks as its first ones; only the tail goes to free space.
#[test]
fn grown_file_keeps_its_blocks_and_appends_the_rest() {
    if !tools() {
        return;
    }
    let v1 = v1();
    let grown = "/usr/lib/x86_64-linux-gnu/f001".to_string();
    let mut v2 = v1.clone();
    v2.get_mut(&grown).unwrap().extend(bytes(9999, 3 * 4096));
    let same: Vec<&String> = v1.keys().filter(|p| **p != grown).collect();
    let p = pair("grown f001", &v2, &same);
    assert_eq!(debugfs_cat(&p.new, &grown), v2[&grown]);
    let (old_ino, old_blocks) = &debugfs_map(&p.old, &[&grown])[&grown];
    let (new_ino, new_blocks) = &debugfs_map(&p.new, &[&grown])[&grown];
    let (old_blocks, new_blocks) = (block_numbers(old_blocks), block_numbers(new_blocks));
    assert_eq!(new_ino, old_ino);
    // 40973 bytes were 11 blocks; 53261 bytes are 14.
    assert_eq!((old_blocks.len(), new_blocks.len()), (11, 14));
    assert_eq!(new_blocks[..11], old_blocks[..], "{new_blocks:?}");
    assert!(
        new_blocks[11..].iter().all(|&b| b >= p.l1.alloc_end),
        "{new_blocks:?}"
    );
    let new = p.l2.inodes.iter().find(|i| i.path == grown).unwrap();
    let old = p.l1.inodes.iter().find(|i| i.path == grown).unwrap();
    assert_ne!(new.sha256, old.sha256);
    // Its old last block (now full) and 3 new data blocks, plus the
    // metadata blocks of the added-file case.
    assert!(p.c[0] <= 4 + 14, "{} 4 KiB blocks differ", p.c[0]);
}

#[test]
fn shrunk_file_stays_in_its_blocks() {
    if !tools() {
        return;
    }
    let v1 = v1();
    let path = "/usr/bin/f000".to_string();
    let mut v2 = v1.clone();
    v2.insert(path.clone(), bytes(4242, 100 * 1024));
    let same: Vec<&String> = v1.keys().filter(|p| **p != path).collect();
    let Pair { l1, l2, .. } = pair("shrunk f000", &v2, &same);
    let new = l2.inodes.iter().find(|i| i.path == path).unwrap();
    let old = l1.inodes.iter().find(|i| i.path == path).unwrap();
    assert_eq!(new.extents[0][1], old.extents[0][1]);
    assert_eq!(new.extents.iter().map(|e| e[2]).sum::<u64>(), 25);
}

#[test]
fn removed_file_frees_its_inode_for_the_next_new_path() {
    if !tools() {
        return;
    }
    let v1 = v1();
    let gone = "/usr/share/doc/f010".to_string();
    let mut v2 = v1.clone();
    v2.remove(&gone);
    let same: Vec<&String> = v2.keys().collect();
    let Pair { l1, l2, c, .. } = pair("removed f010", &v2, &same);
    let old = l1.inodes.iter().find(|i| i.path == gone).unwrap();
    assert!(l2.inodes.iter().all(|i| i.ino != old.ino));
    assert!(c[0] <= 14 + 12, "{} 4 KiB blocks differ", c[0]);

    // v3 = v2 + a new file, against v2: it takes the freed inode number.
    let d = tempfile::tempdir().unwrap();
    let mut v3 = v2.clone();
    v3.insert("/etc/new".into(), b"new\n".to_vec());
    let l3 = build(&v3, Some(&l2), &d.path().join("v3"));
    e2fsck_clean(&d.path().join("v3"));
    let new = l3.inodes.iter().find(|i| i.path == "/etc/new").unwrap();
    assert_eq!(new.ino, old.ino);
}

#[test]
fn same_inputs_give_the_same_image() {
    let d = tempfile::tempdir().unwrap();
    let l1 = build(&v1(), None, &d.path().join("v1"));
    let mut v2 = v1();
    v2.insert("/etc/motd".into(), b"Hello, slate!\n".to_vec());
    let a = build(&v2, Some(&l1), &d.path().join("a"));
    let b = build(&v2, Some(&l1), &d.path().join("b"));
    assert_eq!(a, b);
    assert_eq!(
        std::fs::read(d.path().join("a")).unwrap(),
        std::fs::read(d.path().join("b")).unwrap()
    );
}

#[test]
fn a_tree_that_outgrows_the_previous_image_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let l1 = build(&v1(), None, &d.path().join("v1"));
    let mut v2 = v1();
    v2.insert("/usr/lib/huge".into(), vec![7u8; 64 << 20]);
    let t = tree(&v2);
    let e = Ext4Plan::with_previous(&t, &opts(), &l1).unwrap_err();
    assert!(matches!(e, Ext4Error::Previous(_)), "{e}");
    assert!(e.to_string().contains("does not fit"), "{e}");
}

#[test]
fn bad_layout_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let l1 = build(&v1(), None, &d.path().join("v1"));
    let text = String::from_utf8(l1.to_json()).unwrap();
    let v2 = text.replace("\"version\":1", "\"version\":2");
    assert!(matches!(
        Ext4Layout::from_json(v2.as_bytes()),
        Err(LayoutError::Incompatible(_))
    ));
    assert!(matches!(
        Ext4Layout::from_json(b"{\"format\":\"x\"}"),
        Err(LayoutError::Incompatible(_))
    ));
    assert!(matches!(
        Ext4Layout::from_json(&l1.to_json()[..100]),
        Err(LayoutError::Corrupt(_))
    ));
    let moved = text.replacen("\"blocks_per_group\":", "\"blocks_per_group\":1", 1);
    assert!(Ext4Layout::from_json(moved.as_bytes()).is_err());
}

/// `slate build --previous` reads a build directory or a layout file, and
/// a missing or broken one is one line naming the file.
#[test]
fn previous_is_a_build_directory_or_a_layout_file() {
    use slate::compose::build::load_previous_layout;
    let d = tempfile::tempdir().unwrap();
    let l1 = build(&v1(), None, &d.path().join("rootfs.ext4"));
    let file = d.path().join("rootfs.layout.json");
    std::fs::write(&file, l1.to_json()).unwrap();
    // No manifest: the directory's rootfs.layout.json.
    assert_eq!(load_previous_layout(d.path()).unwrap(), l1);
    assert_eq!(load_previous_layout(&file).unwrap(), l1);

    let e = load_previous_layout(&d.path().join("nothing"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("previous layout ") && e.contains("nothing"),
        "{e}"
    );
    std::fs::write(&file, b"{\"format\":\"slate-ext4-layout\",\"version\":7}").unwrap();
    let e = load_previous_layout(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("rootfs.layout.json") && e.contains("version"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = load_previous_layout(empty.path()).unwrap_err().to_string();
    assert!(
        e.contains("rootfs.layout.json") && e.contains("No such file"),
        "{e}"
    );
}
