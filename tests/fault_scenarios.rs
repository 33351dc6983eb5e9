//! Issue 9, "Never bricked, proven": a fault at every named point of the
//! agent's install, trial boot, commit and rollback paths, one scenario per
//! point, under QEMU. Needs an agent built with the `fault-injection`
//! feature (Cargo.toml: this test requires it).
//!
//! Each scenario: boot v1 with a bundle attached and the fault selected
//! (`slate qemu --fault`); the device powers off (or its agent panics)
//! exactly there. Then, read from the disk with independent tools: slot A's
//! bytes are intact, the ESP is clean (fsck.fat) and keeps A's committed
//! entry, and the state on /data is one a cut can leave. Then restart with
//! the bundle still attached and a newer one beside it: the device must
//! finish (or cleanly abandon) the update, commit, and take the further
//! update too; the final state is checked on the data partition.

mod images;
mod scenarios;

use images::{dissected_root, partition_range, run_ok, sha256_range};
use scenarios::*;
use slate::agent::fault::{FaultAction, FaultPoint, FaultSpec};
use slate::qemu::{IoError, QemuOptions, QemuOutcome, run};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn rootfs_len(f: &Fixtures, image: &str) -> u64 {
    std::fs::metadata(f.image(image).join("rootfs.ext4"))
        .unwrap()
        .len()
}

/// Slot A (partition 2) still holds v1's root filesystem, byte for byte.
fn assert_slot_a_intact(f: &Fixtures, disk: &Path, ctx: &str) {
    assert_slot_a_holds(f, disk, "v1", ctx)
}

/// Slot A (partition 2) holds `image`'s root filesystem, byte for byte.
fn assert_slot_a_holds(f: &Fixtures, disk: &Path, image: &str, ctx: &str) {
    assert_slot_holds(disk, 2, &f.image(image).join("rootfs.ext4"), ctx);
}

/// Boots with `opts` adjusted by `set`.
fn boot_with(
    disk: &Path,
    expect: &[&str],
    updates: &[&Path],
    timeout: u64,
    log: &Path,
    set: impl FnOnce(&mut QemuOptions),
) -> QemuOutcome {
    let mut opts = QemuOptions::new(disk);
    opts.expect = expect.iter().map(|e| e.parse().unwrap()).collect();
    opts.updates = updates.iter().map(|p| p.to_path_buf()).collect();
    opts.timeout = Duration::from_secs(timeout);
    opts.console_log = Some(log.to_path_buf());
    set(&mut opts);
    run(&opts).expect("QEMU could not run")
}

/// The fault run: boots until the agent powers the machine off at `point`.
fn cut_at(f: &Fixtures, disk: &Path, bundle: &Path, point: FaultPoint, test: &str) -> QemuOutcome {
    let spec = FaultSpec {
        point,
        action: FaultAction::PowerOff,
    };
    let o = boot_with(disk, &[], &[bundle], 300, &f.log(test), |o| {
        o.fault = Some(spec)
    });
    assert_powered_off_at(&o, point);
    o
}

/// The checks right after a cut at `point` on a `v1` disk, the floor not
/// raised before a commit.
fn check_after_cut(f: &Fixtures, disk: &Path, point: FaultPoint, test: &str) {
    let committed = matches!(
        point,
        FaultPoint::CommitAfterSaved | FaultPoint::DpsAfterBackup
    );
    let scratch = f.dir.path().join(test);
    let a = f.image("v1").join("rootfs.ext4");
    scenarios::check_after_cut(disk, &a, point, &scratch, if committed { 2 } else { 1 });
}

/// The restart after a cut with the good v2: v2 commits in B, then v3 (also
/// attached) installs into A and commits; nothing is unhealthy or rolled
/// back, and the final state is exactly v3/v2 with floor 3.
fn restart_completes(f: &Fixtures, disk: &Path, test: &str) {
    let (v2, v3) = (f.bundle("v2"), f.bundle("v3"));
    let o = boot_with(
        disk,
        &["committed:B", "installed:A", "booted:A", "committed:A"],
        &[&v2, &v3],
        420,
        &f.log(test),
        |_| {},
    );
    assert_met(&o, &format!("{test}: restart"));
    for bad in ["unhealthy", "rollback", "last_resort", "state_unreadable"] {
        assert!(
            events(&o, bad).is_empty(),
            "{test}: {bad}\n{}",
            describe(&o)
        );
    }
    assert_eq!(
        events(&o, "committed").last().unwrap()["version"],
        "3.0.0",
        "{}",
        describe(&o)
    );
    let state = device_state(disk, &f.dir.path().join(format!("{test}.data2")));
    assert_eq!(state["update"]["phase"], "idle", "{state}");
    assert_eq!(state["floor"], 3, "{state}");
    assert_eq!(state["slots"]["A"]["version"], "3.0.0", "{state}");
    assert_eq!(state["slots"]["B"]["version"], "2.0.0", "{state}");
    assert_eq!(state["failed"].as_array().unwrap().len(), 0, "{state}");
    assert_esp_clean(disk, &f.dir.path().join(format!("{test}.esp2")), test);
    assert_committed_entry(disk, "a", test);
    assert_committed_entry(disk, "b", test);
    // A committed last: DPS tools take it as the root, and both copies of
    // the table agree (sgdisk -v).
    assert_eq!(dissected_root(disk), ("root-a".into(), true), "{test}");
    let v = run_ok(Command::new("sgdisk").arg("-v").arg(disk));
    let v = String::from_utf8_lossy(&v.stdout);
    assert!(v.contains("No problems found"), "{test}: {v}");
}

