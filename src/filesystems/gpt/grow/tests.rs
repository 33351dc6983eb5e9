//! The grow math and the write order, on sparse files (sgdisk checks the
//! same on a whole disk in tests/gpt_disk.rs).

use super::super::{
    DiskLayout, DiskOptions, PartitionSize, PartitionSpec, SECTOR, plan_disk, read_table, types,
    write_gpt,
};
use super::*;
use crate::units::{Bytes, MIB};
use std::os::unix::fs::FileExt;

fn layout() -> DiskLayout {
    let part = |name: &str, t: Guid, mib: u64| PartitionSpec {
        name: name.into(),
        type_guid: t,
        size: PartitionSize::Fixed(Bytes(mib * MIB)),
        guid: None,
        attributes: 0,
    };
    let specs = [
        part("esp", types::ESP, 64),
        part("root-a", types::ROOT_X86_64, 512),
        part("root-b", types::ROOT_X86_64, 512),
        part("data", types::LINUX_DATA, 100),
    ];
    let opts = DiskOptions {
        image_name: "grow".into(),
        image_version: "1.0.0".into(),
        ..DiskOptions::default()
    };
    plan_disk(&specs, &opts).unwrap()
}

/// A written image (1190 MiB) on a sparse file, then grown by `extra` bytes.
fn grown_disk(extra: u64) -> (tempfile::TempDir, File, DiskLayout) {
    let l = layout();
    let d = tempfile::tempdir().unwrap();
    let mut f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(d.path().join("disk.img"))
        .unwrap();
    f.set_len(l.size.get()).unwrap();
    write_gpt(&mut f, &l).unwrap();
    f.set_len(l.size.get() + extra).unwrap();
    (d, f, l)
}

fn data(l: &DiskLayout) -> Guid {
    l.partitions[3].guid
}

