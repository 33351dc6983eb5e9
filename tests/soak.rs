//! Issue 9: load and soak on one disk. Update/rollback cycles in a row
//! (`SLATE_SOAK_CYCLES`, default 4; `scripts/soak.sh 100`), and random power
//! cuts in a row (`SLATE_POWER_CUTS`, default 4 split over two disks;
//! `scripts/power-cut.sh 50` runs them on one), each followed by the full
//! device checks: the state on /data (phase, floor, slot records, failed
//! list, the boot counter), the running slot's bytes, the ESP (fsck.fat) and
//! the committed boot entries.
//!
//! The images (`cyc-*` in tests/scenarios) install whatever bundle the test
//! offers on a second disk, once per offer, after the boot's verdict.

mod images;
mod scenarios;

use scenarios::*;
use slate::qemu::{ExitReason, KillAfter, QemuOptions, QemuOutcome, run};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// What the device must hold, tracked by the test.
#[derive(Debug, Clone)]
struct Model {
    /// The committed, running slot ("A" or "B").
    running: String,
    /// Image version per slot.
    versions: BTreeMap<String, String>,
    /// Boots so far (the counter service's count on /data).
    boots: u64,
    /// Versions of bundles that failed (distinct).
    failed: Vec<String>,
}

impl Model {
    fn factory() -> Self {
        Model {
            running: "A".into(),
            versions: [("A", "2.0.0"), ("B", "2.0.0")]
                .into_iter()
                .map(|(s, v)| (s.to_string(), v.to_string()))
                .collect(),
            boots: 0,
            failed: Vec::new(),
        }
    }

    fn target(&self) -> String {
        if self.running == "A" { "B" } else { "A" }.into()
    }

    /// The good variant with the version the running slot does not have.
    fn next_good(&self) -> &'static str {
        if self.versions[&self.running] == "2.0.0" {
            "cyc-3"
        } else {
            "cyc-2"
        }
    }
}

fn version_of(variant: &str) -> &'static str {
    if variant.starts_with("cyc-2") {
        "2.0.0"
    } else {
        "3.0.0"
    }
}

