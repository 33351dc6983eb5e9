//! Property tests: random trees built through the library API are written
//! as ext4 images, checked by `e2fsck -fn` (when installed) and read back
//! entry by entry with the independent `ext4-view` reader.

#[path = "ext4_support/mod.rs"]
mod common;

use common::*;
use proptest::prelude::*;
use slate::filesystems::ext4::{Ext4Options, Ext4Plan, required_size};
use slate::progress::Progress;
use slate::tree::{
    DataSource, DeviceNumber, FileData, Metadata, Node, NodeId, NodeKind, Timestamp, Tree,
};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    /// Size, data ranges (start, len) and a byte pattern seed.
    Sparse(u64, Vec<(u64, u64)>, u8),
    Dir,
    /// Many empty files (to make indexed directories).
    Bulk(u16),
    Symlink(Vec<Vec<u8>>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    Socket,
    HardLink(usize),
}

#[derive(Debug, Clone)]
struct Entry {
    parent: usize,
    name: Vec<u8>,
    kind: Kind,
    meta: Metadata,
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-zA-Z0-9._-]{1,24}".prop_map(String::into_bytes),
        1 => "\\PC{1,12}".prop_map(String::into_bytes),
        1 => prop::collection::vec(1u8..=255, 1..=255),
        1 => (1usize..=255).prop_map(|n| vec![b'L'; n]),
    ]
    .prop_filter("valid name", |n| {
        n.len() <= 255 && !n.contains(&b'/') && n != b"." && n != b".."
    })
}

/// Times ext4-view can read (it rejects low 32 bits with the top bit set;
/// negative and post-2038 times are covered by the kernel tests).
fn timestamp() -> impl Strategy<Value = Timestamp> {
    (
        prop_oneof![
            0i64..(1 << 31),
            (1i64 << 32)..(1 << 32) + (1 << 31),
            (1i64 << 33)..(1 << 33) + 1000
        ],
        0u32..1_000_000_000,
    )
        .prop_map(|(secs, nanos)| Timestamp { secs, nanos })
}

fn xattrs() -> impl Strategy<Value = BTreeMap<Vec<u8>, Vec<u8>>> {
    let small = (
        "user\\.[a-z0-9]{1,16}",
        prop::collection::vec(any::<u8>(), 0..40),
    );
    let big = prop::option::of(prop::collection::vec(any::<u8>(), 200..2500));
    let cap = prop::option::of(prop::collection::vec(any::<u8>(), 20..=20));
    (prop::collection::vec(small, 0..4), big, cap).prop_map(|(small, big, cap)| {
        let mut m: BTreeMap<Vec<u8>, Vec<u8>> = small
            .into_iter()
            .map(|(k, v)| (k.into_bytes(), v))
            .collect();
        if let Some(v) = big {
            m.insert(b"trusted.big".to_vec(), v);
        }
        if let Some(v) = cap {
            m.insert(b"security.capability".to_vec(), v);
        }
        m
    })
}

fn metadata() -> impl Strategy<Value = Metadata> {
    (
        0u16..0o10000,
        any::<u32>(),
        any::<u32>(),
        timestamp(),
        xattrs(),
    )
        .prop_map(|(mode, uid, gid, mtime, xattrs)| Metadata {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
}

fn kind() -> impl Strategy<Value = Kind> {
    let sparse = (
        1u64..(16 << 20),
        prop::collection::vec((0u64..(16 << 20), 1u64..20_000), 0..24),
        1u8..255,
    )
        .prop_map(|(size, ranges, seed)| Kind::Sparse(size, ranges, seed));
    let component = prop::collection::vec(
        any::<u8>().prop_filter("no / or NUL", |b| *b != 0 && *b != b'/'),
        1..80,
    );
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..10_000).prop_map(Kind::File),
        1 => sparse,
        4 => Just(Kind::Dir),
        1 => (0u16..1200).prop_map(Kind::Bulk),
        2 => prop::collection::vec(component, 1..60).prop_map(Kind::Symlink),
        1 => (0u32..4096, 0u32..(1 << 20)).prop_map(|(a, b)| Kind::Char(a, b)),
        1 => (0u32..4096, 0u32..(1 << 20)).prop_map(|(a, b)| Kind::Block(a, b)),
        1 => Just(Kind::Fifo),
        1 => Just(Kind::Socket),
        1 => any::<usize>().prop_map(Kind::HardLink),
    ]
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec(
        (any::<usize>(), name(), kind(), metadata()).prop_map(|(parent, name, kind, meta)| Entry {
            parent,
            name,
            kind,
            meta,
        }),
        0..40,
    )
}

