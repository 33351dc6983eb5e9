//! Building test images and bundles with the slate binary: recipes are
//! generated per test (with keys generated at test time), packages come from
//! a cache shared by all tests (`target/tmp/slate-cache`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// SOURCE_DATE_EPOCH of every test build.
pub const EPOCH: &str = "1700000000";

/// The package cache shared by test builds (kept between runs).
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("slate-cache")
}

/// The slate binary with the test cache and a fixed epoch.
pub fn slate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_slate"));
    c.env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("SLATE_CACHE_DIR", cache_dir())
        .env("SOURCE_DATE_EPOCH", EPOCH);
    c
}

#[path = "../common/mod.rs"]
pub mod shared;
#[allow(unused_imports)]
pub use shared::{is_root, run_ok, skip_without, skipped};

/// Whether QEMU and OVMF are installed (prints why not).
pub fn have_qemu(test: &str) -> bool {
    let ok = Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists()
        && Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        shared::skipped(test, "qemu-system-x86_64 or OVMF is not installed");
    }
    ok
}

/// Whether the independent readers the image checks use are installed:
/// veritysetup (cryptsetup-bin), systemd-dissect (systemd-container),
/// blkid and sgdisk (prints why not).
pub fn have_validators(test: &str) -> bool {
    !shared::skip_without(test, &["veritysetup", "systemd-dissect", "blkid", "sgdisk"])
}

/// Whether a Debian mirror is reachable through apt (prints why not).
pub fn have_apt(test: &str) -> bool {
    let ok = Path::new("/usr/bin/apt-get").exists()
        && Path::new("/usr/share/keyrings/debian-archive-keyring.gpg").exists();
    if !ok {
        shared::skipped(test, "apt-get or the Debian archive keyring is missing");
    }
    ok
}

/// A recipe for tests; every field has a sensible default.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Image name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Compatible string.
    pub compatible: String,
    /// Anti-rollback level.
    pub security_version: u64,
    /// Boot attempts for a new slot.
    pub tries: u32,
    /// Health command.
    pub health: String,
    /// Health timeout.
    pub health_timeout: String,
    /// Watchdog period.
    pub watchdog: String,
    /// Kernel command line.
    pub cmdline: String,
    /// Extra TOML appended verbatim (services, files).
    pub extra: String,
    /// Public keys (paths).
    pub keys: Vec<PathBuf>,
    /// Slot size.
    pub slot: String,
    /// Signatures a bundle needs.
    pub threshold: u32,
    /// Each slot boots a unified kernel image (`[kernel] uki`).
    pub uki: bool,
}

impl Recipe {
    /// The image the update scenarios start from: a boot counter on /data.
    pub fn counter(version: &str, key: &Path) -> Self {
        Recipe {
            name: "scenario".into(),
            version: version.into(),
            compatible: "slate-test-x86_64".into(),
            security_version: 1,
            tries: 2,
            health: "test -s /data/boots".into(),
            health_timeout: "10s".into(),
            watchdog: "40s".into(),
            cmdline: "console=ttyS0 quiet panic=2".into(),
            extra: COUNTER_SERVICE.into(),
            keys: vec![key.to_path_buf()],
            slot: "128M".into(),
            threshold: 1,
            uki: false,
        }
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{:?}", k.display().to_string()))
            .collect();
        format!(
            r#"[image]
name = "{name}"
version = "{version}"
compatible = "{compatible}"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "{cmdline}"
modules = ["virtio_pci", "virtio_blk"]
uki = {uki}

[rootfs]
packages = ["busybox-static"]

[health]
command = {health:?}
timeout = "{health_timeout}"
watchdog = "{watchdog}"

[disk]
esp = "64M"
slot = "{slot}"
data = "32M"

[update]
public_keys = [{keys}]
security_version = {sv}
tries = {tries}
threshold = {threshold}

{extra}
"#,
            name = self.name,
            version = self.version,
            compatible = self.compatible,
            cmdline = self.cmdline,
            health = self.health,
            health_timeout = self.health_timeout,
            watchdog = self.watchdog,
            slot = self.slot,
            keys = keys.join(", "),
            sv = self.security_version,
            tries = self.tries,
            threshold = self.threshold,
            uki = self.uki,
            extra = self.extra,
        )
    }
}

