//! Shared by the QEMU scenario tests: image variants and bundles built once
//! per test binary, booting with expectations, and reading the device state
//! back from the disk with independent tools (debugfs, sha256 of ranges).
#![allow(dead_code)]

use super::images;
use images::{
    Recipe, bundle, copy_disk, extract_partition, keygen, partition_range, run_ok, sha256_range,
};
#[allow(unused_imports)]
pub use images::{build_verity, flip_bit, veritysetup_verify};
use slate::qemu::{QemuOptions, QemuOutcome, run};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Images and bundles shared by the scenarios, built on first use.
pub struct Fixtures {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub public: PathBuf,
    pub other_key: PathBuf,
    pub other_public: PathBuf,
    pub built: Mutex<HashMap<String, PathBuf>>,
}

pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("slate-scenarios.")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let (key, public) = keygen(dir.path(), "dev");
        let (other_key, other_public) = keygen(dir.path(), "other");
        Fixtures {
            dir,
            key,
            public,
            other_key,
            other_public,
            built: Mutex::new(HashMap::new()),
        }
    })
}

impl Fixtures {
    /// The build directory of a named image variant.
    pub fn image(&self, name: &str) -> PathBuf {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = built.get(name) {
            return p.clone();
        }
        if name == "counter-example" {
            // recipes/counter.toml itself, trusting this run's key.
            let text = std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/recipes/counter.toml"
            ))
            .unwrap();
            let keys = format!("public_keys = [{:?}]", self.public.display().to_string());
            let text = text.replace(r#"public_keys = ["../keys/dev.pub"]"#, &keys);
            assert!(
                text.contains(&keys),
                "recipes/counter.toml: no public_keys line"
            );
            let out = images::build_toml(self.dir.path(), name, &text);
            built.insert(name.to_string(), out.clone());
            return out;
        }
        let base = |v: &str| Recipe::counter(v, &self.public);
        let recipe = match name {
            "v1" => base("1.0.0"),
            "v1-unhealthy" => Recipe {
                health: "echo checking; exit 1".into(),
                ..base("1.0.0")
            },
            "v2" => Recipe {
                security_version: 2,
                ..base("2.0.0")
            },
            "v3" => Recipe {
                security_version: 3,
                ..base("3.0.0")
            },
            "v2-unhealthy" => Recipe {
                health: "exit 1".into(),
                ..base("2.0.0")
            },
            // No init in the initramfs and no root= for the kernel: it panics.
            "v2-panic" => Recipe {
                cmdline: "console=ttyS0 quiet panic=2 rdinit=/nonexistent".into(),
                ..base("2.0.0")
            },
            // A service that never finishes before the agent could run.
            "v2-hang" => Recipe {
                watchdog: "25s".into(),
                extra: format!(
                    "{}\n[[service]]\nname = \"hang\"\nexec = \"sleep 100000\"\nwait = true\n",
                    images::COUNTER_SERVICE
                ),
                ..base("2.0.0")
            },
            // Retries an install by hand once the boot agent is gone (crashed).
            "v1-retry" => Recipe {
                extra: format!("{}{}", images::COUNTER_SERVICE, retry_service()),
                ..base("1.0.0")
            },
            // Installs by hand before the boot agent runs: once while the
            // lock is held, once for real, once more while it waits.
            "v1-manual" => Recipe {
                extra: format!("{}{}", images::COUNTER_SERVICE, manual_service()),
                ..base("1.0.0")
            },
            // Fills /data from the second boot on, before the agent runs.
            "v1-datafull" => Recipe {
                extra: format!("{}{}", images::COUNTER_SERVICE, fill_service()),
                ..base("1.0.0")
            },
            // Soak and power-cut cycles: installs whatever the offer disk holds.
            "cyc-2" | "cyc-3" | "cyc-2-bad" | "cyc-3-bad" => {
                let bad = name.ends_with("-bad");
                Recipe {
                    security_version: if bad { 3 } else { 2 },
                    health: if bad {
                        "exit 1".into()
                    } else {
                        base("x").health
                    },
                    extra: format!("{}{}", images::COUNTER_SERVICE, offer_service()),
                    ..base(if name.starts_with("cyc-2") {
                        "2.0.0"
                    } else {
                        "3.0.0"
                    })
                }
            }
            // Trusts two keys and needs both signatures.
            "v1-t2" => Recipe {
                keys: vec![self.public.clone(), self.other_public.clone()],
                threshold: 2,
                ..base("1.0.0")
            },
            // v3 that, once committed, replays an older valid bundle by hand.
            "v3-replay" => Recipe {
                security_version: 3,
                extra: format!("{}{}", images::COUNTER_SERVICE, replay_service()),
                ..base("3.0.0")
            },
            // A newer version whose security level is below v3's floor.
            "v4-lowsv" => Recipe {
                security_version: 2,
                ..base("4.0.0")
            },
            "v2-compat" => Recipe {
                compatible: "some-other-board".into(),
                ..base("2.0.0")
            },
            "v2-lowsv" => Recipe {
                security_version: 0,
                ..base("2.0.0")
            },
            other => panic!("unknown fixture {other}"),
        };
        let out = images::build(self.dir.path(), name, &recipe);
        built.insert(name.to_string(), out.clone());
        out
    }

    /// A bundle of a variant signed with the trusted key.
    pub fn bundle(&self, name: &str) -> PathBuf {
        let key = format!("bundle:{name}");
        if let Some(p) = self
            .built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return p.clone();
        }
        let image = self.image(match name {
            "v2-wrongkey" | "v2-tampered" | "v2-twosig" | "v2-noverity" => "v2",
            n => n,
        });
        let out = self.dir.path().join(format!("{name}.bundle"));
        match name {
            "v2-wrongkey" => {
                bundle(&image, &self.other_key, &out);
            }
            "v2-twosig" => {
                run_ok(
                    images::slate()
                        .arg("bundle")
                        .arg(&image)
                        .arg("--key")
                        .arg(&self.key)
                        .arg("--key")
                        .arg(&self.other_key)
                        .arg("-o")
                        .arg(&out),
                );
            }
            // v2 as a build without dm-verity parameters would bundle it.
            "v2-noverity" => {
                let dir = self.dir.path().join("v2-noverity");
                std::fs::create_dir_all(&dir).unwrap();
                for e in std::fs::read_dir(&image).unwrap() {
                    let e = e.unwrap();
                    std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
                }
                let mpath = dir.join("manifest.json");
                let mut m: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
                let rootfs = m["artifacts"][0].as_object_mut().unwrap();
                assert!(rootfs.remove("verity").is_some(), "v2 has no verity");
                std::fs::write(&mpath, serde_json::to_string_pretty(&m).unwrap()).unwrap();
                bundle(&dir, &self.key, &out);
            }
            "v2-tampered" => {
                let good = self.bundle("v2");
                std::fs::copy(&good, &out).unwrap();
                // Flip one bit well inside the payload (the rootfs chunks).
                let len = std::fs::metadata(&out).unwrap().len();
                flip_bit(&out, len / 2);
            }
            _ => {
                bundle(&image, &self.key, &out);
            }
        }
        self.built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, out.clone());
        out
    }

    /// Writes an offer disk at `out` holding the bundle of `name`, offered
    /// under `nonce` (see `offer_service`); rewrites only the first sector
    /// when `out` already holds that bundle.
    pub fn offer(&self, name: &str, nonce: &str, out: &Path) {
        use std::io::{Seek, SeekFrom, Write};
        let bundle = self.bundle(name);
        let bytes = std::fs::read(&bundle).unwrap();
        let mut head = format!("SLATE-OFFER {} {nonce}\n", bytes.len()).into_bytes();
        head.resize(4096, 0);
        let same = std::fs::read(out).ok().is_some_and(|d| {
            d.len() >= 4096 + bytes.len() && d[4096..4096 + bytes.len()] == bytes[..]
        });
        if !same {
            let mut disk = head.clone();
            disk.extend_from_slice(&bytes);
            disk.resize(disk.len().next_multiple_of(512), 0);
            std::fs::write(out, disk).unwrap();
        } else {
            let mut f = std::fs::OpenOptions::new().write(true).open(out).unwrap();
            f.seek(SeekFrom::Start(0)).unwrap();
            f.write_all(&head).unwrap();
        }
    }

    /// A private copy of a variant's disk.
    pub fn disk(&self, name: &str, test: &str) -> PathBuf {
        let src = self.image(name).join("disk.img");
        copy_disk(&src, &self.dir.path().join(format!("{test}.disk.img")))
    }

    pub fn log(&self, test: &str) -> PathBuf {
        self.dir.path().join(format!("{test}.console.log"))
    }
}

