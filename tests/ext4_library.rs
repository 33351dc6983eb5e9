//! Library-level ext4 cases that need no host tree: link-count limits, a
//! tree's own lost+found, and the too-small error. Images are checked with
//! `e2fsck -fn`, ext4-view and (as root) the kernel.

#[path = "ext4_support/mod.rs"]
mod common;

use common::*;
use slate::filesystems::ext4::{Ext4Options, Ext4Plan, required_size};
use slate::progress::Progress;
use slate::tree::{FileData, Metadata, Node, NodeId, NodeKind, Tree};
use slate::units::Bytes;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn file(bytes: &[u8]) -> Node {
    Node {
        kind: NodeKind::File(FileData::from_bytes(bytes.to_vec())),
        meta: Metadata::root(0o644),
    }
}

fn dir() -> Metadata {
    Metadata::root(0o755)
}

/// Plans and writes `tree` into `img`.
fn write(tree: &Tree, opts: &Ext4Options, img: &Path) {
    let plan = Ext4Plan::new(tree, opts).unwrap();
    let out = std::fs::File::create(img).unwrap();
    out.set_len(plan.size().get()).unwrap();
    plan.write(&out, &Progress::bytes(0, "test")).unwrap();
}

/// More than 65,000 subdirectories: the parent's link count becomes 1
/// (`dir_nlink`), which e2fsck and the kernel accept.
#[test]
fn dir_nlink_beyond_65000_subdirectories() {
    let mut t = Tree::new(dir());
    let many = t.mkdir_p(b"/many", &dir()).unwrap();
    for i in 0..65_010 {
        t.add(
            many,
            i.to_string().as_bytes(),
            Node {
                kind: NodeKind::empty_dir(),
                meta: dir(),
            },
        )
        .unwrap();
    }
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("img");
    write(&t, &Ext4Options::default(), &img);
    e2fsck_clean(&img);
    let fs4 = ext4_view(&img);
    assert!(fs4.exists("/many/65009").unwrap());
    if let Some(why) = cannot_mount() {
        skip("kernel link count", why);
        return;
    }
    let m = Mount::new(&img, "ro");
    assert_eq!(std::fs::metadata(m.path().join("many")).unwrap().nlink(), 1);
    assert_eq!(
        std::fs::read_dir(m.path().join("many")).unwrap().count(),
        65_010
    );
    m.unmount();
}

#[test]
fn more_than_65000_hard_links_are_refused() {
    let mut t = Tree::new(dir());
    let f = t.put(b"/d/f", file(b"x"), &dir()).unwrap();
    let d = t.lookup(b"/d").unwrap();
    for i in 0..65_000 {
        t.link(d, format!("l{i}").as_bytes(), f).unwrap();
    }
    let e = Ext4Plan::new(&t, &Ext4Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/d/f: 65001 hard links"), "{e}");
}

/// A lost+found in the tree becomes inode 11 with its own metadata and
/// contents; none is added.
#[test]
fn tree_lost_found_is_kept() {
    let mut t = Tree::new(dir());
    let mut meta = Metadata::root(0o750);
    meta.uid = 7;
    let lf = t.mkdir_p(b"/lost+found", &meta).unwrap();
    t.add(lf, b"orphan", file(b"found")).unwrap();
    t.put(b"/etc/x", file(b"y"), &dir()).unwrap();
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("img");
    write(&t, &Ext4Options::default(), &img);
    e2fsck_clean(&img);
    let fs4 = ext4_view(&img);
    let md = fs4.metadata("/lost+found").unwrap();
    assert_eq!((md.mode(), md.uid()), (0o750, 7));
    assert_eq!(fs4.read("/lost+found/orphan").unwrap(), b"found");
    assert_eq!(t.node(NodeId::ROOT).meta.mode, 0o755);
}

/// A tree larger than the options' size is refused with the minimum size.
#[test]
fn too_small_names_the_minimum() {
    let mut t = Tree::new(dir());
    t.put(b"/big", file(&vec![1u8; 3 << 20]), &dir()).unwrap();
    let mut opts = Ext4Options {
        size: Some(Bytes(1 << 20)),
        ..Ext4Options::default()
    };
    let need = required_size(&t, &opts).unwrap();
    let e = Ext4Plan::new(&t, &opts).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "tree needs at least {} MiB, --size is 1 MiB",
            need.mib_ceil()
        )
    );
    opts.size = Some(Bytes(1536 << 10));
    let e = Ext4Plan::new(&t, &opts).unwrap_err().to_string();
    assert!(e.ends_with("--size is 1.50 MiB"), "{e}");
    // Exactly the minimum works.
    opts.size = Some(need);
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("img");
    write(&t, &opts, &img);
    e2fsck_clean(&img);
}