/// A service that counts boots in /data/boots and reports the count.
pub const COUNTER_SERVICE: &str = r##"
[[rootfs.files]]
dst = "/usr/bin/count-boots"
mode = "0755"
content = """#!/bin/sh
n=$(cat /data/boots 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > /data/boots.tmp && sync && mv /data/boots.tmp /data/boots && sync
echo "SLATE-EVENT {\\"event\\":\\"app\\",\\"boots\\":$n}"
"""

[[service]]
name = "count-boots"
exec = "/usr/bin/count-boots"
wait = true

[[rootfs.files]]
dst = "/usr/bin/report-status"
mode = "0755"
content = """#!/bin/sh
for i in $(seq 120); do [ -e /run/slate/committed ] && break; sleep 1; done
echo "SLATE-EVENT {\\"event\\":\\"status\\",\\"report\\":$(slate-agent status --json)}"
"""

[[service]]
name = "report-status"
exec = "/usr/bin/report-status"
restart = "never"
"##;

/// Writes `recipe` as `<dir>/<file>.toml` and builds it into `<dir>/<file>`.
pub fn build(dir: &Path, file: &str, recipe: &Recipe) -> PathBuf {
    build_toml(dir, file, &recipe.toml())
}

/// Writes the recipe text `toml` as `<dir>/<file>.toml` and builds it into
/// `<dir>/<file>`.
pub fn build_toml(dir: &Path, file: &str, toml: &str) -> PathBuf {
    let path = dir.join(format!("{file}.toml"));
    std::fs::write(&path, toml).unwrap();
    let out = dir.join(file);
    run_ok(slate().arg("build").arg(&path).arg("--out-dir").arg(&out));
    out
}

/// Makes a key pair `<dir>/<name>.key`, `.pub`.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    run_ok(slate().arg("keygen").arg(&prefix));
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

/// Bundles a build directory, signed with `key`.
pub fn bundle(build: &Path, key: &Path, out: &Path) -> PathBuf {
    run_ok(
        slate()
            .arg("bundle")
            .arg(build)
            .arg("--key")
            .arg(key)
            .arg("-o")
            .arg(out),
    );
    out.to_path_buf()
}

/// A sparse copy of a disk image (each scenario mutates its own).
pub fn copy_disk(src: &Path, dst: &Path) -> PathBuf {
    run_ok(Command::new("cp").arg("--sparse=always").arg(src).arg(dst));
    dst.to_path_buf()
}

/// What `sgdisk -i N` prints about partition `n` (1-based) of `disk`.
fn sgdisk_info(disk: &Path, n: u32) -> String {
    let out = run_ok(
        Command::new("sgdisk")
            .arg("-i")
            .arg(n.to_string())
            .arg(disk),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Byte offset and length of partition `n` (1-based) per `sgdisk -i`.
pub fn partition_range(disk: &Path, n: u32) -> (u64, u64) {
    let text = sgdisk_info(disk, n);
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("sgdisk -i {n}: no {name}\n{text}"))
    };
    let first = field("First sector: ");
    let last = field("Last sector: ");
    (first * 512, (last + 1 - first) * 512)
}

/// The unique GUID of partition `n` (1-based) per `sgdisk -i`, upper case.
pub fn partition_guid(disk: &Path, n: u32) -> String {
    let text = sgdisk_info(disk, n);
    text.lines()
        .find_map(|l| l.strip_prefix("Partition unique GUID: "))
        .map(|g| g.trim().to_ascii_uppercase())
        .unwrap_or_else(|| panic!("sgdisk -i {n}: no unique GUID\n{text}"))
}

/// Extracts partition `n` of `disk` into `out` (sparse).
pub fn extract_partition(disk: &Path, n: u32, out: &Path) -> PathBuf {
    let (off, len) = partition_range(disk, n);
    run_ok(
        Command::new("dd")
            .arg(format!("if={}", disk.display()))
            .arg(format!("of={}", out.display()))
            .arg("bs=1M")
            .arg(format!("skip={}", off / (1 << 20)))
            .arg(format!("count={}", len / (1 << 20)))
            .arg("conv=sparse")
            .arg("status=none"),
    );
    out.to_path_buf()
}