fn sector(f: &File, lba: u64) -> Vec<u8> {
    let mut b = vec![0u8; SECTOR as usize];
    f.read_exact_at(&mut b, lba * SECTOR).unwrap();
    b
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// The old image ends at 1190 MiB: the disk grows by 192 MiB and 7 sectors.
const EXTRA: u64 = 192 * MIB + 7 * SECTOR;
const OLD_TOTAL: u64 = 1190 * 2048;
const NEW_TOTAL: u64 = OLD_TOTAL + 192 * 2048 + 7;

/// The fully grown table, checked field by field from both copies.
fn assert_grown(f: &mut File, l: &DiskLayout) {
    let t = read_table(f).unwrap();
    assert!(!t.from_backup);
    assert_eq!(t.last_usable_lba, NEW_TOTAL - 34);
    let p = &t.partitions[3];
    // Whole MiB up to the last usable sector: 292 MiB (100 + 192).
    assert_eq!(
        (p.first_lba, p.last_lba),
        (2_230_272, 2_230_272 + 292 * 2048 - 1)
    );
    let others: Vec<_> = t.partitions[..3].iter().collect();
    let planned: Vec<_> = l.partitions[..3]
        .iter()
        .map(|p| (p.first_lba, p.last_lba))
        .collect();
    assert_eq!(
        others
            .iter()
            .map(|p| (p.first_lba, p.last_lba))
            .collect::<Vec<_>>(),
        planned
    );
    assert_eq!(
        t.partitions.iter().map(|p| p.guid).collect::<Vec<_>>(),
        l.partitions.iter().map(|p| p.guid).collect::<Vec<_>>()
    );
    let primary = sector(f, 1);
    assert_eq!(u64_at(&primary, 32), NEW_TOTAL - 1);
    let backup = sector(f, NEW_TOTAL - 1);
    assert_eq!(&backup[..8], b"EFI PART");
    assert_eq!(u64_at(&backup, 24), NEW_TOTAL - 1);
    assert_eq!(u64_at(&backup, 32), 1);
    assert_eq!(u64_at(&backup, 72), NEW_TOTAL - 33);
    // The backup alone gives the same table.
    let mut no_primary = primary.clone();
    no_primary[..8].copy_from_slice(b"NOT PART");
    f.write_all_at(&no_primary, SECTOR).unwrap();
    let b = read_table(f).unwrap();
    f.write_all_at(&primary, SECTOR).unwrap();
    assert!(b.from_backup);
    assert_eq!(b.partitions, t.partitions);
    assert_eq!(b.last_usable_lba, t.last_usable_lba);
    // The protective MBR covers the grown disk; the old backup header is gone.
    let mbr = sector(f, 0);
    assert_eq!(
        u32::from_le_bytes(mbr[458..462].try_into().unwrap()),
        (NEW_TOTAL - 1) as u32
    );
    assert_eq!(sector(f, OLD_TOTAL - 1), vec![0u8; 512]);
}

#[test]
fn grows_the_last_partition_in_whole_mib_to_the_new_end() {
    let (_d, mut f, l) = grown_disk(EXTRA);
    let plan = plan_grow(&mut f, data(&l), MIB).unwrap().unwrap();
    assert!(!plan.restores_primary());
    assert_eq!(plan.partition().number, 4);
    assert_eq!(plan.old_size(), 100 * MIB);
    assert_eq!(plan.new_size(), 292 * MIB);
    plan.write_backup(&mut f).unwrap();
    plan.write_primary(&mut f).unwrap();
    assert_grown(&mut f, &l);
    // Nothing is left to do.
    assert!(plan_grow(&mut f, data(&l), MIB).unwrap().is_none());
}

#[test]
fn a_disk_of_the_image_size_needs_nothing() {
    let (_d, mut f, l) = grown_disk(0);
    assert!(plan_grow(&mut f, data(&l), MIB).unwrap().is_none());
}

#[test]
fn growth_below_one_unit_moves_only_the_backup() {
    // The image leaves 2014 sectors after /data: 20 more make no whole MiB.
    let (_d, mut f, l) = grown_disk(20 * SECTOR);
    let plan = plan_grow(&mut f, data(&l), MIB).unwrap().unwrap();
    assert_eq!(plan.new_size(), plan.old_size());
    plan.write_backup(&mut f).unwrap();
    plan.write_primary(&mut f).unwrap();
    let t = read_table(&mut f).unwrap();
    assert!(!t.from_backup);
    assert_eq!(t.last_usable_lba, OLD_TOTAL + 20 - 34);
    assert_eq!(t.partitions[3].last_lba, l.partitions[3].last_lba);
    // The old backup sector now lies in the new backup's entry array, which
    // must not have been zeroed over: the backup alone still reads.
    f.write_all_at(b"NOT PART", SECTOR).unwrap();
    let b = read_table(&mut f).unwrap();
    assert!(b.from_backup);
    assert_eq!(b.partitions, t.partitions);
    f.write_all_at(b"EFI PART", SECTOR).unwrap();
    assert!(plan_grow(&mut f, data(&l), MIB).unwrap().is_none());
}

#[test]
fn cut_after_the_backup_is_redone_from_the_intact_primary() {
    let (_d, mut f, l) = grown_disk(EXTRA);
    let plan = plan_grow(&mut f, data(&l), MIB).unwrap().unwrap();
    plan.write_backup(&mut f).unwrap();
    // The primary still rules, with the old geometry.
    let t = read_table(&mut f).unwrap();
    assert!(!t.from_backup);
    assert_eq!(t.partitions[3].last_lba, l.partitions[3].last_lba);
    let again = plan_grow(&mut f, data(&l), MIB).unwrap().unwrap();
    assert!(!again.restores_primary());
    assert_eq!(again.partition(), plan.partition());
    again.write_backup(&mut f).unwrap();
    again.write_primary(&mut f).unwrap();
    assert_grown(&mut f, &l);
}

/// A cut inside `write_primary` that left one half of the primary new and
/// the other old: the backup at the end is the table, the primary is
/// restored from it.
fn torn_primary(keep_old: std::ops::Range<u64>) {
    let (_d, mut f, l) = grown_disk(EXTRA);
    let plan = plan_grow(&mut f, data(&l), MIB).unwrap().unwrap();
    plan.write_backup(&mut f).unwrap();
    let len = ((keep_old.end - keep_old.start) * SECTOR) as usize;
    let mut old = vec![0u8; len];
    f.read_exact_at(&mut old, keep_old.start * SECTOR).unwrap();
    plan.write_primary(&mut f).unwrap();
    f.write_all_at(&old, keep_old.start * SECTOR).unwrap();
    let t = read_table(&mut f).unwrap();
    assert!(t.from_backup, "the torn primary must fail its CRC");
    let repair = plan_grow(&mut f, data(&l), MIB).unwrap().unwrap();
    assert!(repair.restores_primary());
    assert_eq!(repair.new_size(), 292 * MIB);
    repair.write_backup(&mut f).unwrap();
    repair.write_primary(&mut f).unwrap();
    assert_grown(&mut f, &l);
    assert!(plan_grow(&mut f, data(&l), MIB).unwrap().is_none());
}

#[test]
fn torn_primary_with_old_header_is_restored_from_the_backup() {
    torn_primary(1..2);
}

#[test]
fn torn_primary_with_old_entries_is_restored_from_the_backup() {
    torn_primary(2..34);
}

#[test]
fn refuses_what_is_not_an_interrupted_grow() {
    // Not the last partition.
    let (_d, mut f, l) = grown_disk(EXTRA);
    let e = plan_grow(&mut f, l.partitions[1].guid, MIB).unwrap_err();
    assert!(
        matches!(
            e,
            GrowError::NotLast {
                number: 2,
                after: 3
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("partition 2 is not the last"), "{e}");
    // No such partition.
    let nil = Guid::from_u128(7);
    let e = plan_grow(&mut f, nil, MIB).unwrap_err();
    assert!(matches!(e, GrowError::NoPartition(_)), "{e}");
    // A damaged primary with the backup still at the old end.
    f.write_all_at(&[1u8; 16], 2 * SECTOR).unwrap();
    let e = plan_grow(&mut f, data(&l), MIB).unwrap_err();
    assert!(matches!(e, GrowError::DamagedPrimary), "{e}");
    // No valid table at all.
    f.write_all_at(&[1u8; 16], (OLD_TOTAL - 33) * SECTOR)
        .unwrap();
    let e = plan_grow(&mut f, data(&l), MIB).unwrap_err();
    assert!(matches!(e, GrowError::Gpt(GptError::Corrupt(_))), "{e}");
    // A disk smaller than the image: the table does not fit.
    let (_d, mut f, l) = grown_disk(0);
    f.set_len(l.size.get() - MIB).unwrap();
    assert!(plan_grow(&mut f, data(&l), MIB).is_err());
}

#[test]
fn works_in_memory_too() {
    let (_d, f, l) = grown_disk(EXTRA);
    let mut bytes = vec![0u8; (l.size.get() + EXTRA) as usize];
    // Only the tables matter: copy the first and the old last 1 MiB.
    f.read_exact_at(&mut bytes[..MIB as usize], 0).unwrap();
    let tail = (l.size.get() - MIB) as usize;
    f.read_exact_at(&mut bytes[tail..tail + MIB as usize], tail as u64)
        .unwrap();
    let mut dev = io::Cursor::new(bytes);
    let plan = plan_grow(&mut dev, data(&l), MIB).unwrap().unwrap();
    plan.write_backup(&mut dev).unwrap();
    plan.write_primary(&mut dev).unwrap();
    let t = read_table(&mut dev).unwrap();
    assert_eq!(t.partitions[3].last_lba, 2_230_272 + 292 * 2048 - 1);
    assert!(plan_grow(&mut dev, data(&l), MIB).unwrap().is_none());
}
