//! `slate qemu` against small disks built with standard tools by
//! tests/fixtures/floor-disk.gen.sh (OVMF -> systemd-boot -> Debian's cloud
//! kernel -> a busybox /init that prints SLATE-EVENT lines).
//!
//! Each boot takes ~8 s under TCG, so the tests share few boots and run in
//! parallel; they skip with a message when QEMU, OVMF or the tools the
//! generator needs are missing.

mod common;

use sha2::{Digest, Sha256};
use slate::qemu::{self, ExitReason, KillAfter, QemuOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir() -> PathBuf {
    let dir = manifest_dir().join("tests/work");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Why these tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    let tools = [
        "qemu-system-x86_64",
        "sgdisk",
        "mkfs.vfat",
        "mcopy",
        "mdir",
        "mke2fs",
        "cpio",
        "dpkg-deb",
        "apt-get",
        "flock",
    ];
    let missing: Vec<_> = tools.iter().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        return Some(format!("missing tools {missing:?}"));
    }
    if let Err(e) = qemu::firmware::Firmware::locate() {
        return Some(e.to_string());
    }
    None
}

macro_rules! require_qemu {
    () => {
        if let Some(why) = missing() {
            common::skipped("qemu_runner", &why);
            return;
        }
    };
}

/// The disk for `variant`, generated once per test run.
fn fixture(variant: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(variant) {
        return path.clone();
    }
    let dir = work_dir().join("qemu-fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{variant}.img"));
    let out = Command::new("bash")
        .arg(manifest_dir().join("tests/fixtures/floor-disk.gen.sh"))
        .arg(variant)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "floor-disk.gen.sh {variant} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    built.insert(variant.to_string(), path.clone());
    path
}

/// A private, writable copy of a fixture disk.
fn disk_copy(variant: &str) -> (tempfile::TempDir, PathBuf) {
    let src = fixture(variant);
    let dir = tempfile::tempdir_in(work_dir()).unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::copy(&src, &disk).unwrap();
    (dir, disk)
}

fn slate_qemu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slate"))
        .arg("qemu")
        .args(args)
        .output()
        .unwrap()
}