/// The lines a service script starts with to act only once the boot has
/// its verdict and the agent has exited.
const AFTER_VERDICT: &str = "\
for i in $(seq 120); do [ -e /run/slate/committed ] && break; sleep 1; done
for i in $(seq 120); do pidof slate-agent >/dev/null || break; sleep 1; done
";

/// A script at `/usr/bin/<name>` (TOML basic-string escapes) and the
/// service that runs it, with `policy` (`restart = "never"`, `wait = true`).
fn script_service(name: &str, script: &str, policy: &str) -> String {
    format!(
        "\n[[rootfs.files]]\ndst = \"/usr/bin/{name}\"\nmode = \"0755\"\n\
         content = \"\"\"#!/bin/sh\n{script}\"\"\"\n\n\
         [[service]]\nname = \"{name}\"\nexec = \"/usr/bin/{name}\"\n{policy}\n"
    )
}

/// Installs the bundle on an offer disk (`SLATE-OFFER <len> <nonce>` in the
/// first line, the bundle at 4096) by hand once the boot has its verdict,
/// once per nonce (remembered on /data); the agent's own media scan does not
/// see it (no bundle magic at offset 0).
fn offer_service() -> String {
    script_service(
        "take-offer",
        &format!(
            "{AFTER_VERDICT}{}",
            r#"[ -e /dev/vdb ] || exit 0
read -r magic len nonce < /dev/vdb
[ "$magic" = SLATE-OFFER ] || exit 0
if [ "$(cat /data/offer.last 2>/dev/null)" = "$nonce" ]; then
    echo "SLATE-EVENT {\\"event\\":\\"offer_seen\\",\\"nonce\\":\\"$nonce\\"}"
    exit 0
fi
echo "$nonce" > /data/offer.tmp && sync && mv /data/offer.tmp /data/offer.last && sync
dd if=/dev/vdb bs=4096 skip=1 2>/dev/null | head -c "$len" > /run/offer.slate
slate-agent install /run/offer.slate
echo "SLATE-EVENT {\\"event\\":\\"offer\\",\\"rc\\":$?}"
"#
        ),
        r#"restart = "never""#,
    )
}

