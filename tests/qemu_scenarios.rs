//! Boot and update scenarios under QEMU (issues 4 and 6): images are built
//! from generated recipes, booted with OVMF, and judged by the events the
//! guest prints and by reading the disk afterwards with independent tools.
//!
//! Every scenario runs on its own copy of the disk, so the tests run in
//! parallel (two at a time on a 2-core machine).

mod images;
mod scenarios;

use images::{dissected_root, partition_range, run_ok};
use scenarios::*;
use slate::qemu::{ExitReason, QemuOutcome};
use std::path::Path;
use std::process::Command;

// ---------------------------------------------------------------- issue 4 --

/// Issue 4: recipes/counter.toml, booted twice, keeps its count on /data;
/// its health check also proves the early setup (devpts, hostname, lo).
#[test]
fn data_survives_reboots() {
    if skip("data_survives_reboots") {
        return;
    }
    let f = fixtures();
    // The example recipe from recipes/, as users see it.
    let disk = f.disk("counter-example", "data");
    let log = f.log("data");
    let first = boot(&disk, &["app", "healthy:A", "committed:A"], &[], 180, &log);
    assert_met(&first, "first boot");
    assert_eq!(app_boots(&first), [1], "{}", describe(&first));
    let second = boot(&disk, &["app", "committed:A"], &[], 180, &log);
    assert_met(&second, "second boot");
    assert_eq!(app_boots(&second), [2], "{}", describe(&second));
    // Read back by debugfs from the disk itself, not through the guest.
    let scratch = f.dir.path().join("data.part");
    assert_eq!(data_file(&disk, &scratch, "/boots").trim(), "2");
}