/// SHA-256 of a file via coreutils (an independent implementation).
pub fn sha256sum(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// SHA-256 of a byte range of a file via dd + sha256sum.
pub fn sha256_range(path: &Path, offset: u64, len: u64) -> String {
    let out = run_ok(Command::new("sh").arg("-c").arg(format!(
        "dd if='{}' bs=1M skip={} count={} iflag=skip_bytes,count_bytes status=none | sha256sum",
        path.display(),
        offset,
        len
    )));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// pyspdxtools (PyPI spdx-tools): `$SLATE_PYSPDXTOOLS`, the CI virtualenv,
/// or PATH.
pub fn pyspdxtools() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("SLATE_PYSPDXTOOLS").map(PathBuf::from),
        Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/spdx-venv/bin/pyspdxtools"
        ))),
        Some(PathBuf::from("pyspdxtools")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .arg("--help")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The independent validator accepts the SBOM at `path`.
pub fn assert_valid_spdx(tool: &Path, path: &Path) {
    let v = Command::new(tool).arg("-i").arg(path).output().unwrap();
    assert!(
        v.status.success() && !String::from_utf8_lossy(&v.stderr).contains("invalid"),
        "pyspdxtools rejects {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&v.stderr)
    );
}

/// The dm-verity parameters the build in `build` recorded for its rootfs.
pub fn build_verity(build: &Path) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(build.join("manifest.json")).unwrap()).unwrap();
    let v = m["artifacts"][0]["verity"].clone();
    assert!(
        v.is_object(),
        "{}: no verity for the rootfs: {m}",
        build.display()
    );
    v
}

/// `veritysetup verify` (Debian's cryptsetup-bin, an independent reader)
/// of partition `n` (2: slot A, 3: slot B) of `disk`, with the tree after
/// the data and the root hash `build` recorded for that slot. `Err` holds
/// veritysetup's output.
pub fn veritysetup_verify(disk: &Path, n: u32, build: &Path, scratch: &Path) -> Result<(), String> {
    let v = build_verity(build);
    let root = &v[if n == 2 { "root_hash_a" } else { "root_hash_b" }];
    let blocks = v["data_blocks"].as_u64().unwrap();
    let (off, _) = partition_range(disk, n);
    let len = v["hash_offset"].as_u64().unwrap() + slate::verity::tree_len(blocks);
    let slot = scratch.with_extension(format!("slot{n}"));
    run_ok(
        Command::new("dd")
            .arg(format!("if={}", disk.display()))
            .arg(format!("of={}", slot.display()))
            .args(["bs=1M", "iflag=skip_bytes,count_bytes", "status=none"])
            .arg(format!("skip={off}"))
            .arg(format!("count={len}")),
    );
    let out = Command::new("veritysetup")
        .args(["verify", "--no-superblock"])
        .arg(format!("--data-blocks={blocks}"))
        .arg(format!("--hash-offset={}", v["hash_offset"]))
        .arg(format!("--salt={}", v["salt"].as_str().unwrap()))
        .arg(&slot)
        .arg(&slot)
        .arg(root.as_str().unwrap())
        .output()
        .expect("veritysetup (cryptsetup-bin) runs");
    let _ = std::fs::remove_file(&slot);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The label of the partition `systemd-dissect` (systemd-container, an
/// independent reader of the Discoverable Partitions Specification) takes as
/// the root of `disk`, and whether it would mount it read-only.
pub fn dissected_root(disk: &Path) -> (String, bool) {
    let out = run_ok(
        Command::new("systemd-dissect")
            .arg("--json=short")
            .arg(disk),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = v["mounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["designator"] == "root"))
        .unwrap_or_else(|| panic!("systemd-dissect found no root in {}: {v}", disk.display()));
    (
        root["partition_label"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        root["rw"] == "ro",
    )
}

/// Flips one bit (0x10) of the byte at `offset` of `path`.
pub fn flip_bit(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x10;
    f.write_all_at(&b, offset).unwrap();
}