/// One fault point with the good bundle: cut, check, restart, complete.
fn good_update_survives(point: FaultPoint) {
    let test = point.name().replace('.', "-");
    if skip(&test) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", &test);
    cut_at(f, &disk, &f.bundle("v2"), point, &test);
    check_after_cut(f, &disk, point, &test);
    restart_completes(f, &disk, &test);
    let _ = std::fs::remove_file(&disk);
}

/// One fault point with the unhealthy bundle: the restart finishes the
/// fallback (A, v1), remembers v2 as failed, skips it, and installs v3
/// into B.
fn failed_update_survives(point: FaultPoint) {
    let test = point.name().replace('.', "-");
    if skip(&test) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", &test);
    let bad = f.bundle("v2-unhealthy");
    cut_at(f, &disk, &bad, point, &test);
    check_after_cut(f, &disk, point, &test);
    let v3 = f.bundle("v3");
    let o = boot_with(
        &disk,
        &[
            "committed:A",
            "skipped",
            "installed:B",
            "booted:B",
            "committed:B",
        ],
        &[&bad, &v3],
        420,
        &f.log(&test),
        |_| {},
    );
    assert_met(&o, &format!("{test}: restart"));
    assert!(events(&o, "last_resort").is_empty(), "{}", describe(&o));
    // Slot B on the restart: at most the unhealthy verdict being finished.
    let b_boots: Vec<_> = events(&o, "booted")
        .into_iter()
        .filter(|e| e["slot"] == "B")
        .collect();
    assert!(
        b_boots.iter().all(|e| e["version"] != "1.0.0"),
        "{}",
        describe(&o)
    );
    let state = device_state(&disk, &f.dir.path().join(format!("{test}.data2")));
    assert_eq!(state["update"]["phase"], "idle", "{state}");
    assert_eq!(state["floor"], 3, "{state}");
    assert_eq!(state["slots"]["A"]["version"], "1.0.0", "{state}");
    assert_eq!(state["slots"]["B"]["version"], "3.0.0", "{state}");
    let failed = state["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{state}");
    assert_eq!(failed[0]["version"], "2.0.0", "{state}");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("exited with status 1"),
        "{state}"
    );
    assert_esp_clean(&disk, &f.dir.path().join(format!("{test}.esp2")), &test);
    assert_committed_entry(&disk, "a", &test);
    assert_committed_entry(&disk, "b", &test);
    let _ = std::fs::remove_file(&disk);
}

macro_rules! good {
    ($($name:ident => $point:ident,)*) => {$(
        #[test]
        fn $name() {
            good_update_survives(FaultPoint::$point);
        }
    )*};
}

good! {
    cut_after_verify => AfterVerify,
    cut_after_disable => AfterDisable,
    cut_after_installing => AfterInstalling,
    cut_after_first_write => AfterFirstWrite,
    cut_mid_slot => MidSlot,
    cut_after_slot_sync => AfterSlotSync,
    cut_after_boot_files => AfterBootFiles,
    cut_after_seal => AfterSeal,
    cut_after_slot_manifest => AfterSlotManifest,
    cut_after_trial_entry_before_installed => AfterTrialEntry,
    cut_after_installed => AfterInstalled,
    cut_during_trial_before_verdict => TrialBeforeVerdict,
    cut_after_mark_good_before_commit_saved => TrialAfterMarkGood,
    cut_after_commit_saved => CommitAfterSaved,
    cut_after_dps_backup => DpsAfterBackup,
}

macro_rules! failed {
    ($($name:ident => $point:ident,)*) => {$(
        #[test]
        fn $name() {
            failed_update_survives(FaultPoint::$point);
        }
    )*};
}