fn sha256(path: &Path) -> String {
    use std::io::Read;
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `mdir` (mtools, an independent FAT reader) listing of the ESP's loader
/// entries; the ESP starts at 1 MiB in the fixture.
fn loader_entries(disk: &Path) -> String {
    let out = Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-b")
        .arg("-i")
        .arg(format!("{}@@1M", disk.display()))
        .arg("::/loader/entries")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

#[test]
fn follows_the_guest_across_a_reboot() {
    require_qemu!();
    let (dir, disk) = disk_copy("reboot");
    let log = dir.path().join("console.log");
    let out = slate_qemu(&[
        disk.to_str().unwrap(),
        "--expect",
        "booted:A",
        "--expect",
        "booted:B",
        "--console-log",
        log.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Human-readable events on stderr, nothing on stdout without --json.
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("boot 1: booted slot=A version=1.0.0"),
        "{stderr}"
    );
    assert!(
        stderr.contains("boot 2: booted slot=B version=1.0.0"),
        "{stderr}"
    );
    assert!(stderr.contains("all 2 expectations met"), "{stderr}");
    // The raw console, escapes and all, with both boots in it.
    let log = std::fs::read(&log).unwrap();
    let log = text(&log);
    assert!(log.contains("\x1b[=3h"), "no firmware escapes in the log");
    assert_eq!(log.matches("SLATE-EVENT").count(), 2, "{log}");
    assert!(log.contains("reboot: Restarting system"), "{log}");
    // The guest's writes reached the disk: systemd-boot used up entry A's try.
    let entries = loader_entries(&disk);
    assert!(entries.contains("boot-2+0-1.conf"), "{entries}");
}

#[test]
fn snapshot_leaves_the_disk_unchanged_and_json_lines_parse() {
    require_qemu!();
    let (_dir, disk) = disk_copy("reboot");
    let before = sha256(&disk);
    // No --expect: run until the guest powers off (after its reboot).
    let out = slate_qemu(&[disk.to_str().unwrap(), "--snapshot", "--json"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("QEMU exited with status 0"), "{stderr}");
    assert_eq!(sha256(&disk), before, "--snapshot changed the disk");
    assert!(loader_entries(&disk).contains("boot-2+1-0.conf"));

    let events = json_lines(&out.stdout);
    assert_eq!(events.len(), 2, "{events:?}");
    let slots: Vec<_> = events.iter().map(|e| e["slot"].as_str().unwrap()).collect();
    assert_eq!(slots, ["A", "B"]);
    let boots: Vec<_> = events.iter().map(|e| e["boot"].as_u64().unwrap()).collect();
    assert_eq!(boots, [1, 2]);
    let times: Vec<_> = events.iter().map(|e| e["t"].as_f64().unwrap()).collect();
    assert!(times[0] > 0.0 && times[0] < times[1], "{times:?}");
    for e in &events {
        assert_eq!(e["event"], "booted");
        assert_eq!(e["version"], "1.0.0");
    }
}

#[test]
fn power_cut_after_installing() {
    require_qemu!();
    let (dir, disk) = disk_copy("install-hang");
    let bundle = dir.path().join("update.bundle");
    std::fs::write(&bundle, vec![0x5a; 1 << 20]).unwrap();
    let kill = KillAfter {
        window: Duration::from_secs(2),
        seed: Some(11),
    };
    let mut opts = QemuOptions::new(&disk);
    opts.expect = vec!["booted:A".parse().unwrap(), "installing".parse().unwrap()];
    opts.updates = vec![bundle];
    opts.kill_after = Some(kill);
    let outcome = qemu::run(&opts).unwrap();
    assert!(
        outcome.success,
        "{}\n{:#?}",
        outcome.summary(),
        outcome.last_lines
    );
    let ExitReason::Killed {
        after_installing, ..
    } = outcome.exit_reason
    else {
        panic!("not killed: {:?}", outcome.exit_reason);
    };
    // Never before the drawn point.
    assert!(after_installing >= kill.delay().as_secs_f64() - 0.001);
    assert_eq!(outcome.kill_delay, Some(kill.delay()));
    // QEMU 6.0+ (Debian 12 has 7.2) takes the -action syntax.
    let cmd = outcome.qemu_command.join(" ");
    assert!(cmd.contains(" -action watchdog=reset"), "{cmd}");
    assert!(cmd.contains("-device i6300esb"), "{cmd}");
    // The bundle is the guest's second disk, read-only.
    let installing = &outcome.events[1].event;
    assert_eq!(installing.event, "installing");
    assert_eq!(installing.fields["media"], "vdb");
    assert_eq!(installing.fields["ro"], "1");
}

#[test]
fn a_kill_before_the_expectations_fails_and_the_cli_says_why() {
    require_qemu!();
    let (_dir, disk) = disk_copy("install-hang");
    let out = slate_qemu(&[
        disk.to_str().unwrap(),
        "--snapshot",
        "--expect",
        "installing",
        "--expect",
        "installed",
        "--kill-after",
        "0.5",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("kill point: 0.500 s after the first `installing`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("before `installed` was seen (1 of 2 expectations met)"),
        "{stderr}"
    );
    // No update disk attached this time.
    assert!(stderr.contains("installing media=none"), "{stderr}");
    assert!(
        stderr.contains("last ") && stderr.contains("| SLATE-EVENT"),
        "{stderr}"
    );
}

#[test]
fn timeout_prints_the_console_tail() {
    require_qemu!();
    let (_dir, disk) = disk_copy("install-hang");
    let out = slate_qemu(&[
        disk.to_str().unwrap(),
        "--snapshot",
        "--expect",
        "committed",
        "--timeout",
        "60",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("slate: error: timed out after 60."),
        "{stderr}"
    );
    assert!(
        stderr.contains("before `committed` was seen (0 of 1 expectations met)"),
        "{stderr}"
    );
    // OVMF prints its boot manager lines within seconds (~20 s on a host
    // overloaded 5x), long before 60 s.
    let tail: Vec<_> = stderr.lines().filter(|l| l.starts_with("  | ")).collect();
    assert!(
        !tail.is_empty() && tail.len() <= qemu::TAIL_LINES,
        "{stderr}"
    );
    assert!(
        tail.iter().any(|l| l.contains("BdsDxe: loading")),
        "{stderr}"
    );
}

#[test]
fn qemu_exiting_first_fails() {
    require_qemu!();
    let (_dir, disk) = disk_copy("floor");
    let out = slate_qemu(&[
        disk.to_str().unwrap(),
        "--json",
        "--expect",
        "booted:A",
        "--expect",
        "committed",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("QEMU exited with status 0")
            && stderr.contains("before `committed` was seen (1 of 2 expectations met)"),
        "{stderr}"
    );
    // The floor /init read the version from the ext4 root it mounted; the
    // last line is the error object (docs/json.md).
    let lines = json_lines(&out.stdout);
    let (last, events) = lines.split_last().expect("no JSON on stdout");
    assert_eq!(last["error"]["exit_code"], 1, "{last}");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["version"], "1.0.0");
    assert_eq!(events[0]["boot"], 1);
}

#[test]
fn missing_disk_is_one_clear_error() {
    let out = slate_qemu(&["/nonexistent/disk.img", "--expect", "booted"]);
    let stderr = text(&out.stderr);
    // An I/O error (docs/cli.md).
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("slate: error: opening disk image /nonexistent/disk.img:"),
        "{stderr}"
    );
}

#[test]
fn missing_firmware_names_the_file_and_package() {
    let dir = tempfile::tempdir_in(work_dir()).unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, [0u8; 512]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slate"))
        .args(["qemu", disk.to_str().unwrap()])
        .env("SLATE_OVMF_DIR", dir.path())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    let code = dir.path().join("OVMF_CODE_4M.fd");
    assert!(
        stderr.contains(&format!("OVMF firmware file {} not found", code.display())),
        "{stderr}"
    );
    assert!(stderr.contains("Debian package ovmf"), "{stderr}");
}

#[test]
fn bad_expectation_is_a_usage_error() {
    let out = slate_qemu(&["disk.img", "--expect", "committed:A:B"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("EVENT:SLOT"));
}

#[test]
fn missing_qemu_names_the_package() {
    let dir = tempfile::tempdir_in(work_dir()).unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, [0u8; 512]).unwrap();
    for name in ["OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"] {
        std::fs::write(dir.path().join(name), b"firmware").unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_slate"))
        .args(["qemu", disk.to_str().unwrap()])
        .env("SLATE_OVMF_DIR", dir.path())
        .env("SLATE_QEMU", "/nonexistent/qemu-system-x86_64")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr.trim_end(),
        "slate: error: /nonexistent/qemu-system-x86_64 not found (install the Debian \
         package qemu-system-x86, or set SLATE_QEMU)"
    );
}
