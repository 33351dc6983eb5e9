use super::*;
use proptest::prelude::*;
use std::io::{Seek, SeekFrom, Write};

fn spec(name: &str, type_guid: Guid, size: PartitionSize) -> PartitionSpec {
    PartitionSpec {
        name: name.into(),
        type_guid,
        size,
        guid: None,
        attributes: 0,
    }
}

fn standard() -> Vec<PartitionSpec> {
    vec![
        spec("esp", types::ESP, PartitionSize::Fixed(Bytes(64 * MIB))),
        PartitionSpec {
            attributes: attributes::READ_ONLY,
            ..spec(
                "root-a",
                types::ROOT_X86_64,
                PartitionSize::Fixed(Bytes(512 * MIB)),
            )
        },
        PartitionSpec {
            attributes: attributes::READ_ONLY | attributes::NO_AUTO,
            ..spec(
                "root-b",
                types::ROOT_X86_64,
                PartitionSize::Fixed(Bytes(512 * MIB)),
            )
        },
        spec(
            "data",
            types::LINUX_DATA,
            PartitionSize::Fixed(Bytes(100 * MIB)),
        ),
    ]
}

fn opts() -> DiskOptions {
    DiskOptions {
        image_name: "minimal".into(),
        image_version: "1.0.0".into(),
        ..DiskOptions::default()
    }
}

#[test]
fn type_guids_are_the_spec_values() {
    assert_eq!(
        types::ESP.to_string(),
        "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
    );
    assert_eq!(
        types::ROOT_X86_64.to_string(),
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
    );
    assert_eq!(
        types::LINUX_DATA.to_string(),
        "0fc63daf-8483-4772-8e79-3d69d8477de4"
    );
    assert_eq!(
        types::ROOT_ARM64.to_string(),
        "b921b045-1df0-41c3-af44-4c6f280d3fae"
    );
    assert_eq!(
        types::VAR.to_string(),
        "4d21b016-b534-45c2-a9fb-5c16e091fd2d"
    );
}

#[test]
fn standard_layout() {
    let l = plan_disk(&standard(), &opts()).unwrap();
    let lbas: Vec<(u64, u64)> = l
        .partitions
        .iter()
        .map(|p| (p.first_lba, p.last_lba))
        .collect();
    assert_eq!(
        lbas,
        [
            (2048, 2048 + 131_072 - 1),
            (133_120, 133_120 + 1_048_576 - 1),
            (1_181_696, 1_181_696 + 1_048_576 - 1),
            (2_230_272, 2_230_272 + 204_800 - 1),
        ]
    );
    // Partitions end at 1189 MiB; the backup GPT needs 33 sectors more, so
    // the disk rounds up to 1190 MiB.
    assert_eq!(l.size, Bytes(1190 * MIB));
    assert_eq!(l.first_usable_lba, 34);
    assert_eq!(l.last_usable_lba, 1190 * 2048 - 34);
    assert_eq!(l.partitions[0].offset, Bytes(MIB));
    assert_eq!(l.partitions[1].size, Bytes(512 * MIB));
    assert_eq!(
        l.partitions[2].attributes,
        attributes::READ_ONLY | attributes::NO_AUTO
    );
    // Derived GUIDs: stable, distinct, and different for another version.
    assert_eq!(l, plan_disk(&standard(), &opts()).unwrap());
    let v2 = plan_disk(
        &standard(),
        &DiskOptions {
            image_version: "2.0.0".into(),
            ..opts()
        },
    )
    .unwrap();
    assert_ne!(l.disk_guid, v2.disk_guid);
    assert_ne!(l.partitions[1].guid, v2.partitions[1].guid);
    assert_ne!(l.partitions[1].guid, l.partitions[2].guid);
}

#[test]
fn rest_takes_whole_units_up_to_the_backup() {
    let mut parts = standard();
    parts[3].size = PartitionSize::Rest;
    let o = DiskOptions {
        size: Some(Bytes(2 << 30)),
        ..opts()
    };
    let l = plan_disk(&parts, &o).unwrap();
    let data = &l.partitions[3];
    assert_eq!(l.size, Bytes(2 << 30));
    assert_eq!(data.offset.get() % MIB, 0);
    assert_eq!(data.size.get() % MIB, 0);
    // The last MiB holds the backup GPT, so data ends one MiB before the end.
    assert_eq!(data.offset.get() + data.size.get(), (2 << 30) - MIB);
    assert!(data.last_lba <= l.last_usable_lba);
}