failed! {
    cut_after_failed_verdict_saved => TrialAfterFailedSaved,
    cut_after_mark_bad_before_reboot => TrialAfterMarkBad,
    cut_during_rollback_after_disable => RollbackAfterDisable,
    cut_during_rollback_after_saved => RollbackAfterSaved,
}

/// The abandon path: cut mid-slot, then cut again on the restart right
/// after the half-written slot left the boot order; the third boot
/// abandons, reinstalls and completes.
#[test]
fn cut_while_abandoning_an_interrupted_install() {
    let test = "abandon-after-disable";
    if skip(test) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", test);
    let v2 = f.bundle("v2");
    cut_at(f, &disk, &v2, FaultPoint::MidSlot, test);
    cut_at(f, &disk, &v2, FaultPoint::AbandonAfterDisable, test);
    check_after_cut(f, &disk, FaultPoint::AbandonAfterDisable, test);
    restart_completes(f, &disk, test);
}

/// Every named point has a scenario in this file (a new point without one
/// fails here).
#[test]
fn every_fault_point_has_a_scenario() {
    let me = include_str!("fault_scenarios.rs");
    for p in FaultPoint::ALL {
        let variant = format!("{p:?}");
        assert!(
            me.matches(&format!("=> {variant},")).count() == 1
                || me.contains(&format!("FaultPoint::{variant}, test)")),
            "fault point {p} has no scenario"
        );
    }
}

/// Issue 9: an agent crash (panic) mid-install leaves the state recoverable
/// without a reboot: a later `slate-agent install` on the same boot finishes
/// the update.
#[test]
fn agent_crash_mid_install_recovers_without_reboot() {
    let test = "crash-mid-slot";
    if skip(test) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1-retry", test);
    let v2 = f.bundle("v2");
    let spec = FaultSpec {
        point: FaultPoint::MidSlot,
        action: FaultAction::Panic,
    };
    let o = boot_with(
        &disk,
        &[
            "committed:A",
            "installing:B",
            "fault",
            "abandoned:B",
            "installing:B",
            "installed:B",
            "booted:B",
            "committed:B",
        ],
        &[&v2],
        360,
        &f.log(test),
        |o| o.fault = Some(spec),
    );
    assert_met(&o, "crash and retry");
    // The retry happened on the same boot (no reboot between the two installs).
    let inst: Vec<u32> = o
        .events
        .iter()
        .filter(|e| e.event.event == "installing")
        .map(|e| e.boot)
        .collect();
    assert_eq!(inst.len(), 2, "{}", describe(&o));
    assert_eq!(inst[0], inst[1], "{}", describe(&o));
    let state = device_state(&disk, &f.dir.path().join("crash.data"));
    assert_eq!(state["update"]["phase"], "idle", "{state}");
    assert_eq!(state["floor"], 2, "{state}");
    assert_eq!(state["failed"].as_array().unwrap().len(), 0, "{state}");
}

/// Issue 9: while an update waits for its reboot, a second install (and one
/// racing the lock) is refused without touching the pending trial entry or
/// recording the bundle as failed; the reboot then commits it.
#[test]
fn second_install_while_one_waits_for_reboot_is_refused() {
    let test = "second-install";
    if skip(test) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1-manual", test);
    let v2 = f.bundle("v2");
    let o = boot_with(
        &disk,
        &[
            "manual0",
            "manual1",
            "manual2",
            "committed:A",
            "booted:B",
            "committed:B",
        ],
        &[&v2],
        360,
        &f.log(test),
        |_| {},
    );
    assert_met(&o, "manual installs");
    let rc = |i: usize| events(&o, &format!("manual{i}"))[0]["rc"].as_i64().unwrap();
    assert_ne!(
        rc(0),
        0,
        "install while the lock is held must fail\n{}",
        describe(&o)
    );
    assert_eq!(rc(1), 0, "first install\n{}", describe(&o));
    assert_ne!(rc(2), 0, "second install must be refused\n{}", describe(&o));
    let rejected = events(&o, "rejected");
    assert!(
        rejected
            .iter()
            .any(|e| e["reason"].as_str().unwrap().contains("waits for a reboot")),
        "{}",
        describe(&o)
    );
    assert_eq!(events(&o, "installed").len(), 1, "{}", describe(&o));
    assert!(events(&o, "rollback").is_empty(), "{}", describe(&o));
    let state = device_state(&disk, &f.dir.path().join("second.data"));
    assert_eq!(state["failed"].as_array().unwrap().len(), 0, "{state}");
    assert_eq!(state["floor"], 2, "{state}");
}