#[test]
fn failing_health_check_is_reported_and_not_committed() {
    if skip("failing_health_check") {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1-unhealthy", "unhealthy");
    // Wait well past the verdict: `committed` must never come.
    let o = boot(
        &disk,
        &["unhealthy:A", "committed:A"],
        &[],
        75,
        &f.log("unhealthy"),
    );
    assert!(
        !o.success && matches!(o.exit_reason, ExitReason::Timeout),
        "{}",
        describe(&o)
    );
    let bad = events(&o, "unhealthy");
    assert_eq!(bad.len(), 1, "{}", describe(&o));
    assert!(
        bad[0]["reason"]
            .as_str()
            .unwrap()
            .contains("exited with status 1")
    );
    assert!(events(&o, "committed").is_empty(), "{}", describe(&o));
    assert_eq!(o.boots(), 1, "a committed slot that is unhealthy stays up");
}

// ---------------------------------------------------------------- issue 6 --

/// Scenarios 1 and 2: v1 -> v2 into B, reboot stays on B, v3 back into A;
/// /data is kept throughout and the anti-rollback floor rises on commit.
#[test]
fn update_ping_pong_keeps_data() {
    if skip("update_ping_pong") {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", "pingpong");
    assert_eq!(dissected_root(&disk), ("root-a".into(), true));
    let log = f.log("pingpong");
    let v2 = f.bundle("v2");
    let o = boot(
        &disk,
        &[
            "committed:A",
            "installing:B",
            "installed:B",
            "booted:B",
            "healthy:B",
            "committed:B",
        ],
        &[&v2],
        300,
        &log,
    );
    assert_met(&o, "v1 -> v2");
    assert_eq!(app_boots(&o), [1, 2], "{}", describe(&o));
    let committed = events(&o, "committed");
    assert_eq!(committed.last().unwrap()["version"], "2.0.0");
    // Each boot's root was verified by dm-verity with the slot's own root
    // hash: the factory A's from v1's build, B's from v2's signed manifest.
    // systemd's reader of the Discoverable Partitions Specification takes
    // the committed slot as the root: B now.
    assert_eq!(dissected_root(&disk), ("root-b".into(), true));
    let booted = events(&o, "booted");
    assert_eq!(
        booted[0]["verity"],
        build_verity(&f.image("v1"))["root_hash_a"],
        "{}",
        describe(&o)
    );
    assert_eq!(
        booted.last().unwrap()["verity"],
        build_verity(&f.image("v2"))["root_hash_b"],
        "{}",
        describe(&o)
    );

    assert_eq!(dissected_root(&disk), ("root-b".into(), true));
    let o = boot(
        &disk,
        &["booted:B", "committed:B", "status"],
        &[],
        180,
        &log,
    );
    assert_met(&o, "reboot stays on B");
    assert_eq!(app_boots(&o), [3]);
    // `slate-agent status --json`, run in the guest by a service.
    let report = &events(&o, "status")[0]["report"];
    assert_eq!(report["booted"], "B", "{report}");
    assert_eq!(report["committed"], "B", "{report}");
    assert_eq!(report["next_boot"], "B", "{report}");
    assert_eq!(report["security_floor"], 2, "{report}");
    assert_eq!(report["update"], "idle", "{report}");
    assert_eq!(report["slots"]["B"]["version"], "2.0.0", "{report}");
    assert_eq!(report["slots"]["B"]["boot_state"], "good", "{report}");
    assert_eq!(report["slots"]["A"]["version"], "1.0.0", "{report}");
    let verity = &report["root_verity"];
    assert_eq!(verity["status"], "V", "{report}");
    assert_eq!(
        verity["root_hash"],
        build_verity(&f.image("v2"))["root_hash_b"],
        "{report}"
    );
    let table = verity["table"].as_str().unwrap_or_default();
    assert!(
        table.contains(" verity 1 ") && table.ends_with(" 1 restart_on_corruption"),
        "{report}"
    );
    // The installed slot passes an independent verifier with the signed
    // root hash; slot A still passes with v1's.
    let scratch = f.dir.path().join("pingpong.verity");
    veritysetup_verify(&disk, 3, &f.image("v2"), &scratch).unwrap();
    veritysetup_verify(&disk, 2, &f.image("v1"), &scratch).unwrap();

    let v3 = f.bundle("v3");
    let o = boot(
        &disk,
        &[
            "committed:B",
            "installing:A",
            "installed:A",
            "booted:A",
            "committed:A",
        ],
        &[&v3],
        300,
        &log,
    );
    assert_met(&o, "v2 -> v3");
    assert_eq!(dissected_root(&disk), ("root-a".into(), true));
    assert_eq!(app_boots(&o), [4, 5]);
    assert_eq!(events(&o, "committed").last().unwrap()["version"], "3.0.0");

    let state = device_state(&disk, &f.dir.path().join("pingpong.data"));
    assert_eq!(state["floor"], 3, "{state}");
    assert_eq!(state["update"]["phase"], "idle", "{state}");
    assert_eq!(state["slots"]["A"]["version"], "3.0.0", "{state}");
    assert_eq!(state["slots"]["B"]["version"], "2.0.0", "{state}");
}

/// Scenario 3: v2 whose health check fails rolls back to A, and the same
/// bundle is not installed again on the next boot.
#[test]
fn unhealthy_update_rolls_back_and_is_not_retried() {
    if skip("unhealthy_update") {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", "rollback");
    let log = f.log("rollback");
    let bad = f.bundle("v2-unhealthy");
    let o = boot(
        &disk,
        &[
            "committed:A",
            "installed:B",
            "booted:B",
            "unhealthy:B",
            "booted:A",
            "rollback",
            "committed:A",
            "skipped",
        ],
        &[&bad],
        300,
        &log,
    );
    assert_met(&o, "unhealthy v2");
    let rb = events(&o, "rollback");
    assert_eq!(rb.len(), 1);
    assert_eq!(
        (rb[0]["from"].as_str(), rb[0]["to"].as_str()),
        (Some("B"), Some("A"))
    );
    assert!(
        rb[0]["reason"]
            .as_str()
            .unwrap()
            .contains("exited with status 1"),
        "{rb:?}"
    );
    assert_eq!(events(&o, "committed").last().unwrap()["version"], "1.0.0");

    let o = boot(&disk, &["committed:A", "skipped"], &[&bad], 180, &log);
    assert_met(&o, "next boot");
    assert!(events(&o, "installing").is_empty(), "{}", describe(&o));
    assert!(
        events(&o, "skipped")[0]["reason"]
            .as_str()
            .unwrap()
            .contains("failed before")
    );
    let state = device_state(&disk, &f.dir.path().join("rollback.data"));
    assert_eq!(
        state["floor"], 1,
        "a failed update must not raise the floor: {state}"
    );
    assert_eq!(state["failed"].as_array().unwrap().len(), 1, "{state}");
}

/// Installs `variant`, whose trial boots never reach the agent, and checks
/// that the loader falls back to A after its two tries (boots: A, B, B, A)
/// and that A reports the rollback. Returns the run and its console log.
fn failing_trial(variant: &str, test: &str, timeout: u64) -> (QemuOutcome, String) {
    let f = fixtures();
    let disk = f.disk("v1", test);
    let log = f.log(test);
    let bad = f.bundle(variant);
    let o = boot(
        &disk,
        &[
            "committed:A",
            "installed:B",
            "booted:A",
            "rollback",
            "committed:A",
            // The same bundle, still attached, is not taken again.
            "skipped",
        ],
        &[&bad],
        timeout,
        &log,
    );
    assert_met(&o, variant);
    assert_eq!(o.boots(), 4, "{}", describe(&o));
    assert!(
        events(&o, "booted").iter().all(|e| e["slot"] == "A"),
        "{}",
        describe(&o)
    );
    let rb = events(&o, "rollback");
    assert_eq!(
        (rb[0]["from"].as_str(), rb[0]["to"].as_str()),
        (Some("B"), Some("A"))
    );
    assert!(
        rb[0]["reason"].as_str().unwrap().contains("2 attempt"),
        "{rb:?}"
    );
    (o, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Verified boot: one flipped bit in slot B after v2 was installed there
/// (a bad sector, or someone writing the disk) makes the trial's first read
/// of it fail dm-verity's check; the kernel restarts, every try does the
/// same, and the loader falls back to A, which commits with a `rollback`
/// naming B. `veritysetup verify` accepts B before the flip and refuses it
/// after.
#[test]
fn corrupted_trial_slot_falls_back() {
    if skip("verity_corruption") {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", "verity-corrupt");
    let log = f.log("verity-corrupt");
    let scratch = f.dir.path().join("verity-corrupt.scratch");
    let o = boot(
        &disk,
        &["committed:A", "installed:B"],
        &[&f.bundle("v2")],
        240,
        &log,
    );
    assert_met(&o, "v1 installs v2 into B");
    veritysetup_verify(&disk, 3, &f.image("v2"), &scratch).unwrap();
    // A bit of the primary superblock's label: the mount reads it first.
    let (off, _) = partition_range(&disk, 3);
    flip_bit(&disk, off + 1024 + 0x78);
    let refused = veritysetup_verify(&disk, 3, &f.image("v2"), &scratch).unwrap_err();
    assert!(refused.contains("Verification failed"), "{refused}");

    let o = boot(
        &disk,
        &["booted:A", "rollback", "committed:A"],
        &[],
        360,
        &log,
    );
    assert_met(&o, "the corrupted trial falls back");
    assert_fell_back_to_a(&o, "2.0.0");
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        console.contains("verity") && console.contains("is corrupted"),
        "the kernel never reported the corrupted block"
    );
    veritysetup_verify(&disk, 2, &f.image("v1"), &scratch).unwrap();
    assert_eq!(dissected_root(&disk), ("root-a".into(), true));
    let state = device_state(&disk, &f.dir.path().join("verity-corrupt.data"));
    assert_eq!(state["update"]["phase"], "idle", "{state}");
    assert_eq!(state["floor"], 1, "{state}");
}

/// Scenario 4: v2's kernel panics; after its tries the loader falls back.
#[test]
fn kernel_panic_falls_back_after_the_tries() {
    if skip("kernel_panic") {
        return;
    }
    let (o, console) = failing_trial("v2-panic", "panic", 360);
    assert!(console.contains("Kernel panic"), "the kernel did not panic");
    assert_eq!(app_boots(&o), [1, 2], "B never reached userspace");
}

/// Scenario 5: v2's userspace hangs before the health check; the watchdog
/// resets the machine and the loader falls back after the tries.
#[test]
fn userspace_hang_is_reset_by_the_watchdog() {
    if skip("userspace_hang") {
        return;
    }
    let (o, console) = failing_trial("v2-hang", "hang", 420);
    // B's own service ran (it counted boots) but the agent never did.
    assert_eq!(app_boots(&o), [1, 2, 3, 4], "{}", describe(&o));
    assert!(
        console.contains("slate-init: watchdog armed (25s)"),
        "B armed its watchdog"
    );
}

/// Scenario 6: tampered, wrongly signed, incompatible and rolled-back
/// bundles are rejected, and so is one without dm-verity root hashes (the
/// device boots verified roots); slot B is not touched and nothing reboots.
#[test]
fn bad_bundles_are_rejected_and_leave_the_slot_untouched() {
    if skip("bad_bundles") {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", "reject");
    let log = f.log("reject");
    let rootfs_len = std::fs::metadata(f.image("v1").join("rootfs.ext4"))
        .unwrap()
        .len();
    let before = slot_hash(&disk, 3, rootfs_len);
    let bundles = [
        f.bundle("v2-tampered"),
        f.bundle("v2-wrongkey"),
        f.bundle("v2-compat"),
        f.bundle("v2-lowsv"),
        f.bundle("v2-noverity"),
    ];
    let refs: Vec<&Path> = bundles.iter().map(|p| p.as_path()).collect();
    let o = boot(
        &disk,
        &[
            "committed:A",
            "rejected",
            "rejected",
            "rejected",
            "rejected",
            "rejected",
        ],
        &refs,
        240,
        &log,
    );
    assert_met(&o, "five bad bundles");
    let reasons: Vec<String> = events(&o, "rejected")
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    let wanted = [
        "chunk",
        "trusted key",
        "some-other-board",
        "below this device's floor",
        "this device boots verified roots only",
    ];
    for (reason, want) in reasons.iter().zip(wanted) {
        assert!(
            reason.contains(want),
            "expected {want:?} in {reason:?}\n{}",
            describe(&o)
        );
    }
    assert!(events(&o, "installing").is_empty(), "{}", describe(&o));
    assert_eq!(o.boots(), 1, "no reboot");
    assert_eq!(slot_hash(&disk, 3, rootfs_len), before, "slot B changed");
}

// Scenario 7 (power cuts during installs) lives in tests/soak.rs: random
// cuts in a row on one disk, each followed by the full device check.

/// Scenario 8: a torn boot loader state file (A's entry cut in half, a
/// garbled loader.conf) still boots a healthy slot: the committed B.
#[test]
fn torn_boot_entry_still_boots_a_healthy_slot() {
    if skip("torn_boot_entry") {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", "torn");
    let (esp_off, _) = partition_range(&disk, 1);
    let target = format!("{}@@{esp_off}", disk.display());
    let torn = f.dir.path().join("torn-entry.conf");
    std::fs::write(&torn, "title minimal 1.0.0 (slot A)\nversion 1.0.0\nlin").unwrap();
    let garbled = f.dir.path().join("garbled-loader.conf");
    std::fs::write(&garbled, b"\xff\xfe timeout \x00\x01 ???\n").unwrap();
    for (src, dst) in [
        (&torn, "::/loader/entries/slate-00000001-a.conf"),
        (&garbled, "::/loader/loader.conf"),
    ] {
        run_ok(
            Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-o", "-i", &target])
                .arg(src)
                .arg(dst),
        );
    }
    let o = boot(
        &disk,
        &["booted:B", "healthy:B", "committed:B"],
        &[],
        180,
        &f.log("torn"),
    );
    assert_met(&o, "torn entry");
}

// ------------------------------------------------------- issue 9 catalogue --

/// Issue 9: after v3's commit raised the floor to 3, a newer version with a
/// lower security level is rejected, and so is a replay of the older valid
/// v2 bundle installed by hand; nothing is written and nothing recorded as
/// failed.
#[test]
fn floor_raised_by_a_commit_rejects_replays_and_low_levels() {
    if skip("floor_and_replay") {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", "replay");
    let log = f.log("replay");
    let (v3, v2, v4) = (f.bundle("v3-replay"), f.bundle("v2"), f.bundle("v4-lowsv"));
    let o = boot(
        &disk,
        &[
            "committed:A",
            "installed:B",
            "committed:B",
            "rejected",
            "replay",
        ],
        &[&v3, &v2, &v4],
        360,
        &log,
    );
    assert_met(&o, "floor and replay");
    let rejected = events(&o, "rejected");
    assert_eq!(rejected.len(), 2, "{}", describe(&o));
    for (r, version) in rejected.iter().zip(["4.0.0", "2.0.0"]) {
        assert_eq!(r["version"], version, "{}", describe(&o));
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("below this device's floor 3"),
            "{}",
            describe(&o)
        );
    }
    assert_ne!(events(&o, "replay")[0]["rc"], 0, "{}", describe(&o));
    assert_eq!(events(&o, "installing").len(), 1, "{}", describe(&o));
    let state = device_state(&disk, &f.dir.path().join("replay.data"));
    assert_eq!(state["floor"], 3, "{state}");
    assert_eq!(state["failed"].as_array().unwrap().len(), 0, "{state}");
    assert_eq!(state["slots"]["A"]["version"], "1.0.0", "{state}");
}

/// Issue 9: an image that needs two signatures rejects a bundle with one
/// (before writing anything) and installs the same bundle signed twice.
#[test]
fn signature_threshold_is_enforced_on_the_device() {
    if skip("threshold_on_device") {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1-t2", "threshold");
    let (one, two) = (f.bundle("v2"), f.bundle("v2-twosig"));
    let o = boot(
        &disk,
        &["committed:A", "rejected", "installing:B", "committed:B"],
        &[&one, &two],
        300,
        &f.log("threshold"),
    );
    assert_met(&o, "threshold 2");
    let reason = events(&o, "rejected")[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("2 required"), "{reason}");
    assert_eq!(events(&o, "installing").len(), 1, "{}", describe(&o));
}

// --------------------------------------------------------------- issue 11 --

/// No grow events in a boot.
fn assert_no_grow(o: &QemuOutcome, ctx: &str) {
    for e in ["data_grown", "data_grow_refused"] {
        assert!(events(o, e).is_empty(), "{ctx}: {e}\n{}", describe(o));
    }
}

/// Issue 11: /data grown to fill a larger disk on first boot. The image
/// boots once at its own size (nothing to grow), is then written to a disk
/// 192 MiB larger: that boot grows the data partition and its filesystem
/// online (`data_grown`) and commits; sgdisk, e2fsck and dumpe2fs confirm
/// the result on the host, and the count /data held before survives. The
/// next boot has nothing to do.
#[test]
fn data_grows_to_fill_a_larger_disk() {
    let test = "data-grows";
    if skip(test) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", test);
    let log = f.log(test);
    let scratch = f.dir.path().join(format!("{test}.data"));
    let first = boot(&disk, &["app", "committed:A"], &[], 180, &log);
    assert_met(&first, "boot at the image's size");
    assert_no_grow(&first, "boot at the image's size");
    assert_eq!(app_boots(&first), [1], "{}", describe(&first));
    let before: Vec<_> = (1..=4).map(|n| partition_range(&disk, n)).collect();
    assert_eq!(before[3].1, 32 << 20);

    grow_disk(&disk, 192 << 20);
    let grown = boot(&disk, &["app", "data_grown", "committed:A"], &[], 180, &log);
    assert_met(&grown, "first boot on the larger disk");
    assert_eq!(app_boots(&grown), [2], "{}", describe(&grown));
    assert!(
        events(&grown, "data_grow_refused").is_empty(),
        "{}",
        describe(&grown)
    );
    let ev = events(&grown, "data_grown");
    assert_eq!(ev.len(), 1, "{}", describe(&grown));
    assert_eq!(ev[0]["partition"], "/dev/vda4", "{}", describe(&grown));
    assert_eq!(ev[0]["old_size"], 32u64 << 20, "{}", describe(&grown));
    assert_eq!(ev[0]["new_size"], 224u64 << 20, "{}", describe(&grown));

    let part = assert_data_fills_disk(&disk, &scratch, "after growing");
    assert_eq!(partition_range(&disk, 4), (before[3].0, 224 << 20));
    for n in 1..=3 {
        assert_eq!(
            partition_range(&disk, n as u32),
            before[n - 1],
            "partition {n}"
        );
    }
    // Written by the boot at the old size, read and counted on by the
    // growing boot before the agent ran.
    assert_eq!(debugfs_cat(&part, "/boots").trim(), "2");

    let again = boot(&disk, &["app", "committed:A"], &[], 180, &log);
    assert_met(&again, "second boot on the larger disk");
    assert_no_grow(&again, "second boot on the larger disk");
    assert_eq!(app_boots(&again), [3], "{}", describe(&again));
    let part = assert_data_fills_disk(&disk, &scratch, "after the next boot");
    assert_eq!(debugfs_cat(&part, "/boots").trim(), "3");
    let _ = std::fs::remove_file(&disk);
}

/// Issue 11 at a real device's scale: the image's 32 MiB /data on a disk
/// 32 GiB larger. ext4 then needs more group descriptor blocks than the
/// image has (slate's writer reserves none), so the kernel converts the
/// filesystem to `meta_bg` while growing it online; e2fsck and dumpe2fs
/// check the result.
#[test]
fn data_grows_across_group_descriptor_blocks() {
    let test = "data-grows-32g";
    if skip(test) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", test);
    grow_disk(&disk, 32 << 30);
    let o = boot(
        &disk,
        &["data_grown", "committed:A"],
        &[],
        240,
        &f.log(test),
    );
    assert_met(&o, "first boot on a 32 GiB larger disk");
    let ev = events(&o, "data_grown");
    assert_eq!(ev[0]["old_size"], 32u64 << 20, "{}", describe(&o));
    assert_eq!(
        ev[0]["new_size"],
        (32u64 << 30) + (32 << 20),
        "{}",
        describe(&o)
    );
    let scratch = f.dir.path().join(format!("{test}.data"));
    let part = assert_data_fills_disk(&disk, &scratch, test);
    let out = run_ok(Command::new("dumpe2fs").arg("-h").arg(&part));
    let text = String::from_utf8_lossy(&out.stdout);
    let features = text
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap_or_default();
    assert!(features.contains("meta_bg"), "{features}");
    let _ = std::fs::remove_file(&part);
    let _ = std::fs::remove_file(&disk);
}

/// Issue 11: when /data cannot be grown safely the device says so and boots
/// on. Here the data filesystem is unusable (its superblock magic is
/// gone, so the initramfs mounts a tmpfs on /data) on a larger disk: the
/// agent reports `data_grow_refused` naming the partition, commits the
/// boot, and the partition table is untouched (no backup at the end). On a
/// disk of the image's size the same unusable /data gives no grow event
/// (nothing to grow; the boot's `warning` reports the partition).
#[test]
fn data_grow_is_refused_when_data_is_unusable() {
    use std::os::unix::fs::FileExt;
    let test = "data-grow-refused";
    if skip(test) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", test);
    let (off, len) = partition_range(&disk, 4);
    let file = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    file.write_all_at(&[0, 0], off + 1024 + 0x38).unwrap();
    drop(file);
    let o = boot(&disk, &["warning", "committed:A"], &[], 180, &f.log(test));
    assert_met(&o, "unusable /data at the image's size");
    assert_no_grow(&o, "unusable /data at the image's size");
    grow_disk(&disk, 192 << 20);
    let o = boot(
        &disk,
        &["data_grow_refused", "committed:A"],
        &[],
        180,
        &f.log(test),
    );
    assert_met(&o, "refused growth");
    assert!(events(&o, "data_grown").is_empty(), "{}", describe(&o));
    let reason = events(&o, "data_grow_refused")[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("/data is not mounted from /dev/vda4"),
        "{reason}"
    );
    assert_eq!(partition_range(&disk, 4), (off, len));
    let mut last = [0xFFu8; 512];
    let file = std::fs::File::open(&disk).unwrap();
    let size = file.metadata().unwrap().len();
    file.read_exact_at(&mut last, size - 512).unwrap();
    assert_eq!(last, [0u8; 512], "a backup GPT was written");
    let _ = std::fs::remove_file(&disk);
}
