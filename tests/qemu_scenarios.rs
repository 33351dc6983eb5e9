//! Boot and update scenarios under QEMU (issues 4 and 6): images are built
//! from generated recipes, booted with OVMF, and judged by the events the
//! guest prints and by reading the disk afterwards with independent tools.
//!
//! Every scenario runs on its own copy of the disk, so the tests run in
//! parallel (two at a time on a 2-core machine).

mod images;
mod scenarios;

use images::{partition_range, run_ok};
use scenarios::*;
use slate::qemu::{ExitReason, KillAfter, QemuOptions, QemuOutcome, run};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

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
/// bundles are rejected; slot B is not touched and nothing reboots.
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
        ],
        &refs,
        240,
        &log,
    );
    assert_met(&o, "four bad bundles");
    let reasons: Vec<String> = events(&o, "rejected")
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    let wanted = [
        "chunk",
        "trusted key",
        "some-other-board",
        "below this device's floor",
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

/// Scenario 7: the power is cut at spread-out points of the install window;
/// every restart boots a healthy, committed slot and the update completes.
///
/// `SLATE_POWER_CUT_TRIALS` (default 10) trials are split over two tests so
/// they run in parallel; trial N cuts at a point drawn from seed N.
fn power_cut_trials(half: u64) {
    if skip("power_cuts") {
        return;
    }
    let trials: u64 = std::env::var("SLATE_POWER_CUT_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let f = fixtures();
    let v2 = f.bundle("v2");
    for trial in (0..trials).filter(|t| t % 2 == half) {
        let name = format!("powercut{trial}");
        let disk = f.disk("v1", &name);
        let log = f.log(&name);
        let mut opts = QemuOptions::new(&disk);
        opts.expect = vec!["installing:B".parse().unwrap()];
        opts.updates = vec![v2.clone()];
        opts.timeout = Duration::from_secs(240);
        opts.console_log = Some(log.clone());
        // The window covers writing, verifying and the reboot into B.
        opts.kill_after = Some(KillAfter {
            window: Duration::from_secs(16),
            seed: Some(trial),
        });
        let cut = run(&opts).expect("QEMU could not run");
        assert!(
            matches!(cut.exit_reason, ExitReason::Killed { .. }),
            "trial {trial}: no power cut\n{}",
            describe(&cut)
        );
        let after = match cut.exit_reason {
            ExitReason::Killed {
                after_installing, ..
            } => after_installing,
            _ => 0.0,
        };
        let was_installed = !events(&cut, "installed").is_empty();
        eprintln!(
            "power cut trial {trial}: killed {after:.2} s after `installing`{}",
            if was_installed {
                " (after `installed`)"
            } else {
                ""
            }
        );

        let o = boot(&disk, &["committed:B"], &[&v2], 300, &log);
        assert_met(&o, &format!("trial {trial} (cut at +{after:.2} s)"));
        let first_boot = &events(&o, "booted")[0];
        // Slot B only ever boots as the complete v2: the trial entry is
        // written after the read-back check, and `installed` is printed
        // after that, so a cut between the two (seed 33 of 50 hit it) boots
        // B without the event having been seen.
        if first_boot["slot"] == "B" {
            assert_eq!(
                first_boot["version"],
                "2.0.0",
                "trial {trial}: {}",
                describe(&o)
            );
        } else {
            assert_eq!(
                first_boot["version"],
                "1.0.0",
                "trial {trial}: {}",
                describe(&o)
            );
        }
        assert!(
            events(&o, "unhealthy").is_empty(),
            "trial {trial}: {}",
            describe(&o)
        );
        assert!(
            events(&o, "rollback").is_empty(),
            "trial {trial}: {}",
            describe(&o)
        );
        // Every boot in the restart reached a verdict of healthy.
        let healthy = events(&o, "healthy").len();
        assert_eq!(
            healthy,
            events(&o, "booted").len(),
            "trial {trial}: {}",
            describe(&o)
        );
        let _ = std::fs::remove_file(&disk);
    }
}

#[test]
fn power_cuts_during_an_install_never_brick_the_device_even() {
    power_cut_trials(0);
}

#[test]
fn power_cuts_during_an_install_never_brick_the_device_odd() {
    power_cut_trials(1);
}

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