/// Issue 9: the target slot returns EIO partway (QEMU blkdebug): the install
/// fails, the target has no boot entry, the running slot is untouched; once
/// the disk works again the update completes.
#[test]
fn io_error_in_the_target_slot_fails_the_install_cleanly() {
    let test = "io-error";
    if skip(test) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", test);
    let v2 = f.bundle("v2");
    let o = boot_with(
        &disk,
        &["committed:A", "installing:B", "install_failed:B"],
        &[&v2],
        240,
        &f.log(test),
        |o| {
            o.io_error = Some(IoError {
                partition: "root-b".into(),
                at: 0.05,
            })
        },
    );
    assert_met(&o, "EIO in slot B");
    assert!(events(&o, "installed").is_empty(), "{}", describe(&o));
    assert_eq!(o.boots(), 1, "{}", describe(&o));
    assert_slot_a_intact(f, &disk, test);
    assert_committed_entry(&disk, "a", test);
    let entries = esp_entries(&disk);
    assert!(
        !entries.iter().any(|e| e.contains("-b")),
        "slot B must have no entry: {entries:?}"
    );
    let state = device_state(&disk, &f.dir.path().join("io.data"));
    assert_eq!(state["update"]["phase"], "idle", "{state}");
    assert_eq!(state["failed"].as_array().unwrap().len(), 0, "{state}");
    restart_completes(f, &disk, test);
}

/// Issue 9: /data is full when the agent must record an install: the
/// install stops before writing the slot and the stored state stays the
/// last one written (consistent, floor kept).
#[test]
fn full_data_partition_stops_the_install_with_state_intact() {
    let test = "data-full";
    if skip(test) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1-datafull", test);
    let v2 = f.bundle("v2");
    let before_b = {
        let (off, _) = partition_range(&disk, 3);
        sha256_range(&disk, off, rootfs_len(f, "v1"))
    };
    // First boot: the state is written (the factory state is saved).
    let o = boot_with(&disk, &["committed:A"], &[], 180, &f.log(test), |_| {});
    assert_met(&o, "first boot");
    let o = boot_with(
        &disk,
        &["filled", "committed:A"],
        &[&v2],
        240,
        &f.log(test),
        |o| o.expect.push("installing:B".parse().unwrap()),
    );
    // `installing` is printed only after the state was saved: it must not come.
    assert!(!o.all_expectations_met(), "{}", describe(&o));
    assert_eq!(o.expectations_met, 2, "{}", describe(&o));
    let console = std::fs::read_to_string(f.log(test)).unwrap_or_default();
    assert!(
        console.contains("saving the update state on /data"),
        "the install must fail on the state write"
    );
    let (off, _) = partition_range(&disk, 3);
    assert_eq!(
        sha256_range(&disk, off, rootfs_len(f, "v1")),
        before_b,
        "slot B was written although the install was never recorded"
    );
    assert_slot_a_holds(f, &disk, "v1-datafull", test);
    assert_committed_entry(&disk, "a", test);
    let state = device_state(&disk, &f.dir.path().join("full.data"));
    assert_eq!(state["update"]["phase"], "idle", "{state}");
    assert_eq!(state["floor"], 1, "{state}");
}

/// Issue 9: an unhealthy trial with no other bootable slot does not loop:
/// the device stays up on what boots, says so, and never commits the slot.
#[test]
fn unhealthy_trial_without_fallback_stays_up_and_never_commits() {
    let test = "no-fallback";
    if skip(test) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", test);
    let bad = f.bundle("v2-unhealthy");
    cut_at(f, &disk, &bad, FaultPoint::AfterInstalled, test);
    // Both factory entries of A go: only B's trial entry is left.
    let (off, _) = partition_range(&disk, 1);
    for e in esp_entries(&disk).iter().filter(|e| e.contains("-a")) {
        run_ok(
            Command::new("mdel")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(format!("{}@@{off}", disk.display()))
                .arg(format!("::/loader/entries/{e}")),
        );
    }
    // Wait past the watchdog period (40 s): no reset, no reboot.
    let o = boot_with(
        &disk,
        &["booted:B", "unhealthy:B", "last_resort:B", "never"],
        &[],
        110,
        &f.log(test),
        |_| {},
    );
    assert_eq!(o.expectations_met, 3, "{}", describe(&o));
    assert_eq!(o.boots(), 1, "no reboot loop\n{}", describe(&o));
    assert!(events(&o, "committed").is_empty(), "{}", describe(&o));
    // Booted again by hand: the bad slot is still never committed.
    let o = boot_with(
        &disk,
        &["booted:B", "last_resort:B"],
        &[],
        120,
        &f.log(test),
        |_| {},
    );
    assert_met(&o, "second boot of the bad slot");
    assert!(events(&o, "committed").is_empty(), "{}", describe(&o));
    let state = device_state(&disk, &f.dir.path().join("nofallback.data"));
    assert_eq!(state["floor"], 1, "{state}");
    assert_ne!(state["update"]["phase"], "installed", "{state}");
    let entries = esp_entries(&disk);
    assert!(
        entries.iter().all(|e| e.contains('+')),
        "the bad slot was committed: {entries:?}"
    );
    let _ = PathBuf::new();
}