fn replay_service() -> String {
    script_service(
        "replay",
        &format!(
            "{AFTER_VERDICT}{}",
            r#"slate-agent install --no-reboot /dev/vdc
echo "SLATE-EVENT {\\"event\\":\\"replay\\",\\"rc\\":$?}"
"#
        ),
        r#"restart = "never""#,
    )
}

fn retry_service() -> String {
    script_service(
        "retry-install",
        &format!(
            "{AFTER_VERDICT}{}",
            r#"slate-agent install /dev/vdb
"#
        ),
        r#"restart = "never""#,
    )
}

fn manual_service() -> String {
    script_service(
        "manual-install",
        r#"mkdir -p /run/slate
flock /run/slate/update.lock slate-agent install --no-reboot /dev/vdb
echo "SLATE-EVENT {\\"event\\":\\"manual0\\",\\"rc\\":$?}"
slate-agent install --no-reboot /dev/vdb
echo "SLATE-EVENT {\\"event\\":\\"manual1\\",\\"rc\\":$?}"
slate-agent install --no-reboot /dev/vdb
echo "SLATE-EVENT {\\"event\\":\\"manual2\\",\\"rc\\":$?}"
"#,
        r#"wait = true"#,
    ) + &script_service(
        "reboot-after-commit",
        &format!(
            "{AFTER_VERDICT}{}",
            r#"reboot
"#
        ),
        r#"restart = "never""#,
    )
}