fn sparse_data(size: u64, ranges: &[(u64, u64)], seed: u8) -> FileData {
    let mut rs: Vec<(u64, u64)> = ranges
        .iter()
        .map(|&(s, l)| (s.min(size), (s + l).min(size)))
        .filter(|(s, e)| s < e)
        .collect();
    rs.sort();
    let mut merged: Vec<std::ops::Range<u64>> = Vec::new();
    for (s, e) in rs {
        match merged.last_mut() {
            Some(last) if last.end >= s => last.end = last.end.max(e),
            _ => merged.push(s..e),
        }
    }
    let mut bytes = vec![0u8; size as usize];
    for r in &merged {
        for i in r.clone() {
            bytes[i as usize] = (i as u8).wrapping_mul(31).wrapping_add(seed) | 1;
        }
    }
    FileData {
        size,
        source: DataSource::Bytes(Arc::from(bytes)),
        data: merged,
    }
}

fn build(root: Metadata, entries: &[Entry]) -> Tree {
    let mut t = Tree::new(root);
    let mut dirs = vec![NodeId::ROOT];
    let mut files: Vec<NodeId> = Vec::new();
    for e in entries {
        let parent = dirs[e.parent % dirs.len()];
        if t.child(parent, &e.name).is_some() {
            continue;
        }
        let node = |kind| Node {
            kind,
            meta: e.meta.clone(),
        };
        match &e.kind {
            Kind::HardLink(i) => {
                if !files.is_empty() {
                    let target = files[i % files.len()];
                    t.link(parent, &e.name, target).unwrap();
                }
            }
            Kind::Bulk(n) => {
                for i in 0..*n {
                    let mut name = e.name.clone();
                    name.truncate(240);
                    name.extend_from_slice(format!("~{i}").as_bytes());
                    if t.child(parent, &name).is_none() {
                        t.add(
                            parent,
                            &name,
                            node(NodeKind::File(FileData::from_bytes(vec![]))),
                        )
                        .unwrap();
                    }
                }
            }
            k => {
                let kind = match k {
                    Kind::File(b) => NodeKind::File(FileData::from_bytes(b.clone())),
                    Kind::Sparse(size, ranges, seed) => {
                        NodeKind::File(sparse_data(*size, ranges, *seed))
                    }
                    Kind::Dir => NodeKind::empty_dir(),
                    Kind::Symlink(parts) => {
                        let mut target = parts.join(&b'/');
                        target.truncate(4095);
                        while target.last() == Some(&b'/') {
                            target.pop();
                        }
                        if target.is_empty() {
                            target.push(b'x');
                        }
                        NodeKind::Symlink(target)
                    }
                    Kind::Char(a, b) => NodeKind::CharDevice(DeviceNumber {
                        major: *a,
                        minor: *b,
                    }),
                    Kind::Block(a, b) => NodeKind::BlockDevice(DeviceNumber {
                        major: *a,
                        minor: *b,
                    }),
                    Kind::Fifo => NodeKind::Fifo,
                    Kind::Socket => NodeKind::Socket,
                    Kind::HardLink(_) | Kind::Bulk(_) => unreachable!(),
                };
                let is_dir = matches!(kind, NodeKind::Directory(_));
                let is_file = matches!(kind, NodeKind::File(_));
                let id = t.add(parent, &e.name, node(kind)).unwrap();
                if is_dir {
                    dirs.push(id);
                } else if is_file {
                    files.push(id);
                }
            }
        }
    }
    t
}