#[test]
fn refuses_bad_specs() {
    let check = |parts: Vec<PartitionSpec>, o: DiskOptions, want: &str| {
        let e = plan_disk(&parts, &o).unwrap_err().to_string();
        assert!(e.contains(want), "{e} (wanted {want})");
    };
    let mut p = standard();
    p[1].name = "x".repeat(37);
    check(p, opts(), "is 37 UTF-16 units long; GPT stores at most 36");
    let mut p = standard();
    p[1].name = "😀".repeat(18) + "x";
    check(p, opts(), "is 37 UTF-16 units long");
    let mut p = standard();
    p[2].name = "root-a".into();
    check(p, opts(), "partition root-a: the name is used twice");
    let mut p = standard();
    let g = Guid::derived(&[b"same"]);
    p[0].guid = Some(g);
    p[3].guid = Some(g);
    check(p, opts(), "partition data: GUID");
    let mut p = standard();
    p[1].guid = Some(Guid::derived(&[b"slate-gpt-disk", b"minimal", b"1.0.0"]));
    check(p, opts(), "already used by the disk");
    let mut p = standard();
    p[0].size = PartitionSize::Rest;
    check(p, opts(), "only the last partition");
    let mut p = standard();
    p[3].size = PartitionSize::Rest;
    check(p, opts(), "needs a disk size");
    check(
        standard(),
        DiskOptions {
            size: Some(Bytes(1189 * MIB)),
            ..opts()
        },
        "need a disk of at least 1190 MiB, the disk size is 1189 MiB",
    );
    let mut p = standard();
    p[0].type_guid = Guid::NIL;
    check(
        p,
        opts(),
        "partition esp: the type GUID must not be all zeros",
    );
    check(vec![], opts(), "at least one partition");
    check(
        standard(),
        DiskOptions {
            alignment: Bytes(1000),
            ..opts()
        },
        "alignment",
    );
    check(
        vec![spec("x", types::ESP, PartitionSize::Fixed(Bytes(u64::MAX)))],
        opts(),
        "overflows",
    );
}

#[test]
fn names_of_exactly_36_units_fit() {
    let mut p = standard();
    p[0].name = "😀".repeat(18);
    p[1].name = "n".repeat(36);
    assert!(plan_disk(&p, &opts()).is_ok());
}

/// A sparse disk file with a table for `layout`.
fn disk_with_table(layout: &DiskLayout) -> (tempfile::TempDir, std::fs::File) {
    let d = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(d.path().join("disk.img"))
        .unwrap();
    f.set_len(layout.size.get()).unwrap();
    write_gpt(&mut f, layout).unwrap();
    (d, f)
}

fn expected(l: &DiskLayout) -> Vec<PartitionInfo> {
    l.partitions
        .iter()
        .map(|p| PartitionInfo {
            number: p.number,
            name: p.name.clone(),
            type_guid: p.type_guid,
            guid: p.guid,
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            attributes: p.attributes,
        })
        .collect()
}

#[test]
fn written_table_reads_back_and_survives_a_damaged_primary() {
    let l = plan_disk(&standard(), &opts()).unwrap();
    let (_d, mut f) = disk_with_table(&l);
    let t = read_table(&mut f).unwrap();
    assert!(!t.from_backup);
    assert_eq!(t.disk_guid, l.disk_guid);
    assert_eq!(
        (t.first_usable_lba, t.last_usable_lba),
        (l.first_usable_lba, l.last_usable_lba)
    );
    assert_eq!(t.partitions, expected(&l));
    assert_eq!(t.by_name("root-b").unwrap().guid, l.partitions[2].guid);
    assert_eq!(t.by_guid(l.partitions[3].guid).unwrap().name, "data");

    // Protective MBR: one 0xEE partition from LBA 1 covering the disk.
    let mut mbr = [0u8; 512];
    f.seek(SeekFrom::Start(0)).unwrap();
    std::io::Read::read_exact(&mut f, &mut mbr).unwrap();
    assert_eq!(&mbr[510..], &[0x55, 0xAA]);
    assert_eq!(mbr[446 + 4], 0xEE);
    assert_eq!(u32::from_le_bytes(mbr[454..458].try_into().unwrap()), 1);
    let total = l.size.get() / SECTOR;
    assert_eq!(
        u64::from(u32::from_le_bytes(mbr[458..462].try_into().unwrap())),
        total - 1
    );

    // Damaged primary entry array: the header CRC still holds, the array's fails.
    f.seek(SeekFrom::Start(2 * 512 + 40)).unwrap();
    f.write_all(b"garbage").unwrap();
    let t = read_table(&mut f).unwrap();
    assert!(t.from_backup);
    assert_eq!(t.partitions, expected(&l));
    // Damaged primary header too.
    f.seek(SeekFrom::Start(512 + 60)).unwrap();
    f.write_all(b"garbage").unwrap();
    let t = read_table(&mut f).unwrap();
    assert!(t.from_backup);
    assert_eq!(t.disk_guid, l.disk_guid);
    // And the backup header: nothing valid is left.
    f.seek(SeekFrom::Start((total - 1) * 512 + 24)).unwrap();
    f.write_all(&[7u8; 8]).unwrap();
    let e = read_table(&mut f).unwrap_err().to_string();
    assert!(e.contains("primary header: header CRC mismatch"), "{e}");
    assert!(e.contains("backup header: header CRC mismatch"), "{e}");
}

