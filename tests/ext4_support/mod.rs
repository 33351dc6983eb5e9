//! Helpers shared by the integration tests: running slate and the
//! independent checkers (e2fsck, the kernel via loop mounts, ext4-view).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `slate` binary under test.
pub fn slate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_slate"))
}

/// Whether `tool` runs (found on PATH).
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether we run as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Why loop mounts cannot be tested here, if they cannot.
pub fn cannot_mount() -> Option<&'static str> {
    if !is_root() {
        return Some("not root");
    }
    if !have("losetup") || !have("mount") {
        return Some("losetup/mount missing");
    }
    match Command::new("losetup").arg("-f").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("no free loop device"),
    }
}

/// Prints that a check was skipped and why (and records it).
pub fn skip(what: &str, why: &str) {
    shared::skipped(what, why);
}

/// Runs a command and returns its output, panicking if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

#[path = "../common/mod.rs"]
mod shared;
pub use shared::run_ok;

/// `e2fsck -fn` must find nothing (exit 0). Skips without e2fsck.
pub fn e2fsck_clean(img: &Path) {
    if !have("e2fsck") {
        skip("e2fsck", "e2fsck not installed");
        return;
    }
    run_ok(Command::new("e2fsck").arg("-fn").arg(img));
}

/// A loop mount that is undone on drop.
pub struct Mount {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Mount {
    /// Mounts `img` with the given options (e.g. "ro" or "rw").
    pub fn new(img: &Path, opts: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "ext4", "-o", &format!("loop,{opts}")])
                .arg(img)
                .arg(dir.path()),
        );
        Self { dir, mounted: true }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Unmounts explicitly (and checks that it worked).
    pub fn unmount(mut self) {
        run_ok(Command::new("umount").arg(self.dir.path()));
        self.mounted = false;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
    }
}

/// An ext4-view reader over an image file (positional reads, no seeks).
pub struct ImageReader(pub std::fs::File);

impl ext4_view::Ext4Read for ImageReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        use std::os::unix::fs::FileExt;
        self.0.read_exact_at(dst, start_byte).map_err(|e| e.into())
    }
}

/// Opens an image with ext4-view.
pub fn ext4_view(img: &Path) -> ext4_view::Ext4 {
    let f = std::fs::File::open(img).unwrap();
    ext4_view::Ext4::load(Box::new(ImageReader(f)))
        .unwrap_or_else(|e| panic!("ext4-view cannot load {}: {e}", img.display()))
}

/// The repository's tests/ directory (for the helper scripts).
pub fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}