fn fill_service() -> String {
    script_service(
        "fill-data",
        r#"[ "$(cat /data/boots)" -ge 2 ] || exit 0
dd if=/dev/zero of=/data/fill bs=1M 2>/dev/null
sync
echo "SLATE-EVENT {\\"event\\":\\"filled\\"}"
"#,
        r#"wait = true"#,
    )
}

/// Boots `disk`, waiting for `expect` in order.
pub fn boot(
    disk: &Path,
    expect: &[&str],
    updates: &[&Path],
    timeout: u64,
    log: &Path,
) -> QemuOutcome {
    let mut opts = QemuOptions::new(disk);
    opts.expect = expect.iter().map(|e| e.parse().unwrap()).collect();
    opts.updates = updates.iter().map(|p| p.to_path_buf()).collect();
    opts.timeout = Duration::from_secs(timeout);
    opts.console_log = Some(log.to_path_buf());
    run(&opts).expect("QEMU could not run")
}

pub fn describe(o: &QemuOutcome) -> String {
    let events: Vec<String> = o
        .events
        .iter()
        .map(|e| {
            format!(
                "  [{:7.2}s boot {}] {}",
                e.t,
                e.boot,
                serde_json::Value::Object(e.event.fields.clone())
            )
        })
        .collect();
    format!(
        "exit: {:?}, expectations met {}/{}\nevents:\n{}\nlast console lines:\n  {}",
        o.exit_reason,
        o.expectations_met,
        o.expectations.len(),
        events.join("\n"),
        o.last_lines.join("\n  ")
    )
}

pub fn assert_met(o: &QemuOutcome, what: &str) {
    assert!(
        o.success && o.all_expectations_met(),
        "{what}:\n{}",
        describe(o)
    );
}

/// A trial of slot B never reached userspace and the device fell back to
/// A, with one `rollback` naming B's `version`.
pub fn assert_fell_back_to_a(o: &QemuOutcome, version: &str) {
    assert!(
        events(o, "booted").iter().all(|e| e["slot"] == "A"),
        "B reached userspace: {}",
        describe(o)
    );
    let rb = events(o, "rollback");
    assert_eq!(
        (
            rb[0]["from"].as_str(),
            rb[0]["to"].as_str(),
            rb[0]["version"].as_str()
        ),
        (Some("B"), Some("A"), Some(version)),
        "{rb:?}"
    );
}

pub fn events<'a>(
    o: &'a QemuOutcome,
    name: &str,
) -> Vec<&'a serde_json::Map<String, serde_json::Value>> {
    o.events
        .iter()
        .filter(|e| e.event.event == name)
        .map(|e| &e.event.fields)
        .collect()
}

/// The `boots` counts the counter service reported, in order.
pub fn app_boots(o: &QemuOutcome) -> Vec<u64> {
    events(o, "app")
        .iter()
        .filter_map(|f| f.get("boots").and_then(|b| b.as_u64()))
        .collect()
}

pub fn skip(test: &str) -> bool {
    !images::have_qemu(test) || !images::have_apt(test) || !images::have_validators(test)
}

/// A copy of the data partition as the kernel would mount it after a power
/// cut: e2fsck replays the journal (debugfs alone reads the stale home
/// locations), then a second, read-only e2fsck must find the filesystem
/// consistent.
pub fn data_partition(disk: &Path, scratch: &Path) -> PathBuf {
    let part = extract_partition(disk, 4, scratch);
    let fix = Command::new("e2fsck")
        .args(["-fy"])
        .arg(&part)
        .output()
        .expect("running e2fsck");
    assert!(
        fix.status.code().is_some_and(|c| c <= 1),
        "e2fsck -fy on /data: {}",
        String::from_utf8_lossy(&fix.stdout)
    );
    let check = run_ok(Command::new("e2fsck").arg("-fn").arg(&part));
    assert!(check.status.success());
    part
}