/// Attribute changes: backup first, then primary; a cut between them or
/// inside the primary is finished by planning again; both copies end equal.
#[test]
fn attribute_changes_survive_a_cut_between_the_copies() {
    let l = plan_disk(&standard(), &opts()).unwrap();
    let (_d, mut f) = disk_with_table(&l);
    // Slot B committed: A gets no-auto, B loses it.
    let want = |p: &PartitionInfo| match p.name.as_str() {
        "root-a" => p.attributes | attributes::NO_AUTO,
        "root-b" => p.attributes & !attributes::NO_AUTO,
        _ => p.attributes,
    };
    let attrs = |f: &mut std::fs::File| -> Vec<u64> {
        read_table(f)
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.attributes)
            .collect()
    };
    let before = attrs(&mut f);
    let plan = plan_attributes(&mut f, &want).unwrap().unwrap();
    plan.write_backup(&mut f).unwrap();
    // Cut: the primary is still the old table, and valid.
    assert_eq!(attrs(&mut f), before);
    let plan = plan_attributes(&mut f, &want).unwrap().unwrap();
    plan.write_backup(&mut f).unwrap();
    // Cut inside the primary: its entries written, its header not.
    let total = l.size.get() / SECTOR;
    let mut entries = vec![0u8; 128 * 128];
    f.seek(SeekFrom::Start((total - 33) * SECTOR)).unwrap();
    std::io::Read::read_exact(&mut f, &mut entries).unwrap();
    f.seek(SeekFrom::Start(2 * SECTOR)).unwrap();
    f.write_all(&entries).unwrap();
    assert!(read_table(&mut f).unwrap().from_backup);
    let plan = plan_attributes(&mut f, &want).unwrap().unwrap();
    plan.write_backup(&mut f).unwrap();
    plan.write_primary(&mut f).unwrap();
    let t = read_table(&mut f).unwrap();
    assert!(!t.from_backup);
    let after: Vec<u64> = t.partitions.iter().map(|p| p.attributes).collect();
    assert_eq!(after[1], attributes::READ_ONLY | attributes::NO_AUTO);
    assert_eq!(after[2], attributes::READ_ONLY);
    assert_eq!((after[0], after[3]), (before[0], before[3]));
    assert!(plan_attributes(&mut f, &want).unwrap().is_none());
    // Everything else is as written.
    let mut e = expected(&l);
    e[1].attributes = after[1];
    e[2].attributes = after[2];
    assert_eq!(t.partitions, e);
    // A stale backup next to a valid primary is rewritten.
    let back = |p: &PartitionInfo| match p.name.as_str() {
        "root-a" => p.attributes & !attributes::NO_AUTO,
        "root-b" => p.attributes | attributes::NO_AUTO,
        _ => p.attributes,
    };
    plan_attributes(&mut f, &back)
        .unwrap()
        .unwrap()
        .write_backup(&mut f)
        .unwrap();
    assert!(plan_attributes(&mut f, &want).unwrap().is_some());
}

#[test]
fn reader_handles_a_disk_grown_after_writing() {
    // An image written to a bigger device: the backup is no longer at the end.
    let l = plan_disk(&standard(), &opts()).unwrap();
    let (_d, mut f) = disk_with_table(&l);
    f.set_len(l.size.get() + 10 * MIB).unwrap();
    let t = read_table(&mut f).unwrap();
    assert!(!t.from_backup);
    assert_eq!(t.partitions, expected(&l));
    // With the primary's entries damaged, the backup is found where the
    // (CRC-valid) primary header says.
    f.seek(SeekFrom::Start(2 * 512)).unwrap();
    f.write_all(&[1u8; 16]).unwrap();
    let t = read_table(&mut f).unwrap();
    assert!(t.from_backup);
    assert_eq!(t.partitions, expected(&l));
}