/// Reads every entry of `tree` back from the image with ext4-view.
fn check_with_ext4_view(tree: &Tree, img: &std::path::Path) {
    let fs4 = ext4_view(img);
    let mut stack: Vec<Vec<u8>> = Vec::new();
    for e in tree.walk() {
        let path: Vec<u8> = if e.depth == 0 {
            b"/".to_vec()
        } else {
            stack.truncate(e.depth - 1);
            stack.push(e.name.to_vec());
            [b"/".to_vec(), stack.join(&b'/')].concat()
        };
        let what = String::from_utf8_lossy(&path).into_owned();
        let node = tree.node(e.id);
        let md = fs4
            .symlink_metadata(path.as_slice())
            .unwrap_or_else(|err| panic!("{what}: {err:?}"));
        assert_eq!(md.mode(), node.meta.mode, "{what}: mode");
        assert_eq!(
            (md.uid(), md.gid()),
            (node.meta.uid, node.meta.gid),
            "{what}: owner"
        );
        let t = md.modified();
        assert_eq!(
            Timestamp {
                secs: t.seconds(),
                nanos: t.nanoseconds()
            },
            node.meta.mtime,
            "{what}: mtime"
        );
        let ft = md.file_type();
        match &node.kind {
            NodeKind::Directory(entries) => {
                assert!(ft.is_dir(), "{what}");
                let mut got: Vec<Vec<u8>> = fs4
                    .read_dir(path.as_slice())
                    .unwrap()
                    .map(|d| d.unwrap().file_name().as_ref().to_vec())
                    .filter(|n| n != b"." && n != b"..")
                    .collect();
                got.sort();
                let mut want: Vec<Vec<u8>> = entries.keys().cloned().collect();
                if e.depth == 0 && !entries.contains_key(&b"lost+found"[..]) {
                    want.push(b"lost+found".to_vec());
                }
                want.sort();
                assert_eq!(got, want, "{what}: entries");
            }
            NodeKind::File(f) => {
                assert!(ft.is_regular_file(), "{what}");
                assert_eq!(md.len(), f.size, "{what}: size");
                let DataSource::Bytes(b) = &f.source else {
                    unreachable!()
                };
                assert!(
                    fs4.read(path.as_slice()).unwrap() == b[..],
                    "{what}: content"
                );
            }
            NodeKind::Symlink(target) => {
                assert!(ft.is_symlink(), "{what}");
                let got = fs4.read_link(path.as_slice()).unwrap();
                assert_eq!(got.as_ref(), &target[..], "{what}: target");
            }
            NodeKind::CharDevice(_) => assert!(ft.is_char_dev(), "{what}"),
            NodeKind::BlockDevice(_) => assert!(ft.is_block_dev(), "{what}"),
            NodeKind::Fifo => assert!(ft.is_fifo(), "{what}"),
            NodeKind::Socket => assert!(ft.is_socket(), "{what}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(40),
        // Integration tests have no lib.rs beside them to store regressions in.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_trees_read_back(
        root in metadata(),
        entries in entries(),
        label in "[a-z0-9-]{0,16}",
        uuid in prop::option::of(any::<[u8; 16]>()),
        journal in any::<bool>(),
        exact_size in any::<bool>(),
        epoch in 0i64..(1 << 31),
    ) {
        let tree = build(root, &entries);
        let mut opts = Ext4Options {
            label,
            uuid,
            journal,
            timestamp: Some(epoch),
            ..Ext4Options::default()
        };
        if exact_size {
            // The minimum must really work.
            opts.size = Some(required_size(&tree, &opts).unwrap());
        }
        let plan = Ext4Plan::new(&tree, &opts).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        let mut file = std::fs::File::create(&img).unwrap();
        file.set_len(plan.size().get()).unwrap();
        let summary = plan.write(&mut file, &Progress::bytes(0, "test")).unwrap();
        drop(file);
        if let Some(u) = uuid {
            prop_assert_eq!(summary.uuid, u);
        }
        e2fsck_clean(&img);
        check_with_ext4_view(&tree, &img);
    }
}