/// Reads a file from an extracted data partition with debugfs (independent
/// of slate); empty when it does not exist.
pub fn debugfs_cat(part: &Path, path: &str) -> String {
    let out = run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(part),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads a file from the data partition (journal replayed first).
pub fn data_file(disk: &Path, scratch: &Path, path: &str) -> String {
    debugfs_cat(&data_partition(disk, scratch), path)
}

/// The newest agent state stored on the data partition.
pub fn device_state(disk: &Path, scratch: &Path) -> serde_json::Value {
    let part = data_partition(disk, scratch);
    let a = debugfs_cat(&part, "/slate/state.0.json");
    let b = debugfs_cat(&part, "/slate/state.1.json");
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    let seq =
        |v: &Option<serde_json::Value>| v.as_ref().and_then(|v| v["seq"].as_u64()).unwrap_or(0);
    let (a, b) = (parse(&a), parse(&b));
    if seq(&b) > seq(&a) { b } else { a }.expect("no agent state on the data partition")
}

pub fn slot_hash(disk: &Path, n: u32, len: u64) -> String {
    let (off, _) = partition_range(disk, n);
    sha256_range(disk, off, len)
}

/// Lists the ESP's boot entries with mtools (independent of slate).
pub fn esp_entries(disk: &Path) -> Vec<String> {
    let (off, _) = partition_range(disk, 1);
    let out = run_ok(
        Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-b", "-i"])
            .arg(format!("{}@@{off}", disk.display()))
            .arg("::/loader/entries"),
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter(|n| n.ends_with(".conf"))
        .map(String::from)
        .collect();
    names.sort();
    names
}

/// The reason of the run's first `install_failed` event.
pub fn install_failure(o: &QemuOutcome) -> String {
    events(o, "install_failed")
        .first()
        .and_then(|e| e["reason"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Asserts that `slot` (`a` or `b`) has no boot entry on `disk`'s ESP.
pub fn assert_no_entry(disk: &Path, slot: &str) {
    let entries = esp_entries(disk);
    assert!(
        entries.iter().all(|e| !e.contains(&format!("-{slot}"))),
        "slot {slot} has an entry: {entries:?}"
    );
}

/// What `fsck.fat -n` says after any power cut while Linux had the ESP
/// mounted read-write, and that is not damage: Linux sets the volume's
/// dirty flag (boot sector offset 65, so the backup boot sector differs
/// there) while mounted, and the FSInfo free-cluster count is a hint that
/// is updated only at unmount.
pub const FSCK_FAT_EXPECTED: &[&str] = &[
    "fsck.fat ",
    "There are differences between boot sector and its backup.",
    "This is mostly harmless. Differences: (offset:original/backup)",
    "  65:01/00",
    "  Not automatically fixing this.",
    "Dirty bit is set. Fs was not properly unmounted and some data may be corrupt.",
    " Automatically removing dirty bit.",
    "Free cluster summary wrong (",
    "  Auto-correcting.",
    "Leaving filesystem unchanged.",
];

/// `fsck.fat -n` on the ESP finds nothing but the flags of an unclean
/// unmount: no lost clusters, no cross-links, no broken entries.
pub fn assert_esp_clean(disk: &Path, scratch: &Path, ctx: &str) {
    let part = images::extract_partition(disk, 1, scratch);
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg(&part)
        .output()
        .expect("running fsck.fat");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let part_name = part.display().to_string();
    let damage: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with(&part_name))
        .filter(|l| !FSCK_FAT_EXPECTED.iter().any(|e| l.starts_with(e)))
        .collect();
    assert!(
        damage.is_empty() && out.status.code().is_some_and(|c| c <= 1),
        "{ctx}: fsck.fat -n found damage {damage:?}:\n{text}"
    );
    let _ = std::fs::remove_file(part);
}

/// Makes `disk` larger by `bytes` (sparse), as if it was written to a
/// bigger device.
pub fn grow_disk(disk: &Path, bytes: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len + bytes).unwrap();
}

/// Copies partition `n` of `disk` to `out`, reading only the disk's data
/// segments (a partition grown to tens of GiB is mostly holes, which dd
/// would read through).
pub fn extract_partition_sparse(disk: &Path, n: u32, out: &Path) -> PathBuf {
    use std::os::unix::fs::FileExt;
    let (off, len) = partition_range(disk, n);
    let src = std::fs::File::open(disk).unwrap();
    let dst = std::fs::File::create(out).unwrap();
    dst.set_len(len).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for r in slate::io::sparse::data_ranges(&src, off + len).unwrap() {
        let mut pos = r.start.max(off);
        while pos < r.end {
            let k = ((r.end - pos) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..k], pos).unwrap();
            dst.write_all_at(&buf[..k], pos - off).unwrap();
            pos += k as u64;
        }
    }
    out.to_path_buf()
}

/// `dumpe2fs -h` field `key` (e.g. "Block count:") as a number.
fn dumpe2fs_field(part: &Path, key: &str) -> u64 {
    let out = run_ok(Command::new("dumpe2fs").arg("-h").arg(part));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("dumpe2fs -h: no {key}\n{text}"))
}

/// Issue 11: after /data grew, as independent tools see it: `sgdisk -v`
/// finds no problem and the backup table at the end of the disk, the data
/// partition (4) is whole MiB and ends less than 1 MiB before the last
/// usable sector, its filesystem (journal replayed by `e2fsck -E
/// journal_only`, nothing else repaired) passes `e2fsck -fn`, and its block
/// count covers the partition. Returns the extracted partition.
pub fn assert_data_fills_disk(disk: &Path, scratch: &Path, ctx: &str) -> PathBuf {
    let sgdisk = |args: &[&str]| {
        let out = run_ok(Command::new("sgdisk").args(args).arg(disk));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let verify = sgdisk(&["-v"]);
    assert!(
        verify.contains("No problems found"),
        "{ctx}: sgdisk -v\n{verify}"
    );
    let print = sgdisk(&["-p"]);
    let last_usable: u64 = print
        .lines()
        .find_map(|l| l.split("last usable sector is ").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{ctx}: sgdisk -p\n{print}"));
    let sectors = std::fs::metadata(disk).unwrap().len() / 512;
    assert_eq!(
        last_usable,
        sectors - 34,
        "{ctx}: backup GPT not at the end\n{print}"
    );
    let (off, len) = partition_range(disk, 4);
    let end = (off + len) / 512 - 1;
    assert_eq!(len % (1 << 20), 0, "{ctx}: /data is not whole MiB");
    assert!(
        end <= last_usable && last_usable - end < 2048,
        "{ctx}: /data ends at {end}, the last usable sector is {last_usable}\n{print}"
    );
    let part = extract_partition_sparse(disk, 4, scratch);
    let replay = Command::new("e2fsck")
        .args(["-E", "journal_only", "-y"])
        .arg(&part)
        .output()
        .expect("running e2fsck");
    assert!(
        replay.status.code().is_some_and(|c| c <= 1),
        "{ctx}: e2fsck -E journal_only: {}",
        String::from_utf8_lossy(&replay.stdout)
    );
    let check = Command::new("e2fsck")
        .arg("-fn")
        .arg(&part)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{ctx}: e2fsck -fn on the grown /data:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let blocks = dumpe2fs_field(&part, "Block count:");
    let block_size = dumpe2fs_field(&part, "Block size:");
    assert_eq!(
        blocks * block_size,
        len,
        "{ctx}: the filesystem does not fill /data"
    );
    part
}

/// The committed entry of `slot` (no boot counter) is on the ESP.
pub fn assert_committed_entry(disk: &Path, slot: &str, ctx: &str) {
    let entries = esp_entries(disk);
    assert!(
        entries
            .iter()
            .any(|e| e.ends_with(&format!("-{slot}.conf")) && !e.contains('+')),
        "{ctx}: no committed entry for slot {slot}: {entries:?}"
    );
}

/// What the stored phase may be right after a cut at `point`.
pub fn phases_after_cut(point: slate::agent::fault::FaultPoint) -> &'static [&'static str] {
    use slate::agent::fault::FaultPoint::*;
    match point {
        AfterVerify | AfterDisable => &["idle"],
        AfterInstalling | AfterFirstWrite | MidSlot | AfterSlotSync | AfterBootFiles
        | AfterSeal | AfterSlotManifest | AfterTrialEntry => &["installing"],
        AfterInstalled | TrialBeforeVerdict | TrialAfterMarkGood => &["installed"],
        TrialAfterFailedSaved | TrialAfterMarkBad | RollbackAfterDisable => &["failed"],
        RollbackAfterSaved | CommitAfterSaved | DpsAfterBackup => &["idle"],
        AbandonAfterDisable => &["installing"],
        GrowAfterBackup => &["idle"],
    }
}

/// The fault at `point` fired, once, and powered the guest off.
pub fn assert_powered_off_at(o: &QemuOutcome, point: slate::agent::fault::FaultPoint) {
    let fired: Vec<_> = events(o, "fault")
        .iter()
        .filter(|e| e["point"] == point.name())
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(
        fired,
        ["poweroff"],
        "{point}: the fault did not fire\n{}",
        describe(o)
    );
    assert!(
        matches!(o.exit_reason, slate::qemu::ExitReason::QemuExited { .. }),
        "{point}: the guest did not power off\n{}",
        describe(o)
    );
}

/// The checks of a device right after a cut at `point` (issue 9): slot A
/// holds `a_rootfs` byte for byte, the ESP is clean and keeps A's committed
/// entry, the stored phase is one the cut can leave, and the floor is
/// `floor`. Partitions are extracted to `scratch` plus `.esp` and `.data`.
pub fn check_after_cut(
    disk: &Path,
    a_rootfs: &Path,
    point: slate::agent::fault::FaultPoint,
    scratch: &Path,
    floor: u64,
) {
    let ctx = format!("after a cut at {point}");
    assert_slot_holds(disk, 2, a_rootfs, &ctx);
    let with = |ext: &str| scratch.with_extension(ext);
    assert_esp_clean(disk, &with("esp"), &ctx);
    assert_committed_entry(disk, "a", &ctx);
    let state = device_state(disk, &with("data"));
    let phase = state["update"]["phase"].as_str().unwrap_or_default();
    assert!(
        phases_after_cut(point).contains(&phase),
        "{ctx}: phase {phase}: {state}"
    );
    assert_eq!(state["floor"], floor, "{ctx}: {state}");
}

/// Partition `n` (2: slot A, 3: slot B) of `disk` starts with `rootfs`'s
/// bytes as that slot holds them: slot B's superblock copies carry its own
/// filesystem UUID (`slot_image::identity_patches`).
pub fn assert_slot_holds(disk: &Path, n: u32, rootfs: &Path, ctx: &str) {
    use std::io::Read;
    let slot = if n == 2 {
        slate::boot_env::SlotId::A
    } else {
        slate::boot_env::SlotId::B
    };
    let mut f = std::fs::File::open(rootfs).unwrap();
    let patches = slate::slot_image::identity_patches(&mut f, slot).unwrap();
    let f = std::fs::File::open(rootfs).unwrap();
    let mut data = Vec::new();
    slate::io::overlay::Overlay::new(f, &patches)
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(
        slot_hash(disk, n, data.len() as u64),
        slate::io::hash::hex(&slate::io::hash::sha256_reader(&data[..]).unwrap().0),
        "{ctx}: partition {n} does not hold {} as slot {slot} holds it",
        rootfs.display()
    );
}