#[test]
fn reader_rejects_hostile_headers() {
    let l = plan_disk(&standard(), &opts()).unwrap();
    let (_d, mut f) = disk_with_table(&l);
    // Rewrite the primary header with a huge entry count and a valid CRC.
    let mut h = [0u8; 92];
    f.seek(SeekFrom::Start(512)).unwrap();
    std::io::Read::read_exact(&mut f, &mut h).unwrap();
    h[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
    h[16..20].fill(0);
    let crc = crc32fast::hash(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    f.seek(SeekFrom::Start(512)).unwrap();
    f.write_all(&h).unwrap();
    // Falls back to the intact backup rather than allocating 512 GiB.
    let t = read_table(&mut f).unwrap();
    assert!(t.from_backup);
    // An empty device has no table.
    let e = read_table(&mut std::io::Cursor::new(vec![0u8; 64 * 1024])).unwrap_err();
    assert!(matches!(e, GptError::Corrupt(_)));
    assert!(e.to_string().contains("no 'EFI PART' signature"), "{e}");
}

#[test]
fn write_refuses_a_file_of_the_wrong_size() {
    let l = plan_disk(&standard(), &opts()).unwrap();
    let d = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(d.path().join("x")).unwrap();
    f.set_len(l.size.get() - 512).unwrap();
    let e = write_gpt(&mut f, &l).unwrap_err().to_string();
    assert!(e.contains("but the layout is for"), "{e}");
}

fn arb_specs() -> impl Strategy<Value = (Vec<PartitionSpec>, Option<u64>, u64)> {
    let part = (1u64..=3 * MIB, "[a-z-]{1,36}", any::<u64>(), any::<bool>());
    (
        proptest::collection::vec(part, 1..8),
        proptest::option::of(0u64..40 * MIB),
        prop_oneof![Just(512u64), Just(4096), Just(MIB), Just(64 * 1024)],
        any::<bool>(),
    )
        .prop_map(|(parts, disk, align, rest)| {
            let n = parts.len();
            let specs = parts
                .into_iter()
                .enumerate()
                .map(|(i, (size, name, attrs, given))| PartitionSpec {
                    name: format!("{i}{name}").chars().take(36).collect(),
                    type_guid: types::LINUX_DATA,
                    size: if rest && i + 1 == n {
                        PartitionSize::Rest
                    } else {
                        PartitionSize::Fixed(Bytes(size))
                    },
                    guid: given.then(|| Guid::derived(&[&i.to_le_bytes(), b"given"])),
                    attributes: attrs,
                })
                .collect();
            (specs, disk.map(|d| d / 512 * 512), align)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn plans_are_valid_or_refused(
        (specs, disk, align) in arb_specs()
    ) {
        let o = DiskOptions { size: disk.map(Bytes), alignment: Bytes(align), ..opts() };
        match plan_disk(&specs, &o) {
            Ok(l) => {
                prop_assert!(l.validate().is_ok());
                prop_assert_eq!(l.partitions.len(), specs.len());
                if let Some(d) = disk {
                    prop_assert_eq!(l.size.get(), d);
                } else {
                    prop_assert_eq!(l.size.get() % align.max(512), 0);
                }
                for (p, s) in l.partitions.iter().zip(&specs) {
                    prop_assert_eq!(p.offset.get() % align, 0);
                    prop_assert_eq!(&p.name, &s.name);
                    prop_assert_eq!(p.attributes, s.attributes);
                    if let PartitionSize::Fixed(b) = s.size {
                        prop_assert!(p.size.get() >= b.get() && p.size.get() - b.get() < 512);
                    }
                    prop_assert!(p.offset.get() + p.size.get() <= l.size.get() - 33 * 512);
                }
            }
            Err(e) => {
                // Only an explicit disk size (or Rest without one) can make a plan impossible.
                let msg = e.to_string();
                prop_assert!(msg.contains("need a disk of at least") || msg.contains("needs a disk size"), "{}", msg);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn written_tables_read_back((specs, _disk, align) in arb_specs()) {
        let specs: Vec<PartitionSpec> = specs
            .into_iter()
            .map(|mut s| { if s.size == PartitionSize::Rest { s.size = PartitionSize::Fixed(Bytes(MIB)); } s })
            .collect();
        let o = DiskOptions { alignment: Bytes(align), ..opts() };
        let l = plan_disk(&specs, &o).unwrap();
        let (_d, mut f) = disk_with_table(&l);
        let t = read_table(&mut f).unwrap();
        prop_assert_eq!(t.partitions, expected(&l));
        prop_assert_eq!(t.disk_guid, l.disk_guid);
    }
}