/// Checks the whole device against the model.
fn check_device(f: &Fixtures, disk: &Path, m: &Model, ctx: &str, scratch: &str) {
    let s = f.dir.path().join(scratch);
    let state = device_state(disk, &s.with_extension("data"));
    assert_eq!(state["update"]["phase"], "idle", "{ctx}: {state}");
    assert_eq!(
        state["floor"], 2,
        "{ctx}: failures never raise the floor: {state}"
    );
    for (slot, v) in &m.versions {
        // A slot whose last install failed records the failed version; the
        // committed slots must be exact.
        if *slot == m.running {
            assert_eq!(
                state["slots"][slot]["version"],
                v.as_str(),
                "{ctx}: {state}"
            );
        }
    }
    let failed: Vec<&str> = state["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["version"].as_str().unwrap())
        .collect();
    assert_eq!(failed.len(), m.failed.len(), "{ctx}: {state}");
    let boots = data_file(disk, &s.with_extension("data2"), "/boots");
    assert_eq!(
        boots.trim().parse::<u64>().ok(),
        Some(m.boots),
        "{ctx}: /data lost boots"
    );
    // The running slot holds exactly its image.
    let variant = if m.versions[&m.running] == "2.0.0" {
        "cyc-2"
    } else {
        "cyc-3"
    };
    let rootfs = f.image(variant).join("rootfs.ext4");
    let n = if m.running == "A" { 2 } else { 3 };
    assert_slot_holds(disk, n, &rootfs, &format!("{ctx}: its {variant} image"));
    assert_esp_clean(disk, &s.with_extension("esp"), ctx);
    let entries = esp_entries(disk);
    let running = m.running.to_lowercase();
    assert!(
        entries
            .iter()
            .any(|e| e.ends_with(&format!("-{running}.conf")) && !e.contains('+')),
        "{ctx}: the running slot has no committed entry: {entries:?}"
    );
}

fn boot_offer(
    disk: &Path,
    offer: &Path,
    expect: &[String],
    log: &Path,
    set: impl FnOnce(&mut QemuOptions),
) -> QemuOutcome {
    let mut opts = QemuOptions::new(disk);
    opts.expect = expect.iter().map(|e| e.parse().unwrap()).collect();
    opts.updates = vec![offer.to_path_buf()];
    opts.timeout = Duration::from_secs(420);
    opts.console_log = Some(log.to_path_buf());
    set(&mut opts);
    run(&opts).expect("QEMU could not run")
}

/// Advances the model's boot count by what the counter service reported.
fn count_boots(m: &mut Model, o: &QemuOutcome, ctx: &str) {
    let counts: Vec<u64> = events(o, "app")
        .iter()
        .filter_map(|e| e["boots"].as_u64())
        .collect();
    for c in &counts {
        m.boots += 1;
        assert_eq!(
            *c,
            m.boots,
            "{ctx}: the boot counter on /data skipped\n{}",
            describe(o)
        );
    }
}

fn soak(name: &str, cycles: u64) {
    if skip(name) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("cyc-2", name);
    let offer = f.dir.path().join(format!("{name}.offer"));
    let log = f.log(name);
    let mut m = Model::factory();
    let start = Instant::now();
    for i in 0..cycles {
        let good = i % 2 == 0;
        let target = m.target();
        let variant = if good {
            m.next_good().to_string()
        } else {
            format!("{}-bad", m.next_good())
        };
        f.offer(&variant, &format!("soak{i}"), &offer);
        let mut expect = vec![
            format!("committed:{}", m.running),
            format!("installed:{target}"),
            format!("booted:{target}"),
        ];
        if good {
            expect.push(format!("committed:{target}"));
        } else {
            expect.push(format!("unhealthy:{target}"));
            expect.push("rollback".into());
            expect.push(format!("committed:{}", m.running));
        }
        expect.push("offer_seen".into());
        let o = boot_offer(&disk, &offer, &expect, &log, |_| {});
        let ctx = format!("cycle {i} ({variant} into {target})");
        assert_met(&o, &ctx);
        count_boots(&mut m, &o, &ctx);
        if good {
            m.versions
                .insert(target.clone(), version_of(&variant).into());
            m.running = target;
        } else if !m.failed.contains(&variant) {
            m.failed.push(variant.clone());
        }
        check_device(f, &disk, &m, &ctx, name);
        eprintln!(
            "soak cycle {i}: {variant} -> {} ({} boots, {:.0} s so far)",
            if good { "committed" } else { "rolled back" },
            o.boots(),
            start.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "soak: {cycles} cycles on one disk in {:.0} s; /data kept {} boots; floor 2; {} failed bundles remembered",
        start.elapsed().as_secs_f64(),
        m.boots,
        m.failed.len()
    );
}

/// Update/rollback cycles in a row on one disk.
#[test]
fn update_and_rollback_cycles_on_one_disk() {
    let cycles = std::env::var("SLATE_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    soak("soak", cycles);
}

/// Where a power cut landed, from the events seen before it.
fn phase_hit(o: &QemuOutcome, target: &str) -> &'static str {
    let seen = |ev: &str| {
        o.events
            .iter()
            .any(|e| e.event.event == ev && e.event.slot.as_deref().is_none_or(|s| s == target))
    };
    if seen("committed") && events(o, "booted").iter().any(|e| e["slot"] == target) {
        "committed"
    } else if events(o, "booted").iter().any(|e| e["slot"] == target) {
        "trial boot"
    } else if seen("installed") {
        "reboot"
    } else {
        "install"
    }
}

fn power_cuts(name: &str, seeds: impl Iterator<Item = u64>) {
    if skip(name) {
        return;
    }
    let f = fixtures();
    let disk = f.disk("cyc-2", name);
    let offer = f.dir.path().join(format!("{name}.offer"));
    let log = f.log(name);
    let mut m = Model::factory();
    let mut by_phase: BTreeMap<&str, u32> = BTreeMap::new();
    let start = Instant::now();
    for seed in seeds {
        let target = m.target();
        let variant = m.next_good();
        f.offer(variant, &format!("cut{seed}"), &offer);
        let cut = boot_offer(&disk, &offer, &[], &log, |o| {
            o.kill_after = Some(KillAfter {
                window: Duration::from_secs(16),
                seed: Some(seed),
            })
        });
        let ctx = format!("power cut {seed} ({variant} into {target})");
        let ExitReason::Killed {
            after_installing, ..
        } = cut.exit_reason
        else {
            panic!("{ctx}: no power cut\n{}", describe(&cut));
        };
        let phase = phase_hit(&cut, &target);
        *by_phase.entry(phase).or_default() += 1;
        // A boot may have counted itself on /data just before the cut,
        // without its report reaching the console: at most one.
        let reported = events(&cut, "app").len() as u64;
        let scratch = f.dir.path().join(format!("{name}.count"));
        let on_disk: u64 = data_file(&disk, &scratch, "/boots").trim().parse().unwrap();
        assert!(
            (m.boots + reported..=m.boots + reported + 1).contains(&on_disk),
            "{ctx}: /data counts {on_disk} boots, the console reported {} ",
            m.boots + reported
        );
        m.boots = on_disk;
        // Re-offered under a new nonce: the bundle is still attached.
        f.offer(variant, &format!("cut{seed}r"), &offer);
        let o = boot_offer(
            &disk,
            &offer,
            &[format!("committed:{target}")],
            &log,
            |_| {},
        );
        assert_met(&o, &ctx);
        for bad in ["unhealthy", "rollback", "last_resort", "state_unreadable"] {
            assert!(events(&o, bad).is_empty(), "{ctx}: {bad}\n{}", describe(&o));
        }
        let first = events(&o, "booted")[0]["slot"]
            .as_str()
            .unwrap()
            .to_string();
        let expect_first = if phase == "install" {
            [&m.running, &target]
        } else {
            [&target, &target]
        };
        assert!(
            expect_first.contains(&&first),
            "{ctx}: after a cut in phase {phase:?} the restart booted {first}\n{}",
            describe(&o)
        );
        count_boots(&mut m, &o, &ctx);
        m.versions
            .insert(target.clone(), version_of(variant).into());
        m.running = target;
        check_device(f, &disk, &m, &ctx, name);
        eprintln!(
            "power cut {seed}: +{after_installing:.2} s after `installing`, phase {phase:?}; restart booted {first} first; device checked ({:.0} s so far)",
            start.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "power cuts on one disk by phase: {by_phase:?} in {:.0} s",
        start.elapsed().as_secs_f64()
    );
}

fn cut_count() -> u64 {
    std::env::var("SLATE_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// Random power cuts in a row on one disk (even seeds; with
/// `SLATE_POWER_CUT_ONE_DISK=1` all of them).
#[test]
fn power_cuts_in_a_row_on_one_disk() {
    let one = std::env::var("SLATE_POWER_CUT_ONE_DISK").is_ok_and(|v| v == "1");
    let n = cut_count();
    power_cuts("cuts-even", (0..n).filter(move |s| one || s % 2 == 0));
}

/// The odd seeds on a second disk, so CI runs both halves in parallel.
#[test]
fn power_cuts_in_a_row_on_a_second_disk() {
    if std::env::var("SLATE_POWER_CUT_ONE_DISK").is_ok_and(|v| v == "1") {
        return;
    }
    let n = cut_count();
    power_cuts("cuts-odd", (0..n).filter(|s| s % 2 == 1));
}
