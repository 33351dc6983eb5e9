//! `slate extract` onto block devices (as root: loop and device-mapper
//! devices): it claims success only after reading the written range back
//! from the device and matching the signed SHA-256, refuses a device that
//! is too small before writing, and a device that does not keep what was
//! written is an error, not a success (issue 9, item 3).

mod bundle_support;
#[path = "common/mod.rs"]
mod common;

use bundle_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device over a file, detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn new(backing: &Path) -> Loop {
        let o = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing)
            .output()
            .unwrap();
        assert!(o.status.success(), "losetup: {o:?}");
        Loop(PathBuf::from(String::from_utf8(o.stdout).unwrap().trim()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A device-mapper device with one table line, removed on drop.
struct Dm(String);

impl Dm {
    fn new(name: &str, table: &str) -> Dm {
        let name = format!("slate-test-{}-{name}", std::process::id());
        let ok = Command::new("dmsetup")
            .args(["create", &name, "--table", table])
            .status()
            .unwrap()
            .success();
        assert!(ok, "dmsetup create {name} {table}");
        Dm(name)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/mapper/{}", self.0))
    }
}

impl Drop for Dm {
    fn drop(&mut self) {
        let _ = Command::new("dmsetup").args(["remove", &self.0]).status();
    }
}

fn can_run(test: &str, tools: &[&str]) -> bool {
    if !common::is_root() {
        common::skipped(test, "needs root (loop and device-mapper devices)");
        return false;
    }
    if common::skip_without(test, tools) {
        return false;
    }
    // dmsetup is there but the kernel may have no device-mapper.
    if tools.contains(&"dmsetup")
        && !Command::new("dmsetup")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        common::unsupported_here(
            test,
            "this kernel has no device-mapper (dmsetup version fails); \
             the read-back comparison itself is unit-tested in src/cli/extract.rs",
        );
        return false;
    }
    true
}

fn extract(bundle: &Path, public: &Path, out: &Path, artifact: &str) -> (i32, String, String) {
    run(slate()
        .arg("extract")
        .arg(bundle)
        .arg("--pubkey")
        .arg(public)
        .arg("--artifact")
        .arg(artifact)
        .arg("-o")
        .arg(out))
}

/// A bundle of `small_build` (a rootfs with holes).
fn fixture(t: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let build = small_build(&t.join("build"));
    let (key, public) = keygen(&t.join("k"));
    let out = t.join("b.slate");
    bundle(&build, &[&key], &out, &[]);
    (build, public, out)
}

fn sha256_prefix(path: &Path, len: u64) -> String {
    let o = common::run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("head -c {len} '{}' | sha256sum", path.display())),
    );
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn extract_to_a_loop_device_reads_back_what_it_wrote() {
    if !can_run("extract_to_a_loop_device", &["losetup", "sha256sum", "cmp"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (build, public, bundle) = fixture(t.path());
    let rootfs = build.join("rootfs.ext4");
    let len = std::fs::metadata(&rootfs).unwrap().len();
    // The device is larger than the artifact and full of old bytes: holes
    // must be zeroed on it, and what lies past the artifact is not touched.
    let backing = t.path().join("slot.img");
    std::fs::write(&backing, vec![0xa5u8; 8 << 20]).unwrap();
    let dev = Loop::new(&backing);
    let (code, _, err) = extract(&bundle, &public, &dev.0, "rootfs");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "to {}; read back from the device: sha256",
            dev.0.display()
        )),
        "{err}"
    );
    let want = common::run_ok(Command::new("sha256sum").arg(&rootfs));
    let want = String::from_utf8_lossy(&want.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(err.contains(&want), "{err} does not name {want}");
    drop(dev);
    assert_eq!(sha256_prefix(&backing, len), want);
    let after = std::fs::read(&backing).unwrap();
    assert!(after[len as usize..].iter().all(|b| *b == 0xa5));

    // To a file: the same bytes (cmp), and the message says it was read back.
    let file = t.path().join("rootfs.out");
    let (code, _, err) = extract(&bundle, &public, &file, "rootfs");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("read back from the file"), "{err}");
    common::run_ok(Command::new("cmp").arg(&rootfs).arg(&file));
}

#[test]
fn a_device_that_drops_writes_is_an_error() {
    if !can_run("device_that_drops_writes", &["dmsetup"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (_, public, bundle) = fixture(t.path());
    // dm "zero": writes succeed and vanish, reads return zeros. Without the
    // read-back, extract would report success.
    let dev = Dm::new("zero", "0 16384 zero");
    let (code, _, err) = extract(&bundle, &public, &dev.path(), "rootfs");
    assert_eq!(code, 1, "accepted a device that keeps nothing: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("rootfs as written to the device does not match")
            && err.contains("read back sha256"),
        "{err}"
    );
}

/// A tmpfs mount, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let d = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(d.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        Tmpfs(d)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_device_that_fails_partway_is_an_error() {
    if !can_run("device_that_fails_partway", &["losetup", "mount"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (_, public, bundle) = fixture(t.path());
    // An 8 MiB loop device whose backing file lives on a 1 MiB tmpfs: the
    // first MiB of writes lands, the rest fails with EIO (the loop driver's
    // ENOSPC), as a failing disk would.
    let fs = Tmpfs::new("1M");
    let backing = fs.0.path().join("slot.img");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let dev = Loop::new(&backing);
    let (code, _, err) = extract(&bundle, &public, &dev.0, "rootfs");
    assert_eq!(code, 5, "an I/O error exits 5 (docs/cli.md): {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&dev.0.display().to_string()) && err.contains("Input/output error"),
        "{err}"
    );
    assert!(!err.contains("read back from"), "{err}");
    drop(dev);
}

#[test]
fn a_device_too_small_is_refused_before_writing() {
    if !can_run("device_too_small", &["losetup"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (build, public, bundle) = fixture(t.path());
    let len = std::fs::metadata(build.join("rootfs.ext4")).unwrap().len();
    let backing = t.path().join("small.img");
    std::fs::write(&backing, vec![0xa5u8; 1 << 20]).unwrap();
    let dev = Loop::new(&backing);
    let (code, _, err) = extract(&bundle, &public, &dev.0, "rootfs");
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("holds {} bytes", 1 << 20))
            && err.contains(&format!(
                "rootfs of bundle {} is {len} bytes",
                bundle.display()
            )),
        "{err}"
    );
    drop(dev);
    let after = std::fs::read(&backing).unwrap();
    assert!(after.iter().all(|b| *b == 0xa5), "the device was written");
}