/// Issue 9: the bundle changes between its verification and the write (a
/// byte flipped in the file after the first pass): the write pass finds it,
/// the install fails, slot B gets no entry, slot A and the state are kept.
#[test]
fn bundle_changed_between_verify_and_write_is_caught() {
    let test = "changed-source";
    if skip(test) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("cyc-2", test);
    let offer = f.dir.path().join(format!("{test}.offer"));
    f.offer("cyc-3", "changed", &offer);
    let o = boot_with(
        &disk,
        &[
            "committed:A",
            "fault",
            "installing:B",
            "install_failed:B",
            "offer",
        ],
        &[&offer],
        240,
        &f.log(test),
        |o| o.fault = Some("install.after_verify:flip".parse().unwrap()),
    );
    assert_met(&o, "changed source");
    assert_ne!(events(&o, "offer")[0]["rc"], 0, "{}", describe(&o));
    let reason = events(&o, "install_failed")[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("chunk") || reason.contains("sha256"),
        "{reason}"
    );
    let entries = esp_entries(&disk);
    assert!(!entries.iter().any(|e| e.contains("-b")), "{entries:?}");
    let state = device_state(&disk, &f.dir.path().join("changed.data"));
    assert_eq!(state["update"]["phase"], "idle", "{state}");
    assert_eq!(state["slots"]["A"]["version"], "2.0.0", "{state}");
    let rootfs = f.image("cyc-2").join("rootfs.ext4");
    let len = std::fs::metadata(&rootfs).unwrap().len();
    let (off, _) = partition_range(&disk, 2);
    assert_eq!(sha256_range(&disk, off, len), images::sha256sum(&rootfs));
}

/// Issue 11: the power fails while /data grows on a larger disk, right
/// after the new backup GPT was synced at the end of the disk and before the
/// primary was rewritten. The primary still describes the image's size and
/// /data is intact; the next boot redoes the table from it, grows the
/// filesystem and commits, and the host finds the grown disk clean.
fn cut_while_growing(f: &Fixtures, disk: &Path, point: FaultPoint, test: &str) {
    let (off, len) = partition_range(disk, 4);
    grow_disk(disk, 192 << 20);
    let spec = FaultSpec {
        point,
        action: FaultAction::PowerOff,
    };
    let o = boot_with(disk, &[], &[], 240, &f.log(test), |o| o.fault = Some(spec));
    let fired: Vec<_> = events(&o, "fault")
        .iter()
        .map(|e| e["point"].clone())
        .collect();
    assert_eq!(fired, [point.name()], "{}", describe(&o));
    assert!(events(&o, "data_grown").is_empty(), "{}", describe(&o));
    // The primary table (what sgdisk reads first) still has the old /data,
    // and the filesystem on it is consistent.
    assert_eq!(
        partition_range(disk, 4),
        (off, len),
        "{test}: primary changed"
    );
    let scratch = f.dir.path().join(format!("{test}.data"));
    assert!(!data_file(disk, &scratch, "/boots").trim().is_empty());

    let o = boot_with(
        disk,
        &["data_grown", "committed:A"],
        &[],
        240,
        &f.log(test),
        |_| {},
    );
    assert_met(&o, &format!("{test}: restart"));
    let ev = events(&o, "data_grown");
    assert_eq!(ev[0]["old_size"], len, "{}", describe(&o));
    assert_eq!(ev[0]["new_size"], len + (192 << 20), "{}", describe(&o));
    assert!(
        events(&o, "data_grow_refused").is_empty(),
        "{}",
        describe(&o)
    );
    assert_data_fills_disk(disk, &scratch, test);
    assert_committed_entry(disk, "a", test);
}

#[test]
fn cut_while_growing_data_after_the_backup_gpt() {
    let test = "grow-after-backup";
    if skip(test) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("v1", test);
    cut_while_growing(f, &disk, FaultPoint::GrowAfterBackup, test);
    let _ = std::fs::remove_file(&disk);
}
